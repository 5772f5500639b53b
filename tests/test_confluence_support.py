"""Shared helpers for the Confluence Data Center tests (no tests here).

Everything runs against the real aiohttp sandbox on 127.0.0.1 with a real ConfluenceConnector.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from connector.apps.confluence_datacenter.connector import ConfluenceConnector
from connector.apps.confluence_datacenter.settings import ConfluenceSettings
from connector.ops.settings import parse_settings
from connector.pb.c1.connector.v2 import entitlement_pb2, grant_pb2, resource_pb2
from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.data import SandboxData, User
from connector.sandbox.confluence.server import (
    PageCaps,
    RunningConfluenceSandbox,
    SandboxConfig,
    start_confluence_sandbox,
)
from connector.sdk.interface import Connector

VERSIONS = ("7.19", "8.5", "9.2")
# Caps far below the client's requested limit, so listings need several pages everywhere.
TINY_CAPS = PageCaps(user_list=7, admin_active=6, group=5, group_member=4, memberof=3, space=3)


def settings_for(
    sandbox: RunningConfluenceSandbox, *extra: str, token: str | None = "admin-pat"
) -> ConfluenceSettings:
    argv = ["--hostname", sandbox.base_url]
    if token is not None:
        argv += ["--access-token", token]
    return parse_settings(ConfluenceSettings, [*argv, *extra], env={})


@contextlib.asynccontextmanager
async def running(
    version: str = "9.2",
    *,
    data: SandboxData | None = None,
    config: SandboxConfig | None = None,
    args: Sequence[str] = (),
    token: str | None = "admin-pat",
) -> AsyncIterator[tuple[RunningConfluenceSandbox, ConfluenceConnector]]:
    cfg = config or SandboxConfig(version=version)
    sandbox = await start_confluence_sandbox(data if data is not None else sandbox_data.small(), cfg)
    connector = ConfluenceConnector(settings_for(sandbox, *args, token=token))
    try:
        yield sandbox, connector
    finally:
        await connector.close()
        await sandbox.stop()


@dataclass
class Synced:
    resources: dict[str, list[resource_pb2.Resource]] = field(default_factory=dict)
    entitlements: list[entitlement_pb2.Entitlement] = field(default_factory=list)
    grants: list[grant_pb2.Grant] = field(default_factory=list)

    def ids(self, type_id: str) -> list[str]:
        return [r.id.resource for r in self.resources.get(type_id, [])]

    def grant_ids(self) -> set[str]:
        return {g.id for g in self.grants}


async def sync_all(connector: Connector) -> Synced:
    """Drive every syncer to the end of every listing, as the sync engine does."""
    out = Synced()
    syncers = list(connector.syncers())
    for syncer in syncers:
        items: list[resource_pb2.Resource] = []
        token = ""
        while True:
            page = await syncer.list(None, token)
            items.extend(page.items)
            assert page.next_token != token or not token, "page token did not advance"
            token = page.next_token
            if not token:
                break
        out.resources[syncer.resource_type.id] = items
    for syncer in syncers:
        for resource in out.resources[syncer.resource_type.id]:
            out.entitlements.extend((await syncer.entitlements(resource, "")).items)
            token = ""
            while True:
                grants = await syncer.grants(resource, token)
                out.grants.extend(grants.items)
                token = grants.next_token
                if not token:
                    break
    return out


# Spelled out here rather than taken from the connector: these are the external contract.
LEGACY_SLUGS = {
    "VIEWSPACE": "view",
    "COMMENT": "add-comment",
    "CREATEATTACHMENT": "add-attachment",
    "EDITBLOG": "edit-blog",
    "EDITSPACE": "edit-space",
    "EXPORTSPACE": "export-space",
    "REMOVEATTACHMENT": "remove-attachment",
    "REMOVEBLOG": "remove-blog",
    "REMOVECOMMENT": "remove-comment",
    "REMOVEMAIL": "remove-mail",
    "REMOVEOWNCONTENT": "remove-own-content",
    "REMOVEPAGE": "remove-page",
    "SETPAGEPERMISSIONS": "set-page-permissions",
    "SETSPACEPERMISSIONS": "set-space-permissions",
}
# The newest Go connector's `<operationKey>-<targetType>` (issue 13's table).
SLUGS = {
    "VIEWSPACE": "read-space",
    "REMOVEOWNCONTENT": "delete_own-space",
    "EDITSPACE": "create-page",
    "REMOVEPAGE": "delete-page",
    "EDITBLOG": "create-blogpost",
    "REMOVEBLOG": "delete-blogpost",
    "COMMENT": "create-comment",
    "REMOVECOMMENT": "delete-comment",
    "CREATEATTACHMENT": "create-attachment",
    "REMOVEATTACHMENT": "delete-attachment",
    "SETPAGEPERMISSIONS": "restrict-space",
    "REMOVEMAIL": "delete_mail-space",
    "EXPORTSPACE": "export-space",
    "SETSPACEPERMISSIONS": "administer-space",
}


def user_id(data: SandboxData, username: str, *, legacy: bool = False) -> str:
    return username if legacy else data.users[username].user_key


def user_ids(data: SandboxData, *, legacy: bool = False) -> list[str]:
    """Every user's id, in listing order."""
    return [user_id(data, u, legacy=legacy) for u in data.users]


def users_by_id(data: SandboxData, *, legacy: bool = False) -> dict[str, User]:
    return {user_id(data, u, legacy=legacy): user for u, user in data.users.items()}


def expected_grant_ids(data: SandboxData, *, legacy: bool = False) -> set[str]:
    """Grant ids the Go connector's conventions give for the sandbox's state: the newest Go connector's
    (users by user key) or, `legacy`, the January 2025 one's (users by username, spec Appendix B)."""
    slugs = LEGACY_SLUGS if legacy else SLUGS
    out = set()
    for group in data.groups.values():
        for member in group.members:
            out.add(f"group:{group.name}:member:user:{user_id(data, member, legacy=legacy)}")
    for key, (perm, kind, name) in data.iter_permissions():
        if kind == "anonymous" or name is None:
            continue
        principal = user_id(data, name, legacy=legacy) if kind == "user" else name
        out.add(f"space:{key}:{slugs[perm]}:{kind}:{principal}")
    return out
