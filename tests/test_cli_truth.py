"""The console scripts tell the truth (issue 15): exit codes and one line on stderr for interrupted syncs,
unreachable or misaddressed upstreams, misconfiguration and closed pipes; `--version`; the Go SDK's
one-shot flags; `serve` off loopback only with TLS. Real subprocesses against the loopback sandboxes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from connector import __version__
from connector.c1z.reader import C1zReader
from connector.sandbox.atlassian.data import OrgSpec
from connector.sandbox.atlassian.server import AtlassianSandbox, start_atlassian_sandbox
from connector.sandbox.confluence.server import start_confluence_sandbox
from connector.sandbox.tenant import start_tenant
from connector.sandbox.tenant.certs import make_pki
from connector.sdk.errors import ConnectorError
from tests.test_cli import SCRIPT, _clean_env, _free_port, _run

CONFLUENCE = str(Path(sys.executable).parent / "baton-confluence-datacenter")


def _atlassian_env(sb: AtlassianSandbox, target: Path, **extra: str) -> dict[str, str]:
    base = {
        "BATON_API_TOKEN": sb.api_key,
        "BATON_ORG": sb.org_id,
        "BATON_API_BASE_URL": sb.base_url,
        "BATON_FILE": str(target),
    }
    return _clean_env(**{**base, **extra})


def _lines(text: str, prefix: str = "") -> list[str]:
    return [line for line in text.splitlines() if line.strip() and line.startswith(prefix)]


@pytest.fixture
async def sandbox() -> AsyncIterator[AtlassianSandbox]:
    sb = await start_atlassian_sandbox(spec=OrgSpec(accounts=40, groups=5, memberships=60, workspaces=2))
    yield sb
    await sb.stop()


# ---------------------------------------------------------------------------------------------- version


async def test_version_prints_name_and_version() -> None:
    code, out, err = await _run("--version", env=_clean_env())
    assert (code, out, err) == (0, f"baton-atlassian version {__version__}\n", "")


# ---------------------------------------------------------------------------------- interrupted syncs


@pytest.mark.parametrize(("sig", "expected"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_interrupted_one_shot_sync_exits_128_plus_signal_and_keeps_the_previous_file(
    sandbox: AtlassianSandbox, tmp_path: Path, sig: signal.Signals, expected: int
) -> None:
    target = tmp_path / "out.c1z"
    temp = tmp_path / "temp"
    temp.mkdir()
    code, _, err = await _run(env=_atlassian_env(sandbox, target, BATON_C1Z_TEMP_DIR=str(temp)))
    assert code == 0, err
    before = target.read_bytes()

    slow = await start_atlassian_sandbox(
        spec=OrgSpec(accounts=40, groups=5, memberships=60, workspaces=2), latency=0.3
    )
    env = _atlassian_env(slow, target, BATON_C1Z_TEMP_DIR=str(temp), BATON_LOG_LEVEL="info")
    proc = await asyncio.create_subprocess_exec(
        SCRIPT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        async with asyncio.timeout(30):
            while not any('"phase": "resources"' in line for line in seen):
                line = (await proc.stderr.readline()).decode()
                assert line, "the sync ended before it could be interrupted: " + "".join(seen)
                seen.append(line)
        proc.send_signal(sig)
        out, rest = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await slow.stop()
    err = "".join(seen) + rest.decode()
    assert proc.returncode == expected, err
    errors = _lines(err, "error:")
    assert errors == [
        f"error: sync interrupted by {sig.name}: no file written ({target} is as it was before)"
    ]
    assert "Traceback" not in err and "wrote" not in out.decode()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.c1z", "temp"]
    assert list(temp.iterdir()) == []


# --------------------------------------------------------------------------- unreachable upstreams


async def test_closed_port_fails_within_seconds_naming_the_cause(tmp_path: Path) -> None:
    env = _clean_env(
        BATON_API_TOKEN="some-api-key",
        BATON_ORG="org-1",
        BATON_API_BASE_URL="http://127.0.0.1:1",
        BATON_FILE=str(tmp_path / "out.c1z"),
        BATON_LOG_LEVEL="info",
    )
    started = time.monotonic()
    code, _, err = await _run(env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert code == 1
    errors = _lines(err, "error:")
    assert len(errors) == 1 and errors[0].startswith("error: sync failed in phase validate"), err
    assert errors[0].endswith("connection refused to 127.0.0.1:1"), errors
    # No minutes of backoff: not one retry, and well under the old two minutes even on a busy machine.
    assert "will be retried" not in err and "sync_retry" not in err
    assert elapsed < 30
    assert list(tmp_path.iterdir()) == []


async def test_https_against_a_plain_http_port_says_use_http(
    sandbox: AtlassianSandbox, tmp_path: Path
) -> None:
    https = sandbox.base_url.replace("http://", "https://")
    env = _atlassian_env(sandbox, tmp_path / "out.c1z", BATON_API_BASE_URL=https)
    code, _, err = await _run(env=env, timeout=60)
    assert code == 1
    (line,) = _lines(err, "error:")
    assert "TLS handshake with a server that speaks plain HTTP: use http://" in line, err
    assert "private CA" not in err


async def test_confluence_over_https_against_plain_http_says_use_http(tmp_path: Path) -> None:
    sb = await start_confluence_sandbox()
    try:
        env = _clean_env(
            BATON_HOSTNAME=sb.base_url.replace("http://", "https://"),
            BATON_ACCESS_TOKEN="admin-pat",
            BATON_FILE=str(tmp_path / "x.c1z"),
        )
        started = time.monotonic()
        code, _, err = await _run_script(CONFLUENCE, env=env, timeout=60)
    finally:
        await sb.stop()
    assert code == 1
    (line,) = _lines(err, "error:")
    assert "TLS handshake with a server that speaks plain HTTP: use http://" in line, err
    assert "private CA" not in err and "will be retried" not in err
    assert time.monotonic() - started < 30


async def test_confluence_hostname_needs_a_scheme_and_no_password(tmp_path: Path) -> None:
    base = _clean_env(BATON_ACCESS_TOKEN="a-personal-token", BATON_FILE=str(tmp_path / "x.c1z"))
    code, out, err = await _run_script(CONFLUENCE, env={**base, "BATON_HOSTNAME": "confluence.example.com"})
    assert code == 2 and out == ""
    assert err == (
        "baton-confluence-datacenter: error: invalid --hostname / BATON_HOSTNAME: must start with https:// "
        "or http:// (e.g. https://confluence.example.com, or http://... for a server without TLS) "
        '(got "confluence.example.com")\n'
    )
    for hostname in ("https://bob:hunter2@confluence.example.com", "bob:hunter2@confluence.example.com"):
        code, out, err = await _run_script(CONFLUENCE, env={**base, "BATON_HOSTNAME": hostname})
        assert code == 2, err
        assert len(_lines(err)) == 1 and "BATON_HOSTNAME" in err
        assert "hunter2" not in out + err and "Traceback" not in err


async def test_atlassian_url_with_a_password_is_refused_without_echoing_it() -> None:
    env = _clean_env(
        BATON_API_TOKEN="some-api-key",
        BATON_ORG="org-1",
        BATON_API_BASE_URL="https://me:hunter2@api.example.com",
    )
    code, out, err = await _run(env=env)
    assert code == 2 and out == ""
    assert err == (
        "baton-atlassian: error: invalid --api-base-url / BATON_API_BASE_URL: must not contain a user name "
        'or password (for --api-base-url): use --api-token (got "https://me:***@api.example.com")\n'
    )


async def test_daemon_keeps_running_and_reports_the_unreachable_upstream_on_health(tmp_path: Path) -> None:
    tenant = await start_tenant(next_poll=0.2, next_heartbeat=1.0)
    port = _free_port()
    env = _clean_env(
        **tenant.env(),
        BATON_API_TOKEN="some-api-key",
        BATON_ORG="org-1",
        BATON_API_BASE_URL="http://127.0.0.1:1",
        BATON_HEALTH_CHECK_PORT=str(port),
        BATON_C1Z_TEMP_DIR=str(tmp_path),
        BATON_LOG_LEVEL="info",
    )
    proc = await asyncio.create_subprocess_exec(
        SCRIPT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        await tenant.wait_hello("", within=20)
        task_id = tenant.enqueue_sync()
        finish = await tenant.wait_finished(task_id, within=30)
        assert finish.outcome == "error"
        assert "connection refused to 127.0.0.1:1" in finish.status_message
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            health = None
            async with asyncio.timeout(20):
                while health is None or health.status_code == 404:
                    try:
                        health = await http.get("/health")
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
        assert health.status_code == 503
        assert "connection refused to 127.0.0.1:1" in health.json()["details"]["validation_error"]
        assert proc.returncode is None  # still polling the tenant: ConductorOne decides when to retry
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 25)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await tenant.close()
    assert proc.returncode == 0
    assert "connection refused to 127.0.0.1:1" in err.decode()


async def _run_script(
    script: str, *args: str, env: dict[str, str], timeout: float = 30
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        script, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# ------------------------------------------------------------------------------------ misconfiguration


async def test_client_secret_without_client_id_is_an_error(tmp_path: Path) -> None:
    env = _clean_env(
        BATON_API_TOKEN="some-api-key",
        BATON_ORG="org-1",
        BATON_CLIENT_SECRET="secret-token:conductorone.com:v1:abcdef",
        BATON_FILE=str(tmp_path / "out.c1z"),
    )
    code, out, err = await _run(env=env)
    assert code == 2 and out == ""
    assert err == (
        "baton-atlassian: error: --client-secret / BATON_CLIENT_SECRET is set without --client-id / "
        "BATON_CLIENT_ID: set both (service mode) or neither (one-shot sync)\n"
    )
    assert list(tmp_path.iterdir()) == []


async def test_client_id_without_secret_is_an_error(tmp_path: Path) -> None:
    env = _clean_env(
        BATON_API_TOKEN="some-api-key",
        BATON_ORG="org-1",
        BATON_CLIENT_ID="hydra@acme.conductor.one/pcc",
        BATON_C1Z_TEMP_DIR=str(tmp_path),
        BATON_HEALTH_CHECK="false",
    )
    code, _, err = await _run(env=env)
    assert code == 2
    assert _lines(err, "error:") == ["error: client-secret is required in service mode (BATON_CLIENT_SECRET)"]


async def test_unknown_baton_variables_give_one_warning_with_the_close_match() -> None:
    env = _clean_env(
        BATON_API_TOKEN="some-api-key",
        BATON_ORG="org-1",
        BATON_PROVISONING="true",
        BATON_DOMAIN_URL="https://example.okta.com",
    )
    code, out, err = await _run("capabilities", env=env)
    assert code == 0 and json.loads(out)["@type"].endswith("ConnectorCapabilities")
    assert err == (
        "baton-atlassian: warning: ignoring unknown environment variables: BATON_DOMAIN_URL, "
        "BATON_PROVISONING (did you mean BATON_PROVISIONING?)\n"
    )


async def test_example_secret_placeholders_are_refused() -> None:
    env = _clean_env(BATON_API_TOKEN="some-api-key", BATON_ORG="<Atlassian org ID>")
    code, _, err = await _run(env=env)
    assert code == 2
    assert err == (
        "baton-atlassian: error: invalid --org / BATON_ORG: still the example's placeholder; put the real "
        'value there (got "<Atlassian org ID>")\n'
    )
    env = _clean_env(BATON_API_TOKEN="<Atlassian organization API access token>", BATON_ORG="org-1")
    code, _, err = await _run(env=env)
    assert code == 2 and "BATON_API_TOKEN: still the example's placeholder" in err
    assert "Atlassian organization API access token" not in err  # a secret's value is never echoed


# ---------------------------------------------------------------------------------------- no tracebacks


async def test_capabilities_into_a_closed_pipe_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has already exited
    try:
        proc = await asyncio.create_subprocess_exec(
            SCRIPT,
            "capabilities",
            env=_clean_env(BATON_API_TOKEN="some-api-key", BATON_ORG="org-1"),
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert err.decode() == ""


@pytest.mark.parametrize(("sig", "expected"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
async def test_serve_stops_on_a_signal_without_a_traceback(
    sandbox: AtlassianSandbox, sig: signal.Signals, expected: int
) -> None:
    env = _clean_env(
        BATON_API_TOKEN=sandbox.api_key, BATON_ORG=sandbox.org_id, BATON_API_BASE_URL=sandbox.base_url
    )
    proc = await asyncio.create_subprocess_exec(
        SCRIPT, "serve", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("serving c1.connector.v2 on 127.0.0.1:"), line
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == expected
    assert "Traceback" not in err.decode() and "KeyboardInterrupt" not in err.decode()


async def test_serve_refuses_plaintext_off_loopback_and_serves_tls_there(
    sandbox: AtlassianSandbox, tmp_path: Path
) -> None:
    from connector.pb.c1.connector.v2 import connector_pb2
    from connector.sdk.client import GrpcConnectorClient

    env = _clean_env(
        BATON_API_TOKEN=sandbox.api_key, BATON_ORG=sandbox.org_id, BATON_API_BASE_URL=sandbox.base_url
    )
    code, out, err = await _run("serve", "--listen", "0.0.0.0:0", env=env)
    assert code == 2 and out == ""
    assert err == (
        "baton-atlassian: error: refusing to serve plaintext gRPC on 0.0.0.0: anyone who can reach it could "
        "grant and revoke access. Listen on 127.0.0.1, or give --tls-cert and --tls-key\n"
    )
    code, _, err = await _run(
        "serve", "--listen", "0.0.0.0:0", "--tls-cert", str(tmp_path / "no.pem"), env=env
    )
    assert code == 2 and err == "baton-atlassian: error: --tls-cert and --tls-key must be given together\n"

    pki = make_pki()
    (tmp_path / "cert.pem").write_bytes(pki.cert_pem)
    (tmp_path / "key.pem").write_bytes(pki.key_pem)
    proc = await asyncio.create_subprocess_exec(
        SCRIPT,
        "serve",
        "--listen=0.0.0.0:0",
        "--tls-cert",
        str(tmp_path / "cert.pem"),
        "--tls-key",
        str(tmp_path / "key.pem"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("serving c1.connector.v2 (TLS) on 0.0.0.0:"), line
        port = int(line.rsplit(":", 1)[1])
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            client = GrpcConnectorClient(channel)
            md = (await client.get_metadata(connector_pb2.ConnectorServiceGetMetadataRequest())).metadata
            assert md.display_name
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(ConnectorError) as refused:
                await asyncio.wait_for(
                    GrpcConnectorClient(plain).get_metadata(
                        connector_pb2.ConnectorServiceGetMetadataRequest()
                    ),
                    10,
                )
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.terminate()
        await proc.wait()


# ------------------------------------------------------------------------------- one-shot operations


async def test_one_shot_grant_revoke_and_create_account(sandbox: AtlassianSandbox, tmp_path: Path) -> None:
    target = tmp_path / "sync.c1z"
    env = _atlassian_env(sandbox, target)
    code, _, err = await _run(env=env)
    assert code == 0, err
    state = sandbox.state
    group_id = next(g for g in state.groups if 0 < len(state.group_members.get(g, ())) < len(state.users))
    members = state.group_members[group_id]
    outsider = next(u for u in sorted(state.users) if u not in members and state.users[u].status == "active")
    entitlement = f"group:{group_id}:member"
    with C1zReader(target) as reader:
        assert reader.get_resource("user", outsider) is not None
        member_grant = next(g for g in reader.grants(entitlement_id=entitlement))
    member = member_grant.principal.id.resource

    grant = (
        "--grant-entitlement",
        entitlement,
        "--grant-principal",
        outsider,
        "--grant-principal-type",
        "user",
    )
    code, out, err = await _run(*grant, env=env)
    assert (code, err) == (0, ""), err
    assert out == f"granted {entitlement} to user:{outsider}\n"
    assert outsider in state.group_members[group_id]
    code, out, _ = await _run(*grant, env=env)
    assert (code, out) == (0, f"already granted: {entitlement} to user:{outsider}\n")

    code, out, err = await _run("--revoke-grant", member_grant.id, env=env)
    assert (code, out, err) == (0, f"revoked {member_grant.id}\n", "")
    assert member not in state.group_members[group_id]

    code, out, err = await _run("--create-account-email", "new.person@example.com", env=env)
    assert code == 0, err
    created = state.user_by_email("new.person@example.com")
    assert created is not None and out == f"account created: user:{created.account_id}\n"

    # Failures: one line, exit 1 (lookups) or 2 (flags that cannot work together).
    code, out, err = await _run("--revoke-grant", "no-such-grant", env=env)
    assert (code, out) == (
        1,
        "",
    ) and err == f"baton-atlassian: error: grant 'no-such-grant' is not in {target}\n"
    code, _, err = await _run("--grant-entitlement", entitlement, env=env)
    assert code == 2
    assert err == (
        "baton-atlassian: error: missing --grant-principal / BATON_GRANT_PRINCIPAL: required to grant\n"
    )
    code, _, err = await _run("--revoke-grant", "x", "--create-account-login", "y", env=env)
    assert code == 2 and "one one-shot operation at a time" in err
    missing = _atlassian_env(sandbox, tmp_path / "none.c1z")
    code, _, err = await _run("--revoke-grant", "x", env=missing)
    assert code == 1 and "run a sync first" in err and len(_lines(err)) == 1


async def test_sync_resources_is_a_partial_sync_of_those_resources(
    sandbox: AtlassianSandbox, tmp_path: Path
) -> None:
    target = tmp_path / "partial.c1z"
    group_id = sorted(sandbox.state.groups)[0]
    code, out, err = await _run("--sync-resources", f"group:{group_id}", env=_atlassian_env(sandbox, target))
    assert code == 0, err
    assert "(partial)" in out
    with C1zReader(target) as reader:
        sync = reader.latest_finished_sync(None)
        assert sync is not None
        resources = list(reader.resources(sync_id=sync.sync_id))
        grants = list(reader.grants(sync_id=sync.sync_id))
    assert [(r.id.resource_type, r.id.resource) for r in resources] == [("group", group_id)]
    assert {g.principal.id.resource for g in grants} == sandbox.state.group_members[group_id]
    code, _, err = await _run("--sync-resources", "group", env=_atlassian_env(sandbox, target))
    assert code == 2 and "TYPE:ID" in err and len(_lines(err)) == 1


async def test_inspect_accepts_both_argument_orders(sandbox: AtlassianSandbox, tmp_path: Path) -> None:
    target = tmp_path / "sync.c1z"
    code, _, err = await _run(env=_atlassian_env(sandbox, target))
    assert code == 0, err
    outs = []
    for args in (("inspect", str(target), "stats"), ("inspect", "stats", str(target))):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "connector",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err_b = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err_b.decode()
        outs.append(out.decode())
    assert outs[0] == outs[1] and "user" in outs[0]
