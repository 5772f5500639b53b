"""UpstreamClient against a real HTTP/1.1 server on loopback (no mocked transports).

Every test runs over both wires UpstreamClient can use: aiohttp's (the default without a proxy) and httpx's
own transport (used when a proxy is configured); retries, errors and limits must not depend on which."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import http
import ipaddress
import itertools
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import certifi
import grpc
import httpx
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connector.sdk import http as upstream_http
from connector.sdk import transport as upstream_transport
from connector.sdk.errors import UpstreamError, from_upstream
from connector.sdk.http import (
    RequestEvent,
    RetryPolicy,
    TokenBucket,
    UpstreamClient,
    make_ssl_context,
    parse_reset,
    parse_retry_after,
    rate_limit_info,
)

pytestmark = pytest.mark.timeout(10)

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)
TOKEN = "Bearer s3cr3t-T0KEN-value-4711"


@dataclass
class Req:
    method: str
    target: str  # raw request target, as sent on the wire
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


@dataclass
class Resp:
    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Req], Awaitable[Resp]]


async def _ok(req: Req) -> Resp:
    return Resp(200, {"ok": True})


class Server:
    """A tiny keep-alive HTTP/1.1 server that records requests and counts concurrent ones."""

    def __init__(self) -> None:
        self.handler: Handler = _ok
        self.requests: list[Req] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    def respond(self, *responses: Resp) -> None:
        """Answer with these responses in order, then repeat the last one."""
        queue = list(responses)

        async def handler(req: Req) -> Resp:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.handler = handler

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req = Req(method, target, headers, body, time.monotonic())
                self.requests.append(req)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    resp = await self.handler(req)
                finally:
                    self.in_flight -= 1
                payload = resp.body
                if not isinstance(payload, bytes | str):
                    payload = json.dumps(payload)
                    resp.headers.setdefault("Content-Type", "application/json")
                data = payload.encode() if isinstance(payload, str) else payload
                head = f"HTTP/1.1 {resp.status} {http.HTTPStatus(resp.status).phrase}\r\n"
                head += f"Content-Length: {len(data)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in resp.headers.items())
                writer.write(head.encode("latin-1") + b"\r\n" + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # An HTTP(S)_PROXY in the environment would send loopback requests elsewhere.
    for var in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True, params=["aiohttp", "httpx"])
def wire(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The wire every UpstreamClient in the test uses (the proxy check decides it in production)."""
    name: str = request.param
    monkeypatch.setattr(upstream_transport, "PREFER_AIOHTTP", name == "aiohttp")
    return name


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    await srv.start()
    yield srv
    await srv.stop()


def client(srv: Server, *, path: str = "", retry: RetryPolicy = FAST, **kw: Any) -> UpstreamClient:
    events: list[RequestEvent] = []
    c = UpstreamClient("test", srv.url + path, retry=retry, hooks=[events.append], **kw)
    c.events = events  # type: ignore[attr-defined]
    return c


def events_of(c: UpstreamClient) -> list[RequestEvent]:
    return c.events  # type: ignore[attr-defined,no-any-return]


# --------------------------------------------------------------------------------------------------------
# Retry-After and reset headers


async def test_429_retry_after_seconds(server: Server) -> None:
    server.respond(Resp(429, {"message": "slow down"}, {"Retry-After": "0.3"}), Resp(200, {"n": 1}))
    async with client(server, retry=RetryPolicy(base_delay=5, max_delay=5)) as c:
        started = time.monotonic()
        assert await c.get_json("/things") == {"n": 1}
        took = time.monotonic() - started
    assert len(server.requests) == 2
    assert server.requests[1].at - server.requests[0].at >= 0.29
    assert took < 2  # not the 5 s backoff
    first, second = events_of(c)
    assert (first.status, first.retrying, first.rate_limited, first.wait) == (429, True, True, 0.3)
    assert (second.status, second.retrying, second.attempt) == (200, False, 2)
    assert c.stats.requests == 2 and c.stats.retries == 1 and c.stats.rate_limited == 1
    assert c.stats.waited_seconds == pytest.approx(0.3)


async def test_429_retry_after_http_date(server: Server) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    date = email.utils.format_datetime(when, usegmt=True)  # whole seconds: the wait is in (1, 2]
    server.respond(Resp(429, b"", {"Retry-After": date}), Resp(200, {}))
    async with client(server, retry=RetryPolicy(base_delay=10, max_delay=10)) as c:
        await c.get_json("/x")
    wait = events_of(c)[0].wait
    assert 0.9 < wait <= 2.0
    assert server.requests[1].at - server.requests[0].at >= wait - 0.05


@pytest.mark.parametrize("style", ["epoch", "iso"])
async def test_429_x_ratelimit_reset(server: Server, style: str) -> None:
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.4)
    if style == "epoch":
        value = f"{reset.timestamp():.3f}"
    else:
        value = reset.strftime("%Y-%m-%dT%H:%M:%S.") + f"{reset.microsecond // 1000:03d}Z"
    server.respond(Resp(429, b"", {"X-RateLimit-Reset": value}), Resp(200, {}))
    async with client(server, retry=RetryPolicy(base_delay=10, max_delay=10)) as c:
        await c.get_json("/x")
    wait = events_of(c)[0].wait
    assert 0.2 < wait <= 0.41
    assert server.requests[1].at - server.requests[0].at >= 0.2


async def test_503_then_success(server: Server) -> None:
    server.respond(Resp(503, "maintenance"), Resp(503, "maintenance"), Resp(200, {"ok": 1}))
    async with client(server) as c:
        resp = await c.request("GET", "/x")
    assert resp.json() == {"ok": 1}
    assert [e.status for e in events_of(c)] == [503, 503, 200]
    assert [e.retrying for e in events_of(c)] == [True, True, False]
    assert all(e.wait <= 0.05 for e in events_of(c))


async def test_exhausted_retries_raise_with_rate_limit(server: Server) -> None:
    reset = int(time.time()) + 3600
    server.respond(
        Resp(
            429,
            {
                "errors": [
                    {"code": "ADMIN-429-1", "title": "Too Many Requests", "detail": "Rate limit exceeded"}
                ]
            },
            {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
        )
    )
    policy = RetryPolicy(max_attempts=3, max_retry_after=0.02)
    async with client(server, retry=policy) as c:
        with pytest.raises(UpstreamError) as info:
            await c.get_json("/orgs/{org}/users", path_params={"org": "o1"})
    err = info.value
    assert len(server.requests) == 3
    assert err.status == 429
    assert err.route == "/orgs/{org}/users"
    assert "ADMIN-429-1: Too Many Requests: Rate limit exceeded" in err.detail
    assert "after 3 attempts" in str(err)
    assert err.rate_limit is not None
    assert err.rate_limit.limit == 100 and err.rate_limit.remaining == 0
    assert err.rate_limit.reset_at == dt.datetime.fromtimestamp(reset, dt.UTC)
    assert [e.wait for e in events_of(c)] == [0.02, 0.02, 0.0]  # clamped to max_retry_after
    mapped = from_upstream(err)
    assert mapped.code == grpc.StatusCode.UNAVAILABLE
    assert mapped.rate_limit is not None and mapped.rate_limit.reset_at.seconds == reset


async def test_connection_refused_fails_at_once_naming_the_address() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more
    events: list[RequestEvent] = []
    c = UpstreamClient(
        "test", f"http://127.0.0.1:{port}", retry=RetryPolicy(3, 0.01, 0.02), hooks=[events.append]
    )
    async with c:
        with pytest.raises(UpstreamError) as info:
            await c.request("GET", "/x")
    assert info.value.status is None
    assert info.value.detail == f"connection refused to 127.0.0.1:{port}"
    # A wrong address does not get better by asking again at once (the sync engine and C1 retry later).
    assert [(e.status, e.retrying) for e in events] == [(None, False)]
    assert from_upstream(info.value).code == grpc.StatusCode.UNAVAILABLE


async def test_post_not_retried_on_502_but_on_429(server: Server) -> None:
    server.respond(Resp(502, "bad gateway"))
    async with client(server) as c:
        with pytest.raises(UpstreamError) as info:
            await c.request(
                "POST", "/groups/{g}/members", path_params={"g": "x"}, json={"id": 1}, expect=(201,)
            )
        assert info.value.status == 502
        assert len(server.requests) == 1
        assert json.loads(server.requests[0].body) == {"id": 1}

        server.requests.clear()
        await c.request("GET", "/x", expect=(502,))  # expected statuses are never retried
        with pytest.raises(UpstreamError):
            await c.request("GET", "/x")
        assert len(server.requests) == 1 + FAST.max_attempts  # GET is retried on 502

        server.requests.clear()
        server.respond(Resp(429, b"", {"Retry-After": "0"}), Resp(201, {"id": 1}))
        resp = await c.request("POST", "/groups/{g}/members", path_params={"g": "x"}, json={}, expect=(201,))
        assert resp.status_code == 201 and len(server.requests) == 2


async def test_post_not_retried_on_read_timeout(server: Server) -> None:
    async def slow(req: Req) -> Resp:
        await asyncio.sleep(0.5)
        return Resp(200, {})

    server.handler = slow
    async with client(server, timeout=0.1, retry=RetryPolicy(max_attempts=2, base_delay=0.01)) as c:
        with pytest.raises(UpstreamError) as info:
            await c.request("POST", "/x", json={})
        assert info.value.status is None and "ReadTimeout" in info.value.detail
        assert len(server.requests) == 1
        with pytest.raises(UpstreamError):
            await c.request("GET", "/x")
        assert len(server.requests) == 3


async def test_non_retryable_status_fails_at_once(server: Server) -> None:
    server.respond(Resp(404, {"statusCode": 404, "message": "No group found with name : x"}))
    async with client(server) as c:
        with pytest.raises(UpstreamError) as info:
            await c.get_json("/group/{name}", path_params={"name": "x"})
    assert len(server.requests) == 1
    assert info.value.status == 404 and info.value.rate_limit is None
    assert info.value.detail == "No group found with name : x"
    assert info.value.body == {"statusCode": 404, "message": "No group found with name : x"}


# --------------------------------------------------------------------------------------------------------
# Concurrency and rate


async def test_concurrency_bound_limits_in_flight(server: Server) -> None:
    async def slow(req: Req) -> Resp:
        await asyncio.sleep(0.1)
        return Resp(200, {})

    server.handler = slow
    async with client(server, concurrency=3) as c:
        await asyncio.gather(*(c.get_json("/x") for _ in range(10)))
    assert len(server.requests) == 10
    assert server.max_in_flight == 3


async def test_a_request_waiting_for_a_slot_goes_out_before_the_freed_answer_is_processed(
    server: Server,
) -> None:
    """Processing an answer (decoding, building a page) must not keep a free slot idle."""
    order: list[str] = []
    async with client(server, concurrency=1) as c:
        send = c._client.send

        async def recording(request: httpx.Request, **kw: Any) -> httpx.Response:
            order.append(f"send {request.url.path}")
            return await send(request, **kw)

        c._client.send = recording  # type: ignore[method-assign]

        async def first() -> None:
            await c.get_json("/first")
            order.append("process /first")

        await asyncio.gather(first(), c.get_json("/second"))
    assert order == ["send /first", "send /second", "process /first"]


async def test_semaphore_not_held_during_backoff(server: Server) -> None:
    async def handler(req: Req) -> Resp:
        if req.path == "/limited" and sum(r.path == "/limited" for r in server.requests) == 1:
            return Resp(429, b"", {"Retry-After": "0.5"})
        return Resp(200, {})

    server.handler = handler
    async with client(server, concurrency=1) as c:
        limited = asyncio.create_task(c.get_json("/limited"))
        await asyncio.sleep(0.1)  # the first request is now sleeping before its retry
        started = time.monotonic()
        await c.get_json("/other")
        assert time.monotonic() - started < 0.3
        await limited


async def test_token_bucket_spaces_requests(server: Server) -> None:
    async with client(server, rate_limit=20, rate_burst=1) as c:
        await asyncio.gather(*(c.get_json("/x") for _ in range(5)))
    times = sorted(r.at for r in server.requests)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.025  # 50 ms apart, minus scheduling jitter
    assert times[-1] - times[0] >= 0.18


async def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(rate=50, burst=3)
    started = time.monotonic()
    for _ in range(3):
        await bucket.acquire()
    assert time.monotonic() - started < 0.02  # the burst is free
    for _ in range(3):
        await bucket.acquire()
    assert time.monotonic() - started >= 0.055  # then one token per 20 ms


# --------------------------------------------------------------------------------------------------------
# URLs


async def test_path_params_are_percent_encoded(server: Server) -> None:
    name = "Team A/B größe"
    async with client(server) as c:
        await c.get_json("/rest/api/group/{group}/member", path_params={"group": name}, params={"limit": 5})
    req = server.requests[0]
    assert req.path == "/rest/api/group/Team%20A%2FB%20gr%C3%B6%C3%9Fe/member"
    assert unquote(req.path.split("/")[4]) == name
    assert req.query == "limit=5"


async def test_context_path_and_next_links(server: Server) -> None:
    for base in ("/confluence", "/confluence/"):
        server.requests.clear()
        async with client(server, path=base) as c:
            await c.get_json("/rest/api/group", params={"limit": 100})
            # Confluence's _links.next is relative to the context path and carries its own query.
            await c.get_json("/rest/api/group", url="/rest/api/group?start=100&limit=100")
            await c.get_json("/rest/api/group", url="rest/api/group?start=200", params={"expand": "x"})
            await c.get_json("/rest/api/group", url=f"{server.url}/confluence/rest/api/group?start=300")
        assert [r.target for r in server.requests] == [
            "/confluence/rest/api/group?limit=100",
            "/confluence/rest/api/group?start=100&limit=100",
            "/confluence/rest/api/group?start=200&expand=x",
            "/confluence/rest/api/group?start=300",
        ]
        assert {e.route for e in events_of(c)} == {"/rest/api/group"}


async def test_links_to_another_origin_are_refused(server: Server) -> None:
    async with client(server, headers={"Authorization": TOKEN}) as c:
        with pytest.raises(UpstreamError) as info:
            await c.get_json("/users", url="http://evil.example:1/users?cursor=x")
    assert "another origin" in info.value.detail
    assert server.requests == []


async def test_hooks_receive_route_templates_not_ids(server: Server) -> None:
    seen: list[RequestEvent] = []
    async with client(server) as c:
        c.add_hook(seen.append)
        await c.get_json("/users/{account_id}/groups", path_params={"account_id": "557058:abc-123"})
        await c.get_json("/users/{account_id}/groups", url="/users/557058:abc-123/groups?cursor=zz")
    assert [e.route for e in seen] == ["/users/{account_id}/groups"] * 2
    assert all("557058" not in repr(e) and "zz" not in repr(e) for e in seen)
    assert seen[0].upstream == "test" and seen[0].method == "GET" and seen[0].elapsed > 0


async def test_a_failing_hook_does_not_fail_the_request(server: Server) -> None:
    def broken(event: RequestEvent) -> None:
        raise RuntimeError("metrics backend down")

    seen: list[RequestEvent] = []
    async with UpstreamClient("test", server.url, hooks=[broken, seen.append]) as c:
        assert await c.get_json("/x") == {"ok": True}
    assert [e.status for e in seen] == [200]  # hooks after the broken one still run


# --------------------------------------------------------------------------------------------------------
# Errors


ERROR_BODIES: list[tuple[Any, str]] = [
    ({"message": "Rate limit exceeded."}, "Rate limit exceeded."),
    ({"errorMessage": "User not permitted"}, "User not permitted"),
    (
        {"errors": [{"code": "ADMIN-404-2", "title": "Not Found", "detail": "Org not found"}]},
        "ADMIN-404-2: Not Found: Org not found",
    ),
    ({"code": "INVALID_CURSOR", "message": "bad cursor"}, "INVALID_CURSOR: bad cursor"),
    ({"statusCode": 403, "message": "Not permitted to view"}, "Not permitted to view"),
    ({"errorMessages": ["Group does not exist"], "errors": {}}, "Group does not exist"),
    ({"error": "invalid_grant", "error_description": "token expired"}, "token expired"),
    ("<html><body>" + "x" * 500 + "</body></html>", "<html><body>" + "x" * 185 + "..."),
    ({"unexpected": [1, 2]}, '{"unexpected": [1, 2]}'),
]


async def test_error_detail_extraction(server: Server) -> None:
    async def handler(req: Req) -> Resp:
        return Resp(400, ERROR_BODIES[int(req.path.rsplit("/", 1)[1])][0])

    server.handler = handler
    async with client(server) as c:
        for i, (_, expected) in enumerate(ERROR_BODIES):
            with pytest.raises(UpstreamError) as info:
                await c.get_json("/err/{i}", path_params={"i": str(i)})
            assert info.value.status == 400
            assert info.value.detail == expected
            assert len(info.value.detail) <= 200
            assert str(info.value) == f"test GET /err/{{i}}: HTTP 400: {expected}"


async def test_malformed_json(server: Server) -> None:
    server.respond(Resp(200, "<html>login</html>", {"Content-Type": "text/html"}))
    async with client(server) as c:
        with pytest.raises(UpstreamError) as info:
            await c.get_json("/x")
        assert info.value.detail.startswith("malformed JSON")
        assert "text/html" in info.value.detail and "login" in info.value.detail

        server.respond(Resp(204, b""))
        assert await c.get_json("/x", expect=(204,)) is None


async def test_json_bodies_in_every_rfc_8259_encoding(server: Server) -> None:
    """UTF-8 (the fast decoder), and a UTF-8 BOM or UTF-16 (the standard one) give the same value."""
    value = {"name": "Jürgen ☃", "n": 12345678901234567890, "ok": True, "items": [1.5, None]}
    text = json.dumps(value)
    async with client(server) as c:
        for body in (text.encode(), b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16")):
            server.respond(Resp(200, body, {"Content-Type": "application/json"}))
            assert await c.get_json("/x") == value


async def test_authorization_never_in_errors_or_logs(server: Server) -> None:
    server.respond(Resp(401, {"message": "Unauthorized"}))
    with structlog.testing.capture_logs() as logs:
        async with client(server, headers={"Authorization": TOKEN}, retry=RetryPolicy(2, 0.01)) as c:
            with pytest.raises(UpstreamError) as unauthorized:
                await c.get_json("/me", params={"api_key": "query-secret-999"})
            server.respond(Resp(503, "down"))
            with pytest.raises(UpstreamError) as unavailable:
                await c.request("PUT", "/me", json={"x": 1}, headers={"Authorization": TOKEN})
        refused = UpstreamClient("test", "http://127.0.0.1:1", headers={"Authorization": TOKEN}, retry=FAST)
        async with refused:
            with pytest.raises(UpstreamError) as transport:
                await refused.get_json("/me")
    assert server.requests[0].headers["authorization"] == TOKEN  # it was sent...
    secret = TOKEN.split()[1]
    for exc in (unauthorized.value, unavailable.value, transport.value):  # ...but is reported nowhere
        for text in (str(exc), repr(exc), exc.detail, repr(exc.body), repr(exc.args)):
            assert secret not in text and "query-secret" not in text
    assert logs, "expected debug lines"
    assert all(secret not in repr(entry) and "query-secret" not in repr(entry) for entry in logs)
    assert {entry["route"] for entry in logs if "route" in entry} == {"/me"}


# --------------------------------------------------------------------------------------------------------
# Header parsing and TLS helpers


NOW = dt.datetime(2026, 11, 22, 15, 40, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("Sun, 22 Nov 2026 15:40:30 GMT", 30.0),
        ("Sunday, 22-Nov-26 15:40:30 GMT", 30.0),
        ("Sun, 22 Nov 2026 15:00:00 GMT", 0.0),  # in the past
        ("soon", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1795448433", dt.datetime.fromtimestamp(1795448433, dt.UTC)),  # epoch seconds
        ("1795448433123", dt.datetime.fromtimestamp(1795448433.123, dt.UTC)),  # epoch milliseconds
        ("30", NOW + dt.timedelta(seconds=30)),  # delta seconds
        ("2026-11-22T15:40:33.123Z", dt.datetime(2026, 11, 22, 15, 40, 33, 123000, tzinfo=dt.UTC)),
        ("2026-11-22T16:40:33+01:00", dt.datetime(2026, 11, 22, 15, 40, 33, tzinfo=dt.UTC)),
        ("Sun, 22 Nov 2026 15:41:00 GMT", NOW + dt.timedelta(seconds=60)),
        ("garbage", None),
    ],
)
def test_parse_reset(value: str, expected: dt.datetime | None) -> None:
    assert parse_reset(value, NOW) == expected


def test_rate_limit_info_only_when_it_means_wait() -> None:
    def resp(status: int, headers: dict[str, str]) -> httpx.Response:
        return httpx.Response(status, headers=headers)

    info = rate_limit_info(resp(429, {}), NOW)
    assert info is not None and info.remaining == 0 and info.reset_at == NOW + dt.timedelta(seconds=60)
    assert rate_limit_info(resp(404, {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "5"}), NOW) is None
    exhausted = rate_limit_info(resp(403, {"RateLimit-Remaining": "0", "RateLimit-Reset": "5"}), NOW)
    assert exhausted is not None and exhausted.reset_at == NOW + dt.timedelta(seconds=5)
    busy = rate_limit_info(resp(503, {"Retry-After": "7"}), NOW)
    assert busy is not None and busy.reset_at == NOW + dt.timedelta(seconds=7)


def test_make_ssl_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ssl_context()
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    extra = make_ssl_context(certifi.where())
    assert isinstance(extra, ssl.SSLContext) and extra.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match="cannot load CA file"):
        make_ssl_context(str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ValueError, match="cannot load CA file"):
        make_ssl_context(str(bad))

    monkeypatch.setattr(upstream_http, "_insecure_warned", False)
    with structlog.testing.capture_logs() as logs:
        insecure = make_ssl_context(insecure_skip_verify=True)
        make_ssl_context(insecure_skip_verify=True)
    assert isinstance(insecure, ssl.SSLContext)
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and "VERIFICATION IS DISABLED" in warnings[0]["event"]


# --------------------------------------------------------------------------------------------------------
# The wire and TLS


async def test_the_wire_is_aiohttp_unless_a_proxy_is_configured(
    server: Server, wire: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client(server) as c:
        assert c.wire == wire and c.proxy is None
        assert await c.get_json("/x") == {"ok": True}
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    # Loopback is never proxied (Go's rule, as for the tenant channel): still direct.
    async with client(server) as c:
        assert c.wire == wire and c.proxy is None
        assert await c.get_json("/x") == {"ok": True}
    # Any other host: httpx's transport, given the proxy explicitly.
    async with UpstreamClient("t", "https://api.example.com") as c:
        assert (c.wire, c.proxy) == ("httpx", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.0/8,.example.com")
    async with UpstreamClient("t", "https://api.example.com") as c:
        assert (c.wire, c.proxy) == (wire, None)
    async with UpstreamClient("t", "https://10.1.2.3:8443") as c:
        assert (c.wire, c.proxy) == (wire, None)


def _issue_tls(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A private CA (written as a PEM file) and a server context with a 127.0.0.1 certificate it signed."""
    now = dt.datetime.now(dt.UTC)

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, critical=True).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("Test Private CA", ca_key, "Test Private CA", ca_key, True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("127.0.0.1", leaf_key, "Test Private CA", ca_key, False)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / "server.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(chain)
    return ca_file, server_ctx


async def test_tls_with_a_private_ca_file(tmp_path: Path) -> None:
    ca_file, server_ctx = _issue_tls(tmp_path)
    srv = Server()
    await srv.start(tls=server_ctx)
    try:
        # The CA file makes the upstream's certificate trusted...
        async with client(srv, verify=make_ssl_context(str(ca_file))) as c:
            assert await c.get_json("/x") == {"ok": True}
        # ...without it the certificate is rejected once, not retried (it would be rejected again)...
        async with client(srv, verify=make_ssl_context()) as c:
            with pytest.raises(UpstreamError) as info:
                await c.get_json("/x")
        assert info.value.status is None and "certificate" in info.value.detail.lower()
        assert [(e.status, e.retrying) for e in events_of(c)] == [(None, False)]
        assert from_upstream(info.value).code == grpc.StatusCode.UNAVAILABLE
        # ...and insecure mode skips verification altogether.
        async with client(srv, verify=make_ssl_context(insecure_skip_verify=True)) as c:
            assert await c.get_json("/x") == {"ok": True}
        assert len(srv.requests) == 2
    finally:
        await srv.stop()


# --------------------------------------------------------------------------------------------------------
# Body limit


@pytest.fixture
async def huge() -> AsyncIterator[tuple[str, list[str]]]:
    """An upstream answering 3 MiB: with Content-Length, chunked without one, and gzip that decodes to it."""
    import gzip

    from aiohttp import web

    hits: list[str] = []
    big = b'{"data": "' + b"x" * (3 << 20) + b'"}'

    async def declared(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.Response(body=big, content_type="application/json")

    async def chunked(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(big), 64 << 10):
            await resp.write(big[i : i + (64 << 10)])
        await resp.write_eof()
        return resp

    async def bomb(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.Response(
            body=gzip.compress(big), headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def small(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.json_response({"data": "y" * (100 << 10)})

    app = web.Application()
    for path, handler in (("/declared", declared), ("/chunked", chunked), ("/bomb", bomb), ("/small", small)):
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    await runner.cleanup()


@pytest.mark.parametrize("route", ["/declared", "/chunked", "/bomb"])
async def test_a_body_past_the_limit_is_a_clear_error_not_retried(
    huge: tuple[str, list[str]], route: str
) -> None:
    url, hits = huge
    async with UpstreamClient("big", url, max_body_bytes=1 << 20, retry=FAST) as c:
        with pytest.raises(UpstreamError) as err:
            await c.get_json(route)
        assert "larger than the 1 MiB limit for one response" in str(err.value)
        assert err.value.status is None and route in str(err.value)
        assert hits == [route]  # the same request would get the same body: no retry
        # The connection pool is fine afterwards.
        assert len((await c.get_json("/small"))["data"]) == 100 << 10
