"""Configuration, validation, errors, rate limits and full syncs of baton-atlassian against the sandbox."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from connector.apps.atlassian.client import AtlassianClient, admin_error
from connector.apps.atlassian.connector import AtlassianConnector, build_connector
from connector.apps.atlassian.errors import provisioning_error
from connector.apps.atlassian.main import SPEC
from connector.apps.atlassian.settings import DEFAULT_API_BASE_URL, AtlassianSettings
from connector.c1z.reader import C1zReader
from connector.cli import run_app
from connector.ops.settings import SettingsError, parse_settings
from connector.pb.c1.connector.v2 import annotation_ratelimit_pb2, connector_pb2, resource_pb2
from connector.sandbox.atlassian.server import start_atlassian_sandbox
from connector.sdk.errors import ConnectorError, UpstreamError
from connector.sdk.http import RetryPolicy
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncOptions, run_sync
from tests.test_atlassian_support import SMALL, atlassian_env, grants_of, list_all

KEY = "atl-key-SECRET-123456"
VALIDATE = connector_pb2.ConnectorServiceValidateRequest()


# --- settings --------------------------------------------------------------------------------------------


def test_settings_from_env_and_flags_with_the_organization_alias() -> None:
    s = parse_settings(AtlassianSettings, [], {"BATON_API_TOKEN": KEY, "BATON_ORG": "org-1"})
    assert s.org == "org-1" and s.api_token.get_secret_value() == KEY
    assert s.api_base_url == DEFAULT_API_BASE_URL and not s.scim_enabled
    assert s.api_concurrency == 8 and s.api_rate_limit is None
    alias = parse_settings(AtlassianSettings, ["--organization", "org-2"], {"BATON_API_TOKEN": KEY})
    assert alias.org == "org-2"
    env_alias = parse_settings(AtlassianSettings, [], {"BATON_API_TOKEN": KEY, "BATON_ORGANIZATION": "org-3"})
    assert env_alias.org == "org-3"
    full = parse_settings(
        AtlassianSettings,
        [
            "--org",
            "o",
            "--api-base-url",
            "http://127.0.0.1:9/",
            "--api-concurrency",
            "3",
            "--api-rate-limit",
            "5",
        ],
        {
            "BATON_API_TOKEN": KEY,
            "BATON_SCIM_TOKEN": "scim-tok",
            "BATON_SCIM_BASE_URL": "https://x.example/scim",
        },
    )
    assert (
        full.api_base_url == "http://127.0.0.1:9" and full.api_concurrency == 3 and full.api_rate_limit == 5
    )
    assert full.scim_enabled


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        ([], {"BATON_ORG": "o"}, ["--api-token", "BATON_API_TOKEN"]),
        ([], {"BATON_API_TOKEN": KEY}, ["--org", "BATON_ORG"]),
        (["--org", "o", "--api-base-url", "ftp://x"], {"BATON_API_TOKEN": KEY}, ["--api-base-url"]),
        (
            ["--org", "o", "--scim-token", "t"],
            {"BATON_API_TOKEN": KEY},
            ["--scim-base-url", "BATON_SCIM_TOKEN"],
        ),
        (["--org", "https://admin.atlassian.com/o/x"], {"BATON_API_TOKEN": KEY}, ["--org"]),
    ],
)
def test_settings_errors_name_the_flag_and_hide_secrets(
    argv: list[str], env: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(AtlassianSettings, argv, env)
    message = str(info.value)
    assert all(n in message for n in names), message
    assert KEY not in message and "\n" not in message


# --- validation and errors ------------------------------------------------------------------------------


async def test_validate_accepts_the_right_key_and_org() -> None:
    async with atlassian_env() as env:
        resp = await env.runtime.validate(VALIDATE)
        assert resp.sdk_version


async def test_validate_wrong_key_is_unauthenticated_with_advice() -> None:
    async with atlassian_env(env={"BATON_API_TOKEN": "wrong-key"}) as env:
        with pytest.raises(ConnectorError) as info:
            await env.runtime.validate(VALIDATE)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "BATON_API_TOKEN" in info.value.message and "API key without scopes" in info.value.message
        assert "wrong-key" not in info.value.message


async def test_validate_wrong_org_names_the_orgs_the_key_can_see() -> None:
    async with atlassian_env(flags=("--org", "not-my-org")) as env:
        with pytest.raises(ConnectorError) as info:
            await env.runtime.validate(VALIDATE)
        err = info.value
        assert err.code == grpc.StatusCode.NOT_FOUND
        assert "not-my-org" in err.message and "ADMIN-404-2" in err.message and "BATON_ORG" in err.message
        assert env.sandbox.org_id in err.message  # the organization the key does belong to
        # Outside validate, the same envelope still reaches the caller with its code and title.
        with pytest.raises(ConnectorError) as info:
            await list_all(env.runtime, "group")
        assert "ADMIN-404-2 Organization not found" in info.value.message
        assert info.value.code == grpc.StatusCode.NOT_FOUND


async def test_validate_key_of_another_organization() -> None:
    async with atlassian_env(env={"BATON_API_TOKEN": "atl-sandbox-other-org-key"}) as env:
        with pytest.raises(ConnectorError) as info:
            await env.runtime.validate(VALIDATE)
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert env.sandbox.other_org_id in info.value.message


async def test_validate_checks_the_scim_token() -> None:
    sandbox = await start_atlassian_sandbox(spec=SMALL)
    try:
        settings = parse_settings(
            AtlassianSettings,
            [
                "--api-base-url",
                sandbox.base_url,
                "--org",
                sandbox.org_id,
                "--scim-base-url",
                sandbox.scim_base_url,
            ],
            {"BATON_API_TOKEN": sandbox.api_key, "BATON_SCIM_TOKEN": "not-the-scim-token"},
        )
        runtime = ConnectorRuntime(build_connector(settings))
        with pytest.raises(ConnectorError) as info:
            await runtime.validate(VALIDATE)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and "BATON_SCIM_TOKEN" in info.value.message
        await runtime.close()
    finally:
        await sandbox.stop()


async def test_api_key_follows_its_mounted_file(tmp_path: Path) -> None:
    key_file = tmp_path / "api-token"
    key_file.write_text("first-org-key-1234\n")
    sandbox = await start_atlassian_sandbox(spec=SMALL, api_key="first-org-key-1234")
    settings = parse_settings(
        AtlassianSettings,
        ["--api-base-url", sandbox.base_url, "--org", sandbox.org_id],
        {"BATON_API_TOKEN_FILE": str(key_file)},
    )
    connector = build_connector(settings)
    runtime = ConnectorRuntime(connector)
    try:
        await runtime.validate(VALIDATE)
        # The key is rotated: Atlassian stops accepting the old one and the mounted Secret is swapped.
        sandbox.options.api_key = "second-org-key-5678"
        fresh = tmp_path / "api-token.new"
        fresh.write_text("second-org-key-5678\n")
        fresh.replace(key_file)
        await runtime.validate(VALIDATE)  # the 401 makes the client re-read the file and retry
        assert len(await list_all(runtime, "group")) == len(sandbox.state.groups)
        # The same clients the requests went through are the ones exposed for metrics.
        assert [c.name for c in connector.upstream_clients()] == ["atlassian"]
        assert connector.upstream_clients()[0].stats.requests == sandbox.stats.requests - 1  # -1: the 401
    finally:
        await runtime.close()
        await sandbox.stop()


async def test_concurrency_is_bounded_by_the_setting() -> None:
    async with atlassian_env(latency=0.01, flags=("--api-concurrency", "3")) as env:
        await asyncio.gather(list_all(env.runtime, "user"), list_all(env.runtime, "api_token"))
        for ws in await list_all(env.runtime, "workspace"):
            await grants_of(env.runtime, ws)
        assert 2 <= env.sandbox.stats.max_in_flight <= 3


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ADMIN-UAM-400-4", 400, "not licensed"),
        ("ADMIN-403-5", 403, "identity provider"),
        ("ADMIN-409-3", 409, "user limit"),
        ("ADMIN-UAM-409-3", 409, "user limit"),
        ("ADMIN-UAM-402-1", 402, "paid Atlassian subscription"),
        ("ADMIN-UAM-400-2", 400, "not active"),
    ],
)
def test_documented_refusals_become_failed_preconditions_quoting_atlassian(
    code: str, status: int, expected: str
) -> None:
    body = {
        "errors": [{"id": "x", "status": str(status), "code": code, "title": "Some Title", "detail": "d"}]
    }
    err = admin_error(
        UpstreamError("atlassian", "POST", "/r", status, "refused", body=body),
        "assign role r on w for user u",
    )
    mapped = provisioning_error(err, resource_id="ari:cloud:confluence::site/1", role="atlassian/user")
    assert mapped.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"HTTP {status} {code} Some Title" in mapped.message and expected in mapped.message
    # Anything undocumented keeps its status mapping and still quotes the envelope.
    envelope = {"errors": [{"code": "ADMIN-409-5", "title": "T"}]}
    other = admin_error(UpstreamError("atlassian", "DELETE", "/r", 409, "x", body=envelope), "a")
    assert provisioning_error(other) is other and "ADMIN-409-5 T" in other.message


# --- rate limits ------------------------------------------------------------------------------------------


async def test_429_with_iso_reset_is_waited_out() -> None:
    async with atlassian_env(rate_limit=20, burst=1, retry_after=False) as env:
        users = await list_all(env.runtime, "user")
        groups = await list_all(env.runtime, "group")
        workspaces = await list_all(env.runtime, "workspace")
        tokens = await list_all(env.runtime, "api_token")
        assert len(users) == len(env.sandbox.state.users) and len(tokens) == len(env.sandbox.state.tokens)
        assert len(groups) == len(env.sandbox.state.groups) and workspaces
        assert env.sandbox.stats.rate_limited > 0
        assert env.connector.client.http.stats.rate_limited > 0


async def test_client_side_pacing_avoids_429s() -> None:
    async with atlassian_env(rate_limit=50, burst=2, flags=("--api-rate-limit", "40")) as env:
        await list_all(env.runtime, "user")
        await list_all(env.runtime, "workspace")
        assert env.sandbox.stats.requests >= 4
        assert env.sandbox.stats.rate_limited == 0


async def test_rate_limit_that_outlasts_retries_is_unavailable_with_reset() -> None:
    sandbox = await start_atlassian_sandbox(spec=SMALL, rate_limit=0.5, burst=1)
    client = AtlassianClient(
        base_url=sandbox.base_url,
        api_key=sandbox.api_key,
        org_id=sandbox.org_id,
        retry=RetryPolicy(max_attempts=1),
    )
    runtime = ConnectorRuntime(AtlassianConnector(client))
    try:
        # Someone else using the same key has spent the quota.
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {sandbox.api_key}"}) as other:
            await other.get(f"{sandbox.base_url}/admin/v1/orgs/{sandbox.org_id}")
        with pytest.raises(ConnectorError) as info:
            await list_all(runtime, "group")
        err = info.value
        assert err.code == grpc.StatusCode.UNAVAILABLE and "ADMIN-429-1" in err.message
        desc = err.rate_limit
        assert isinstance(desc, annotation_ratelimit_pb2.RateLimitDescription)
        assert desc.reset_at.seconds > 0
    finally:
        await runtime.close()
        await sandbox.stop()


async def test_after_a_429_requests_are_spread_out_not_herded() -> None:
    # Eight requests in flight against 20 requests/s with no burst: without pacing they would collide at
    # every reset and some would run out of attempts.
    async with atlassian_env(
        rate_limit=20, burst=1, retry_after=False, flags=("--api-concurrency", "8")
    ) as env:
        client = env.connector.client
        started = time.monotonic()
        await asyncio.gather(*(client.get_org() for _ in range(24)))
        # The first eight went out together (one passes); after that, hardly any more refusals.
        assert env.sandbox.stats.rate_limited <= 7 + 3
        assert time.monotonic() - started < 2.5  # 24 requests at 20/s, not a crawl
        assert client.pacer.spacing > 0


# --- full syncs --------------------------------------------------------------------------------------------


async def test_full_sync_to_c1z(tmp_path: Path) -> None:
    # Only current APIs: the deprecated v2 GET user/group lists are switched off.
    async with atlassian_env(provisioning=False, v2_get_sunset=True) as env:
        st = env.sandbox.state
        (ws_id, role), gids = next((k, v) for k, v in sorted(st.roles.groups_by_role.items()) if v)
        gid = sorted(gids)[0]
        both = sorted(st.members(gid) - st.direct_users(ws_id, role))[0]
        st.roles.seed("user", both, ws_id, role)
        out = tmp_path / "atlassian.c1z"
        report = await run_sync(env.runtime, out, SyncOptions(concurrency=4))
        assert report.resources == {
            "user": len(st.users),
            "group": len(st.groups),
            "workspace": len(st.workspaces),
            "organization": 1,
            "api_token": len(st.tokens),
        }
        assert report.upstream_requests == env.connector.upstream_request_count()
        assert report.connector_counters["user_pages"] == -(-len(st.users) // 100)
        with C1zReader(out) as reader:
            assert {r.id for r in reader.resource_types()} == {
                "user",
                "group",
                "workspace",
                "organization",
                "api_token",
            }
            # Every (workspace, role) holder ends up with a grant: direct, or expanded from a group.
            for ws in st.workspaces.values():
                for role_id in ws.roles:
                    ent_id = f"workspace:{ws.id}:role:{role_id}"
                    holders = {
                        g.principal.id.resource
                        for g in reader.grants(entitlement_id=ent_id, principal_types=("user",))
                    }
                    assert holders == st.effective_users(ws.id, role_id), ent_id
            # Held directly and through a group: one grant, both sources.
            ent_id = f"workspace:{ws_id}:role:{role}"
            (held,) = reader.grants(
                entitlement_id=ent_id, principal=resource_pb2.ResourceId(resource_type="user", resource=both)
            )
            assert set(held.sources.sources) == {ent_id, f"group:{gid}:member"}
            member = next(iter(st.members(gid) - st.direct_users(ws_id, role)))
            (derived,) = reader.grants(
                entitlement_id=ent_id,
                principal=resource_pb2.ResourceId(resource_type="user", resource=member),
            )
            assert set(derived.sources.sources) == {f"group:{gid}:member"}
            gid = next(g for g in st.groups if st.members(g))
            members = {g.principal.id.resource for g in reader.grants(entitlement_id=f"group:{gid}:member")}
            assert members == st.members(gid)
            user = reader.get_resource("user", next(iter(st.users)))
            assert user is not None


def _sandbox_process(*extra: str) -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector.sandbox.atlassian.server",
            "--accounts",
            "120",
            "--groups",
            "8",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def sandbox_process() -> Iterator[dict[str, Any]]:
    yield from _sandbox_process()


def test_command_syncs_to_a_file_and_prints_capabilities(
    sandbox_process: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    info = sandbox_process
    monkeypatch.setenv("BATON_API_TOKEN", info["api_key"])
    monkeypatch.setenv("BATON_ORGANIZATION", info["org_id"])
    base = ["--api-base-url", info["base_url"], "--log-level", "error", "--log-format", "json"]
    assert run_app(SPEC, ["capabilities", *base]) == 0
    caps = json.loads(capsys.readouterr().out)
    assert {c["resourceType"]["id"] for c in caps["resourceTypeCapabilities"]} == {
        "user",
        "group",
        "workspace",
        "organization",
        "api_token",
    }
    out = tmp_path / "sync.c1z"
    assert run_app(SPEC, [*base, "-f", str(out)]) == 0
    with C1zReader(out) as reader:
        assert len(list(reader.resources(resource_type="user"))) == 120
    monkeypatch.setenv("BATON_API_TOKEN", "definitely-wrong")
    assert run_app(SPEC, [*base, "-f", str(tmp_path / "bad.c1z")]) == 1
    assert "rejected the API key" in capsys.readouterr().err
    assert not (tmp_path / "bad.c1z").exists()
