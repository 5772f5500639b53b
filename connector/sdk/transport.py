"""An httpx transport that sends requests with aiohttp's client.

Why: a full sync of a large instance is thousands of page requests of up to ~70 KB each, and in profiles
of `python -m bench.bench_confluence` and `bench.bench_atlassian` httpx/httpcore's connection pool and
HTTP/1.1 machinery were the single largest CPU cost of the connector process (about 1 ms per response, 40 %
of the event loop's busy time, ahead of JSON decoding and protobuf building). aiohttp's C-accelerated
client does the same exchange in about half the CPU, and a busy event loop is what delays every other
in-flight response. UpstreamClient uses it by default (see `wanted()`).

Everything above the wire stays httpx: UpstreamClient (retries, rate limits, hooks, error mapping), auth
flows, cookies and content decoding. Failures are raised as the httpx exceptions the shared client's retry
rules understand (ConnectError = never sent, ReadTimeout, RemoteProtocolError, ...), with a certificate
failure chained to its ssl.SSLCertVerificationError so it is not retried.

Proxies: `for_upstream()` picks the wire for an upstream's base URL with the tenant channel's rules
(connector.sdk.proxy: HTTPS_PROXY / NO_PROXY as Go reads them, loopback never proxied). A proxied upstream
gets httpx's own transport with that proxy given explicitly (HTTP CONNECT for https targets); a direct one
gets this transport. httpx's own reading of the environment is never used: it applies only when a client
has no transport, and would proxy loopback and ignore CIDR entries in NO_PROXY.

Response bodies are read up to `max_body_bytes` (BodyTooLarge past it), so a misbehaving upstream or a
man in the middle cannot make one response take all the memory.

TLS: `verify` is what httpx takes (an ssl.SSLContext, e.g. from connector.sdk.http.make_ssl_context, or a
bool), so a private CA file or insecure mode means the same on both wires. Timeouts come from each request's
httpx timeout extension (connect, read, pool); the pool size is `max_connections`, all kept alive.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from collections.abc import Mapping

import aiohttp
import certifi
import httpx
import yarl

from connector.sdk.proxy import proxy_for_url

# Direct connections use aiohttp's wire; tests set this to False to run the same cases over httpx's.
PREFER_AIOHTTP = True


class BodyTooLarge(Exception):
    """A response body past the client's limit (never retried: the same request gets the same body)."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        super().__init__(f"response body larger than {limit} bytes")
        self.limit = limit
        self.declared = declared


def for_upstream(
    base_url: str,
    *,
    verify: ssl.SSLContext | bool,
    max_connections: int,
    max_body_bytes: int | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[httpx.AsyncBaseTransport, str, str | None]:
    """The transport for an upstream: (transport, wire name, proxy URL or None). See the module docstring.

    Raises connector.sdk.proxy.ProxyConfigError for an unusable proxy variable."""
    proxy = proxy_for_url(base_url, os.environ if env is None else env)
    if proxy is None and PREFER_AIOHTTP:
        transport = AiohttpTransport(
            verify=verify, max_connections=max_connections, max_body_bytes=max_body_bytes
        )
        return transport, "aiohttp", None
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncHTTPTransport(verify=verify, limits=limits, proxy=proxy), "httpx", proxy


# Headers aiohttp would otherwise add on its own: httpx already set what it wants.
_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    t = request.extensions.get("timeout") or {}
    connect, read, pool = t.get("connect"), t.get("read"), t.get("pool")
    return aiohttp.ClientTimeout(
        total=None,
        connect=(connect + pool) if connect is not None and pool is not None else connect,
        sock_connect=connect,
        sock_read=read,
    )


@functools.cache
def _certifi_context() -> ssl.SSLContext:
    # What httpx does for verify=True: certifi's roots (aiohttp's own default is the system store).
    # Loading them takes tens of milliseconds, so once per process, not per client.
    return ssl.create_default_context(cafile=certifi.where())


def _ssl_arg(verify: ssl.SSLContext | bool) -> ssl.SSLContext | bool:
    if isinstance(verify, ssl.SSLContext):
        return verify
    return _certifi_context() if verify else False  # False: no verification, as httpx's verify=False


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx.AsyncBaseTransport over one aiohttp.ClientSession (created in the running event loop)."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 8,
        max_body_bytes: int | None = None,
    ) -> None:
        # Resolved now, not on the first request: building a TLS context is slow enough to skew its timing.
        self._ssl = _ssl_arg(verify)
        self._max_connections = max_connections
        self._max_body = max_body_bytes
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx decodes Content-Encoding, as with its own transport
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx's client keeps the cookies
                skip_auto_headers=_SKIP_AUTO,
                trust_env=False,  # proxies from the environment are httpx's mounts, not ours
            )
            self._loop = loop
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
        try:
            async with self._client().request(
                request.method,
                yarl.URL(str(request.url), encoded=True),  # keep our percent-encoding (qa%2Fautomation)
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
                timeout=_timeout(request),
            ) as response:
                content = await self._read(response)
                return httpx.Response(
                    response.status,
                    headers=list(response.raw_headers),
                    stream=httpx.ByteStream(content),
                    request=request,
                    extensions={
                        "http_version": b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode(),
                    },
                )
        except aiohttp.ClientConnectorCertificateError as exc:
            detail = f"TLS certificate verification failed: {exc.certificate_error}"
            raise httpx.ConnectError(detail, request=request) from exc.certificate_error
        except aiohttp.ClientConnectorSSLError as exc:
            raise httpx.ConnectError(f"TLS handshake failed: {exc.os_error}", request=request) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, DNS: nothing was sent
            # Not str(exc): it always says "ssl:default", which would read as a TLS problem.
            detail = f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
            raise httpx.ConnectError(detail, request=request) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
        except aiohttp.ClientPayloadError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        except aiohttp.ClientOSError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.NetworkError(str(exc) or type(exc).__name__, request=request) from exc

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_body
        declared = response.content_length
        if limit is None or (declared is not None and declared <= limit):
            return await response.read()  # the fast path: aiohttp stops at Content-Length
        if declared is not None:
            raise BodyTooLarge(limit, declared)
        body = bytearray()
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(limit)
        return bytes(body)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
