"""End to end through the service-mode daemon: the sandbox tenant hands out action and delete_resource
tasks, the real daemon runs the real Atlassian connector against the Atlassian sandbox, and the tenant
records exactly one FinishTask per task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from connector.apps.atlassian.connector import build_connector
from connector.apps.atlassian.settings import AtlassianSettings
from connector.ops.settings import parse_settings
from connector.pb.c1.connector.v2 import action_pb2, connector_pb2, resource_pb2
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2
from connector.sandbox.atlassian.server import AtlassianSandbox, start_atlassian_sandbox
from connector.sandbox.tenant import FinishRecord, TenantHandle, start_tenant
from connector.sandbox.tenant.server import action_result
from connector.sdk import model
from connector.sdk.client import GrpcConnectorClient
from connector.sdk.server import serve
from connector.service.daemon import run_daemon
from connector.service.testing_app import fast_options
from tests.test_atlassian_actions import pick
from tests.test_atlassian_support import SMALL, atlassian_env

Cap = connector_pb2.Capability
Task = baton_pb2.Task
Status = action_pb2.BatonActionStatus
WITHIN = 30.0


@dataclass
class Service:
    tenant: TenantHandle
    sandbox: AtlassianSandbox

    async def run(self, task_id: str) -> FinishRecord:
        return await self.tenant.wait_finished(task_id, within=WITHIN)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    sandbox = await start_atlassian_sandbox(spec=SMALL)
    tenant = await start_tenant(data_dir=tmp_path / "tenant", next_poll=0.05, next_heartbeat=0.2)
    stop = asyncio.Event()
    env = {
        **tenant.env(),
        "BATON_API_TOKEN": sandbox.api_key,
        "BATON_ORG": sandbox.org_id,
        "BATON_API_BASE_URL": sandbox.base_url,
        "BATON_PROVISIONING": "true",
        "BATON_HOST_ID": "test-host",
        "BATON_C1Z_TEMP_DIR": str(tmp_path),
    }
    settings = parse_settings(AtlassianSettings, [], env=env)
    options = fast_options()
    options = type(options)(scheduler=options.scheduler, tasks=options.tasks, install_signal_handlers=False)
    daemon = asyncio.create_task(
        run_daemon(
            lambda: build_connector(settings),
            settings,
            options=options,
            env=env,
            stop=stop,
            app_name="baton-atlassian",
        )
    )
    try:
        await tenant.wait_hello(within=WITHIN)
        yield Service(tenant, sandbox)
    finally:
        stop.set()
        try:
            assert await asyncio.wait_for(daemon, WITHIN) == 0
        finally:
            await tenant.close()
            await sandbox.stop()


def assert_once(service: Service, *task_ids: str) -> None:
    for tid in task_ids:
        assert [f.task_id for f in service.tenant.finishes].count(tid) == 1


async def test_hello_advertises_actions_and_user_deletion(service: Service) -> None:
    hello = service.tenant.hellos[0]
    caps = hello.metadata.capabilities
    assert Cap.CAPABILITY_ACTIONS in caps.connector_capabilities
    user_caps = next(c for c in caps.resource_type_capabilities if c.resource_type.id == "user")
    assert Cap.CAPABILITY_RESOURCE_DELETE in user_caps.capabilities


async def test_action_invoke_disable_then_enable(service: Service) -> None:
    t = service.tenant
    user = pick(service.sandbox.state, status="active")

    listed = await service.run(t.enqueue_action_list_schemas())
    assert listed.outcome == "success" and listed.annotations == []
    assert isinstance(listed.response, action_pb2.ListActionSchemasResponse)
    assert [s.name for s in listed.response.schemas] == ["disable_user", "enable_user"]
    schema = await service.run(t.enqueue_action_get_schema("enable_user"))
    assert isinstance(schema.response, action_pb2.GetActionSchemaResponse)
    assert schema.response.schema.display_name == "Enable User"

    disabled = await service.run(t.enqueue_action_invoke("disable_user", {"user_id": user.account_id}))
    assert disabled.outcome == "success", disabled.status_message
    assert isinstance(disabled.response, action_pb2.InvokeActionResponse)
    assert disabled.response.status == Status.BATON_ACTION_STATUS_COMPLETE
    assert action_result(disabled) == {"success": True}
    assert user.status == "suspended"

    status = await service.run(t.enqueue_action_status(disabled.response.id, "disable_user"))
    assert isinstance(status.response, action_pb2.GetActionStatusResponse)
    assert status.response.status == Status.BATON_ACTION_STATUS_COMPLETE
    assert action_result(status) == {"success": True}

    enabled = await service.run(t.enqueue_action_invoke("enable_user", {"user_id": user.account_id}))
    assert enabled.outcome == "success" and action_result(enabled) == {"success": True}
    assert user.status == "active"
    assert_once(service, listed.task_id, schema.task_id, disabled.task_id, status.task_id, enabled.task_id)


async def test_failed_actions_and_bad_payloads_are_retryable_errors(service: Service) -> None:
    t = service.tenant
    admin = pick(service.sandbox.state, status="active", org_admin=True)
    ids = {
        "org admin": t.enqueue_action_invoke("disable_user", {"user_id": admin.account_id}),
        "no user_id": t.enqueue_action_invoke("disable_user", {}),
        "unknown action": t.enqueue_action_invoke("lock_user", {"user_id": admin.account_id}),
        "no name": t.enqueue(Task(action_invoke=Task.ActionInvokeTask())),
        "schema no name": t.enqueue(Task(action_get_schema=Task.ActionGetSchemaTask())),
        "status no id": t.enqueue(Task(action_status=Task.ActionStatusTask(name="disable_user"))),
        "status unknown id": t.enqueue_action_status("0123456789abcdef"),
    }
    recs = {name: await service.run(tid) for name, tid in ids.items()}
    for name, rec in recs.items():
        assert rec.outcome == "error" and not rec.non_retryable, name
        assert not rec.request.error.HasField("response"), name
    refused = recs["org admin"]
    assert refused.status_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "HTTP 400" in refused.status_message and "org admin role" in refused.status_message
    assert admin.status == "active"
    assert recs["no user_id"].status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "'user_id' is required" in recs["no user_id"].status_message
    assert recs["unknown action"].status_code == grpc.StatusCode.NOT_FOUND.value[0]
    for name, text in (
        ("no name", "action name required"),
        ("schema no name", "action name required"),
        ("status no id", "action id required"),
    ):
        assert recs[name].status_code == grpc.StatusCode.UNKNOWN.value[0]
        assert recs[name].status_message == text
    assert recs["status unknown id"].status_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert_once(service, *ids.values())


async def test_delete_resource_deletes_the_user(service: Service) -> None:
    t = service.tenant
    user = pick(service.sandbox.state, status="active", claim_status="managed")
    unmanaged = pick(service.sandbox.state, status="active", claim_status="unmanaged")
    deleted = await service.run(t.enqueue_delete_resource(model.resource_id("user", user.account_id)))
    assert deleted.outcome == "success" and isinstance(deleted.response, resource_pb2.DeleteResourceResponse)
    assert user.status == "for_deletion"
    again = await service.run(t.enqueue_delete_resource(model.resource_id("user", user.account_id)))
    assert again.outcome == "success"
    refused = await service.run(t.enqueue_delete_resource(model.resource_id("user", unmanaged.account_id)))
    assert refused.outcome == "error" and refused.non_retryable
    assert refused.status_code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert unmanaged.status == "active"
    assert_once(service, deleted.task_id, again.task_id, refused.task_id)


async def test_serve_exposes_actions_and_deletion_over_grpc() -> None:
    """What a driver of `baton-atlassian serve` sees over c1.connector.v2."""
    async with atlassian_env() as env:
        server = await serve(env.runtime, "127.0.0.1:0")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            client = GrpcConnectorClient(channel)
            listed = await client.list_action_schemas(action_pb2.ListActionSchemasRequest())
            assert [s.name for s in listed.schemas] == ["disable_user", "enable_user"]
            user = pick(env.sandbox.state, status="active", claim_status="managed")
            args = struct_pb2.Struct()
            args.update({"user_id": user.account_id})
            resp = await client.invoke_action(action_pb2.InvokeActionRequest(name="disable_user", args=args))
            assert resp.status == Status.BATON_ACTION_STATUS_COMPLETE and user.status == "suspended"
            status = await client.get_action_status(action_pb2.GetActionStatusRequest(id=resp.id))
            assert status.status == Status.BATON_ACTION_STATUS_COMPLETE
            admin = pick(env.sandbox.state, status="active", org_admin=True)
            args.update({"user_id": admin.account_id})
            refused = await client.invoke_action(
                action_pb2.InvokeActionRequest(name="enable_user", args=args)
            )
            assert refused.status == Status.BATON_ACTION_STATUS_FAILED
            assert refused.response.fields["success"].bool_value is False
            assert "org admin role" in refused.response.fields["error"].string_value
            await client.delete_resource_v2(
                resource_pb2.DeleteResourceV2Request(resource_id=model.resource_id("user", user.account_id))
            )
            assert user.status == "for_deletion"
        finally:
            await channel.close()
            await server.stop(None)
