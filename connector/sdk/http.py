"""The async HTTP client every app connector uses to talk to its upstream API.

It owns the behaviour that must be the same everywhere: retries with backoff that honour the upstream's
rate-limit headers, a concurrency bound and an optional token bucket, errors that carry the HTTP status
and rate-limit information (mapped to gRPC by connector.sdk.errors), and hooks for metrics that only
ever see route templates, never ids or URLs.

Retry rules: statuses in RetryPolicy.retry_statuses and transport errors are retried, except that a
POST/PUT/PATCH/DELETE is retried only when the server certainly did not act on it: 429 and 503 (the
server refused the request) and failures to connect. A 502/504 or a read timeout may come after the
upstream executed the change; repeating it could add a member twice or turn a successful DELETE into
a 404, so the error is returned and the caller (or ConductorOne's task retry) decides. PUT and DELETE are
idempotent in theory, but the upstreams we call do not all implement them that way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json as jsonlib
import math
import random
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote

import certifi
import httpx
import orjson
import structlog

from connector import __version__
from connector.sdk import transport as wire
from connector.sdk.errors import RateLimitInfo, UpstreamError

log = structlog.stdlib.get_logger(__name__)

DEFAULT_USER_AGENT = f"baton-connectors/{__version__}"

# Methods that may change upstream state; see the module docstring for what that means for retries.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Statuses meaning "not processed", retried for every method.
_REFUSED_STATUSES = frozenset({429, 503})

_LIMIT_HEADERS = ("x-ratelimit-limit", "ratelimit-limit", "x-rate-limit-limit")
_REMAINING_HEADERS = ("x-ratelimit-remaining", "ratelimit-remaining", "x-rate-limit-remaining")
_RESET_HEADERS = ("x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset")

# Without a reset time a 429 is reported as "try again in a minute", like the Go SDK's uhttp.
_DEFAULT_RATE_LIMIT_RESET = dt.timedelta(seconds=60)

_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DETAIL_LIMIT = 200


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6  # total tries
    base_delay: float = 0.5  # capped exponential backoff with full jitter
    max_delay: float = 30.0
    max_retry_after: float = 300.0  # never sleep longer than this for one Retry-After/reset
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number `attempt` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(0, max(0.0, ceiling))


@dataclass(frozen=True)
class RequestEvent:
    """What happened in one HTTP attempt; given to hooks (metrics) after every attempt."""

    upstream: str
    method: str
    route: str  # the route template, never the filled URL
    status: int | None  # None: transport failure
    elapsed: float
    attempt: int
    retrying: bool
    rate_limited: bool
    wait: float  # seconds we will sleep before retrying (0 if none)


RequestHook = Callable[[RequestEvent], None]


@dataclass
class UpstreamStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_seconds: float = 0.0


class TokenBucket:
    """Asyncio token bucket: `rate` tokens per second, at most `burst` saved up (default: one second's)."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("token bucket rate must be positive")
        self.rate = float(rate)
        self.burst = max(1, burst if burst is not None else math.ceil(rate))
        self._tokens = float(self.burst)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        # Waiters queue on the lock, so tokens are handed out in arrival order.
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


# --------------------------------------------------------------------------------------------------------
# Rate-limit headers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _parse_http_date(value: str) -> dt.datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def parse_retry_after(value: str, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta seconds or HTTP-date); None if unparseable."""
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        when = _parse_http_date(text)
        if when is None:
            return None
        seconds = (when - (now or _now())).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def parse_reset(value: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """Absolute reset time from an X-RateLimit-Reset-style value.

    Accepts epoch seconds, epoch milliseconds, delta seconds (small numbers), ISO-8601 / RFC 3339 and
    HTTP dates (RFC 1123 / RFC 850). None if unparseable.
    """
    text = value.strip()
    now = now or _now()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if math.isnan(number) or math.isinf(number) or number < 0:
            return None
        try:
            if number >= 1e12:  # epoch milliseconds
                return dt.datetime.fromtimestamp(number / 1000, dt.UTC)
            if number >= 1e9:  # epoch seconds (any date after 2001)
                return dt.datetime.fromtimestamp(number, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return now + dt.timedelta(seconds=number)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return _parse_http_date(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _first_int(headers: httpx.Headers, names: Sequence[str]) -> int | None:
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        # IETF drafts allow "100;w=60"; the number comes first.
        m = re.match(r"\s*(\d+)", raw)
        if m:
            return int(m.group(1))
    return None


def _reset_at(headers: httpx.Headers, now: dt.datetime) -> dt.datetime | None:
    for name in _RESET_HEADERS:
        raw = headers.get(name)
        if raw is not None:
            when = parse_reset(raw, now)
            if when is not None:
                return when
    return None


def rate_limit_info(response: httpx.Response, now: dt.datetime | None = None) -> RateLimitInfo | None:
    """RateLimitInfo for a failed response when it says "come back later", else None.

    A 429 always yields one (remaining 0; reset from the headers, else now + 60 s). Other statuses
    yield one only when the headers say the quota is exhausted or a 503 carries Retry-After: attaching
    it to, say, a 404 would make the caller wait for nothing.
    """
    now = now or _now()
    headers = response.headers
    limit = _first_int(headers, _LIMIT_HEADERS)
    remaining = _first_int(headers, _REMAINING_HEADERS)
    reset_at = _reset_at(headers, now)
    retry_after_raw = headers.get("retry-after")
    retry_after = parse_retry_after(retry_after_raw, now) if retry_after_raw is not None else None
    if retry_after is not None:
        # Retry-After is the more specific instruction when both are present.
        reset_at = now + dt.timedelta(seconds=retry_after)
    status = response.status_code
    if status == 429:
        return RateLimitInfo(
            limit=limit or 0, remaining=0, reset_at=reset_at or now + _DEFAULT_RATE_LIMIT_RESET
        )
    if remaining == 0 and reset_at is not None:
        return RateLimitInfo(limit=limit or 0, remaining=0, reset_at=reset_at)
    if status == 503 and retry_after is not None:
        return RateLimitInfo(limit=limit or 0, remaining=remaining or 0, reset_at=reset_at)
    return None


# --------------------------------------------------------------------------------------------------------
# Error bodies


def _squash(text: str, limit: int = _DETAIL_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(*parts: Any) -> str:
    return ": ".join(str(p) for p in parts if p not in (None, ""))


def _detail_from_json(body: Any) -> str:
    if isinstance(body, str):
        return body
    if isinstance(body, list):
        return "; ".join(filter(None, (_detail_from_json(item) for item in body[:3])))
    if not isinstance(body, dict):
        return ""
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        # JSON:API (Atlassian admin API): [{"code","title","detail"}]
        parts = []
        for item in errors[:3]:
            if isinstance(item, dict):
                parts.append(
                    _join(item.get("code"), item.get("title"), item.get("detail") or item.get("message"))
                )
            else:
                parts.append(str(item))
        return "; ".join(filter(None, parts))
    messages = body.get("errorMessages")
    if isinstance(messages, list) and messages:
        # Jira-style: {"errorMessages": [...], "errors": {"field": "msg"}}
        return "; ".join(map(str, messages[:3]))
    for key in ("message", "errorMessage", "error_description", "detail", "title"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return _join(body.get("code") if isinstance(body.get("code"), str | int) else None, value)
    if isinstance(errors, dict) and errors:
        return "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:3])
    error = body.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        return _detail_from_json(error)
    return ""


def error_detail(response: httpx.Response) -> tuple[str, Any]:
    """A short summary of an error body and the parsed JSON body (None when not JSON)."""
    content = response.content
    if not content:
        return "", None
    try:
        body = jsonlib.loads(content)
    except (ValueError, UnicodeDecodeError):
        return _squash(response.text), None
    detail = _detail_from_json(body)
    return _squash(detail or jsonlib.dumps(body)), body


# --------------------------------------------------------------------------------------------------------
# TLS

_insecure_warned = False


def make_ssl_context(ca_file: str | None = None, insecure_skip_verify: bool = False) -> ssl.SSLContext | bool:
    """TLS settings for an upstream: system roots + certifi + an optional extra PEM CA bundle.

    With `insecure_skip_verify`, verification is off (and a warning is logged once per process).
    Raises ValueError when the CA file cannot be loaded.
    """
    global _insecure_warned
    if insecure_skip_verify:
        if not _insecure_warned:
            _insecure_warned = True
            log.warning(
                "TLS CERTIFICATE VERIFICATION IS DISABLED (insecure skip verify): upstream connections "
                "can be intercepted and credentials stolen; use a CA file instead"
            )
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context()  # the system's trust store (honours SSL_CERT_FILE / SSL_CERT_DIR)
    ctx.load_verify_locations(cafile=certifi.where())
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except FileNotFoundError:
            raise ValueError(f"cannot load CA file {ca_file}: no such file") from None
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load CA file {ca_file}: {exc}") from None
    return ctx


# --------------------------------------------------------------------------------------------------------
# Pacing and body limits

# One response larger than this is an error, not a page: the biggest real pages are a few MB.
DEFAULT_MAX_BODY_BYTES = 64 << 20


class AttemptPacer(Protocol):
    """Spaces an upstream's attempts out (e.g. after a 429), next to the client's own rate limiter.

    The client calls `before_attempt` once it holds a concurrency slot, right before sending, and
    `after_attempt` with each answer (`sent_at` from time.monotonic() when it was sent)."""

    async def before_attempt(self) -> None: ...

    def after_attempt(self, response: httpx.Response, sent_at: float) -> None: ...


class _CappedStream(httpx.AsyncByteStream):
    """A response stream that stops with BodyTooLarge past `limit` bytes (as received, before decoding)."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise wire.BodyTooLarge(self._limit)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n} bytes"


# --------------------------------------------------------------------------------------------------------
# The client


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _never_sent(exc: httpx.TransportError) -> bool:
    """True when the request certainly did not reach the upstream (safe to repeat any method)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


# Failures that say the address is wrong (nothing listens, no such host, TLS to a plain-HTTP port, a
# certificate we do not trust): repeating the request at once cannot help, and at start-up the user
# should hear the reason in a second rather than after minutes of backoff. The sync engine still
# retries them between calls of a running sync, and ConductorOne retries a failed task.
_ADDRESS_KINDS = frozenset({"connection_refused", "dns", "tls_plain_http", "tls_certificate"})
# OpenSSL's words for a first "TLS record" that is really the start of a plain HTTP response.
_PLAIN_HTTP_SSL = ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long", "http request")


def _causes(exc: BaseException) -> list[BaseException]:
    """The cause chain, plus the OS errors aiohttp keeps in `os_error` rather than in the chain."""
    out: list[BaseException] = []
    for e in _chain(exc):
        out.append(e)
        inner = getattr(e, "os_error", None)
        if isinstance(inner, BaseException):
            out.extend(_chain(inner))
    return out


def transport_failure(exc: httpx.TransportError, url: httpx.URL | None = None) -> tuple[str, str]:
    """(kind, message) for a request that got no HTTP answer, in words a user can act on."""
    where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}" if url is not None else ""
    causes = _causes(exc)
    text = " ".join(str(e) for e in causes)
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in causes) or "CERTIFICATE_VERIFY" in text:
        reason = next((e for e in causes if isinstance(e, ssl.SSLCertVerificationError)), exc)
        return (
            "tls_certificate",
            f"TLS certificate of {where} not trusted: {getattr(reason, 'verify_message', '') or reason}",
        )
    if any(isinstance(e, ssl.SSLError) for e in causes) or "SSL" in text:
        if any(marker in text for marker in _PLAIN_HTTP_SSL):
            return (
                "tls_plain_http",
                f"TLS handshake with a server that speaks plain HTTP: use http:// for {where}",
            )
        return "tls", f"TLS handshake with {where} failed: {_squash(str(exc), 160)}"
    if any(isinstance(e, ConnectionRefusedError) for e in causes) or "Connect call failed" in text:
        return "connection_refused", f"connection refused to {where}"
    if any(isinstance(e, socket.gaierror) for e in causes) or "Name or service not known" in text:
        return (
            "dns",
            f"cannot resolve host {url.host if url is not None else ''}: no such host (check the URL)",
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout", f"connecting to {where} timed out"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", _transport_detail(exc)
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol", _transport_detail(exc)
    return "transport", _transport_detail(exc)


def _transport_retryable(exc: httpx.TransportError) -> bool:
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return False  # our request is wrong; repeating it cannot help
    if isinstance(exc, httpx.ProxyError) and "407" in str(exc):
        return False  # the proxy wants other credentials (HTTPS_PROXY's user:password): a setting to fix
    return transport_failure(exc)[0] not in _ADDRESS_KINDS


def _transport_detail(exc: httpx.TransportError) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class UpstreamClient:
    """An httpx.AsyncClient for one upstream API, with retries, limits, hooks and typed errors."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        timeout: float = 30.0,
        concurrency: int = 8,
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        retry: RetryPolicy = RetryPolicy(),
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        hooks: Sequence[RequestHook] = (),
        user_agent: str = DEFAULT_USER_AGENT,
        pacer: AttemptPacer | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if retry.max_attempts < 1:
            raise ValueError("retry.max_attempts must be at least 1")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._base = httpx.URL(self.base_url + "/")
        self.retry = retry
        self.stats = UpstreamStats()
        self._hooks: list[RequestHook] = list(hooks)
        self._semaphore = asyncio.Semaphore(concurrency)
        self._bucket = TokenBucket(rate_limit, rate_burst) if rate_limit else None
        self._pacer = pacer
        self.max_body_bytes = max_body_bytes
        # Which wire carries the requests: "aiohttp" (direct), "httpx" (through the proxy the environment
        # names for this upstream, see connector.sdk.transport) or the given transport's class name.
        self.proxy: str | None = None
        if transport is None:
            transport, self.wire, self.proxy = wire.for_upstream(
                self.base_url, verify=verify, max_connections=concurrency, max_body_bytes=max_body_bytes
            )
        else:
            self.wire = (
                "aiohttp" if isinstance(transport, wire.AiohttpTransport) else type(transport).__name__
            )
        all_headers = {"User-Agent": user_agent, "Accept": "application/json"}
        all_headers.update(headers or {})
        self._client = httpx.AsyncClient(
            headers=all_headers,
            auth=auth,
            timeout=httpx.Timeout(timeout),
            verify=verify,
            transport=transport,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=False,
        )

    def add_hook(self, hook: RequestHook) -> None:
        self._hooks.append(hook)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- URLs

    def _url(
        self,
        method: str,
        route: str,
        path_params: Mapping[str, str] | None,
        url: str | None,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
    ) -> httpx.URL:
        if url is not None:
            target = httpx.URL(url)
            if target.is_absolute_url:
                origin = (self._base.scheme, self._base.host, self._base.port)
                if (target.scheme, target.host, target.port) != origin:
                    # Links come from response bodies: following one elsewhere would hand our credentials
                    # to whoever wrote it.
                    detail = f"refusing to follow a link to another origin ({target.host})"
                    raise UpstreamError(self.name, method, route, None, detail)
            else:
                target = httpx.URL(self.base_url + "/" + url.lstrip("/"))
        else:
            values = path_params or {}

            def fill(m: re.Match[str]) -> str:
                key = m.group(1)
                if key not in values:
                    raise ValueError(f"route {route!r} needs path parameter {key!r}")
                return quote_segment(str(values[key]))

            target = httpx.URL(self.base_url + "/" + _PATH_PARAM.sub(fill, route).lstrip("/"))
        if params:
            # httpx replaces a URL's query when given params; merging keeps a next link's own cursor.
            target = target.copy_merge_params(httpx.QueryParams(_query_items(params)))
        return target

    # -- requests

    async def request(
        self,
        method: str,
        route: str,
        *,
        path_params: Mapping[str, str] | None = None,
        url: str | None = None,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Collection[int] = (200,),
    ) -> httpx.Response:
        """Send one logical request (retrying as the policy allows); raise UpstreamError if the final
        status is not in `expect` or the upstream could not be reached.

        `route` is a template relative to base_url (`/group/{group}/member`); `path_params` fill it,
        percent-encoded. `url` (absolute on the same origin, or relative to base_url) replaces the URL,
        for following next links; `route` still labels the request in hooks, logs and errors.
        """
        method = method.upper()
        target = self._url(method, route, path_params, url, params)
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            failure: httpx.TransportError | None = None
            # The semaphore covers only the attempt itself: sleeping for a backoff must not block others.
            too_large: wire.BodyTooLarge | None = None
            async with self._semaphore:
                if self._bucket is not None:
                    await self._bucket.acquire()
                if self._pacer is not None:
                    await self._pacer.before_attempt()
                started = time.monotonic()
                try:
                    response = await self._send(method, target, json, data, headers)
                except httpx.TransportError as exc:
                    failure = exc
                except wire.BodyTooLarge as exc:
                    too_large = exc
                elapsed = time.monotonic() - started
                if self._pacer is not None and response is not None:
                    self._pacer.after_attempt(response, started)
            if too_large is not None:
                raise self._too_large(method, route, attempt, too_large, elapsed)
            # Let the request waiting for this slot go out before this answer is processed.
            await asyncio.sleep(0)

            status = response.status_code if response is not None else None
            ok = status is not None and status in expect
            wait = 0.0
            retrying = (
                not ok and attempt < policy.max_attempts and self._should_retry(method, response, failure)
            )
            if retrying:
                wait = self._wait(response, attempt) if response is not None else policy.backoff(attempt)
            failed = transport_failure(failure, target) if failure is not None else None
            self._record(
                RequestEvent(
                    upstream=self.name,
                    method=method,
                    route=route,
                    status=status,
                    elapsed=elapsed,
                    attempt=attempt,
                    retrying=retrying,
                    rate_limited=status == 429,
                    wait=wait,
                ),
                failed,
            )
            if ok:
                assert response is not None
                return response
            if retrying:
                await asyncio.sleep(wait)
                continue
            raise self._error(method, route, attempt, response, failed)

    async def _send(
        self,
        method: str,
        target: httpx.URL,
        json: Any,
        data: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        """One attempt, its body read within max_body_bytes (as received, and again once decoded)."""
        request = self._client.build_request(method, target, json=json, data=data, headers=headers)
        response = await self._client.send(request, stream=True)
        limit = self.max_body_bytes
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise wire.BodyTooLarge(limit, int(declared))
            # A body already in memory (aiohttp's wire enforces the limit as it reads) needs no counting.
            stream = response.stream
            if isinstance(stream, httpx.AsyncByteStream) and not isinstance(stream, httpx.ByteStream):
                response.stream = _CappedStream(stream, limit)
            await response.aread()
        finally:
            await response.aclose()
        if len(response.content) > limit:  # a small compressed body that decodes to a huge one
            raise wire.BodyTooLarge(limit)
        return response

    def _too_large(
        self, method: str, route: str, attempt: int, exc: wire.BodyTooLarge, elapsed: float
    ) -> UpstreamError:
        self._record(
            RequestEvent(
                upstream=self.name,
                method=method,
                route=route,
                status=None,
                elapsed=elapsed,
                attempt=attempt,
                retrying=False,
                rate_limited=False,
                wait=0.0,
            ),
            None,
        )
        size = f" ({_mib(exc.declared)})" if exc.declared is not None else ""
        detail = f"response body{size} is larger than the {_mib(exc.limit)} limit for one response"
        return UpstreamError(self.name, method, route, None, detail)

    async def request_json(self, method: str, route: str, **kw: Any) -> Any:
        """`request` and decode the JSON body (None for an empty body)."""
        response = await self.request(method, route, **kw)
        return self.decode_json(response, method.upper(), route)

    async def get_json(self, route: str, **kw: Any) -> Any:
        return await self.request_json("GET", route, **kw)

    def decode_json(self, response: httpx.Response, method: str, route: str) -> Any:
        if not response.content:
            return None
        try:
            # orjson: a third of the CPU of `json` on large pages (it runs on the event loop, where every
            # millisecond delays the answers to the other requests in flight). It reads UTF-8 only; the
            # standard decoder still gets a body with a BOM or in UTF-16/32, as RFC 8259 readers may.
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            pass
        try:
            return jsonlib.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            ctype = response.headers.get("content-type", "no content type")
            snippet = _squash(response.text, 120)
            detail = f"malformed JSON response ({ctype}): {snippet}"
            raise UpstreamError(self.name, method, route, response.status_code, detail) from None

    # -- policy

    def _should_retry(
        self, method: str, response: httpx.Response | None, failure: httpx.TransportError | None
    ) -> bool:
        unsafe = method in UNSAFE_METHODS
        if response is not None:
            status = response.status_code
            if status not in self.retry.retry_statuses:
                return False
            return not unsafe or status in _REFUSED_STATUSES
        assert failure is not None
        if not _transport_retryable(failure):
            return False
        return not unsafe or _never_sent(failure)

    def _wait(self, response: httpx.Response, attempt: int) -> float:
        """Seconds before the next attempt: what the upstream asked for, else backoff."""
        policy = self.retry
        now = _now()
        retry_after_raw = response.headers.get("retry-after")
        if retry_after_raw is not None:
            seconds = parse_retry_after(retry_after_raw, now)
            if seconds is not None:
                return min(seconds, policy.max_retry_after)
        remaining = _first_int(response.headers, _REMAINING_HEADERS)
        if response.status_code == 429 or remaining == 0:
            reset_at = _reset_at(response.headers, now)
            if reset_at is not None:
                seconds = (reset_at - now).total_seconds()
                # A reset in the past (clock skew) is no instruction at all: fall back to backoff.
                if seconds > 0:
                    return min(seconds, policy.max_retry_after)
        return min(policy.backoff(attempt), policy.max_retry_after)

    def _record(self, event: RequestEvent, failure: tuple[str, str] | None) -> None:
        self.stats.requests += 1
        if event.retrying:
            self.stats.retries += 1
            self.stats.waited_seconds += event.wait
        if event.rate_limited:
            self.stats.rate_limited += 1
        # No URL (query values may be tokens or ids) and no headers: method + route template only.
        log.debug(
            "upstream request",
            upstream=event.upstream,
            method=event.method,
            route=event.route,
            status=event.status,
            elapsed_ms=round(event.elapsed * 1000, 1),
            attempt=event.attempt,
            error=failure[0] if failure is not None else None,
        )
        if event.retrying:
            # Either the HTTP status or, when there was no answer, what went wrong (never `status: null`).
            outcome: dict[str, Any] = (
                {"error": failure[0], "reason": failure[1]}
                if failure is not None
                else {"status": event.status}
            )
            log.info(
                "upstream request will be retried",
                upstream=event.upstream,
                method=event.method,
                route=event.route,
                attempt=event.attempt,
                wait_s=round(event.wait, 3),
                **outcome,
            )
        for hook in self._hooks:
            try:
                hook(event)
            except Exception:
                # A broken metrics hook must not fail the request it observes.
                log.exception("request hook failed", upstream=event.upstream, route=event.route)

    def _error(
        self,
        method: str,
        route: str,
        attempts: int,
        response: httpx.Response | None,
        failure: tuple[str, str] | None,
    ) -> UpstreamError:
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        if response is None:
            assert failure is not None
            return UpstreamError(self.name, method, route, None, failure[1] + suffix)
        detail, body = error_detail(response)
        return UpstreamError(
            self.name,
            method,
            route,
            response.status_code,
            detail + suffix if detail else suffix.strip(),
            body=body,
            rate_limit=rate_limit_info(response),
        )


def _query_items(params: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    items = params.items() if isinstance(params, Mapping) else params
    out: list[tuple[str, Any]] = []
    for key, value in items:
        if isinstance(value, list | tuple):
            out.extend((key, v) for v in value)  # repeated keys: accountIds=a&accountIds=b
        else:
            out.append((key, value))
    return out


def quote_segment(value: str) -> str:
    """Percent-encode one path segment: spaces, slashes and non-ASCII all escaped."""
    return quote(value, safe="")
