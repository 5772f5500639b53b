"""The `group` syncer: directory groups, their `member` entitlement, grants from memberships, and
membership provisioning through the v2 memberships endpoints."""

from __future__ import annotations

import grpc

from connector.apps.atlassian.client import PAGE_LIMIT, R_GROUPS_SEARCH, AdminApiError, Json
from connector.apps.atlassian.errors import provisioning_error
from connector.apps.atlassian.resources import (
    GROUP,
    MEMBER,
    USER,
    group_read_only,
    group_resource,
    profile_of,
)
from connector.apps.atlassian.shared import Shared
from connector.pb.c1.connector.v2 import annotation_entitlement_pb2, annotation_trait_pb2
from connector.sdk import model
from connector.sdk.encoded_grants import EncodedGrants, GrantEncoder
from connector.sdk.errors import ConnectorError, failed_precondition, invalid_argument, not_found
from connector.sdk.interface import (
    Entitlement,
    Grant,
    GrantProvisioner,
    GrantResult,
    Page,
    Resource,
    ResourceGetter,
    ResourceId,
    ResourceSyncer,
    RevokeResult,
)

GRANTS_PER_PAGE = 5000
READ_ONLY_NOTE = (
    "synced from an identity provider: read-only in Atlassian; change it in the identity provider"
)
# Upstream answers that mean "already in the state we want" for membership writes.
_DUPLICATE_ADD = ("ADMIN-409-28", "ADMIN-UAM-409-2")


def _group_id_of(entitlement: Entitlement) -> str:
    gid = entitlement.resource.id.resource
    if not gid:
        raise invalid_argument(f"entitlement {entitlement.id!r} does not name its group")
    return gid


def _check_member_entitlement(entitlement: Entitlement) -> None:
    slug = entitlement.slug or entitlement.id.rpartition(":")[2]
    if slug != MEMBER:
        raise invalid_argument(f"groups only have the {MEMBER!r} entitlement, not {slug!r}")


class GroupSyncer(ResourceSyncer, ResourceGetter, GrantProvisioner):
    resource_type = GROUP

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    # --- sync ------------------------------------------------------------------------------------------

    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        if parent is not None:
            return Page()
        # counts.resources tells which groups hold workspace roles: only those are asked for them.
        body: Json = {"limit": PAGE_LIMIT, "expand": ["counts.users", "counts.resources"]}
        items, cursor, _ = await self.shared.client.groups_search_page(body, page_token or None)
        self.shared.state.roles.note_groups(items, last=cursor is None)
        return Page([group_resource(g, R_GROUPS_SEARCH) for g in items], cursor or "")

    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]:
        profile = profile_of(resource, annotation_trait_pb2.GroupTrait)
        name = resource.display_name or resource.id.resource
        annotations = []
        description = f"Member of the {name} group"
        if profile.get("read_only"):
            description += f" ({READ_ONLY_NOTE})"
            annotations.append(annotation_entitlement_pb2.EntitlementImmutable(source_id="identity-provider"))
        ent = model.assignment_entitlement(
            resource,
            MEMBER,
            grantable_to=[USER],
            display_name=f"{name} group member",
            description=description,
            annotations=annotations,
        )
        return Page([ent])

    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]:
        try:
            start = int(page_token) if page_token else 0
        except ValueError:
            raise invalid_argument(f"invalid group grants page token {page_token!r}") from None
        state = self.shared.state
        state.counters["grant_listings"] += 1
        state.roles.prefetch_holders()  # the grants phase has begun: workspace role holders are needed
        members = await state.memberships()
        account_ids = sorted(set(members.get(resource.id.resource, ())))
        chunk = account_ids[start : start + GRANTS_PER_PAGE]
        # Grants name their resource by id only: the full resource (profile and all) is stored once with
        # the resources, not copied into each of possibly thousands of grants.
        grants = EncodedGrants()
        GrantEncoder(Resource(id=resource.id), MEMBER).add_all(grants, USER.id, chunk)
        end = start + GRANTS_PER_PAGE
        return Page(grants, str(end) if end < len(account_ids) else "")

    async def get(self, resource_id: ResourceId, parent: ResourceId | None) -> Resource:
        return group_resource(await self._group(resource_id.resource))

    # --- provisioning -------------------------------------------------------------------------------

    async def _group(self, group_id: str) -> Json:
        try:
            group = await self.shared.client.get_group(group_id)
        except AdminApiError as err:
            if err.http_status == 404:
                raise not_found(
                    f"group {group_id} was not found ({err.api_code} {err.title})".strip()
                ) from err
            raise
        if not group.get("id"):
            raise not_found(f"group {group_id} was not found")
        return group

    def _refuse_read_only(self, group: Json, verb: str) -> None:
        if group_read_only(group):
            raise failed_precondition(
                f"cannot {verb} group {group.get('name') or group.get('id')}: it is synced from an identity "
                f"provider (managedBy={group.get('managedBy')}) and read-only in Atlassian; change its "
                "membership in the identity provider instead"
            )

    async def _is_member(self, group_id: str, account_id: str) -> bool:
        found = await self.shared.client.search_users(
            {"accountIds": [account_id], "groupIds": [group_id], "limit": 1}
        )
        return any(u.get("accountId") == account_id for u in found)

    async def grant(self, principal: Resource, entitlement: Entitlement) -> GrantResult:
        _check_member_entitlement(entitlement)
        if principal.id.resource_type != USER.id:
            raise ConnectorError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"only users can be added to Atlassian groups (got a {principal.id.resource_type})",
            )
        group_id = _group_id_of(entitlement)
        account_id = principal.id.resource
        group = await self._group(group_id)
        self._refuse_read_only(group, "add members to")
        directory = str(group.get("directoryId") or "-")
        try:
            already = await self._is_member(group_id, account_id)
            await self.shared.client.add_member(directory, group_id, account_id)
        except AdminApiError as err:
            if err.http_status == 409 and err.api_code in _DUPLICATE_ADD:
                already = True
            elif err.api_code == "ADMIN-404-8" or (err.http_status == 404 and "user" in err.title.lower()):
                raise not_found(f"user {account_id} was not found: {err.message}") from err
            else:
                raise provisioning_error(err) from err
        res = group_resource(group)
        return GrantResult(grants=[model.new_grant(res, MEMBER, principal.id)], already_exists=already)

    async def revoke(self, grant: Grant) -> RevokeResult:
        _check_member_entitlement(grant.entitlement)
        if grant.principal.id.resource_type != USER.id:
            raise invalid_argument(f"only users are members of Atlassian groups (got {grant.principal.id})")
        group_id = _group_id_of(grant.entitlement)
        account_id = grant.principal.id.resource
        group = await self._group(group_id)
        self._refuse_read_only(group, "remove members from")
        directory = str(group.get("directoryId") or "-")
        try:
            was_member = await self._is_member(group_id, account_id)
            await self.shared.client.remove_member(directory, group_id, account_id)
        except AdminApiError as err:
            if err.api_code == "ADMIN-404-8":
                # The account is gone: nothing left to revoke.
                return RevokeResult(already_revoked=True)
            if err.http_status == 404 and err.api_code not in ("ADMIN-404-10", "ADMIN-404-2"):
                return RevokeResult(already_revoked=True)
            raise provisioning_error(err) from err
        return RevokeResult(already_revoked=not was_member)
