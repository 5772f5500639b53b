"""Live progress of a one-shot sync: on a terminal (a real pty) one line rewritten in place with the phase
and the counts; through a pipe nothing but the plain log lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.sandbox.atlassian.data import OrgSpec
from connector.sandbox.atlassian.server import AtlassianSandbox, start_atlassian_sandbox
from tests.test_cli import SCRIPT, _clean_env

PROGRESS = re.compile(
    r"\r\x1b\[K(?P<phase>[a-z-]+) +resources (?P<resources>[\d,]+) +entitlements [\d,]+ +"
    r"grants (?P<grants>[\d,]+) +requests (?P<requests>[\d,]+) \(\d+/s\) +\d+s"
)


@pytest.fixture
async def sandbox() -> AsyncIterator[AtlassianSandbox]:
    sb = await start_atlassian_sandbox(
        spec=OrgSpec(accounts=60, groups=6, memberships=90, workspaces=2), latency=0.05
    )
    yield sb
    await sb.stop()


def _env(sb: AtlassianSandbox, target: Path) -> dict[str, str]:
    env = _clean_env(
        BATON_API_TOKEN=sb.api_key,
        BATON_ORG=sb.org_id,
        BATON_API_BASE_URL=sb.base_url,
        BATON_FILE=str(target),
    )
    del env["BATON_LOG_FORMAT"]  # the default: console on a terminal, json otherwise
    return env


def _drain(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side of the pty is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_terminal_sees_live_progress(sandbox: AtlassianSandbox, tmp_path: Path) -> None:
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            SCRIPT, env=_env(sandbox, tmp_path / "out.c1z"), stdout=asyncio.subprocess.PIPE, stderr=slave
        )
        os.close(slave)
        reader = asyncio.get_running_loop().run_in_executor(None, _drain, master)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        err = (await asyncio.wait_for(reader, 30)).decode()
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
    assert proc.returncode == 0, err
    lines = [m.groupdict() for m in PROGRESS.finditer(err)]
    phases = [line["phase"] for line in lines]
    assert {"resources", "grants"} <= set(phases), err
    last = lines[-1]
    assert int(last["resources"].replace(",", "")) > 0 and int(last["requests"].replace(",", "")) > 0
    assert err.endswith("\r\x1b[K")  # the progress line is wiped before the report
    assert "wrote" in out.decode()


async def test_a_pipe_gets_plain_logs_only(sandbox: AtlassianSandbox, tmp_path: Path) -> None:
    env = {**_env(sandbox, tmp_path / "out.c1z"), "BATON_LOG_LEVEL": "info"}
    proc = await asyncio.create_subprocess_exec(
        SCRIPT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err_b = await asyncio.wait_for(proc.communicate(), 60)
    err = err_b.decode()
    assert proc.returncode == 0, err
    assert "\r" not in err and "\x1b" not in err
    assert '"event": "sync_phase"' in err  # JSON log lines, one per event
    assert "wrote" in out.decode()
