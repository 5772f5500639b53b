"""What the Atlassian connector syncs, checked against the sandbox organization it reads (in process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from connector.apps.atlassian.client import R_API_TOKENS, R_DIRECTORIES, R_ORGS, R_USER_ROLES, R_WORKSPACES
from connector.apps.atlassian.resources import FIXED_ROLES
from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import (
    annotation_entitlement_pb2,
    annotation_grant_pb2,
    annotation_resource_tree_pb2,
    annotation_trait_pb2,
    connector_pb2,
    entitlement_pb2,
    resource_pb2,
)
from connector.sandbox.atlassian.data import OrgSpec, Workspace
from connector.sdk import model
from connector.sync.engine import SyncOptions, run_sync
from tests.test_atlassian_support import (
    SMALL,
    Env,
    atlassian_env,
    entitlements_of,
    grants_of,
    list_all,
)

ROLE_ASSIGNMENTS = (
    "GET /admin/v2/orgs/{org_id}/directories/{directory_id}/users/{account_id}/role-assignments"
)
GROUP_ROLE_ASSIGNMENTS = (
    "GET /admin/v2/orgs/{org_id}/directories/{directory_id}/groups/{group_id}/role-assignments"
)
Status = annotation_trait_pb2.UserTrait.Status
Purpose = entitlement_pb2.Entitlement.PurposeValue
ResourceStatus = resource_pb2.Status.ResourceStatus
AccountType = annotation_trait_pb2.UserTrait.AccountType


def trait(res: Any, kind: type[Any]) -> Any:
    found = model.find_annotation(res.annotations, kind)
    assert found is not None
    return found


async def test_users_carry_id_status_type_mfa_email_and_last_active() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        users = await list_all(env.runtime, "user")
        assert sorted(u.id.resource for u in users) == sorted(st.users)
        expected_status = {
            "active": Status.STATUS_ENABLED,
            "suspended": Status.STATUS_DISABLED,
            "deactivated": Status.STATUS_DISABLED,
            # Restorable for 14 days: disabled, not deleted (as the Go connector says).
            "for_deletion": Status.STATUS_DISABLED,
            "not_invited": Status.STATUS_DISABLED,
        }
        resource_status = {
            "active": ResourceStatus.RESOURCE_STATUS_ENABLED,
            "suspended": ResourceStatus.RESOURCE_STATUS_DISABLED,
            "deactivated": ResourceStatus.RESOURCE_STATUS_DISABLED,
            "for_deletion": ResourceStatus.RESOURCE_STATUS_DISABLED,
            "not_invited": ResourceStatus.RESOURCE_STATUS_DISABLED,
        }
        checked: set[str] = set()
        for res in users:
            src = st.users[res.id.resource]
            t = trait(res, annotation_trait_pb2.UserTrait)
            profile = json_format.MessageToDict(t.profile)
            assert profile["status"] == src.status
            assert t.status.status == expected_status[src.status]
            assert t.status.details == src.status
            # The same on the resource itself (Resource.status, field 11), where the Go SDK puts it.
            assert res.status.status == resource_status[src.status]
            assert res.status.details == src.status
            assert profile["username"] == profile["name"] == src.name
            checked.add(src.status)
            if src.account_type == "app":
                assert t.account_type == AccountType.ACCOUNT_TYPE_SERVICE
                assert not t.emails
                checked.add("app")
            else:
                assert t.account_type == AccountType.ACCOUNT_TYPE_HUMAN
            if src.email:
                assert [e.address for e in t.emails] == [src.email]
                assert t.login == src.email
            assert t.mfa_status.mfa_enabled == src.mfa_enabled
            assert res.display_name == src.name
            access = st.user_assignment_methods(src.account_id)
            seen = [src.last_active[w] for w in access if w in src.last_active]
            if seen:
                want = max(seen)
                got = t.last_login.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S")
                assert want.startswith(got)
                checked.add("last_active")
            else:
                assert not t.HasField("last_login")
            if src.platform_roles:
                assert profile["platform_roles"] == ",".join(src.platform_roles)
        assert checked >= {
            "active",
            "suspended",
            "deactivated",
            "for_deletion",
            "not_invited",
            "app",
            "last_active",
        }


@pytest.mark.parametrize("honour_sort", [True, False])
async def test_user_walk_from_both_ends_reads_everyone_once(honour_sort: bool) -> None:
    spec = OrgSpec(seed=3, accounts=650, groups=12, memberships=1500, workspaces=3)
    async with atlassian_env(spec=spec, honour_user_sort=honour_sort) as env:
        st = env.sandbox.state
        users = await list_all(env.runtime, "user")
        ids = [u.id.resource for u in users]
        assert len(ids) == len(set(ids)) and set(ids) == set(st.users)
        for g in await list_all(env.runtime, "group"):
            members = {x.principal.id.resource for x in await grants_of(env.runtime, g)}
            assert members == st.members(g.id.resource)
        stats = env.sandbox.stats.by_route
        searches = stats["POST /admin/v2/orgs/{org_id}/directories/{directory_id}/users/search"]
        assert stats["GET /admin/v2/orgs/{org_id}/directories/{directory_id}/users/count"] == 1
        # Nothing per group: memberships come from the same walk. Sorted, two walks of ~3.5 pages meet
        # in the middle; a server ignoring the sort makes both walks read everything (7 pages each).
        if honour_sort:
            assert searches <= 8
        else:
            assert 7 <= searches <= 14


async def test_small_directories_are_walked_once() -> None:
    spec = OrgSpec(seed=3, accounts=150, groups=5, memberships=300, workspaces=2)
    async with atlassian_env(spec=spec) as env:
        assert len(await list_all(env.runtime, "user")) == 150
        route = "POST /admin/v2/orgs/{org_id}/directories/{directory_id}/users/search"
        assert env.sandbox.stats.by_route[route] == 2


async def test_groups_members_and_read_only_idp_groups() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        groups = await list_all(env.runtime, "group")
        assert sorted(g.id.resource for g in groups) == sorted(st.groups)
        synced_seen = False
        for res in groups:
            src = st.groups[res.id.resource]
            ents = await entitlements_of(env.runtime, res)
            assert [e.slug for e in ents] == ["member"]
            ent = ents[0]
            assert ent.id == f"group:{src.id}:member"
            assert [t.id for t in ent.grantable_to] == ["user"]
            profile = json_format.MessageToDict(trait(res, annotation_trait_pb2.GroupTrait).profile)
            immutable = model.find_annotation(
                ent.annotations, annotation_entitlement_pb2.EntitlementImmutable
            )
            if src.external_synced:
                synced_seen = True
                assert profile["read_only"] is True
                assert "identity provider" in ent.description and "read-only" in ent.description
                assert immutable is not None
            else:
                assert profile["read_only"] is False and immutable is None
            grants = await grants_of(env.runtime, res)
            assert sorted(g.principal.id.resource for g in grants) == sorted(st.members(src.id))
            assert all(g.principal.id.resource_type == "user" for g in grants)
            assert all(g.entitlement.id == ent.id for g in grants)
        assert synced_seen


@pytest.mark.parametrize("role_filter", ["effective", "direct"])
async def test_workspaces_roles_and_grants_to_users_and_groups(role_filter: str) -> None:
    # Whether Atlassian's role filter on user searches includes holders through groups is undocumented:
    # the grants must be the same either way.
    async with atlassian_env(role_filter=role_filter) as env:
        st = env.sandbox.state
        # Someone who holds a role both directly and through a group (real organizations have many).
        (ws_id, role), gids = next((k, v) for k, v in sorted(st.roles.groups_by_role.items()) if v)
        gid = sorted(gids)[0]
        both = sorted(st.members(gid) - st.direct_users(ws_id, role))[0]
        st.roles.seed("user", both, ws_id, role)
        workspaces = await list_all(env.runtime, "workspace")
        assert sorted(w.id.resource for w in workspaces) == sorted(st.workspaces)
        group_grants = direct_and_group = 0
        for res in workspaces:
            ws = st.workspaces[res.id.resource]
            ents = await entitlements_of(env.runtime, res)
            # The ten roles of the Go connector on every workspace, whatever the product offers.
            assert [e.slug for e in ents] == [f"role:{r}" for r in FIXED_ROLES]
            assert set(ws.roles) <= set(FIXED_ROLES)
            assert all(e.id == f"workspace:{ws.id}:{e.slug}" for e in ents)
            assert all(e.purpose == Purpose.PURPOSE_VALUE_PERMISSION for e in ents)
            assert all(sorted(t.id for t in e.grantable_to) == ["group", "user"] for e in ents)
            grants = await grants_of(env.runtime, res)
            for role_id in ws.roles:
                of_role = [g for g in grants if g.entitlement.id == f"workspace:{ws.id}:role:{role_id}"]
                groups = {g.principal.id.resource for g in of_role if g.principal.id.resource_type == "group"}
                users = {g.principal.id.resource for g in of_role if g.principal.id.resource_type == "user"}
                assert groups == st.roles.groups_by_role.get((ws.id, role_id), set())
                # A user grant for exactly the direct assignments, group-covered or not.
                assert users == st.direct_users(ws.id, role_id)
                via_groups = set().union(*(st.members(g) for g in groups)) if groups else set()
                # Direct grants plus what the group grants expand to is exactly who holds the role.
                assert users | via_groups == st.effective_users(ws.id, role_id)
                direct_and_group += len(users & via_groups)
                for g in of_role:
                    exp = model.find_annotation(g.annotations, annotation_grant_pb2.GrantExpandable)
                    if g.principal.id.resource_type == "group":
                        group_grants += 1
                        assert exp is not None
                        assert list(exp.entitlement_ids) == [f"group:{g.principal.id.resource}:member"]
                    else:
                        assert exp is None
            if ws.id == ws_id:
                assert f"workspace:{ws_id}:role:{role}:user:{both}" in {g.id for g in grants}
        assert group_grants > 0 and direct_and_group >= 1
        counters = env.connector.sync_counters()
        assert counters["direct_checks"] > 0
        # Only role-holding groups are asked for their roles.
        assert counters["role_groups_read"] == len({g for gs in st.roles.groups_by_role.values() for g in gs})


async def test_direct_role_check_can_be_turned_off() -> None:
    async with atlassian_env(flags=("--verify-direct-roles=false",)) as env:
        st = env.sandbox.state
        (ws_id, role), gids = next((k, v) for k, v in sorted(st.roles.groups_by_role.items()) if v)
        both = sorted(st.members(sorted(gids)[0]) - st.direct_users(ws_id, role))[0]
        st.roles.seed("user", both, ws_id, role)
        res = next(w for w in await list_all(env.runtime, "workspace") if w.id.resource == ws_id)
        users = {
            g.principal.id.resource
            for g in await grants_of(env.runtime, res)
            if g.principal.id.resource_type == "user"
            and g.entitlement.slug in ("", role)
            and g.entitlement.id.endswith(f":{role}")
        }
        # Without the check, a group member's own assignment hides behind the group's derived grant.
        assert both not in users
        assert env.sandbox.stats.by_route[ROLE_ASSIGNMENTS] == 0
        assert env.connector.sync_counters()["direct_checks_skipped"] > 0


async def test_roles_outside_the_product_table_are_found_in_the_data() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        conf = next(w for w in st.workspaces.values() if w.type_key == "confluence")
        # Atlassian adds roles per product and plan; the connector's table does not know these.
        conf.roles = (*conf.roles, "atlassian/viewer", "atlassian/made-up-2027")
        viewers = next(g for g in st.groups if not st.roles.group_roles(g) and st.members(g))
        st.roles.seed("group", viewers, conf.id, "atlassian/viewer")
        holders = {u for r in conf.roles for u in st.effective_users(conf.id, r)}
        loner = next(
            u.account_id
            for u in st.users.values()
            if u.status == "active" and u.account_id not in holders and u.account_type == "atlassian"
        )
        st.roles.seed("user", loner, conf.id, "atlassian/made-up-2027")
        # A product the connector has never heard of.
        compass_id = "ari:cloud:compass::site/0a0b0c0d-1111-4222-8333-444455556666"
        st.workspaces[compass_id] = Workspace(
            id=compass_id,
            name="acme Compass",
            type_key="compass",
            cloud_id="0a0b0c0d-1111-4222-8333-444455556666",
            host_url="https://acme.atlassian.net",
            status="online",
            sandbox=False,
            capacity=1000,
            created_at="2025-01-01T00:00:00.000Z",
            roles=("atlassian/user", "atlassian/admin", "atlassian/contributor"),
        )
        st.roles.seed("user", loner, compass_id, "atlassian/contributor")
        await list_all(env.runtime, "group")
        by_id = {w.id.resource: w for w in await list_all(env.runtime, "workspace")}

        ents = await entitlements_of(env.runtime, by_id[conf.id])
        assert [e.slug for e in ents] == [
            *(f"role:{r}" for r in FIXED_ROLES),
            "role:atlassian/made-up-2027",
            "role:atlassian/viewer",
        ]
        assert f"workspace:{conf.id}:role:atlassian/made-up-2027" in {e.id for e in ents}
        grants = {g.id: g for g in await grants_of(env.runtime, by_id[conf.id])}
        viewer_grant = grants[f"workspace:{conf.id}:role:atlassian/viewer:group:{viewers}"]
        exp = model.find_annotation(viewer_grant.annotations, annotation_grant_pb2.GrantExpandable)
        assert exp is not None and list(exp.entitlement_ids) == [f"group:{viewers}:member"]
        assert f"workspace:{conf.id}:role:atlassian/made-up-2027:user:{loner}" in grants

        compass = await entitlements_of(env.runtime, by_id[compass_id])
        assert [e.slug for e in compass] == [f"role:{r}" for r in FIXED_ROLES]
        compass_grants = {g.id for g in await grants_of(env.runtime, by_id[compass_id])}
        assert compass_grants == {f"workspace:{compass_id}:role:atlassian/contributor:user:{loner}"}
        counters = env.connector.sync_counters()
        # Only the two workspaces whose counts did not add up were walked.
        assert counters["role_discovery_walks"] == 2
        assert counters["roles_discovered"] == 2


def role_searches(env: Env) -> int:
    by_filter = env.sandbox.stats.by_filter
    return sum(n for k, n in by_filter.items() if k.startswith("users/search") and "roleIds" in k)


async def test_a_sync_that_skips_grants_asks_nothing_about_role_holders(tmp_path: Path) -> None:
    async with atlassian_env(flags=("--skip-grants",)) as env:
        st = env.sandbox.state
        report = await run_sync(env.runtime, tmp_path / "no-grants.c1z", SyncOptions(skip_grants=True))
        assert report.grants_direct == 0
        with C1zReader(tmp_path / "no-grants.c1z") as reader:
            ws_ents = list(reader.entitlements(resource_type="workspace"))
        assert len(ws_ents) == len(FIXED_ROLES) * len(st.workspaces)
        stats = env.sandbox.stats
        assert role_searches(env) == 0 and stats.by_route[ROLE_ASSIGNMENTS] == 0
        # What entitlements need: one count pair per workspace, the roles of role-holding groups.
        assert stats.by_filter["users/count resourceIds"] == len(st.workspaces)
        assert stats.by_filter["users/count resourceIds,roleIds"] == len(st.workspaces)
        assert stats.by_route[GROUP_ROLE_ASSIGNMENTS] == len(
            {g for gs in st.roles.groups_by_role.values() for g in gs}
        )


async def test_a_resources_only_sync_asks_nothing_about_roles(tmp_path: Path) -> None:
    async with atlassian_env(flags=("--skip-entitlements-and-grants",)) as env:
        options = SyncOptions(skip_entitlements_and_grants=True)
        report = await run_sync(env.runtime, tmp_path / "resources.c1z", options)
        assert report.resources["workspace"] == len(env.sandbox.state.workspaces)
        stats = env.sandbox.stats
        assert not [k for k in stats.by_filter if "resourceIds" in k]
        assert stats.by_route[GROUP_ROLE_ASSIGNMENTS] == 0 and stats.by_route[ROLE_ASSIGNMENTS] == 0


async def test_a_daemon_reads_role_holders_early_only_while_its_syncs_list_grants(tmp_path: Path) -> None:
    # A daemon learns whether grants are wanted per task, which the connector does not see: it goes by
    # the previous sync. A sync listing grants gets the same grants whether or not holders were prefetched.
    async with atlassian_env() as env:
        searched: list[int] = []
        listed: dict[int, list[str]] = {}
        for n, options in enumerate(
            [SyncOptions(skip_grants=True), SyncOptions(skip_grants=True), SyncOptions(), SyncOptions()]
        ):
            before = role_searches(env)
            report = await run_sync(env.runtime, tmp_path / f"{n}.c1z", options)
            searched.append(role_searches(env) - before)
            if not options.skip_grants:
                assert report.grants_direct > 0
                with C1zReader(tmp_path / f"{n}.c1z") as reader:
                    listed[n] = sorted(g.id for g in reader.grants(resource_type="workspace"))
        roles = sum(len(w.roles) for w in env.sandbox.state.workspaces.values())
        # 1st: grants expected (the default), some searches wasted; 2nd: learned, none; 3rd: on demand;
        # 4th: early again.
        assert searched[0] > 0 and searched[1] == 0 and searched[2] >= roles and searched[3] >= roles
        assert listed[2] == listed[3] and listed[2]


async def test_api_tokens_are_secrets_owned_by_their_user() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        tokens = await list_all(env.runtime, "api_token")
        assert len(tokens) == len(st.tokens) > 100  # more than one full-URL page
        by_id = {t.id: t for t in st.tokens}
        for res in tokens:
            src = by_id[res.id.resource]
            t = trait(res, annotation_trait_pb2.SecretTrait)
            assert t.identity_id.resource_type == "user"
            assert t.identity_id.resource == src.account_id
            assert t.expires_at.ToDatetime().year >= 2024
        types = await env.runtime.list_resource_types(
            resource_pb2.ResourceTypesServiceListResourceTypesRequest()
        )
        token_type = next(rt for rt in types.list if rt.id == "api_token")
        assert model.has_annotation(
            token_type.annotations, annotation_resource_tree_pb2.SkipEntitlementsAndGrants
        )
        assert env.sandbox.stats.by_route["GET /admin/api-access/v1/orgs/{org_id}/api-tokens"] >= 2


async def test_api_tokens_unavailable_is_an_empty_listing() -> None:
    async with atlassian_env(api_tokens_enabled=False) as env:
        assert await list_all(env.runtime, "api_token") == []
        assert env.connector.sync_counters()["api_tokens_unavailable"] == 1


async def test_client_follows_each_pagination_scheme() -> None:
    async with atlassian_env() as env:
        client = env.connector.client
        pp = {"org": client.org_id}
        # Full-URL next links (v1 collections): the cursor is lifted out and sent to our own base URL.
        tokens = await client.get_all(R_API_TOKENS, pp, {"limit": 7}, "tokens")
        assert len(tokens) == len(env.sandbox.state.tokens)
        assert len({t["id"] for t in tokens}) == len(tokens)
        assert len(await client.get_all(R_ORGS, {}, None, "orgs")) == 1
        # Opaque cursors in the query (v2 GET).
        st = env.sandbox.state
        account = max(st.users, key=lambda a: len(st.user_assignment_methods(a)))
        items = await client.get_all(
            R_USER_ROLES, {**pp, "directory": "-", "account": account}, {"limit": 1}, "roles"
        )
        assert {i["resourceId"] for i in items} == set(st.user_assignment_methods(account))
        assert [d["directoryId"] for d in await client.get_all(R_DIRECTORIES, pp, {"limit": 1}, "dirs")] == [
            st.directory_id
        ]
        # Cursors in POST bodies, sent alone.
        ws = await client.post_all(R_WORKSPACES, pp, {"limit": 2}, "workspaces")
        assert sorted(w["id"] for w in ws) == sorted(st.workspaces)
        users = await client.search_users({"limit": 7, "status": ["suspended"]})
        assert sorted(u["accountId"] for u in users) == sorted(
            u.account_id for u in st.users.values() if u.status == "suspended"
        )


async def test_targeted_get_of_users_and_groups() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        uid = next(iter(st.users))
        got = await env.runtime.get_resource(
            resource_pb2.ResourceGetterServiceGetResourceRequest(
                resource_id=resource_pb2.ResourceId(resource_type="user", resource=uid)
            )
        )
        assert got.resource.id.resource == uid and got.resource.display_name == st.users[uid].name
        gid = next(iter(st.groups))
        got = await env.runtime.get_resource(
            resource_pb2.ResourceGetterServiceGetResourceRequest(
                resource_id=resource_pb2.ResourceId(resource_type="group", resource=gid)
            )
        )
        assert got.resource.display_name == st.groups[gid].name


async def test_a_restarted_user_walk_hands_its_waiters_to_the_new_one() -> None:
    async with atlassian_env(latency=0.02) as env:
        st = env.sandbox.state
        group = next(g for g in await list_all(env.runtime, "group") if st.members(g.id.resource))

        def users_page(token: str) -> resource_pb2.ResourcesServiceListResourcesRequest:
            return resource_pb2.ResourcesServiceListResourcesRequest(
                resource_type_id="user", page_token=token
            )

        first = await env.runtime.list_resources(users_page(""))
        # Group grants wait for the memberships of the walk in progress...
        waiting = asyncio.create_task(grants_of(env.runtime, group))
        await env.runtime.list_resources(users_page(first.next_page_token))
        # ...when the engine starts the user listing over: the walk is replaced by a new one.
        again = await env.runtime.list_resources(users_page(""))
        assert [u.id.resource for u in again.list] == [u.id.resource for u in first.list]
        grants = await asyncio.wait_for(waiting, 5)
        assert {g.principal.id.resource for g in grants} == st.members(group.id.resource)
        assert env.connector.sync_counters()["user_passes"] == 2


async def test_cleanup_forgets_the_sync_so_the_next_one_sees_changes() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        groups = await list_all(env.runtime, "group")
        await list_all(env.runtime, "user")
        target = next(g for g in groups if st.members(g.id.resource))
        before = {g.principal.id.resource for g in await grants_of(env.runtime, target)}
        removed = sorted(before)[0]
        st.remove_member(target.id.resource, removed)
        await env.runtime.cleanup(connector_pb2.ConnectorServiceCleanupRequest())
        after = {g.principal.id.resource for g in await grants_of(env.runtime, target)}
        assert after == before - {removed}
        assert env.connector.sync_counters()["user_passes"] == 1


assert SMALL.accounts > 200  # the user walk spans several pages in these tests
