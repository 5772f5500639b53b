"""Groups: listing, the `member` entitlement, membership grants, and membership provisioning."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from connector.apps.confluence_datacenter.client import ConfluenceClient, Json, RpcError, RpcUnavailable
from connector.apps.confluence_datacenter.common import GROUP, MEMBER, USER, SyncState, required
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

_GROUPS = "/rest/api/group"
_MEMBERS = "/rest/api/group/{group}/member"


def group_resource(group: Json, route: str = _GROUPS) -> resource_pb2.Resource:
    name = required(group, "name", "group", route)
    return model.group_resource(
        name,
        GROUP,
        name,
        profile={"group_name": name, "group_type": group.get("type", "group")},
    )


class GroupMembers:
    """Every group's direct members, fetched once (servers before 8.4 have no user listing, so the user
    syncer derives users from memberships; the group syncer then reuses the same data)."""

    def __init__(self, client: ConfluenceClient) -> None:
        self.client = client
        self._task: asyncio.Task[dict[str, list[Json]]] | None = None

    def invalidate(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    def cached(self) -> dict[str, list[Json]] | None:
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is None:
            return task.result()
        return None

    async def all(self) -> dict[str, list[Json]]:
        if self._task is None or (self._task.done() and (self._task.cancelled() or self._task.exception())):
            self._task = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._task)

    async def _fetch(self) -> dict[str, list[Json]]:
        groups = await self.client.list_all(_GROUPS)
        names = [required(g, "name", "group", _GROUPS) for g in groups]

        async def members(name: str) -> list[Json]:
            return await self.client.list_all("/rest/api/group/{group}/member", path_params={"group": name})

        results = await asyncio.gather(*(members(n) for n in names))
        return dict(zip(names, results, strict=True))


class GroupSyncer(ResourceSyncer, ResourceGetter, GrantProvisioner):
    resource_type = GROUP

    def __init__(
        self,
        client: ConfluenceClient,
        state: SyncState,
        members: GroupMembers,
        prefetch: Prefetcher | None = None,
    ) -> None:
        self.client = client
        self.state = state
        self.members = members
        self.prefetch = prefetch
        if prefetch is not None:
            prefetch.register("group", self._first_members)

    async def _first_members(self, name: str) -> tuple[list[Json], str]:
        return await self.client.first_page("/rest/api/group/{group}/member", path_params={"group": name})

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        if parent is not None:
            return Page()
        items, token = await self.client.list_window(_GROUPS, token=page_token)
        groups = items
        for g in groups:
            required(g, "name", "group", _GROUPS)
        # Before 8.4 the members come from GroupMembers (fetched for the user listing anyway).
        if self.prefetch is not None and (await self.client.capabilities()).list_users_rest:
            self.prefetch.offer("group", [str(g["name"]) for g in groups])
        return Page([group_resource(g) for g in groups], token)

    async def get(
        self, resource_id: resource_pb2.ResourceId, parent: resource_pb2.ResourceId | None
    ) -> resource_pb2.Resource:
        group = await self.client.group(resource_id.resource)
        if group is None:
            raise not_found(f"Confluence group {resource_id.resource!r} does not exist")
        return group_resource(group, "/rest/api/group/{group}")

    async def entitlements(
        self, resource: resource_pb2.Resource, page_token: str
    ) -> Page[entitlement_pb2.Entitlement]:
        name = resource.display_name or resource.id.resource
        return Page(
            [
                model.assignment_entitlement(
                    resource,
                    MEMBER,
                    grantable_to=[USER],
                    display_name=f"{name} Group Member",
                    description=f"Is member of the {name} group in Confluence Data Center",
                )
            ]
        )

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        name = resource.id.resource
        cached = self.members.cached()
        if cached is not None and name in cached and not page_token:
            people: list[Json] = cached[name]
            token = ""
        else:
            ahead = (
                self.prefetch.take("group", name) if self.prefetch is not None and not page_token else None
            )
            try:
                if ahead is not None:
                    people, token = await ahead
                else:
                    people, token = await self.client.list_window(
                        "/rest/api/group/{group}/member", path_params={"group": name}, token=page_token
                    )
            except UpstreamError as err:
                if err.status == 404:
                    # Deleted between listing and now: nothing to grant.
                    self.state.count("groups_vanished")
                    return Page()
                raise
        grants = EncodedGrants()
        field = self.state.ids.user_field
        GrantEncoder(resource, MEMBER).add_all(
            grants, USER.id, [required(p, field, "group member", _MEMBERS) for p in people]
        )
        return Page(grants, token)

    # --- provisioning ---------------------------------------------------------------------------

    async def _target(
        self, principal: resource_pb2.Resource, group: resource_pb2.Resource
    ) -> tuple[str, str]:
        """(username, group name): membership endpoints (REST and JSON-RPC) take today's username, which a
        user id in the default scheme (the user key) is resolved to at the time of the write."""
        if principal.id.resource_type != USER.id:
            raise invalid_argument(
                f"only users can be members of a Confluence group (got a {principal.id.resource_type!r})"
            )
        if group.id.resource_type != GROUP.id:
            raise invalid_argument(f"not a group entitlement: {group.id.resource_type}:{group.id.resource}")
        user_id = principal.id.resource
        if self.state.ids.legacy:
            return user_id, group.id.resource
        person = await self.client.user_by_key(user_id)
        username = person.get("username") if person is not None else None
        if not isinstance(username, str) or not username:
            raise not_found(f"Confluence user with key {user_id!r} does not exist")
        self.state.remember(username, user_id)
        return username, group.id.resource

    async def _is_member(self, username: str, group: str) -> bool:
        try:
            return group in await self.client.groups_of(username)
        except UpstreamError as err:
            if err.status == 404:
                raise not_found(f"Confluence user {username!r} does not exist") from err
            raise

    async def grant(
        self, principal: resource_pb2.Resource, entitlement: entitlement_pb2.Entitlement
    ) -> GrantResult:
        username, group = await self._target(principal, entitlement.resource)
        grant = model.new_grant(entitlement.resource, MEMBER, principal.id)
        if await self._is_member(username, group):
            return GrantResult(grants=[grant], already_exists=True)
        await self._write(self.client.add_member, username, group)
        self.members.invalidate()
        if self.prefetch is not None:
            self.prefetch.forget("group", group)
        return GrantResult(grants=[grant])

    async def revoke(self, grant: grant_pb2.Grant) -> RevokeResult:
        username, group = await self._target(grant.principal, grant.entitlement.resource)
        if not await self._is_member(username, group):
            return RevokeResult(already_revoked=True)
        await self._write(self.client.remove_member, username, group)
        self.members.invalidate()
        if self.prefetch is not None:
            self.prefetch.forget("group", group)
        return RevokeResult()

    async def _write(self, op: Any, username: str, group: str) -> None:
        try:
            await op(username, group)
        except UpstreamError as err:
            if err.status == 404:
                raise not_found(f"Confluence user {username!r} or group {group!r} does not exist") from err
            raise
        except RpcUnavailable as err:
            raise ConnectorError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"changing group membership on this Confluence version needs the JSON-RPC remote API: {err}",
            ) from err
        except RpcError as err:
            refused = "NotPermitted" in err.message
            # Whether the remote API honours a personal access token is undocumented; Basic auth always works.
            hint = (
                " (the JSON-RPC remote API may not accept personal access tokens: use --username/--password)"
                if refused and self.client.auth_mode == "token"
                else ""
            )
            raise ConnectorError(
                grpc.StatusCode.PERMISSION_DENIED if refused else grpc.StatusCode.FAILED_PRECONDITION,
                f"changing the membership of {username!r} in group {group!r}: {err}{hint}",
            ) from err
