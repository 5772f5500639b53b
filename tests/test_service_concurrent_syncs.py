"""Two sync tasks at once, with a grant beside them: the daemon runs the syncs one after the other (the
second waits, heartbeating) while the grant goes on, and both files are complete, for both connectors.

Everything is real: the TLS sandbox tenant, the app sandboxes over HTTP, the daemon in process with the
default three task slots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from connector.apps.atlassian.connector import build_connector as build_atlassian
from connector.apps.atlassian.settings import AtlassianSettings
from connector.apps.confluence_datacenter.connector import ConfluenceConnector
from connector.apps.confluence_datacenter.settings import ConfluenceSettings
from connector.c1z.reader import C1zReader
from connector.ops.settings import parse_settings
from connector.pb.c1.connector.v2 import annotation_grant_pb2
from connector.sandbox.atlassian.server import start_atlassian_sandbox
from connector.sandbox.confluence.server import SandboxConfig, start_confluence_sandbox
from connector.sandbox.tenant import FinishRecord, TenantHandle, UploadRecord, start_tenant
from connector.service.daemon import run_daemon
from connector.service.testing_app import fast_options
from tests.test_atlassian_support import SMALL


@dataclass
class Daemon:
    tenant: TenantHandle
    task: asyncio.Task[int]


@contextlib.asynccontextmanager
async def daemon_for(app: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    async with contextlib.AsyncExitStack() as stack:
        factory: Callable[[], Any]
        if app == "confluence":
            confluence = await start_confluence_sandbox(config=SandboxConfig(latency=0.005))
            stack.push_async_callback(confluence.stop)
            env = {"BATON_HOSTNAME": confluence.base_url, "BATON_ACCESS_TOKEN": "admin-pat"}
            settings: Any = parse_settings(ConfluenceSettings, [], env=env)

            def factory() -> Any:
                return ConfluenceConnector(settings)
        else:
            atlassian = await start_atlassian_sandbox(spec=SMALL, latency=0.005)
            stack.push_async_callback(atlassian.stop)
            env = {
                "BATON_API_BASE_URL": atlassian.base_url,
                "BATON_ORG": atlassian.org_id,
                "BATON_API_TOKEN": atlassian.api_key,
            }
            settings = parse_settings(AtlassianSettings, [], env=env)

            def factory() -> Any:
                return build_atlassian(settings)

        tenant = await start_tenant(data_dir=tmp_path / "tenant", next_poll=0.05, next_heartbeat=0.1)
        stack.push_async_callback(tenant.close)
        temp = tmp_path / "c1z"
        temp.mkdir()
        full_env = tenant.env() | env | {"BATON_PROVISIONING": "true", "BATON_C1Z_TEMP_DIR": str(temp)}
        settings = parse_settings(type(settings), [], env=full_env)
        stop = asyncio.Event()
        options = replace(fast_options(), install_signal_handlers=False)
        task = asyncio.create_task(
            run_daemon(factory, settings, options=options, env=full_env, stop=stop, app_name=f"baton-{app}")
        )

        async def shutdown() -> None:
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0

        stack.push_async_callback(shutdown)
        await tenant.wait_hello(within=30)
        yield Daemon(tenant, task)


def upload_of(tenant: TenantHandle, task_id: str) -> UploadRecord:
    (up,) = [u for u in tenant.uploads if u.task_id == task_id and u.kind.startswith("c1z")]
    assert up.summary is not None, up.decode_error
    return up


def contents(up: UploadRecord) -> tuple[set[str], set[str], set[str]]:
    with C1zReader(up.path) as reader:
        resources = {f"{r.id.resource_type}:{r.id.resource}" for r in reader.resources()}
        entitlements = {e.id for e in reader.entitlements()}
        grants = {g.id for g in reader.grants()}
    return resources, entitlements, grants


async def finished(tenant: TenantHandle, task_id: str) -> FinishRecord:
    rec = await tenant.wait_finished(task_id, within=120)
    assert rec.outcome == "success", rec.status_message
    return rec


@pytest.mark.parametrize("app", ["atlassian", "confluence"])
async def test_overlapping_syncs_and_a_grant_all_succeed_with_complete_files(
    app: str, tmp_path: Path
) -> None:
    async with daemon_for(app, tmp_path) as d:
        tenant = d.tenant
        loop = asyncio.get_running_loop()
        started = loop.time()
        solo = tenant.enqueue_sync()
        await finished(tenant, solo)
        solo_seconds = loop.time() - started
        expected = contents(upload_of(tenant, solo))
        # A grant that already holds (the data stays the same, so every file must equal the solo one).
        with C1zReader(upload_of(tenant, solo).path) as reader:
            entitlements = {e.id: e for e in reader.entitlements()}
            held = next(
                g
                for g in reader.grants()
                if g.entitlement.id.startswith("group:")
                and g.entitlement.id.endswith(":member")
                and g.principal.id.resource_type == "user"
            )
            ent = entitlements[held.entitlement.id]

        # The second sync starts at once, part-way and just before the first one ends.
        for fraction in (0.0, 0.3, 0.5, 0.7, 0.9):
            first = tenant.enqueue_sync()
            await asyncio.sleep(solo_seconds * fraction)
            second = tenant.enqueue_sync()
            grant = tenant.enqueue_grant(ent, held.principal)
            granted = await finished(tenant, grant)
            assert any(isinstance(a, annotation_grant_pb2.GrantAlreadyExists) for a in granted.annotations)
            for sync in (first, second):
                await finished(tenant, sync)
                assert contents(upload_of(tenant, sync)) == expected, f"offset {fraction}"
            # One at a time: the second sync's file was uploaded after the first one's.
            assert upload_of(tenant, first).at <= upload_of(tenant, second).at
        assert [f for f in tenant.finishes if f.outcome != "success"] == []
        assert all(not f.duplicate for f in tenant.finishes)
