"""The daemon serving the sandbox tenant with the Confluence connector, in both id schemes: a sync, then a
grant and a revoke of a group membership and of a space permission, then a sync that shows them.

Everything real: the TLS gRPC tenant, the Confluence sandbox over HTTP, the c1z files the daemon uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.apps.confluence_datacenter.connector import ConfluenceConnector
from connector.apps.confluence_datacenter.settings import ConfluenceSettings
from connector.c1z.reader import C1zReader
from connector.ops.health import DaemonHealth
from connector.ops.metrics import Metrics
from connector.ops.settings import parse_settings
from connector.pb.c1.connector.v2 import grant_pb2
from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.data import SandboxData
from connector.sandbox.confluence.server import SandboxConfig, start_confluence_sandbox
from connector.sandbox.tenant.server import TenantHandle, start_tenant
from connector.service.daemon import run_daemon
from connector.service.testing_app import fast_options
from tests.test_confluence_support import LEGACY_SLUGS, SLUGS, expected_grant_ids, user_id

GROUP = "qa/automation"


@contextlib.asynccontextmanager
async def daemon(
    version: str, data: SandboxData, legacy: bool, tmp_path: Path
) -> AsyncIterator[TenantHandle]:
    temp_dir = tmp_path / "c1z"
    temp_dir.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        confluence = await start_confluence_sandbox(data, SandboxConfig(version=version))
        stack.push_async_callback(confluence.stop)
        tenant = await start_tenant(next_poll=0.05, next_heartbeat=0.2, data_dir=tmp_path / "tenant")
        stack.push_async_callback(tenant.close)
        env = tenant.env() | {
            "BATON_HOSTNAME": confluence.base_url,
            "BATON_ACCESS_TOKEN": "admin-pat",
            "BATON_PROVISIONING": "true",
            "BATON_C1Z_TEMP_DIR": str(temp_dir),
            "BATON_HOST_ID": "baton-confluence-datacenter-0",
            "BATON_LEGACY_IDS": "true" if legacy else "false",
        }
        settings = parse_settings(ConfluenceSettings, [], env=env)
        stop = asyncio.Event()
        options = fast_options()
        task = asyncio.create_task(
            run_daemon(
                lambda: ConfluenceConnector(settings),
                settings,
                metrics=Metrics("confluence-datacenter"),
                health=DaemonHealth(),
                options=type(options)(options.scheduler, options.tasks, install_signal_handlers=False),
                env=env,
                stop=stop,
                app_name="baton-confluence-datacenter",
            )
        )

        async def shutdown() -> None:
            stop.set()
            assert await asyncio.wait_for(task, 20) == 0

        stack.push_async_callback(shutdown)
        yield tenant


async def _sync(tenant: TenantHandle) -> Path:
    finish = await tenant.wait_finished(tenant.enqueue_sync(), within=30)
    assert finish.outcome == "success", finish.status_message
    return tenant.uploads[-1].path


async def _run(tenant: TenantHandle, task_id: str) -> None:
    finish = await tenant.wait_finished(task_id, within=30)
    assert finish.outcome == "success", finish.status_message


@pytest.mark.parametrize("legacy", [False, True], ids=["default-ids", "legacy-ids"])
@pytest.mark.parametrize("version", ["7.19", "9.2"])
async def test_sync_grant_revoke_through_the_tenant(version: str, legacy: bool, tmp_path: Path) -> None:
    data = sandbox_data.small()
    space, user = next(
        (key, u)
        for key in data.spaces
        for u in data.users.values()
        if u.active
        and u.licensed
        and not data.groups[GROUP].has(u.username)
        and ("VIEWSPACE", "user", u.username) not in data.permissions[key]
        # no access to the space through a group either: the revoke must leave none
        and not any(
            kind == "group" and name is not None and data.groups[name].has(u.username)
            for _, kind, name in data.permissions[key]
        )
    )
    uid = user_id(data, user.username, legacy=legacy)
    read = (LEGACY_SLUGS if legacy else SLUGS)["VIEWSPACE"]
    async with daemon(version, data, legacy, tmp_path) as tenant:
        first = await _sync(tenant)
        with C1zReader(first) as reader:
            assert {g.id for g in reader.grants()} >= expected_grant_ids(data, legacy=legacy)
            principal = reader.get_resource("user", uid)
            assert principal is not None, f"user {uid} not synced"
            ents = {e.id: e for e in reader.entitlements()}
        member = ents[f"group:{GROUP}:member"]
        space_read = ents[f"space:{space}:{read}"]

        await _run(tenant, tenant.enqueue_grant(member, principal))
        await _run(tenant, tenant.enqueue_grant(space_read, principal))
        assert data.groups[GROUP].has(user.username)
        assert ("VIEWSPACE", "user", user.username) in data.permissions[space]

        second = await _sync(tenant)
        with C1zReader(second) as reader:
            grants = {g.id: g for g in reader.grants()}
        member_grant = grants[f"group:{GROUP}:member:user:{uid}"]
        space_grant = grants[f"space:{space}:{read}:user:{uid}"]

        await _run(tenant, tenant.enqueue_revoke(member_grant))
        await _run(tenant, tenant.enqueue_revoke(space_grant))
        assert not data.groups[GROUP].has(user.username)
        assert ("VIEWSPACE", "user", user.username) not in data.permissions[space]

        third = await _sync(tenant)
        with C1zReader(third) as reader:
            after = {g.id for g in reader.grants()}
        assert member_grant.id not in after and space_grant.id not in after
        # An id of the other scheme names nothing here: the daemon refuses it rather than guess.
        other = (SLUGS if legacy else LEGACY_SLUGS)["VIEWSPACE"]
        wrong = grant_pb2.Grant(
            id=f"space:{space}:{other}:user:{uid}",
            entitlement=type(space_read)(
                id=f"space:{space}:{other}", resource=space_read.resource, slug=other
            ),
            principal=principal,
        )
        refused = await tenant.wait_finished(tenant.enqueue_revoke(wrong), within=30)
        assert refused.outcome == "error"
        assert "unknown Confluence space permission" in refused.status_message
