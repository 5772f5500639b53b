"""The daemon as a real process: SIGTERM/SIGINT during a sync and during a grant, and bad credentials at
start (exit code, one line, no secret). The tenant runs in the test process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from connector.sandbox.tenant import TenantHandle, start_tenant
from connector.sdk import model
from connector.service.testing_app import group_res, user_res

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def tenant(tmp_path: Path) -> AsyncIterator[TenantHandle]:
    handle = await start_tenant(data_dir=tmp_path / "tenant", next_poll=0.05, next_heartbeat=0.1)
    try:
        yield handle
    finally:
        await handle.close()


def daemon_env(tenant: TenantHandle, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_") and "proxy" not in k.lower()}
    env.update(tenant.env())
    env.update(
        {
            "BATON_PROVISIONING": "true",
            "BATON_HOST_ID": "signal-test",
            "BATON_LOG_FORMAT": "json",
            "BATON_C1Z_TEMP_DIR": str(tmp_path),
            "TOY_FAST": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


async def spawn(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector.service.testing_app",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, within: float) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def code_name(value: int) -> str:
    return next(c.name for c in grpc.StatusCode if c.value[0] == value)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_during_a_sync_finishes_it_retryable_and_exits_0(
    tenant: TenantHandle, tmp_path: Path, sig: signal.Signals
) -> None:
    proc = await spawn(daemon_env(tenant, tmp_path, TOY_LIST_DELAY="30", BATON_SHUTDOWN_GRACE_SECONDS="10"))
    try:
        await tenant.wait_hello(within=15)
        tid = tenant.enqueue_sync()
        await tenant.wait_for(lambda: tenant.tenant.tasks[tid].heartbeats, within=5)
        sent = time.monotonic()
        proc.send_signal(sig)
        code, _, err = await finish(proc, 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, err
    assert time.monotonic() - sent < 3  # not the 10 s grace: syncs are cancelled at once
    rec = tenant.finish_of(tid)
    assert rec is not None and rec.outcome == "error" and not rec.non_retryable
    assert code_name(rec.status_code) == "CANCELLED" and "shutting down" in rec.status_message
    assert tenant.uploads == []
    assert [p for p in os.listdir(tmp_path) if p.startswith("baton-sync")] == []


async def test_sigterm_during_a_grant_lets_it_finish(tenant: TenantHandle, tmp_path: Path) -> None:
    proc = await spawn(daemon_env(tenant, tmp_path, TOY_GRANT_DELAY="1.0", BATON_SHUTDOWN_GRACE_SECONDS="10"))
    try:
        await tenant.wait_hello(within=15)
        tid = tenant.enqueue_grant(
            model.assignment_entitlement(group_res("eng"), "member"), user_res("dave", "Dave")
        )
        await tenant.wait_for(lambda: tenant.tenant.tasks[tid].state == "running", within=5)
        polls = len(tenant.tenant.polls)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, _, err = await finish(proc, 8)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, err
    elapsed = time.monotonic() - sent
    assert 0.5 <= elapsed < 5, elapsed  # it waited for the grant, not for the whole grace period
    rec = tenant.finish_of(tid)
    assert rec is not None and rec.outcome == "success"
    assert type(rec.response).__name__ == "GrantManagerServiceGrantResponse"
    assert len(tenant.tenant.polls) <= polls + 1  # at most the poll already in flight


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("secret-token:conductorone.com:v1:bm90LWEta2V5LWF0LWFsbA", "error: invalid client secret"),
        ("plainly-wrong-password-value", "error: invalid client secret"),
    ],
)
async def test_malformed_secret_exits_2_with_one_line(
    tenant: TenantHandle, tmp_path: Path, secret: str, expected: str
) -> None:
    proc = await spawn(daemon_env(tenant, tmp_path, BATON_CLIENT_SECRET=secret))
    code, out, err = await finish(proc, 15)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(expected), err
    assert secret not in err + out and secret.rsplit(":", 1)[-1] not in err + out
    assert tenant.tenant.token_requests == []  # refused before any network I/O


async def test_malformed_client_id_exits_2(tenant: TenantHandle, tmp_path: Path) -> None:
    proc = await spawn(daemon_env(tenant, tmp_path, BATON_CLIENT_ID="not-a-client-id"))
    code, _, err = await finish(proc, 15)
    assert code == 2 and err.strip().startswith("error: invalid client id") and err.count("\n") == 1


async def test_secret_refused_by_the_tenant_exits_16(tenant: TenantHandle, tmp_path: Path) -> None:
    old = tenant.client_secret
    tenant.rotate_secret()
    proc = await spawn(daemon_env(tenant, tmp_path, BATON_CLIENT_SECRET=old))
    code, out, err = await finish(proc, 15)
    assert code == 16
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ConductorOne refused the connector: UNAUTHENTICATED")
    assert old not in err + out and old.rsplit(":", 1)[-1][:16] not in err + out
