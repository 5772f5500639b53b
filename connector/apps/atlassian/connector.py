"""AtlassianConnector: syncs and provisions an Atlassian Cloud organization through the admin API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.protobuf.message import Message

from connector.apps.atlassian.accounts import AtlassianAccountManager
from connector.apps.atlassian.actions import UserLifecycle
from connector.apps.atlassian.client import AdminApiError, AtlassianClient
from connector.apps.atlassian.groups import GroupSyncer
from connector.apps.atlassian.organization import OrganizationSyncer
from connector.apps.atlassian.settings import AtlassianSettings
from connector.apps.atlassian.shared import Shared
from connector.apps.atlassian.tokens import ApiTokenSyncer
from connector.apps.atlassian.users import UserSyncer
from connector.apps.atlassian.workspaces import WorkspaceSyncer
from connector.ops.secrets import BearerAuth, SecretSource
from connector.pb.c1.connector.v2 import connector_pb2
from connector.sdk.errors import ConnectorError
from connector.sdk.http import UpstreamClient
from connector.sdk.interface import AccountManager, Action, Connector, ResourceId, ResourceSyncer

KEY_HELP = (
    "use an organization API key created by an Org admin at admin.atlassian.com > Settings > API keys "
    "(choose 'API key without scopes') in --access-token / BATON_ACCESS_TOKEN "
    "(or --api-token / BATON_API_TOKEN)"
)


class AtlassianConnector(Connector):
    # Users are deleted with the lifecycle API (delete_resource below).
    supports_resource_delete = True

    def __init__(
        self,
        client: AtlassianClient,
        *,
        use_scim: bool = False,
        verify_direct_roles: bool = True,
        grants_wanted: bool = True,
        entitlements_wanted: bool = True,
    ) -> None:
        self.client = client
        self.shared = Shared(
            client,
            verify_direct_roles=verify_direct_roles,
            grants_wanted=grants_wanted and entitlements_wanted,
            entitlements_wanted=entitlements_wanted,
        )
        self._syncers: list[ResourceSyncer] = [
            UserSyncer(self.shared),
            GroupSyncer(self.shared),
            WorkspaceSyncer(self.shared),
            OrganizationSyncer(self.shared),
            ApiTokenSyncer(self.shared),
        ]
        self._accounts = AtlassianAccountManager(self.shared, use_scim=use_scim)
        self._lifecycle = UserLifecycle(client)

    def metadata(self) -> connector_pb2.ConnectorMetadata:
        return connector_pb2.ConnectorMetadata(
            display_name="Atlassian",
            help_url="https://developer.atlassian.com/cloud/admin/organization/rest/intro/",
            description=(
                "Accounts, groups, workspaces (product roles), organization roles and API tokens of an "
                "Atlassian Cloud organization, through the organization admin API"
            ),
        )

    async def validate(self) -> list[Message]:
        org = self.client.org_id
        try:
            await self.client.get_org()
        except AdminApiError as err:
            if err.http_status == 401:
                raise ConnectorError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "Atlassian rejected the API key (HTTP 401): the key is wrong, expired or revoked; "
                    + KEY_HELP,
                ) from err
            if err.http_status in (403, 404):
                raise ConnectorError(
                    grpc.StatusCode.NOT_FOUND,
                    f"organization {org!r} is not visible to this API key "
                    f"({err.api_code or err.http_status} {err.title}).{await self._visible_orgs()} "
                    "Check --organization-id / BATON_ORGANIZATION_ID (or --org / BATON_ORG; the id after "
                    "/o/ in admin.atlassian.com URLs) and that the key was created in that organization",
                ) from err
            raise
        if self.client.scim is not None:
            try:
                await self.client.scim_probe()
            except AdminApiError as err:
                if err.http_status in (401, 403):
                    raise ConnectorError(
                        grpc.StatusCode.UNAUTHENTICATED,
                        "the SCIM directory rejected --scim-token / BATON_SCIM_TOKEN "
                        f"(HTTP {err.http_status}); "
                        "copy the API key of the identity provider directory (Security > Identity providers)",
                    ) from err
                if err.http_status == 404:
                    raise ConnectorError(
                        grpc.StatusCode.NOT_FOUND,
                        "no SCIM directory at --scim-base-url / BATON_SCIM_BASE_URL (HTTP 404); "
                        "it should look like https://api.atlassian.com/scim/directory/<directoryId>",
                    ) from err
                raise
        return []

    async def _visible_orgs(self) -> str:
        try:
            orgs = await self.client.list_orgs()
        except ConnectorError:
            return ""
        names = [f"{o.get('id')} ({(o.get('attributes') or {}).get('name', '')})" for o in orgs]
        return f" The key can see: {', '.join(names)}." if names else ""

    def syncers(self) -> Sequence[ResourceSyncer]:
        return self._syncers

    def account_manager(self) -> AccountManager | None:
        return self._accounts

    def upstream_clients(self) -> Sequence[UpstreamClient]:
        return self.client.clients()

    def actions(self) -> Sequence[Action]:
        return self._lifecycle.actions()

    async def delete_resource(self, resource_id: ResourceId, parent: ResourceId | None) -> list[Message]:
        if resource_id.resource_type != "user":
            raise ConnectorError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"deleting {resource_id.resource_type} resources is not supported: only users can be deleted",
            )
        return await self._lifecycle.delete(resource_id.resource)

    def sync_counters(self) -> Mapping[str, int]:
        state = self.shared.state
        counters = state.snapshot() if state.active else dict(self.shared.last_counters)
        stats = self.client.http.stats
        counters["upstream_retries"] = stats.retries
        counters["upstream_rate_limited"] = stats.rate_limited
        return counters

    async def cleanup(self) -> None:
        await self.shared.reset()

    async def close(self) -> None:
        await self.shared.state.close()
        await self.client.aclose()


def build_connector(settings: AtlassianSettings) -> AtlassianConnector:
    client = AtlassianClient(
        base_url=settings.api_base_url,
        api_key=BearerAuth(SecretSource(settings, "api_token")),
        org_id=settings.org,
        concurrency=settings.api_concurrency,
        rate_limit=settings.api_rate_limit,
        timeout=float(settings.http_timeout_seconds),
        scim_base_url=settings.scim_base_url,
        scim_token=BearerAuth(SecretSource(settings, "scim_token")) if settings.scim_token else None,
    )
    return AtlassianConnector(
        client,
        use_scim=settings.scim_enabled,
        verify_direct_roles=settings.verify_direct_roles,
        grants_wanted=not settings.skip_grants,
        entitlements_wanted=not settings.skip_entitlements_and_grants,
    )
