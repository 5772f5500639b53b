"""Shared helpers of the Atlassian tests: a real sandbox on loopback and the connector wired to it.

(Named test_*.py to stay within the Atlassian test files; it holds no tests itself.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from connector.apps.atlassian.connector import AtlassianConnector, build_connector
from connector.apps.atlassian.settings import AtlassianSettings
from connector.ops.settings import parse_settings
from connector.pb.c1.connector.v2 import entitlement_pb2, grant_pb2, resource_pb2
from connector.sandbox.atlassian.data import OrgSpec
from connector.sandbox.atlassian.server import AtlassianSandbox, start_atlassian_sandbox
from connector.sdk.runtime import ConnectorRuntime

SMALL = OrgSpec(seed=11, accounts=260, groups=30, memberships=800, workspaces=6, tokens_per_user=0.5)


@dataclass
class Env:
    sandbox: AtlassianSandbox
    connector: AtlassianConnector
    runtime: ConnectorRuntime


def settings_for(sandbox: AtlassianSandbox, *extra: str, **env: str) -> AtlassianSettings:
    flags = ["--api-base-url", sandbox.base_url, "--org", sandbox.org_id, *extra]
    environ = {"BATON_API_TOKEN": sandbox.api_key, **env}
    return parse_settings(AtlassianSettings, flags, environ)


@asynccontextmanager
async def atlassian_env(
    *,
    provisioning: bool = True,
    spec: OrgSpec = SMALL,
    flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    **sandbox_options: Any,
) -> AsyncIterator[Env]:
    sandbox = await start_atlassian_sandbox(spec=spec, **sandbox_options)
    runtime: ConnectorRuntime | None = None
    try:
        connector = build_connector(settings_for(sandbox, *flags, **(env or {})))
        runtime = ConnectorRuntime(connector, provisioning=provisioning)
        yield Env(sandbox, connector, runtime)
    finally:
        if runtime is not None:
            await runtime.close()
        await sandbox.stop()


async def list_all(runtime: ConnectorRuntime, type_id: str) -> list[resource_pb2.Resource]:
    out: list[resource_pb2.Resource] = []
    token = ""
    while True:
        resp = await runtime.list_resources(
            resource_pb2.ResourcesServiceListResourcesRequest(resource_type_id=type_id, page_token=token)
        )
        out.extend(resp.list)
        token = resp.next_page_token
        if not token:
            return out


async def entitlements_of(
    runtime: ConnectorRuntime, res: resource_pb2.Resource
) -> list[entitlement_pb2.Entitlement]:
    out: list[entitlement_pb2.Entitlement] = []
    token = ""
    while True:
        resp = await runtime.list_entitlements(
            entitlement_pb2.EntitlementsServiceListEntitlementsRequest(resource=res, page_token=token)
        )
        out.extend(resp.list)
        token = resp.next_page_token
        if not token:
            return out


async def grants_of(runtime: ConnectorRuntime, res: resource_pb2.Resource) -> list[grant_pb2.Grant]:
    out: list[grant_pb2.Grant] = []
    token = ""
    while True:
        resp = await runtime.list_grants(
            grant_pb2.GrantsServiceListGrantsRequest(resource=res, page_token=token)
        )
        out.extend(resp.list)
        token = resp.next_page_token
        if not token:
            return out


async def entitlement(
    runtime: ConnectorRuntime, res: resource_pb2.Resource, slug: str
) -> entitlement_pb2.Entitlement:
    for ent in await entitlements_of(runtime, res):
        if ent.slug == slug:
            return ent
    raise AssertionError(f"{res.id.resource} has no entitlement {slug}")


def user_ref(account_id: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(id=resource_pb2.ResourceId(resource_type="user", resource=account_id))


def group_ref(group_id: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(id=resource_pb2.ResourceId(resource_type="group", resource=group_id))


async def grant(
    runtime: ConnectorRuntime, ent: entitlement_pb2.Entitlement, principal: resource_pb2.Resource
) -> grant_pb2.GrantManagerServiceGrantResponse:
    return await runtime.grant(
        grant_pb2.GrantManagerServiceGrantRequest(entitlement=ent, principal=principal)
    )


async def revoke(
    runtime: ConnectorRuntime, ent: entitlement_pb2.Entitlement, principal: resource_pb2.Resource
) -> grant_pb2.GrantManagerServiceRevokeResponse:
    g = grant_pb2.Grant(
        entitlement=ent,
        principal=principal,
        id=f"{ent.id}:{principal.id.resource_type}:{principal.id.resource}",
    )
    return await runtime.revoke(grant_pb2.GrantManagerServiceRevokeRequest(grant=g))
