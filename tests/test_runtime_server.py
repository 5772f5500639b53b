"""The c1.connector.v2 surface, driven in process and through a real grpc.aio channel.

Every test runs twice (fixture `surface`): once against ConnectorRuntime directly and once against a
GrpcConnectorClient talking to `serve()` over loopback, so both paths are held to the same behaviour.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    annotation_ratelimit_pb2,
    connector_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.sdk import model
from connector.sdk.client import GrpcConnectorClient
from connector.sdk.errors import ConnectorError, RateLimitInfo, UpstreamError
from connector.sdk.interface import Page
from connector.sdk.runtime import ConnectorRuntime
from connector.sdk.server import serve
from tests.toy_connector import USER, ToyConnector, ToyState, Users, group_res, user_res

Cap = connector_pb2.Capability


@dataclass
class Surface:
    client: Any
    connector: ToyConnector
    channel: grpc.aio.Channel | None = None


async def _make(kind: str, provisioning: bool) -> tuple[Surface, Any]:
    connector = ToyConnector(ToyState())
    runtime = ConnectorRuntime(connector, provisioning=provisioning)
    if kind == "in_process":
        return Surface(runtime, connector), None
    server = await serve(runtime, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Surface(GrpcConnectorClient(channel), connector, channel), server


@pytest.fixture(params=["in_process", "grpc"])
async def surface(request: pytest.FixtureRequest) -> AsyncIterator[Surface]:
    s, server = await _make(request.param, provisioning=True)
    yield s
    if server is not None:
        await s.channel.close()  # type: ignore[union-attr]
        await server.stop(None)


@pytest.fixture(params=["in_process", "grpc"])
async def gated(request: pytest.FixtureRequest) -> AsyncIterator[Surface]:
    s, server = await _make(request.param, provisioning=False)
    yield s
    if server is not None:
        await s.channel.close()  # type: ignore[union-attr]
        await server.stop(None)


async def test_metadata_capabilities_are_computed_and_sorted(surface: Surface) -> None:
    md = (await surface.client.get_metadata(connector_pb2.ConnectorServiceGetMetadataRequest())).metadata
    assert md.display_name == "Toy"
    by_type = {c.resource_type.id: list(c.capabilities) for c in md.capabilities.resource_type_capabilities}
    assert list(by_type) == ["group", "user"]  # sorted by type id
    assert by_type["group"] == [Cap.CAPABILITY_PROVISION, Cap.CAPABILITY_SYNC]
    assert by_type["user"] == [
        Cap.CAPABILITY_SYNC,
        Cap.CAPABILITY_ACCOUNT_PROVISIONING,
        Cap.CAPABILITY_TARGETED_SYNC,
    ]
    assert list(md.capabilities.connector_capabilities) == [
        Cap.CAPABILITY_PROVISION,
        Cap.CAPABILITY_SYNC,
        Cap.CAPABILITY_ACCOUNT_PROVISIONING,
        Cap.CAPABILITY_TARGETED_SYNC,
        Cap.CAPABILITY_SERVICE_MODE_TARGETED_SYNC,
    ]
    prov = md.capabilities.credential_details.capability_account_provisioning
    opt = connector_pb2.CapabilityDetailCredentialOption
    assert list(prov.supported_credential_options) == [
        opt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_NO_PASSWORD,
        opt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_RANDOM_PASSWORD,
    ]
    assert prov.preferred_credential_option == opt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_NO_PASSWORD
    assert md.account_creation_schema.field_map["login"].required


async def test_validate_reports_sdk_version_that_enables_active_sync_id(surface: Surface) -> None:
    resp = await surface.client.validate(connector_pb2.ConnectorServiceValidateRequest())
    major, minor, patch = (int(x) for x in resp.sdk_version.lstrip("v").split("."))
    assert (major, minor, patch) >= (0, 4, 3)


async def test_validate_failure_keeps_its_code_and_message(surface: Surface) -> None:
    surface.connector.validate_error = ConnectorError(grpc.StatusCode.UNAUTHENTICATED, "token is invalid")
    with pytest.raises(ConnectorError) as info:
        await surface.client.validate(connector_pb2.ConnectorServiceValidateRequest())
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "token is invalid" in info.value.message


async def _all_pages(call: Any, make_request: Any) -> tuple[list[Any], int]:
    items: list[Any] = []
    token, pages = "", 0
    while True:
        resp = await call(make_request(token))
        pages += 1
        items.extend(resp.list)
        token = resp.next_page_token
        if not token:
            return items, pages


async def test_listing_pages_through_resources_entitlements_and_grants(surface: Surface) -> None:
    types = (
        await surface.client.list_resource_types(resource_pb2.ResourceTypesServiceListResourceTypesRequest())
    ).list
    assert {t.id for t in types} == {"user", "group"}
    users, pages = await _all_pages(
        surface.client.list_resources,
        lambda t: resource_pb2.ResourcesServiceListResourcesRequest(resource_type_id="user", page_token=t),
    )
    assert [u.id.resource for u in users] == ["u0", "u1", "u2", "u3", "u4"]
    assert pages == 3
    trait = model.find_annotation(users[0].annotations, model.annotation_trait_pb2.UserTrait)
    assert trait is not None and trait.emails[0].address == "u0@example.com"

    all_group = group_res("all")
    ents = (
        await surface.client.list_entitlements(
            entitlement_pb2.EntitlementsServiceListEntitlementsRequest(resource=all_group)
        )
    ).list
    assert [e.id for e in ents] == ["group:all:member"]
    grants, _ = await _all_pages(
        surface.client.list_grants,
        lambda t: grant_pb2.GrantsServiceListGrantsRequest(resource=all_group, page_token=t),
    )
    assert [g.id for g in grants] == ["group:all:member:group:eng", "group:all:member:group:ops"]
    exp = model.find_annotation(grants[0].annotations, annotation_grant_pb2.GrantExpandable)
    assert exp is not None and list(exp.entitlement_ids) == ["group:eng:member"]


async def test_unknown_resource_type_is_invalid_argument(surface: Surface) -> None:
    with pytest.raises(ConnectorError) as info:
        await surface.client.list_resources(
            resource_pb2.ResourcesServiceListResourcesRequest(resource_type_id="x")
        )
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in info.value.message


async def test_get_resource_found_missing_and_unsupported(surface: Surface) -> None:
    got = await surface.client.get_resource(
        resource_pb2.ResourceGetterServiceGetResourceRequest(resource_id=model.resource_id("user", "u3"))
    )
    assert got.resource.id.resource == "u3"
    with pytest.raises(ConnectorError) as missing:
        await surface.client.get_resource(
            resource_pb2.ResourceGetterServiceGetResourceRequest(
                resource_id=model.resource_id("user", "nope")
            )
        )
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ConnectorError) as unsupported:
        await surface.client.get_resource(
            resource_pb2.ResourceGetterServiceGetResourceRequest(
                resource_id=model.resource_id("group", "eng")
            )
        )
    assert unsupported.value.code == grpc.StatusCode.UNIMPLEMENTED


def _grant_req(group: str, user: str) -> grant_pb2.GrantManagerServiceGrantRequest:
    ent = model.assignment_entitlement(group_res(group), "member", grantable_to=[USER])
    return grant_pb2.GrantManagerServiceGrantRequest(entitlement=ent, principal=user_res(user, user))


async def test_grant_and_revoke_are_idempotent_with_annotations(surface: Surface) -> None:
    first = await surface.client.grant(_grant_req("ops", "u4"))
    assert "u4" in surface.connector.state.members["ops"]
    assert [g.id for g in first.grants] == ["group:ops:member:user:u4"]
    assert not model.has_annotation(first.annotations, annotation_grant_pb2.GrantAlreadyExists)
    again = await surface.client.grant(_grant_req("ops", "u4"))
    assert model.has_annotation(again.annotations, annotation_grant_pb2.GrantAlreadyExists)

    grant = model.new_grant(group_res("ops"), "member", model.resource_id("user", "u4"))
    revoked = await surface.client.revoke(grant_pb2.GrantManagerServiceRevokeRequest(grant=grant))
    assert "u4" not in surface.connector.state.members["ops"]
    assert not model.has_annotation(revoked.annotations, annotation_grant_pb2.GrantAlreadyRevoked)
    again_revoked = await surface.client.revoke(grant_pb2.GrantManagerServiceRevokeRequest(grant=grant))
    assert model.has_annotation(again_revoked.annotations, annotation_grant_pb2.GrantAlreadyRevoked)


async def test_grant_on_sync_only_type_is_unimplemented(surface: Surface) -> None:
    ent = model.assignment_entitlement(user_res("u0", "U"), "member")
    with pytest.raises(ConnectorError) as info:
        await surface.client.grant(
            grant_pb2.GrantManagerServiceGrantRequest(entitlement=ent, principal=user_res("u1", "U"))
        )
    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert "granting is not supported for user" in info.value.message


async def test_malformed_grant_request_is_invalid_argument(surface: Surface) -> None:
    with pytest.raises(ConnectorError) as info:
        await surface.client.grant(grant_pb2.GrantManagerServiceGrantRequest())
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_upstream_404_maps_to_not_found(surface: Surface) -> None:
    with pytest.raises(ConnectorError) as info:
        await surface.client.grant(_grant_req("ghosts", "u1"))
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "group does not exist" in info.value.message


async def test_upstream_rate_limit_becomes_unavailable_with_description(surface: Surface) -> None:
    reset = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=42)
    surface.connector.state.fail_grants_for = "eng"
    surface.connector.state.fail_with = UpstreamError(
        "toy",
        "GET",
        "/groups/{group}/members",
        429,
        "slow down",
        rate_limit=RateLimitInfo(limit=100, remaining=0, reset_at=reset),
    )
    with pytest.raises(ConnectorError) as info:
        await surface.client.list_grants(grant_pb2.GrantsServiceListGrantsRequest(resource=group_res("eng")))
    err = info.value
    assert err.code == grpc.StatusCode.UNAVAILABLE
    desc = err.rate_limit
    assert desc is not None
    assert desc.status == annotation_ratelimit_pb2.RateLimitDescription.STATUS_OVERLIMIT
    assert desc.limit == 100 and desc.remaining == 0
    assert desc.reset_at.ToDatetime(tzinfo=dt.UTC) == reset


async def test_connector_bug_is_unknown_not_a_crash(surface: Surface) -> None:
    surface.connector.state.fail_grants_for = "eng"
    surface.connector.state.fail_with = KeyError("oops")
    with pytest.raises(ConnectorError) as info:
        await surface.client.list_grants(grant_pb2.GrantsServiceListGrantsRequest(resource=group_res("eng")))
    assert info.value.code == grpc.StatusCode.UNKNOWN
    assert "KeyError" in info.value.message and "group:eng" in info.value.message


async def test_provisioning_gate_refuses_every_provisioning_rpc(gated: Surface) -> None:
    calls = [
        gated.client.grant(_grant_req("ops", "u4")),
        gated.client.revoke(
            grant_pb2.GrantManagerServiceRevokeRequest(
                grant=model.new_grant(group_res("ops"), "member", model.resource_id("user", "u3"))
            )
        ),
        gated.client.create_account(
            resource_pb2.CreateAccountRequest(account_info=resource_pb2.AccountInfo(login="new"))
        ),
        gated.client.delete_resource(
            resource_pb2.DeleteResourceRequest(resource_id=model.resource_id("user", "u1"))
        ),
    ]
    for call in calls:
        with pytest.raises(ConnectorError) as info:
            await call
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.message == "provisioning is not enabled"
    assert "u4" not in gated.connector.state.members["ops"]
    assert "u3" in gated.connector.state.members["ops"]
    assert "new" not in gated.connector.state.users


async def test_create_account_no_password_and_already_exists(surface: Surface) -> None:
    req = resource_pb2.CreateAccountRequest(account_info=resource_pb2.AccountInfo(login="newbie"))
    req.credential_options.no_password.SetInParent()
    resp = await surface.client.create_account(req)
    assert resp.WhichOneof("result") == "success"
    assert resp.success.resource.id.resource == "newbie"
    assert resp.success.is_create_account_result
    assert surface.connector.state.created[0][1].kind == "no_password"
    again = await surface.client.create_account(req)
    assert again.WhichOneof("result") == "already_exists"


async def test_create_account_rejects_unsupported_credential_option(surface: Surface) -> None:
    req = resource_pb2.CreateAccountRequest(account_info=resource_pb2.AccountInfo(login="ssoer"))
    req.credential_options.sso.sso_provider = "okta"
    with pytest.raises(ConnectorError) as info:
        await surface.client.create_account(req)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'sso' is not supported" in info.value.message


async def test_delete_resource_refused_by_default(surface: Surface) -> None:
    with pytest.raises(ConnectorError) as info:
        await surface.client.delete_resource(
            resource_pb2.DeleteResourceRequest(resource_id=model.resource_id("user", "u1"))
        )
    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert "deleting user resources is not supported" in info.value.message


async def test_unchanged_page_token_is_reported_as_a_connector_bug() -> None:
    class StuckUsers(Users):
        async def list(self, parent: Any, page_token: str) -> Page[Any]:
            return Page([], page_token or "1")  # never advances

    class Stuck(ToyConnector):
        def syncers(self) -> Any:
            return [StuckUsers(self.state)]

    runtime = ConnectorRuntime(Stuck())
    await runtime.list_resources(resource_pb2.ResourcesServiceListResourcesRequest(resource_type_id="user"))
    with pytest.raises(ConnectorError) as info:
        await runtime.list_resources(
            resource_pb2.ResourcesServiceListResourcesRequest(resource_type_id="user", page_token="1")
        )
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert "next page token unchanged" in info.value.message


async def test_server_exposes_health_service() -> None:
    runtime = ConnectorRuntime(ToyConnector())
    server = await serve(runtime, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            overall = await stub.Check(health_pb2.HealthCheckRequest(service=""))
            assert overall.status == health_pb2.HealthCheckResponse.SERVING
            svc = await stub.Check(
                health_pb2.HealthCheckRequest(service="c1.connector.v2.GrantManagerService")
            )
            assert svc.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)


def test_capabilities_json_is_protojson_with_type() -> None:

    from connector.cli import capabilities_json

    doc = json.loads(capabilities_json(ToyConnector()))
    assert doc["@type"] == "type.googleapis.com/c1.connector.v2.ConnectorCapabilities"
    types = [c["resourceType"]["id"] for c in doc["resourceTypeCapabilities"]]
    assert types == ["group", "user"]
    assert "CAPABILITY_PROVISION" in doc["connectorCapabilities"]


async def test_create_account_random_password_is_returned_only_encrypted(surface: Surface) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from connector.sdk.crypto import decrypt_encrypted_data, public_jwk

    recipient = ed25519.Ed25519PrivateKey.generate()
    req = resource_pb2.CreateAccountRequest(account_info=resource_pb2.AccountInfo(login="randy"))
    req.credential_options.random_password.length = 20
    config = req.encryption_configs.add(provider="baton/jwk/v1")
    config.jwk_public_key_config.pub_key = json.dumps(public_jwk(recipient)).encode()
    resp = await surface.client.create_account(req)
    assert resp.WhichOneof("result") == "success"
    ((login, creds),) = surface.connector.state.created
    assert login == "randy" and creds.kind == "random_password" and creds.password is not None
    assert len(creds.password) == 20
    (data,) = resp.encrypted_data
    assert creds.password.encode() not in data.SerializeToString()
    assert decrypt_encrypted_data(data, recipient) == creds.password.encode()


async def test_create_account_with_bad_recipient_creates_nothing(surface: Surface) -> None:
    req = resource_pb2.CreateAccountRequest(account_info=resource_pb2.AccountInfo(login="lost"))
    req.credential_options.random_password.length = 12
    req.encryption_configs.add(provider="baton/jwk/v1").jwk_public_key_config.pub_key = b"not a jwk"
    with pytest.raises(ConnectorError) as info:
        await surface.client.create_account(req)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "lost" not in surface.connector.state.users


async def test_every_listed_resource_is_marked_as_listed_as_the_go_sdk_does(surface: Surface) -> None:
    # Any connector (the toy one here): the runtime stamps it, in process and on the wire; a single
    # GetResource is no listing and stays unmarked.
    listed = resource_pb2.Resource.CREATION_SOURCE_CONNECTOR_LIST_RESOURCES
    for type_id in ("user", "group"):
        resources, _ = await _all_pages(
            surface.client.list_resources,
            lambda t, type_id=type_id: resource_pb2.ResourcesServiceListResourcesRequest(
                resource_type_id=type_id, page_token=t
            ),
        )
        assert resources and {r.creation_source for r in resources} == {listed}
    got = await surface.client.get_resource(
        resource_pb2.ResourceGetterServiceGetResourceRequest(resource_id=model.resource_id("user", "u0"))
    )
    assert got.resource.creation_source == resource_pb2.Resource.CREATION_SOURCE_UNSPECIFIED
