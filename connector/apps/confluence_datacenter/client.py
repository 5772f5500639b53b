"""Confluence Data Center API client: REST + legacy JSON-RPC, version detection and paging.

Everything version-dependent is decided here from one `Capabilities` value, detected once per client:
REST where the server has it, the JSON-RPC remote API where it does not (space permissions before 9.1,
listing users and membership writes before 8.4).

Paging follows `_links.next` and never treats a page shorter than the requested limit as the last one:
servers cap `limit` per endpoint. To keep many requests in flight, a listing call fetches one window of
pages at once: the offsets after a known page are computed from the server's own (capped) limit, fetched
concurrently, and kept only while each page starts exactly where the previous one ended. Any page that
does not line up (a server that returned fewer items than its limit) ends the window at that page's real
`next` link, so speculation can waste a request but never skip or duplicate an item.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from connector.ops.logging import get_logger
from connector.ops.secrets import BasicAuth, BearerAuth, SecretSource
from connector.sdk.errors import UpstreamError, invalid_argument
from connector.sdk.http import RetryPolicy, UpstreamClient, error_detail, rate_limit_info

log = get_logger(__name__)

UPSTREAM = "confluence"
RPC_BASE = "/rpc/json-rpc/confluenceservice-v2"

Version = tuple[int, int, int]
Json = dict[str, Any]


@dataclass(frozen=True)
class Capabilities:
    """What the connected server offers, from its version (spec B.9)."""

    version: Version | None
    source: str  # how the version was found: server-information, json-rpc, probe
    rpc: bool  # the JSON-RPC remote API answered

    def at_least(self, major: int, minor: int) -> bool:
        return self.version is not None and self.version[:2] >= (major, minor)

    @property
    def list_users_rest(self) -> bool:
        return self.at_least(8, 4)

    @property
    def active_users_rest(self) -> bool:
        return self.at_least(9, 0)

    @property
    def create_user_rest(self) -> bool:
        return self.at_least(8, 4)

    @property
    def membership_rest(self) -> bool:
        # Documented from the 9.0 docs; the public connector uses it on 8.6 and the user-management REST
        # work landed by 8.4. Older servers get JSON-RPC addUserToGroup/removeUserFromGroup.
        return self.at_least(8, 4)

    @property
    def space_permissions_rest(self) -> bool:
        return self.at_least(9, 1)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version)) if self.version else "unknown"


@dataclass
class Page:
    results: list[Json]
    start: int
    size: int
    total: int | None
    next: str | None  # relative link, context path removed


@dataclass(frozen=True)
class Cursor:
    """Where a listing continues: the server's own next link (and the total, when the server said)."""

    next: str
    total: int | None = None
    window: int = 2  # pages to fetch next time; grows while the listing keeps going (slow start)

    def encode(self) -> str:
        return json.dumps({"n": self.next, "t": self.total, "w": self.window}, separators=(",", ":"))

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = json.loads(token)
            nxt = raw["n"]
            total = raw.get("t")
            window = raw.get("w", 2)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError("malformed page token") from None
        if not isinstance(nxt, str) or not nxt.startswith("/") or nxt.startswith("//"):
            raise ValueError("malformed page token")
        return cls(nxt, total if isinstance(total, int) else None, window if isinstance(window, int) else 2)


class Pacer:
    """Requests at `rate` per second, one at a time, after an initial allowance of `initial` requests."""

    def __init__(self, rate: float, initial: int = 0) -> None:
        self.rate = rate
        self._tokens = float(max(1, initial))
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                if self._tokens < 1.0:
                    # Refill only up to one token: no bursts once the initial allowance is spent.
                    self._tokens = min(1.0, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)


def answered_as_anonymous(response: httpx.Response) -> bool:
    """Confluence ran the request as the anonymous user (`X-AUSERNAME: anonymous`).

    That is how it treats an unknown, expired or revoked personal access token: no 401, just a 200 with
    whatever anonymous users may see (e.g. only the spaces open to anonymous readers).
    """
    value: str = response.headers.get("x-ausername", "")
    return value.strip().lower() == "anonymous"


class AnonymousAnswer(UpstreamError):
    """A token-authenticated request that Confluence answered as the anonymous user."""


class PatAuth(BearerAuth):
    """`Authorization: Bearer <PAT>` from a SecretSource, re-reading a rotated token file when the server
    answers 401 *or* as the anonymous user (what Confluence does with a token it no longer knows), so a
    rotation is picked up by the very next request instead of after the file-check interval."""

    def __init__(self, token: SecretSource) -> None:
        super().__init__(token)
        self._source = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self._source.get()
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        # The remote API (/rpc/) may refuse tokens by design (answering as anonymous): not a rotation.
        refused = response.status_code == 401 or (
            answered_as_anonymous(response) and "/rpc/json-rpc/" not in request.url.path
        )
        if refused:
            retry = _rotated(self._source, sent)
            if retry is not None:
                request.headers["Authorization"] = f"Bearer {retry}"
                yield request


class PasswordAuth(BasicAuth):
    """HTTP Basic whose password follows its file: on a 401 the file is re-read and the request retried."""

    def __init__(self, username: str, password: SecretSource) -> None:
        super().__init__(username, password)
        self._user = username
        self._source = password

    def _header(self, password: str) -> str:
        return "Basic " + base64.b64encode(f"{self._user}:{password}".encode()).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self._source.get()
        request.headers["Authorization"] = self._header(sent)
        response = yield request
        if response.status_code == 401:
            retry = _rotated(self._source, sent)
            if retry is not None:
                request.headers["Authorization"] = self._header(retry)
                yield request


def _rotated(source: SecretSource, sent: str) -> str | None:
    """The secret to retry with after `sent` was refused, or None when it has not changed.

    Requests in flight during a rotation all get refused; the first one re-reads the file, the others
    find the value already changed and retry with it.
    """
    current = source.get()
    if current == sent and source.force_reload("Confluence did not accept the credentials"):
        current = source.get()
    return current if current != sent else None


class RpcError(Exception):
    """A JSON-RPC call answered with an error object (e.g. NotPermittedException)."""

    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"JSON-RPC {method}: {message}")
        self.method = method
        self.message = message


class RpcUnavailable(Exception):
    """The remote API is switched off (404/405 on /rpc/) or refuses our credentials."""


def _split_link(link: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(link)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


class ConfluenceClient:
    """One client per connector; safe to share between syncers (all state is per-process caches)."""

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | httpx.Auth | None = None,
        username: str | None = None,
        password: str | httpx.Auth | None = None,
        verify: ssl.SSLContext | bool = True,
        concurrency: int = 8,
        rate_limit: float | None = None,
        timeout: float = 30.0,
        page_limit: int = 1000,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.context = urlsplit(self.base_url).path.rstrip("/")
        headers: dict[str, str] = {}
        auth: httpx.Auth | None = None
        # A str is fixed; an httpx.Auth (ops.secrets) follows its mounted file across rotations.
        if access_token:
            # The token wins when both are configured, as in the Go connector.
            if isinstance(access_token, str):
                headers["Authorization"] = f"Bearer {access_token}"
            else:
                auth = access_token
            self.auth_mode = "token"
        elif username:
            auth = password if isinstance(password, httpx.Auth) else httpx.BasicAuth(username, password or "")
            self.auth_mode = "basic"
        else:
            self.auth_mode = "none"
        self.username = username
        self.concurrency = concurrency
        self.page_limit = page_limit
        self.http = UpstreamClient(
            UPSTREAM,
            self.base_url,
            headers=headers,
            auth=auth,
            timeout=timeout,
            concurrency=concurrency,
            rate_limit=rate_limit,
            retry=retry or RetryPolicy(),
            verify=verify,
            # None: the shared client's default wire (aiohttp unless a proxy is configured).
            transport=transport,
        )
        # Paced from the server's X-RateLimit-* headers unless the operator fixed a rate.
        self._auto_pace = rate_limit is None
        self._pacer: Pacer | None = None
        self._caps: Capabilities | None = None
        self._caps_lock = asyncio.Lock()
        self._rpc_ok: bool | None = None
        self._ahead: dict[tuple[str, str, str], asyncio.Task[tuple[list[Json], str]]] = {}

    async def aclose(self) -> None:
        self.cancel_read_ahead()
        await self.http.aclose()

    # --- requests ---------------------------------------------------------------------------------

    def _observe(self, response: httpx.Response) -> None:
        """Adopt the server's token-bucket rate (X-RateLimit-FillRate per Interval) as our pace."""
        if not self._auto_pace:
            return
        fill = response.headers.get("x-ratelimit-fillrate")
        interval = response.headers.get("x-ratelimit-interval-seconds")
        if fill is None:
            return
        try:
            rate = float(fill) / float(interval or "1")
        except ValueError:
            return
        if rate <= 0:
            return
        if self._pacer is None or abs(self._pacer.rate - rate) > 1e-9:
            log.info("confluence_rate_limit_detected", requests_per_second=round(rate, 3))
            try:
                remaining = int(response.headers.get("x-ratelimit-remaining", "0"))
            except ValueError:
                remaining = 0
            # Spend what the bucket holds now (less what may already be in flight), then leave evenly
            # spaced so the server's bucket never runs dry and nobody waits a whole Retry-After second.
            self._pacer = Pacer(rate, initial=max(0, remaining - self.concurrency))

    async def request(
        self,
        method: str,
        route: str,
        *,
        path_params: Mapping[str, str] | None = None,
        url: str | None = None,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        expect: Sequence[int] = (200,),
    ) -> httpx.Response:
        if self._pacer is not None:
            await self._pacer.acquire()
        # 401 and 403 are taken here to tell "the token was not accepted" (Confluence answers such requests
        # as the anonymous user) from real refusals; neither is ever retried.
        response = await self.http.request(
            method,
            route,
            path_params=path_params,
            url=url,
            params=params,
            json=json_body,
            headers={"Content-Type": "application/json"} if method != "GET" else None,
            expect=(*expect, 401, 403),
        )
        self._observe(response)
        anonymous = (
            self.auth_mode == "token" and not route.startswith(RPC_BASE) and answered_as_anonymous(response)
        )
        if anonymous:
            # Never read what anonymous users may see as if it were the whole instance.
            raise AnonymousAnswer(
                UPSTREAM,
                method,
                route,
                401,
                "Confluence answered as the anonymous user: the personal access token (--access-token / "
                "BATON_ACCESS_TOKEN) is invalid, expired or revoked",
            )
        if response.status_code not in expect:
            detail, body = error_detail(response)
            raise UpstreamError(
                UPSTREAM,
                method,
                route,
                response.status_code,
                detail,
                body=body,
                rate_limit=rate_limit_info(response),
            )
        return response

    async def get_json(
        self,
        route: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        url: str | None = None,
    ) -> Any:
        response = await self.request("GET", route, path_params=path_params, params=params, url=url)
        return self.http.decode_json(response, "GET", route)

    # --- JSON-RPC ---------------------------------------------------------------------------------

    async def rpc(self, method: str, *params: Any) -> Any:
        """Light-mode JSON-RPC: POST /rpc/json-rpc/confluenceservice-v2/<method> with the params array.

        Raises RpcUnavailable when the remote API is off, RpcError for an error object.
        """
        route = f"{RPC_BASE}/{method}"
        try:
            response = await self.request("POST", route, json_body=list(params), expect=(200,))
        except UpstreamError as err:
            if err.status in (404, 405, 415, 501):
                self._rpc_ok = False
                raise RpcUnavailable(
                    f"the JSON-RPC remote API is not available (HTTP {err.status} on {RPC_BASE}); enable "
                    "'Remote API (XML-RPC & SOAP)' in Confluence administration > Further configuration"
                ) from err
            raise
        body = self.http.decode_json(response, "POST", route)
        if isinstance(body, dict) and "error" in body and "result" not in body:
            error = body["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise RpcError(method, str(message or "error"))
        self._rpc_ok = True
        return body

    # --- version ----------------------------------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        if self._caps is not None:
            return self._caps
        async with self._caps_lock:
            if self._caps is None:
                self._caps = await self._detect()
                log.info(
                    "confluence_version_detected",
                    version=self._caps.version_text,
                    source=self._caps.source,
                    json_rpc=self._caps.rpc,
                )
            return self._caps

    async def _detect(self) -> Capabilities:
        # REST server-information (9.x) and JSON-RPC getServerInfo (every version while the remote API is
        # on) are asked at once: one round trip instead of two on every version.
        rest, rpc = await asyncio.gather(self._rest_version(), self._rpc_version())
        rpc_ok, rpc_version = rpc
        if rest is not None:
            return Capabilities(rest, "server-information", rpc_ok)
        if rpc_version is not None:
            return Capabilities(rpc_version, "json-rpc", True)
        # Neither answered: probe the endpoint that matters most, /user/list exists from 8.4.
        try:
            await self.get_json("/rest/api/user/list", params={"limit": 1})
            return Capabilities((8, 4, 0), "probe", rpc_ok)
        except UpstreamError as err:
            if err.status == 404:
                return Capabilities((7, 0, 0), "probe", rpc_ok)
            raise

    async def _rest_version(self) -> Version | None:
        try:
            info = await self.get_json("/rest/api/server-information")
        except UpstreamError as err:
            if err.status in (403, 404, 405) and not isinstance(err, AnonymousAnswer):
                return None
            raise
        return _parse_version(str(info.get("version", ""))) if isinstance(info, dict) else None

    async def _rpc_version(self) -> tuple[bool, Version | None]:
        """(the remote API answered, the version it reported)."""
        try:
            info = await self.rpc("getServerInfo")
        except (RpcUnavailable, RpcError):
            return False, None
        except UpstreamError as err:
            if err.status in (401, 403):
                return False, None
            raise
        if not isinstance(info, dict) or "majorVersion" not in info:
            return True, None
        try:
            return True, (
                int(info.get("majorVersion", 0)),
                int(info.get("minorVersion", 0)),
                int(info.get("patchLevel", 0)),
            )
        except (TypeError, ValueError):
            return True, None

    # --- paging -----------------------------------------------------------------------------------

    def _page(self, body: Any, route: str) -> Page:
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise UpstreamError(UPSTREAM, "GET", route, 200, "unexpected response: not a paged result")
        results = [r for r in body["results"] if isinstance(r, dict)]
        links = body.get("_links") if isinstance(body.get("_links"), dict) else {}
        nxt = links.get("next") if isinstance(links, dict) else None
        if isinstance(nxt, str) and nxt:
            nxt = self._relative(nxt, links if isinstance(links, dict) else {})
        else:
            nxt = None
        total = body.get("totalCount")
        return Page(
            results=results,
            start=int(body.get("start", 0) or 0),
            size=int(body.get("size", len(results)) or 0),
            total=total if isinstance(total, int) else None,
            next=nxt,
        )

    def _relative(self, link: str, links: Mapping[str, Any]) -> str:
        """A next link relative to our base URL (which already has the context path)."""
        if "://" in link:
            base = str(links.get("base") or "")
            if base and link.startswith(base):
                link = link[len(base) :]
            else:
                link = urlsplit(link).path + ("?" + urlsplit(link).query if urlsplit(link).query else "")
                if self.context and link.startswith(self.context + "/"):
                    link = link[len(self.context) :]
        context = str(links.get("context") or "")
        # Servers give next relative to base (which includes the context); tolerate one that repeats it.
        for ctx in {context.rstrip("/"), self.context}:
            if ctx and link.startswith(ctx + "/rest/"):
                link = link[len(ctx) :]
        return link if link.startswith("/") else "/" + link

    async def fetch_page(
        self,
        route: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        url: str | None = None,
    ) -> Page:
        body = await self.get_json(route, path_params=path_params, params=params, url=url)
        return self._page(body, route)

    async def list_window(
        self,
        route: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        token: str = "",
        window: int | None = None,
    ) -> tuple[list[Json], str]:
        """Items from the start (empty token) or a cursor, up to one window of pages; and the next token
        ("" when the listing is complete).

        Without a total (before 9.x) the number of pages fetched at once starts at 2 and doubles while the
        listing goes on, up to the concurrency, so a two-page listing wastes at most one request; with a
        total the window is exactly the pages that remain, up to `window` (default 4 x concurrency).

        The next window is requested as soon as this one is known (read-ahead), so its round trips overlap
        with the caller turning this window into resources; it is dropped by `cancel_read_ahead()`.
        """
        key = (route, json.dumps(path_params or {}, sort_keys=True), token)
        ahead = self._ahead.pop(key, None) if token else None
        if ahead is not None:
            items, next_token = await ahead
        else:
            items, next_token = await self._list_window_now(route, path_params, params, token, window)
        if next_token and len(self._ahead) < self.concurrency:
            task = asyncio.ensure_future(
                self._list_window_now(route, path_params, params, next_token, window)
            )
            # Retrieved here so an abandoned read-ahead never logs "exception was never retrieved".
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._ahead[(route, key[1], next_token)] = task
        return items, next_token

    async def first_page(
        self, route: str, *, path_params: Mapping[str, str] | None = None
    ) -> tuple[list[Json], str]:
        """The first page of a listing alone (one request) and the token `list_window` continues from
        ("" when the server says there is no more)."""
        first = await self.fetch_page(route, path_params=path_params, params={"limit": self.page_limit})
        if first.next is None:
            return first.results, ""
        return first.results, Cursor(first.next, first.total, 2).encode()

    def cancel_read_ahead(self) -> None:
        for task in self._ahead.values():
            task.cancel()
        self._ahead.clear()

    async def _list_window_now(
        self,
        route: str,
        path_params: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        token: str,
        window: int | None,
    ) -> tuple[list[Json], str]:
        # Up to four rounds of requests per call: the client's semaphore bounds what is in flight, and a
        # window larger than the concurrency keeps every slot busy while the caller digests a window.
        max_window = max(1, window if window is not None else 4 * self.concurrency)
        items: list[Json] = []
        if not token:
            query = {"limit": self.page_limit, **(params or {})}
            first = await self.fetch_page(route, path_params=path_params, params=query)
            items.extend(first.results)
            if first.next is None:
                return items, ""
            cursor = Cursor(first.next, first.total, 2)
        else:
            try:
                cursor = Cursor.decode(token)
            except ValueError:
                raise invalid_argument(f"invalid page token for {route}") from None
        if cursor.total is not None:
            size = max_window
        else:
            # Guessing past an unknown end costs up to window - 1 wasted requests: stay at one round.
            size = min(max_window, self.concurrency, max(1, cursor.window))
        more, nxt = await self._window(route, cursor, size)
        items.extend(more)
        if nxt is None:
            return items, ""
        return items, Cursor(nxt.next, nxt.total, min(max_window, size * 2)).encode()

    async def _window(self, route: str, cursor: Cursor, window: int) -> tuple[list[Json], Cursor | None]:
        path, query = _split_link(cursor.next)
        try:
            start = int(query["start"])
            limit = int(query["limit"])
        except (KeyError, ValueError):
            start = limit = -1
        if start < 0 or limit <= 0 or window <= 1:
            page = await self.fetch_page(route, url=cursor.next)
            return page.results, Cursor(page.next, page.total or cursor.total) if page.next else None
        offsets = [start + k * limit for k in range(window)]
        if cursor.total is not None:
            offsets = [o for o in offsets if o < cursor.total] or [start]

        def link(offset: int) -> str:
            q = dict(query)
            q["start"] = str(offset)
            return f"{path}?{urlencode(q)}"

        pages = await asyncio.gather(*(self.fetch_page(route, url=link(o)) for o in offsets))
        items: list[Json] = []
        expected = start
        nxt: Cursor | None = Cursor(link(start), cursor.total)
        for offset, page in zip(offsets, pages, strict=True):
            if offset != expected:
                break  # an earlier page came back short: what we guessed past it is not trustworthy
            items.extend(page.results)
            if page.next is None:
                return items, None
            nxt = Cursor(page.next, page.total if page.total is not None else cursor.total)
            if page.size <= 0:
                break  # a server that says "more" with an empty page: follow its link, one page at a time
            expected = offset + page.size
        return items, nxt

    async def list_all(
        self,
        route: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[Json]:
        out: list[Json] = []
        token = ""
        while True:
            items, token = await self.list_window(route, path_params=path_params, params=params, token=token)
            out.extend(items)
            if not token:
                return out

    # --- reads ------------------------------------------------------------------------------------

    async def current_user(self) -> Any:
        return await self.get_json("/rest/api/user/current")

    async def user_by_username(self, username: str, *, expand_status: bool = False) -> Json | None:
        return await self._user({"username": username}, expand_status)

    async def user_by_key(self, key: str, *, expand_status: bool = False) -> Json | None:
        return await self._user({"key": key}, expand_status)

    async def _user(self, params: dict[str, Any], expand_status: bool) -> Json | None:
        if expand_status:
            params["expand"] = "status"
        try:
            body = await self.get_json("/rest/api/user", params=params)
        except UpstreamError as err:
            if err.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def groups_of(self, username: str) -> list[str]:
        items = await self.list_all("/rest/api/user/memberof", params={"username": username})
        return [str(g["name"]) for g in items if isinstance(g.get("name"), str)]

    async def group(self, name: str) -> Json | None:
        try:
            body = await self.get_json("/rest/api/group/{group}", path_params={"group": name})
        except UpstreamError as err:
            if err.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def space(self, key: str) -> Json | None:
        try:
            body = await self.get_json("/rest/api/space/{space}", path_params={"space": key})
        except UpstreamError as err:
            if err.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def space_permissions_rest(self, key: str) -> list[Json]:
        body = await self.get_json("/rest/api/space/{space}/permissions", path_params={"space": key})
        if not isinstance(body, list):
            raise UpstreamError(UPSTREAM, "GET", "/rest/api/space/{space}/permissions", 200, "not a list")
        return [p for p in body if isinstance(p, dict)]

    async def space_permission_sets(self, key: str) -> list[Json]:
        body = await self.rpc("getSpacePermissionSets", key)
        if not isinstance(body, list):
            raise RpcError("getSpacePermissionSets", "unexpected result (not a list)")
        return [s for s in body if isinstance(s, dict)]

    # --- writes -----------------------------------------------------------------------------------

    async def add_member(self, username: str, group: str) -> None:
        caps = await self.capabilities()
        if caps.membership_rest:
            await self.request(
                "PUT",
                "/rest/api/user/{user}/group/{group}",
                path_params={"user": username, "group": group},
                expect=(200, 201, 204),
            )
        else:
            await self._rpc_true("addUserToGroup", username, group)

    async def remove_member(self, username: str, group: str) -> None:
        caps = await self.capabilities()
        if caps.membership_rest:
            await self.request(
                "DELETE",
                "/rest/api/user/{user}/group/{group}",
                path_params={"user": username, "group": group},
                expect=(200, 204),
            )
        else:
            await self._rpc_true("removeUserFromGroup", username, group)

    async def _rpc_true(self, method: str, *params: Any) -> None:
        result = await self.rpc(method, *params)
        if result is not True:
            raise RpcError(method, f"the server answered {result!r} instead of true")

    async def grant_space_rest(
        self, key: str, kind: str, subject: str | None, operation: tuple[str, str]
    ) -> None:
        await self._space_rest(key, kind, subject, operation, "grant")

    async def revoke_space_rest(
        self, key: str, kind: str, subject: str | None, operation: tuple[str, str]
    ) -> None:
        await self._space_rest(key, kind, subject, operation, "revoke")

    async def _space_rest(
        self, key: str, kind: str, subject: str | None, operation: tuple[str, str], verb: str
    ) -> None:
        body = [{"targetType": operation[0], "operationKey": operation[1]}]
        if kind == "user":
            route = "/rest/api/space/{space}/permissions/user/{subject}/" + verb
        elif kind == "group":
            route = "/rest/api/space/{space}/permissions/group/{subject}/" + verb
        else:
            route = "/rest/api/space/{space}/permissions/anonymous/" + verb
        params = {"space": key} | ({"subject": subject} if subject is not None else {})
        await self.request("PUT", route, path_params=params, json_body=body, expect=(200, 204))

    async def add_space_permission_rpc(self, key: str, entity: str, legacy_key: str) -> None:
        await self._rpc_true("addPermissionsToSpace", [legacy_key], entity, key)

    async def remove_space_permission_rpc(self, key: str, entity: str, legacy_key: str) -> None:
        await self._rpc_true("removePermissionFromSpace", legacy_key, entity, key)

    async def create_user(
        self, username: str, full_name: str, email: str, password: str | None
    ) -> httpx.Response:
        body: dict[str, Any] = {"userName": username, "fullName": full_name, "email": email}
        if password is None:
            body["notifyViaEmail"] = True
        else:
            body["password"] = password
            body["notifyViaEmail"] = False
        return await self.request("POST", "/rest/api/admin/user", json_body=body, expect=(200, 201))


def _parse_version(text: str) -> Version | None:
    parts = text.strip().split("-")[0].split(".")
    try:
        nums = [int(p) for p in parts[:3]]
    except ValueError:
        return None
    if not nums:
        return None
    while len(nums) < 3:
        nums.append(0)
    return nums[0], nums[1], nums[2]
