"""The `c1.connector.v2` surface over a `Connector`, in process.

This is the one place that turns app code into protocol behaviour: capability computation, routing by
resource type, the provisioning gate, idempotency annotations, credential handling for account creation and
error mapping. The gRPC servicers (`server.py`) and the sync engine both call it, so a connector behaves the
same whether it is driven in process or over a channel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import grpc
from google.protobuf.message import Message

from connector.ops.logging import get_logger
from connector.pb.c1.connector.v2 import (
    action_pb2,
    annotation_grant_pb2,
    connector_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.sdk import model
from connector.sdk.actions import ActionManager, Invocation, inline_wait
from connector.sdk.crypto import CredentialHelper, CryptoError, InvalidCredentialRequest
from connector.sdk.encoded_grants import EncodedGrants
from connector.sdk.errors import ConnectorError, UpstreamError, from_upstream
from connector.sdk.interface import (
    AccountCredentials,
    AccountManager,
    Connector,
    GrantProvisioner,
    PlaintextSecret,
    ResourceDeleter,
    ResourceGetter,
    ResourceSyncer,
)

log = get_logger(__name__)

# The Go syncer only sends active_sync_id to connectors reporting >= 0.4.3; we speak that protocol level.
SDK_COMPAT_VERSION = "v0.25.0"

Cap = connector_pb2.Capability
CredOpt = connector_pb2.CapabilityDetailCredentialOption
_LISTED = resource_pb2.Resource.CREATION_SOURCE_CONNECTOR_LIST_RESOURCES


class CredentialResolver(Protocol):
    """Decodes what C1 asked for (random/encrypted password) and encrypts what the connector returns.

    Implemented by `connector.sdk.crypto.CredentialHelper`.
    """

    def resolve(
        self,
        options: resource_pb2.CredentialOptions,
        encryption_configs: Sequence[resource_pb2.EncryptionConfig],
    ) -> AccountCredentials: ...

    def encrypt(
        self, secrets: Sequence[PlaintextSecret], configs: Sequence[resource_pb2.EncryptionConfig]
    ) -> list[resource_pb2.EncryptedData]: ...

    def check_configs(self, configs: Sequence[resource_pb2.EncryptionConfig]) -> None: ...


class ConnectorRuntime:
    """One async method per `c1.connector.v2` RPC; raises ConnectorError with the right gRPC code."""

    def __init__(
        self,
        connector: Connector,
        *,
        provisioning: bool = False,
        credentials: CredentialResolver | None = None,
    ) -> None:
        self.connector = connector
        self.provisioning = provisioning
        self._credentials = credentials
        self._syncers: dict[str, ResourceSyncer] = {}
        for syncer in connector.syncers():
            type_id = syncer.resource_type.id
            if type_id in self._syncers:
                raise ValueError(f"two syncers for resource type {type_id!r}")
            self._syncers[type_id] = syncer
        self.actions = ActionManager(connector.actions(), self._coded)

    # --- helpers -----------------------------------------------------------------------------------

    def _syncer(self, type_id: str) -> ResourceSyncer:
        syncer = self._syncers.get(type_id)
        if syncer is None:
            raise ConnectorError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown resource type {type_id!r} (this connector has: {', '.join(sorted(self._syncers))})",
            )
        return syncer

    def _require_provisioning(self) -> None:
        if not self.provisioning:
            raise ConnectorError(grpc.StatusCode.FAILED_PRECONDITION, "provisioning is not enabled")

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Upstream failures become coded errors; a bug in connector code becomes UNKNOWN, logged once."""
        try:
            yield
        except ConnectorError:
            raise
        except Exception as err:
            raise self._coded(err, action) from err

    @staticmethod
    def _coded(err: Exception, action: str) -> ConnectorError:
        """The error `_errors` raises for `err` (call from inside the `except` block: it logs the
        traceback of a connector bug). The listing calls use it directly with try/except, because a
        context manager per call is measurable at hundreds of thousands of calls per sync."""
        if isinstance(err, UpstreamError):
            return from_upstream(err, action)
        log.exception("connector_error", action=action, error_type=type(err).__name__)
        return ConnectorError(grpc.StatusCode.UNKNOWN, f"{action}: {type(err).__name__}: {err}")

    @staticmethod
    def _check_token(request_token: str, next_token: str, what: str) -> None:
        if request_token and next_token == request_token:
            raise ConnectorError(
                grpc.StatusCode.INTERNAL,
                f"{what}: next page token unchanged - likely a connector bug",
            )

    def _account_manager(self, type_id: str) -> AccountManager:
        manager = self.connector.account_manager()
        if manager is None:
            raise ConnectorError(
                grpc.StatusCode.UNIMPLEMENTED, "account creation is not supported by this connector"
            )
        if type_id and type_id != manager.resource_type_id:
            raise ConnectorError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"account creation is not supported for resource type {type_id!r} "
                f"(accounts are created as {manager.resource_type_id!r})",
            )
        return manager

    def _resolver(self) -> CredentialResolver:
        if self._credentials is None:
            self._credentials = CredentialHelper(None)
        return self._credentials

    # --- ConnectorService --------------------------------------------------------------------------

    def capabilities(self) -> connector_pb2.ConnectorCapabilities:
        caps = connector_pb2.ConnectorCapabilities()
        connector_level: set[connector_pb2.Capability.ValueType] = set()
        manager = self.connector.account_manager()
        for type_id in sorted(self._syncers):
            syncer = self._syncers[type_id]
            rt_caps: set[connector_pb2.Capability.ValueType] = {Cap.CAPABILITY_SYNC}
            if isinstance(syncer, ResourceGetter):
                rt_caps.add(Cap.CAPABILITY_TARGETED_SYNC)
                connector_level.add(Cap.CAPABILITY_SERVICE_MODE_TARGETED_SYNC)
            if isinstance(syncer, GrantProvisioner):
                rt_caps.add(Cap.CAPABILITY_PROVISION)
            if isinstance(syncer, ResourceDeleter):
                rt_caps.add(Cap.CAPABILITY_RESOURCE_DELETE)
            if manager is not None and manager.resource_type_id == type_id:
                rt_caps.add(Cap.CAPABILITY_ACCOUNT_PROVISIONING)
                if self.connector.supports_resource_delete:
                    rt_caps.add(Cap.CAPABILITY_RESOURCE_DELETE)
            connector_level |= rt_caps
            caps.resource_type_capabilities.append(
                connector_pb2.ResourceTypeCapability(
                    resource_type=syncer.resource_type, capabilities=sorted(rt_caps)
                )
            )
        if self.actions:
            connector_level.add(Cap.CAPABILITY_ACTIONS)
        caps.connector_capabilities.extend(sorted(connector_level))
        if manager is not None:
            options = list(manager.credential_options())
            if options:
                caps.credential_details.capability_account_provisioning.supported_credential_options.extend(
                    options
                )
                caps.credential_details.capability_account_provisioning.preferred_credential_option = options[
                    0
                ]
        return caps

    def metadata(self) -> connector_pb2.ConnectorMetadata:
        md = connector_pb2.ConnectorMetadata()
        md.CopyFrom(self.connector.metadata())
        md.capabilities.CopyFrom(self.capabilities())
        manager = self.connector.account_manager()
        if manager is not None:
            md.account_creation_schema.CopyFrom(manager.account_creation_schema())
        return md

    async def get_metadata(
        self, request: connector_pb2.ConnectorServiceGetMetadataRequest
    ) -> connector_pb2.ConnectorServiceGetMetadataResponse:
        return connector_pb2.ConnectorServiceGetMetadataResponse(metadata=self.metadata())

    async def validate(
        self, request: connector_pb2.ConnectorServiceValidateRequest
    ) -> connector_pb2.ConnectorServiceValidateResponse:
        with self._errors("validate"):
            annotations = await self.connector.validate()
        return connector_pb2.ConnectorServiceValidateResponse(
            annotations=model.pack_all(annotations), sdk_version=SDK_COMPAT_VERSION
        )

    async def cleanup(
        self, request: connector_pb2.ConnectorServiceCleanupRequest
    ) -> connector_pb2.ConnectorServiceCleanupResponse:
        with self._errors("cleanup"):
            await self.connector.cleanup()
        return connector_pb2.ConnectorServiceCleanupResponse()

    # --- listing -----------------------------------------------------------------------------------

    async def list_resource_types(
        self, request: resource_pb2.ResourceTypesServiceListResourceTypesRequest
    ) -> resource_pb2.ResourceTypesServiceListResourceTypesResponse:
        return resource_pb2.ResourceTypesServiceListResourceTypesResponse(
            list=[s.resource_type for s in self._syncers.values()]
        )

    async def list_resources(
        self, request: resource_pb2.ResourcesServiceListResourcesRequest
    ) -> resource_pb2.ResourcesServiceListResourcesResponse:
        syncer = self._syncer(request.resource_type_id)
        parent = request.parent_resource_id if request.HasField("parent_resource_id") else None
        try:
            page = await syncer.list(parent, request.page_token)
        except ConnectorError:
            raise
        except Exception as err:
            raise self._coded(err, f"list {request.resource_type_id} resources") from err
        if request.page_token and page.next_token == request.page_token:
            self._check_token(
                request.page_token, page.next_token, f"list {request.resource_type_id} resources"
            )
        response = resource_pb2.ResourcesServiceListResourcesResponse(
            list=page.items,
            next_page_token=page.next_token,
            annotations=model.pack_all(page.annotations) if page.annotations else None,
        )
        # What the Go SDK's syncer stamps on every listed resource (it stores the field; C1 reads it). Set
        # on the response's copies: a connector may hand out the same objects again, e.g. from GetResource.
        for resource in response.list:
            resource.creation_source = _LISTED
        return response

    async def get_resource(
        self, request: resource_pb2.ResourceGetterServiceGetResourceRequest
    ) -> resource_pb2.ResourceGetterServiceGetResourceResponse:
        rid = request.resource_id
        syncer = self._syncer(rid.resource_type)
        if not isinstance(syncer, ResourceGetter):
            raise ConnectorError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"getting a single {rid.resource_type} resource is not supported by this connector",
            )
        parent = request.parent_resource_id if request.HasField("parent_resource_id") else None
        with self._errors(f"get {rid.resource_type}:{rid.resource}"):
            resource = await syncer.get(rid, parent)
        return resource_pb2.ResourceGetterServiceGetResourceResponse(resource=resource)

    async def list_entitlements(
        self, request: entitlement_pb2.EntitlementsServiceListEntitlementsRequest
    ) -> entitlement_pb2.EntitlementsServiceListEntitlementsResponse:
        rid = request.resource.id
        syncer = self._syncer(rid.resource_type)
        # The hot path of a sync (one call per resource): the action text is only built for errors.
        try:
            page = await syncer.entitlements(request.resource, request.page_token)
        except ConnectorError:
            raise
        except Exception as err:
            raise self._coded(err, f"list entitlements of {rid.resource_type}:{rid.resource}") from err
        if request.page_token and page.next_token == request.page_token:
            self._check_token(
                request.page_token,
                page.next_token,
                f"list entitlements of {rid.resource_type}:{rid.resource}",
            )
        return entitlement_pb2.EntitlementsServiceListEntitlementsResponse(
            list=page.items,
            next_page_token=page.next_token,
            annotations=model.pack_all(page.annotations) if page.annotations else None,
        )

    async def list_static_entitlements(
        self, request: entitlement_pb2.EntitlementsServiceListStaticEntitlementsRequest
    ) -> entitlement_pb2.EntitlementsServiceListStaticEntitlementsResponse:
        self._syncer(request.resource_type_id)
        return entitlement_pb2.EntitlementsServiceListStaticEntitlementsResponse()

    async def list_grants(
        self, request: grant_pb2.GrantsServiceListGrantsRequest
    ) -> grant_pb2.GrantsServiceListGrantsResponse:
        response, encoded = await self.list_grants_encoded(request)
        if encoded is not None:
            # The grants' bytes are the response's `list` field: one C-level parse, no per-grant work.
            response.MergeFromString(encoded.wire())
        return response

    async def list_grants_encoded(
        self, request: grant_pb2.GrantsServiceListGrantsRequest
    ) -> tuple[grant_pb2.GrantsServiceListGrantsResponse, EncodedGrants | None]:
        """ListGrants for an in-process caller: when the syncer built its page with a GrantEncoder, the
        grants come back as bytes and columns beside a response holding only the token and annotations
        (the sync engine stores them as they are); otherwise as a normal response and None."""
        rid = request.resource.id
        syncer = self._syncer(rid.resource_type)
        # The hot path of a sync (one call per resource): the action text is only built for errors.
        try:
            page = await syncer.grants(request.resource, request.page_token)
        except ConnectorError:
            raise
        except Exception as err:
            raise self._coded(err, f"list grants of {rid.resource_type}:{rid.resource}") from err
        if request.page_token and page.next_token == request.page_token:
            self._check_token(
                request.page_token, page.next_token, f"list grants of {rid.resource_type}:{rid.resource}"
            )
        items = page.items
        if isinstance(items, EncodedGrants):
            response = grant_pb2.GrantsServiceListGrantsResponse(
                next_page_token=page.next_token,
                annotations=model.pack_all(page.annotations) if page.annotations else None,
            )
            return response, items
        response = grant_pb2.GrantsServiceListGrantsResponse(
            list=items,
            next_page_token=page.next_token,
            annotations=model.pack_all(page.annotations) if page.annotations else None,
        )
        return response, None

    # --- provisioning ------------------------------------------------------------------------------

    def _provisioner(self, type_id: str, verb: str) -> GrantProvisioner:
        syncer = self._syncer(type_id)
        if not isinstance(syncer, GrantProvisioner):
            raise ConnectorError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{verb} is not supported for {type_id} entitlements: this connector only syncs them",
            )
        return syncer

    async def grant(
        self, request: grant_pb2.GrantManagerServiceGrantRequest
    ) -> grant_pb2.GrantManagerServiceGrantResponse:
        self._require_provisioning()
        ent = request.entitlement
        if not ent.id or not ent.resource.id.resource_type or not request.principal.id.resource:
            raise ConnectorError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "grant needs an entitlement with its resource and a principal",
            )
        provisioner = self._provisioner(ent.resource.id.resource_type, "granting")
        p = request.principal.id
        with self._errors(f"grant {ent.id} to {p.resource_type}:{p.resource}"):
            result = await provisioner.grant(request.principal, ent)
        annotations: list[Message] = list(result.annotations)
        if result.already_exists:
            annotations.append(annotation_grant_pb2.GrantAlreadyExists())
        log.info(
            "grant_done",
            entitlement=ent.id,
            principal=f"{p.resource_type}:{p.resource}",
            already_exists=result.already_exists,
        )
        return grant_pb2.GrantManagerServiceGrantResponse(
            annotations=model.pack_all(annotations), grants=result.grants
        )

    async def revoke(
        self, request: grant_pb2.GrantManagerServiceRevokeRequest
    ) -> grant_pb2.GrantManagerServiceRevokeResponse:
        self._require_provisioning()
        g = request.grant
        if not g.entitlement.resource.id.resource_type or not g.principal.id.resource:
            raise ConnectorError(
                grpc.StatusCode.INVALID_ARGUMENT, "revoke needs a grant with its entitlement and principal"
            )
        provisioner = self._provisioner(g.entitlement.resource.id.resource_type, "revoking")
        with self._errors(f"revoke {g.id or g.entitlement.id}"):
            result = await provisioner.revoke(g)
        annotations: list[Message] = list(result.annotations)
        if result.already_revoked:
            annotations.append(annotation_grant_pb2.GrantAlreadyRevoked())
        log.info("revoke_done", grant=g.id, already_revoked=result.already_revoked)
        return grant_pb2.GrantManagerServiceRevokeResponse(annotations=model.pack_all(annotations))

    async def create_account(
        self, request: resource_pb2.CreateAccountRequest
    ) -> resource_pb2.CreateAccountResponse:
        self._require_provisioning()
        manager = self._account_manager(request.resource_type_id)
        if not request.HasField("account_info"):
            raise ConnectorError(grpc.StatusCode.INVALID_ARGUMENT, "create account needs account_info")
        resolver = self._resolver()
        configs = list(request.encryption_configs)
        try:
            # Recipients are checked first: a password generated for nobody would be lost for good.
            resolver.check_configs(configs)
            creds = resolver.resolve(request.credential_options, configs)
        except InvalidCredentialRequest as err:
            raise ConnectorError(grpc.StatusCode.INVALID_ARGUMENT, f"create account: {err}") from err
        except CryptoError as err:
            raise ConnectorError(grpc.StatusCode.INTERNAL, f"create account: {err}") from err
        kind = creds.kind
        supported = {_OPTION_KIND.get(o) for o in manager.credential_options()}
        if kind not in supported:
            raise ConnectorError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"create account: credential option {kind!r} is not supported "
                f"(supported: {', '.join(sorted(k for k in supported if k))})",
            )
        with self._errors("create account"):
            result = await manager.create_account(request.account_info, creds)
        resp = resource_pb2.CreateAccountResponse(annotations=model.pack_all(result.annotations))
        if result.secrets:
            if not configs:
                log.warning("create_account_secret_dropped", reason="no encryption configs in the request")
            else:
                try:
                    resp.encrypted_data.extend(resolver.encrypt(result.secrets, configs))
                except CryptoError as err:
                    raise ConnectorError(
                        grpc.StatusCode.INTERNAL, f"create account: account created but {err}"
                    ) from err
        res = result.resource or resource_pb2.Resource()
        if result.kind == "success":
            resp.success.resource.CopyFrom(res)
            resp.success.is_create_account_result = True
        elif result.kind == "action_required":
            resp.action_required.resource.CopyFrom(res)
            resp.action_required.message = result.message
            resp.action_required.is_create_account_result = True
        elif result.kind == "already_exists":
            resp.already_exists.resource.CopyFrom(res)
            resp.already_exists.is_create_account_result = True
        else:
            resp.in_progress.resource.CopyFrom(res)
            resp.in_progress.is_create_account_result = True
        return resp

    async def _delete(
        self, rid: resource_pb2.ResourceId, parent: resource_pb2.ResourceId | None
    ) -> list[Message]:
        self._require_provisioning()
        if not rid.resource_type or not rid.resource:
            raise ConnectorError(grpc.StatusCode.INVALID_ARGUMENT, "delete resource needs a resource id")
        syncer = self._syncer(rid.resource_type)
        with self._errors(f"delete {rid.resource_type}:{rid.resource}"):
            if isinstance(syncer, ResourceDeleter):
                annotations = await syncer.delete(rid, parent)
            else:
                annotations = await self.connector.delete_resource(rid, parent)
        log.info("delete_done", resource=f"{rid.resource_type}:{rid.resource}")
        return annotations

    async def delete_resource(
        self, request: resource_pb2.DeleteResourceRequest
    ) -> resource_pb2.DeleteResourceResponse:
        parent = request.parent_resource_id if request.HasField("parent_resource_id") else None
        annotations = await self._delete(request.resource_id, parent)
        return resource_pb2.DeleteResourceResponse(annotations=model.pack_all(annotations))

    async def delete_resource_v2(
        self, request: resource_pb2.DeleteResourceV2Request
    ) -> resource_pb2.DeleteResourceV2Response:
        parent = request.parent_resource_id if request.HasField("parent_resource_id") else None
        annotations = await self._delete(request.resource_id, parent)
        return resource_pb2.DeleteResourceV2Response(annotations=model.pack_all(annotations))

    # --- actions -----------------------------------------------------------------------------------
    # Not behind the provisioning gate: the Go SDK serves ActionService whatever --provisioning says.

    async def list_action_schemas(
        self, request: action_pb2.ListActionSchemasRequest
    ) -> action_pb2.ListActionSchemasResponse:
        return action_pb2.ListActionSchemasResponse(schemas=self.actions.schemas(request.resource_type_id))

    async def get_action_schema(
        self, request: action_pb2.GetActionSchemaRequest
    ) -> action_pb2.GetActionSchemaResponse:
        if not request.name:
            raise ConnectorError(grpc.StatusCode.INVALID_ARGUMENT, "get action schema needs an action name")
        return action_pb2.GetActionSchemaResponse(schema=self.actions.action(request.name).schema)

    async def invoke_action(self, request: action_pb2.InvokeActionRequest) -> action_pb2.InvokeActionResponse:
        if not request.name:
            raise ConnectorError(grpc.StatusCode.INVALID_ARGUMENT, "invoke action needs an action name")
        wait = inline_wait(request.inline_wait if request.HasField("inline_wait") else None)
        inv = await self.actions.invoke(request.name, request.args, request.resource_type_id, wait)
        return action_pb2.InvokeActionResponse(
            id=inv.id, name=inv.name, status=inv.status, response=inv.response
        )

    async def get_action_status(
        self, request: action_pb2.GetActionStatusRequest
    ) -> action_pb2.GetActionStatusResponse:
        if not request.id:
            raise ConnectorError(grpc.StatusCode.INVALID_ARGUMENT, "get action status needs an action id")
        inv = self.actions.status(request.id)
        return action_pb2.GetActionStatusResponse(
            id=inv.id, name=inv.name, status=inv.status, response=inv.response
        )

    def action_invocation(self, action_id: str) -> Invocation | None:
        """The in-process record of an invocation (with its coded error), for the daemon's FinishTask."""
        try:
            return self.actions.status(action_id)
        except ConnectorError:
            return None

    async def close(self) -> None:
        await self.actions.close()
        await self.connector.close()


_OPTION_KIND: dict[int, str] = {
    CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_NO_PASSWORD: "no_password",
    CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_RANDOM_PASSWORD: "random_password",
    CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_ENCRYPTED_PASSWORD: "encrypted_password",
    CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_SSO: "sso",
}
