"""A fake Confluence Data Center server (aiohttp) that is as strict and awkward as the real one.

What it reproduces (see the spec, section C.2):
- version modes (7.19, 8.5, 9.2, or any "major.minor") that expose only the endpoints those versions have
  and answer 404 for the rest; `totalCount` only in 9.x envelopes;
- an optional context path (e.g. `/confluence`), absolute `_links.self`, relative `_links.next` that
  exists only when more items exist, with `_links.base` + `_links.context`;
- per-endpoint server-side page caps below what clients ask for, so "short page = last page" bugs show;
- PAT (Bearer) and Basic auth with the real failure modes: an unknown PAT proceeds as the anonymous user
  with 200; wrong Basic credentials get a 401 text/html page with `X-Seraph-LoginReason`;
  non-admins get 403 on admin endpoints; successful calls carry `X-AUSERNAME`;
- the JSON error body `{"statusCode","data":{...},"message","reason"}`;
- a per-user token bucket (continuous refill) with `X-RateLimit-*` and `retry-after` on every response,
  and 429 when empty; optional transient 503s; optional injected latency per request;
- provisioning endpoints (REST and legacy JSON-RPC) that change state, with the real status codes;
- JSON-RPC in full-envelope and light mode, requiring `Content-Type: application/json`, switchable off.

Paths are routed on the raw (still percent-encoded) path, one segment at a time, so a group called
`qa/automation` is addressable only as `qa%2Fautomation`, exactly as a client must send it.

It depends on nothing in `connector/` (it stands in for the outside world).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import json
import math
import re
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import orjson
from aiohttp import web

from connector.sandbox.confluence.data import (
    ALIAS_KEYS,
    LEGACY_TO_REST,
    PERMISSION_KEYS,
    REST_TO_LEGACY,
    USERS_GROUP,
    Group,
    Permission,
    SandboxData,
    User,
    expansion_heavy,
    sized,
    small,
)

Version = tuple[int, int]

RPC_PREFIX = ("rpc", "json-rpc", "confluenceservice-v2")


def parse_version(text: str) -> Version:
    parts = text.strip().split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:  # pragma: no cover - argument validation
        raise ValueError(f"invalid Confluence version {text!r}; expected e.g. 7.19, 8.5 or 9.2") from exc


@dataclass
class PageCaps:
    """Maximum page sizes the server honours, per endpoint (clients asking for more get this many)."""

    user_list: int = 200
    admin_active: int = 200
    group: int = 200
    group_member: int = 200
    memberof: int = 200
    space: int = 100


@dataclass
class RateLimitConfig:
    """A per-user token bucket like Confluence's: `capacity` ("max requests") refilled with `fill_rate`
    tokens every `interval_seconds` ("requests allowed" per interval), continuously."""

    capacity: int
    fill_rate: float
    interval_seconds: float = 1.0

    @classmethod
    def per_second(cls, rate: float, burst: int | None = None) -> RateLimitConfig:
        return cls(capacity=burst if burst is not None else max(1, int(rate)), fill_rate=rate)


@dataclass
class SandboxConfig:
    version: str = "9.2"
    context_path: str = ""
    caps: PageCaps = field(default_factory=PageCaps)
    latency: float = 0.0  # seconds added to every request
    rate_limit: RateLimitConfig | None = None
    remote_api_enabled: bool = True  # the "Remote API (XML-RPC & SOAP)" admin switch
    rpc_accepts_bearer: bool = True  # whether /rpc/ honours a PAT (undocumented on real servers)
    require_read_first: bool = True  # REST grants need 'read' first (observed on 9.3.1)
    licenses_available: int | None = None  # None = unlimited; otherwise 402 once exhausted
    transient_503_every: int = 0  # every Nth request answers 503 + Retry-After: 0 (0 = never)
    # Every Nth page of every listing comes back one item short of its limit although more items follow
    # (its `next` starts right after what it returned), as when a server trims a page to a time or size
    # budget: clients that take a short page for the last one lose items (0 = never).
    short_page_every: int = 0
    # Endpoints this instance lacks although its version would have them, as "METHOD /path" with `*` for
    # a path segment (e.g. "GET /rest/api/admin/users/list/active"): 404 like any unknown path.
    without: frozenset[str] = frozenset()
    # How `expand=status` spells (active, deactivated): undocumented, so a client must cope with others.
    user_status_values: tuple[str, str] = ("current", "deactivated")
    # Listings whose last record lacks a field, as {listing: field}: "user" (user list, group members,
    # active users), "group" (group list) or "space" (space list), e.g. {"user": "userKey"}. Real servers
    # have been seen to omit fields; a client must say which record is wrong, not crash or skip it.
    malformed: dict[str, str] = field(default_factory=dict)

    @property
    def version_tuple(self) -> Version:
        return parse_version(self.version)

    def normalized_context(self) -> str:
        ctx = self.context_path.strip().strip("/")
        return f"/{ctx}" if ctx else ""


@dataclass
class SandboxStats:
    requests: int = 0
    rate_limited: int = 0
    unauthorized: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0

    def reset(self) -> None:
        self.requests = 0
        self.rate_limited = 0
        self.unauthorized = 0
        self.by_route.clear()
        self.in_flight = 0
        self.max_in_flight = 0


class _Bucket:
    def __init__(self, cfg: RateLimitConfig) -> None:
        self.cfg = cfg
        self.tokens = float(cfg.capacity)
        self.stamp = time.monotonic()

    def take(self) -> tuple[bool, float]:
        """(allowed, seconds until the next token)."""
        now = time.monotonic()
        rate = self.cfg.fill_rate / self.cfg.interval_seconds
        self.tokens = min(float(self.cfg.capacity), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, 0.0
        return False, (1.0 - self.tokens) / rate


class HttpError(Exception):
    def __init__(self, status: int, message: str, *, authorized: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.authorized = authorized


class RpcError(Exception):
    pass


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def _dumps(obj: Any) -> bytes:
    # Compact UTF-8 JSON, as the real server writes it. orjson rather than `json`: rendering a page of 200
    # users costs this fake ~1 ms instead of ~8 ms, and the benchmark runs it on the connector's own cores,
    # where its stalled event loop would show up as latency the real server does not have.
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type="application/json", charset="utf-8")


def error_body(status: int, message: str, *, authorized: bool = True) -> dict[str, Any]:
    """The JSON error shape of a live Data Center server (spec B.8)."""
    return {
        "statusCode": status,
        "data": {
            "authorized": authorized,
            "valid": True,
            "allowedInReadOnlyMode": True,
            "errors": [],
            "successful": False,
        },
        "message": message,
        "reason": _REASONS.get(status, "Error"),
    }


_LOGIN_DENIED_HTML = (
    '<!doctype html><html lang="en"><head><title>Unauthorized (401)</title></head><body>'
    "<h1>Unauthorized (401)</h1><p>Basic Authentication Failure - Reason : AUTHENTICATED_FAILED</p>"
    "</body></html>"
)
_USERNAME_FORBIDDEN = set("\\,+<>'\"")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class _Ctx:
    """One request as the handlers see it."""

    request: web.Request
    caller: str | None  # username, None = anonymous
    params: dict[str, str]
    path_args: list[str]
    origin: str


Handler = Callable[["ConfluenceSandboxApp", _Ctx], Awaitable[web.StreamResponse]]


@dataclass
class _Route:
    method: str
    pattern: tuple[str, ...]  # literal segments, "*" = any one segment (captured)
    handler: Handler
    since: Version = (0, 0)
    label: str = ""


class ConfluenceSandboxApp:
    """The server logic; `build_app()` wraps it in an aiohttp Application."""

    def __init__(self, data: SandboxData, config: SandboxConfig) -> None:
        self.data = data
        self.config = config
        self.version = config.version_tuple
        self.context = config.normalized_context()
        self.stats = SandboxStats()
        self._buckets: dict[str, _Bucket] = {}
        self._person_cache: dict[tuple[Any, ...], bytes] = {}
        self._routes = self._build_routes()

    # --- plumbing --------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def _build_routes(self) -> list[_Route]:
        r: list[_Route] = []

        def add(method: str, path: str, handler: Handler, since: Version = (0, 0)) -> None:
            segs = tuple(s for s in path.strip("/").split("/"))
            r.append(_Route(method, segs, handler, since, f"{method} /{path.strip('/')}"))

        add("GET", "rest/api/user/current", ConfluenceSandboxApp.h_current_user)
        add("GET", "rest/api/user/list", ConfluenceSandboxApp.h_user_list, (8, 4))
        add("GET", "rest/api/user/memberof", ConfluenceSandboxApp.h_user_memberof)
        add("GET", "rest/api/user", ConfluenceSandboxApp.h_user_get)
        add("PUT", "rest/api/user/*/group/*", ConfluenceSandboxApp.h_membership_put, (8, 2))
        add("DELETE", "rest/api/user/*/group/*", ConfluenceSandboxApp.h_membership_delete, (8, 2))
        add("GET", "rest/api/admin/users/list/active", ConfluenceSandboxApp.h_admin_active, (9, 0))
        add("POST", "rest/api/admin/user", ConfluenceSandboxApp.h_admin_create_user, (8, 4))
        add("PUT", "rest/api/admin/user/*/disable", ConfluenceSandboxApp.h_admin_disable, (8, 2))
        add("PUT", "rest/api/admin/user/*/enable", ConfluenceSandboxApp.h_admin_enable, (8, 2))
        add("DELETE", "rest/api/admin/user/*", ConfluenceSandboxApp.h_admin_delete_user, (8, 2))
        add("POST", "rest/api/admin/group", ConfluenceSandboxApp.h_admin_create_group, (8, 0))
        add("DELETE", "rest/api/admin/group/*", ConfluenceSandboxApp.h_admin_delete_group, (8, 0))
        add("GET", "rest/api/group", ConfluenceSandboxApp.h_group_list)
        add("GET", "rest/api/group/*", ConfluenceSandboxApp.h_group_get)
        add("GET", "rest/api/group/*/member", ConfluenceSandboxApp.h_group_members)
        add("GET", "rest/api/group/*/groupmember", ConfluenceSandboxApp.h_group_groupmembers)
        add("GET", "rest/api/space", ConfluenceSandboxApp.h_space_list)
        add("GET", "rest/api/space/*", ConfluenceSandboxApp.h_space_get)
        add("GET", "rest/api/space/*/permissions", ConfluenceSandboxApp.h_space_perms, (9, 1))
        add("POST", "rest/api/space/*/permissions", ConfluenceSandboxApp.h_space_perms_set, (9, 1))
        add(
            "PUT", "rest/api/space/*/permissions/user/*/grant", ConfluenceSandboxApp.h_perm_user_grant, (9, 1)
        )
        add(
            "PUT",
            "rest/api/space/*/permissions/user/*/revoke",
            ConfluenceSandboxApp.h_perm_user_revoke,
            (9, 1),
        )
        add(
            "PUT",
            "rest/api/space/*/permissions/group/*/grant",
            ConfluenceSandboxApp.h_perm_group_grant,
            (9, 1),
        )
        add(
            "PUT",
            "rest/api/space/*/permissions/group/*/revoke",
            ConfluenceSandboxApp.h_perm_group_revoke,
            (9, 1),
        )
        add(
            "PUT",
            "rest/api/space/*/permissions/anonymous/grant",
            ConfluenceSandboxApp.h_perm_anon_grant,
            (9, 1),
        )
        add(
            "PUT",
            "rest/api/space/*/permissions/anonymous/revoke",
            ConfluenceSandboxApp.h_perm_anon_revoke,
            (9, 1),
        )
        add("GET", "rest/api/server-information", ConfluenceSandboxApp.h_server_information, (9, 0))
        add("POST", "rpc/json-rpc/confluenceservice-v2", ConfluenceSandboxApp.h_rpc_envelope)
        add("POST", "rpc/json-rpc/confluenceservice-v2/*", ConfluenceSandboxApp.h_rpc_light)
        return r

    def _match(self, method: str, segs: list[str]) -> tuple[_Route | None, list[str], bool]:
        """(route, captured args, path exists for another method)."""
        path_exists = False
        for route in self._routes:
            if len(route.pattern) != len(segs):
                continue
            args: list[str] = []
            for pat, seg in zip(route.pattern, segs, strict=True):
                if pat == "*":
                    args.append(seg)
                elif pat != seg:
                    break
            else:
                if self.version < route.since or route.label in self.config.without:
                    continue  # this instance does not have the endpoint at all
                if route.method != method:
                    path_exists = True
                    continue
                return route, args, True
        return None, [], path_exists

    def _authenticate(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        is_rpc = request.raw_path.startswith(f"{self.context}/rpc/")
        if scheme == "bearer" and self.version >= (7, 9):
            if is_rpc and not self.config.rpc_accepts_bearer:
                return None, None
            username = self.data.tokens.get(value.strip())
            user = self.data.users.get(username) if username else None
            if user is None or not user.active:
                # Real servers do not reject an unknown PAT: the request runs as the anonymous user.
                return None, None
            return user.username, None
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            name, sep, password = decoded.partition(":")
            user = self.data.users.get(name) if sep else None
            if user is None or not user.active or user.password is None or user.password != password:
                self.stats.unauthorized += 1
                resp = web.Response(
                    status=401, text=_LOGIN_DENIED_HTML, content_type="text/html", charset="utf-8"
                )
                resp.headers["X-Seraph-LoginReason"] = "AUTHENTICATION_DENIED"
                resp.headers["WWW-Authenticate"] = 'OAuth realm="' + quote(request.host) + '"'
                return None, resp
            return user.username, None
        return None, None

    def _rate_limit(self, caller_key: str, resp_headers: dict[str, str]) -> float | None:
        cfg = self.config.rate_limit
        if cfg is None:
            return None
        bucket = self._buckets.get(caller_key)
        if bucket is None:
            bucket = self._buckets[caller_key] = _Bucket(cfg)
        allowed, wait = bucket.take()
        resp_headers["X-RateLimit-Limit"] = str(cfg.capacity)
        resp_headers["X-RateLimit-Remaining"] = str(max(0, int(bucket.tokens)))
        resp_headers["X-RateLimit-Interval-Seconds"] = _num(cfg.interval_seconds)
        resp_headers["X-RateLimit-FillRate"] = _num(cfg.fill_rate)
        resp_headers["retry-after"] = "0" if allowed else str(max(1, math.ceil(wait)))
        return None if allowed else wait

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            if self.config.latency > 0:
                await asyncio.sleep(self.config.latency)
            return await self._handle(request)
        finally:
            self.stats.in_flight -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        if self.context:
            if raw_path != self.context and not raw_path.startswith(self.context + "/"):
                return web.Response(
                    status=404, text="<html><body>Not Found</body></html>", content_type="text/html"
                )
            raw_path = raw_path[len(self.context) :]
        n = self.stats.requests
        if self.config.transient_503_every and n % self.config.transient_503_every == 0:
            unavailable = _json(error_body(503, "Service temporarily unavailable"), status=503)
            unavailable.headers["Retry-After"] = "0"
            return unavailable

        caller, denied = self._authenticate(request)
        if denied is not None:
            return denied
        headers: dict[str, str] = {}
        limited = self._rate_limit(caller or f"anonymous@{request.remote}", headers)
        if limited is not None:
            self.stats.rate_limited += 1
            too_many = _json({"message": "Rate limit exceeded."}, status=429)
            too_many.headers.update(headers)
            return too_many

        try:
            segs = [unquote(s, encoding="utf-8", errors="strict") for s in raw_path.strip("/").split("/")]
        except UnicodeDecodeError:
            malformed = _json(error_body(400, "Malformed percent-encoding in the request path"), status=400)
            malformed.headers.update(headers)
            return malformed
        if segs[:3] == list(RPC_PREFIX) and not self.config.remote_api_enabled:
            return web.Response(
                status=404, text="<html><body>Not Found</body></html>", content_type="text/html"
            )
        route, args, path_exists = self._match(request.method, segs)
        resp: web.StreamResponse
        try:
            if route is None:
                if path_exists:
                    raise HttpError(405, f"Method {request.method} not allowed")
                raise HttpError(404, f"null for uri: {request.url}")
            self.stats.by_route[route.label] += 1
            ctx = _Ctx(
                request=request,
                caller=caller,
                params=dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)),
                path_args=args,
                origin=f"{request.scheme}://{request.host}",
            )
            resp = await route.handler(self, ctx)
        except HttpError as exc:
            resp = _json(error_body(exc.status, exc.message, authorized=exc.authorized), status=exc.status)
        resp.headers.update(headers)
        if caller is not None:
            resp.headers["X-AUSERNAME"] = quote(caller)
            resp.headers["X-Seraph-LoginReason"] = "OK"
        else:
            resp.headers["X-AUSERNAME"] = "anonymous"
        return resp

    # --- helpers ----------------------------------------------------------------------------------

    def _base(self, ctx: _Ctx) -> str:
        return ctx.origin + self.context

    def _require_user(self, ctx: _Ctx) -> str:
        if ctx.caller is None:
            raise HttpError(401, "This request requires authentication", authorized=False)
        return ctx.caller

    def _require_admin(self, ctx: _Ctx, *, anonymous_status: int = 403) -> str:
        if ctx.caller is None:
            raise HttpError(
                anonymous_status,
                "Current user not permitted to use Confluence administration",
                authorized=False,
            )
        if not self.data.is_admin(ctx.caller):
            raise HttpError(
                403, f"User {ctx.caller} is not permitted to perform this operation", authorized=False
            )
        return ctx.caller

    def _expand(self, ctx: _Ctx) -> set[str]:
        return {e.strip() for e in ctx.params.get("expand", "").split(",") if e.strip()}

    def person(
        self, ctx: _Ctx, user: User, *, expand: set[str] | None = None, email: bool = False
    ) -> dict[str, Any]:
        return self._person(ctx.origin, user, status="status" in (expand or ()), email=email)

    def _person(self, origin: str, user: User, *, status: bool, email: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "known",
            "username": user.username,
            "userKey": user.user_key,
            "profilePicture": {
                "path": f"{self.context}/images/icons/profilepics/default.svg",
                "width": 48,
                "height": 48,
                "isDefault": True,
            },
            "displayName": user.display_name,
            "_links": {"self": f"{origin}{self.context}/rest/api/user?key={user.user_key}"},
        }
        if self.version < (8, 4):
            # The status expansion came with the 8.4 user-management REST work (user/list?expand=status);
            # older servers offer no account state over REST at all.
            out["_expandable"] = {}
        elif status:
            out["status"] = self.config.user_status_values[0 if user.active else 1]
            out["_expandable"] = {}
        else:
            out["_expandable"] = {"status": ""}
        if email:
            out["email"] = user.email
        return out

    def person_bytes(self, ctx: _Ctx, user: User, *, expand: set[str], email: bool = False) -> bytes:
        return self._person_bytes(ctx.origin, user, "status" in expand, email)

    def _person_bytes(self, origin: str, user: User, status: bool, email: bool) -> bytes:
        """`person()` serialized, cached on everything the JSON depends on (tests mutate users directly)."""
        key = (
            user.username,
            user.user_key,
            user.display_name,
            user.active,
            user.email if email else None,
            status,
            origin,
        )
        cached = self._person_cache.get(key)
        if cached is None:
            cached = self._person_cache[key] = _dumps(self._person(origin, user, status=status, email=email))
        return cached

    def prerender_people(self, origin: str) -> None:
        """Serialize every user as the listings the connector reads show them (user list with status, the
        active-users list with email, group members), for clients that use `origin` as their Host.

        A page of 200 people is otherwise ~1 ms of rendering, and the connector asks for eight at a time:
        in a benchmark on shared cores, this fake's own CPU would be measured as upstream latency.
        """
        for user in self.data.users.values():
            for status, email in ((True, False), (False, True), (False, False)):
                self._person_bytes(origin, user, status, email)

    def anonymous(self, ctx: _Ctx) -> dict[str, Any]:
        return {
            "type": "anonymous",
            "profilePicture": {
                "path": f"{self.context}/images/icons/profilepics/anonymous.svg",
                "width": 48,
                "height": 48,
                "isDefault": True,
            },
            "displayName": "Anonymous",
            "_links": {"self": f"{self._base(ctx)}/rest/api/user/anonymous"},
        }

    def group_json(self, ctx: _Ctx, group: Group) -> dict[str, Any]:
        return {
            "type": "group",
            "name": group.name,
            "_links": {"self": f"{self._base(ctx)}/rest/api/group/{quote(group.name, safe='')}"},
        }

    def space_json(self, ctx: _Ctx, space: Any) -> dict[str, Any]:
        key_q = quote(space.key, safe="~")
        return {
            "id": space.id,
            "key": space.key,
            "name": space.name,
            "type": space.type,
            "status": space.status,
            "_links": {
                "webui": f"/display/{key_q}",
                "self": f"{self._base(ctx)}/rest/api/space/{key_q}",
            },
            "_expandable": {
                "metadata": "",
                "icon": "",
                "description": "",
                "homepage": f"/rest/api/content/{space.id + 1}",
            },
        }

    def _int_param(self, ctx: _Ctx, name: str, default: int) -> int:
        raw = ctx.params.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise HttpError(400, f"Invalid value for parameter {name}: {raw}") from None

    def page(
        self,
        ctx: _Ctx,
        items: Sequence[Any],
        cap: int,
        default_limit: int,
        render: Callable[[Any], bytes],
        kind: str = "",
    ) -> web.Response:
        start = self._int_param(ctx, "start", 0)
        limit = self._int_param(ctx, "limit", default_limit)
        if start < 0:
            raise HttpError(400, "start must be a non-negative integer")
        if limit <= 0:
            limit = default_limit
        limit = min(limit, cap)
        chunk = items[start : start + limit]
        if kind in self.config.malformed and chunk and start + len(chunk) == len(items):
            render = self._malformed(render, chunk[-1], self.config.malformed[kind])
        every = self.config.short_page_every
        if (
            every
            and len(chunk) > 1
            and start + len(chunk) < len(items)
            and (start // limit) % every == every - 1
        ):
            chunk = chunk[:-1]  # trimmed although more follow: `next` (below) starts right after it
        rel_path = "/" + ctx.request.rel_url.raw_path[len(self.context) :].lstrip("/")
        base = self._base(ctx)
        links: dict[str, Any] = {
            "base": base,
            "context": self.context,
            "self": base + rel_path + (("?" + ctx.request.rel_url.raw_query_string) if ctx.params else ""),
        }
        if start + len(chunk) < len(items):
            q = {k: v for k, v in ctx.params.items() if k not in ("start", "limit")}
            q["limit"] = str(limit)
            q["start"] = str(start + len(chunk))
            links["next"] = f"{rel_path}?{urlencode(q)}"
        if start > 0:
            q = {k: v for k, v in ctx.params.items() if k not in ("start", "limit")}
            q["limit"] = str(limit)
            q["start"] = str(max(0, start - limit))
            links["prev"] = f"{rel_path}?{urlencode(q)}"
        rest: dict[str, Any] = {"start": start, "limit": limit, "size": len(chunk)}
        if self.version >= (9, 0):
            rest["totalCount"] = len(items)
        rest["_links"] = links
        # {"results":[...],"start":...}: items come pre-serialized (see person_bytes), so a page of 200 users
        # costs this fake server next to nothing; the benchmark shares the machine with it.
        body = b'{"results":[' + b",".join(render(x) for x in chunk) + b"]," + _dumps(rest)[1:]
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    @staticmethod
    def _malformed(render: Callable[[Any], bytes], target: Any, missing: str) -> Callable[[Any], bytes]:
        def broken(item: Any) -> bytes:
            if item is not target:
                return render(item)
            record = orjson.loads(render(item))
            record.pop(missing, None)
            return _dumps(record)

        return broken

    def _user_or_404(self, username: str) -> User:
        user = self.data.users.get(username)
        if user is None:
            raise HttpError(404, f"No user found with username: {username}")
        return user

    def _group_or_404(self, name: str) -> Group:
        group = self.data.groups.get(name)
        if group is None:
            raise HttpError(404, f"No group found with name: {name}")
        return group

    def _space_or_404(self, key: str) -> Any:
        space = self.data.spaces.get(key)
        if space is None:
            raise HttpError(404, f"No space with key : {key}")
        return space

    # --- users ------------------------------------------------------------------------------------

    async def h_current_user(self, ctx: _Ctx) -> web.StreamResponse:
        if ctx.caller is None:
            return _json(self.anonymous(ctx))
        return _json(self.person(ctx, self.data.users[ctx.caller], expand=self._expand(ctx)))

    async def h_user_get(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_user(ctx)
        if "key" in ctx.params:
            user = self.data.user_by_key(ctx.params["key"])
            if user is None:
                raise HttpError(404, f"No user found with key: {ctx.params['key']}")
        elif "username" in ctx.params:
            user = self._user_or_404(ctx.params["username"])
        else:
            raise HttpError(400, "Either username or key must be specified")
        return _json(self.person(ctx, user, expand=self._expand(ctx)))

    async def h_user_list(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx)
        expand = self._expand(ctx)
        users = list(self.data.users.values())
        return self.page(
            ctx,
            users,
            self.config.caps.user_list,
            100,
            lambda u: self.person_bytes(ctx, u, expand=expand),
            "user",
        )

    async def h_admin_active(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        expand = self._expand(ctx)
        users = [u for u in self.data.users.values() if u.active and u.licensed]
        return self.page(
            ctx,
            users,
            self.config.caps.admin_active,
            100,
            lambda u: self.person_bytes(ctx, u, expand=expand, email=True),
            "user",
        )

    async def h_user_memberof(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_user(ctx)
        if "key" in ctx.params:
            user = self.data.user_by_key(ctx.params["key"])
            if user is None:
                raise HttpError(404, f"No user found with key: {ctx.params['key']}")
        elif "username" in ctx.params:
            user = self._user_or_404(ctx.params["username"])
        else:
            raise HttpError(400, "Either username or key must be specified")
        groups = [g for g in self.data.groups.values() if g.has(user.username)]
        return self.page(
            ctx, groups, self.config.caps.memberof, 200, lambda g: _dumps(self.group_json(ctx, g))
        )

    async def h_membership_put(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        username, group_name = ctx.path_args
        user = self._user_or_404(username)
        group = self._group_or_404(group_name)
        group.add(user.username)
        return web.Response(status=204)

    async def h_membership_delete(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        username, group_name = ctx.path_args
        user = self._user_or_404(username)
        group = self._group_or_404(group_name)
        group.remove(user.username)
        return web.Response(status=204)

    async def h_admin_create_user(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        body = await _read_json(ctx.request)
        if not isinstance(body, dict):
            raise HttpError(400, "Request body must be a JSON object")
        username = body.get("userName")
        full_name = body.get("fullName")
        email = body.get("email")
        password = body.get("password")
        notify = body.get("notifyViaEmail", False)
        if not isinstance(username, str) or not username:
            raise HttpError(400, "userName is required")
        if username != username.lower():
            raise HttpError(400, "Username must be in lowercase")
        if any(c.isspace() for c in username):
            raise HttpError(400, "Username cannot contain whitespace")
        if any(c in _USERNAME_FORBIDDEN for c in username):
            raise HttpError(400, "Username cannot contain the characters \\ , + < > ' \"")
        if username == "anonymous":
            raise HttpError(400, "Username cannot be 'anonymous'")
        if not isinstance(full_name, str) or not full_name.strip():
            raise HttpError(400, "fullName is required")
        if "<" in full_name or ">" in full_name:
            raise HttpError(400, "Full name cannot contain < or >")
        if not isinstance(email, str) or not _EMAIL_RE.match(email):
            raise HttpError(400, "A valid email address is required")
        if password is not None and notify:
            raise HttpError(400, "Either password or notifyViaEmail must be set, not both")
        if password is None and not notify:
            raise HttpError(400, "Either password or notifyViaEmail must be set")
        if password is not None and (not isinstance(password, str) or not password):
            raise HttpError(400, "Password cannot be blank")
        if username in self.data.users:
            raise HttpError(409, f"User with username {username} already exists")
        if self.config.licenses_available is not None:
            used = sum(1 for u in self.data.users.values() if u.active and u.licensed)
            if used >= self.config.licenses_available:
                raise HttpError(402, "No more licenses available to create a new user")
        key = hashlib.md5(f"{username}:{len(self.data.users)}".encode()).hexdigest()
        user = User(
            username=username,
            user_key=key,
            display_name=full_name,
            email=email,
            password=password,
            notify_via_email=bool(notify),
        )
        self.data.add_user(user)
        default_group = self.data.groups.get(USERS_GROUP)
        if default_group is not None:
            default_group.add(username)
        return _json({"userKey": key})

    async def h_admin_disable(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        self._user_or_404(ctx.path_args[0]).active = False
        return web.Response(status=204)

    async def h_admin_enable(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        self._user_or_404(ctx.path_args[0]).active = True
        return web.Response(status=204)

    async def h_admin_delete_user(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        user = self._user_or_404(ctx.path_args[0])
        del self.data.users[user.username]
        for g in self.data.groups.values():
            g.remove(user.username)
        task = str(int(user.user_key[:8], 16) % 10**8)
        return _json(
            {
                "id": task,
                "links": {"status": f"{self._base(ctx)}/rest/api/longtask/{task}"},
            },
            status=202,
        )

    # --- groups -----------------------------------------------------------------------------------

    async def h_admin_create_group(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        body = await _read_json(ctx.request)
        if not isinstance(body, dict) or body.get("type") != "group":
            raise HttpError(400, "type must be 'group'")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise HttpError(400, "name is required")
        if name in self.data.groups:
            raise HttpError(409, f"Group {name} already exists")
        group = self.data.groups[name] = Group(name)
        return _json(self.group_json(ctx, group))

    async def h_admin_delete_group(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        group = self._group_or_404(ctx.path_args[0])
        del self.data.groups[group.name]
        return web.Response(status=204)

    async def h_group_list(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx)
        groups = list(self.data.groups.values())
        return self.page(
            ctx, groups, self.config.caps.group, 200, lambda g: _dumps(self.group_json(ctx, g)), "group"
        )

    async def h_group_get(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx)
        return _json(self.group_json(ctx, self._group_or_404(ctx.path_args[0])))

    async def h_group_members(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx)
        group = self._group_or_404(ctx.path_args[0])
        expand = self._expand(ctx)
        # Memberships of deleted users are removed with the user, so names map 1:1 to users; mapping only
        # the requested slice keeps a page of a 20k-member group as cheap as any other page.
        users = self.data.users
        return self.page(
            ctx,
            group.members,
            self.config.caps.group_member,
            200,
            lambda name: self.person_bytes(ctx, users[name], expand=expand),
            "user",
        )

    async def h_group_groupmembers(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx)
        group = self._group_or_404(ctx.path_args[0])
        nested = [self.data.groups[n] for n in group.nested if n in self.data.groups]
        return self.page(ctx, nested, self.config.caps.group, 200, lambda g: _dumps(self.group_json(ctx, g)))

    # --- spaces -----------------------------------------------------------------------------------

    async def h_space_list(self, ctx: _Ctx) -> web.StreamResponse:
        keys_filter = {k for k in ctx.params.get("spaceKey", "").split(",") if k}
        stype = ctx.params.get("type")
        status = ctx.params.get("status")
        spaces = [
            s
            for s in self.data.spaces.values()
            if (not keys_filter or s.key in keys_filter)
            and (not stype or s.type == stype)
            and (not status or s.status == status)
            and self.data.can_view(ctx.caller, s.key)
        ]
        return self.page(
            ctx, spaces, self.config.caps.space, 25, lambda s: _dumps(self.space_json(ctx, s)), "space"
        )

    async def h_space_get(self, ctx: _Ctx) -> web.StreamResponse:
        space = self.data.spaces.get(ctx.path_args[0])
        if space is None or not self.data.can_view(ctx.caller, space.key):
            raise HttpError(404, f"No space with key : {ctx.path_args[0]}")
        return _json(self.space_json(ctx, space))

    def _rest_perm(self, space: Any, perm: Permission) -> dict[str, Any] | None:
        pair = LEGACY_TO_REST.get(perm[0])
        if pair is None:
            return None
        kind, name = perm[1], perm[2]
        subject: dict[str, Any]
        if kind == "user":
            user = self.data.users.get(name or "")
            if user is None:
                return None
            subject = {"type": "user", "userKey": user.user_key}
        elif kind == "group":
            subject = {"type": "group", "name": name}
        else:
            subject = {"type": "anonymous"}
        return {
            "operation": {"targetType": pair[0], "operationKey": pair[1]},
            "subject": subject,
            "spaceKey": space.key,
            "spaceId": space.id,
        }

    async def h_space_perms(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        space = self._space_or_404(ctx.path_args[0])
        out = [
            p for p in (self._rest_perm(space, perm) for perm in self.data.space_permissions(space.key)) if p
        ]
        return _json(out)

    async def _operations(self, ctx: _Ctx) -> list[str]:
        body = await _read_json(ctx.request)
        if not isinstance(body, list) or not body:
            raise HttpError(400, "Request body must be a non-empty list of operations")
        keys: list[str] = []
        for op in body:
            if not isinstance(op, dict):
                raise HttpError(400, "Each operation must be an object with operationKey and targetType")
            pair = (str(op.get("targetType", "")), str(op.get("operationKey", "")))
            legacy = REST_TO_LEGACY.get(pair)
            if legacy is None:
                raise HttpError(400, f"Unsupported operation: {pair[1]} on {pair[0]}")
            keys.append(legacy)
        return keys

    def _grant(self, ctx: _Ctx, space: Any, kind: str, name: str | None, keys: list[str]) -> web.Response:
        perms = self.data.space_permissions(space.key)
        has_read = ("VIEWSPACE", kind, name) in perms or "VIEWSPACE" in keys
        if self.config.require_read_first and not has_read:
            raise HttpError(400, "The 'read' space permission must be granted before any other permission")
        for k in keys:
            self.data.add_permission(space.key, (k, kind, name))
        return web.Response(status=204)

    def _revoke(self, space: Any, kind: str, name: str | None, keys: list[str]) -> web.Response:
        for k in keys:
            self.data.remove_permission(space.key, (k, kind, name))  # missing ones are silently skipped
        return web.Response(status=204)

    def _user_by_key_or_404(self, key: str) -> User:
        user = self.data.user_by_key(key)
        if user is None:
            raise HttpError(404, f"No user found with key: {key}")
        return user

    async def h_perm_user_grant(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        space = self._space_or_404(ctx.path_args[0])
        user = self._user_by_key_or_404(ctx.path_args[1])
        return self._grant(ctx, space, "user", user.username, await self._operations(ctx))

    async def h_perm_user_revoke(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        space = self._space_or_404(ctx.path_args[0])
        user = self._user_by_key_or_404(ctx.path_args[1])
        return self._revoke(space, "user", user.username, await self._operations(ctx))

    async def h_perm_group_grant(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        space = self._space_or_404(ctx.path_args[0])
        group = self._group_or_404(ctx.path_args[1])
        return self._grant(ctx, space, "group", group.name, await self._operations(ctx))

    async def h_perm_group_revoke(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        space = self._space_or_404(ctx.path_args[0])
        group = self._group_or_404(ctx.path_args[1])
        return self._revoke(space, "group", group.name, await self._operations(ctx))

    async def h_perm_anon_grant(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        space = self._space_or_404(ctx.path_args[0])
        return self._grant(ctx, space, "anonymous", None, await self._operations(ctx))

    async def h_perm_anon_revoke(self, ctx: _Ctx) -> web.StreamResponse:
        self._require_admin(ctx, anonymous_status=401)
        space = self._space_or_404(ctx.path_args[0])
        return self._revoke(space, "anonymous", None, await self._operations(ctx))

    async def h_space_perms_set(self, ctx: _Ctx) -> web.StreamResponse:
        """Replace semantics: for every listed subject, its permissions become exactly those listed."""
        self._require_admin(ctx, anonymous_status=401)
        space = self._space_or_404(ctx.path_args[0])
        body = await _read_json(ctx.request)
        if not isinstance(body, list):
            raise HttpError(400, "Request body must be a list of subjects")
        if len(body) > 40:
            raise HttpError(400, "At most 40 subjects can be set in one request")
        for entry in body:
            if not isinstance(entry, dict):
                raise HttpError(400, "Each entry must be an object")
            if "userKey" in entry:
                kind, name = "user", self._user_by_key_or_404(str(entry["userKey"])).username
            elif "groupName" in entry:
                kind, name = "group", self._group_or_404(str(entry["groupName"])).name
            else:
                raise HttpError(400, "Each entry needs userKey or groupName")
            keys = []
            for op in entry.get("operations", []):
                legacy = REST_TO_LEGACY.get((str(op.get("targetType")), str(op.get("operationKey"))))
                if legacy is None:
                    raise HttpError(400, f"Unsupported operation: {op}")
                keys.append(legacy)
            perms = self.data.space_permissions(space.key)
            perms[:] = [p for p in perms if not (p[1] == kind and p[2] == name)]
            for k in keys:
                perms.append((k, kind, name))
        return web.Response(status=204)

    async def h_server_information(self, ctx: _Ctx) -> web.StreamResponse:
        major, minor = self.version
        build = major * 1000 + minor * 10
        return _json(
            {
                "baseUrl": self._base(ctx),
                "version": f"{major}.{minor}.0",
                "buildNumber": build,
                "marketplaceBuildNumber": build,
                "buildDate": "2024-06-01T00:00:00.000Z",
            }
        )

    # --- JSON-RPC ---------------------------------------------------------------------------------

    async def _rpc_body(self, ctx: _Ctx) -> Any:
        ctype = ctx.request.headers.get("Content-Type", "")
        if not ctype.lower().startswith("application/json"):
            raise HttpError(
                415, "Unsupported Media Type: JSON-RPC requests must use Content-Type application/json"
            )
        return await _read_json(ctx.request)

    async def h_rpc_envelope(self, ctx: _Ctx) -> web.StreamResponse:
        body = await self._rpc_body(ctx)
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            return _json(
                {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid request"}, "id": None}
            )
        params = body.get("params", [])
        if not isinstance(params, list):
            params = [params]
        try:
            result = self.rpc_call(ctx, body["method"], params)
        except RpcError as exc:
            return _json(
                {"jsonrpc": "2.0", "error": {"code": 500, "message": str(exc)}, "id": body.get("id")}
            )
        return _json({"jsonrpc": "2.0", "result": result, "id": body.get("id")})

    async def h_rpc_light(self, ctx: _Ctx) -> web.StreamResponse:
        body = await self._rpc_body(ctx)
        params = body if isinstance(body, list) else [body]
        try:
            result = self.rpc_call(ctx, ctx.path_args[0], params)
        except RpcError as exc:
            return _json({"error": {"code": 500, "message": str(exc)}})
        return _json(result)

    def _rpc_admin(self, ctx: _Ctx) -> None:
        if ctx.caller is None or not self.data.is_admin(ctx.caller):
            raise RpcError(
                "com.atlassian.confluence.rpc.NotPermittedException: "
                "You do not have permissions to perform this operation"
            )

    def _rpc_entity(self, name: Any) -> tuple[str, str]:
        if isinstance(name, str) and name in self.data.users:
            return "user", name
        if isinstance(name, str) and name in self.data.groups:
            return "group", name
        raise RpcError(f"com.atlassian.confluence.rpc.RemoteException: No user or group with name {name}")

    def _rpc_space(self, key: Any) -> Any:
        space = self.data.spaces.get(key) if isinstance(key, str) else None
        if space is None:
            raise RpcError(
                "com.atlassian.confluence.rpc.RemoteException: "
                f"You're not allowed to view that space, or it does not exist: {key}"
            )
        return space

    def rpc_call(self, ctx: _Ctx, method: str, p: list[Any]) -> Any:
        d = self.data
        if method == "getServerInfo":
            major, minor = self.version
            return {
                "majorVersion": major,
                "minorVersion": minor,
                "patchLevel": 0,
                "buildId": str(major * 1000 + minor * 10),
                "developmentBuild": False,
                "baseUrl": self._base(ctx),
            }
        if method == "getSpacePermissionSets":
            self._rpc_admin(ctx)
            space = self._rpc_space(p[0] if p else None)
            perms = d.space_permissions(space.key)
            out = []
            for key in (*PERMISSION_KEYS, *ALIAS_KEYS):
                source = "VIEWSPACE" if key in ALIAS_KEYS else key
                entries = [
                    {
                        "type": key,
                        "userName": name if kind == "user" else None,
                        "groupName": name if kind == "group" else None,
                    }
                    for (k, kind, name) in perms
                    if k == source
                ]
                out.append({"type": key, "spacePermissions": entries})
            return out
        if method in ("addPermissionsToSpace", "addPermissionToSpace"):
            self._rpc_admin(ctx)
            if len(p) != 3:
                raise RpcError(f"{method} expects 3 parameters")
            keys = p[0] if isinstance(p[0], list) else [p[0]]
            kind, name = self._rpc_entity(p[1])
            space = self._rpc_space(p[2])
            for k in keys:
                if k not in LEGACY_TO_REST:
                    raise RpcError(f"com.atlassian.confluence.rpc.RemoteException: Unknown permission {k}")
            for k in keys:
                d.add_permission(space.key, (k, kind, name))
            return True
        if method == "removePermissionFromSpace":
            self._rpc_admin(ctx)
            if len(p) != 3:
                raise RpcError(f"{method} expects 3 parameters")
            kind, name = self._rpc_entity(p[1])
            space = self._rpc_space(p[2])
            if p[0] not in LEGACY_TO_REST:
                raise RpcError(f"com.atlassian.confluence.rpc.RemoteException: Unknown permission {p[0]}")
            d.remove_permission(space.key, (p[0], kind, name))
            return True
        if method in ("addUserToGroup", "removeUserFromGroup"):
            self._rpc_admin(ctx)
            user = d.users.get(p[0]) if p else None
            group = d.groups.get(p[1]) if len(p) > 1 else None
            if user is None or group is None:
                raise RpcError("com.atlassian.confluence.rpc.RemoteException: Unknown user or group")
            if method == "addUserToGroup":
                group.add(user.username)
            else:
                group.remove(user.username)
            return True
        if method == "isActiveUser":
            self._rpc_admin(ctx)
            user = d.users.get(p[0]) if p else None
            if user is None:
                raise RpcError(f"com.atlassian.confluence.rpc.RemoteException: No user with username {p[:1]}")
            return user.active
        if method == "getActiveUsers":
            self._rpc_admin(ctx)
            view_all = bool(p[0]) if p else False
            return [u.username for u in d.users.values() if view_all or u.active]
        if method == "getUser":
            if ctx.caller is None:
                raise RpcError(
                    "com.atlassian.confluence.rpc.NotPermittedException: Anonymous users cannot view users"
                )
            user = d.users.get(p[0]) if p else None
            if user is None:
                raise RpcError(f"com.atlassian.confluence.rpc.RemoteException: No user with username {p[:1]}")
            return {
                "name": user.username,
                "fullname": user.display_name,
                "email": user.email,
                "url": f"{self._base(ctx)}/display/~{quote(user.username)}",
            }
        if method == "getGroups":
            self._rpc_admin(ctx)
            return list(d.groups)
        if method == "getUserGroups":
            self._rpc_admin(ctx)
            return d.groups_of(p[0]) if p else []
        if method in ("deactivateUser", "reactivateUser"):
            self._rpc_admin(ctx)
            user = d.users.get(p[0]) if p else None
            if user is None:
                raise RpcError("com.atlassian.confluence.rpc.RemoteException: Unknown user")
            user.active = method == "reactivateUser"
            return True
        raise RpcError(f"No such method: {method}")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise HttpError(400, "Request body is not valid JSON") from None


@dataclass
class RunningConfluenceSandbox:
    """A started sandbox. `base_url` includes the context path and has no trailing slash."""

    base_url: str
    origin: str
    app: ConfluenceSandboxApp
    runner: web.AppRunner

    @property
    def data(self) -> SandboxData:
        return self.app.data

    @property
    def config(self) -> SandboxConfig:
        return self.app.config

    @property
    def stats(self) -> SandboxStats:
        return self.app.stats

    admin_token: str = "admin-pat"
    viewer_token: str = "viewer-pat"

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> RunningConfluenceSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_confluence_sandbox(
    data: SandboxData | None = None,
    config: SandboxConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningConfluenceSandbox:
    """Start the fake server on `host:port` (0 = any free port) and return once it accepts connections.

    `data` defaults to the small seeded data set; `config` to version 9.2, no context path, default caps,
    no latency and no rate limit. Credentials in the default data: PAT `admin-pat` (admin), `viewer-pat`
    (non-admin); Basic `admin`/`admin`, `viewer`/`viewer`.
    """
    cfg = config or SandboxConfig()
    logic = ConfluenceSandboxApp(data if data is not None else small(), cfg)
    runner = web.AppRunner(logic.build_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
    await site.start()
    bound_port = int(runner.addresses[0][1])
    scheme = "https" if ssl_context is not None else "http"
    origin = f"{scheme}://{host}:{bound_port}"
    return RunningConfluenceSandbox(
        base_url=origin + logic.context,
        origin=origin,
        app=logic,
        runner=runner,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m connector sandbox confluence",
        description="Run a fake Confluence Data Center server with seeded data.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    p.add_argument("--version", default="9.2", help="Confluence version to emulate (7.19, 8.5, 9.2, ...)")
    p.add_argument("--context-path", default="", help="e.g. /confluence")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--users", type=int, default=None, help="generated users (default: small data set)")
    p.add_argument("--groups", type=int, default=12)
    p.add_argument("--memberships", type=int, default=120)
    p.add_argument("--spaces", type=int, default=8)
    p.add_argument(
        "--expansion-heavy",
        action="store_true",
        help="every group has --members-per-group members and every space gives 8 permissions to 5 users "
        "and 3 groups (--memberships is ignored)",
    )
    p.add_argument("--members-per-group", type=int, default=40)
    p.add_argument("--latency-ms", type=float, default=0.0, help="latency injected into every request")
    p.add_argument(
        "--rate-limit", type=float, default=None, help="requests per second per user (token bucket)"
    )
    p.add_argument(
        "--rate-burst", type=int, default=None, help="bucket capacity (default: one second's worth)"
    )
    p.add_argument("--page-cap", type=int, default=None, help="server-side page cap for every listing")
    p.add_argument("--no-remote-api", action="store_true", help="turn the JSON-RPC remote API off")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `python -m connector sandbox confluence`. Prints the URL, serves until interrupted."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    try:
        parse_version(args.version)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    caps = PageCaps()
    if args.page_cap:
        caps = PageCaps(*(args.page_cap,) * 6)
    cfg = SandboxConfig(
        version=args.version,
        context_path=args.context_path,
        caps=caps,
        latency=args.latency_ms / 1000.0,
        rate_limit=RateLimitConfig.per_second(args.rate_limit, args.rate_burst) if args.rate_limit else None,
        remote_api_enabled=not args.no_remote_api,
    )
    if args.users is not None and args.expansion_heavy:
        data = expansion_heavy(
            users=args.users,
            groups=args.groups,
            members_per_group=args.members_per_group,
            spaces=args.spaces,
            seed=args.seed,
        )
    elif args.users is None:
        data = small(args.seed)
    else:
        data = sized(args.users, args.groups, args.memberships, args.spaces, seed=args.seed)

    async def run() -> None:
        sandbox = await start_confluence_sandbox(data, cfg, host=args.host, port=args.port)
        sandbox.app.prerender_people(sandbox.origin)
        # The data and its renderings live until exit: kept out of the collector's full passes, which
        # would otherwise stop this server for tens of milliseconds at a time in the middle of a benchmark.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        print(f"CONFLUENCE_SANDBOX_URL={sandbox.base_url}", flush=True)
        print(
            f"Confluence Data Center {cfg.version} sandbox: {len(data.users)} users, "
            f"{len(data.groups)} groups, {len(data.spaces)} spaces. "
            "PAT: admin-pat (admin), viewer-pat; Basic admin/admin.",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            print(f"requests served: {sandbox.stats.requests}", flush=True)
            await sandbox.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
