"""Users: id = userKey (or username with --legacy-ids, ids.py), status from the real account state on the
trait and on `Resource.status`, emails where the server exposes them.

Per version:
- 8.4+: `/rest/api/user/list?expand=status` lists every registered user with `status`
  (current/deactivated). Those values are undocumented: a state that cannot be read is taken from one
  JSON-RPC `getActiveUsers(false)` call per sync instead. On 9.x the admin
  `/rest/api/admin/users/list/active` listing also carries emails (licensed active users only), fetched
  alongside the first page.
- before 8.4: no REST user listing and no account state over REST. Usernames come from JSON-RPC
  `getActiveUsers(true)` (all) and `getActiveUsers(false)` (active); user keys and display names from the
  group memberships the group syncer needs anyway; the few users in no group are looked up one by one. A
  single user's state (targeted get) is JSON-RPC `isActiveUser`. Without the remote API, users in no group
  cannot be seen and states are unknown: that is logged once and counted.
- Emails before 9.x: no API returns them in bulk (REST persons have none; JSON-RPC has them only per user,
  one request each), so there are none, as with the Go connector.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

from google.protobuf import struct_pb2

from connector.apps.confluence_datacenter.client import (
    AnonymousAnswer,
    ConfluenceClient,
    Json,
    RpcError,
    RpcUnavailable,
)
from connector.apps.confluence_datacenter.common import USER, SyncState, required
from connector.apps.confluence_datacenter.groups import GroupMembers
from connector.apps.confluence_datacenter.ids import IdScheme
from connector.ops.logging import get_logger
from connector.pb.c1.connector.v2 import annotation_trait_pb2, entitlement_pb2, grant_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import UpstreamError, not_found
from connector.sdk.interface import Page, ResourceGetter, ResourceSyncer

log = get_logger(__name__)

StatusValue: TypeAlias = annotation_trait_pb2.UserTrait.Status.Status.ValueType
LegacyRows: TypeAlias = list[tuple[Json, StatusValue, str]]

_LEGACY_PREFIX = "legacy:"
_LEGACY_PAGE = 1000
_USER_LIST = "/rest/api/user/list"
# Resource.status of each trait status; an unknown state leaves Resource.status unset.
_RESOURCE_STATUS = {
    model.UserStatus.STATUS_ENABLED: resource_pb2.Status.RESOURCE_STATUS_ENABLED,
    model.UserStatus.STATUS_DISABLED: resource_pb2.Status.RESOURCE_STATUS_DISABLED,
}
# Account states learned from JSON-RPC (no text of their own), as the status details.
RPC_ACTIVE, RPC_INACTIVE = "active", "inactive"


def _raw_status(value: Any) -> str:
    if isinstance(value, dict):  # an expanded reference in some serializations
        value = value.get("value") or value.get("status")
    return str(value or "").strip()


def _status(value: Any) -> StatusValue:
    text = _raw_status(value).lower()
    if text in ("current", "active", "enabled"):
        return model.UserStatus.STATUS_ENABLED
    if text in ("deactivated", "disabled", "inactive"):
        return model.UserStatus.STATUS_DISABLED
    return model.UserStatus.STATUS_UNSPECIFIED


def user_resource(
    person: Json,
    ids: IdScheme,
    *,
    status: StatusValue | None = None,
    details: str | None = None,
    email: str | None = None,
    route: str = _USER_LIST,
) -> resource_pb2.Resource:
    """`details`: the raw account state behind `status` (default: the person's own `status` text)."""
    username = required(person, "username", "user", route)
    key = required(person, "userKey", "user", route)
    display = str(person.get("displayName") or username)
    if status is None:
        status = _status(person.get("status"))
    if details is None:
        details = _raw_status(person.get("status"))
    email = email or (person.get("email") if isinstance(person.get("email"), str) else None)
    # What model.user_trait / model.user_resource build, assembled directly: this runs for every user of
    # every sync (tens of thousands), and the generic helpers' Struct.update costs a third more.
    profile = struct_pb2.Struct()
    fields = profile.fields
    fields["user_name"].string_value = username
    fields["user_key"].string_value = key
    fields["id"].string_value = key  # the Go connector's profile key for the user key
    fields["display_name"].string_value = display
    fields["account_type"].string_value = str(person.get("type") or "known")
    if email:
        fields["email"].string_value = email
    trait = annotation_trait_pb2.UserTrait(
        status=annotation_trait_pb2.UserTrait.Status(status=status),
        profile=profile,
        account_type=model.AccountType.ACCOUNT_TYPE_HUMAN,
        login=username,
        emails=[annotation_trait_pb2.UserTrait.Email(address=email, is_primary=True)] if email else (),
    )
    resource = resource_pb2.Resource(
        id=resource_pb2.ResourceId(resource_type=USER.id, resource=key if not ids.legacy else username),
        display_name=display,
        annotations=[model.pack(trait)],
    )
    resource_status = _RESOURCE_STATUS.get(status)
    if resource_status is not None:
        resource.status.status = resource_status
        resource.status.details = details
    return resource


_MEMBERS = "/rest/api/group/{group}/member"
# Users built between two hand-backs to the event loop (see UserSyncer._list_rest).
_USERS_PER_SLICE = 200


class UserSyncer(ResourceSyncer, ResourceGetter):
    resource_type = USER

    def __init__(self, client: ConfluenceClient, state: SyncState, members: GroupMembers) -> None:
        self.client = client
        self.state = state
        self.members = members
        self._emails: asyncio.Task[dict[str, str]] | None = None
        self._active: asyncio.Task[set[str] | None] | None = None
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
        if with_emails and not page_token and self._emails is not None:
            # No user can be emitted before every email is known: the admin listing goes first, alone,
            # rather than sharing the connection slots with user pages that would only wait for it.
            await asyncio.shield(self._emails)
        # One round of pages per call (and one more read ahead): each call turns its people into
        # resources while the next round is on the wire, and never holds the event loop for long.
        people, token = await self.client.list_window(
            "/rest/api/user/list",
            params={"expand": "status"},
            token=page_token,
            window=self.client.concurrency,
        )
        emails = await asyncio.shield(self._emails) if with_emails and self._emails is not None else {}
        if not page_token:
            self._active = None  # a new sync: account states may have changed
        for p in people:
            required(p, "username", "user", _USER_LIST)
            required(p, "userKey", "user", _USER_LIST)
        statuses = [_status(p.get("status")) for p in people]
        details = [_raw_status(p.get("status")) for p in people]
        if model.UserStatus.STATUS_UNSPECIFIED in statuses:
            # The values of `expand=status` are undocumented: a state we cannot read is asked of JSON-RPC
            # (one call per sync for every user) rather than reported as unknown.
            active = await self._active_usernames()
            if active is not None:
                for i, (p, s) in enumerate(zip(people, statuses, strict=True)):
                    if s == model.UserStatus.STATUS_UNSPECIFIED:
                        on = p["username"] in active
                        statuses[i] = (
                            model.UserStatus.STATUS_ENABLED if on else model.UserStatus.STATUS_DISABLED
                        )
                        details[i] = RPC_ACTIVE if on else RPC_INACTIVE
        ids = self.state.ids
        out = []
        for i, (person, status, detail) in enumerate(zip(people, statuses, details, strict=True)):
            if i and i % _USERS_PER_SLICE == 0:
                # A round is up to 8 pages of users (~15 us each to build): hand the loop back between
                # slices so responses to the requests in flight are not held up behind the whole round.
                await asyncio.sleep(0)
            self._remember(person)
            email = emails.get(person["username"])
            out.append(user_resource(person, ids, status=status, details=detail, email=email))
        return Page(out, token)

    async def _active_usernames(self) -> set[str] | None:
        if self._active is None:
            self._active = asyncio.ensure_future(self._fetch_active_usernames())
        return await asyncio.shield(self._active)

    async def _fetch_active_usernames(self) -> set[str] | None:
        try:
            names = await self.client.rpc("getActiveUsers", False)
        except (RpcUnavailable, RpcError) as err:
            self.state.capability_missing(
                "user_status", f"Confluence returned no readable account status and {err}; status unknown"
            )
            return None
        self.state.count("user_status_from_json_rpc")
        return {str(n) for n in names} if isinstance(names, list) else None

    async def _fetch_emails(self) -> dict[str, str]:
        try:
            active = await self.client.list_all("/rest/api/admin/users/list/active")
        except AnonymousAnswer:
            raise  # the token stopped working: that fails the sync, it is no missing capability
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
            self.state.remember(username, key)

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
        ids = self.state.ids
        return Page([user_resource(p, ids, status=s, details=d, route=_MEMBERS) for p, s, d in chunk], token)

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
                by_name.setdefault(required(p, "username", "group member", _MEMBERS), p)
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
                status, detail = model.UserStatus.STATUS_UNSPECIFIED, ""
            elif n in active:
                status, detail = model.UserStatus.STATUS_ENABLED, RPC_ACTIVE
            else:
                status, detail = model.UserStatus.STATUS_DISABLED, RPC_INACTIVE
            out.append((person, status, detail))
        return out

    async def get(
        self, resource_id: resource_pb2.ResourceId, parent: resource_pb2.ResourceId | None
    ) -> resource_pb2.Resource:
        ids = self.state.ids
        if ids.legacy:
            person = await self.client.user_by_username(resource_id.resource, expand_status=True)
        else:
            person = await self.client.user_by_key(resource_id.resource, expand_status=True)
        if person is None:
            raise not_found(f"Confluence user {resource_id.resource!r} does not exist")
        username = required(person, "username", "user", "/rest/api/user")
        self._remember(person)
        if "status" in person:
            return user_resource(person, ids, route="/rest/api/user")
        status, detail = await self._status_via_rpc(username)
        return user_resource(person, ids, status=status, details=detail, route="/rest/api/user")

    async def _status_via_rpc(self, username: str) -> tuple[StatusValue, str]:
        """Account state of one user on servers whose REST has none (before 8.4): JSON-RPC isActiveUser."""
        try:
            active = await self.client.rpc("isActiveUser", username)
        except (RpcUnavailable, RpcError) as err:
            self.state.capability_missing(
                "user_status", f"this Confluence version has no account state over REST and {err}"
            )
            return model.UserStatus.STATUS_UNSPECIFIED, ""
        if not isinstance(active, bool):
            return model.UserStatus.STATUS_UNSPECIFIED, ""
        if active:
            return model.UserStatus.STATUS_ENABLED, RPC_ACTIVE
        return model.UserStatus.STATUS_DISABLED, RPC_INACTIVE

    async def entitlements(
        self, resource: resource_pb2.Resource, page_token: str
    ) -> Page[entitlement_pb2.Entitlement]:
        return Page()

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        return Page()
