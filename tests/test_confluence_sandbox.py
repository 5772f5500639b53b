"""The fake Confluence server is as strict as the real one: clients that get these wrong fail against it."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest

from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.server import (
    PageCaps,
    RateLimitConfig,
    SandboxConfig,
    start_confluence_sandbox,
)

ADMIN = {"Authorization": "Bearer admin-pat"}


@pytest.mark.parametrize(
    ("version", "path", "status"),
    [
        ("7.19", "/rest/api/user/list", 404),
        ("8.5", "/rest/api/user/list", 200),
        ("8.5", "/rest/api/space/ENG/permissions", 404),
        ("9.2", "/rest/api/space/ENG/permissions", 200),
        ("8.5", "/rest/api/server-information", 404),
        ("9.2", "/rest/api/admin/users/list/active", 200),
        ("8.5", "/rest/api/admin/users/list/active", 404),
    ],
)
async def test_version_modes_expose_only_their_endpoints(version: str, path: str, status: int) -> None:
    sandbox = await start_confluence_sandbox(sandbox_data.small(), SandboxConfig(version=version))
    try:
        async with httpx.AsyncClient(headers=ADMIN) as http:
            r = await http.get(sandbox.base_url + path)
    finally:
        await sandbox.stop()
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")


async def test_pages_are_capped_and_linked_like_confluence() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="8.5", context_path="/confluence", caps=PageCaps(user_list=10))
    sandbox = await start_confluence_sandbox(data, config)
    try:
        async with httpx.AsyncClient(headers=ADMIN) as http:
            first = (await http.get(sandbox.base_url + "/rest/api/user/list?limit=100")).json()
            links = first["_links"]
            second = (await http.get(links["base"] + links["next"])).json()
            beyond = (await http.get(sandbox.base_url + "/rest/api/user/list?start=999")).json()
            negative = await http.get(sandbox.base_url + "/rest/api/user/list?start=-1")
    finally:
        await sandbox.stop()
    assert (first["size"], first["limit"], first["start"]) == (10, 10, 0)
    assert "totalCount" not in first  # 8.x envelopes have no total
    assert links["context"] == "/confluence" and links["base"] == sandbox.base_url
    assert links["self"].startswith("http") and links["next"].startswith("/rest/api/user/list?")
    assert second["start"] == 10
    assert [u["username"] for u in second["results"]] == list(data.users)[10:20]
    assert beyond["results"] == [] and "next" not in beyond["_links"]
    assert negative.status_code == 400


async def test_auth_failure_modes() -> None:
    sandbox = await start_confluence_sandbox(sandbox_data.small(), SandboxConfig(version="9.2"))
    try:
        async with httpx.AsyncClient() as http:
            anon = await http.get(
                sandbox.base_url + "/rest/api/user/current", headers={"Authorization": "Bearer x"}
            )
            basic_bad = await http.get(sandbox.base_url + "/rest/api/user/current", auth=("admin", "nope"))
            basic_ok = await http.get(sandbox.base_url + "/rest/api/user/current", auth=("admin", "admin"))
            viewer = await http.get(
                sandbox.base_url + "/rest/api/group", headers={"Authorization": "Bearer viewer-pat"}
            )
            missing = await http.get(sandbox.base_url + "/rest/api/space/NOPE", headers=ADMIN)
    finally:
        await sandbox.stop()
    assert anon.status_code == 200 and anon.json()["type"] == "anonymous" and "userKey" not in anon.json()
    assert basic_bad.status_code == 401
    assert basic_bad.headers["content-type"].startswith("text/html")
    assert basic_bad.headers["X-Seraph-LoginReason"] == "AUTHENTICATION_DENIED"
    assert basic_ok.status_code == 200 and basic_ok.headers["X-AUSERNAME"] == "admin"
    assert viewer.status_code == 403
    body = missing.json()
    assert missing.status_code == 404
    assert (
        set(body) == {"statusCode", "data", "message", "reason"}
        and body["message"] == "No space with key : NOPE"
    )
    assert set(body["data"]) == {"authorized", "valid", "allowedInReadOnlyMode", "errors", "successful"}


async def test_rate_limit_headers_on_every_response_and_429_when_empty() -> None:
    config = SandboxConfig(
        version="9.2", rate_limit=RateLimitConfig(capacity=2, fill_rate=1, interval_seconds=60)
    )
    sandbox = await start_confluence_sandbox(sandbox_data.small(), config)
    try:
        async with httpx.AsyncClient(headers=ADMIN) as http:
            responses = [await http.get(sandbox.base_url + "/rest/api/space") for _ in range(3)]
    finally:
        await sandbox.stop()
    ok, _, limited = responses
    assert ok.status_code == 200 and ok.headers["retry-after"] == "0"
    assert ok.headers["X-RateLimit-Limit"] == "2" and ok.headers["X-RateLimit-Interval-Seconds"] == "60"
    assert ok.headers["X-RateLimit-FillRate"] == "1"
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1 and limited.headers["X-RateLimit-Remaining"] == "0"


async def test_json_rpc_light_and_envelope_modes() -> None:
    sandbox = await start_confluence_sandbox(sandbox_data.small(), SandboxConfig(version="8.5"))
    rpc = sandbox.base_url + "/rpc/json-rpc/confluenceservice-v2"
    try:
        async with httpx.AsyncClient(headers=ADMIN) as http:
            light = await http.post(rpc + "/getSpacePermissionSets", json=["ENG"])
            envelope = await http.post(
                rpc, json={"jsonrpc": "2.0", "method": "getServerInfo", "params": [], "id": 7}
            )
            no_ctype = await http.post(
                rpc + "/getServerInfo", content=b"[]", headers={"Content-Type": "text/plain"}
            )
            not_admin = await http.post(
                rpc + "/getSpacePermissionSets", json=["ENG"], headers={"Authorization": "Bearer viewer-pat"}
            )
    finally:
        await sandbox.stop()
    sets = {s["type"]: s["spacePermissions"] for s in light.json()}
    assert "EXPORTPAGE" in sets and sets["EXPORTPAGE"] == [
        dict(e, type="EXPORTPAGE") for e in sets["VIEWSPACE"]
    ]
    assert (
        envelope.json()
        == {
            "jsonrpc": "2.0",
            "result": envelope.json()["result"],
            "id": 7,
        }
        and envelope.json()["result"]["majorVersion"] == 8
    )
    assert no_ctype.status_code == 415
    assert "NotPermittedException" in not_admin.json()["error"]["message"]


async def test_remote_api_switch_and_membership_encoding() -> None:
    data = sandbox_data.small()
    sandbox = await start_confluence_sandbox(data, SandboxConfig(version="9.2", remote_api_enabled=False))
    try:
        async with httpx.AsyncClient(headers=ADMIN) as http:
            off = await http.post(
                sandbox.base_url + "/rpc/json-rpc/confluenceservice-v2/getServerInfo", json=[]
            )
            raw_slash = await http.put(sandbox.base_url + "/rest/api/user/viewer/group/qa/automation")
            encoded = await http.put(sandbox.base_url + "/rest/api/user/viewer/group/qa%2Fautomation")
            twice = await http.put(sandbox.base_url + "/rest/api/user/viewer/group/qa%2Fautomation")
    finally:
        await sandbox.stop()
    assert off.status_code == 404
    assert raw_slash.status_code == 404
    assert encoded.status_code == 204 and twice.status_code == 204  # idempotent
    assert data.groups["qa/automation"].has("viewer")


async def test_admin_create_user_validation() -> None:
    data = sandbox_data.small()
    in_use = sum(1 for u in data.users.values() if u.active and u.licensed)
    sandbox = await start_confluence_sandbox(data, SandboxConfig(version="8.5", licenses_available=in_use))
    url = sandbox.base_url + "/rest/api/admin/user"
    base = {"fullName": "X Y", "email": "x@example.com"}
    try:
        async with httpx.AsyncClient(headers=ADMIN) as http:
            both = await http.post(
                url, json={**base, "userName": "xy", "password": "p", "notifyViaEmail": True}
            )
            upper = await http.post(url, json={**base, "userName": "XY", "password": "p"})
            comma = await http.post(url, json={**base, "userName": "x,y", "password": "p"})
            dup = await http.post(url, json={**base, "userName": "admin", "password": "p"})
            full = await http.post(url, json={**base, "userName": "xy", "password": "p"})
    finally:
        await sandbox.stop()
    assert [r.status_code for r in (both, upper, comma, dup)] == [400, 400, 400, 409]
    assert full.status_code == 402  # every license is in use


async def test_runnable_by_itself_as_python_m_connector_sandbox_confluence() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        "sandbox",
        "confluence",
        "--port",
        "0",
        "--version",
        "7.19",
        "--context-path",
        "/wiki",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert line.startswith("CONFLUENCE_SANDBOX_URL=http://127.0.0.1:") and line.endswith("/wiki")
        url = line.split("=", 1)[1]
        async with httpx.AsyncClient(headers=ADMIN) as http:
            info = await http.post(url + "/rpc/json-rpc/confluenceservice-v2/getServerInfo", json=[])
        assert info.json()["minorVersion"] == 19
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_short_pages_link_to_the_next_item_and_missing_endpoints_are_404() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(
        version="9.2",
        caps=PageCaps(user_list=10),
        short_page_every=2,
        without=frozenset({"GET /rest/api/admin/users/list/active"}),
    )
    sandbox = await start_confluence_sandbox(data, config)
    try:
        async with httpx.AsyncClient(headers=ADMIN) as http:
            seen: list[str] = []
            sizes: list[int] = []
            url = sandbox.base_url + "/rest/api/user/list?limit=100"
            while True:
                page = (await http.get(url)).json()
                seen += [u["username"] for u in page["results"]]
                sizes.append(page["size"])
                if "next" not in page["_links"]:
                    break
                url = page["_links"]["base"] + page["_links"]["next"]
            gone = await http.get(sandbox.base_url + "/rest/api/admin/users/list/active")
    finally:
        await sandbox.stop()
    assert seen == list(data.users)  # nothing lost, nothing repeated
    assert 9 in sizes[:-1] and 10 in sizes  # short pages that are not the last
    assert gone.status_code == 404


async def test_prerendered_people_are_served_exactly_as_rendered_on_demand() -> None:
    # The standalone server renders every person ahead (benchmark fairness); what it serves from that
    # cache must be byte for byte what a fresh rendering gives, in the server's compact UTF-8 JSON.
    data = sandbox_data.small()
    async with (
        await start_confluence_sandbox(data, SandboxConfig(context_path="/wiki")) as sb,
        httpx.AsyncClient(base_url=sb.base_url, headers=ADMIN) as client,
    ):

        async def listing(path: str) -> bytes:
            response = await client.get(path, params={"limit": 1000})
            assert response.status_code == 200
            return response.content

        paths = ("/rest/api/user/list?expand=status", "/rest/api/admin/users/list/active")
        fresh = [await listing(p) for p in paths]
        sb.app._person_cache.clear()
        sb.app.prerender_people(sb.origin)
        assert len(sb.app._person_cache) == 3 * len(data.users)
        assert [await listing(p) for p in paths] == fresh

        people = json.loads(fresh[0])["results"]
        odd = next(p for p in people if p["username"] == "zoë.müller")
        assert odd["_links"]["self"].startswith(sb.origin + "/wiki/rest/api/user?key=")
        assert json.dumps(odd, ensure_ascii=False, separators=(",", ":")).encode() in fresh[0]

        # A changed user is rendered again, not served stale from the cache.
        data.users["zoë.müller"].display_name = "Zoë Renamed"
        again = json.loads(await listing(paths[0]))["results"]
        assert next(p for p in again if p["username"] == "zoë.müller")["displayName"] == "Zoë Renamed"


def test_expansion_heavy_data_has_the_benchmark_shape() -> None:
    from connector.sandbox.confluence.data import HEAVY_PERMISSION_KEYS, expansion_heavy

    data = expansion_heavy(users=300, groups=20, members_per_group=10, spaces=7)
    assert len(data.users) == 302 and len(data.groups) == 20 and len(data.spaces) == 7
    assert all(len(g.members) == 10 for g in data.groups.values())
    assert data.is_admin("admin")
    for perms in data.permissions.values():
        holders = {(kind, who) for _key, kind, who in perms}
        assert sorted(kind for kind, _ in holders) == ["group"] * 3 + ["user"] * 5
        assert len(perms) == len(HEAVY_PERMISSION_KEYS) * 8
        # Groups that hold space permissions are team groups (the built-ins would expand to everyone).
        assert not {who for kind, who in holders if kind == "group"} & {"confluence-users"}
