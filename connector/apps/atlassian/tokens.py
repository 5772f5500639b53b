"""The `api_token` syncer (sync only): user API tokens from the API-access API, owned by their user."""

from __future__ import annotations

from connector.apps.atlassian.client import AdminApiError
from connector.apps.atlassian.resources import API_TOKEN, token_resource
from connector.apps.atlassian.shared import Shared, log
from connector.sdk.interface import Entitlement, Grant, Page, Resource, ResourceId, ResourceSyncer


class ApiTokenSyncer(ResourceSyncer):
    resource_type = API_TOKEN

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        if parent is not None:
            return Page()
        try:
            items, nxt, _ = await self.shared.client.api_tokens_page(page_token or None)
        except AdminApiError as err:
            # Organizations without the API-access API (it comes with Atlassian Guard) answer 403/404 on
            # it; that is "no tokens to report", not a failed sync. A wrong organization is still an error.
            if err.http_status in (403, 404) and err.api_code != "ADMIN-404-2" and not page_token:
                self.shared.state.counters["api_tokens_unavailable"] = 1
                log.warning("api_tokens_unavailable", status=err.http_status, code=err.api_code)
                return Page()
            raise
        return Page([token_resource(t) for t in items if t.get("id")], nxt or "")

    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]:
        return Page()

    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]:
        return Page()
