"""Client of the Atlassian Cloud organization admin API (v2 wherever it exists) and of SCIM.

Pagination differs by endpoint family (spec A.2) and this module hides it:

* v1 collections (`GET /v1/orgs`, API tokens): `links.next` is a complete URL. We take its `cursor`
  query parameter and send it to *our* base URL, so that a proxy configured with --api-base-url stays in
  the path even though the upstream writes its own host into the link.
* v2 GET lists (directories, role assignments): `links.next` is an opaque cursor for `?cursor=`; with a
  cursor every other parameter is discarded upstream, so none are sent.
* POST searches (users, groups, workspaces): the cursor goes back in the JSON body, alone.

Every list stops when `links.next` is absent, null or empty. Error envelopes become `AdminApiError`
(a ConnectorError) whose message quotes the Atlassian code and title.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx

from connector.sdk.errors import ConnectorError, UpstreamError, from_upstream, grpc_code_for_http
from connector.sdk.http import (
    RetryPolicy,
    UpstreamClient,
    parse_reset,
    parse_retry_after,
)

# Route templates (also the labels of metrics and logs: never filled with ids).
R_ORGS = "/admin/v1/orgs"
R_ORG = "/admin/v1/orgs/{org}"
R_DIRECTORIES = "/admin/v2/orgs/{org}/directories"
R_USERS_SEARCH = "/admin/v2/orgs/{org}/directories/{directory}/users/search"
R_USERS_COUNT = "/admin/v2/orgs/{org}/directories/{directory}/users/count"
R_USER = "/admin/v2/orgs/{org}/directories/{directory}/users/{account}"
R_USER_ROLES = "/admin/v2/orgs/{org}/directories/{directory}/users/{account}/role-assignments"
R_GROUPS_SEARCH = "/admin/v2/orgs/{org}/directories/{directory}/groups/search"
R_GROUP = "/admin/v2/orgs/{org}/directories/{directory}/groups/{group}"
R_GROUP_ROLES = "/admin/v2/orgs/{org}/directories/{directory}/groups/{group}/role-assignments"
R_GROUP_ROLE_ASSIGN = "/admin/v2/orgs/{org}/directories/{directory}/groups/{group}/role-assignments/assign"
R_GROUP_ROLE_REVOKE = "/admin/v2/orgs/{org}/directories/{directory}/groups/{group}/role-assignments/revoke"
R_MEMBERSHIPS = "/admin/v2/orgs/{org}/directories/{directory}/groups/{group}/memberships"
R_MEMBERSHIP = "/admin/v2/orgs/{org}/directories/{directory}/groups/{group}/memberships/{account}"
R_USER_ROLE_ASSIGN = "/admin/v1/orgs/{org}/users/{account}/roles/assign"
R_USER_ROLE_REVOKE = "/admin/v1/orgs/{org}/users/{account}/roles/revoke"
R_INVITE = "/admin/v2/orgs/{org}/users/invite"
R_WORKSPACES = "/admin/v2/orgs/{org}/workspaces"
R_API_TOKENS = "/admin/api-access/v1/orgs/{org}/api-tokens"
R_SCIM_USERS = "/Users"
# Directory suspension (v2; the v1 suspend-access / restore-access stop after 2026-06-30) and the
# user-management API's account deletion, which lives beside /admin on the same host.
R_USER_SUSPEND = "/admin/v2/orgs/{org}/directories/{directory}/users/{account}/suspend"
R_USER_RESTORE = "/admin/v2/orgs/{org}/directories/{directory}/users/{account}/restore"
R_LIFECYCLE_DELETE = "/users/{account}/manage/lifecycle/delete"

# All directories the key may manage (spec A.1); organizations with centralized user management have one.
ALL_DIRECTORIES = "-"
# The largest page the v2 lists and searches serve; bigger requests are clamped upstream.
PAGE_LIMIT = 100
WORKSPACE_PAGE_LIMIT = 1000
TOKEN_PAGE_LIMIT = 100

Json = dict[str, Any]


class AdminApiError(ConnectorError):
    """An answer from the admin API carrying its error envelope (or a gateway error)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        http_status: int | None,
        api_code: str,
        title: str,
        detail: str,
        details: Sequence[Any] = (),
    ) -> None:
        super().__init__(code, message, tuple(details))
        self.http_status = http_status
        self.api_code = api_code
        self.title = title
        self.detail = detail


@dataclass(frozen=True)
class Envelope:
    code: str
    title: str
    detail: str


def parse_envelope(body: Any) -> Envelope:
    """The first error of `{"errors":[{code,title,detail}]}`; the gateway's `{code,message}` too."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return Envelope(
                str(first.get("code") or ""), str(first.get("title") or ""), str(first.get("detail") or "")
            )
        # The user-management (lifecycle) API: {"key", "errorKey", "errorDetail"}.
        key = body.get("key")
        if isinstance(key, str) and key:
            return Envelope(key, str(body.get("errorDetail") or body.get("errorKey") or ""), "")
        message = body.get("message") or body.get("detail")
        if isinstance(message, str):
            return Envelope("", message, "")
    return Envelope("", "", "")


def admin_error(err: UpstreamError, action: str) -> AdminApiError:
    """Turn an UpstreamError into an AdminApiError naming the action, status, Atlassian code and title."""
    env = parse_envelope(err.body)
    status = err.status
    if status is None:
        text = f"{action}: cannot reach the Atlassian API: {err.detail}"
    else:
        quoted = " ".join(p for p in (env.code, env.title) if p) or err.detail or "no error body"
        text = f"{action}: Atlassian answered HTTP {status} {quoted}"
        if env.detail:
            text += f" ({env.detail})"
    details = from_upstream(err).details
    return AdminApiError(
        grpc_code_for_http(status),
        text,
        http_status=status,
        api_code=env.code,
        title=env.title,
        detail=env.detail,
        details=details,
    )


def next_link(body: Any) -> str | None:
    links = body.get("links") if isinstance(body, dict) else None
    value = links.get("next") if isinstance(links, dict) else None
    return value if isinstance(value, str) and value else None


def data_list(body: Any) -> list[Json]:
    data = body.get("data") if isinstance(body, dict) else None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


class Pacer:
    """Spreads requests out once Atlassian has said "slow down", instead of letting them collide.

    The shared client retries a 429 at the reset time Atlassian gives. With several requests in flight
    they all wake at that same instant, one wins and the rest are refused again, until some run out of
    attempts. This pacer is the shared client's attempt hook (UpstreamClient(pacer=...), next to its rate
    limiter, so the client keeps choosing its own wire and proxy) and, after a 429 (or a response reporting
    `X-RateLimit-Remaining: 0`), holds every request until the reset and then starts them one `spacing`
    apart. The spacing starts at the wait Atlassian asked for, doubles on each further 429 and shrinks a
    little with each success, so the pace settles near what the API allows. Without 429s it adds nothing.
    """

    MIN_SPACING = 0.002
    MAX_SPACING = 1.0
    SPEED_UP = 0.97  # spacing factor per successful response while paced
    MAX_WAIT = 300.0  # the shared client's own cap on one Retry-After / reset

    def __init__(self) -> None:
        self.spacing = 0.0
        self._next_start = 0.0
        self._resume_at = 0.0
        self._adjusted_at = 0.0
        self._turn = asyncio.Lock()

    async def before_attempt(self) -> None:
        if self.spacing or time.monotonic() < self._resume_at or self._turn.locked():
            await self._wait_turn()

    def after_attempt(self, response: httpx.Response, sent_at: float) -> None:
        self._observe(response, sent_at)

    async def _wait_turn(self) -> None:
        # One request at a time waits for its start; the reset is re-read after every sleep because a
        # response may have moved it meanwhile.
        async with self._turn:
            while True:
                now = time.monotonic()
                start = max(self._resume_at, self._next_start)
                if start <= now:
                    break
                await asyncio.sleep(start - now)
            self._next_start = now + self.spacing

    def _observe(self, response: httpx.Response, sent_at: float) -> None:
        headers = response.headers
        limited = response.status_code == 429
        exhausted = headers.get("x-ratelimit-remaining", "").strip() == "0"
        if not limited and self.spacing:
            self.spacing *= self.SPEED_UP
            if self.spacing < self.MIN_SPACING:
                self.spacing = 0.0
        if not (limited or exhausted):
            return
        wait = self._wait(headers)
        if wait is None:
            wait = 1.0 if limited else 0.0
        wait = min(wait, self.MAX_WAIT)
        # Nobody goes before the reset: not the requests queued here, not the retries of the refused ones.
        self._resume_at = max(self._resume_at, time.monotonic() + wait)
        if limited:
            # Multiplicative back-off, slow speed-up: about one 429 per ~20 requests at the API's pace. Only
            # a request sent under the current spacing says it is too short; the rest of a burst that was
            # already in flight says nothing new.
            grow = 2.0 if sent_at >= self._adjusted_at else 1.0
            self.spacing = min(self.MAX_SPACING, max(self.spacing * grow, wait, self.MIN_SPACING))
            self._adjusted_at = time.monotonic()

    @staticmethod
    def _wait(headers: httpx.Headers) -> float | None:
        wall = dt.datetime.now(dt.UTC)
        if headers.get("retry-after") is not None:
            seconds = parse_retry_after(headers["retry-after"], wall)
            if seconds is not None:
                return seconds
        if headers.get("x-ratelimit-reset") is not None:
            reset = parse_reset(headers["x-ratelimit-reset"], wall)
            if reset is not None:
                return max(0.0, (reset - wall).total_seconds())
        return None


def _auth_kwargs(credential: str | httpx.Auth) -> dict[str, Any]:
    """A fixed key becomes a header; an httpx.Auth (a key following its mounted file) applies per request."""
    if isinstance(credential, str):
        return {"headers": {"Authorization": f"Bearer {credential}"}}
    return {"auth": credential}


class AtlassianClient:
    """Typed calls of the admin API for one organization."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | httpx.Auth,
        org_id: str,
        concurrency: int = 8,
        rate_limit: float | None = None,
        timeout: float = 60.0,
        scim_base_url: str | None = None,
        scim_token: str | httpx.Auth | None = None,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.org_id = org_id
        self.concurrency = concurrency
        self.pacer = Pacer()
        self.http = UpstreamClient(
            "atlassian",
            base_url,
            **_auth_kwargs(api_key),
            timeout=timeout,
            concurrency=concurrency,
            rate_limit=rate_limit,
            # Paced evenly: Atlassian does not publish its bucket size, so never rely on a saved-up burst.
            rate_burst=1 if rate_limit else None,
            retry=retry,
            verify=verify,
            transport=transport,
            pacer=self.pacer,
        )
        self.scim: UpstreamClient | None = None
        if scim_base_url and scim_token:
            self.scim = UpstreamClient(
                "atlassian-scim",
                scim_base_url,
                **_auth_kwargs(scim_token),
                timeout=timeout,
                concurrency=min(concurrency, 4),
                retry=retry,
                verify=verify,
                transport=transport,
            )

    def clients(self) -> list[UpstreamClient]:
        return [self.http, *([self.scim] if self.scim is not None else [])]

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.scim is not None:
            await self.scim.aclose()

    def _pp(self, **values: str) -> dict[str, str]:
        return {"org": self.org_id, **values}

    # --- low level --------------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        route: str,
        action: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Any = None,
        json: Any = None,
        url: str | None = None,
        expect: Sequence[int] = (200,),
    ) -> Any:
        try:
            response = await self.http.request(
                method,
                route,
                path_params=path_params or self._pp(),
                params=params,
                json=json,
                url=url,
                expect=expect,
            )
        except UpstreamError as err:
            raise admin_error(err, action) from err
        return self.http.decode_json(response, method, route)

    async def post_page(
        self, route: str, path_params: Mapping[str, str], body: Json, cursor: str | None, action: str
    ) -> tuple[list[Json], str | None, Any]:
        """One page of a POST search; with a cursor the body is `{"cursor": ...}` and nothing else."""
        payload = {"cursor": cursor} if cursor else body
        result = await self.call("POST", route, action, path_params=path_params, json=payload)
        return data_list(result), next_link(result), result

    async def get_page(
        self, route: str, path_params: Mapping[str, str], params: Any, cursor: str | None, action: str
    ) -> tuple[list[Json], str | None, Any]:
        """One page of a GET list. `cursor` is what the previous page's `links.next` said."""
        url: str | None = None
        query: Any = params
        if cursor:
            parts = urlsplit(cursor)
            if parts.scheme in ("http", "https"):
                inner = parse_qs(parts.query).get("cursor")
                if inner:
                    query = {"cursor": inner[0]}
                else:
                    url, query = cursor, None
            else:
                query = {"cursor": cursor}
        result = await self.call("GET", route, action, path_params=path_params, params=query, url=url)
        return data_list(result), next_link(result), result

    async def post_all(
        self, route: str, path_params: Mapping[str, str], body: Json, action: str
    ) -> list[Json]:
        out: list[Json] = []
        cursor: str | None = None
        while True:
            items, cursor, _ = await self.post_page(route, path_params, body, cursor, action)
            out.extend(items)
            if cursor is None:
                return out

    async def get_all(
        self, route: str, path_params: Mapping[str, str], params: Any, action: str
    ) -> list[Json]:
        out: list[Json] = []
        cursor: str | None = None
        while True:
            items, cursor, _ = await self.get_page(route, path_params, params, cursor, action)
            out.extend(items)
            if cursor is None:
                return out

    # --- organization -----------------------------------------------------------------------------------

    async def get_org(self) -> Json:
        body = await self.call("GET", R_ORG, "read the organization")
        data = body.get("data") if isinstance(body, dict) else None
        return data if isinstance(data, dict) else {}

    async def list_orgs(self) -> list[Json]:
        """Organizations the key can see (v1 collection: complete-URL next links)."""
        return await self.get_all(R_ORGS, {}, None, "list organizations")

    async def list_directories(self) -> list[Json]:
        return await self.get_all(R_DIRECTORIES, self._pp(), {"limit": PAGE_LIMIT}, "list directories")

    # --- users ------------------------------------------------------------------------------------------

    def users_search_page(self, body: Json, cursor: str | None) -> Any:
        return self.post_page(
            R_USERS_SEARCH, self._pp(directory=ALL_DIRECTORIES), body, cursor, "search users"
        )

    async def search_users(self, body: Json) -> list[Json]:
        return await self.post_all(R_USERS_SEARCH, self._pp(directory=ALL_DIRECTORIES), body, "search users")

    async def count_users(self, filters: Mapping[str, Any] | None = None) -> int | None:
        """`GET users/count` with optional filters (lists become repeated keys); None if no count came."""
        body = await self.call(
            "GET",
            R_USERS_COUNT,
            "count users",
            path_params=self._pp(directory=ALL_DIRECTORIES),
            params=dict(filters) if filters else None,
        )
        count = body.get("count") if isinstance(body, dict) else None
        if count is None and isinstance(body, dict) and isinstance(body.get("data"), dict):
            count = body["data"].get("count")
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    async def get_user(self, account_id: str) -> Json:
        body = await self.call(
            "GET",
            R_USER,
            f"read user {account_id}",
            path_params=self._pp(directory=ALL_DIRECTORIES, account=account_id),
        )
        data = body.get("data") if isinstance(body, dict) else None
        return data if isinstance(data, dict) else {}

    async def all_user_role_assignments(self, account_id: str) -> list[Json]:
        """Every role assignment of one account, each with how it was assigned (direct, group, ...)."""
        return await self.get_all(
            R_USER_ROLES,
            self._pp(directory=ALL_DIRECTORIES, account=account_id),
            {"limit": PAGE_LIMIT},
            f"read role assignments of user {account_id}",
        )

    async def user_role_assignments(self, account_id: str, resource_id: str, role: str) -> list[Json]:
        return await self.get_all(
            R_USER_ROLES,
            self._pp(directory=ALL_DIRECTORIES, account=account_id),
            {"resourceIds": [resource_id], "roleIds": [role], "limit": PAGE_LIMIT},
            f"read role assignments of user {account_id}",
        )

    # --- groups -----------------------------------------------------------------------------------------

    def groups_search_page(self, body: Json, cursor: str | None) -> Any:
        return self.post_page(
            R_GROUPS_SEARCH, self._pp(directory=ALL_DIRECTORIES), body, cursor, "search groups"
        )

    async def search_groups(self, body: Json) -> list[Json]:
        return await self.post_all(
            R_GROUPS_SEARCH, self._pp(directory=ALL_DIRECTORIES), body, "search groups"
        )

    async def get_group(self, group_id: str) -> Json:
        body = await self.call(
            "GET",
            R_GROUP,
            f"read group {group_id}",
            path_params=self._pp(directory=ALL_DIRECTORIES, group=group_id),
        )
        data = body.get("data") if isinstance(body, dict) else None
        return data if isinstance(data, dict) else {}

    async def all_group_role_assignments(self, group_id: str) -> list[Json]:
        return await self.get_all(
            R_GROUP_ROLES,
            self._pp(directory=ALL_DIRECTORIES, group=group_id),
            {"limit": PAGE_LIMIT},
            f"read role assignments of group {group_id}",
        )

    async def group_role_assignments(self, group_id: str, resource_id: str, role: str) -> list[Json]:
        return await self.get_all(
            R_GROUP_ROLES,
            self._pp(directory=ALL_DIRECTORIES, group=group_id),
            {"resourceIds": [resource_id], "roleIds": [role], "limit": PAGE_LIMIT},
            f"read role assignments of group {group_id}",
        )

    async def add_member(self, directory_id: str, group_id: str, account_id: str) -> None:
        await self.call(
            "POST",
            R_MEMBERSHIPS,
            f"add user {account_id} to group {group_id}",
            path_params=self._pp(directory=directory_id, group=group_id),
            json={"accountId": account_id},
            expect=(200, 201, 202, 204),
        )

    async def remove_member(self, directory_id: str, group_id: str, account_id: str) -> None:
        await self.call(
            "DELETE",
            R_MEMBERSHIP,
            f"remove user {account_id} from group {group_id}",
            path_params=self._pp(directory=directory_id, group=group_id, account=account_id),
            expect=(200, 202, 204),
        )

    # --- roles ------------------------------------------------------------------------------------------

    async def change_user_role(self, account_id: str, resource_id: str, role: str, *, assign: bool) -> None:
        verb = "assign" if assign else "revoke"
        await self.call(
            "POST",
            R_USER_ROLE_ASSIGN if assign else R_USER_ROLE_REVOKE,
            f"{verb} role {role} on {resource_id} for user {account_id}",
            path_params=self._pp(account=account_id),
            json={"role": role, "resource": resource_id},
            expect=(200, 201, 202, 204),
        )

    async def change_group_role(
        self, directory_id: str, group_id: str, resource_id: str, role: str, *, assign: bool
    ) -> None:
        verb = "assign" if assign else "revoke"
        await self.call(
            "POST",
            R_GROUP_ROLE_ASSIGN if assign else R_GROUP_ROLE_REVOKE,
            f"{verb} role {role} on {resource_id} for group {group_id}",
            path_params=self._pp(directory=directory_id, group=group_id),
            json={"resourceId": resource_id, "roleId": role},
            expect=(200, 201, 202, 204),
        )

    # --- workspaces, tokens, invitations ----------------------------------------------------------------

    def workspaces_page(self, cursor: str | None) -> Any:
        body: Json = {
            "limit": WORKSPACE_PAGE_LIMIT,
            "sort": [{"field": "attributes.name.raw", "order": "asc"}],
        }
        return self.post_page(R_WORKSPACES, self._pp(), body, cursor, "list workspaces")

    def api_tokens_page(self, cursor: str | None) -> Any:
        return self.get_page(R_API_TOKENS, self._pp(), {"limit": TOKEN_PAGE_LIMIT}, cursor, "list API tokens")

    async def invite(self, email: str, permission_rules: list[Json], groups: list[str]) -> Json:
        body: Json = {"emails": [email], "sendNotification": True}
        if permission_rules:
            body["permissionRules"] = permission_rules
        if groups:
            body["additionalGroups"] = groups
        result = await self.call("POST", R_INVITE, f"invite {email}", json=body, expect=(200, 201, 202))
        return result if isinstance(result, dict) else {}

    # --- account lifecycle ------------------------------------------------------------------------------

    async def user_directory_ids(self, account_id: str) -> list[str]:
        """The directories the account is a member of (suspension is per directory)."""
        dirs = await self.get_all(
            R_DIRECTORIES,
            self._pp(),
            {"accountId": account_id, "limit": PAGE_LIMIT},
            f"find the directories of user {account_id}",
        )
        return [str(d["directoryId"]) for d in dirs if d.get("directoryId")]

    async def set_user_suspended(self, directory_id: str, account_id: str, *, suspended: bool) -> None:
        verb = "suspend" if suspended else "restore"
        await self.call(
            "POST",
            R_USER_SUSPEND if suspended else R_USER_RESTORE,
            f"{verb} user {account_id}",
            path_params=self._pp(directory=directory_id, account=account_id),
            expect=(200, 202, 204),
        )

    async def delete_account(self, account_id: str) -> None:
        """Lifecycle delete of a managed account (deactivated now, deleted after Atlassian's grace period)."""
        await self.call(
            "POST",
            R_LIFECYCLE_DELETE,
            f"delete account {account_id}",
            path_params={"account": account_id},
            expect=(200, 202, 204),
        )

    # --- SCIM -------------------------------------------------------------------------------------------

    async def scim_create_user(self, body: Json) -> tuple[int, Any]:
        """POST /Users on the SCIM directory; returns (status, body) for 201 and 409 alike."""
        assert self.scim is not None
        try:
            response = await self.scim.request(
                "POST",
                R_SCIM_USERS,
                json=body,
                headers={"Content-Type": "application/scim+json"},
                expect=(200, 201, 409),
            )
        except UpstreamError as err:
            raise admin_error(err, "create the account through SCIM") from err
        return response.status_code, self.scim.decode_json(response, "POST", R_SCIM_USERS)

    async def scim_probe(self) -> None:
        assert self.scim is not None
        try:
            await self.scim.request("GET", R_SCIM_USERS, params={"count": 1})
        except UpstreamError as err:
            raise admin_error(err, "check the SCIM token") from err
