"""ActionService and ResourceDeleter through the runtime, in process and over a real grpc.aio channel
(`serve`): schemas, argument checks, slow actions answered by GetActionStatus, failures, DeleteResourceV2
routing and capabilities."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2
from google.protobuf.message import Message

from connector.pb.c1.config.v1 import config_pb2
from connector.pb.c1.connector.v2 import action_pb2, connector_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.client import GrpcConnectorClient
from connector.sdk.errors import ConnectorError
from connector.sdk.interface import Action, ResourceDeleter, ResourceId, ResourceSyncer
from connector.sdk.runtime import ConnectorRuntime
from connector.sdk.server import serve
from tests.toy_connector import Groups, ToyConnector, ToyState, Users

Cap = connector_pb2.Capability
Status = action_pb2.BatonActionStatus


@dataclass
class Gate:
    """Lets a test hold the `slow` action open and see what the handlers received."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[dict[str, Any]] = field(default_factory=list)


class DeletableUsers(Users, ResourceDeleter):
    async def delete(self, resource_id: ResourceId, parent: ResourceId | None) -> list[Message]:
        self.state.calls.append(f"delete {resource_id.resource}")
        self.state.users.pop(resource_id.resource, None)
        return []


def _schema(name: str, *args: config_pb2.Field) -> action_pb2.BatonActionSchema:
    return action_pb2.BatonActionSchema(name=name, display_name=name.title(), arguments=list(args))


class ActionToy(ToyConnector):
    def __init__(self, gate: Gate) -> None:
        super().__init__(ToyState())
        self.gate = gate

    def syncers(self) -> Sequence[ResourceSyncer]:
        return [DeletableUsers(self.state), Groups(self.state)]

    def actions(self) -> Sequence[Action]:
        count = config_pb2.Field(name="count", int_field=config_pb2.IntField(default_value=3))
        tags = config_pb2.Field(name="tags", string_slice_field=config_pb2.StringSliceField())
        who = config_pb2.Field(name="who", is_required=True, string_field=config_pb2.StringField())

        async def echo(args: Mapping[str, Any]) -> Mapping[str, Any]:
            self.gate.seen.append(dict(args))
            return {"echo": dict(args)}

        async def slow(args: Mapping[str, Any]) -> Mapping[str, Any]:
            await self.gate.release.wait()
            return {"done": True}

        async def broken(args: Mapping[str, Any]) -> Mapping[str, Any]:
            raise KeyError("oops")

        return [
            Action(_schema("echo", who, count, tags), echo),
            Action(_schema("slow"), slow),
            Action(_schema("broken"), broken),
        ]


@dataclass
class Surface:
    client: Any
    runtime: ConnectorRuntime
    gate: Gate


@pytest.fixture(params=["in_process", "grpc"])
async def surface(request: pytest.FixtureRequest) -> AsyncIterator[Surface]:
    gate = Gate()
    runtime = ConnectorRuntime(ActionToy(gate), provisioning=True)
    if request.param == "in_process":
        yield Surface(runtime, runtime, gate)
        await runtime.close()
        return
    server = await serve(runtime, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Surface(GrpcConnectorClient(channel), runtime, gate)
    finally:
        gate.release.set()
        await channel.close()
        await server.stop(None)
        await runtime.close()


def request(name: str, wait: float | None = None, **args: Any) -> action_pb2.InvokeActionRequest:
    s = struct_pb2.Struct()
    s.update(args)
    req = action_pb2.InvokeActionRequest(name=name, args=s)
    if wait is not None:
        req.inline_wait.CopyFrom(duration_pb2.Duration(nanos=int(wait * 1e9)))
    return req


def values(resp: Any) -> dict[str, Any]:
    return json_format.MessageToDict(resp.response)


async def test_schemas_listed_sorted_and_found_by_name(surface: Surface) -> None:
    listed = await surface.client.list_action_schemas(action_pb2.ListActionSchemasRequest())
    assert [s.name for s in listed.schemas] == ["broken", "echo", "slow"]
    got = await surface.client.get_action_schema(action_pb2.GetActionSchemaRequest(name="echo"))
    assert [a.name for a in got.schema.arguments] == ["who", "count", "tags"]
    with pytest.raises(ConnectorError) as info:
        await surface.client.get_action_schema(action_pb2.GetActionSchemaRequest(name="nope"))
    assert info.value.code == grpc.StatusCode.NOT_FOUND


async def test_arguments_are_checked_typed_and_defaulted(surface: Surface) -> None:
    resp = await surface.client.invoke_action(request("echo", who="ann", tags=["a", "b"], extra="kept"))
    assert resp.status == Status.BATON_ACTION_STATUS_COMPLETE
    # Struct numbers arrive as doubles; the handler gets the int the schema promises, the default
    # where the argument is absent, and unknown arguments untouched (the Go SDK ignores them too).
    assert surface.gate.seen == [{"who": "ann", "count": 3, "tags": ["a", "b"], "extra": "kept"}]
    assert isinstance(surface.gate.seen[0]["count"], int)
    await surface.client.invoke_action(request("echo", who="bob", count=7))
    assert surface.gate.seen[1]["count"] == 7
    for bad, text in (
        ({"count": 1}, "argument 'who' is required"),
        ({"who": "x", "count": 1.5}, "argument 'count' must be an integer"),
        ({"who": "x", "tags": "a"}, "argument 'tags' must be a list of strings"),
        ({"who": True}, "argument 'who' must be a string"),
    ):
        with pytest.raises(ConnectorError) as info:
            await surface.client.invoke_action(request("echo", **bad))
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and text in info.value.message
    assert len(surface.gate.seen) == 2


async def test_a_slow_action_answers_running_then_its_status(surface: Surface) -> None:
    resp = await surface.client.invoke_action(request("slow", wait=0.05))
    assert resp.status == Status.BATON_ACTION_STATUS_RUNNING and resp.id
    status = await surface.client.get_action_status(action_pb2.GetActionStatusRequest(id=resp.id))
    assert status.status == Status.BATON_ACTION_STATUS_RUNNING and status.name == "slow"
    surface.gate.release.set()
    deadline = asyncio.get_running_loop().time() + 10
    while status.status != Status.BATON_ACTION_STATUS_COMPLETE:
        assert asyncio.get_running_loop().time() < deadline, "the action never completed"
        await asyncio.sleep(0.01)
        status = await surface.client.get_action_status(action_pb2.GetActionStatusRequest(id=resp.id))
    assert values(status) == {"done": True}


async def test_a_crashing_action_is_failed_with_its_error(surface: Surface) -> None:
    resp = await surface.client.invoke_action(request("broken"))
    assert resp.status == Status.BATON_ACTION_STATUS_FAILED
    assert values(resp) == {"error": "action broken: KeyError: 'oops'"}
    inv = surface.runtime.action_invocation(resp.id)
    assert inv is not None and inv.error is not None and inv.error.code == grpc.StatusCode.UNKNOWN


async def test_missing_name_and_id_are_invalid_arguments(surface: Surface) -> None:
    with pytest.raises(ConnectorError) as info:
        await surface.client.invoke_action(action_pb2.InvokeActionRequest())
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ConnectorError) as info:
        await surface.client.get_action_status(action_pb2.GetActionStatusRequest(name="slow"))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_delete_routes_to_the_type_deleter_v1_and_v2(surface: Surface) -> None:
    state = surface.runtime.connector.state  # type: ignore[attr-defined]
    await surface.client.delete_resource(
        resource_pb2.DeleteResourceRequest(resource_id=model.resource_id("user", "u1"))
    )
    await surface.client.delete_resource_v2(
        resource_pb2.DeleteResourceV2Request(resource_id=model.resource_id("user", "u2"))
    )
    assert state.calls[-2:] == ["delete u1", "delete u2"] and "u1" not in state.users
    # Groups have no deleter: the connector-level refusal answers.
    with pytest.raises(ConnectorError) as info:
        await surface.client.delete_resource_v2(
            resource_pb2.DeleteResourceV2Request(resource_id=model.resource_id("group", "eng"))
        )
    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_capabilities_report_actions_and_per_type_delete() -> None:
    caps = ConnectorRuntime(ActionToy(Gate())).capabilities()
    assert Cap.CAPABILITY_ACTIONS in caps.connector_capabilities
    per_type = {c.resource_type.id: set(c.capabilities) for c in caps.resource_type_capabilities}
    assert Cap.CAPABILITY_RESOURCE_DELETE in per_type["user"]
    assert Cap.CAPABILITY_RESOURCE_DELETE not in per_type["group"]
    plain = ConnectorRuntime(ToyConnector(ToyState())).capabilities()
    assert Cap.CAPABILITY_ACTIONS not in plain.connector_capabilities


def test_duplicate_action_names_are_refused() -> None:
    class Twice(ActionToy):
        def actions(self) -> Sequence[Action]:
            first = super().actions()[0]
            return [first, first]

    with pytest.raises(ValueError, match="two actions named 'echo'"):
        ConnectorRuntime(Twice(Gate()))
