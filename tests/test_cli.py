"""The console scripts as a user runs them: help, configuration errors, failures, and daemon mode with the
ops server (probes and metrics), all through real subprocesses against the loopback sandboxes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from connector.sandbox.atlassian.data import OrgSpec
from connector.sandbox.atlassian.server import AtlassianSandbox, start_atlassian_sandbox
from connector.sandbox.tenant import start_tenant

SCRIPT = str(Path(sys.executable).parent / "baton-atlassian")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update({"BATON_LOG_FORMAT": "json", "BATON_LOG_LEVEL": "warn", **extra})
    return env


async def _run(*args: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        SCRIPT, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def sandbox() -> AsyncIterator[AtlassianSandbox]:
    sb = await start_atlassian_sandbox(spec=OrgSpec(accounts=40, groups=5, memberships=60, workspaces=2))
    yield sb
    await sb.stop()


async def test_help_lists_every_flag_with_its_env_var() -> None:
    code, out, _ = await _run("--help", env=_clean_env())
    assert code == 0
    for flag, env in [
        ("--api-token", "BATON_API_TOKEN"),
        ("--org", "BATON_ORG"),
        ("--client-id", "BATON_CLIENT_ID"),
        ("--provisioning", "BATON_PROVISIONING"),
        ("--health-check-port", "BATON_HEALTH_CHECK_PORT"),
    ]:
        assert flag in out and env in out
    assert "BATON_API_TOKEN_FILE" in out


async def test_missing_setting_is_one_line_and_exit_2() -> None:
    code, out, err = await _run(env=_clean_env(BATON_API_TOKEN="some-secret-token"))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "BATON_ORG" in lines[0] and "--org" in lines[0]
    assert "Traceback" not in err and "some-secret-token" not in err + out


async def test_failed_sync_exits_1_with_one_line_and_leaves_no_file(
    sandbox: AtlassianSandbox, tmp_path: Path
) -> None:
    target = tmp_path / "out.c1z"
    env = _clean_env(
        BATON_API_TOKEN="wrong-key-value",
        BATON_ORG=sandbox.org_id,
        BATON_API_BASE_URL=sandbox.base_url,
        BATON_FILE=str(target),
        BATON_LOG_LEVEL="error",
    )
    code, out, err = await _run(env=env)
    assert code == 1
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "validate" in error_lines[0].lower(), err
    assert "wrong-key-value" not in out + err
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


async def test_daemon_mode_serves_probes_and_metrics_then_stops_on_sigterm(
    sandbox: AtlassianSandbox, tmp_path: Path
) -> None:
    tenant = await start_tenant(next_poll=0.2, next_heartbeat=1.0)
    port = _free_port()
    env = _clean_env(
        **tenant.env(),
        BATON_API_TOKEN=sandbox.api_key,
        BATON_ORG=sandbox.org_id,
        BATON_API_BASE_URL=sandbox.base_url,
        BATON_HEALTH_CHECK_PORT=str(port),
        BATON_C1Z_TEMP_DIR=str(tmp_path),
    )
    proc = await asyncio.create_subprocess_exec(
        SCRIPT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await tenant.wait_hello("", within=20)
        task_id = tenant.enqueue_sync()
        finish = await tenant.wait_finished(task_id, within=30)
        assert finish.outcome == "success", finish.status_message
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            ready = None
            for _ in range(50):
                ready = await http.get("/ready")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert ready is not None and ready.status_code == 200, ready.text if ready else ""
            assert (await http.get("/live")).json()["status"] == "alive"
            metrics = (await http.get("/metrics")).text
        assert 'baton_build_info{connector="baton-atlassian"' in metrics
        assert 'baton_sync_runs_total{outcome="success"} 1.0' in metrics
        assert 'baton_upstream_requests_total{connector="atlassian"' in metrics
        assert "/admin/v2/orgs/{org}" in metrics  # route templates, never ids
        assert sandbox.org_id not in metrics
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 25)
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await tenant.close()
    assert list(tmp_path.iterdir()) == []  # the uploaded c1z was deleted


async def test_serve_exposes_the_connector_over_grpc(sandbox: AtlassianSandbox) -> None:
    import grpc

    from connector.pb.c1.connector.v2 import connector_pb2, resource_pb2
    from connector.sdk.client import GrpcConnectorClient

    env = _clean_env(
        BATON_API_TOKEN=sandbox.api_key, BATON_ORG=sandbox.org_id, BATON_API_BASE_URL=sandbox.base_url
    )
    proc = await asyncio.create_subprocess_exec(
        SCRIPT,
        "serve",
        "--listen",
        "127.0.0.1:0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("serving c1.connector.v2 on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = GrpcConnectorClient(channel)
            md = (await client.get_metadata(connector_pb2.ConnectorServiceGetMetadataRequest())).metadata
            assert md.display_name
            users = await client.list_resources(
                resource_pb2.ResourcesServiceListResourcesRequest(resource_type_id="user")
            )
            assert len(users.list) > 0
    finally:
        proc.terminate()
        await proc.wait()
