"""What the Confluence connector syncs: ids, entitlements and grants per version, against the sandbox."""

from __future__ import annotations

import pytest
import structlog

from connector.pb.c1.connector.v2 import annotation_grant_pb2, annotation_trait_pb2, entitlement_pb2
from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.data import ADMIN_GROUP, ODD_GROUP_NAMES
from connector.sandbox.confluence.server import SandboxConfig
from connector.sdk import model
from tests.test_confluence_support import (
    LEGACY_SLUGS,
    SLUGS,
    TINY_CAPS,
    VERSIONS,
    expected_grant_ids,
    running,
    sync_all,
    user_id,
    user_ids,
    users_by_id,
)

Status = annotation_trait_pb2.UserTrait.Status


@pytest.mark.parametrize("legacy", [False, True], ids=["default-ids", "legacy-ids"])
@pytest.mark.parametrize("version", VERSIONS)
async def test_every_version_syncs_the_same_ids_with_capped_pages(version: str, legacy: bool) -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version=version, caps=TINY_CAPS)
    args = ["--legacy-ids"] if legacy else []
    async with running(version, data=data, config=config, args=args) as (_, connector):
        synced = await sync_all(connector)

    # every user, in server order, no duplicates
    assert synced.ids("user") == user_ids(data, legacy=legacy)
    assert synced.ids("group") == list(data.groups)
    assert synced.ids("space") == list(data.spaces)
    assert synced.grant_ids() == expected_grant_ids(data, legacy=legacy)
    slugs = LEGACY_SLUGS if legacy else SLUGS
    assert {e.id for e in synced.entitlements if e.resource.id.resource_type == "space"} == {
        f"space:{key}:{slug}" for key in data.spaces for slug in slugs.values()
    }
    assert len(synced.grants) == len(synced.grant_ids())  # no duplicate grants
    # Entitlements: one per group, fourteen per space (the Go connector's example: 3x1 + 2x14).
    assert len(synced.entitlements) == len(data.groups) + 14 * len(data.spaces)
    counters = connector.sync_counters()
    anonymous = sum(1 for _, p in data.iter_permissions() if p[1] == "anonymous")
    assert anonymous > 0
    assert counters.get("space_permissions_anonymous_skipped") == anonymous
    if version == "9.2":
        assert "space_permissions_alias_skipped" not in counters  # REST has no alias keys
    else:
        viewspace = sum(1 for _, p in data.iter_permissions() if p[0] == "VIEWSPACE")
        assert counters.get("space_permissions_alias_skipped") == viewspace


async def test_user_resources_carry_status_login_profile_and_emails_on_9x() -> None:
    data = sandbox_data.small()
    async with running("9.2", data=data) as (_, connector):
        synced = await sync_all(connector)
    users = {r.id.resource: r for r in synced.resources["user"]}
    disabled = [u for u in data.users.values() if not u.active]
    unlicensed = [u for u in data.users.values() if u.active and not u.licensed]
    assert disabled and unlicensed
    for user in data.users.values():
        res = users[user.user_key]
        trait = model.find_annotation(res.annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None
        assert res.display_name == user.display_name
        assert trait.login == user.username
        assert trait.status.status == (Status.STATUS_ENABLED if user.active else Status.STATUS_DISABLED)
        # The state on the resource too (Resource.status), with the raw value Confluence gave.
        assert res.status.status == (
            res.status.RESOURCE_STATUS_ENABLED if user.active else res.status.RESOURCE_STATUS_DISABLED
        )
        assert res.status.details == ("current" if user.active else "deactivated")
        profile = trait.profile.fields
        assert profile["user_key"].string_value == user.user_key
        assert profile["id"].string_value == user.user_key
        assert profile["user_name"].string_value == user.username
        assert profile["display_name"].string_value == user.display_name
        assert profile["account_type"].string_value == "known"
        # 9.x exposes emails for licensed, active users only.
        emails = [e.address for e in trait.emails]
        assert emails == ([user.email] if user.active and user.licensed else [])


@pytest.mark.parametrize("version", ["7.19", "8.5"])
async def test_status_is_real_before_9x_too(version: str) -> None:
    data = sandbox_data.small()
    async with running(version, data=data) as (_, connector):
        synced = await sync_all(connector)
    by_id = users_by_id(data)
    for res in synced.resources["user"]:
        trait = model.find_annotation(res.annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None
        active = by_id[res.id.resource].active
        assert trait.status.status == (Status.STATUS_ENABLED if active else Status.STATUS_DISABLED)
        assert res.status.status == (
            res.status.RESOURCE_STATUS_ENABLED if active else res.status.RESOURCE_STATUS_DISABLED
        )
        # 7.19 knows the state from JSON-RPC only; 8.5 says it in the REST listing.
        raw = ("active", "inactive") if version == "7.19" else ("current", "deactivated")
        assert res.status.details == raw[0 if active else 1]
        assert trait.profile.fields["user_name"].string_value == by_id[res.id.resource].username


async def test_users_in_no_group_are_found_on_7_19() -> None:
    data = sandbox_data.small()
    loners = [u for u in data.users if not data.groups_of(u)]
    assert loners, "the data set should have users in no group"
    async with running("7.19", data=data) as (_, connector):
        synced = await sync_all(connector)
    assert {user_id(data, u) for u in loners} <= set(synced.ids("user"))


async def test_group_and_space_entitlements_match_the_newest_go_connector() -> None:
    async with running("9.2") as (_, connector):
        synced = await sync_all(connector)
    ents = {e.id: e for e in synced.entitlements}
    eng = [e for e in synced.entitlements if e.resource.id.resource == "ENG"]
    assert sorted(e.slug for e in eng) == sorted(SLUGS.values())
    assert ents["space:ENG:read-space"].display_name == "Can read space on 'Engineering'"
    assert ents["space:ENG:delete_own-space"].display_name == "Can delete_own space on 'Engineering'"
    assert ents["space:ENG:create-page"].description == (
        "Has permission to create the Engineering space in Confluence Data Center"
    )
    assert [t.id for t in ents["space:ENG:create-page"].grantable_to] == ["user", "group"]
    assert ents["space:ENG:read-space"].purpose == entitlement_pb2.Entitlement.PURPOSE_VALUE_PERMISSION


async def test_group_and_space_entitlements_match_the_2025_go_connector_with_legacy_ids() -> None:
    async with running("9.2", args=["--legacy-ids"]) as (_, connector):
        synced = await sync_all(connector)
    ents = {e.id: e for e in synced.entitlements}
    member = ents["group:confluence-users:member"]
    assert member.display_name == "confluence-users Group Member"
    assert member.description == "Is member of the confluence-users group in Confluence Data Center"
    assert member.slug == "member"
    assert [t.id for t in member.grantable_to] == ["user"]
    assert member.purpose == entitlement_pb2.Entitlement.PURPOSE_VALUE_ASSIGNMENT

    eng = [e for e in synced.entitlements if e.resource.id.resource == "ENG"]
    assert sorted(e.slug for e in eng) == sorted(
        [
            "view",
            "add-comment",
            "add-attachment",
            "edit-blog",
            "edit-space",
            "export-space",
            "remove-attachment",
            "remove-blog",
            "remove-comment",
            "remove-mail",
            "remove-own-content",
            "remove-page",
            "set-page-permissions",
            "set-space-permissions",
        ]
    )
    assert ents["space:ENG:view"].display_name == "Can view Engineering"
    assert ents["space:ENG:set-space-permissions"].display_name == "Can set space permissions for Engineering"
    assert (
        ents["space:ENG:view"].description
        == "Has permission to view the Engineering space in Confluence Data Center"
    )
    assert [t.id for t in ents["space:ENG:edit-space"].grantable_to] == ["user", "group"]
    assert ents["space:ENG:view"].purpose == entitlement_pb2.Entitlement.PURPOSE_VALUE_PERMISSION


async def test_group_held_space_permissions_expand_through_membership() -> None:
    async with running("9.2") as (_, connector):
        synced = await sync_all(connector)
    grants = {g.id: g for g in synced.grants}
    to_group = grants[f"space:ENG:read-space:group:{ADMIN_GROUP}"]
    expandable = model.find_annotation(to_group.annotations, annotation_grant_pb2.GrantExpandable)
    assert expandable is not None
    assert list(expandable.entitlement_ids) == [f"group:{ADMIN_GROUP}:member"]
    to_user = next(
        g for g in synced.grants if g.id.startswith("space:") and g.principal.id.resource_type == "user"
    )
    assert model.find_annotation(to_user.annotations, annotation_grant_pb2.GrantExpandable) is None


@pytest.mark.parametrize("version", ["8.5", "9.2"])
async def test_odd_group_names_are_url_encoded(version: str) -> None:
    data = sandbox_data.small()
    async with running(version, data=data, config=SandboxConfig(version=version, caps=TINY_CAPS)) as (
        sandbox,
        connector,
    ):
        synced = await sync_all(connector)
        routes = sandbox.stats.by_route
    for name in ODD_GROUP_NAMES:
        expected = {f"group:{name}:member:user:{user_id(data, m)}" for m in data.groups[name].members}
        assert expected, name
        assert expected <= synced.grant_ids()
    # A raw slash would have hit an unknown route (404): none did.
    assert routes["GET /rest/api/group/*/member"] > 0


async def test_context_path_and_trailing_slash() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="8.5", context_path="/confluence", caps=TINY_CAPS)
    async with running("8.5", data=data, config=config) as (sandbox, connector):
        assert sandbox.base_url.endswith("/confluence")
        assert connector.settings.hostname == sandbox.base_url
        await connector.validate()
        synced = await sync_all(connector)
    assert synced.grant_ids() == expected_grant_ids(data)


async def test_remote_api_off_before_9_1_is_one_counter_not_a_crash() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="8.5", remote_api_enabled=False)
    async with running("8.5", data=data, config=config) as (_, connector):
        synced = await sync_all(connector)
    # Users and memberships still sync; space permission grants cannot be read.
    assert synced.ids("user") == user_ids(data)
    assert not [g for g in synced.grants if g.id.startswith("space:")]
    assert connector.sync_counters()["capability_missing.space_permissions"] == len(data.spaces)


async def test_targeted_get_of_each_resource_type() -> None:
    data = sandbox_data.small()
    async with running("9.2", data=data) as (_, connector):
        users, groups, spaces = connector.syncers()
        zoe = data.users["zoë.müller"].user_key
        user = await users.get(model.resource_id("user", zoe), None)  # type: ignore[attr-defined]
        group = await groups.get(model.resource_id("group", "qa/automation"), None)  # type: ignore[attr-defined]
        space = await spaces.get(model.resource_id("space", "ENG"), None)  # type: ignore[attr-defined]
    assert user.id.resource == zoe
    assert user.display_name == data.users["zoë.müller"].display_name
    assert group.id.resource == "qa/automation"
    assert space.id.resource == "ENG"
    assert space.display_name == "Engineering"


async def test_large_listing_uses_parallel_pages_without_skipping() -> None:
    data = sandbox_data.generate(users=900, groups=30, memberships=2500, spaces=40, seed=3)
    config = SandboxConfig(
        version="8.5", caps=TINY_CAPS.__class__(user_list=50, group_member=20, space=10), latency=0.002
    )
    async with running("8.5", data=data, config=config) as (sandbox, connector):
        synced = await sync_all(connector)
        peak = sandbox.stats.max_in_flight
    assert synced.ids("user") == user_ids(data)
    assert synced.grant_ids() == expected_grant_ids(data)
    assert peak > 1  # pages were fetched concurrently


async def test_remote_api_refusing_tokens_degrades_and_basic_auth_works() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="8.5", rpc_accepts_bearer=False)
    async with running("8.5", data=data, config=config) as (_, connector):
        synced = await sync_all(connector)
        counters = connector.sync_counters()
    assert not [g for g in synced.grants if g.id.startswith("space:")]
    assert counters["capability_missing.space_permissions"] == len(data.spaces)
    basic = ("--username", "admin", "--password", "admin")
    async with running("8.5", data=data, config=config, args=basic, token=None) as (_, connector):
        synced = await sync_all(connector)
    assert synced.grant_ids() == expected_grant_ids(data)


async def test_7_19_without_remote_api_lists_users_from_memberships_and_says_so() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="7.19", remote_api_enabled=False)
    async with running("7.19", data=data, config=config) as (_, connector):
        synced = await sync_all(connector)
        counters = connector.sync_counters()
    members = {user_id(data, m) for g in data.groups.values() for m in g.members}
    assert set(synced.ids("user")) == members  # users in no group cannot be seen without JSON-RPC
    assert members != set(user_ids(data))
    assert counters["capability_missing.user_listing"] == 1
    for res in synced.resources["user"]:
        trait = model.find_annotation(res.annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None and trait.status.status == Status.STATUS_UNSPECIFIED


@pytest.mark.parametrize("version", VERSIONS)
async def test_pages_cut_short_by_the_server_never_end_a_listing(version: str) -> None:
    # Every other page of every listing comes back one short of the server's own limit with more to
    # follow: a client that took a short page for the last one would lose users, groups, members, spaces.
    data = sandbox_data.generate(users=120, groups=14, memberships=400, spaces=18, seed=11)
    config = SandboxConfig(version=version, caps=TINY_CAPS, short_page_every=2)
    async with running(version, data=data, config=config) as (sandbox, connector):
        synced = await sync_all(connector)
        routes = dict(sandbox.stats.by_route)
    assert synced.ids("user") == user_ids(data)
    assert synced.ids("group") == list(data.groups)
    assert synced.ids("space") == list(data.spaces)
    assert synced.grant_ids() == expected_grant_ids(data)
    # Listings really were paged (and cut short) everywhere.
    assert routes["GET /rest/api/group/*/member"] > len(data.groups)
    assert routes["GET /rest/api/space"] > len(data.spaces) // TINY_CAPS.space


async def test_targeted_get_reports_the_real_status_before_8_4() -> None:
    data = sandbox_data.small()
    disabled = next(u for u in data.users.values() if not u.active)
    enabled = next(u for u in data.users.values() if u.active and u.username != "admin")
    async with running("7.19", data=data) as (sandbox, connector):
        users = connector.syncers()[0]
        got = {
            u.username: await users.get(model.resource_id("user", u.user_key), None)  # type: ignore[attr-defined]
            for u in (disabled, enabled)
        }
        rpc_calls = sandbox.stats.by_route["POST /rpc/json-rpc/confluenceservice-v2/*"]
    for user in (disabled, enabled):
        trait = model.find_annotation(got[user.username].annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None
        assert trait.status.status == (Status.STATUS_ENABLED if user.active else Status.STATUS_DISABLED)
        assert trait.profile.fields["user_key"].string_value == user.user_key
    assert rpc_calls >= 2  # 7.19 has no account state over REST: JSON-RPC isActiveUser


async def test_9x_without_the_active_users_listing_syncs_users_without_emails() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="9.2", without=frozenset({"GET /rest/api/admin/users/list/active"}))
    async with running("9.2", data=data, config=config) as (_, connector):
        missing: list[str] = []
        connector.on_capability_missing(missing.append)
        synced = await sync_all(connector)
        counters = connector.sync_counters()
    assert synced.ids("user") == user_ids(data)
    by_id = users_by_id(data)
    for res in synced.resources["user"]:
        trait = model.find_annotation(res.annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None and not trait.emails
        active = by_id[res.id.resource].active
        assert trait.status.status == (Status.STATUS_ENABLED if active else Status.STATUS_DISABLED)
    assert counters["capability_missing.user_emails"] >= 1
    assert "user_emails" in missing  # the metrics hook hears about it


async def test_capability_hook_and_counter_fire_for_each_unreadable_space() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="8.5", remote_api_enabled=False)
    async with running("8.5", data=data, config=config) as (_, connector):
        missing: list[str] = []
        connector.on_capability_missing(missing.append)
        with structlog.testing.capture_logs() as logs:
            await sync_all(connector)
    assert missing == ["space_permissions"] * len(data.spaces)
    warnings = [e for e in logs if e["event"] == "confluence_capability_missing"]
    assert len(warnings) == 1  # one clear log line, not one per space
    assert "Remote API" in warnings[0]["detail"]


async def test_requests_in_flight_never_exceed_the_configured_concurrency() -> None:
    data = sandbox_data.generate(users=600, groups=40, memberships=1500, spaces=30, seed=5)
    config = SandboxConfig(
        version="8.5", caps=TINY_CAPS.__class__(user_list=20, group_member=10), latency=0.002
    )
    async with running("8.5", data=data, config=config, args=("--request-concurrency", "3")) as (
        sandbox,
        connector,
    ):
        synced = await sync_all(connector)
        peak = sandbox.stats.max_in_flight
    assert synced.grant_ids() == expected_grant_ids(data)
    assert peak == 3  # used to the full, never beyond


async def test_status_values_the_connector_cannot_read_are_asked_of_json_rpc() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="8.5", user_status_values=("licensed", "locked"))
    async with running("8.5", data=data, config=config) as (sandbox, connector):
        synced = await sync_all(connector)
        counters = connector.sync_counters()
        rpc_calls = sandbox.stats.by_route["POST /rpc/json-rpc/confluenceservice-v2/*"]
    assert any(not u.active for u in data.users.values())
    for res in synced.resources["user"]:
        trait = model.find_annotation(res.annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None
        active = users_by_id(data)[res.id.resource].active
        assert trait.status.status == (Status.STATUS_ENABLED if active else Status.STATUS_DISABLED)
        assert res.status.details == ("active" if active else "inactive")  # what JSON-RPC said
    assert counters["user_status_from_json_rpc"] == 1  # one call for every user, not one per user
    assert rpc_calls <= 2 + len(data.spaces)  # version probe + getActiveUsers + permission sets
