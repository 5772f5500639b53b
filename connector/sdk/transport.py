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

httpx ignores HTTP(S)_PROXY / ALL_PROXY / NO_PROXY once it is given a transport, so where any proxy is
configured in the environment the client keeps httpx's own transport (`wanted()`): proxy behaviour is
exactly httpx's, only direct connections get the faster wire.

TLS: `verify` is what httpx takes (an ssl.SSLContext, e.g. from connector.sdk.http.make_ssl_context, or a
bool), so a private CA file or insecure mode means the same on both wires. Timeouts come from each request's
httpx timeout extension (connect, read, pool); the pool size is `max_connections`, all kept alive.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.request

import aiohttp
import certifi
import httpx
import yarl


def wanted() -> bool:
    """Whether to use this transport: not when the environment configures a proxy (see above)."""
    proxies = urllib.request.getproxies()
    return not any(proxies.get(scheme) for scheme in ("http", "https", "all"))


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

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_connections: int = 8) -> None:
        # Resolved now, not on the first request: building a TLS context is slow enough to skew its timing.
        self._ssl = _ssl_arg(verify)
        self._max_connections = max_connections
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
                content = await response.read()
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

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
