"""A fake Atlassian Cloud organization admin API (api.atlassian.com), strict like the real one.

What it reproduces (spec C.1):

* routes under `/admin/v1`, `/admin/v2`, `/admin/api-access/v1` and a SCIM mount `/scim/directory/{id}`;
* the three pagination schemes: v1 collections with absolute-URL `links.next` (managed accounts: fixed 50
  per page, `meta.total`), v2 GET lists with opaque cursors in the query ("cursor overrides every other
  parameter", `limit` clamped to 100), and POST searches whose cursor travels in the JSON body and must be
  sent alone (anything else next to it is a 400 with the real envelope);
* cursors are signed base64 tokens, so a client cannot build or tamper with them (400 `ADMIN-400-1`);
* last pages end with `next` absent on some endpoints and `next: null` on others;
* error envelopes `{"errors":[{"id","status":"<string>","code","title","detail"}]}` with ADMIN-* and
  ADMIN-UAM-* codes; 401 for a wrong key, 404 `ADMIN-404-2` for an organization the key cannot see;
* a per-key token bucket with `X-RateLimit-Limit/-Remaining/-Reset` (ISO-8601 UTC) on every answer and 429
  `ADMIN-429-1` (plus `Retry-After`, switchable) when empty;
* eventual consistency of role changes, the jira-admin ARI quirk (ID-8887), endpoints "not enabled for
  this tenant", seat limits, IdP-synced groups that refuse changes, injected latency and failures.
* v2 directory suspend / restore (org admins refused with a 400) and the user-management API's lifecycle
  delete with its own `{"key","errorKey","errorDetail"}` envelope (see `_Lifecycle`).

The server depends on nothing in `connector/` outside this package: it stands in for the outside world.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import signal
import ssl
import sys
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from aiohttp import web

from connector.sandbox.atlassian.data import (
    UNBILLED_ROLES,
    Group,
    OrgSpec,
    OrgState,
    ScimUser,
    User,
    Workspace,
    generate,
    iso,
)

DEFAULT_API_KEY = "atl-sandbox-org-key"
DEFAULT_OTHER_ORG_KEY = "atl-sandbox-other-org-key"
DEFAULT_SCIM_TOKEN = "atl-sandbox-scim-token"
# Where a SCIM user carries its Atlassian account id (as ConductorOne's Go connector reads it).
SCIM_ATLASSIAN_EXTENSION = "urn:scim:schemas:extension:atlassian-external:1.0"

V2_LIST_MAX = 100
V2_LIST_DEFAULT = 50
V1_PAGE_SIZE = 50  # fixed; cannot be changed (AX-243)
WORKSPACES_MAX = 1000
WORKSPACES_DEFAULT = 20
TOKENS_MAX = 100
TOKENS_DEFAULT = 50
MAX_IDS_PER_FILTER = 10

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class SandboxOptions:
    """Knobs of the fake organization. Defaults give a small, fast, permissive-but-strict server."""

    spec: OrgSpec = field(default_factory=OrgSpec)
    api_key: str = DEFAULT_API_KEY
    # A valid key scoped to a different organization: answers 404 ADMIN-404-2 on this org's paths.
    other_org_key: str = DEFAULT_OTHER_ORG_KEY
    scim_token: str = DEFAULT_SCIM_TOKEN
    latency: float = 0.0  # seconds every answer takes at least (processing included)
    rate_limit: float | None = None  # requests per second per key (token bucket)
    burst: int | None = None  # bucket size; defaults to max(1, rate_limit)
    retry_after: bool = True  # also send Retry-After on 429 (undocumented for the admin API)
    role_delay: float = 0.0  # seconds before a role change shows in reads
    # Endpoints Atlassian Support must enable per tenant: "roles" (v1 roles/assign|revoke), "invite".
    disabled_endpoints: frozenset[str] = frozenset()
    api_tokens_enabled: bool = True
    duplicate_mode: str = "idempotent"  # or "conflict": 409 on duplicate add, 404 on absent remove
    paid: bool = True  # invite needs at least one paid subscription
    cursor_ttl: float | None = None  # seconds; None = cursors never expire
    v2_get_sunset: bool = False  # the deprecated GET v2 users/groups lists are gone (2027-06-30)
    fail_requests: frozenset[int] = frozenset()  # 1-based request numbers answered with 500
    honour_user_sort: bool = True  # False: accept sortBy on user searches but ignore it
    # What a user search filtered by `roleIds` returns: "effective" = everyone holding the role, directly
    # or through a group; "direct" = direct assignments only. Atlassian does not document which; the
    # connector must be right under both.
    role_filter: str = "effective"
    # Malformed answers: records without the field that names them, by kind ("user" drops accountId,
    # "group" and "workspace" drop id), as a broken gateway or API change would send them.
    malformed: frozenset[str] = frozenset()
    # Whether SCIM users carry the Atlassian extension with their account id.
    scim_extension: bool = True


@dataclass
class SandboxStats:
    requests: int = 0
    rate_limited: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    # User searches and counts by the filters they used, e.g. "users/search resourceIds,roleIds" (so
    # tests can tell a directory walk from a role query without reading bodies).
    by_filter: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0  # the most requests the server was answering at once


class ApiError(Exception):
    def __init__(self, status: int, code: str, title: str, detail: str = "") -> None:
        super().__init__(f"{code} {title}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail


def _error(status: int, code: str, title: str, detail: str = "") -> NoReturn:
    raise ApiError(status, code, title, detail)


def _envelope(err: ApiError) -> web.Response:
    body = {
        "errors": [
            {
                "id": uuid.uuid4().hex,
                "status": str(err.status),
                "code": err.code,
                "title": err.title,
                "detail": err.detail,
            }
        ]
    }
    return web.json_response(body, status=err.status)


def _bad_body(detail: str) -> NoReturn:
    _error(400, "ADMIN-400-24", "Invalid request body", detail)


def _not_enabled(what: str) -> NoReturn:
    # The real code for this answer is not documented; the shape and the advice are what C1's guide says.
    _error(
        403,
        "ADMIN-UAM-403-1",
        "Forbidden",
        f"The {what} API is not enabled for this organization. Contact Atlassian Support to enable it.",
    )


class _Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> tuple[bool, float, float]:
        """(allowed, remaining tokens, seconds until the next token / full bucket)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, self.tokens, (self.burst - self.tokens) / self.rate
        return False, self.tokens, (1.0 - self.tokens) / self.rate


def _reset_header(seconds: float) -> str:
    return iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))


def _as_str_list(body: dict[str, Any], key: str, *, max_items: int | None = MAX_IDS_PER_FILTER) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _bad_body(f"'{key}' must be an array of strings")
    if max_items is not None and len(value) > max_items:
        _bad_body(f"'{key}' accepts at most {max_items} values")
    return list(value)


def _limit(raw: Any, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        _bad_body("'limit' must be an integer")
    if isinstance(raw, bool) or value < 1:
        _bad_body("'limit' must be a positive integer")
    return min(value, maximum)


USER_SEARCH_KEYS = frozenset(
    {
        "cursor",
        "limit",
        "accountIds",
        "directoryIds",
        "resourceIds",
        "groupIds",
        "mfaEnabled",
        "claimStatus",
        "status",
        "accountStatus",
        "membershipStatus",
        "roleIds",
        "emailDomains",
        "searchTerm",
        "emails",
        "sortBy",
        "expand",
    }
)
USER_EXPANDS = frozenset({"platformRoles", "counts.resources", "productAccess", "groups"})
GROUP_SEARCH_KEYS = frozenset(
    {
        "cursor",
        "limit",
        "sortBy",
        "accountIds",
        "directoryIds",
        "roleIds",
        "resourceOwners",
        "resourceIds",
        "searchTerm",
        "groupIds",
        "groupNames",
        "expand",
    }
)
GROUP_EXPANDS = frozenset({"counts.resources", "counts.users"})
WORKSPACE_KEYS = frozenset({"query", "limit", "sort", "cursor"})
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AtlassianSandbox:
    """The running server. Tests read `state` to pick ids and to check effects of provisioning."""

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self.state: OrgState = generate(options.spec, role_delay=options.role_delay)
        self.stats = SandboxStats()
        self._secret = os.urandom(16)
        self._buckets: dict[str, _Bucket] = {}
        self._cache: OrderedDict[tuple[str, str], tuple[int, list[str]]] = OrderedDict()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- public handle ----------------------------------------------------------------------------------

    @property
    def org_id(self) -> str:
        return self.state.org_id

    @property
    def other_org_id(self) -> str:
        return self.state.other_org_id

    @property
    def directory_id(self) -> str:
        return self.state.directory_id

    @property
    def api_key(self) -> str:
        return self.options.api_key

    @property
    def scim_token(self) -> str:
        return self.options.scim_token

    @property
    def scim_base_url(self) -> str:
        return f"{self.base_url}/scim/directory/{self.state.scim_directory_id}"

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        app = self.build_app()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        sock = server.sockets[0]  # type: ignore[attr-defined]
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"{'https' if ssl_context is not None else 'http'}://{shown}:{bound_port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- app --------------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
        org1 = "/admin/v1/orgs/{org_id}"
        org2 = "/admin/v2/orgs/{org_id}"
        d2 = org2 + "/directories/{directory_id}"
        r = app.router
        r.add_get("/admin/v1/orgs", self.list_orgs)
        r.add_get(org1, self.get_org)
        r.add_get(org1 + "/users", self.list_managed_accounts)
        r.add_post(org1 + "/users/{account_id}/roles/assign", self.user_role_assign)
        r.add_post(org1 + "/users/{account_id}/roles/revoke", self.user_role_revoke)
        # v1 directory APIs removed after 2026-06-30.
        for path in (
            org1 + "/users/search",
            org1 + "/groups/search",
            org1 + "/users/invite",
            org1 + "/directory/groups/{tail:.*}",
            org1 + "/directory/users/{account_id}/{tail:(suspend|restore)-access}",
        ):
            r.add_route("*", path, self.removed_v1)
        r.add_get(org2 + "/directories", self.list_directories)
        r.add_get(d2 + "/users", self.get_users)
        r.add_post(d2 + "/users/search", self.search_users)
        r.add_get(d2 + "/users/count", self.count_users)
        r.add_get(d2 + "/users/{account_id}", self.get_user)
        r.add_get(d2 + "/users/{account_id}/role-assignments", self.user_role_assignments)
        r.add_get(d2 + "/groups", self.get_groups)
        r.add_post(d2 + "/groups/search", self.search_groups)
        r.add_get(d2 + "/groups/{group_id}", self.get_group)
        r.add_get(d2 + "/groups/{group_id}/role-assignments", self.group_role_assignments)
        r.add_post(d2 + "/groups/{group_id}/role-assignments/assign", self.group_role_assign)
        r.add_post(d2 + "/groups/{group_id}/role-assignments/revoke", self.group_role_revoke)
        r.add_post(d2 + "/groups/{group_id}/memberships", self.add_membership)
        r.add_post(d2 + "/users/{account_id}/suspend", self.suspend_user)
        r.add_post(d2 + "/users/{account_id}/restore", self.restore_user)
        r.add_post("/users/{account_id}/manage/lifecycle/delete", self.lifecycle_delete)
        r.add_delete(d2 + "/groups/{group_id}/memberships/{account_id}", self.remove_membership)
        r.add_post(org2 + "/users/invite", self.invite)
        r.add_post(org2 + "/workspaces", self.workspaces)
        r.add_get("/admin/api-access/v1/orgs/{org_id}/api-tokens", self.api_tokens)
        scim = "/scim/directory/{scim_directory}/Users"
        r.add_post(scim, self.scim_create)
        r.add_get(scim, self.scim_list)
        r.add_get(scim + "/{scim_id}", self.scim_get)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.stats.requests += 1
        number = self.stats.requests
        info = request.match_info.route.resource
        label = f"{request.method} {info.canonical if info is not None else request.path}"
        self.stats.by_route[label] += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            return await self._answer(request, handler, number)
        finally:
            self.stats.in_flight -= 1

    async def _answer(self, request: web.Request, handler: Handler, number: int) -> web.StreamResponse:
        started = time.monotonic()
        headers: dict[str, str] = {}
        try:
            key = self._authenticate(request)
            headers = self._rate_limit(key)
            if number in self.options.fail_requests:
                _error(500, "ADMIN-500-1", "Internal Server Error", "Injected failure")
            org_id = request.match_info.get("org_id")
            if org_id is not None:
                self._check_org(key, org_id)
            directory = request.match_info.get("directory_id")
            if directory is not None and directory not in ("-", self.state.directory_id):
                _error(404, "ADMIN-404-1", "Not Found", f"Directory {directory} was not found")
            response = await handler(request)
        except ApiError as err:
            response = _envelope(err)
        except web.HTTPMethodNotAllowed:
            response = _envelope(ApiError(405, "ADMIN-405-1", "Method Not Allowed", request.method))
        except web.HTTPNotFound:
            response = _envelope(ApiError(404, "ADMIN-404-1", "Not Found", f"No resource at {request.path}"))
        except _Unauthorized as exc:
            response = exc.response
        for k, v in headers.items():
            response.headers[k] = v
        # `latency` is the upstream's response time: our own processing counts towards it.
        remaining = self.options.latency - (time.monotonic() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        return response

    def _authenticate(self, request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if request.path.startswith("/scim/"):
            if scheme != "Bearer" or not hmac.compare_digest(token.strip(), self.options.scim_token):
                raise _Unauthorized(
                    web.json_response(
                        {
                            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                            "status": "401",
                            "detail": "Unauthorized",
                        },
                        status=401,
                    )
                )
            return "scim"
        token = token.strip()
        if scheme != "Bearer" or token not in (self.options.api_key, self.options.other_org_key):
            # Gateway-level answer: not the ApplicationError envelope (spec A.3).
            raise _Unauthorized(web.json_response({"code": 401, "message": "Unauthorized"}, status=401))
        return token

    def _check_org(self, key: str, org_id: str) -> None:
        visible = self.state.org_id if key == self.options.api_key else self.state.other_org_id
        if key == "scim" or org_id != visible:
            _error(404, "ADMIN-404-2", "Organization not found", f"Organization {org_id} was not found")

    def _rate_limit(self, key: str) -> dict[str, str]:
        rate = self.options.rate_limit
        if not rate:
            return {}
        burst = self.options.burst or max(1, int(rate))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate, burst)
        allowed, remaining, wait = bucket.take()
        headers = {
            "X-RateLimit-Limit": str(burst),
            "X-RateLimit-Remaining": str(int(remaining)),
            "X-RateLimit-Reset": _reset_header(wait),
        }
        if not allowed:
            self.stats.rate_limited += 1
            resp = _envelope(ApiError(429, "ADMIN-429-1", "Rate limit exceeded", "Too many requests"))
            resp.headers.update(headers)
            if self.options.retry_after:
                resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            raise _Unauthorized(resp)
        return headers

    # --- cursors ----------------------------------------------------------------------------------------

    def _cursor(self, kind: str, query: dict[str, Any], offset: int) -> str:
        payload = json.dumps({"k": kind, "q": query, "o": offset, "t": int(time.time())}, sort_keys=True)
        raw = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=")
        sig = hmac.new(self._secret, raw, hashlib.sha256).digest()[:12]
        return (raw + b"." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode()

    def _uncursor(self, kind: str, cursor: Any) -> tuple[dict[str, Any], int]:
        def bad() -> NoReturn:
            _error(400, "ADMIN-400-1", "Invalid page cursor", "The page cursor is invalid or has expired")

        if not isinstance(cursor, str) or "." not in cursor:
            bad()
        raw, _, sig = cursor.partition(".")
        want = base64.urlsafe_b64encode(hmac.new(self._secret, raw.encode(), hashlib.sha256).digest()[:12])
        if not hmac.compare_digest(want.rstrip(b"=").decode(), sig):
            bad()
        try:
            data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except ValueError:
            bad()
        if data.get("k") != kind:
            bad()
        ttl = self.options.cursor_ttl
        if ttl is not None and time.time() - float(data["t"]) > ttl:
            bad()
        return dict(data["q"]), int(data["o"])

    # --- query cache ------------------------------------------------------------------------------------

    def _cached(self, kind: str, query: dict[str, Any], compute: Callable[[], list[str]]) -> list[str]:
        self.state.roles.settle()
        key = (kind, json.dumps(query, sort_keys=True))
        version = self.state.version
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            self._cache.move_to_end(key)
            return hit[1]
        ids = compute()
        self._cache[key] = (version, ids)
        if len(self._cache) > 256:
            self._cache.popitem(last=False)
        return ids

    def _page(
        self, kind: str, query: dict[str, Any], offset: int, limit: int, ids: list[str]
    ) -> tuple[list[str], dict[str, Any]]:
        """Slice + links with opaque cursors. `next` is absent or null on the last page, per endpoint."""
        chunk = ids[offset : offset + limit]
        links: dict[str, Any] = {"self": self._cursor(kind, query, offset)}
        if offset > 0:
            links["prev"] = self._cursor(kind, query, max(0, offset - limit))
        if offset + limit < len(ids):
            links["next"] = self._cursor(kind, query, offset + limit)
        elif kind in ("groups", "group-search", "group-roles"):
            links["next"] = None
        return chunk, links

    # --- helpers ----------------------------------------------------------------------------------------

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        ctype = request.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            _error(415, "ADMIN-UAM-415-1", "Unsupported Media Type", "Send Content-Type: application/json")
        text = await request.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            _bad_body("The request body is not valid JSON")
        if not isinstance(body, dict):
            _bad_body("The request body must be a JSON object")
        return body

    def _user(self, account_id: str) -> User:
        user = self.state.users.get(account_id)
        if user is None:
            _error(404, "ADMIN-404-8", "User not found", f"User {account_id} was not found")
        return user

    def _group(self, group_id: str) -> Group:
        group = self.state.groups.get(group_id)
        if group is None:
            _error(404, "ADMIN-404-10", "Group not found", f"Group {group_id} was not found")
        return group

    def _url(self, request: web.Request, path: str, **query: str) -> str:
        from urllib.parse import urlencode

        qs = f"?{urlencode(query)}" if query else ""
        return f"{self.base_url or str(request.url.origin())}{path}{qs}"

    # --- v1 organizations and managed accounts ----------------------------------------------------------

    def _org_json(self, request: web.Request, org_id: str) -> dict[str, Any]:
        name = self.state.org_name if org_id == self.state.org_id else "Other Org"
        return {
            "id": org_id,
            "type": "orgs",
            "attributes": {"name": name},
            "relationships": {
                "domains": {"links": {"related": self._url(request, f"/admin/v1/orgs/{org_id}/domains")}},
                "users": {"links": {"related": self._url(request, f"/admin/v1/orgs/{org_id}/users")}},
            },
            "links": {"self": self._url(request, f"/admin/v1/orgs/{org_id}")},
        }

    async def list_orgs(self, request: web.Request) -> web.Response:
        key = request.headers["Authorization"].partition(" ")[2].strip()
        org_id = self.state.org_id if key == self.options.api_key else self.state.other_org_id
        return web.json_response(
            {
                "data": [self._org_json(request, org_id)],
                "links": {"self": self._url(request, "/admin/v1/orgs")},
            }
        )

    async def get_org(self, request: web.Request) -> web.Response:
        return web.json_response({"data": self._org_json(request, request.match_info["org_id"])})

    async def list_managed_accounts(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        query: dict[str, Any] = {}
        offset = 0
        if "cursor" in request.query:
            query, offset = self._uncursor("managed", request.query["cursor"])

        def compute() -> list[str]:
            return [u.account_id for u in self.state.users.values() if u.claim_status == "managed"]

        ids = self._cached("managed", query, compute)
        chunk = ids[offset : offset + V1_PAGE_SIZE]
        path = f"/admin/v1/orgs/{org_id}/users"
        links: dict[str, Any] = {"self": self._url(request, path)}
        if offset:
            links["prev"] = self._url(
                request, path, cursor=self._cursor("managed", query, max(0, offset - V1_PAGE_SIZE))
            )
        if offset + V1_PAGE_SIZE < len(ids):
            links["next"] = self._url(
                request, path, cursor=self._cursor("managed", query, offset + V1_PAGE_SIZE)
            )
        data = []
        for aid in chunk:
            u = self.state.users[aid]
            item: dict[str, Any] = {
                "account_id": u.account_id,
                "account_type": u.account_type,
                "account_status": u.account_status,
                "name": u.name,
                "picture": f"https://avatar.example/{u.account_id}.png",
                "access_billable": u.status == "active",
                "product_access": [
                    {
                        "key": self.state.workspaces[ws].type_key,
                        "name": self.state.workspaces[ws].name,
                        "url": self.state.workspaces[ws].host_url,
                        "last_active": seen,
                    }
                    for ws, seen in sorted(u.last_active.items())
                    if ws in self.state.workspaces
                ],
                "links": {"self": self._url(request, f"{path}/{u.account_id}")},
            }
            if u.email is not None:
                item["email"] = u.email
            if u.last_active:
                item["last_active"] = max(u.last_active.values())
            data.append(item)
        return web.json_response({"data": data, "meta": {"total": len(ids)}, "links": links})

    async def removed_v1(self, request: web.Request) -> web.Response:
        _error(
            404,
            "ADMIN-404-1",
            "Not Found",
            "This API was removed after 2026-06-30; use the v2 organization APIs",
        )

    # --- v2 directories ---------------------------------------------------------------------------------

    async def list_directories(self, request: web.Request) -> web.Response:
        if "cursor" in request.query:
            query, offset = self._uncursor("directories", request.query["cursor"])
        else:
            query, offset = {"limit": _limit(request.query.get("limit"), V2_LIST_DEFAULT, V2_LIST_MAX)}, 0
            if "accountId" in request.query:
                query["accountId"] = request.query["accountId"]
        ids = [self.state.directory_id]
        if "accountId" in query:
            # The directories the account is a member of (none for an unknown or never-invited one).
            member = self.state.users.get(query["accountId"])
            if member is None or member.membership_status == "no_membership":
                ids = []
        chunk, links = self._page("directories", query, offset, int(query["limit"]), ids)
        data = [
            {
                "directoryId": d,
                "name": self.state.directory_name,
                "icon": "https://admin.atlassian.example/icons/directory.svg",
            }
            for d in chunk
        ]
        return web.json_response({"data": data, "links": links})

    # --- v2 users ---------------------------------------------------------------------------------------

    def _user_query_from_get(self, request: web.Request) -> dict[str, Any]:
        q: dict[str, Any] = {}
        for key in (
            "accountIds",
            "directoryIds",
            "resourceIds",
            "groupIds",
            "status",
            "accountStatus",
            "membershipStatus",
            "roleIds",
            "emailDomains",
        ):
            values = request.query.getall(key, [])
            if values:
                if len(values) > MAX_IDS_PER_FILTER:
                    _bad_body(f"'{key}' accepts at most {MAX_IDS_PER_FILTER} values")
                q[key] = list(values)
        for key in ("claimStatus", "searchTerm"):
            if key in request.query:
                q[key] = request.query[key]
        if "mfaEnabled" in request.query:
            q["mfaEnabled"] = request.query["mfaEnabled"].lower() == "true"
        q["limit"] = _limit(request.query.get("limit"), V2_LIST_DEFAULT, V2_LIST_MAX)
        return q

    def _user_query_from_body(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(body) - USER_SEARCH_KEYS)
        if unknown:
            _bad_body(f"Unknown property '{unknown[0]}'")
        q: dict[str, Any] = {}
        for key in (
            "accountIds",
            "directoryIds",
            "resourceIds",
            "groupIds",
            "status",
            "accountStatus",
            "membershipStatus",
            "roleIds",
            "emailDomains",
            "emails",
        ):
            values = _as_str_list(body, key)
            if values:
                q[key] = values
        if "searchTerm" in body and "emails" in body:
            _bad_body("'searchTerm' and 'emails' cannot be used together")
        for key in ("claimStatus", "searchTerm"):
            if key in body:
                if not isinstance(body[key], str):
                    _bad_body(f"'{key}' must be a string")
                q[key] = body[key]
        if "mfaEnabled" in body:
            if not isinstance(body["mfaEnabled"], bool):
                _bad_body("'mfaEnabled' must be a boolean")
            q["mfaEnabled"] = body["mfaEnabled"]
        expand = _as_str_list(body, "expand", max_items=None)
        bad = sorted(set(expand) - USER_EXPANDS)
        if bad:
            _bad_body(f"Unknown expand value '{bad[0]}'")
        if expand:
            q["expand"] = sorted(set(expand))
        if "sortBy" in body:
            q["sortBy"] = _sort_by(body["sortBy"], {"nick_name"})
        q["limit"] = _limit(body.get("limit"), V2_LIST_DEFAULT, V2_LIST_MAX)
        return q

    def _filter_users(self, q: dict[str, Any]) -> list[str]:
        st = self.state
        users: list[User]
        if "accountIds" in q:
            users = [st.users[a] for a in q["accountIds"] if a in st.users]
        else:
            users = list(st.users.values())
        if "directoryIds" in q:
            if st.directory_id not in q["directoryIds"]:
                return []
            # Managed accounts without a directory membership are only returned without this filter.
            users = [u for u in users if u.membership_status != "no_membership"]
        if "groupIds" in q:
            allowed: set[str] = set()
            for gid in q["groupIds"]:
                allowed |= st.members(gid)
            users = [u for u in users if u.account_id in allowed]
        if "resourceIds" in q or "roleIds" in q:
            holders: set[str] = set()
            ws_ids = q.get("resourceIds") or list(st.workspaces)
            for ws in ws_ids:
                wsobj = st.workspaces.get(ws)
                if wsobj is None:
                    continue
                for role in q.get("roleIds") or wsobj.roles:
                    if self.options.role_filter == "direct":
                        holders |= st.direct_users(ws, role)
                    else:
                        holders |= st.effective_users(ws, role)
            users = [u for u in users if u.account_id in holders]
        if "mfaEnabled" in q:
            users = [u for u in users if u.mfa_enabled == q["mfaEnabled"]]
        if "claimStatus" in q:
            users = [u for u in users if u.claim_status == q["claimStatus"]]
        if "status" in q:
            users = [u for u in users if u.status in q["status"]]
        if "accountStatus" in q:
            users = [u for u in users if u.account_status in q["accountStatus"]]
        if "membershipStatus" in q:
            users = [u for u in users if u.membership_status in q["membershipStatus"]]
        if "emailDomains" in q:
            domains = {d.lower() for d in q["emailDomains"]}
            users = [u for u in users if u.email and u.email.rpartition("@")[2].lower() in domains]
        if "searchTerm" in q:
            term = q["searchTerm"].lower()
            users = [
                u
                for u in users
                if term in u.name.lower()
                or term in u.nickname.lower()
                or (u.email is not None and term in u.email.lower())
            ]
        if "emails" in q:
            wanted = {e.lower() for e in q["emails"]}
            users = [u for u in users if u.email and u.email.lower() in wanted]
        for sort in q.get("sortBy", []) if self.options.honour_user_sort else []:
            users.sort(key=lambda u: u.nickname.lower(), reverse=sort["direction"] == "desc")
        return [u.account_id for u in users]

    def _user_json(self, u: User, expand: Sequence[str]) -> dict[str, Any]:
        st = self.state
        item: dict[str, Any] = {
            "accountId": u.account_id,
            "accountType": u.account_type,
            "status": u.status,
            "accountStatus": u.account_status,
            "membershipStatus": u.membership_status,
            "addedToOrg": u.added_to_org,
            "name": u.name,
            "nickname": u.nickname,
            "emailVerified": u.email_verified,
            "claimStatus": u.claim_status,
            "picture": f"https://avatar.example/{u.account_id}.png",
            "avatar": f"https://avatar.example/{u.account_id}.png",
            "managementSource": u.management_source,
            "mfaEnabled": u.mfa_enabled,
            "jobTitle": u.job_title,
            "department": u.department,
            "organization": u.organization,
            "location": u.location,
            "timeZone": u.time_zone,
            "forDeletion": u.for_deletion,
            "links": {"self": base64.urlsafe_b64encode(u.account_id.encode()).decode().rstrip("=")},
        }
        if u.email is not None:
            item["email"] = u.email
        if u.deactivated_on is not None:
            item["deactivatedOn"] = u.deactivated_on
        if "platformRoles" in expand:
            item["platformRoles"] = list(u.platform_roles)
        if "counts.resources" in expand or "productAccess" in expand:
            access = st.user_assignment_methods(u.account_id)
            if "counts.resources" in expand:
                item["counts"] = {"resources": len(access)}
            if "productAccess" in expand:
                item["productAccess"] = [
                    {
                        "key": st.workspaces[ws].type_key,
                        "id": ws,
                        "lastActiveTimestamp": u.last_active.get(ws),
                    }
                    for ws in sorted(access)
                    if ws in st.workspaces
                ]
        if "groups" in expand:
            item["groups"] = [
                {"id": g.id, "name": g.name, "description": g.description}
                for g in sorted(
                    (st.groups[gid] for gid in st.user_groups.get(u.account_id, ()) if gid in st.groups),
                    key=lambda g: g.name,
                )
            ]
        if "user" in self.options.malformed:
            del item["accountId"]
        return item

    async def get_users(self, request: web.Request) -> web.Response:
        if self.options.v2_get_sunset:
            await self.removed_v2(request)
        if "cursor" in request.query:
            # "If present, all other parameters are discarded."
            q, offset = self._uncursor("users", request.query["cursor"])
        else:
            q, offset = self._user_query_from_get(request), 0
        return self._users_page("users", q, offset)

    async def search_users(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if "cursor" in body:
            if len(body) > 1:
                _bad_body("When a cursor is provided in the request body, no other properties may be present")
            q, offset = self._uncursor("user-search", body["cursor"])
        else:
            q, offset = self._user_query_from_body(body), 0
        return self._users_page("user-search", q, offset)

    def _note_filters(self, what: str, filters: dict[str, Any]) -> None:
        self.stats.by_filter[f"{what} {','.join(sorted(k for k in filters if k != 'sortBy'))}".rstrip()] += 1

    def _users_page(self, kind: str, q: dict[str, Any], offset: int) -> web.Response:
        filters = {k: v for k, v in q.items() if k not in ("limit", "expand")}
        self._note_filters("users/search" if kind == "user-search" else "users", filters)
        ids = self._cached("users", filters, lambda: self._filter_users(filters))
        chunk, links = self._page(kind, q, offset, int(q["limit"]), ids)
        expand = q.get("expand", [])
        data = [self._user_json(self.state.users[a], expand) for a in chunk]
        return web.json_response({"data": data, "links": links})

    async def count_users(self, request: web.Request) -> web.Response:
        q = self._user_query_from_get(request)
        q.pop("limit", None)
        self._note_filters("users/count", q)
        ids = self._cached("users", q, lambda: self._filter_users(q))
        return web.json_response({"count": len(ids)})

    async def get_user(self, request: web.Request) -> web.Response:
        self.state.roles.settle()
        user = self._user(request.match_info["account_id"])
        return web.json_response({"data": self._user_json(user, ["platformRoles", "productAccess"])})

    async def user_role_assignments(self, request: web.Request) -> web.Response:
        account_id = request.match_info["account_id"]
        user = self._user(account_id)
        if "cursor" in request.query:
            q, offset = self._uncursor("user-roles", request.query["cursor"])
        else:
            limit = _limit(request.query.get("limit"), V2_LIST_DEFAULT, V2_LIST_MAX)
            q = {"account": account_id, "limit": limit}
            for key in ("resourceIds", "roleIds"):
                values = request.query.getall(key, [])
                if values:
                    q[key] = list(values)
            offset = 0
        self.state.roles.settle()
        methods = self.state.user_assignment_methods(q["account"])
        items: list[dict[str, Any]] = []
        for ws in sorted(methods):
            if "resourceIds" in q and ws not in q["resourceIds"]:
                continue
            wsobj = self.state.workspaces.get(ws)
            roles = {r: m for r, m in methods[ws].items() if "roleIds" not in q or r in q["roleIds"]}
            if not roles:
                continue
            items.append(
                {
                    "resourceId": ws,
                    "resourceOwner": wsobj.type_key if wsobj else None,
                    "roles": sorted(roles),
                    "roleAssignments": [
                        {"role": r, "roleAssignmentMethods": m} for r, m in sorted(roles.items())
                    ],
                    "directoryId": self.state.directory_id,
                    "userDirectoryStatus": user.membership_status,
                }
            )
        others = [
            ("platform", f"ari:cloud:platform::org/{self.state.org_id}", r) for r in user.platform_roles
        ]
        for owner, resource_id, role in [*others, *user.other_roles]:
            if "roleIds" in q and role not in q["roleIds"]:
                continue
            if "resourceIds" in q and resource_id not in q["resourceIds"]:
                continue
            platform = owner == "platform"
            items.append(
                {
                    "resourceId": resource_id,
                    "resourceOwner": owner,
                    "roles": [role],
                    "roleAssignments": [{"role": role, "roleAssignmentMethods": ["direct"]}],
                    # Null for platform roles (spec A.4.5).
                    "directoryId": None if platform else self.state.directory_id,
                    "userDirectoryStatus": None if platform else user.membership_status,
                }
            )
        limit = int(q["limit"])
        chunk = items[offset : offset + limit]
        links: dict[str, Any] = {"self": self._cursor("user-roles", q, offset)}
        if offset + limit < len(items):
            links["next"] = self._cursor("user-roles", q, offset + limit)
        return web.json_response({"data": chunk, "links": links})

    # --- v2 groups --------------------------------------------------------------------------------------

    def _group_json(self, g: Group, expand: Sequence[str]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": g.id,
            "name": g.name,
            "description": g.description,
            "directoryId": g.directory_id,
            "managementAccess": {"deletable": g.modifiable, "modifiable": g.modifiable, "readable": True},
            "externalSynced": g.external_synced,
            "managedBy": g.managed_by,
            "links": {"self": base64.urlsafe_b64encode(g.id.encode()).decode().rstrip("=")},
        }
        counts: dict[str, int] = {}
        if "counts.users" in expand:
            counts["users"] = len(self.state.members(g.id))
        if "counts.resources" in expand:
            counts["resources"] = len(self.state.roles.group_roles(g.id))
        if counts:
            item["counts"] = counts
        if "group" in self.options.malformed:
            del item["id"]
        return item

    def _filter_groups(self, q: dict[str, Any]) -> list[str]:
        st = self.state
        groups = list(st.groups.values())
        if "groupIds" in q:
            wanted = set(q["groupIds"])
            groups = [g for g in groups if g.id in wanted]
        if "groupNames" in q:
            names = set(q["groupNames"])
            groups = [g for g in groups if g.name in names]
        if "directoryIds" in q:
            groups = [g for g in groups if g.directory_id in q["directoryIds"]]
        if "accountIds" in q:
            holders: set[str] = set()
            for a in q["accountIds"]:
                holders |= st.user_groups.get(a, set())
            groups = [g for g in groups if g.id in holders]
        if "resourceIds" in q or "roleIds" in q:
            allowed: set[str] = set()
            for ws in q.get("resourceIds") or list(st.workspaces):
                wsobj = st.workspaces.get(ws)
                if wsobj is None:
                    continue
                for role in q.get("roleIds") or wsobj.roles:
                    allowed |= st.roles.groups_by_role.get((ws, role), set())
            groups = [g for g in groups if g.id in allowed]
        if "searchTerm" in q:
            term = q["searchTerm"].lower()
            groups = [g for g in groups if term in g.name.lower()]
        for sort in q.get("sortBy", []):
            groups.sort(key=lambda g: g.name.lower(), reverse=sort["direction"] == "desc")
        return [g.id for g in groups]

    async def get_groups(self, request: web.Request) -> web.Response:
        if self.options.v2_get_sunset:
            await self.removed_v2(request)
        if "cursor" in request.query:
            q, offset = self._uncursor("groups", request.query["cursor"])
        else:
            q = {"limit": _limit(request.query.get("limit"), V2_LIST_DEFAULT, V2_LIST_MAX)}
            for key in ("directoryIds", "accountIds", "groupIds", "resourceIds", "roleIds"):
                values = request.query.getall(key, [])
                if values:
                    if len(values) > MAX_IDS_PER_FILTER:
                        _bad_body(f"'{key}' accepts at most {MAX_IDS_PER_FILTER} values")
                    q[key] = list(values)
            if "searchTerm" in request.query:
                q["searchTerm"] = request.query["searchTerm"]
            q["expand"] = ["counts.resources", "counts.users"]
            offset = 0
        return self._groups_page("groups", q, offset)

    async def search_groups(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if "cursor" in body:
            if len(body) > 1:
                _bad_body("When a cursor is provided in the request body, no other properties may be present")
            q, offset = self._uncursor("group-search", body["cursor"])
        else:
            unknown = sorted(set(body) - GROUP_SEARCH_KEYS)
            if unknown:
                _bad_body(f"Unknown property '{unknown[0]}'")
            q = {}
            for key in (
                "accountIds",
                "directoryIds",
                "roleIds",
                "resourceOwners",
                "resourceIds",
                "groupIds",
                "groupNames",
            ):
                values = _as_str_list(body, key)
                if values:
                    q[key] = values
            if "searchTerm" in body:
                if not isinstance(body["searchTerm"], str):
                    _bad_body("'searchTerm' must be a string")
                q["searchTerm"] = body["searchTerm"]
            expand = _as_str_list(body, "expand", max_items=None)
            bad = sorted(set(expand) - GROUP_EXPANDS)
            if bad:
                _bad_body(f"Unknown expand value '{bad[0]}'")
            if expand:
                q["expand"] = sorted(set(expand))
            if "sortBy" in body:
                q["sortBy"] = _sort_by(body["sortBy"], {"name"})
            q["limit"] = _limit(body.get("limit"), V2_LIST_DEFAULT, V2_LIST_MAX)
            offset = 0
        return self._groups_page("group-search", q, offset)

    def _groups_page(self, kind: str, q: dict[str, Any], offset: int) -> web.Response:
        filters = {k: v for k, v in q.items() if k not in ("limit", "expand", "resourceOwners")}
        ids = self._cached("groups", filters, lambda: self._filter_groups(filters))
        chunk, links = self._page(kind, q, offset, int(q["limit"]), ids)
        expand = q.get("expand", [])
        data = [self._group_json(self.state.groups[g], expand) for g in chunk]
        return web.json_response({"data": data, "links": links})

    async def get_group(self, request: web.Request) -> web.Response:
        group = self._group(request.match_info["group_id"])
        return web.json_response({"data": self._group_json(group, ["counts.resources", "counts.users"])})

    async def group_role_assignments(self, request: web.Request) -> web.Response:
        group = self._group(request.match_info["group_id"])
        if "cursor" in request.query:
            q, offset = self._uncursor("group-roles", request.query["cursor"])
        else:
            q = {"group": group.id, "limit": _limit(request.query.get("limit"), V2_LIST_DEFAULT, V2_LIST_MAX)}
            for key in ("resourceIds", "roleIds"):
                values = request.query.getall(key, [])
                if values:
                    q[key] = list(values)
            offset = 0
        self.state.roles.settle()
        items: list[dict[str, Any]] = []
        for ws, roles in sorted(self.state.roles.group_roles(q["group"]).items()):
            if "resourceIds" in q and ws not in q["resourceIds"]:
                continue
            picked = sorted(r for r in roles if "roleIds" not in q or r in q["roleIds"])
            if not picked:
                continue
            wsobj = self.state.workspaces.get(ws)
            # A group's assignment carries plain role ids (no assignment methods: a group's roles are
            # always its own), and the role new members get by default.
            items.append(
                {
                    "resourceId": ws,
                    "resourceOwner": wsobj.type_key if wsobj else None,
                    "defaultRole": picked[0],
                    "roles": picked,
                }
            )
        limit = int(q["limit"])
        chunk = items[offset : offset + limit]
        links: dict[str, Any] = {"self": self._cursor("group-roles", q, offset)}
        more = offset + limit < len(items)
        links["next"] = self._cursor("group-roles", q, offset + limit) if more else None
        return web.json_response({"data": chunk, "links": links})

    async def removed_v2(self, request: web.Request) -> NoReturn:
        _error(404, "ADMIN-404-1", "Not Found", "This API was removed after 2027-06-30; use POST .../search")

    # --- memberships ------------------------------------------------------------------------------------

    async def add_membership(self, request: web.Request) -> web.Response:
        group = self._group(request.match_info["group_id"])
        body = await self._json_body(request)
        if set(body) != {"accountId"} or not isinstance(body["accountId"], str):
            _bad_body('The body must be {"accountId": "..."}')
        user = self._user(body["accountId"])
        if not group.modifiable:
            _error(
                403,
                "ADMIN-403-5",
                "Not allowed to manage the group",
                f"Group {group.name} is managed by an identity provider and cannot be modified",
            )
        if not self.state.add_member(group.id, user.account_id) and self.options.duplicate_mode == "conflict":
            _error(409, "ADMIN-409-28", "Conflict", "The user is already a member of the group")
        return web.Response(status=204)

    async def remove_membership(self, request: web.Request) -> web.Response:
        group = self._group(request.match_info["group_id"])
        user = self._user(request.match_info["account_id"])
        if not group.modifiable:
            _error(
                403,
                "ADMIN-403-5",
                "Not allowed to manage the group",
                f"Group {group.name} is managed by an identity provider and cannot be modified",
            )
        removed = self.state.remove_member(group.id, user.account_id)
        if not removed and self.options.duplicate_mode == "conflict":
            _error(404, "ADMIN-404-1", "Not Found", "The user is not a member of the group")
        return web.Response(status=204)

    # --- role assignment --------------------------------------------------------------------------------

    def _check_role(self, ws: Workspace, role: str, *, title_code: str = "ADMIN-UAM-400-3") -> None:
        if role not in ws.roles:
            _error(
                400,
                title_code,
                "Invalid role for resource",
                f"Role {role} is not available for {ws.type_key} resource {ws.id}",
            )

    def _check_seats(self, ws: Workspace, role: str, adding: set[str]) -> None:
        if role in UNBILLED_ROLES:
            return
        if len(self.state.seat_holders(ws.id) | adding) > ws.capacity:
            _error(
                409,
                "ADMIN-UAM-409-3",
                "Product license limit exceeded",
                f"{ws.name} has no free seats ({ws.capacity} in use)",
            )

    def _resolve_user_resource(self, resource: Any, role: str) -> Workspace:
        if not isinstance(resource, str) or not resource:
            _error(400, "ADMIN-UAM-400-5", "Empty/Invalid Resource", "Cloud Resource is invalid")
        # ID-8887: the workspaces API returns jira-admin ARIs that role assignment rejects; the jira ARI of
        # the same site is accepted for atlassian/admin instead.
        if resource.startswith("ari:cloud:jira-admin::"):
            _error(400, "ADMIN-UAM-400-5", "Empty/Invalid Resource", "Cloud Resource is invalid")
        if resource.startswith("ari:cloud:jira::site/") and role == "atlassian/admin":
            alias = "ari:cloud:jira-admin::site/" + resource.rpartition("/")[2]
            if alias in self.state.workspaces:
                return self.state.workspaces[alias]
        ws = self.state.workspaces.get(resource)
        if ws is None:
            _error(400, "ADMIN-UAM-400-5", "Empty/Invalid Resource", "Cloud Resource is invalid")
        return ws

    async def _user_role_change(self, request: web.Request, add: bool) -> web.Response:
        if "roles" in self.options.disabled_endpoints:
            _not_enabled("Grant User Access" if add else "Revoke User Access")
        body = await self._json_body(request)
        unknown = sorted(set(body) - {"role", "resource"})
        if unknown:
            _bad_body(f"Unknown property '{unknown[0]}'")
        role = body.get("role")
        if not isinstance(role, str) or not role:
            _error(400, "ADMIN-UAM-400-1", "Bad Request", "'role' is required")
        user = self._user(request.match_info["account_id"])
        ws = self._resolve_user_resource(body.get("resource"), role)
        self._check_role(ws, role)
        if add and user.status in ("deactivated", "for_deletion"):
            _error(400, "ADMIN-UAM-400-2", "Inactive user", f"User {user.account_id} is not active")
        if add and not self.state.roles.has("user", user.account_id, ws.id, role):
            self._check_seats(ws, role, {user.account_id})
        changed = self.state.roles.change("user", user.account_id, ws.id, role, add)
        if not changed and self.options.duplicate_mode == "conflict":
            if add:
                _error(409, "ADMIN-UAM-409-2", "Resource conflicts", "The role is already assigned")
            _error(404, "ADMIN-UAM-404-1", "Unknown resource", "The role is not assigned")
        return web.json_response({})

    async def user_role_assign(self, request: web.Request) -> web.Response:
        return await self._user_role_change(request, True)

    async def user_role_revoke(self, request: web.Request) -> web.Response:
        return await self._user_role_change(request, False)

    async def _group_role_change(self, request: web.Request, add: bool) -> web.Response:
        group = self._group(request.match_info["group_id"])
        body = await self._json_body(request)
        if set(body) != {"resourceId", "roleId"}:
            _bad_body('The body must be {"resourceId": "...", "roleId": "..."}')
        ws = self.state.workspaces.get(body["resourceId"]) if isinstance(body["resourceId"], str) else None
        if ws is None:
            _error(400, "ADMIN-UAM-400-5", "Empty/Invalid Resource", "Cloud Resource is invalid")
        role = body["roleId"]
        if not isinstance(role, str):
            _bad_body("'roleId' must be a string")
        self._check_role(ws, role)
        if add and not self.state.roles.has("group", group.id, ws.id, role):
            self._check_seats(ws, role, set(self.state.members(group.id)))
        changed = self.state.roles.change("group", group.id, ws.id, role, add)
        if not changed and self.options.duplicate_mode == "conflict":
            if add:
                _error(409, "ADMIN-UAM-409-2", "Resource conflicts", "The role is already assigned")
            _error(404, "ADMIN-UAM-404-1", "Unknown resource", "The role is not assigned")
        return web.Response(status=204)

    async def group_role_assign(self, request: web.Request) -> web.Response:
        return await self._group_role_change(request, True)

    async def group_role_revoke(self, request: web.Request) -> web.Response:
        return await self._group_role_change(request, False)

    # --- invite -----------------------------------------------------------------------------------------

    async def invite(self, request: web.Request) -> web.Response:
        if "invite" in self.options.disabled_endpoints:
            _not_enabled("Invite User to Org")
        if not self.options.paid:
            _error(
                402,
                "ADMIN-UAM-402-1",
                "Payment required",
                "Inviting users requires at least one paid subscription",
            )
        body = await self._json_body(request)
        allowed = {"emails", "permissionRules", "additionalGroups", "sendNotification", "notificationText"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            _bad_body(f"Unknown property '{unknown[0]}'")
        emails = _as_str_list(body, "emails")
        if not emails:
            _error(400, "ADMIN-UAM-400-1", "Bad Request", "'emails' must list at least one address")
        for e in emails:
            if not _EMAIL_RE.match(e):
                _error(400, "ADMIN-UAM-400-1", "Bad Request", f"'{e}' is not a valid email address")
        rules = body.get("permissionRules") or []
        if not isinstance(rules, list) or not all(
            isinstance(r, dict) and set(r) == {"resource", "role"} for r in rules
        ):
            _bad_body("'permissionRules' must be an array of {resource, role}")
        groups = _as_str_list(body, "additionalGroups")
        data = []
        for email in emails:
            user = self.state.user_by_email(email) or self.state.new_account(email)
            role_results = []
            for rule in rules:
                try:
                    ws = self.state.workspaces.get(rule["resource"])
                    if ws is None:
                        _error(400, "ADMIN-UAM-400-5", "Empty/Invalid Resource", "Cloud Resource is invalid")
                    self._check_role(ws, rule["role"])
                    if not self.state.roles.has("user", user.account_id, ws.id, rule["role"]):
                        self._check_seats(ws, rule["role"], {user.account_id})
                    self.state.roles.change("user", user.account_id, ws.id, rule["role"], True)
                    role_results.append({"resource": ws.id, "role": rule["role"], "status": "INVITED"})
                except ApiError as err:
                    role_results.append(
                        {
                            "resource": rule["resource"],
                            "role": rule["role"],
                            "status": "ERROR",
                            "statusReason": f"{err.code} {err.title}: {err.detail}",
                        }
                    )
            group_results = []
            for gid in groups:
                group = self.state.groups.get(gid)
                if group is None:
                    group_results.append({"group": gid, "status": "ERROR", "statusReason": "Group not found"})
                elif not group.modifiable:
                    group_results.append(
                        {
                            "group": gid,
                            "status": "ERROR",
                            "statusReason": "Group is managed by an identity provider",
                        }
                    )
                else:
                    self.state.add_member(gid, user.account_id)
                    group_results.append({"group": gid, "status": "INVITED"})
            data.append(
                {
                    "id": user.account_id,
                    "email": user.email,
                    "results": [
                        {"roleAssignmentResult": role_results, "groupAssignmentResult": group_results}
                    ],
                }
            )
        return web.json_response({"data": data})

    # --- workspaces -------------------------------------------------------------------------------------

    def _workspace_json(self, ws: Workspace) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "name": ws.name,
            "typeKey": ws.type_key,
            "type": ws.type_key,
            "owner": self.state.org_id,
            "status": ws.status,
            "statusDetails": [],
            "icons": {},
            "avatars": {},
            "labels": [],
            "usage": self.state.seat_usage(ws.id),
            "capacity": ws.capacity,
            "createdAt": ws.created_at,
            "createdBy": "system",
            "updatedAt": ws.created_at,
            "hostUrl": ws.host_url,
            "realm": "us",
            "regions": ["us"],
        }
        if ws.sandbox:
            attrs["sandbox"] = {"type": "CHILD"}
        item: dict[str, Any] = {
            "id": ws.id,
            "type": "workspace",
            "attributes": attrs,
            "links": {"self": f"{self.base_url}/admin/v2/orgs/{self.state.org_id}/workspaces/{ws.id}"},
            "relationships": {},
        }
        if "workspace" in self.options.malformed:
            del item["id"]
        return item

    def _match_query(self, ws: Workspace, query: Any) -> bool:
        if query is None:
            return True
        if not isinstance(query, dict) or len(query) != 1:
            _bad_body("'query' must have exactly one variant")
        ((variant, value),) = query.items()
        if variant == "and":
            if not isinstance(value, list):
                _bad_body("'query.and' must be an array")
            return all(self._match_query(ws, q) for q in value)
        if variant == "nor":
            if not isinstance(value, list):
                _bad_body("'query.nor' must be an array")
            return not any(self._match_query(ws, q) for q in value)
        if variant == "field":
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                _bad_body("'query.field' needs a name and values")
            values = value.get("values")
            if not isinstance(values, list):
                _bad_body("'query.field.values' must be an array")
            attr = {
                "id": ws.id,
                "attributes.typeKey": ws.type_key,
                "attributes.status": ws.status,
                "attributes.name": ws.name,
                "attributes.hostUrl": ws.host_url,
            }.get(value["name"])
            if attr is None:
                _bad_body(f"Unknown field '{value['name']}'")
            return attr in values
        if variant in ("search", "features", "policies"):
            return True
        _bad_body(f"Unknown query variant '{variant}'")

    async def workspaces(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if "cursor" in body:
            if len(body) > 1:
                _bad_body("When a cursor is provided in the request body, no other properties may be present")
            q, offset = self._uncursor("workspaces", body["cursor"])
        else:
            unknown = sorted(set(body) - WORKSPACE_KEYS)
            if unknown:
                _bad_body(f"Unknown property '{unknown[0]}'")
            q = {"limit": _limit(body.get("limit"), WORKSPACES_DEFAULT, WORKSPACES_MAX)}
            if "query" in body:
                q["query"] = body["query"]
            if "sort" in body:
                sort = body["sort"]
                if not isinstance(sort, list) or not all(
                    isinstance(s, dict) and s.get("field") == "attributes.name.raw" for s in sort
                ):
                    _bad_body("'sort' supports field attributes.name.raw")
                q["sort"] = sort
            offset = 0
        items = [ws for ws in self.state.workspaces.values() if self._match_query(ws, q.get("query"))]
        for s in q.get("sort", []):
            items.sort(key=lambda w: w.name, reverse=str(s.get("order", "asc")).lower() == "desc")
        limit = int(q["limit"])
        chunk = items[offset : offset + limit]
        links: dict[str, Any] = {"self": self._cursor("workspaces", q, offset)}
        if offset:
            links["prev"] = self._cursor("workspaces", q, max(0, offset - limit))
        if offset + limit < len(items):
            links["next"] = self._cursor("workspaces", q, offset + limit)
        meta = {
            "pageSize": limit,
            "startIndex": offset,
            "endIndex": offset + len(chunk),
            "total": len(items),
        }
        return web.json_response(
            {"data": [self._workspace_json(w) for w in chunk], "links": links, "meta": meta}
        )

    # --- API tokens -------------------------------------------------------------------------------------

    async def api_tokens(self, request: web.Request) -> web.Response:
        if not self.options.api_tokens_enabled:
            _error(
                404,
                "ADMIN-404-1",
                "Not Found",
                "API token management is not available for this organization",
            )
        org_id = request.match_info["org_id"]
        if "cursor" in request.query:
            q, offset = self._uncursor("tokens", request.query["cursor"])
        else:
            q = {"limit": _limit(request.query.get("limit"), TOKENS_DEFAULT, TOKENS_MAX)}
            if "status" in request.query:
                q["status"] = request.query["status"]
            offset = 0
        tokens = [t for t in self.state.tokens if "status" not in q or t.status == q["status"]]
        limit = int(q["limit"])
        chunk = tokens[offset : offset + limit]
        path = f"/admin/api-access/v1/orgs/{org_id}/api-tokens"
        links: dict[str, Any] = {"self": self._url(request, path)}
        if offset:
            links["prev"] = self._url(request, path, cursor=self._cursor("tokens", q, max(0, offset - limit)))
        if offset + limit < len(tokens):
            links["next"] = self._url(request, path, cursor=self._cursor("tokens", q, offset + limit))
        data = []
        for t in chunk:
            user = self.state.users.get(t.account_id)
            data.append(
                {
                    "id": t.id,
                    "label": t.label,
                    "status": t.status,
                    "createdAt": t.created_at,
                    "expiresAt": t.expires_at,
                    "lastActiveAt": t.last_active_at,
                    "user": {
                        "id": t.account_id,
                        "orgId": org_id,
                        "name": user.name if user else "",
                        "email": user.email if user else None,
                    },
                }
            )
        return web.json_response({"data": data, "links": links})

    # --- SCIM -------------------------------------------------------------------------------------------

    def _scim_error(self, status: int, detail: str, scim_type: str | None = None) -> web.Response:
        body: dict[str, Any] = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": str(status),
            "detail": detail,
        }
        if scim_type:
            body["scimType"] = scim_type
        return web.json_response(body, status=status, content_type="application/scim+json")

    def _scim_json(self, s: ScimUser) -> dict[str, Any]:
        user = self.state.users.get(s.account_id)
        item: dict[str, Any] = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", SCIM_ATLASSIAN_EXTENSION],
            "id": s.id,
            "userName": s.user_name,
            "displayName": s.display_name,
            "emails": [{"value": s.email or s.user_name, "type": "work", "primary": True}],
            "active": s.active,
            "meta": {
                "resourceType": "User",
                "created": s.created,
                "lastModified": s.created,
                "location": f"{self.scim_base_url}/Users/{s.id}",
            },
            SCIM_ATLASSIAN_EXTENSION: {"atlassianAccountId": user.account_id if user else None},
        }
        if not self.options.scim_extension:
            del item[SCIM_ATLASSIAN_EXTENSION]
            item["schemas"] = item["schemas"][:1]
        return item

    def _scim_dir(self, request: web.Request) -> web.Response | None:
        if request.match_info["scim_directory"] != self.state.scim_directory_id:
            return self._scim_error(404, "Directory not found")
        return None

    async def scim_create(self, request: web.Request) -> web.Response:
        bad_dir = self._scim_dir(request)
        if bad_dir is not None:
            return bad_dir
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "application/scim+json"):
            return self._scim_error(415, "Unsupported media type")
        try:
            body = json.loads(await request.text())
        except ValueError:
            return self._scim_error(400, "Request body is not valid JSON", "invalidSyntax")
        if not isinstance(body, dict):
            return self._scim_error(400, "Request body must be an object", "invalidSyntax")
        if "urn:ietf:params:scim:schemas:core:2.0:User" not in (body.get("schemas") or []):
            return self._scim_error(400, "Missing the core User schema", "invalidValue")
        user_name = body.get("userName")
        if not isinstance(user_name, str) or not _EMAIL_RE.match(user_name):
            return self._scim_error(400, "userName must be an email address", "invalidValue")
        for existing in self.state.scim_users.values():
            if existing.user_name.lower() == user_name.lower():
                return self._scim_error(409, f"User {user_name} already exists", "uniqueness")
        display = body.get("displayName")
        if not isinstance(display, str) or not display:
            name = body.get("name") or {}
            display = " ".join(p for p in (name.get("givenName"), name.get("familyName")) if p) or user_name
        email = _primary_email(body.get("emails")) or user_name
        if not _EMAIL_RE.match(email):
            return self._scim_error(400, "emails[].value must be an email address", "invalidValue")
        # An existing managed account with this email is linked to the directory instead of duplicated.
        user = self.state.user_by_email(email)
        if user is None:
            user = self.state.new_account(email, name=display, management_source="synced")
        else:
            user.management_source = "synced"
            if user.membership_status == "no_membership":
                user.membership_status = "active"
            self.state.touch()
        scim = ScimUser(
            id=str(uuid.uuid4()),
            account_id=user.account_id,
            user_name=user_name,
            email=email,
            display_name=display,
            active=bool(body.get("active", True)),
            created=iso(dt.datetime.now(dt.UTC)),
        )
        self.state.scim_users[scim.id] = scim
        return web.json_response(self._scim_json(scim), status=201, content_type="application/scim+json")

    async def scim_list(self, request: web.Request) -> web.Response:
        bad_dir = self._scim_dir(request)
        if bad_dir is not None:
            return bad_dir
        users = list(self.state.scim_users.values())
        flt = request.query.get("filter", "")
        m = re.fullmatch(r'\s*userName\s+eq\s+"([^"]*)"\s*', flt) if flt else None
        if flt and m is None:
            return self._scim_error(400, "Only userName eq filters are supported", "invalidFilter")
        if m is not None:
            users = [u for u in users if u.user_name.lower() == m.group(1).lower()]
        return web.json_response(
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": len(users),
                "startIndex": 1,
                "itemsPerPage": len(users),
                "Resources": [self._scim_json(u) for u in users],
            },
            content_type="application/scim+json",
        )

    async def scim_get(self, request: web.Request) -> web.Response:
        bad_dir = self._scim_dir(request)
        if bad_dir is not None:
            return bad_dir
        scim = self.state.scim_users.get(request.match_info["scim_id"])
        if scim is None:
            return self._scim_error(404, "User not found")
        return web.json_response(self._scim_json(scim), content_type="application/scim+json")

    # --- suspension and deletion (see _Lifecycle) ----------------------------------------------------

    async def suspend_user(self, request: web.Request) -> web.Response:
        return await _Lifecycle(self).set_membership(request, "suspended")

    async def restore_user(self, request: web.Request) -> web.Response:
        return await _Lifecycle(self).set_membership(request, "active")

    async def lifecycle_delete(self, request: web.Request) -> web.Response:
        return await _Lifecycle(self).delete(request)


class _Lifecycle:
    """Directory suspension (v2) and the user-management API's account deletion.

    Suspend / restore take a real directory id (the `-` wildcard is for reads), refuse organization
    admins with a 400, and are idempotent. Lifecycle delete answers in that API's own envelope
    (`key`, `errorKey`, `errorDetail`): 404 `accountNotFound` for an unknown or already deleted account,
    403 `forbidden` for an account the caller's organization does not manage.
    """

    def __init__(self, sandbox: AtlassianSandbox) -> None:
        self.sandbox = sandbox

    def _member(self, request: web.Request) -> User:
        if request.match_info["directory_id"] == "-":
            _error(
                400,
                "ADMIN-UAM-400-1",
                "Bad request",
                "A directory id is required; '-' (all directories) is only accepted by reads",
            )
        user = self.sandbox._user(request.match_info["account_id"])
        if user.membership_status == "no_membership":
            _error(404, "ADMIN-404-8", "User not found", f"User {user.account_id} is not in the directory")
        if "atlassian/org-admin" in user.platform_roles:
            _error(
                400,
                "ADMIN-UAM-400-1",
                "Bad request",
                "Organization admins cannot be suspended or restored",
            )
        return user

    async def set_membership(self, request: web.Request, status: str) -> web.Response:
        if await request.read():
            _bad_body("This operation takes no request body")
        user = self._member(request)
        if user.membership_status != status:
            user.membership_status = status
            self.sandbox.state.touch()
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        st = self.sandbox.state
        key = request.headers.get("Authorization", "").partition(" ")[2].strip()
        user = st.users.get(request.match_info["account_id"])
        if user is None or user.for_deletion:
            return _lifecycle_error(
                404, "accountNotFound", "account-not-found", "Error: User account not found"
            )
        if key != self.sandbox.options.api_key or user.claim_status != "managed":
            return _lifecycle_error(
                403,
                "forbidden",
                "forbidden",
                "Error: Caller must be a verified org admin of targeted account",
            )
        user.for_deletion = True
        user.account_status = "closed"
        st.touch()
        return web.json_response({"message": f"AccountId {user.account_id} has been deleted."})


def _lifecycle_error(status: int, key: str, error_key: str, detail: str) -> web.Response:
    return web.json_response({"key": key, "errorKey": error_key, "errorDetail": detail}, status=status)


class _Unauthorized(Exception):
    """Short-circuits the middleware with a ready response (401s and 429s)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _primary_email(emails: Any) -> str:
    """The primary (else the first) address of a SCIM `emails` list."""
    items = [e for e in emails if isinstance(e, dict)] if isinstance(emails, list) else []
    chosen = next((e for e in items if e.get("primary") is True), items[0] if items else {})
    value = chosen.get("value")
    return value.strip() if isinstance(value, str) else ""


def _sort_by(value: Any, fields: set[str]) -> list[dict[str, str]]:
    if not isinstance(value, list):
        _bad_body("'sortBy' must be an array")
    out = []
    for s in value:
        if (
            not isinstance(s, dict)
            or s.get("field") not in fields
            or s.get("direction", "asc")
            not in (
                "asc",
                "desc",
            )
        ):
            _bad_body(f"'sortBy' supports fields {sorted(fields)} with direction asc|desc")
        out.append({"field": s["field"], "direction": s.get("direction", "asc")})
    return out


async def start_atlassian_sandbox(
    options: SandboxOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    **overrides: Any,
) -> AtlassianSandbox:
    """Start the fake admin API on `host:port` (0 = any free port) and return its handle.

    `overrides` replace fields of `options` (e.g. `latency=0.03, rate_limit=50`); `spec=OrgSpec(...)`
    sets the size of the generated organization. The handle exposes `base_url`, `org_id`, `api_key`,
    `scim_base_url`, `scim_token`, `state`, `stats` and `stop()`.
    """
    opts = dataclasses.replace(options or SandboxOptions(), **overrides)
    sandbox = AtlassianSandbox(opts)
    await sandbox.start(host, port, ssl_context)
    return sandbox


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m connector sandbox atlassian",
        description="Run a fake Atlassian Cloud organization admin API on loopback.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--accounts", type=int, default=300)
    p.add_argument("--groups", type=int, default=25)
    p.add_argument("--memberships", type=int, default=900)
    p.add_argument("--workspaces", type=int, default=6)
    p.add_argument("--api-key", default=DEFAULT_API_KEY)
    p.add_argument("--scim-token", default=DEFAULT_SCIM_TOKEN)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--rate-limit", type=float, default=None, help="requests per second per key")
    p.add_argument("--burst", type=int, default=None)
    p.add_argument("--no-retry-after", action="store_true", help="omit Retry-After on 429")
    p.add_argument("--role-delay", type=float, default=0.0, help="seconds before role changes show")
    p.add_argument(
        "--disable-endpoint",
        action="append",
        choices=("roles", "invite"),
        default=[],
        help="answer 403 'not enabled for this tenant' (repeatable)",
    )
    p.add_argument("--no-api-tokens", action="store_true", help="API-access endpoint unavailable")
    p.add_argument("--duplicate-mode", choices=("idempotent", "conflict"), default="idempotent")
    p.add_argument(
        "--role-filter",
        choices=("effective", "direct"),
        default="effective",
        help="what a user search by roleIds returns: holders through groups too, or direct holders only",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run until interrupted; prints one JSON line with the connection details on stdout."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    options = SandboxOptions(
        spec=OrgSpec(
            seed=args.seed,
            accounts=args.accounts,
            groups=args.groups,
            memberships=args.memberships,
            workspaces=args.workspaces,
        ),
        api_key=args.api_key,
        scim_token=args.scim_token,
        latency=args.latency_ms / 1000.0,
        rate_limit=args.rate_limit,
        burst=args.burst,
        retry_after=not args.no_retry_after,
        role_delay=args.role_delay,
        disabled_endpoints=frozenset(args.disable_endpoint),
        api_tokens_enabled=not args.no_api_tokens,
        duplicate_mode=args.duplicate_mode,
        role_filter=args.role_filter,
    )

    async def run() -> None:
        sandbox = await start_atlassian_sandbox(options, host=args.host, port=args.port)
        info = {
            "base_url": sandbox.base_url,
            "org_id": sandbox.org_id,
            "api_key": sandbox.api_key,
            "scim_base_url": sandbox.scim_base_url,
            "scim_token": sandbox.scim_token,
            "accounts": len(sandbox.state.users),
            "groups": len(sandbox.state.groups),
            "workspaces": len(sandbox.state.workspaces),
        }
        print(json.dumps(info), flush=True)
        print(
            f"# baton-atlassian --api-base-url {sandbox.base_url} --org {sandbox.org_id} "
            f"--api-token {sandbox.api_key}",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await sandbox.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
