"""The `organization` syncer: the organization itself, its organization-level roles as entitlements
(`organization:<orgId>:role:atlassian/org-admin`, ...) and who holds them.

Holders come from the user walk, which already asks for each account's `platformRoles`: no request of
its own beyond `GET v1/orgs/{org}`. The Go connector reads the same assignments per account (role
assignments owned by `platform`); project and goal assignments are neither workspace nor organization
roles and are skipped by both. Sync only, as in the Go connector.
"""

from __future__ import annotations

from connector.apps.atlassian.resources import (
    ORG_ROLES,
    ORGANIZATION,
    USER,
    organization_resource,
    role_slug,
)
from connector.apps.atlassian.shared import Shared
from connector.sdk import model
from connector.sdk.encoded_grants import EncodedGrants, GrantEncoder
from connector.sdk.interface import Entitlement, Grant, Page, Resource, ResourceId, ResourceSyncer


class OrganizationSyncer(ResourceSyncer):
    resource_type = ORGANIZATION

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        if parent is not None:
            return Page()
        client = self.shared.client
        return Page([organization_resource(await client.get_org(), client.org_id)])

    async def _roles(self) -> tuple[str, ...]:
        # Platform roles beyond the documented four are offered too once someone holds one (like workspace
        # roles found in the data), so that every grant has its entitlement.
        held = await self.shared.state.platform_roles()
        return ORG_ROLES + tuple(sorted(set(held) - set(ORG_ROLES)))

    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]:
        name = resource.display_name or resource.id.resource
        return Page(
            [
                model.permission_entitlement(
                    resource,
                    role_slug(role),
                    grantable_to=[USER],
                    display_name=f"{role} on {name}",
                    description=f"Role '{role}' applied at organization level.",
                )
                for role in await self._roles()
            ]
        )

    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]:
        state = self.shared.state
        state.counters["grant_listings"] += 1
        state.roles.prefetch_holders()  # the grants phase has begun (see GroupSyncer.grants)
        held = await state.platform_roles()
        grants = EncodedGrants()
        slim = Resource(id=resource.id)
        for role in await self._roles():
            accounts = sorted(set(held.get(role, ())))
            GrantEncoder(slim, role_slug(role)).add_all(grants, USER.id, accounts)
            state.counters["organization_grants"] += len(accounts)
        return Page(grants)
