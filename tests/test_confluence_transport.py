"""The aiohttp-backed transport behaves on the wire like httpx's own, through the shared UpstreamClient."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from connector.apps.confluence_datacenter.transport import AiohttpTransport
from connector.sdk.errors import UpstreamError
from connector.sdk.http import RetryPolicy, UpstreamClient

SEEN = web.AppKey("seen", list[dict[str, object]])


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    request.app[SEEN].append(
        {
            "method": request.method,
            "raw_path": request.rel_url.raw_path,
            "query": list(request.rel_url.query.items()),
            "headers": dict(request.headers),
            "body": body.decode(),
        }
    )
    return web.json_response({"ok": True})


async def _gzip(request: web.Request) -> web.Response:
    raw = gzip.compress(json.dumps({"results": ["é" * 3] * 50}).encode())
    return web.Response(body=raw, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1)
    return web.json_response({})


_flaky_calls = web.AppKey("flaky", list[int])


async def _flaky(request: web.Request) -> web.StreamResponse:
    calls = request.app[_flaky_calls]
    calls.append(1)
    if len(calls) == 1:
        assert request.transport is not None
        request.transport.close()  # drop the connection without an answer
        return web.Response()
    return web.json_response({"attempt": len(calls)})


async def _cookie(request: web.Request) -> web.Response:
    resp = web.json_response({"cookie": request.headers.get("Cookie", "")})
    resp.set_cookie("JSESSIONID", "abc123")
    return resp


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, web.Application]]:
    app = web.Application()
    app[SEEN] = []
    app[_flaky_calls] = []
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    app.router.add_get("/gzip", _gzip)
    app.router.add_get("/redirect", _redirect)
    app.router.add_get("/slow", _slow)
    app.router.add_route("*", "/flaky", _flaky)
    app.router.add_get("/cookie", _cookie)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", app
    await runner.cleanup()


def _client(base: str, **kw: object) -> UpstreamClient:
    return UpstreamClient("t", base, transport=AiohttpTransport(max_connections=4), **kw)  # type: ignore[arg-type]


async def test_paths_queries_headers_and_bodies_arrive_as_httpx_built_them(
    upstream: tuple[str, web.Application],
) -> None:
    base, app = upstream
    client = _client(base, headers={"Authorization": "Bearer t0k"})
    try:
        await client.request(
            "PUT",
            "/echo/user/{user}/group/{group}",
            path_params={"user": "zoë.müller", "group": "qa/automation R&D"},
            params=[("expand", "status"), ("id", "1"), ("id", "2")],
            json=["VIEWSPACE", "x"],
            headers={"Content-Type": "application/json"},
            expect=(200,),
        )
    finally:
        await client.aclose()
    seen = app[SEEN][0]
    assert seen["method"] == "PUT"
    # One path segment each, percent-encoded exactly once (a slash in a group name stays %2F).
    assert seen["raw_path"] == "/echo/user/zo%C3%AB.m%C3%BCller/group/qa%2Fautomation%20R%26D"
    assert seen["query"] == [("expand", "status"), ("id", "1"), ("id", "2")]
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["Authorization"] == "Bearer t0k"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("baton-")
    assert json.loads(str(seen["body"])) == ["VIEWSPACE", "x"]


async def test_compressed_bodies_are_decoded_and_redirects_not_followed(
    upstream: tuple[str, web.Application],
) -> None:
    base, _ = upstream
    client = _client(base)
    try:
        body = await client.get_json("/gzip")
        with pytest.raises(UpstreamError) as err:
            await client.get_json("/redirect")
    finally:
        await client.aclose()
    assert body == {"results": ["ééé"] * 50}
    assert err.value.status == 302


async def test_timeouts_and_dropped_connections_are_httpx_errors_the_retry_rules_know(
    upstream: tuple[str, web.Application],
) -> None:
    base, app = upstream
    client = _client(base, timeout=0.3, retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01))
    try:
        with pytest.raises(UpstreamError) as err:
            await client.get_json("/slow")
        timeout_retries = client.stats.retries
        recovered = await client.get_json("/flaky")  # the first attempt's connection is dropped
        app[_flaky_calls].clear()
        with pytest.raises(UpstreamError) as dropped_write:
            await client.request("POST", "/flaky", json={"add": "VIEWSPACE"})
    finally:
        await client.aclose()
    assert err.value.status is None and "ReadTimeout" in err.value.detail
    assert timeout_retries == 1
    assert recovered == {"attempt": 2}  # a read is repeated
    # A write whose connection dropped may have been applied: it is reported, never sent twice.
    assert dropped_write.value.status is None and "RemoteProtocolError" in dropped_write.value.detail
    assert len(app[_flaky_calls]) == 1


async def test_cookies_are_kept_by_the_httpx_client_as_with_its_own_transport(
    upstream: tuple[str, web.Application],
) -> None:
    base, _ = upstream
    seen: dict[str, list[object]] = {}
    for name, transport in (("aiohttp", AiohttpTransport()), ("httpx", None)):
        client = UpstreamClient("t", base, transport=transport)
        seen[name] = [await client.get_json("/cookie"), await client.get_json("/cookie")]
        await client.aclose()
    assert seen["aiohttp"] == seen["httpx"] == [{"cookie": ""}, {"cookie": "JSESSIONID=abc123"}]


async def test_connection_refused_is_a_connect_error_naming_the_host() -> None:
    transport = AiohttpTransport()
    try:
        with pytest.raises(httpx.ConnectError) as err:
            await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:1/rest/api/space"))
    finally:
        await transport.aclose()
    assert "cannot connect to 127.0.0.1:1" in str(err.value)
    assert "ssl" not in str(err.value).lower()  # not mistaken for a TLS problem
