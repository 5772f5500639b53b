"""The `user` syncer: every account of the organization's directory (and managed accounts)."""

from __future__ import annotations

import time

from connector.apps.atlassian.resources import USER, user_resource
from connector.apps.atlassian.shared import Shared
from connector.apps.atlassian.state import PageGone
from connector.sdk.errors import invalid_argument, not_found
from connector.sdk.interface import (
    Entitlement,
    Grant,
    Page,
    Resource,
    ResourceGetter,
    ResourceId,
    ResourceSyncer,
)

# A finished pass older than this is not reused for a new listing (daemon mode: the next sync re-reads).
PASS_MAX_AGE = 600.0


class UserSyncer(ResourceSyncer, ResourceGetter):
    resource_type = USER

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        if parent is not None:
            return Page()
        try:
            number = int(page_token) if page_token else 0
        except ValueError:
            raise invalid_argument(f"invalid user page token {page_token!r}") from None
        if number < 0:
            raise invalid_argument(f"invalid user page token {page_token!r}")
        state = self.shared.state
        current = state.user_pass
        stale = (
            number == 0
            and current is not None
            and current.done
            and time.monotonic() - current.started > PASS_MAX_AGE
        )
        upass = state.ensure_user_pass(restart=stale)
        try:
            users, more = await upass.page(number)
        except PageGone:
            # The listing restarted (engine retry after the pages were handed out): walk again.
            upass = state.ensure_user_pass(restart=True)
            users, more = await upass.page(number)
        return Page([user_resource(u) for u in users], str(number + 1) if more else "")

    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]:
        return Page()

    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]:
        return Page()

    async def get(self, resource_id: ResourceId, parent: ResourceId | None) -> Resource:
        user = await self.shared.client.get_user(resource_id.resource)
        if not user.get("accountId"):
            raise not_found(f"user {resource_id.resource} was not found")
        return user_resource(user)
