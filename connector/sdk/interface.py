"""What an application connector implements.

Modelled on the baton-sdk's per-resource-type syncer: each resource type has one syncer that lists its
resources, their entitlements and their grants; provisioning (grant/revoke) sits beside it on the same
object when the type supports it. The runtime (`connector.sdk.runtime`) turns a `Connector` into the
`c1.connector.v2` surface, so app code never touches request/response messages or gRPC.

Annotations are passed as plain protobuf messages; the runtime packs them into `Any`.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import grpc
from google.protobuf.message import Message

from connector.pb.c1.connector.v2 import action_pb2, connector_pb2, entitlement_pb2, grant_pb2, resource_pb2
from connector.sdk.errors import ConnectorError
from connector.sdk.http import UpstreamClient

T = TypeVar("T")

Resource = resource_pb2.Resource
ResourceId = resource_pb2.ResourceId
ResourceType = resource_pb2.ResourceType
Entitlement = entitlement_pb2.Entitlement
Grant = grant_pb2.Grant


@dataclass
class Page(Generic[T]):
    """One page of a listing. An empty `next_token` means this was the last page.

    `items` is usually a list; a grants page may be an `EncodedGrants` (see connector.sdk.encoded_grants).
    """

    items: Sequence[T] = field(default_factory=list)
    next_token: str = ""
    annotations: list[Message] = field(default_factory=list)


@dataclass
class GrantResult:
    """Outcome of a grant. `already_exists` makes the runtime add a GrantAlreadyExists annotation."""

    grants: list[Grant] = field(default_factory=list)
    already_exists: bool = False
    annotations: list[Message] = field(default_factory=list)


@dataclass
class RevokeResult:
    """Outcome of a revoke. `already_revoked` makes the runtime add a GrantAlreadyRevoked annotation."""

    already_revoked: bool = False
    annotations: list[Message] = field(default_factory=list)


class ResourceSyncer(abc.ABC):
    """Lists one resource type: resources, then entitlements and grants per resource."""

    resource_type: ResourceType

    @abc.abstractmethod
    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        """Resources of this type. Child-only types return an empty page when `parent` is None."""

    @abc.abstractmethod
    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]: ...

    @abc.abstractmethod
    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]: ...


class GrantProvisioner(abc.ABC):
    """Mix into a ResourceSyncer whose entitlements can be granted and revoked.

    The runtime routes Grant by `entitlement.resource.id.resource_type` and Revoke by
    `grant.entitlement.resource.id.resource_type` to the syncer of that type.
    """

    @abc.abstractmethod
    async def grant(self, principal: Resource, entitlement: Entitlement) -> GrantResult: ...

    @abc.abstractmethod
    async def revoke(self, grant: Grant) -> RevokeResult: ...


class ResourceGetter(abc.ABC):
    """Mix into a ResourceSyncer that can fetch one resource by id (targeted syncs)."""

    @abc.abstractmethod
    async def get(self, resource_id: ResourceId, parent: ResourceId | None) -> Resource: ...


class ResourceDeleter(abc.ABC):
    """Mix into a ResourceSyncer whose resources can be deleted (deprovisioned) upstream.

    The runtime routes DeleteResource / DeleteResourceV2 by `resource_id.resource_type` to the syncer of
    that type and reports RESOURCE_DELETE for it. Deleting something already gone is a success.
    """

    @abc.abstractmethod
    async def delete(self, resource_id: ResourceId, parent: ResourceId | None) -> list[Message]:
        """Delete the resource; returns annotations for the response."""


# An action handler takes the arguments (JSON-like values, already checked against the schema: every
# required argument is present with its declared kind) and returns the result values.
ActionHandler = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Action:
    """A named operation ConductorOne can invoke (c1.connector.v2 ActionService).

    `schema.resource_type_id` empty = a global action. The handler raises ConnectorError on failure; the
    runtime then reports the action FAILED with the message under `error` in its result.
    """

    schema: action_pb2.BatonActionSchema
    handler: ActionHandler

    @property
    def name(self) -> str:
        return self.schema.name


@dataclass
class ActionFailed(ConnectorError):
    """A failure whose result still carries values (e.g. `success: false`) beside the `error` text."""

    response: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def wrap(cls, err: ConnectorError, response: Mapping[str, Any]) -> ActionFailed:
        return cls(err.code, err.message, err.details, response=dict(response))


@dataclass
class PlaintextSecret:
    """A secret the connector produced (e.g. a generated password). The runtime encrypts it to every
    EncryptionConfig recipient and returns only the ciphertext; the plaintext never leaves the process."""

    name: str
    value: bytes
    description: str = ""
    schema: str = ""


@dataclass
class CreateAccountResult:
    kind: Literal["success", "action_required", "already_exists", "in_progress"]
    resource: Resource | None = None
    message: str = ""
    secrets: list[PlaintextSecret] = field(default_factory=list)
    annotations: list[Message] = field(default_factory=list)


@dataclass(frozen=True)
class AccountCredentials:
    """What C1 asked for, already decoded: the runtime decrypts an encrypted password with the client
    secret and generates random passwords per the request's constraints before calling the connector."""

    kind: Literal["no_password", "random_password", "encrypted_password", "sso"]
    password: str | None = None
    force_change_at_next_login: bool = False
    sso_provider: str = ""


class AccountManager(abc.ABC):
    """Creates accounts of one resource type (usually `user`)."""

    resource_type_id: str = "user"

    @abc.abstractmethod
    def credential_options(self) -> Sequence[connector_pb2.CapabilityDetailCredentialOption.ValueType]:
        """Supported options; the first is the preferred one."""

    @abc.abstractmethod
    def account_creation_schema(self) -> connector_pb2.ConnectorAccountCreationSchema: ...

    @abc.abstractmethod
    async def create_account(
        self, info: resource_pb2.AccountInfo, credentials: AccountCredentials
    ) -> CreateAccountResult: ...


class Connector(abc.ABC):
    """An application connector: metadata, validation and one syncer per resource type."""

    @abc.abstractmethod
    def metadata(self) -> connector_pb2.ConnectorMetadata:
        """Display name, description, help URL... Capabilities are computed by the runtime."""

    @abc.abstractmethod
    async def validate(self) -> list[Message]:
        """Check credentials and reachability; raise ConnectorError with a message a user can act on."""

    @abc.abstractmethod
    def syncers(self) -> Sequence[ResourceSyncer]: ...

    def account_manager(self) -> AccountManager | None:
        return None

    def actions(self) -> Sequence[Action]:
        """The actions this connector offers (none by default); ACTIONS is reported when there are any."""
        return ()

    async def delete_resource(self, resource_id: ResourceId, parent: ResourceId | None) -> list[Message]:
        """Deprovisioning of types whose syncer is not a ResourceDeleter. Connectors that cannot delete keep
        this refusal (or refine its message)."""
        raise ConnectorError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"deleting {resource_id.resource_type} resources is not supported by this connector",
        )

    supports_resource_delete: bool = False

    def upstream_clients(self) -> Sequence[UpstreamClient]:
        """The HTTP clients this connector uses; the daemon attaches its metrics hooks to them."""
        return ()

    def upstream_request_count(self) -> int:
        """Requests made to the upstream so far (for the sync report)."""
        return sum(client.stats.requests for client in self.upstream_clients())

    def on_capability_missing(self, hook: Callable[[str], None]) -> None:  # noqa: B027 - optional
        """Connectors that degrade when the upstream lacks a feature report each one through `hook`."""

    def sync_counters(self) -> Mapping[str, int]:
        """Connector-specific counts for the sync report (e.g. skipped anonymous permissions)."""
        return {}

    async def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Called at the end of every sync."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release HTTP clients and other resources."""
