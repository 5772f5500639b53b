"""The `workspace` syncer: product instances, one entitlement per role (`workspace:<ARI>:role:<role>`),
grants to users and groups, and role provisioning (users: v1 roles/assign|revoke; groups: v2 group
role-assignments)."""

from __future__ import annotations

from connector.apps.atlassian.client import R_WORKSPACES, AdminApiError, Json
from connector.apps.atlassian.errors import provisioning_error
from connector.apps.atlassian.resources import (
    GROUP,
    MEMBER,
    ROLE_PREFIX,
    USER,
    WORKSPACE,
    profile_of,
    role_label,
    role_of_slug,
    role_slug,
    workspace_resource,
)
from connector.apps.atlassian.roles import assignment_roles, is_direct
from connector.apps.atlassian.shared import Shared
from connector.pb.c1.connector.v2 import annotation_trait_pb2
from connector.sdk import model
from connector.sdk.encoded_grants import EncodedGrants, GrantEncoder
from connector.sdk.errors import invalid_argument, not_found
from connector.sdk.interface import (
    Entitlement,
    Grant,
    GrantProvisioner,
    GrantResult,
    Page,
    Resource,
    ResourceId,
    ResourceSyncer,
    RevokeResult,
)

# Answers meaning "already assigned" / "not assigned" when the tenant reports duplicates as errors.
_DUPLICATE = ("ADMIN-UAM-409-2", "ADMIN-409-28")
_ABSENT = ("ADMIN-UAM-404-1", "ADMIN-404-1")


def type_key_of(resource: Resource) -> str:
    """The product of a workspace: from its profile, else from its ARI (`ari:cloud:<product>::...`)."""
    profile = profile_of(resource, annotation_trait_pb2.AppTrait)
    key = profile.get("type_key")
    if isinstance(key, str) and key:
        return key
    parts = resource.id.resource.split(":")
    return parts[2] if len(parts) > 3 and parts[0] == "ari" else ""


def parse_role_entitlement(entitlement: Entitlement) -> tuple[str, str]:
    """(workspace id, role) of `workspace:<ARI>:role:<role>`.

    Role ids contain "/" but never ":", and ARIs contain ":", so the id is read from both ends: the type
    first, the role last, `role` before it, the workspace in between (as the Go connector parses it). Ids
    without the `role:` segment (this connector's ids before 2026-12) are still understood, so that grants
    synced by an older version can be revoked.
    """
    eid = entitlement.id
    parts = eid.split(":")
    role = role_of_slug(entitlement.slug) if entitlement.slug else parts[-1]
    if entitlement.slug:
        middle_end = -2 if entitlement.slug.startswith(ROLE_PREFIX) else -1
    else:
        middle_end = -2 if len(parts) > 3 and parts[-2] == ROLE_PREFIX[:-1] else -1
    ws_id = entitlement.resource.id.resource or ":".join(parts[1:middle_end])
    if "/" not in role or not ws_id or (eid and parts[0] != WORKSPACE.id):
        raise invalid_argument(f"entitlement {eid!r} is not a workspace role (workspace:<ARI>:role:<role>)")
    return ws_id, role


def _has_role(assignments: list[Json], resource_id: str, role: str, *, direct_only: bool) -> bool:
    for item in assignments:
        if item.get("resourceId") != resource_id:
            continue
        methods = assignment_roles(item).get(role)
        if methods is not None and (not direct_only or is_direct(methods)):
            return True
    return False


class WorkspaceSyncer(ResourceSyncer, GrantProvisioner):
    resource_type = WORKSPACE

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    # --- sync ------------------------------------------------------------------------------------------

    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        if parent is not None:
            return Page()
        items, cursor, _ = await self.shared.client.workspaces_page(page_token or None)
        out = []
        roles = self.shared.state.roles
        for ws in items:
            res = workspace_resource(ws, R_WORKSPACES)
            roles.note_workspace(res.id.resource, type_key_of(res))
            out.append(res)
        if cursor is None:
            roles.workspaces_listed()
        return Page(out, cursor or "")

    async def _roles(self, resource: Resource) -> tuple[str, ...]:
        return await self.shared.state.roles.roles_of(resource.id.resource, type_key_of(resource))

    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]:
        name = resource.display_name or resource.id.resource
        ents = []
        for role in await self._roles(resource):
            label = role_label(role)
            ents.append(
                model.permission_entitlement(
                    resource,
                    role_slug(role),
                    grantable_to=[USER, GROUP],
                    display_name=f"{name} {label}",
                    description=f"{label} role ({role}) on {name}",
                )
            )
        return Page(ents)

    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]:
        roles = await self._roles(resource)
        try:
            index = int(page_token) if page_token else 0
        except ValueError:
            raise invalid_argument(f"invalid workspace grants page token {page_token!r}") from None
        if index >= len(roles):
            return Page()
        role = roles[index]
        state = self.shared.state
        state.counters["grant_listings"] += 1
        holders = await state.roles.holders(resource.id.resource, role)
        grants = EncodedGrants()
        enc = GrantEncoder(Resource(id=resource.id), role_slug(role))  # slim resource: see GroupSyncer.grants
        for gid in holders.groups:
            member_ent = model.entitlement_id(model.resource_id(GROUP.id, gid), MEMBER)
            enc.add(grants, GROUP.id, gid, [model.expandable([member_ent])])
        # Direct holders get their own grant even when a group also gives them the role: removing them
        # from the group would not take the role away. Expansion merges both sources.
        enc.add_all(grants, USER.id, holders.users)
        state.counters["workspace_user_grants"] += len(holders.users)
        state.counters["workspace_group_grants"] += len(holders.groups)
        state.counters["workspace_users_via_groups"] += holders.via_groups_only
        nxt = index + 1
        return Page(grants, str(nxt) if nxt < len(roles) else "")

    # --- provisioning -------------------------------------------------------------------------------

    async def _group(self, group_id: str) -> Json:
        try:
            group = await self.shared.client.get_group(group_id)
        except AdminApiError as err:
            if err.http_status == 404:
                raise not_found(f"group {group_id} was not found ({err.api_code} {err.title})") from err
            raise
        return group

    async def grant(self, principal: Resource, entitlement: Entitlement) -> GrantResult:
        ws_id, role = parse_role_entitlement(entitlement)
        client = self.shared.client
        kind = principal.id.resource_type
        pid = principal.id.resource
        already = False
        try:
            if kind == USER.id:
                already = _has_role(
                    await client.user_role_assignments(pid, ws_id, role), ws_id, role, direct_only=True
                )
                # Written even when it looks assigned: reads lag writes (up to 30 s), so a pending revoke
                # may not show yet.
                await client.change_user_role(pid, ws_id, role, assign=True)
            elif kind == GROUP.id:
                group = await self._group(pid)
                already = _has_role(
                    await client.group_role_assignments(pid, ws_id, role), ws_id, role, direct_only=False
                )
                directory = str(group.get("directoryId") or "-")
                await client.change_group_role(directory, pid, ws_id, role, assign=True)
            else:
                raise invalid_argument(f"workspace roles are granted to users and groups, not {kind}")
        except AdminApiError as err:
            if err.http_status == 409 and err.api_code in _DUPLICATE:
                already = True
            elif err.api_code == "ADMIN-404-8":
                raise not_found(f"user {pid} was not found: {err.message}") from err
            else:
                endpoint = "assign" if kind == USER.id else ""
                raise provisioning_error(err, endpoint=endpoint, resource_id=ws_id, role=role) from err
        annotations = []
        if kind == GROUP.id:
            member_ent = model.entitlement_id(model.resource_id(GROUP.id, pid), MEMBER)
            annotations.append(model.expandable([member_ent]))
        res = (
            entitlement.resource
            if entitlement.resource.id.resource
            else Resource(id=model.resource_id(WORKSPACE.id, ws_id))
        )
        grant = model.new_grant(res, role_slug(role), principal.id, annotations=annotations)
        return GrantResult(grants=[grant], already_exists=already)

    async def revoke(self, grant: Grant) -> RevokeResult:
        ws_id, role = parse_role_entitlement(grant.entitlement)
        client = self.shared.client
        kind = grant.principal.id.resource_type
        pid = grant.principal.id.resource
        try:
            if kind == USER.id:
                held = _has_role(
                    await client.user_role_assignments(pid, ws_id, role), ws_id, role, direct_only=True
                )
                await client.change_user_role(pid, ws_id, role, assign=False)
            elif kind == GROUP.id:
                group = await self._group(pid)
                held = _has_role(
                    await client.group_role_assignments(pid, ws_id, role), ws_id, role, direct_only=False
                )
                directory = str(group.get("directoryId") or "-")
                await client.change_group_role(directory, pid, ws_id, role, assign=False)
            else:
                raise invalid_argument(f"workspace roles are held by users and groups, not {kind}")
        except AdminApiError as err:
            if err.http_status == 404 and err.api_code in (*_ABSENT, "ADMIN-404-8"):
                return RevokeResult(already_revoked=True)
            endpoint = "revoke" if kind == USER.id else ""
            raise provisioning_error(err, endpoint=endpoint, resource_id=ws_id, role=role) from err
        return RevokeResult(already_revoked=not held)
