"""The fake Atlassian admin API is as strict and awkward as the real one (spec C.1), over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from connector.sandbox.atlassian.data import OrgSpec, generate
from connector.sandbox.atlassian.server import AtlassianSandbox, start_atlassian_sandbox
from tests.test_atlassian_support import SMALL


@pytest.fixture
async def sandbox() -> AsyncIterator[AtlassianSandbox]:
    sb = await start_atlassian_sandbox(spec=SMALL)
    yield sb
    await sb.stop()


def http(sb: AtlassianSandbox, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key or sb.api_key}"}
    return httpx.AsyncClient(base_url=sb.base_url, headers=headers)


def users_search(sb: AtlassianSandbox) -> str:
    return f"/admin/v2/orgs/{sb.org_id}/directories/-/users/search"


def error_of(resp: httpx.Response) -> dict[str, str]:
    body = resp.json()
    assert set(body) == {"errors"}
    err = body["errors"][0]
    assert err["status"] == str(resp.status_code)  # a string, as upstream
    return {str(k): str(v) for k, v in err.items()}


async def test_generation_is_deterministic_per_seed() -> None:
    a, b = generate(SMALL), generate(SMALL)
    assert list(a.users) == list(b.users)
    assert list(a.groups) == list(b.groups)
    assert {g: sorted(m) for g, m in a.group_members.items()} == {
        g: sorted(m) for g, m in b.group_members.items()
    }
    other = generate(OrgSpec(seed=SMALL.seed + 1, accounts=SMALL.accounts))
    assert list(other.users) != list(a.users)
    statuses = {u.status for u in a.users.values()}
    assert {"active", "suspended", "deactivated", "for_deletion", "not_invited"} <= statuses
    assert any(u.account_type == "app" for u in a.users.values())
    assert any(g.external_synced for g in a.groups.values())


async def test_post_search_cursor_walks_everything_once_with_limit_clamped(sandbox: AtlassianSandbox) -> None:
    async with http(sandbox) as c:
        first = await c.post(users_search(sandbox), json={"limit": 500})
        assert first.status_code == 200
        assert len(first.json()["data"]) == 100  # clamped to the maximum
        seen = [u["accountId"] for u in first.json()["data"]]
        cursor = first.json()["links"]["next"]
        while cursor:
            page = await c.post(users_search(sandbox), json={"cursor": cursor})
            assert page.status_code == 200
            seen += [u["accountId"] for u in page.json()["data"]]
            links = page.json()["links"]
            cursor = links.get("next")
        assert "next" not in links  # users: the last page has no next at all
        assert sorted(seen) == sorted(sandbox.state.users)
        assert len(seen) == len(set(seen))


async def test_cursor_with_other_properties_is_rejected_with_the_envelope(sandbox: AtlassianSandbox) -> None:
    async with http(sandbox) as c:
        cursor = (await c.post(users_search(sandbox), json={"limit": 10})).json()["links"]["next"]
        resp = await c.post(users_search(sandbox), json={"cursor": cursor, "limit": 10})
        assert resp.status_code == 400
        err = error_of(resp)
        assert err["code"] == "ADMIN-400-24"
        assert "no other properties" in err["detail"]
        ws = await c.post(f"/admin/v2/orgs/{sandbox.org_id}/workspaces", json={"limit": 2})
        resp = await c.post(
            f"/admin/v2/orgs/{sandbox.org_id}/workspaces",
            json={"cursor": ws.json()["links"]["next"], "limit": 2},
        )
        assert resp.status_code == 400 and error_of(resp)["code"] == "ADMIN-400-24"


async def test_cursors_cannot_be_forged_or_reused_elsewhere(sandbox: AtlassianSandbox) -> None:
    async with http(sandbox) as c:
        cursor = (await c.post(users_search(sandbox), json={"limit": 10})).json()["links"]["next"]
        raw, _, sig = cursor.partition(".")
        forged = raw[:-2] + ("AA" if raw[-2:] != "AA" else "BB") + "." + sig
        resp = await c.post(users_search(sandbox), json={"cursor": forged})
        assert resp.status_code == 400 and error_of(resp)["code"] == "ADMIN-400-1"
        groups = f"/admin/v2/orgs/{sandbox.org_id}/directories/-/groups/search"
        resp = await c.post(groups, json={"cursor": cursor})  # a users cursor on the groups search
        assert resp.status_code == 400 and error_of(resp)["code"] == "ADMIN-400-1"


async def test_request_validation(sandbox: AtlassianSandbox) -> None:
    async with http(sandbox) as c:
        both = await c.post(users_search(sandbox), json={"searchTerm": "a", "emails": ["a@b.example"]})
        assert both.status_code == 400 and error_of(both)["code"] == "ADMIN-400-24"
        unknown = await c.post(users_search(sandbox), json={"limt": 5})
        assert unknown.status_code == 400 and "limt" in error_of(unknown)["detail"]
        expand = await c.post(users_search(sandbox), json={"expand": ["everything"]})
        assert expand.status_code == 400
        many = await c.post(users_search(sandbox), json={"accountIds": [str(i) for i in range(11)]})
        assert many.status_code == 400
        text = await c.post(users_search(sandbox), content=b"{}", headers={"Content-Type": "text/plain"})
        assert text.status_code == 415


async def test_v2_get_lists_use_opaque_cursors_that_override_other_params(sandbox: AtlassianSandbox) -> None:
    st = sandbox.state
    account = max(st.users, key=lambda a: len(st.user_assignment_methods(a)))
    assert len(st.user_assignment_methods(account)) >= 2
    path = f"/admin/v2/orgs/{sandbox.org_id}/directories/-/users/{account}/role-assignments"
    async with http(sandbox) as c:
        first = await c.get(path, params={"limit": 1})
        nxt = first.json()["links"]["next"]
        assert not nxt.startswith("http")
        # "If present, all other parameters are discarded": limit=50 next to the cursor changes nothing.
        second = await c.get(path, params=[("cursor", nxt), ("limit", "50")])
        assert second.status_code == 200 and len(second.json()["data"]) == 1
        assert second.json()["data"][0]["resourceId"] != first.json()["data"][0]["resourceId"]


async def test_v1_collections_use_full_url_next_links_and_fixed_pages(sandbox: AtlassianSandbox) -> None:
    managed = [u for u in sandbox.state.users.values() if u.claim_status == "managed"]
    async with http(sandbox) as c:
        resp = await c.get(f"/admin/v1/orgs/{sandbox.org_id}/users", params={"limit": 5})
        body = resp.json()
        assert len(body["data"]) == 50  # fixed page size; limit is not a thing here
        assert body["meta"]["total"] == len(managed)
        assert "account_id" in body["data"][0]  # snake_case on v1
        nxt = body["links"]["next"]
        assert nxt.startswith(sandbox.base_url + "/admin/v1/orgs/")
        again = await c.get(nxt)
        assert (
            again.status_code == 200
            and again.json()["data"][0]["account_id"] != body["data"][0]["account_id"]
        )


async def test_groups_last_page_says_next_null(sandbox: AtlassianSandbox) -> None:
    async with http(sandbox) as c:
        resp = await c.post(
            f"/admin/v2/orgs/{sandbox.org_id}/directories/-/groups/search", json={"limit": 100}
        )
        assert resp.json()["links"]["next"] is None


async def test_auth_failures(sandbox: AtlassianSandbox) -> None:
    org = f"/admin/v1/orgs/{sandbox.org_id}"
    async with httpx.AsyncClient(base_url=sandbox.base_url) as anon:
        assert (await anon.get(org)).status_code == 401
    async with http(sandbox, key="not-the-key") as c:
        assert (await c.get(org)).status_code == 401
    async with http(sandbox, key=sandbox.options.other_org_key) as c:
        resp = await c.get(org)
        assert resp.status_code == 404 and error_of(resp)["code"] == "ADMIN-404-2"
    async with http(sandbox) as c:
        resp = await c.get("/admin/v1/orgs/some-other-org")
        assert resp.status_code == 404 and error_of(resp)["code"] == "ADMIN-404-2"
        scim = await c.get(f"{sandbox.scim_base_url}/Users")
        assert scim.status_code == 401  # the org key does not open the SCIM mount


async def test_rate_limit_headers_and_429() -> None:
    sb = await start_atlassian_sandbox(spec=SMALL, rate_limit=5, burst=2)
    try:
        async with http(sb) as c:
            path = f"/admin/v1/orgs/{sb.org_id}"
            ok = await c.get(path)
            assert ok.status_code == 200
            assert ok.headers["X-RateLimit-Limit"] == "2"
            reset = dt.datetime.fromisoformat(ok.headers["X-RateLimit-Reset"].replace("Z", "+00:00"))
            assert reset.tzinfo is not None and reset > dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            await c.get(path)
            limited = await c.get(path)
            assert limited.status_code == 429
            assert error_of(limited)["code"] == "ADMIN-429-1"
            assert limited.headers["X-RateLimit-Remaining"] == "0"
            assert int(limited.headers["Retry-After"]) >= 1
        assert sb.stats.rate_limited == 1
    finally:
        await sb.stop()
    quiet = await start_atlassian_sandbox(spec=SMALL, rate_limit=5, burst=1, retry_after=False)
    try:
        async with http(quiet) as c:
            await c.get(f"/admin/v1/orgs/{quiet.org_id}")
            limited = await c.get(f"/admin/v1/orgs/{quiet.org_id}")
            assert limited.status_code == 429 and "Retry-After" not in limited.headers
    finally:
        await quiet.stop()


async def test_role_changes_are_eventually_consistent() -> None:
    sb = await start_atlassian_sandbox(spec=SMALL, role_delay=0.4)
    try:
        st = sb.state
        gid = next(g for g in st.groups if not st.roles.group_roles(g))
        ws = next(w for w in st.workspaces.values() if w.type_key == "confluence")
        base = f"/admin/v2/orgs/{sb.org_id}/directories/{sb.directory_id}/groups/{gid}/role-assignments"
        async with http(sb) as c:
            resp = await c.post(base + "/assign", json={"resourceId": ws.id, "roleId": "atlassian/guest"})
            assert resp.status_code == 204
            assert (await c.get(base)).json()["data"] == []
            await asyncio.sleep(0.5)
            data = (await c.get(base)).json()["data"]
            assert [d["resourceId"] for d in data] == [ws.id]
    finally:
        await sb.stop()


async def test_injected_latency_and_failures() -> None:
    sb = await start_atlassian_sandbox(spec=SMALL, latency=0.05, fail_requests=frozenset({2}))
    try:
        async with http(sb) as c:
            started = time.monotonic()
            assert (await c.get(f"/admin/v1/orgs/{sb.org_id}")).status_code == 200
            assert time.monotonic() - started >= 0.05
            failed = await c.get(f"/admin/v1/orgs/{sb.org_id}")
            assert failed.status_code == 500 and error_of(failed)["code"] == "ADMIN-500-1"
    finally:
        await sb.stop()


async def test_removed_v1_apis_answer_not_found(sandbox: AtlassianSandbox) -> None:
    async with http(sandbox) as c:
        resp = await c.post(f"/admin/v1/orgs/{sandbox.org_id}/groups/search", json={})
        assert resp.status_code == 404 and "2026-06-30" in error_of(resp)["detail"]


def test_runs_as_a_command_and_prints_its_address() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sandbox", "atlassian", "--accounts", "20", "--groups", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["accounts"] == 20
        resp = httpx.get(
            f"{info['base_url']}/admin/v1/orgs/{info['org_id']}",
            headers={"Authorization": f"Bearer {info['api_key']}"},
        )
        assert resp.status_code == 200 and resp.json()["data"]["id"] == info["org_id"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("role_filter", ["effective", "direct"])
async def test_role_filter_semantics_and_group_role_shape(role_filter: str) -> None:
    sb = await start_atlassian_sandbox(spec=SMALL, role_filter=role_filter)
    try:
        st = sb.state
        (ws, role), gids = next((k, v) for k, v in sorted(st.roles.groups_by_role.items()) if v)
        async with http(sb) as c:
            found = await c.post(
                users_search(sb), json={"resourceIds": [ws], "roleIds": [role], "limit": 100}
            )
            ids = {u["accountId"] for u in found.json()["data"]}
            want = st.effective_users(ws, role) if role_filter == "effective" else st.direct_users(ws, role)
            assert ids == want and st.effective_users(ws, role) != st.direct_users(ws, role)
            gid = sorted(gids)[0]
            path = f"/admin/v2/orgs/{sb.org_id}/directories/-/groups/{gid}/role-assignments"
            items = (await c.get(path, params={"resourceIds": ws})).json()["data"]
            # Groups report plain role ids (no assignment methods), as jira.js types them.
            assert [(i["resourceId"], role in i["roles"], "roleAssignments" in i) for i in items] == [
                (ws, True, False)
            ]
    finally:
        await sb.stop()


async def test_role_assignments_carry_platform_project_and_goal_owners(sandbox: AtlassianSandbox) -> None:
    st = sandbox.state
    admin = next(u for u in st.users.values() if u.platform_roles)
    admin.other_roles.append(("goal", "ari:cloud:townsquare::goal/0a1b", "atlassian/contributor"))
    async with http(sandbox) as client:
        resp = await client.get(
            f"/admin/v2/orgs/{sandbox.org_id}/directories/-/users/{admin.account_id}/role-assignments",
            params={"limit": 100},
        )
        assert resp.status_code == 200
        items = resp.json()["data"]
        platform = [i for i in items if i["resourceOwner"] == "platform"]
        assert sorted(r for i in platform for r in i["roles"]) == sorted(admin.platform_roles)
        assert all(i["directoryId"] is None and i["userDirectoryStatus"] is None for i in platform)
        assert {i["resourceId"] for i in platform} == {f"ari:cloud:platform::org/{sandbox.org_id}"}
        assert {i["resourceOwner"] for i in items if i["resourceId"] not in st.workspaces} <= {
            "platform",
            "project",
            "goal",
        }
        assert len([i for i in items if i["resourceOwner"] in ("project", "goal")]) == len(admin.other_roles)
        # The same platform roles come with a user search that expands them.
        found = await client.post(
            users_search(sandbox),
            json={"accountIds": [admin.account_id], "expand": ["platformRoles"], "limit": 1},
        )
        assert found.json()["data"][0]["platformRoles"] == admin.platform_roles
        org = await client.get(f"/admin/v1/orgs/{sandbox.org_id}")
        assert org.json()["data"]["attributes"]["name"] == st.org_name


async def test_scim_create_answers_with_the_atlassian_extension(sandbox: AtlassianSandbox) -> None:
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "new.person@acme.example",
        "emails": [{"value": "new.person@acme.example", "type": "work", "primary": True}],
        "name": {"givenName": "New", "familyName": "Person"},
        "active": True,
    }
    url = f"{sandbox.scim_base_url}/Users"
    async with httpx.AsyncClient() as client:
        # The organization API key is not a SCIM token.
        refused = await client.post(url, json=body, headers={"Authorization": f"Bearer {sandbox.api_key}"})
        assert refused.status_code == 401
        resp = await client.post(url, json=body, headers={"Authorization": f"Bearer {sandbox.scim_token}"})
        assert resp.status_code == 201
        user = resp.json()
        ext = "urn:scim:schemas:extension:atlassian-external:1.0"
        assert ext in user["schemas"]
        account_id = user[ext]["atlassianAccountId"]
        assert account_id != user["id"] and sandbox.state.users[account_id].name == "New Person"
        again = await client.post(url, json=body, headers={"Authorization": f"Bearer {sandbox.scim_token}"})
        assert again.status_code == 409
