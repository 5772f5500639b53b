"""End to end: the daemon serves the sandbox tenant (TLS gRPC) with the Atlassian connector against the
Atlassian sandbox, configured with the Go connector's env names. A sync is uploaded, then a workspace role
and a group membership are granted and revoked with the ids read from that upload, and an account is
created through SCIM with the Go connector's field names."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from connector.apps.atlassian.connector import AtlassianConnector, build_connector
from connector.apps.atlassian.settings import AtlassianSettings
from connector.c1z.reader import C1zReader
from connector.ops.health import DaemonHealth
from connector.ops.metrics import Metrics
from connector.ops.settings import parse_settings
from connector.pb.c1.connector.v2 import annotation_grant_pb2, grant_pb2, resource_pb2
from connector.sandbox.atlassian.server import AtlassianSandbox, start_atlassian_sandbox
from connector.sandbox.tenant.server import FinishRecord, TenantHandle, start_tenant
from connector.sdk import model
from connector.service.daemon import run_daemon
from connector.service.testing_app import fast_options
from tests.test_atlassian_support import SMALL

WITHIN = 60.0  # a busy two-core machine; every wait below has this deadline


@dataclass
class Stack:
    tenant: TenantHandle
    sandbox: AtlassianSandbox


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    temp_dir = tmp_path / "c1z"
    temp_dir.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        sandbox = await start_atlassian_sandbox(spec=SMALL)
        stack.push_async_callback(sandbox.stop)
        tenant = await start_tenant(next_poll=0.05, next_heartbeat=0.2)
        stack.push_async_callback(tenant.close)
        env = tenant.env() | {
            # The names a Go connector deployment already has in its Secret.
            "BATON_ACCESS_TOKEN": sandbox.api_key,
            "BATON_ORGANIZATION_ID": sandbox.org_id,
            "BATON_BASE_URL": sandbox.base_url,
            "BATON_SCIM_TOKEN": sandbox.scim_token,
            "BATON_SCIM_BASE_URL": sandbox.scim_base_url,
            "BATON_PROVISIONING": "true",
            "BATON_C1Z_TEMP_DIR": str(temp_dir),
            "BATON_HOST_ID": "baton-atlassian-0",
        }
        settings = parse_settings(AtlassianSettings, [], env=env)

        def factory() -> AtlassianConnector:
            return build_connector(settings)

        stop = asyncio.Event()
        options = fast_options()
        daemon = asyncio.create_task(
            run_daemon(
                factory,
                settings,
                metrics=Metrics("atlassian"),
                health=DaemonHealth(),
                options=type(options)(options.scheduler, options.tasks, install_signal_handlers=False),
                env=env,
                stop=stop,
                app_name="baton-atlassian",
            )
        )

        async def shutdown() -> None:
            stop.set()
            assert await asyncio.wait_for(daemon, WITHIN) == 0

        stack.push_async_callback(shutdown)
        yield Stack(tenant, sandbox)


async def finished(tenant: TenantHandle, task_id: str) -> FinishRecord:
    record = await tenant.wait_finished(task_id, within=WITHIN)
    assert record.outcome == "success", record.status_message
    return record


def annotated(record: FinishRecord, kind: type) -> bool:
    return any(isinstance(a, kind) for a in record.annotations)


async def test_sync_grant_revoke_and_scim_account_through_the_daemon(stack: Stack) -> None:
    tenant, st = stack.tenant, stack.sandbox.state
    await finished(tenant, tenant.enqueue_sync())
    with C1zReader(tenant.uploads[-1].path) as reader:
        conf = next(w for w in st.workspaces.values() if w.type_key == "confluence")
        role_ent = next(
            e
            for e in reader.entitlements(resource=model.resource_id("workspace", conf.id))
            if e.id == f"workspace:{conf.id}:role:atlassian/guest"
        )
        gid = next(g.id for g in st.groups.values() if not g.external_synced and st.members(g.id))
        member_ent = next(reader.entitlements(resource=model.resource_id("group", gid)))
        assert member_ent.id == f"group:{gid}:member"
        users = {u.id.resource: u for u in reader.resources(resource_type="user")}
        (org,) = reader.resources(resource_type="organization")
        org_grants = {g.id for g in reader.grants(resource=org.id)}
    assert org.id.resource == st.org_id and org_grants
    outsider = next(
        a
        for a, u in sorted(st.users.items())
        if u.status == "active"
        and u.account_type == "atlassian"
        and a not in st.members(gid)
        and not st.roles.has("user", a, conf.id, "atlassian/guest")
    )
    principal = users[outsider]
    no_role_group = next(
        g for g in sorted(st.groups) if not st.roles.has("group", g, conf.id, "atlassian/guest")
    )

    # Workspace role: a user, then a group; both revoked with the grant ids the sync would produce.
    for kind, pid in (("user", outsider), ("group", no_role_group)):
        who = principal if kind == "user" else resource_pb2.Resource(id=model.resource_id("group", pid))
        granted = await finished(tenant, tenant.enqueue_grant(role_ent, who))
        assert isinstance(granted.response, grant_pb2.GrantManagerServiceGrantResponse)
        (made,) = granted.response.grants
        assert made.id == f"workspace:{conf.id}:role:atlassian/guest:{kind}:{pid}"
        assert st.roles.has(kind, pid, conf.id, "atlassian/guest")
        revoked = await finished(tenant, tenant.enqueue_revoke(made))
        assert not annotated(revoked, annotation_grant_pb2.GrantAlreadyRevoked)
        assert not st.roles.has(kind, pid, conf.id, "atlassian/guest")

    # Group membership.
    granted = await finished(tenant, tenant.enqueue_grant(member_ent, principal))
    assert isinstance(granted.response, grant_pb2.GrantManagerServiceGrantResponse)
    (membership,) = granted.response.grants
    assert membership.id == f"group:{gid}:member:user:{outsider}"
    assert outsider in st.members(gid)
    await finished(tenant, tenant.enqueue_revoke(membership))
    assert outsider not in st.members(gid)

    # Account creation through SCIM, with the Go connector's field names.
    profile = struct_pb2.Struct()
    profile.update(
        {
            "userName": "e2e.user@acme.example",
            "email": "e2e.user@acme.example",
            "givenName": "Eve",
            "familyName": "Two",
            "displayName": "Eve Two",
        }
    )
    created = await finished(
        tenant,
        tenant.enqueue_create_account(resource_pb2.AccountInfo(profile=profile), resource_type_id="user"),
    )
    assert isinstance(created.response, resource_pb2.CreateAccountResponse)
    assert created.response.WhichOneof("result") == "success"
    account_id = created.response.success.resource.id.resource
    (scim,) = st.scim_users.values()
    assert account_id == scim.account_id and st.users[account_id].name == "Eve Two"
    assert stack.sandbox.stats.by_route["POST /scim/directory/{scim_directory}/Users"] == 1

    # The next sync sees the new account, enabled, on the resource itself.
    await finished(tenant, tenant.enqueue_sync())
    with C1zReader(tenant.uploads[-1].path) as reader:
        fresh = reader.get_resource("user", account_id)
    assert fresh is not None
    assert fresh.status.status == resource_pb2.Status.ResourceStatus.RESOURCE_STATUS_ENABLED
