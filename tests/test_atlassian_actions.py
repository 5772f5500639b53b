"""Atlassian account lifecycle through the c1.connector.v2 surface (in process) against the sandbox: the
`disable_user` / `enable_user` actions (v2 directory suspend / restore) and user deletion (lifecycle
delete), with Atlassian's refusals turned into errors a ConductorOne admin can act on."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from connector.pb.c1.connector.v2 import action_pb2, connector_pb2, resource_pb2
from connector.sandbox.atlassian.data import OrgState, User
from connector.sdk import model
from connector.sdk.errors import ConnectorError
from connector.sdk.runtime import ConnectorRuntime
from tests.test_atlassian_support import atlassian_env

Cap = connector_pb2.Capability
Status = action_pb2.BatonActionStatus
SUSPEND = "POST /admin/v2/orgs/{org_id}/directories/{directory_id}/users/{account_id}/suspend"
RESTORE = "POST /admin/v2/orgs/{org_id}/directories/{directory_id}/users/{account_id}/restore"
DELETE = "POST /users/{account_id}/manage/lifecycle/delete"


def pick(st: OrgState, **want: Any) -> User:
    """An ordinary human account with the given attributes (and no org admin role unless asked)."""
    admin = want.pop("org_admin", False)
    for u in st.users.values():
        if u.account_type != "atlassian" or ("atlassian/org-admin" in u.platform_roles) != admin:
            continue
        if all(getattr(u, k) == v for k, v in want.items()):
            return u
    raise AssertionError(f"no sandbox user with {want}")


async def invoke(runtime: ConnectorRuntime, name: str, **args: Any) -> action_pb2.InvokeActionResponse:
    s = struct_pb2.Struct()
    s.update(args)
    return await runtime.invoke_action(action_pb2.InvokeActionRequest(name=name, args=s))


def result(resp: action_pb2.InvokeActionResponse | action_pb2.GetActionStatusResponse) -> dict[str, Any]:
    return json_format.MessageToDict(resp.response)


async def test_schemas_and_capabilities_match_the_go_connector() -> None:
    async with atlassian_env(provisioning=False) as env:
        listed = await env.runtime.list_action_schemas(action_pb2.ListActionSchemasRequest())
        assert [s.name for s in listed.schemas] == ["disable_user", "enable_user"]
        disable = (
            await env.runtime.get_action_schema(action_pb2.GetActionSchemaRequest(name="disable_user"))
        ).schema
        assert disable.display_name == "Disable User" and disable.resource_type_id == ""
        assert list(disable.action_type) == [
            action_pb2.ACTION_TYPE_ACCOUNT,
            action_pb2.ACTION_TYPE_ACCOUNT_DISABLE,
        ]
        (arg,) = disable.arguments
        assert (arg.name, arg.is_required, arg.WhichOneof("field")) == ("user_id", True, "string_field")
        (ret,) = disable.return_types
        assert (ret.name, ret.WhichOneof("field")) == ("success", "bool_field")
        enable = listed.schemas[1]
        assert list(enable.action_type) == [
            action_pb2.ACTION_TYPE_ACCOUNT,
            action_pb2.ACTION_TYPE_ACCOUNT_ENABLE,
        ]
        # Global actions: a resource-type filter finds none of them.
        by_type = await env.runtime.list_action_schemas(
            action_pb2.ListActionSchemasRequest(resource_type_id="user")
        )
        assert list(by_type.schemas) == []

        caps = env.runtime.capabilities()
        assert Cap.CAPABILITY_ACTIONS in caps.connector_capabilities
        per_type = {c.resource_type.id: set(c.capabilities) for c in caps.resource_type_capabilities}
        assert Cap.CAPABILITY_RESOURCE_DELETE in per_type["user"]
        assert all(Cap.CAPABILITY_RESOURCE_DELETE not in c for t, c in per_type.items() if t != "user")


async def test_disable_then_enable_suspends_and_restores_the_directory_membership() -> None:
    # Actions are not behind --provisioning, as in the Go SDK.
    async with atlassian_env(provisioning=False) as env:
        user = pick(env.sandbox.state, status="active")
        resp = await invoke(env.runtime, "disable_user", user_id=user.account_id)
        assert resp.status == Status.BATON_ACTION_STATUS_COMPLETE and resp.name == "disable_user"
        assert result(resp) == {"success": True}
        assert user.status == "suspended"
        # The id answers GetActionStatus afterwards.
        status = await env.runtime.get_action_status(action_pb2.GetActionStatusRequest(id=resp.id))
        assert (status.status, status.name, result(status)) == (
            resp.status,
            "disable_user",
            {"success": True},
        )

        again = await invoke(env.runtime, "disable_user", user_id=user.account_id)
        assert again.status == Status.BATON_ACTION_STATUS_COMPLETE and again.id != resp.id

        back = await invoke(env.runtime, "enable_user", user_id=user.account_id)
        assert back.status == Status.BATON_ACTION_STATUS_COMPLETE and result(back) == {"success": True}
        assert user.status == "active"
        stats = env.sandbox.stats.by_route
        assert (stats[SUSPEND], stats[RESTORE]) == (2, 1)
        assert not any("suspend-access" in r or "restore-access" in r for r in stats)


async def test_org_admin_refusal_is_a_failed_precondition() -> None:
    async with atlassian_env() as env:
        admin = pick(env.sandbox.state, status="active", org_admin=True)
        resp = await invoke(env.runtime, "disable_user", user_id=admin.account_id)
        assert resp.status == Status.BATON_ACTION_STATUS_FAILED
        values = result(resp)
        assert values["success"] is False
        assert "HTTP 400" in values["error"] and "org admin role" in values["error"]
        inv = env.runtime.action_invocation(resp.id)
        assert inv is not None and inv.error is not None
        assert inv.error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert admin.status == "active"


async def test_unknown_and_never_invited_accounts_fail_clearly() -> None:
    async with atlassian_env() as env:
        unknown = await invoke(env.runtime, "disable_user", user_id="557058:no-such-account")
        assert unknown.status == Status.BATON_ACTION_STATUS_FAILED
        inv = env.runtime.action_invocation(unknown.id)
        assert inv is not None and inv.error is not None and inv.error.code == grpc.StatusCode.NOT_FOUND
        assert result(unknown)["success"] is False

        outsider = pick(env.sandbox.state, membership_status="no_membership", account_status="active")
        resp = await invoke(env.runtime, "enable_user", user_id=outsider.account_id)
        inv = env.runtime.action_invocation(resp.id)
        assert inv is not None and inv.error is not None
        assert inv.error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "not a member of any directory" in result(resp)["error"]
        assert env.sandbox.stats.by_route[SUSPEND] + env.sandbox.stats.by_route[RESTORE] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "argument 'user_id' is required"),
        ({"user_id": ""}, "argument 'user_id' is required"),
        ({"user_id": 42}, "argument 'user_id' must be a string"),
    ],
)
async def test_bad_arguments_are_invalid_arguments(args: dict[str, Any], message: str) -> None:
    async with atlassian_env() as env:
        with pytest.raises(ConnectorError) as info:
            await invoke(env.runtime, "disable_user", **args)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.message
        assert env.sandbox.stats.by_route[SUSPEND] == 0


async def test_unknown_action_and_unknown_id_are_not_found() -> None:
    async with atlassian_env() as env:
        with pytest.raises(ConnectorError) as info:
            await invoke(env.runtime, "lock_user", user_id="x")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert "disable_user, enable_user" in info.value.message
        with pytest.raises(ConnectorError) as info:
            await env.runtime.get_action_status(action_pb2.GetActionStatusRequest(id="nope"))
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ConnectorError) as info:
            await env.runtime.get_action_schema(action_pb2.GetActionSchemaRequest(name="lock_user"))
        assert info.value.code == grpc.StatusCode.NOT_FOUND


# --- deletion ----------------------------------------------------------------------------------------


def delete_request(account_id: str, type_id: str = "user") -> resource_pb2.DeleteResourceRequest:
    return resource_pb2.DeleteResourceRequest(resource_id=model.resource_id(type_id, account_id))


async def test_delete_user_is_lifecycle_delete_and_idempotent() -> None:
    async with atlassian_env() as env:
        user = pick(env.sandbox.state, status="active", claim_status="managed")
        await env.runtime.delete_resource(delete_request(user.account_id))
        assert user.status == "for_deletion"
        # Already deleted (Atlassian: 404 accountNotFound) and never known: both count as done.
        await env.runtime.delete_resource_v2(
            resource_pb2.DeleteResourceV2Request(resource_id=model.resource_id("user", user.account_id))
        )
        await env.runtime.delete_resource(delete_request("557058:no-such-account"))
        assert env.sandbox.stats.by_route[DELETE] == 3


async def test_delete_refusals_name_the_problem() -> None:
    async with atlassian_env() as env:
        unmanaged = pick(env.sandbox.state, status="active", claim_status="unmanaged")
        with pytest.raises(ConnectorError) as info:
            await env.runtime.delete_resource(delete_request(unmanaged.account_id))
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "verified org admin" in info.value.message and "managed accounts" in info.value.message
        assert unmanaged.status == "active"

        group_id = next(iter(env.sandbox.state.groups))
        with pytest.raises(ConnectorError) as info:
            await env.runtime.delete_resource(delete_request(group_id, "group"))
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED and "only users" in info.value.message
        assert env.sandbox.stats.by_route[DELETE] == 1


async def test_delete_is_behind_the_provisioning_gate() -> None:
    async with atlassian_env(provisioning=False) as env:
        user = pick(env.sandbox.state, status="active", claim_status="managed")
        with pytest.raises(ConnectorError) as info:
            await env.runtime.delete_resource(delete_request(user.account_id))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert env.sandbox.stats.by_route[DELETE] == 0 and user.status == "active"
