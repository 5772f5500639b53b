"""Spaces: id = space key, the 14 permission entitlements, permission grants and their provisioning.

Permissions come from REST on 9.1+ (`/rest/api/space/{key}/permissions`, users by userKey) and from the
JSON-RPC `getSpacePermissionSets` before that (users by username); either is mapped onto the connector's
id scheme (ids.py), so a user's grants keep their ids whichever API they came from. A permission held by a
group is a grant to the group that carries GrantExpandable on `group:<name>:member`, so the sync engine
derives every member's access. Anonymous permissions and alias keys (EXPORTPAGE) are not grants; they are
counted.
"""

from __future__ import annotations

from typing import Any

import grpc

from connector.apps.confluence_datacenter.client import (
    Capabilities,
    ConfluenceClient,
    Json,
    RpcError,
    RpcUnavailable,
)
from connector.apps.confluence_datacenter.common import (
    ALIAS_KEYS,
    BY_KEY,
    BY_REST,
    GROUP,
    SPACE,
    SPACE_PERMISSIONS,
    USER,
    SpacePermission,
    SyncState,
    group_member_entitlement_id,
    required,
)
from connector.apps.confluence_datacenter.ids import IdScheme
from connector.apps.confluence_datacenter.prefetch import Prefetcher
from connector.pb.c1.connector.v2 import entitlement_pb2, grant_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.encoded_grants import EncodedGrants, GrantEncoder
from connector.sdk.errors import ConnectorError, UpstreamError, invalid_argument, not_found
from connector.sdk.interface import (
    GrantProvisioner,
    GrantResult,
    Page,
    ResourceGetter,
    ResourceSyncer,
    RevokeResult,
)

# A subject of a space permission: ("user", user id in the connector's scheme) | ("group", name) |
# ("anonymous", None).
Subject = tuple[str, str | None]
Permissions = list[tuple[SpacePermission, Subject]]


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def space_resource(space: Json, route: str = "/rest/api/space") -> resource_pb2.Resource:
    key = required(space, "key", "space", route)
    name = str(space.get("name") or key)
    details = [str(space.get("type") or ""), str(space.get("status") or "")]
    return model.new_resource(name, SPACE, key, description=" ".join(d for d in details if d))


def _permission_of(entitlement: entitlement_pb2.Entitlement, ids: IdScheme) -> SpacePermission:
    slug = entitlement.slug or entitlement.id.rsplit(":", 1)[-1]
    perm = ids.permission(slug)
    if perm is None:
        other = IdScheme(legacy=not ids.legacy)
        hint = ""
        if other.permission(slug) is not None:
            hint = (
                f" ({slug!r} is a {other.name}-scheme slug: this connector runs with "
                f"{'--legacy-ids' if ids.legacy else 'the default ids (no --legacy-ids)'})"
            )
        raise invalid_argument(
            f"unknown Confluence space permission {slug!r} (known: {', '.join(ids.slugs())}){hint}"
        )
    return perm


class SpaceSyncer(ResourceSyncer, ResourceGetter, GrantProvisioner):
    resource_type = SPACE

    def __init__(
        self, client: ConfluenceClient, state: SyncState, prefetch: Prefetcher | None = None
    ) -> None:
        self.client = client
        self.state = state
        self.prefetch = prefetch
        if prefetch is not None:
            prefetch.register("space", client.space_permissions_rest)

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        if parent is not None:
            return Page()
        items, token = await self.client.list_window("/rest/api/space", token=page_token)
        spaces = items
        for s in spaces:
            required(s, "key", "space", "/rest/api/space")
        # Only the REST permissions (9.1+) are read ahead; JSON-RPC reads stay one at a time.
        if self.prefetch is not None and (await self.client.capabilities()).space_permissions_rest:
            self.prefetch.offer("space", [str(s["key"]) for s in spaces])
        return Page([space_resource(s) for s in spaces], token)

    async def get(
        self, resource_id: resource_pb2.ResourceId, parent: resource_pb2.ResourceId | None
    ) -> resource_pb2.Resource:
        space = await self.client.space(resource_id.resource)
        if space is None:
            raise not_found(f"Confluence space {resource_id.resource!r} does not exist")
        return space_resource(space, "/rest/api/space/{space}")

    async def entitlements(
        self, resource: resource_pb2.Resource, page_token: str
    ) -> Page[entitlement_pb2.Entitlement]:
        name = resource.display_name or resource.id.resource
        ids = self.state.ids
        out = []
        for p in SPACE_PERMISSIONS:
            display_name, description = ids.names(p, name)
            out.append(
                model.permission_entitlement(
                    resource,
                    ids.slug(p),
                    grantable_to=[USER, GROUP],
                    display_name=display_name,
                    description=description,
                )
            )
        return Page(out)

    # --- reading permissions ----------------------------------------------------------------------

    async def _username_for_key(self, key: str, *, fresh: bool = False) -> str | None:
        """The username of a user key: from the listing, or asked (`fresh`: always asked, for a write that
        must use today's username of a user renamed since the listing)."""
        name = None if fresh else self.state.key_to_username.get(key)
        if name is None:
            person = await self.client.user_by_key(key)
            if person is not None and isinstance(person.get("username"), str):
                name = str(person["username"])
                self.state.remember(name, key)
        return name

    async def _key_for_username(self, username: str) -> str | None:
        key = self.state.username_to_key.get(username)
        if key is None:
            person = await self.client.user_by_username(username)
            if person is not None and isinstance(person.get("userKey"), str):
                key = str(person["userKey"])
                self.state.remember(username, key)
        return key

    async def _read(
        self, caps: Capabilities, key: str, *, read_ahead: bool = False, raw: bool = False
    ) -> Permissions | None:
        """The space's permissions as (permission, subject), counting what is not a grant; None when the
        server cannot tell us (logged once as a missing capability). `read_ahead`: a sync may use what the
        prefetcher already read (never a provisioning check, which must see the current state). `raw`:
        users as the API names them (user key over REST, username over JSON-RPC), not as user ids: a
        provisioning check compares them with one resolved name instead of resolving every holder."""
        out: Permissions = []
        if caps.space_permissions_rest:
            ahead = self.prefetch.take("space", key) if read_ahead and self.prefetch is not None else None
            items = await ahead if ahead is not None else await self.client.space_permissions_rest(key)
            for item in items:
                op, subject = _obj(item.get("operation")), _obj(item.get("subject"))
                pair = (str(op.get("targetType", "")), str(op.get("operationKey", "")))
                perm = BY_REST.get(pair)
                if perm is None:
                    self.state.count("space_permissions_unknown_skipped")
                    continue
                kind = str(subject.get("type", ""))
                if kind == "user":
                    user_key = str(subject.get("userKey") or "")
                    if raw or not self.state.ids.legacy:
                        name: str | None = user_key or None
                    else:
                        name = await self._username_for_key(user_key) if user_key else None
                    if name is None:
                        self.state.count("space_permissions_unknown_user_skipped")
                        continue
                    out.append((perm, ("user", name)))
                elif kind == "group" and subject.get("name"):
                    out.append((perm, ("group", str(subject["name"]))))
                elif kind == "anonymous":
                    self.state.count("space_permissions_anonymous_skipped")
                else:
                    self.state.count("space_permissions_unknown_skipped")
            return out
        try:
            sets = await self.client.space_permission_sets(key)
        except RpcUnavailable as err:
            self.state.capability_missing(
                "space_permissions",
                f"Confluence {caps.version_text} has no REST space permissions (9.1+) and {err}; "
                "space permission grants are not synced",
            )
            return None
        except RpcError as err:
            if "NotPermitted" not in err.message:
                raise
            # Validation proved admin rights over REST, so the remote API is refusing our credentials:
            # whether it honours a personal access token is undocumented (Basic auth always works).
            hint = " (use --username/--password: the remote API may not accept tokens)"
            self.state.capability_missing(
                "space_permissions",
                f"the JSON-RPC remote API refused to read space permissions: {err.message}"
                f"{hint if self.client.auth_mode == 'token' else ''}; space permission grants are not synced",
            )
            return None
        for permission_set in sets:
            entries = permission_set.get("spacePermissions")
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict):
                    continue
                ptype = str(entry.get("type") or permission_set.get("type") or "")
                perm = BY_KEY.get(ptype)
                if perm is None:
                    name = "alias" if ptype in ALIAS_KEYS else "unknown"
                    self.state.count(f"space_permissions_{name}_skipped")
                    continue
                if entry.get("userName"):
                    user = str(entry["userName"])
                    user_id = user if raw or self.state.ids.legacy else await self._key_for_username(user)
                    if user_id is None:
                        self.state.count("space_permissions_unknown_user_skipped")
                        continue
                    out.append((perm, ("user", user_id)))
                elif entry.get("groupName"):
                    out.append((perm, ("group", str(entry["groupName"]))))
                else:
                    self.state.count("space_permissions_anonymous_skipped")
        return out

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        key = resource.id.resource
        caps = await self.client.capabilities()
        try:
            permissions = await self._read(caps, key, read_ahead=not page_token)
        except UpstreamError as err:
            if err.status == 404:
                self.state.count("spaces_vanished")
                return Page()
            raise
        except RpcError as err:
            raise ConnectorError(
                grpc.StatusCode.PERMISSION_DENIED
                if "NotPermitted" in err.message
                else grpc.StatusCode.FAILED_PRECONDITION,
                f"reading permissions of space {key}: {err}",
            ) from err
        if permissions is None:
            return Page()
        grants = EncodedGrants()
        seen: set[tuple[str, Subject]] = set()
        encoders: dict[str, GrantEncoder] = {}
        slug_of = self.state.ids.slug
        for perm, subject in permissions:
            if (perm.key, subject) in seen:
                continue
            seen.add((perm.key, subject))
            kind, name = subject
            assert name is not None
            enc = encoders.get(perm.key)
            if enc is None:
                enc = encoders[perm.key] = GrantEncoder(resource, slug_of(perm))
            if kind == "user":
                enc.add(grants, USER.id, name)
            else:
                # Members of the group hold the permission too: the engine derives their grants.
                enc.add(grants, GROUP.id, name, [model.expandable([group_member_entitlement_id(name)])])
        return Page(grants)

    # --- provisioning -------------------------------------------------------------------------------

    @staticmethod
    def _subject(principal: resource_pb2.Resource) -> tuple[str, str]:
        kind = principal.id.resource_type
        if kind not in (USER.id, GROUP.id):
            raise invalid_argument(f"space permissions can be granted to users and groups, not {kind!r}")
        return kind, principal.id.resource

    async def _holds(self, caps: Capabilities, key: str, perm: SpacePermission, subject: Subject) -> bool:
        """Whether `subject` (named as the API names it, see `_target`) holds `perm` on the space now."""
        try:
            permissions = await self._read(caps, key, raw=True)
        except UpstreamError as err:
            if err.status == 404:
                raise not_found(f"Confluence space {key!r} does not exist") from err
            raise
        if permissions is None:
            raise ConnectorError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"changing space permissions on Confluence {caps.version_text} needs the JSON-RPC remote API "
                "(REST space permissions exist from 9.1), which is off or refuses these credentials",
            )
        return (perm, subject) in permissions

    async def _user_key(self, username: str) -> str:
        person = await self.client.user_by_username(username)
        if person is None or not isinstance(person.get("userKey"), str):
            raise not_found(f"Confluence user {username!r} does not exist")
        return str(person["userKey"])

    async def _target(self, rest: bool, kind: str, name: str) -> str:
        """What the write endpoint names the subject by: REST (9.1+) takes the user key, JSON-RPC the
        username; a user id is whichever of the two the id scheme uses."""
        if kind != USER.id:
            return name
        if rest:
            return name if not self.state.ids.legacy else await self._user_key(name)
        if self.state.ids.legacy:
            return name
        username = await self._username_for_key(name, fresh=True)
        if username is None:
            raise not_found(f"Confluence user with key {name!r} does not exist")
        return username

    async def _change(
        self, caps: Capabilities, verb: str, key: str, perm: SpacePermission, subject: Subject, target: str
    ) -> None:
        kind, name = subject
        assert name is not None
        slug = self.state.ids.slug(perm)
        try:
            if caps.space_permissions_rest:
                if verb == "grant":
                    await self.client.grant_space_rest(key, kind, target, perm.rest)
                else:
                    await self.client.revoke_space_rest(key, kind, target, perm.rest)
            elif verb == "grant":
                await self.client.add_space_permission_rpc(key, target, perm.key)
            else:
                await self.client.remove_space_permission_rpc(key, target, perm.key)
        except UpstreamError as err:
            if err.status == 400:
                hint = ""
                if verb == "grant" and perm.key != "VIEWSPACE":
                    view = self.state.ids.slug(BY_KEY["VIEWSPACE"])
                    hint = f" (Confluence requires {view!r} first: grant space:{key}:{view} before {slug})"
                raise ConnectorError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Confluence refused to {verb} {slug} on space {key} for {kind} {name}: "
                    f"{err.detail}{hint}",
                ) from err
            if err.status == 404:
                raise not_found(f"Confluence space {key!r} or {kind} {name!r} does not exist") from err
            raise
        except RpcUnavailable as err:
            raise ConnectorError(grpc.StatusCode.FAILED_PRECONDITION, str(err)) from err
        except RpcError as err:
            raise ConnectorError(
                grpc.StatusCode.PERMISSION_DENIED
                if "NotPermitted" in err.message
                else grpc.StatusCode.FAILED_PRECONDITION,
                f"{verb} {slug} on space {key} for {kind} {name}: {err}",
            ) from err

    async def grant(
        self, principal: resource_pb2.Resource, entitlement: entitlement_pb2.Entitlement
    ) -> GrantResult:
        perm = _permission_of(entitlement, self.state.ids)
        subject = self._subject(principal)
        key = entitlement.resource.id.resource
        caps = await self.client.capabilities()
        annotations = []
        if subject[0] == GROUP.id:
            annotations.append(model.expandable([group_member_entitlement_id(str(subject[1]))]))
        grant = model.new_grant(
            entitlement.resource, self.state.ids.slug(perm), principal.id, annotations=annotations
        )
        target = await self._target(caps.space_permissions_rest, *subject)
        if await self._holds(caps, key, perm, (subject[0], target)):
            return GrantResult(grants=[grant], already_exists=True)
        await self._change(caps, "grant", key, perm, subject, target)
        if self.prefetch is not None:
            self.prefetch.forget("space", key)
        return GrantResult(grants=[grant])

    async def revoke(self, grant: grant_pb2.Grant) -> RevokeResult:
        perm = _permission_of(grant.entitlement, self.state.ids)
        subject = self._subject(grant.principal)
        key = grant.entitlement.resource.id.resource
        caps = await self.client.capabilities()
        target = await self._target(caps.space_permissions_rest, *subject)
        if not await self._holds(caps, key, perm, (subject[0], target)):
            return RevokeResult(already_revoked=True)
        await self._change(caps, "revoke", key, perm, subject, target)
        if self.prefetch is not None:
            self.prefetch.forget("space", key)
        return RevokeResult()
