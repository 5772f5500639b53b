"""The ids ConductorOne's current Go connector produces, pinned on sandbox data (a customer switching keeps
every resource, entitlement and grant id), and the configuration names of both the Go connector and the
set-up guide."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from connector.apps.atlassian.main import SPEC
from connector.apps.atlassian.resources import FIXED_ROLES, ORG_ROLES
from connector.apps.atlassian.settings import AtlassianSettings
from connector.c1z.reader import C1zReader
from connector.cli import run_app
from connector.ops.settings import SettingsError, format_help, parse_settings
from connector.pb.c1.connector.v2 import annotation_grant_pb2, entitlement_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import ConnectorError
from connector.sync.engine import SyncOptions, run_sync
from tests.test_atlassian_support import (
    atlassian_env,
    entitlements_of,
    grants_of,
    list_all,
    revoke,
    user_ref,
)

Purpose = entitlement_pb2.Entitlement.PurposeValue
ResourceStatus = resource_pb2.Status.ResourceStatus


async def test_every_id_is_the_go_connectors(tmp_path: Path) -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        out = tmp_path / "ids.c1z"
        await run_sync(env.runtime, out, SyncOptions())
        with C1zReader(out) as reader:
            types = {t.id: t for t in reader.resource_types()}
            assert sorted(types) == sorted(["user", "group", "workspace", "organization", "api_token"])
            assert types["organization"].display_name == "Organization" and not types["organization"].traits

            users = {r.id.resource: r for r in reader.resources(resource_type="user")}
            assert set(users) == set(st.users)  # user = accountId
            assert {r.id.resource for r in reader.resources(resource_type="group")} == set(st.groups)
            assert {r.id.resource for r in reader.resources(resource_type="workspace")} == set(st.workspaces)
            assert {r.id.resource for r in reader.resources(resource_type="api_token")} == {
                t.id for t in st.tokens
            }
            (org,) = reader.resources(resource_type="organization")
            assert org.id.resource == st.org_id and org.display_name == st.org_name

            ents = {e.id: e for e in reader.entitlements()}
            # group:<gid>:member
            for gid in st.groups:
                assert f"group:{gid}:member" in ents
            # workspace:<ARI>:role:<role>, the ten fixed roles on every workspace
            for ws in st.workspaces:
                got = sorted(e for e in ents if e.startswith(f"workspace:{ws}:"))
                assert got == sorted(f"workspace:{ws}:role:{r}" for r in FIXED_ROLES)
            assert (
                "workspace:ari:cloud:confluence::site/"
                + next(w.cloud_id for w in st.workspaces.values() if w.type_key == "confluence")
                + ":role:atlassian/user"
                in ents
            )
            # organization:<orgId>:role:<role>, with the Go connector's names
            org_ents = {e: ents[e] for e in ents if e.startswith("organization:")}
            assert sorted(org_ents) == sorted(f"organization:{st.org_id}:role:{r}" for r in ORG_ROLES)
            admin = org_ents[f"organization:{st.org_id}:role:atlassian/org-admin"]
            assert admin.display_name == f"atlassian/org-admin on {st.org_name}"
            assert admin.description == "Role 'atlassian/org-admin' applied at organization level."
            assert (
                admin.slug == "role:atlassian/org-admin" and admin.purpose == Purpose.PURPOSE_VALUE_PERMISSION
            )
            assert [t.id for t in admin.grantable_to] == ["user"]

            grant_ids = {g.id for g in reader.grants()}
            # group:<gid>:member:user:<accountId>
            for gid in st.groups:
                for account in st.members(gid):
                    assert f"group:{gid}:member:user:{account}" in grant_ids
            # workspace:<ARI>:role:<role>:user:<accountId> and ...:group:<gid>
            for (ws, role), holders in st.roles.users_by_role.items():
                for account in holders:
                    assert f"workspace:{ws}:role:{role}:user:{account}" in grant_ids
            group_held = [(k, g) for k, gs in st.roles.groups_by_role.items() for g in gs]
            assert group_held
            for (ws, role), gid in group_held:
                assert f"workspace:{ws}:role:{role}:group:{gid}" in grant_ids
            # organization:<orgId>:role:<role>:user:<accountId> from the platform roles, nothing else
            want_org = {
                f"organization:{st.org_id}:role:{r}:user:{u.account_id}"
                for u in st.users.values()
                for r in u.platform_roles
            }
            assert {r for u in st.users.values() for r in u.platform_roles} == set(ORG_ROLES)
            assert {g for g in grant_ids if g.startswith("organization:")} == want_org
            # Project and goal assignments are neither workspace nor organization roles.
            others = [a for u in st.users.values() for a in u.other_roles]
            assert {o for o, _, _ in others} == {"project", "goal"}
            assert not [g for g in grant_ids if ":townsquare:" in g]


async def test_user_status_is_on_the_resource_as_the_go_sdk_writes_it() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        want = {
            "active": ResourceStatus.RESOURCE_STATUS_ENABLED,
            "suspended": ResourceStatus.RESOURCE_STATUS_DISABLED,
            "not_invited": ResourceStatus.RESOURCE_STATUS_DISABLED,
            "deactivated": ResourceStatus.RESOURCE_STATUS_DISABLED,
            "for_deletion": ResourceStatus.RESOURCE_STATUS_DISABLED,
        }
        seen = set()
        for res in await list_all(env.runtime, "user"):
            status = st.users[res.id.resource].status
            assert (res.status.status, res.status.details) == (want[status], status)
            seen.add(status)
        assert seen == set(want)
        # The wire form carries it as field 11 (what C1 reads).
        assert resource_pb2.Resource.DESCRIPTOR.fields_by_name["status"].number == 11


async def test_a_fixed_role_outside_the_product_table_is_found_with_one_count() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        conf = next(w for w in st.workspaces.values() if w.type_key == "confluence")
        conf.roles = (*conf.roles, "atlassian/site-admin")
        # Someone who also holds a role of the product: the discovery check cannot see this one.
        holder = next(iter(sorted(st.direct_users(conf.id, "atlassian/user"))))
        st.roles.seed("user", holder, conf.id, "atlassian/site-admin")
        await list_all(env.runtime, "group")
        by_id = {w.id.resource: w for w in await list_all(env.runtime, "workspace")}
        grants = {g.id for g in await grants_of(env.runtime, by_id[conf.id])}
        assert f"workspace:{conf.id}:role:atlassian/site-admin:user:{holder}" in grants
        other = next(w for w in st.workspaces.values() if w.type_key == "jira-software")
        assert not [
            g for g in await grants_of(env.runtime, by_id[other.id]) if "site-admin" in g.entitlement.id
        ]
        counters = env.connector.sync_counters()
        # Roles nobody holds cost no search: one count per workspace said so.
        assert counters["rare_role_searches_skipped"] > 0


async def test_grants_synced_before_the_role_segment_can_still_be_revoked() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        ws = next(w for w in st.workspaces.values() if w.type_key == "confluence")
        holder = sorted(st.direct_users(ws.id, "atlassian/user"))[0]
        res = next(r for r in await list_all(env.runtime, "workspace") if r.id.resource == ws.id)
        legacy = entitlement_pb2.Entitlement(id=f"workspace:{ws.id}:atlassian/user", slug="atlassian/user")
        legacy.resource.CopyFrom(res)
        resp = await revoke(env.runtime, legacy, user_ref(holder))
        assert model.find_annotation(resp.annotations, annotation_grant_pb2.GrantAlreadyRevoked) is None
        assert not st.roles.has("user", holder, ws.id, "atlassian/user")
        # The new id with no slug and no resource id: the workspace is read from between the type and `role`.
        other = sorted(st.direct_users(ws.id, "atlassian/user"))[0]
        bare = entitlement_pb2.Entitlement(id=f"workspace:{ws.id}:role:atlassian/user")
        bare.resource.id.resource_type = "workspace"
        await revoke(env.runtime, bare, user_ref(other))
        assert not st.roles.has("user", other, ws.id, "atlassian/user")
        with pytest.raises(ConnectorError) as info:
            await revoke(
                env.runtime, entitlement_pb2.Entitlement(id=f"group:{ws.id}:member"), user_ref(other)
            )
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_organization_entitlements_offer_every_platform_role_held() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        someone = next(u for u in st.users.values() if u.status == "active")
        someone.platform_roles.append("atlassian/made-up-platform-role")
        (org,) = await list_all(env.runtime, "organization")
        slugs = [e.slug for e in await entitlements_of(env.runtime, org)]
        assert slugs == [*(f"role:{r}" for r in ORG_ROLES), "role:atlassian/made-up-platform-role"]
        grants = {g.id for g in await grants_of(env.runtime, org)}
        assert (
            f"organization:{st.org_id}:role:atlassian/made-up-platform-role:user:{someone.account_id}"
            in grants
        )


# --- malformed answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "type_id", "field"),
    [("user", "user", "accountId"), ("group", "group", "id"), ("workspace", "workspace", "id")],
)
async def test_a_record_without_its_id_is_an_upstream_error_naming_the_field(
    kind: str, type_id: str, field: str
) -> None:
    async with atlassian_env(malformed=frozenset({kind})) as env:
        with pytest.raises(ConnectorError) as info:
            await list_all(env.runtime, type_id)
        message = info.value.message
        assert f"without its '{field}' field" in message and "malformed answer" in message
        assert "KeyError" not in message and "HTTP 200" in message


# --- configuration ----------------------------------------------------------------------------------

ORG = "0f1e2d3c-aaaa-4bbb-8ccc-123456789abc"
KEY = "atl-key-0123456789"


def parse(argv: list[str], env: dict[str, str]) -> AtlassianSettings:
    return parse_settings(AtlassianSettings, argv, env)


def test_the_go_connectors_names_and_the_guides_are_both_read(tmp_path: Path) -> None:
    go = parse([], {"BATON_ACCESS_TOKEN": KEY, "BATON_ORGANIZATION_ID": ORG})
    guide = parse([], {"BATON_API_TOKEN": KEY, "BATON_ORG": ORG})
    old = parse([], {"BATON_API_TOKEN": KEY, "BATON_ORGANIZATION": ORG})
    flags = parse(["--access-token", KEY, "--organization-id", ORG], {})
    for s in (go, guide, old, flags):
        assert (s.api_token.get_secret_value(), s.org) == (KEY, ORG)
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    for var in ("BATON_ACCESS_TOKEN_FILE", "BATON_API_TOKEN_FILE"):
        s = parse([], {var: str(key_file), "BATON_ORGANIZATION_ID": ORG})
        assert s.api_token.get_secret_value() == KEY and s.secret_file("api_token") == key_file
    s = parse(["--access-token-file", str(key_file), "--org", ORG], {})
    assert s.api_token.get_secret_value() == KEY
    # The Go connector's hidden base URL is this connector's API base URL.
    s = parse([], {"BATON_ACCESS_TOKEN": KEY, "BATON_ORGANIZATION_ID": ORG, "BATON_BASE_URL": "http://x:1/"})
    assert s.api_base_url == "http://x:1"
    assert parse(["--base-url", "http://y:2"], {"BATON_API_TOKEN": KEY, "BATON_ORG": ORG}).api_base_url == (
        "http://y:2"
    )
    # The same value under both names is no conflict.
    both = parse(
        [],
        {"BATON_API_TOKEN": KEY, "BATON_ACCESS_TOKEN": KEY, "BATON_ORG": ORG, "BATON_ORGANIZATION_ID": ORG},
    )
    assert both.org == ORG


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (
            [],
            {"BATON_API_TOKEN": KEY, "BATON_ACCESS_TOKEN": KEY + "x", "BATON_ORG": ORG},
            ("BATON_API_TOKEN", "BATON_ACCESS_TOKEN"),
        ),
        (
            [],
            {"BATON_API_TOKEN": KEY, "BATON_ORG": ORG, "BATON_ORGANIZATION_ID": "other"},
            ("BATON_ORG", "BATON_ORGANIZATION_ID"),
        ),
        (
            ["--org", ORG, "--organization-id", "other"],
            {"BATON_API_TOKEN": KEY},
            ("--org", "--organization-id"),
        ),
        (
            ["--api-token", KEY, "--access-token", "other-key"],
            {"BATON_ORG": ORG},
            ("--api-token", "--access-token"),
        ),
    ],
)
def test_two_spellings_that_disagree_are_one_clear_error(
    argv: list[str], env: dict[str, str], names: tuple[str, str]
) -> None:
    with pytest.raises(SettingsError) as info:
        parse(argv, env)
    message = str(info.value)
    assert "\n" not in message and message.startswith("conflicting")
    assert all(n in message for n in names)
    assert KEY not in message and "other-key" not in message


def test_help_shows_both_spellings() -> None:
    text = format_help(AtlassianSettings, "baton-atlassian")
    for name in (
        "--access-token",
        "--api-token",
        "BATON_ACCESS_TOKEN",
        "BATON_API_TOKEN",
        "BATON_ACCESS_TOKEN_FILE",
        "BATON_API_TOKEN_FILE",
        "--organization-id",
        "--org,",
        "BATON_ORGANIZATION_ID",
        "BATON_ORG,",
        "--base-url",
        "BATON_BASE_URL",
    ):
        assert name in text, name


def test_a_go_deployments_environment_runs_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BATON_ACCESS_TOKEN", KEY)
    monkeypatch.setenv("BATON_ORGANIZATION_ID", ORG)
    monkeypatch.setenv("BATON_ORG", "a-different-org")
    assert run_app(SPEC, ["capabilities"]) == 2
    err = capsys.readouterr().err
    assert "conflicting BATON_ORG and BATON_ORGANIZATION_ID" in err and len(err.strip().splitlines()) == 1
