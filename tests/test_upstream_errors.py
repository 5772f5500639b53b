"""What the upstream client says when there is no HTTP answer, on both wires: the cause in words a user
can act on, no retries for a wrong address, and retry log lines with the error kind and reason."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import structlog

from connector.sdk import transport as wire
from connector.sdk.errors import UpstreamError
from connector.sdk.http import RequestEvent, RetryPolicy, UpstreamClient

Wire = Callable[[], httpx.AsyncBaseTransport]
WIRES: dict[str, Wire] = {
    "aiohttp": lambda: wire.AiohttpTransport(verify=True, max_connections=4),
    "httpx": lambda: httpx.AsyncHTTPTransport(),
}
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture(params=sorted(WIRES))
def make(request: pytest.FixtureRequest) -> Callable[[str], UpstreamClient]:
    events: list[RequestEvent] = []

    def build(url: str) -> UpstreamClient:
        client = UpstreamClient(
            "up", url, retry=FAST, transport=WIRES[request.param](), hooks=[events.append]
        )
        client.events = events  # type: ignore[attr-defined]
        return client

    return build


async def _server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> AsyncIterator[int]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield int(srv.sockets[0].getsockname()[1])
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.fixture
async def plain_http() -> AsyncIterator[int]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async for port in _server(handler):
        yield port


@pytest.fixture
async def hangs_up() -> AsyncIterator[int]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.close()  # no answer at all

    async for port in _server(handler):
        yield port


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _fail(client: UpstreamClient) -> UpstreamError:
    async with client:
        with pytest.raises(UpstreamError) as info:
            await client.request("GET", "/me")
    return info.value


async def test_refused_names_the_address_and_is_not_retried(make: Callable[[str], UpstreamClient]) -> None:
    port = _closed_port()
    client = make(f"http://127.0.0.1:{port}")
    err = await _fail(client)
    assert str(err) == f"up GET /me: request failed: connection refused to 127.0.0.1:{port}"
    assert [e.retrying for e in client.events] == [False]  # type: ignore[attr-defined]


async def test_tls_to_a_plain_http_port_says_use_http(
    make: Callable[[str], UpstreamClient], plain_http: int
) -> None:
    client = make(f"https://127.0.0.1:{plain_http}")
    err = await _fail(client)
    assert err.detail == (
        f"TLS handshake with a server that speaks plain HTTP: use http:// for 127.0.0.1:{plain_http}"
    )
    assert [e.retrying for e in client.events] == [False]  # type: ignore[attr-defined]


async def test_unknown_host_is_named(make: Callable[[str], UpstreamClient]) -> None:
    err = await _fail(make("https://no-such-host.invalid"))
    assert err.detail == "cannot resolve host no-such-host.invalid: no such host (check the URL)"


async def test_retry_log_lines_carry_the_error_kind_and_reason(
    make: Callable[[str], UpstreamClient], hangs_up: int
) -> None:
    client = make(f"http://127.0.0.1:{hangs_up}")
    with structlog.testing.capture_logs() as logs:
        err = await _fail(client)
    retries = [entry for entry in logs if entry["event"] == "upstream request will be retried"]
    assert len(retries) == 2
    for entry in retries:
        assert "status" not in entry  # never `status: null`
        assert entry["error"] == "protocol"
        assert "RemoteProtocolError" in entry["reason"] or "disconnected" in entry["reason"].lower()
    assert err.detail.endswith("(after 3 attempts)")
