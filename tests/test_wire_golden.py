"""Golden wire tests for the baton wire contract.

Every expected byte string below is written out by hand from the field numbers published by
ConductorOne/baton-sdk (see docs/wire-contract.md); none is produced by the protobuf library.

Encoding rules used in the comments:

* tag byte(s) = varint((field_number << 3) | wire_type); wire type 0 = varint, 2 = length-delimited.
  Fields 1..15 fit into one tag byte; fields >= 16 need two (e.g. 103 -> 826 -> 0xba 0x06).
* a length-delimited field is tag, varint(length), payload; lengths < 128 are a single byte.
* proto3 scalars at their default value are not written; fields are written in field-number order;
  repeated enums are packed; map entries are messages {key = 1, value = 2}.
* Any = {type_url = 1, value = 2}; Struct = {map<string, Value> fields = 1};
  Value.string_value = 3; google.rpc.Status = {code = 1, message = 2, details = 3}.
"""

from __future__ import annotations

from typing import Any as TypingAny

import pytest
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.descriptor import FieldDescriptor, FileDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2

from connector.pb.c1.config.v1 import config_pb2
from connector.pb.c1.connector.v2 import (
    action_pb2,
    action_pb2_grpc,
    annotation_grant_pb2,
    annotation_trait_pb2,
    asset_pb2,
    asset_pb2_grpc,
    connector_pb2,
    connector_pb2_grpc,
    entitlement_pb2,
    entitlement_pb2_grpc,
    grant_pb2,
    grant_pb2_grpc,
    resource_pb2,
    resource_pb2_grpc,
)
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2, baton_pb2_grpc

TASK_ID = "2W4Jc0yKuQbTlq0A3bqXvRv9Zk1"  # 27 alphanumerics, the KSUID shape of task ids


def _ser(msg: Message) -> bytes:
    return msg.SerializeToString(deterministic=True)


def _pack(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg, deterministic=True)
    return packed


# ---------------------------------------------------------------------------
# Shared hand-encoded fragments
# ---------------------------------------------------------------------------

# ResourceId{resource_type="user", resource="alice"}                          13 bytes
RESOURCE_ID_USER_ALICE = (
    b"\x0a\x04user"  # resource_type: field 1, LEN -> (1<<3)|2 = 0x0a; 4 bytes
    + b"\x12\x05alice"  # resource: field 2, LEN -> (2<<3)|2 = 0x12; 5 bytes
)
# Resource{id=<above>}                                                       15 bytes
RESOURCE_USER_ALICE = b"\x0a\x0d" + RESOURCE_ID_USER_ALICE  # id: field 1 -> 0x0a; 13 bytes

# Resource{id=ResourceId{resource_type="group", resource="eng"}}             14 bytes
RESOURCE_GROUP_ENG = (
    b"\x0a\x0c"  # id: field 1 -> 0x0a; 12 bytes follow
    + b"\x0a\x05group"  # ResourceId.resource_type: field 1 -> 0x0a; 5 bytes
    + b"\x12\x03eng"  # ResourceId.resource: field 2 -> 0x12; 3 bytes
)

# Entitlement{resource=<group eng>, id="group:eng:member"}                   34 bytes
ENTITLEMENT_GROUP_ENG_MEMBER_MIN = (
    b"\x0a\x0e"
    + RESOURCE_GROUP_ENG  # resource: field 1 -> 0x0a; 14 bytes
    + b"\x12\x10group:eng:member"  # id: field 2 -> 0x12; 16 bytes
)


def _user_resource() -> resource_pb2.Resource:
    return resource_pb2.Resource(id=resource_pb2.ResourceId(resource_type="user", resource="alice"))


def _group_entitlement_min() -> entitlement_pb2.Entitlement:
    return entitlement_pb2.Entitlement(
        resource=resource_pb2.Resource(id=resource_pb2.ResourceId(resource_type="group", resource="eng")),
        id="group:eng:member",
    )


def _assert_golden(msg: Message, expected: bytes) -> None:
    assert _ser(msg) == expected
    # And the other direction: the hand-written bytes decode to an equal message.
    decoded = type(msg)()
    decoded.ParseFromString(expected)
    assert decoded == msg


# ---------------------------------------------------------------------------
# (a) Resource carrying a UserTrait annotation
# ---------------------------------------------------------------------------


def test_resource_with_user_trait_golden() -> None:
    profile = struct_pb2.Struct()
    profile.update({"first_name": "Alice"})
    trait = annotation_trait_pb2.UserTrait(
        emails=[annotation_trait_pb2.UserTrait.Email(address="alice@example.com", is_primary=True)],
        status=annotation_trait_pb2.UserTrait.Status(
            status=annotation_trait_pb2.UserTrait.Status.STATUS_ENABLED
        ),
        profile=profile,
        account_type=annotation_trait_pb2.UserTrait.ACCOUNT_TYPE_HUMAN,
        login="alice",
    )
    resource = resource_pb2.Resource(
        id=resource_pb2.ResourceId(resource_type="user", resource="alice"),
        display_name="Alice",
        annotations=[_pack(trait)],
    )

    user_trait = (
        # emails: field 1, LEN -> 0x0a; Email is 21 bytes
        b"\x0a\x15"
        + b"\x0a\x11alice@example.com"  # Email.address: field 1 -> 0x0a; 17 bytes
        + b"\x10\x01"  # Email.is_primary: field 2, VARINT -> (2<<3)|0 = 0x10; true
        # status: field 2, LEN -> 0x12; 2 bytes
        + b"\x12\x02"
        + b"\x08\x01"  # Status.status: field 1, VARINT -> 0x08; STATUS_ENABLED = 1
        # profile: field 3, LEN -> (3<<3)|2 = 0x1a; Struct is 23 bytes
        + b"\x1a\x17"
        + b"\x0a\x15"  # Struct.fields map entry: field 1 -> 0x0a; 21 bytes
        + b"\x0a\x0afirst_name"  # entry key: field 1 -> 0x0a; 10 bytes
        + b"\x12\x07"  # entry value: field 2 -> 0x12; Value is 7 bytes
        + b"\x1a\x05Alice"  # Value.string_value: field 3 -> 0x1a; 5 bytes
        # account_type: field 5, VARINT -> (5<<3)|0 = 0x28; ACCOUNT_TYPE_HUMAN = 1
        + b"\x28\x01"
        # login: field 6, LEN -> (6<<3)|2 = 0x32; 5 bytes
        + b"\x32\x05alice"
    )
    assert len(user_trait) == 0x3D  # 23 + 4 + 25 + 2 + 7 = 61

    any_user_trait = (
        b"\x0a\x2dtype.googleapis.com/c1.connector.v2.UserTrait"  # Any.type_url: 1 -> 0x0a; 45
        + b"\x12\x3d"
        + user_trait  # Any.value: field 2 -> 0x12; 61 bytes
    )
    expected = (
        b"\x0a\x0d"
        + RESOURCE_ID_USER_ALICE  # Resource.id: field 1 -> 0x0a; 13 bytes
        + b"\x1a\x05Alice"  # Resource.display_name: field 3 -> (3<<3)|2 = 0x1a; 5 bytes
        + b"\x22\x6e"
        + any_user_trait  # Resource.annotations: field 4 -> (4<<3)|2 = 0x22; 110 bytes
    )
    assert len(expected) == 134

    assert _ser(trait) == user_trait
    _assert_golden(resource, expected)

    decoded = resource_pb2.Resource.FromString(expected)
    unpacked = annotation_trait_pb2.UserTrait()
    assert decoded.annotations[0].Unpack(unpacked)
    assert unpacked.login == "alice"
    assert unpacked.profile.fields["first_name"].string_value == "Alice"


# ---------------------------------------------------------------------------
# (b) Entitlement
# ---------------------------------------------------------------------------


def test_entitlement_golden() -> None:
    entitlement = entitlement_pb2.Entitlement(
        resource=resource_pb2.Resource(id=resource_pb2.ResourceId(resource_type="group", resource="eng")),
        id="group:eng:member",
        display_name="member",
        grantable_to=[
            resource_pb2.ResourceType(
                id="user", display_name="User", traits=[resource_pb2.ResourceType.TRAIT_USER]
            )
        ],
        purpose=entitlement_pb2.Entitlement.PURPOSE_VALUE_ASSIGNMENT,
        slug="member",
    )
    expected = (
        b"\x0a\x0e"
        + RESOURCE_GROUP_ENG  # resource: field 1 -> 0x0a; 14 bytes
        + b"\x12\x10group:eng:member"  # id: field 2 -> 0x12; 16 bytes
        + b"\x1a\x06member"  # display_name: field 3 -> 0x1a; 6 bytes
        # grantable_to: field 5, LEN -> (5<<3)|2 = 0x2a; ResourceType is 15 bytes
        + b"\x2a\x0f"
        + b"\x0a\x04user"  # ResourceType.id: field 1 -> 0x0a
        + b"\x12\x04User"  # ResourceType.display_name: field 2 -> 0x12
        + b"\x1a\x01\x01"  # ResourceType.traits: field 3 packed -> 0x1a; [TRAIT_USER = 1]
        # purpose: field 7, VARINT -> (7<<3)|0 = 0x38; PURPOSE_VALUE_ASSIGNMENT = 1
        + b"\x38\x01"
        # slug: field 8, LEN -> (8<<3)|2 = 0x42; 6 bytes
        + b"\x42\x06member"
    )
    assert len(expected) == 69
    _assert_golden(entitlement, expected)


# ---------------------------------------------------------------------------
# (c) Grant with a GrantExpandable annotation
# ---------------------------------------------------------------------------


def test_grant_with_expandable_golden() -> None:
    expandable = annotation_grant_pb2.GrantExpandable(
        entitlement_ids=["group:ops:member"], shallow=True, resource_type_ids=["user"]
    )
    grant = grant_pb2.Grant(
        entitlement=_group_entitlement_min(),
        principal=_user_resource(),
        id="group:eng:member:user:alice",
        annotations=[_pack(expandable)],
    )
    grant_expandable = (
        b"\x0a\x10group:ops:member"  # entitlement_ids: field 1 -> 0x0a; 16 bytes
        + b"\x10\x01"  # shallow: field 2, VARINT -> 0x10; true
        + b"\x1a\x04user"  # resource_type_ids: field 3 -> 0x1a; 4 bytes
    )
    assert len(grant_expandable) == 0x1A  # 26
    any_expandable = (
        b"\x0a\x33type.googleapis.com/c1.connector.v2.GrantExpandable"  # type_url; 51 bytes
        + b"\x12\x1a"
        + grant_expandable  # value; 26 bytes
    )
    expected = (
        b"\x0a\x22"
        + ENTITLEMENT_GROUP_ENG_MEMBER_MIN  # entitlement: field 1 -> 0x0a; 34 bytes
        + b"\x12\x0f"
        + RESOURCE_USER_ALICE  # principal: field 2 -> 0x12; 15 bytes
        + b"\x1a\x1bgroup:eng:member:user:alice"  # id: field 3 -> 0x1a; 27 bytes
        + b"\x22\x51"
        + any_expandable  # annotations: field 4 -> 0x22; 81 bytes
    )
    assert len(expected) == 165
    _assert_golden(grant, expected)


# ---------------------------------------------------------------------------
# (d) baton Task carrying the grant oneof case
# ---------------------------------------------------------------------------


def test_task_grant_golden() -> None:
    task = baton_pb2.Task(
        id=TASK_ID,
        grant=baton_pb2.Task.GrantTask(entitlement=_group_entitlement_min(), principal=_user_resource()),
    )
    grant_task = (
        b"\x0a\x22"
        + ENTITLEMENT_GROUP_ENG_MEMBER_MIN  # GrantTask.entitlement: field 1; 34 bytes
        + b"\x12\x0f"
        + RESOURCE_USER_ALICE  # GrantTask.principal: field 2 -> 0x12; 15 bytes
    )
    assert len(grant_task) == 0x35  # 53
    expected = (
        b"\x0a\x1b"
        + TASK_ID.encode()  # Task.id: field 1 -> 0x0a; 27 bytes
        # Task.grant: field 103, LEN -> (103<<3)|2 = 826 = 0b110_0111010
        #   varint: low 7 bits 0x3a with continuation bit -> 0xba, then 826 >> 7 = 6 -> 0x06
        + b"\xba\x06\x35"
        + grant_task
    )
    assert len(expected) == 85
    _assert_golden(task, expected)
    assert baton_pb2.Task.FromString(expected).WhichOneof("task_type") == "grant"


def test_task_action_invoke_golden() -> None:
    args = struct_pb2.Struct()
    args.update({"user_id": "a1"})
    task = baton_pb2.Task(
        id=TASK_ID, action_invoke=baton_pb2.Task.ActionInvokeTask(name="disable_user", args=args)
    )
    # Struct{fields: map entry (field 1) {key: 0x0a "user_id"; value: 0x12 Value{string_value: 0x1a "a1"}}}
    struct = b"\x0a\x0f" + b"\x0a\x07user_id" + b"\x12\x04" + b"\x1a\x02a1"
    invoke = (
        b"\x0a\x0cdisable_user"  # ActionInvokeTask.name: field 1; 12 bytes
        + b"\x12\x11"
        + struct  # ActionInvokeTask.args: field 2; 17 bytes
    )
    assert len(invoke) == 0x21
    expected = (
        b"\x0a\x1b"
        + TASK_ID.encode()
        # Task.action_invoke: field 117, LEN -> 938 -> varint 0xaa 0x07
        + b"\xaa\x07\x21"
        + invoke
    )
    _assert_golden(task, expected)
    assert baton_pb2.Task.FromString(expected).WhichOneof("task_type") == "action_invoke"


def test_action_schema_golden() -> None:
    schema = action_pb2.BatonActionSchema(
        name="disable_user",
        arguments=[config_pb2.Field(name="user_id", is_required=True, string_field=config_pb2.StringField())],
        return_types=[config_pb2.Field(name="success", bool_field=config_pb2.BoolField())],
        action_type=[action_pb2.ACTION_TYPE_ACCOUNT, action_pb2.ACTION_TYPE_ACCOUNT_DISABLE],
    )
    expected = (
        b"\x0a\x0cdisable_user"  # name: field 1
        # arguments: field 2 -> Field{name: 0x0a; is_required: field 5 -> 0x28 0x01;
        #   string_field: field 100 LEN -> 802 -> 0xa2 0x06, empty}
        + b"\x12\x0e"
        + b"\x0a\x07user_id\x28\x01\xa2\x06\x00"
        # return_types: field 4 -> Field{name: 0x0a; bool_field: field 102 LEN -> 818 -> 0xb2 0x06, empty}
        + b"\x22\x0c"
        + b"\x0a\x07success\xb2\x06\x00"
        # action_type: field 7, packed varints ACCOUNT = 2, ACCOUNT_DISABLE = 4
        + b"\x3a\x02\x02\x04"
    )
    _assert_golden(schema, expected)


def test_task_unknown_oneof_case_is_preserved_as_unknown_field() -> None:
    """A task type outside our subset (e.g. 110 create_ticket_task) parses, with no oneof case set."""
    wire = (
        b"\x0a\x1b"
        + TASK_ID.encode()  # Task.id: field 1 -> 0x0a; 27 bytes
        # field 110, LEN -> (110<<3)|2 = 882 -> varint 0xf2 0x06; empty message
        + b"\xf2\x06\x00"
    )
    task = baton_pb2.Task.FromString(wire)
    assert task.id == TASK_ID
    assert task.WhichOneof("task_type") is None
    assert _ser(task) == wire  # unknown field survives a round trip


# ---------------------------------------------------------------------------
# (e) FinishTask requests: success with a packed response, and an error
# ---------------------------------------------------------------------------


def test_finish_task_success_golden() -> None:
    response = grant_pb2.GrantManagerServiceGrantResponse(
        grants=[
            grant_pb2.Grant(
                entitlement=entitlement_pb2.Entitlement(id="group:eng:member"),
                principal=_user_resource(),
                id="group:eng:member:user:alice",
            )
        ]
    )
    request = baton_pb2.BatonServiceFinishTaskRequest(
        host_id="host-1",
        task_id=TASK_ID,
        success=baton_pb2.BatonServiceFinishTaskRequest.Success(response=_pack(response)),
    )
    grant = (
        b"\x0a\x12"  # Grant.entitlement: field 1 -> 0x0a; 18 bytes
        + b"\x12\x10group:eng:member"  # Entitlement.id: field 2 -> 0x12; 16 bytes
        + b"\x12\x0f"
        + RESOURCE_USER_ALICE  # Grant.principal: field 2 -> 0x12; 15 bytes
        + b"\x1a\x1bgroup:eng:member:user:alice"  # Grant.id: field 3 -> 0x1a; 27 bytes
    )
    assert len(grant) == 0x42  # 66
    grant_response = b"\x12\x42" + grant  # GrantManagerServiceGrantResponse.grants: field 2 -> 0x12
    any_response = (
        b"\x0a\x44"  # Any.type_url: field 1 -> 0x0a; 68 bytes
        + b"type.googleapis.com/c1.connector.v2.GrantManagerServiceGrantResponse"
        + b"\x12\x44"
        + grant_response  # Any.value: field 2 -> 0x12; 68 bytes
    )
    assert len(any_response) == 140  # varint(140) = 0x8c 0x01 (0x0c | 0x80, then 140 >> 7 = 1)
    success = b"\x12\x8c\x01" + any_response  # Success.response: field 2 -> 0x12; 140 bytes
    assert len(success) == 143  # varint(143) = 0x8f 0x01
    expected = (
        b"\x0a\x06host-1"  # host_id: field 1 -> 0x0a; 6 bytes
        + b"\x12\x1b"
        + TASK_ID.encode()  # task_id: field 2 -> 0x12; 27 bytes
        # success: field 101, LEN -> (101<<3)|2 = 810 -> varint 0xaa (0x2a | 0x80), 0x06 (810 >> 7)
        + b"\xaa\x06\x8f\x01"
        + success
    )
    assert len(expected) == 184
    _assert_golden(request, expected)

    decoded = baton_pb2.BatonServiceFinishTaskRequest.FromString(expected)
    unpacked = grant_pb2.GrantManagerServiceGrantResponse()
    assert decoded.success.response.Unpack(unpacked)
    assert unpacked == response


def test_finish_task_error_golden() -> None:
    request = baton_pb2.BatonServiceFinishTaskRequest(
        host_id="host-1",
        task_id=TASK_ID,
        status=status_pb2.Status(code=9, message="boom"),  # 9 = FAILED_PRECONDITION
        error=baton_pb2.BatonServiceFinishTaskRequest.Error(non_retryable=True),
    )
    expected = (
        b"\x0a\x06host-1"  # host_id: field 1 -> 0x0a; 6 bytes
        + b"\x12\x1b"
        + TASK_ID.encode()  # task_id: field 2 -> 0x12; 27 bytes
        # status: field 3, LEN -> (3<<3)|2 = 0x1a; google.rpc.Status is 8 bytes
        + b"\x1a\x08"
        + b"\x08\x09"  # Status.code: field 1, VARINT -> 0x08; 9
        + b"\x12\x04boom"  # Status.message: field 2 -> 0x12; 4 bytes
        # error: field 100, LEN -> (100<<3)|2 = 802 -> varint 0xa2 (0x22 | 0x80), 0x06 (802 >> 7); 2 bytes
        + b"\xa2\x06\x02"
        + b"\x08\x01"  # Error.non_retryable: field 1, VARINT -> 0x08; true
    )
    assert len(expected) == 52
    _assert_golden(request, expected)


def test_upload_asset_messages_golden() -> None:
    metadata = baton_pb2.BatonServiceUploadAssetRequest(
        metadata=baton_pb2.BatonServiceUploadAssetRequest.UploadMetadata(host_id="h", task_id=TASK_ID)
    )
    assert _ser(metadata) == (
        # metadata: field 100 -> (100<<3)|2 = 802 -> 0xa2 0x06; UploadMetadata is 32 bytes
        b"\xa2\x06\x20"
        + b"\x0a\x01h"  # host_id: field 1 -> 0x0a
        + b"\x12\x1b"
        + TASK_ID.encode()  # task_id: field 2 -> 0x12; 27 bytes
    )
    data = baton_pb2.BatonServiceUploadAssetRequest(
        data=baton_pb2.BatonServiceUploadAssetRequest.UploadData(data=b"\x28\xb5\x2f\xfd")
    )
    # data: field 101 -> 810 -> 0xaa 0x06; UploadData{data: field 1 -> 0x0a; 4 bytes} is 6 bytes
    assert _ser(data) == b"\xaa\x06\x06\x0a\x04\x28\xb5\x2f\xfd"
    eof = baton_pb2.BatonServiceUploadAssetRequest(
        eof=baton_pb2.BatonServiceUploadAssetRequest.UploadEOF(sha256_checksum=bytes(range(32)))
    )
    # eof: field 102 -> (102<<3)|2 = 818 -> 0xb2 0x06; UploadEOF{sha256_checksum: 0x0a, 32 bytes} = 34 bytes
    assert _ser(eof) == b"\xb2\x06\x22\x0a\x20" + bytes(range(32))


# ---------------------------------------------------------------------------
# gRPC method paths
# ---------------------------------------------------------------------------

EXPECTED_METHODS: dict[str, set[str]] = {
    "c1.connectorapi.baton.v1.BatonService": {
        "Hello",
        "GetTask",
        "GetTasks",
        "Heartbeat",
        "FinishTask",
        "UploadAsset",
        "StartDebugging",
    },
    "c1.connector.v2.ConnectorService": {"GetMetadata", "Validate", "Cleanup"},
    "c1.connector.v2.ResourceTypesService": {"ListResourceTypes"},
    "c1.connector.v2.ResourcesService": {"ListResources"},
    "c1.connector.v2.ResourceGetterService": {"GetResource"},
    "c1.connector.v2.ResourceManagerService": {"CreateResource", "DeleteResource"},
    "c1.connector.v2.ResourceDeleterService": {"DeleteResourceV2"},
    "c1.connector.v2.CredentialManagerService": {"RotateCredential"},
    "c1.connector.v2.AccountManagerService": {"CreateAccount"},
    "c1.connector.v2.EntitlementsService": {"ListEntitlements", "ListStaticEntitlements"},
    "c1.connector.v2.GrantsService": {"ListGrants"},
    "c1.connector.v2.GrantManagerService": {"Grant", "Revoke"},
    "c1.connector.v2.AssetService": {"GetAsset"},
    "c1.connector.v2.ActionService": {
        "InvokeAction",
        "GetActionStatus",
        "GetActionSchema",
        "ListActionSchemas",
    },
}

SERVICE_FILES: list[FileDescriptor] = [
    baton_pb2.DESCRIPTOR,
    connector_pb2.DESCRIPTOR,
    resource_pb2.DESCRIPTOR,
    entitlement_pb2.DESCRIPTOR,
    grant_pb2.DESCRIPTOR,
    asset_pb2.DESCRIPTOR,
    action_pb2.DESCRIPTOR,
]


def _all_services() -> dict[str, ServiceDescriptor]:
    services: dict[str, ServiceDescriptor] = {}
    for file_descriptor in SERVICE_FILES:
        for service in file_descriptor.services_by_name.values():
            services[service.full_name] = service
    return services


def test_service_method_paths() -> None:
    services = _all_services()
    assert set(services) == set(EXPECTED_METHODS)
    paths = {
        f"/{service.full_name}/{method.name}" for service in services.values() for method in service.methods
    }
    expected_paths = {f"/{svc}/{name}" for svc, names in EXPECTED_METHODS.items() for name in names}
    assert paths == expected_paths
    assert "/c1.connectorapi.baton.v1.BatonService/UploadAsset" in paths
    assert "/c1.connector.v2.GrantManagerService/Grant" in paths


def test_streaming_shapes() -> None:
    services = _all_services()
    upload = services["c1.connectorapi.baton.v1.BatonService"].methods_by_name["UploadAsset"]
    assert upload.client_streaming and not upload.server_streaming
    get_asset = services["c1.connector.v2.AssetService"].methods_by_name["GetAsset"]
    assert get_asset.server_streaming and not get_asset.client_streaming
    for name, service in services.items():
        for method in service.methods:
            if (name, method.name) in {
                ("c1.connectorapi.baton.v1.BatonService", "UploadAsset"),
                ("c1.connector.v2.AssetService", "GetAsset"),
            }:
                continue
            assert not method.client_streaming and not method.server_streaming, f"{name}/{method.name}"


class _RecordingChannel:
    """Stands in for grpc.Channel and records the method paths the generated stubs bind."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def _record(self, kind: str) -> TypingAny:
        def bind(path: str, *args: object, **kwargs: object) -> object:
            self.calls.append((kind, path))
            return object()

        return bind

    def __getattr__(self, kind: str) -> TypingAny:
        if kind in {"unary_unary", "unary_stream", "stream_unary", "stream_stream"}:
            return self._record(kind)
        raise AttributeError(kind)


@pytest.mark.parametrize(
    ("stub_factory", "service"),
    [
        (baton_pb2_grpc.BatonServiceStub, "c1.connectorapi.baton.v1.BatonService"),
        (connector_pb2_grpc.ConnectorServiceStub, "c1.connector.v2.ConnectorService"),
        (resource_pb2_grpc.ResourceTypesServiceStub, "c1.connector.v2.ResourceTypesService"),
        (resource_pb2_grpc.ResourcesServiceStub, "c1.connector.v2.ResourcesService"),
        (resource_pb2_grpc.ResourceGetterServiceStub, "c1.connector.v2.ResourceGetterService"),
        (resource_pb2_grpc.ResourceManagerServiceStub, "c1.connector.v2.ResourceManagerService"),
        (resource_pb2_grpc.ResourceDeleterServiceStub, "c1.connector.v2.ResourceDeleterService"),
        (resource_pb2_grpc.CredentialManagerServiceStub, "c1.connector.v2.CredentialManagerService"),
        (resource_pb2_grpc.AccountManagerServiceStub, "c1.connector.v2.AccountManagerService"),
        (entitlement_pb2_grpc.EntitlementsServiceStub, "c1.connector.v2.EntitlementsService"),
        (grant_pb2_grpc.GrantsServiceStub, "c1.connector.v2.GrantsService"),
        (grant_pb2_grpc.GrantManagerServiceStub, "c1.connector.v2.GrantManagerService"),
        (asset_pb2_grpc.AssetServiceStub, "c1.connector.v2.AssetService"),
        (action_pb2_grpc.ActionServiceStub, "c1.connector.v2.ActionService"),
    ],
)
def test_generated_stubs_bind_expected_paths(stub_factory: TypingAny, service: str) -> None:
    channel = _RecordingChannel()
    stub_factory(channel)
    paths = {path for _, path in channel.calls}
    assert paths == {f"/{service}/{name}" for name in EXPECTED_METHODS[service]}
    kinds = dict((path, kind) for kind, path in channel.calls)
    if service == "c1.connectorapi.baton.v1.BatonService":
        assert kinds["/c1.connectorapi.baton.v1.BatonService/UploadAsset"] == "stream_unary"
    if service == "c1.connector.v2.AssetService":
        assert kinds["/c1.connector.v2.AssetService/GetAsset"] == "unary_stream"


# ---------------------------------------------------------------------------
# Field-number table
# ---------------------------------------------------------------------------

FIELD_NUMBERS: list[tuple[type[Message], dict[str, int]]] = [
    (
        baton_pb2.Task,
        {
            "id": 1,
            "status": 2,
            "debug": 3,
            "none": 100,
            "hello": 101,
            "sync_full": 102,
            "grant": 103,
            "revoke": 104,
            "create_account": 105,
            "create_resource": 106,
            "delete_resource": 107,
            "rotate_credentials": 108,
            "event_feed": 109,
            "action_list_schemas": 115,
            "action_get_schema": 116,
            "action_invoke": 117,
            "action_status": 118,
            "create_sync_diff": 119,
            "compact_syncs": 120,
        },
    ),
    (
        baton_pb2.BatonServiceFinishTaskRequest,
        {"host_id": 1, "task_id": 2, "status": 3, "error": 100, "success": 101},
    ),
    (baton_pb2.BatonServiceUploadAssetRequest, {"metadata": 100, "data": 101, "eof": 102}),
    (baton_pb2.BatonServiceUploadAssetRequest.UploadMetadata, {"host_id": 1, "task_id": 2, "annotations": 4}),
    (
        baton_pb2.Task.SyncFullTask,
        {
            "annotations": 1,
            "skip_expand_grants": 2,
            "skip_entitlements_and_grants": 3,
            "targeted_sync_resources": 4,
            "sync_resource_type_ids": 5,
            "skip_grants": 6,
            "storage_engine": 7,
        },
    ),
    (
        baton_pb2.BatonServiceHelloRequest,
        {
            "host_id": 1,
            "task_id": 2,
            "build_info": 3,
            "os_info": 4,
            "connector_metadata": 5,
            "annotations": 6,
        },
    ),
    (
        baton_pb2.BatonServiceGetTasksRequest,
        {"host_id": 1, "page_size": 2, "known_task_ids": 3, "annotations": 4},
    ),
    (
        baton_pb2.BatonServiceHeartbeatResponse,
        {"next_heartbeat": 1, "cancelled": 2, "annotations": 3, "cancelled_task_ids": 4},
    ),
    (
        resource_pb2.CreateAccountRequest,
        {"account_info": 1, "credential_options": 2, "encryption_configs": 3, "resource_type_id": 4},
    ),
    (
        resource_pb2.CredentialOptions,
        {
            "force_change_at_next_login": 1,
            "random_password": 100,
            "no_password": 101,
            "sso": 102,
            "encrypted_password": 103,
        },
    ),
    (
        resource_pb2.LocalCredentialOptions,
        {"force_change_at_next_login": 1, "plaintext_password": 103},
    ),
    (
        resource_pb2.EncryptedData,
        {
            "provider": 1,
            "key_id": 2,
            "name": 3,
            "description": 4,
            "schema": 5,
            "encrypted_bytes": 6,
            "key_ids": 7,
        },
    ),
    (
        resource_pb2.EncryptionConfig,
        {
            "principal": 1,
            "provider": 2,
            "key_id": 3,
            "jwk_public_key_config": 100,
            "age_recipient_config": 101,
        },
    ),
    (
        resource_pb2.Resource,
        {"id": 1, "parent_resource_id": 2, "display_name": 3, "annotations": 4, "profile": 9, "status": 11},
    ),
    (annotation_trait_pb2.UserTrait, {"login": 6, "structured_name": 12, "employee_ids": 13}),
    (
        connector_pb2.ConnectorMetadata,
        {"display_name": 1, "capabilities": 8, "account_creation_schema": 9},
    ),
    (connector_pb2.ConnectorServiceValidateResponse, {"annotations": 1, "sdk_version": 2}),
    (baton_pb2.Task.ActionListSchemasTask, {"annotations": 1, "resource_type_id": 2}),
    (baton_pb2.Task.ActionGetSchemaTask, {"name": 1, "annotations": 2}),
    (baton_pb2.Task.ActionInvokeTask, {"name": 1, "args": 2, "annotations": 3, "resource_type_id": 4}),
    (baton_pb2.Task.ActionStatusTask, {"name": 1, "id": 2, "annotations": 3}),
    (baton_pb2.Task.DeleteResourceTask, {"resource_id": 1, "parent_resource_id": 2}),
    (
        action_pb2.BatonActionSchema,
        {
            "name": 1,
            "arguments": 2,
            "constraints": 3,
            "return_types": 4,
            "display_name": 5,
            "description": 6,
            "action_type": 7,
            "resource_type_id": 8,
        },
    ),
    (
        action_pb2.InvokeActionRequest,
        {"name": 1, "args": 2, "annotations": 3, "resource_type_id": 4, "inline_wait": 5},
    ),
    (action_pb2.InvokeActionResponse, {"id": 1, "status": 2, "annotations": 3, "response": 4, "name": 5}),
    (action_pb2.GetActionStatusRequest, {"name": 1, "id": 2, "annotations": 3}),
    (
        action_pb2.GetActionStatusResponse,
        {"name": 1, "id": 2, "status": 3, "annotations": 4, "response": 5},
    ),
    (action_pb2.GetActionSchemaRequest, {"name": 1, "annotations": 2}),
    (action_pb2.GetActionSchemaResponse, {"schema": 1, "annotations": 2}),
    (action_pb2.ListActionSchemasRequest, {"annotations": 1, "resource_type_id": 2}),
    (action_pb2.ListActionSchemasResponse, {"schemas": 1, "annotations": 2}),
    (
        config_pb2.Field,
        {
            "name": 1,
            "display_name": 2,
            "description": 3,
            "placeholder": 4,
            "is_required": 5,
            "is_ops": 6,
            "is_secret": 7,
            "string_field": 100,
            "int_field": 101,
            "bool_field": 102,
            "string_slice_field": 103,
        },
    ),
    (
        config_pb2.StringField,
        {"default_value": 1, "type": 3, "allowed_extensions": 4, "options": 5},
    ),
    (config_pb2.BoolField, {"default_value": 1}),
    (config_pb2.IntField, {"default_value": 1}),
    (config_pb2.StringSliceField, {"default_value": 1}),
    (
        config_pb2.Constraint,
        {
            "kind": 1,
            "field_names": 2,
            "secondary_field_names": 3,
            "name": 4,
            "help_text": 5,
            "is_field_group": 6,
            "allowed_options": 7,
        },
    ),
]


@pytest.mark.parametrize(
    ("message_cls", "numbers"), FIELD_NUMBERS, ids=[cls.DESCRIPTOR.full_name for cls, _ in FIELD_NUMBERS]
)
def test_field_numbers(message_cls: type[Message], numbers: dict[str, int]) -> None:
    fields = message_cls.DESCRIPTOR.fields_by_name
    actual = {name: fields[name].number for name in numbers if name in fields}
    assert actual == numbers


def test_task_oneof_cases() -> None:
    oneof = baton_pb2.Task.DESCRIPTOR.oneofs_by_name["task_type"]
    numbers = {field.name: field.number for field in oneof.fields}
    for name, number in {
        "none": 100,
        "hello": 101,
        "sync_full": 102,
        "grant": 103,
        "revoke": 104,
        "create_account": 105,
        "create_resource": 106,
        "delete_resource": 107,
        "rotate_credentials": 108,
        "action_list_schemas": 115,
        "action_get_schema": 116,
        "action_invoke": 117,
        "action_status": 118,
    }.items():
        assert numbers[name] == number
    assert all(field.type == FieldDescriptor.TYPE_MESSAGE for field in oneof.fields)


def test_enum_values() -> None:
    assert dict(resource_pb2.ResourceType.Trait.items()) == {
        "TRAIT_UNSPECIFIED": 0,
        "TRAIT_USER": 1,
        "TRAIT_GROUP": 2,
        "TRAIT_ROLE": 3,
        "TRAIT_APP": 4,
        "TRAIT_SECRET": 5,
        "TRAIT_SECURITY_INSIGHT": 6,
        "TRAIT_SCOPE_BINDING": 7,
        "TRAIT_VENDOR": 8,
        "TRAIT_VENDOR_AGREEMENT": 9,
        "TRAIT_LICENSE_PROFILE": 10,
        "TRAIT_AGENT": 11,
        "TRAIT_MANAGED_DEVICE": 12,
    }
    assert dict(entitlement_pb2.Entitlement.PurposeValue.items()) == {
        "PURPOSE_VALUE_UNSPECIFIED": 0,
        "PURPOSE_VALUE_ASSIGNMENT": 1,
        "PURPOSE_VALUE_PERMISSION": 2,
        "PURPOSE_VALUE_OWNERSHIP": 3,
    }
    assert dict(action_pb2.BatonActionStatus.items()) == {
        "BATON_ACTION_STATUS_UNSPECIFIED": 0,
        "BATON_ACTION_STATUS_UNKNOWN": 1,
        "BATON_ACTION_STATUS_PENDING": 2,
        "BATON_ACTION_STATUS_RUNNING": 3,
        "BATON_ACTION_STATUS_COMPLETE": 4,
        "BATON_ACTION_STATUS_FAILED": 5,
    }
    assert dict(action_pb2.ActionType.items()) == {
        "ACTION_TYPE_UNSPECIFIED": 0,
        "ACTION_TYPE_DYNAMIC": 1,
        "ACTION_TYPE_ACCOUNT": 2,
        "ACTION_TYPE_ACCOUNT_UPDATE_PROFILE": 3,
        "ACTION_TYPE_ACCOUNT_DISABLE": 4,
        "ACTION_TYPE_ACCOUNT_ENABLE": 5,
        "ACTION_TYPE_RESOURCE_CREATE": 6,
        "ACTION_TYPE_RESOURCE_DELETE": 7,
        "ACTION_TYPE_RESOURCE_ENABLE": 8,
        "ACTION_TYPE_RESOURCE_DISABLE": 9,
    }
    assert config_pb2.ConstraintKind.Value("CONSTRAINT_KIND_OPTIONS_RESTRICTED") == 5
    assert config_pb2.StringFieldType.Value("STRING_FIELD_TYPE_FILE_UPLOAD") == 4
    assert baton_pb2.Task.Status.Value("STATUS_FINISHED") == 4
    assert connector_pb2.Capability.Value("CAPABILITY_SERVICE_MODE_TARGETED_SYNC") == 13
    assert (
        connector_pb2.CapabilityDetailCredentialOption.Value(
            "CAPABILITY_DETAIL_CREDENTIAL_OPTION_ENCRYPTED_PASSWORD"
        )
        == 4
    )
