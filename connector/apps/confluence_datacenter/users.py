"""Users: id = username, status from the real account state, emails where the server exposes them.

Per version:
- 8.4+: `/rest/api/user/list?expand=status` lists every registered user with `status`
  (current/deactivated). On 9.x the admin `/rest/api/admin/users/list/active` listing also carries emails
  (licensed active users only), fetched alongside the first page.
- before 8.4: no REST user listing. Usernames come from JSON-RPC `getActiveUsers(true)` (all) and
  `getActiveUsers(false)` (active); user keys and display names from the group memberships the group
  syncer needs anyway; the few users in no group are looked up one by one. Without the remote API, users
  in no group cannot be seen: that is logged once and counted.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

from connector.apps.confluence_datacenter.client import ConfluenceClient, Json, RpcError, RpcUnavailable
from connector.apps.confluence_datacenter.common import USER, SyncState
from connector.apps.confluence_datacenter.groups import GroupMembers
from connector.ops.logging import get_logger
from connector.pb.c1.connector.v2 import annotation_trait_pb2, entitlement_pb2, grant_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import UpstreamError, not_found
from connector.sdk.interface import Page, ResourceGetter, ResourceSyncer

log = get_logger(__name__)

StatusValue: TypeAlias = annotation_trait_pb2.UserTrait.Status.Status.ValueType
LegacyRows: TypeAlias = list[tuple[Json, StatusValue]]

_LEGACY_PREFIX = "legacy:"
_LEGACY_PAGE = 1000


def _status(value: Any) -> StatusValue:
    if isinstance(value, dict):  # an expanded reference in some serializations
        value = value.get("value") or value.get("status")
    text = str(value or "").strip().lower()
    if text == "current":
        return model.UserStatus.STATUS_ENABLED
    if text in ("deactivated", "disabled", "inactive"):
        return model.UserStatus.STATUS_DISABLED
    return model.UserStatus.STATUS_UNSPECIFIED


def user_resource(
    person: Json,
    *,
    status: StatusValue | None = None,
    email: str | None = None,
) -> resource_pb2.Resource:
    username = str(person["username"])
    key = str(person.get("userKey") or "")
    display = str(person.get("displayName") or username)
    if status is None:
        status = _status(person.get("status"))
    email = email or (person.get("email") if isinstance(person.get("email"), str) else None)
    profile = {
        "user_name": username,
        "user_key": key or None,
        "id": key or None,  # the Go connector's profile key for the user key
        "display_name": display,
        "account_type": person.get("type", "known"),
        "email": email,
    }
    trait = model.user_trait(
        emails=[email] if email else (),
        status=status,
        login=username,
        profile=profile,
        account_type=model.AccountType.ACCOUNT_TYPE_HUMAN,
    )
    return model.user_resource(display, USER, username, trait)


class UserSyncer(ResourceSyncer, ResourceGetter):
    resource_type = USER

    def __init__(self, client: ConfluenceClient, state: SyncState, members: GroupMembers) -> None:
        self.client = client
        self.state = state
        self.members = members
        self._emails: asyncio.Task[dict[str, str]] | None = None
        self._legacy: LegacyRows | None = None

    # --- listing ------------------------------------------------------------------------------------

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        if parent is not None:
            return Page()
        caps = await self.client.capabilities()
        if page_token.startswith(_LEGACY_PREFIX) or not caps.list_users_rest:
            return await self._list_legacy(page_token)
        return await self._list_rest(page_token, caps.active_users_rest)

    async def _list_rest(self, page_token: str, with_emails: bool) -> Page[resource_pb2.Resource]:
        stale = self._emails is None or (
            self._emails.done() and (self._emails.cancelled() or self._emails.exception() is not None)
        )
        if with_emails and (not page_token or stale):
            if self._emails is not None and not self._emails.done():
                self._emails.cancel()
            self._emails = asyncio.ensure_future(self._fetch_emails())
        people, token = await self.client.list_window(
            "/rest/api/user/list", params={"expand": "status"}, token=page_token
        )
        emails = await asyncio.shield(self._emails) if with_emails and self._emails is not None else {}
        out = []
        for person in people:
            username = person.get("username")
            if not isinstance(username, str):
                continue
            self._remember(person)
            out.append(user_resource(person, email=emails.get(username)))
        return Page(out, token)

    async def _fetch_emails(self) -> dict[str, str]:
        try:
            active = await self.client.list_all("/rest/api/admin/users/list/active")
        except UpstreamError as err:
            if err.status in (401, 403, 404):
                self.state.capability_missing(
                    "user_emails", f"the active-users listing is not available (HTTP {err.status}); no emails"
                )
                return {}
            raise
        return {
            str(p["username"]): str(p["email"])
            for p in active
            if isinstance(p.get("username"), str) and isinstance(p.get("email"), str) and p["email"]
        }

    def _remember(self, person: Json) -> None:
        key, username = person.get("userKey"), person.get("username")
        if isinstance(key, str) and isinstance(username, str):
            self.state.key_to_username[key] = username

    async def _list_legacy(self, page_token: str) -> Page[resource_pb2.Resource]:
        offset = 0
        if page_token.startswith(_LEGACY_PREFIX):
            try:
                offset = int(page_token[len(_LEGACY_PREFIX) :])
            except ValueError:
                offset = 0
        if not page_token or self._legacy is None:
            if not page_token:
                self.members.invalidate()  # a new sync: memberships may have changed since the last one
            self._legacy = await self._build_legacy()
        chunk = self._legacy[offset : offset + _LEGACY_PAGE]
        nxt = offset + len(chunk)
        token = f"{_LEGACY_PREFIX}{nxt}" if nxt < len(self._legacy) else ""
        if not token:
            snapshot, self._legacy = self._legacy, None
            del snapshot
        return Page([user_resource(p, status=s) for p, s in chunk], token)

    async def _build_legacy(self) -> LegacyRows:
        all_names: list[str] | None = None
        active: set[str] = set()
        try:
            everyone, enabled = await asyncio.gather(
                self.client.rpc("getActiveUsers", True), self.client.rpc("getActiveUsers", False)
            )
            all_names = [str(n) for n in everyone] if isinstance(everyone, list) else None
            active = {str(n) for n in enabled} if isinstance(enabled, list) else set()
        except (RpcUnavailable, RpcError) as err:
            self.state.capability_missing(
                "user_listing",
                "this Confluence version has no REST user listing (8.4+) and the JSON-RPC remote API is not "
                f"usable ({err}); users are taken from group memberships (users in no group are missed) and "
                "their status is unknown",
            )
        by_name: dict[str, Json] = {}
        for people in (await self.members.all()).values():
            for p in people:
                if isinstance(p.get("username"), str):
                    by_name.setdefault(p["username"], p)
        if all_names is None:
            names = list(by_name)
        else:
            names = all_names
            missing = [n for n in names if n not in by_name]
            found = await asyncio.gather(*(self.client.user_by_username(n) for n in missing))
            for n, person in zip(missing, found, strict=True):
                if person is not None:
                    by_name[n] = person
                else:
                    self.state.count("users_vanished")
        out = []
        for n in names:
            person = by_name.get(n)
            if person is None:
                continue
            self._remember(person)
            if all_names is None:
                status = model.UserStatus.STATUS_UNSPECIFIED
            else:
                status = model.UserStatus.STATUS_ENABLED if n in active else model.UserStatus.STATUS_DISABLED
            out.append((person, status))
        return out

    async def get(
        self, resource_id: resource_pb2.ResourceId, parent: resource_pb2.ResourceId | None
    ) -> resource_pb2.Resource:
        person = await self.client.user_by_username(resource_id.resource, expand_status=True)
        if person is None:
            raise not_found(f"Confluence user {resource_id.resource!r} does not exist")
        self._remember(person)
        return user_resource(person)

    async def entitlements(
        self, resource: resource_pb2.Resource, page_token: str
    ) -> Page[entitlement_pb2.Entitlement]:
        return Page()

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        return Page()
