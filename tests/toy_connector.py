"""A small in-memory connector used by the runtime, server and engine tests.

It pages deliberately (page size 2) so that pagination is exercised everywhere, supports grant/revoke on
groups, account creation, and can be told to fail in specific ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message

from connector.pb.c1.connector.v2 import connector_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import ConnectorError, UpstreamError
from connector.sdk.interface import (
    AccountCredentials,
    AccountManager,
    Connector,
    CreateAccountResult,
    Entitlement,
    Grant,
    GrantProvisioner,
    GrantResult,
    Page,
    PlaintextSecret,
    Resource,
    ResourceGetter,
    ResourceId,
    ResourceSyncer,
    RevokeResult,
)

USER = model.resource_type("user", "User", [model.Trait.TRAIT_USER])
GROUP = model.resource_type("group", "Group", [model.Trait.TRAIT_GROUP])
PAGE = 2


@dataclass
class ToyState:
    users: dict[str, str] = field(default_factory=lambda: {f"u{i}": f"User {i}" for i in range(5)})
    members: dict[str, set[str]] = field(
        default_factory=lambda: {"eng": {"u0", "u1", "u2"}, "ops": {"u3"}, "all": set()}
    )
    # group -> groups whose members are also members ("all" contains eng and ops)
    nested: dict[str, list[str]] = field(default_factory=lambda: {"all": ["eng", "ops"]})
    fail_grants_for: str | None = None
    fail_with: Exception | None = None
    calls: list[str] = field(default_factory=list)
    created: list[tuple[str, AccountCredentials]] = field(default_factory=list)


def _page(items: Sequence[str], token: str) -> tuple[list[str], str]:
    start = int(token or 0)
    end = start + PAGE
    return list(items[start:end]), (str(end) if end < len(items) else "")


def user_res(uid: str, name: str) -> Resource:
    return model.user_resource(
        name, USER, uid, model.user_trait(emails=[f"{uid}@example.com"], login=uid, profile={"id": uid})
    )


def group_res(gid: str) -> Resource:
    return model.group_resource(gid.upper(), GROUP, gid, profile={"name": gid})


class Users(ResourceSyncer, ResourceGetter):
    resource_type = USER

    def __init__(self, state: ToyState) -> None:
        self.state = state

    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        self.state.calls.append(f"list user {page_token}")
        ids, nxt = _page(sorted(self.state.users), page_token)
        return Page([user_res(u, self.state.users[u]) for u in ids], nxt)

    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]:
        return Page()

    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]:
        return Page()

    async def get(self, resource_id: ResourceId, parent: ResourceId | None) -> Resource:
        if resource_id.resource not in self.state.users:
            raise ConnectorError(grpc.StatusCode.NOT_FOUND, f"user {resource_id.resource} not found")
        return user_res(resource_id.resource, self.state.users[resource_id.resource])


class Groups(ResourceSyncer, GrantProvisioner):
    resource_type = GROUP

    def __init__(self, state: ToyState) -> None:
        self.state = state

    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        ids, nxt = _page(sorted(self.state.members), page_token)
        return Page([group_res(g) for g in ids], nxt)

    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]:
        return Page([model.assignment_entitlement(resource, "member", grantable_to=[USER, GROUP])])

    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]:
        gid = resource.id.resource
        if self.state.fail_grants_for == gid and self.state.fail_with is not None:
            raise self.state.fail_with
        principals = [("user", u) for u in sorted(self.state.members[gid])]
        principals += [("group", g) for g in self.state.nested.get(gid, [])]
        chunk, nxt = _page([f"{t}/{i}" for t, i in principals], page_token)
        out = []
        for item in chunk:
            ptype, pid = item.split("/")
            annotations: list[Message] = []
            if ptype == "group":
                annotations.append(
                    model.expandable([model.entitlement_id(model.resource_id("group", pid), "member")])
                )
            out.append(
                model.new_grant(resource, "member", model.resource_id(ptype, pid), annotations=annotations)
            )
        return Page(out, nxt)

    async def grant(self, principal: Resource, entitlement: Entitlement) -> GrantResult:
        gid, uid = entitlement.resource.id.resource, principal.id.resource
        if gid not in self.state.members:
            raise UpstreamError("toy", "POST", "/groups/{group}/members", 404, "group does not exist")
        if uid in self.state.members[gid]:
            return GrantResult(already_exists=True)
        self.state.members[gid].add(uid)
        return GrantResult(grants=[model.new_grant(entitlement.resource, "member", principal.id)])

    async def revoke(self, grant: Grant) -> RevokeResult:
        gid, uid = grant.entitlement.resource.id.resource, grant.principal.id.resource
        if uid not in self.state.members.get(gid, set()):
            return RevokeResult(already_revoked=True)
        self.state.members[gid].discard(uid)
        return RevokeResult()


CredOpt = connector_pb2.CapabilityDetailCredentialOption


class ToyAccounts(AccountManager):
    def __init__(self, state: ToyState) -> None:
        self.state = state

    def credential_options(self) -> Sequence[connector_pb2.CapabilityDetailCredentialOption.ValueType]:
        return [
            CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_NO_PASSWORD,
            CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_RANDOM_PASSWORD,
        ]

    def account_creation_schema(self) -> connector_pb2.ConnectorAccountCreationSchema:
        schema = connector_pb2.ConnectorAccountCreationSchema()
        schema.field_map["login"].display_name = "Login"
        schema.field_map["login"].required = True
        return schema

    async def create_account(
        self, info: resource_pb2.AccountInfo, credentials: AccountCredentials
    ) -> CreateAccountResult:
        login = info.login
        if login in self.state.users:
            return CreateAccountResult("already_exists", user_res(login, self.state.users[login]))
        self.state.users[login] = login
        self.state.created.append((login, credentials))
        secrets = []
        if credentials.password:
            secrets.append(PlaintextSecret("password", credentials.password.encode()))
        return CreateAccountResult("success", user_res(login, login), secrets=secrets)


class ToyConnector(Connector):
    def __init__(self, state: ToyState | None = None) -> None:
        self.state = state or ToyState()
        self.closed = False
        self.validate_error: ConnectorError | None = None

    def metadata(self) -> connector_pb2.ConnectorMetadata:
        return connector_pb2.ConnectorMetadata(display_name="Toy", description="test connector")

    async def validate(self) -> list[Message]:
        if self.validate_error is not None:
            raise self.validate_error
        return []

    def syncers(self) -> Sequence[ResourceSyncer]:
        return [Users(self.state), Groups(self.state)]

    def account_manager(self) -> AccountManager | None:
        return ToyAccounts(self.state)

    async def close(self) -> None:
        self.closed = True
