"""Calling a connector: the method set the sync engine and the daemon use, in process or over gRPC."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import grpc
from google.rpc import status_pb2

from connector.pb.c1.connector.v2 import action_pb2, connector_pb2, entitlement_pb2, grant_pb2, resource_pb2
from connector.sdk.encoded_grants import EncodedGrants
from connector.sdk.errors import ConnectorError

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ConnectorClient(Protocol):
    """The `c1.connector.v2` RPCs as async methods. `ConnectorRuntime` satisfies it in process and
    `GrpcConnectorClient` over a channel; both raise ConnectorError."""

    async def get_metadata(
        self, request: connector_pb2.ConnectorServiceGetMetadataRequest
    ) -> connector_pb2.ConnectorServiceGetMetadataResponse: ...

    async def validate(
        self, request: connector_pb2.ConnectorServiceValidateRequest
    ) -> connector_pb2.ConnectorServiceValidateResponse: ...

    async def cleanup(
        self, request: connector_pb2.ConnectorServiceCleanupRequest
    ) -> connector_pb2.ConnectorServiceCleanupResponse: ...

    async def list_resource_types(
        self, request: resource_pb2.ResourceTypesServiceListResourceTypesRequest
    ) -> resource_pb2.ResourceTypesServiceListResourceTypesResponse: ...

    async def list_resources(
        self, request: resource_pb2.ResourcesServiceListResourcesRequest
    ) -> resource_pb2.ResourcesServiceListResourcesResponse: ...

    async def get_resource(
        self, request: resource_pb2.ResourceGetterServiceGetResourceRequest
    ) -> resource_pb2.ResourceGetterServiceGetResourceResponse: ...

    async def list_entitlements(
        self, request: entitlement_pb2.EntitlementsServiceListEntitlementsRequest
    ) -> entitlement_pb2.EntitlementsServiceListEntitlementsResponse: ...

    async def list_static_entitlements(
        self, request: entitlement_pb2.EntitlementsServiceListStaticEntitlementsRequest
    ) -> entitlement_pb2.EntitlementsServiceListStaticEntitlementsResponse: ...

    async def list_grants(
        self, request: grant_pb2.GrantsServiceListGrantsRequest
    ) -> grant_pb2.GrantsServiceListGrantsResponse: ...

    async def grant(
        self, request: grant_pb2.GrantManagerServiceGrantRequest
    ) -> grant_pb2.GrantManagerServiceGrantResponse: ...

    async def revoke(
        self, request: grant_pb2.GrantManagerServiceRevokeRequest
    ) -> grant_pb2.GrantManagerServiceRevokeResponse: ...

    async def create_account(
        self, request: resource_pb2.CreateAccountRequest
    ) -> resource_pb2.CreateAccountResponse: ...

    async def delete_resource(
        self, request: resource_pb2.DeleteResourceRequest
    ) -> resource_pb2.DeleteResourceResponse: ...

    async def delete_resource_v2(
        self, request: resource_pb2.DeleteResourceV2Request
    ) -> resource_pb2.DeleteResourceV2Response: ...

    async def list_action_schemas(
        self, request: action_pb2.ListActionSchemasRequest
    ) -> action_pb2.ListActionSchemasResponse: ...

    async def get_action_schema(
        self, request: action_pb2.GetActionSchemaRequest
    ) -> action_pb2.GetActionSchemaResponse: ...

    async def invoke_action(
        self, request: action_pb2.InvokeActionRequest
    ) -> action_pb2.InvokeActionResponse: ...

    async def get_action_status(
        self, request: action_pb2.GetActionStatusRequest
    ) -> action_pb2.GetActionStatusResponse: ...


@runtime_checkable
class EncodedGrantsClient(Protocol):
    """A connector in this process that can hand grants over as bytes and columns (`ConnectorRuntime`);
    the sync engine uses it when present and plain `list_grants` otherwise."""

    async def list_grants_encoded(
        self, request: grant_pb2.GrantsServiceListGrantsRequest
    ) -> tuple[grant_pb2.GrantsServiceListGrantsResponse, EncodedGrants | None]: ...


# (python method, service, RPC, request type, response type): the whole surface, in one table that the
# server and the client both read, so the two cannot drift apart.
RPCS: list[tuple[str, str, str, Any, Any]] = [
    (
        "get_metadata",
        "ConnectorService",
        "GetMetadata",
        connector_pb2.ConnectorServiceGetMetadataRequest,
        connector_pb2.ConnectorServiceGetMetadataResponse,
    ),
    (
        "validate",
        "ConnectorService",
        "Validate",
        connector_pb2.ConnectorServiceValidateRequest,
        connector_pb2.ConnectorServiceValidateResponse,
    ),
    (
        "cleanup",
        "ConnectorService",
        "Cleanup",
        connector_pb2.ConnectorServiceCleanupRequest,
        connector_pb2.ConnectorServiceCleanupResponse,
    ),
    (
        "list_resource_types",
        "ResourceTypesService",
        "ListResourceTypes",
        resource_pb2.ResourceTypesServiceListResourceTypesRequest,
        resource_pb2.ResourceTypesServiceListResourceTypesResponse,
    ),
    (
        "list_resources",
        "ResourcesService",
        "ListResources",
        resource_pb2.ResourcesServiceListResourcesRequest,
        resource_pb2.ResourcesServiceListResourcesResponse,
    ),
    (
        "get_resource",
        "ResourceGetterService",
        "GetResource",
        resource_pb2.ResourceGetterServiceGetResourceRequest,
        resource_pb2.ResourceGetterServiceGetResourceResponse,
    ),
    (
        "list_entitlements",
        "EntitlementsService",
        "ListEntitlements",
        entitlement_pb2.EntitlementsServiceListEntitlementsRequest,
        entitlement_pb2.EntitlementsServiceListEntitlementsResponse,
    ),
    (
        "list_static_entitlements",
        "EntitlementsService",
        "ListStaticEntitlements",
        entitlement_pb2.EntitlementsServiceListStaticEntitlementsRequest,
        entitlement_pb2.EntitlementsServiceListStaticEntitlementsResponse,
    ),
    (
        "list_grants",
        "GrantsService",
        "ListGrants",
        grant_pb2.GrantsServiceListGrantsRequest,
        grant_pb2.GrantsServiceListGrantsResponse,
    ),
    (
        "grant",
        "GrantManagerService",
        "Grant",
        grant_pb2.GrantManagerServiceGrantRequest,
        grant_pb2.GrantManagerServiceGrantResponse,
    ),
    (
        "revoke",
        "GrantManagerService",
        "Revoke",
        grant_pb2.GrantManagerServiceRevokeRequest,
        grant_pb2.GrantManagerServiceRevokeResponse,
    ),
    (
        "create_account",
        "AccountManagerService",
        "CreateAccount",
        resource_pb2.CreateAccountRequest,
        resource_pb2.CreateAccountResponse,
    ),
    (
        "delete_resource",
        "ResourceManagerService",
        "DeleteResource",
        resource_pb2.DeleteResourceRequest,
        resource_pb2.DeleteResourceResponse,
    ),
    (
        "delete_resource_v2",
        "ResourceDeleterService",
        "DeleteResourceV2",
        resource_pb2.DeleteResourceV2Request,
        resource_pb2.DeleteResourceV2Response,
    ),
    (
        "list_action_schemas",
        "ActionService",
        "ListActionSchemas",
        action_pb2.ListActionSchemasRequest,
        action_pb2.ListActionSchemasResponse,
    ),
    (
        "get_action_schema",
        "ActionService",
        "GetActionSchema",
        action_pb2.GetActionSchemaRequest,
        action_pb2.GetActionSchemaResponse,
    ),
    (
        "invoke_action",
        "ActionService",
        "InvokeAction",
        action_pb2.InvokeActionRequest,
        action_pb2.InvokeActionResponse,
    ),
    (
        "get_action_status",
        "ActionService",
        "GetActionStatus",
        action_pb2.GetActionStatusRequest,
        action_pb2.GetActionStatusResponse,
    ),
]

PACKAGE = "c1.connector.v2"


def error_from_rpc(err: grpc.aio.AioRpcError) -> ConnectorError:
    """Rebuild a ConnectorError (with status details such as RateLimitDescription) from an RPC failure."""
    for key, value in err.trailing_metadata() or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            st = status_pb2.Status.FromString(value)
            return ConnectorError.from_status(st)
    return ConnectorError(err.code(), err.details() or "")


def _make_call(channel: grpc.aio.Channel, service: str, rpc: str, req_t: Any, resp_t: Any) -> Any:
    call = channel.unary_unary(
        f"/{PACKAGE}.{service}/{rpc}",
        request_serializer=req_t.SerializeToString,
        response_deserializer=resp_t.FromString,
    )

    async def invoke(request: Any) -> Any:
        try:
            return await call(request)
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from None

    return invoke


class GrpcConnectorClient:
    """ConnectorClient over a gRPC channel to any `c1.connector.v2` server (ours or a Go connector's)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._calls = {m: _make_call(channel, svc, rpc, rq, rs) for m, svc, rpc, rq, rs in RPCS}

    async def close(self) -> None:
        await self._channel.close()

    async def get_metadata(
        self, request: connector_pb2.ConnectorServiceGetMetadataRequest
    ) -> connector_pb2.ConnectorServiceGetMetadataResponse:
        result: connector_pb2.ConnectorServiceGetMetadataResponse = await self._calls["get_metadata"](request)
        return result

    async def validate(
        self, request: connector_pb2.ConnectorServiceValidateRequest
    ) -> connector_pb2.ConnectorServiceValidateResponse:
        result: connector_pb2.ConnectorServiceValidateResponse = await self._calls["validate"](request)
        return result

    async def cleanup(
        self, request: connector_pb2.ConnectorServiceCleanupRequest
    ) -> connector_pb2.ConnectorServiceCleanupResponse:
        result: connector_pb2.ConnectorServiceCleanupResponse = await self._calls["cleanup"](request)
        return result

    async def list_resource_types(
        self, request: resource_pb2.ResourceTypesServiceListResourceTypesRequest
    ) -> resource_pb2.ResourceTypesServiceListResourceTypesResponse:
        result: resource_pb2.ResourceTypesServiceListResourceTypesResponse = await self._calls[
            "list_resource_types"
        ](request)
        return result

    async def list_resources(
        self, request: resource_pb2.ResourcesServiceListResourcesRequest
    ) -> resource_pb2.ResourcesServiceListResourcesResponse:
        result: resource_pb2.ResourcesServiceListResourcesResponse = await self._calls["list_resources"](
            request
        )
        return result

    async def get_resource(
        self, request: resource_pb2.ResourceGetterServiceGetResourceRequest
    ) -> resource_pb2.ResourceGetterServiceGetResourceResponse:
        result: resource_pb2.ResourceGetterServiceGetResourceResponse = await self._calls["get_resource"](
            request
        )
        return result

    async def list_entitlements(
        self, request: entitlement_pb2.EntitlementsServiceListEntitlementsRequest
    ) -> entitlement_pb2.EntitlementsServiceListEntitlementsResponse:
        result: entitlement_pb2.EntitlementsServiceListEntitlementsResponse = await self._calls[
            "list_entitlements"
        ](request)
        return result

    async def list_static_entitlements(
        self, request: entitlement_pb2.EntitlementsServiceListStaticEntitlementsRequest
    ) -> entitlement_pb2.EntitlementsServiceListStaticEntitlementsResponse:
        result: entitlement_pb2.EntitlementsServiceListStaticEntitlementsResponse = await self._calls[
            "list_static_entitlements"
        ](request)
        return result

    async def list_grants(
        self, request: grant_pb2.GrantsServiceListGrantsRequest
    ) -> grant_pb2.GrantsServiceListGrantsResponse:
        result: grant_pb2.GrantsServiceListGrantsResponse = await self._calls["list_grants"](request)
        return result

    async def grant(
        self, request: grant_pb2.GrantManagerServiceGrantRequest
    ) -> grant_pb2.GrantManagerServiceGrantResponse:
        result: grant_pb2.GrantManagerServiceGrantResponse = await self._calls["grant"](request)
        return result

    async def revoke(
        self, request: grant_pb2.GrantManagerServiceRevokeRequest
    ) -> grant_pb2.GrantManagerServiceRevokeResponse:
        result: grant_pb2.GrantManagerServiceRevokeResponse = await self._calls["revoke"](request)
        return result

    async def create_account(
        self, request: resource_pb2.CreateAccountRequest
    ) -> resource_pb2.CreateAccountResponse:
        result: resource_pb2.CreateAccountResponse = await self._calls["create_account"](request)
        return result

    async def delete_resource(
        self, request: resource_pb2.DeleteResourceRequest
    ) -> resource_pb2.DeleteResourceResponse:
        result: resource_pb2.DeleteResourceResponse = await self._calls["delete_resource"](request)
        return result

    async def delete_resource_v2(
        self, request: resource_pb2.DeleteResourceV2Request
    ) -> resource_pb2.DeleteResourceV2Response:
        result: resource_pb2.DeleteResourceV2Response = await self._calls["delete_resource_v2"](request)
        return result

    async def list_action_schemas(
        self, request: action_pb2.ListActionSchemasRequest
    ) -> action_pb2.ListActionSchemasResponse:
        result: action_pb2.ListActionSchemasResponse = await self._calls["list_action_schemas"](request)
        return result

    async def get_action_schema(
        self, request: action_pb2.GetActionSchemaRequest
    ) -> action_pb2.GetActionSchemaResponse:
        result: action_pb2.GetActionSchemaResponse = await self._calls["get_action_schema"](request)
        return result

    async def invoke_action(self, request: action_pb2.InvokeActionRequest) -> action_pb2.InvokeActionResponse:
        result: action_pb2.InvokeActionResponse = await self._calls["invoke_action"](request)
        return result

    async def get_action_status(
        self, request: action_pb2.GetActionStatusRequest
    ) -> action_pb2.GetActionStatusResponse:
        result: action_pb2.GetActionStatusResponse = await self._calls["get_action_status"](request)
        return result
