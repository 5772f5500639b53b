"""`baton-<app> health-check`: the exec probe against the real ops server on a loopback socket."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.ops.health import DaemonHealth, OpsServer
from connector.ops.metrics import Metrics
from connector.ops.probe import health_check_main

BIN = Path(sys.executable).parent


class Validator:
    def __init__(self) -> None:
        self.error: Exception | None = None

    async def __call__(self) -> None:
        if self.error is not None:
            raise self.error


@pytest.fixture
async def ops() -> AsyncIterator[tuple[OpsServer, DaemonHealth, Validator, int]]:
    health = DaemonHealth()
    validator = Validator()
    # No cache: each probe sees the validator's current state.
    server = OpsServer(Metrics("baton-test"), health, validator, validate_cache_seconds=0.0)
    port = await server.start("127.0.0.1", 0)
    yield server, health, validator, port
    await server.stop()


async def check(*argv: str, env: dict[str, str] | None = None) -> int:
    # The probe blocks (it is a separate process in real use): a thread keeps the server's loop running.
    return await asyncio.to_thread(health_check_main, "baton-test", list(argv), env or {})


async def test_live_ready_and_health_follow_the_daemon_state(
    ops: tuple[OpsServer, DaemonHealth, Validator, int], capsys: pytest.CaptureFixture[str]
) -> None:
    _, health, validator, port = ops
    env = {"BATON_HEALTH_CHECK_PORT": str(port)}
    assert await check("--endpoint=live", env=env) == 0
    assert await check("--endpoint", "ready", env=env) == 1
    assert "not_ready, bootstrap hello not done" in capsys.readouterr().err
    health.mark_hello_done()
    assert await check("--endpoint=ready", env=env) == 0
    health.mark_tenant_error("UNAVAILABLE: tenant down")
    assert await check("--endpoint=ready", env=env) == 1

    assert await check(env=env) == 0  # --endpoint defaults to health (the connector's Validate)
    validator.error = RuntimeError("401 from upstream")
    assert await check("--endpoint=health", env=env) == 1
    assert "401 from upstream" in capsys.readouterr().err


async def test_a_wildcard_bind_address_is_reached_over_loopback(
    ops: tuple[OpsServer, DaemonHealth, Validator, int],
) -> None:
    port = ops[3]
    env = {"BATON_HEALTH_CHECK_PORT": str(port), "BATON_HEALTH_CHECK_BIND_ADDRESS": "0.0.0.0"}
    assert await check("--endpoint=live", env=env) == 0
    # Flags win over the environment.
    assert await check("--endpoint=live", f"--health-check-port={port}", env={}) == 0


async def test_nothing_listening_is_unhealthy_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert await check("--endpoint=live", f"--health-check-port={free}") == 1
    assert "connection refused" in capsys.readouterr().err


async def test_a_server_that_never_answers_fails_within_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        assert await check("--endpoint=ready", "--timeout=0.5", f"--health-check-port={port}") == 1
        assert time.monotonic() - started < 30  # bounded by the timeout, not by the server
        assert "no answer within 0.5s" in capsys.readouterr().err
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--endpoint=metrics"], {}, "invalid --endpoint 'metrics': one of health, ready, live"),
        (["--timeout=0"], {}, "invalid --timeout '0': must be a positive number of seconds"),
        (["--timeout=soon"], {}, "invalid --timeout 'soon': not a number of seconds"),
        (
            [],
            {"BATON_HEALTH_CHECK_PORT": "http"},
            "invalid BATON_HEALTH_CHECK_PORT 'http': not a port number",
        ),
        (["--health-check-port=70000"], {}, "invalid --health-check-port 70000: must be between 1 and 65535"),
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert health_check_main("baton-test", argv, env) == 2
    err = capsys.readouterr().err
    assert err == f"baton-test health-check: error: {message}\n"


@pytest.mark.parametrize("script", ["baton-atlassian", "baton-confluence-datacenter"])
async def test_the_console_scripts_run_the_probe_without_connector_settings(
    script: str, ops: tuple[OpsServer, DaemonHealth, Validator, int]
) -> None:
    _, health, _, port = ops
    health.mark_hello_done()
    # Only the ops settings: a probe must not need (or complain about) the connector's credentials.
    env = {"PATH": os.environ.get("PATH", ""), "BATON_HEALTH_CHECK_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / script),
        "health-check",
        "--endpoint=ready",
        "--timeout=5",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    assert f"127.0.0.1:{port}/ready: HTTP 200 (ready)" in out.decode()
    await ops[0].stop()
    proc = await asyncio.create_subprocess_exec(
        str(BIN / script), "health-check", "--endpoint=live", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 1, err.decode()
