"""A small in-memory connector for service-mode tests and the demo fallback, and a daemon entry point.

`python -m connector.service.testing_app` runs the real daemon (`run_daemon`, signal handling included)
around this connector, configured like any app through BATON_* variables. Tests use it to send SIGTERM to a
real process. A few TOY_* variables slow the connector down or shrink the daemon's timing:

  TOY_LIST_DELAY    seconds each resource listing page sleeps (a long sync)
  TOY_GRANT_DELAY   seconds each grant/revoke sleeps (a long provisioning task)
  TOY_FAST          "1": test timings (polls every 50 ms, heartbeats from 50 ms, quick retries)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message

from connector.pb.c1.connector.v2 import connector_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import ConnectorError, RateLimitInfo, UpstreamError
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
from connector.service.daemon import DaemonOptions, run_daemon
from connector.service.scheduler import SchedulerConfig
from connector.service.tasks import TaskConfig
from connector.service.timer import Timer

USER = model.resource_type("user", "User", [model.Trait.TRAIT_USER])
GROUP = model.resource_type("group", "Group", [model.Trait.TRAIT_GROUP])
CredOpt = connector_pb2.CapabilityDetailCredentialOption


@dataclass
class ToyState:
    users: dict[str, str] = field(
        default_factory=lambda: {"alice": "Alice", "bob": "Bob", "carol": "Carol", "dave": "Dave"}
    )
    members: dict[str, set[str]] = field(
        default_factory=lambda: {"eng": {"alice", "bob"}, "ops": {"carol"}, "sales": set()}
    )
    # group id -> groups whose members inherit its membership (expandable grants), e.g. {"ops": {"eng"}}
    nested: dict[str, set[str]] = field(default_factory=dict)
    list_delay: float = 0.0
    grant_delay: float = 0.0
    # When set, resource listings and grant/revoke calls wait for it (a test opens it when it is ready).
    gate: asyncio.Event | None = None
    # group id -> error raised by grant/revoke on it, or by listing its grants (failure injection)
    fail_group: dict[str, Exception] = field(default_factory=dict)
    fail_grant_listing: dict[str, Exception] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    # grant/revoke calls running right now, and the most seen at once
    in_flight: int = 0
    max_in_flight: int = 0
    created: list[tuple[str, AccountCredentials]] = field(default_factory=list)


def user_res(uid: str, name: str) -> Resource:
    return model.user_resource(name, USER, uid, model.user_trait(emails=[f"{uid}@example.com"], login=uid))


def group_res(gid: str) -> Resource:
    return model.group_resource(gid.capitalize(), GROUP, gid)


async def _pause(state: ToyState, delay: float) -> None:
    if state.gate is not None:
        await state.gate.wait()
    if delay:
        await asyncio.sleep(delay)


class Users(ResourceSyncer):
    resource_type = USER

    def __init__(self, state: ToyState) -> None:
        self.state = state

    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        await _pause(self.state, self.state.list_delay)
        return Page([user_res(u, n) for u, n in sorted(self.state.users.items())])

    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]:
        return Page()

    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]:
        return Page()


class Groups(ResourceSyncer, GrantProvisioner, ResourceGetter):
    resource_type = GROUP

    def __init__(self, state: ToyState) -> None:
        self.state = state

    async def get(self, resource_id: ResourceId, parent: ResourceId | None) -> Resource:
        """One group by id (targeted syncs)."""
        self.state.calls.append(f"get group {resource_id.resource}")
        if resource_id.resource not in self.state.members:
            raise ConnectorError(grpc.StatusCode.NOT_FOUND, f"group {resource_id.resource} not found")
        return group_res(resource_id.resource)

    async def list(self, parent: ResourceId | None, page_token: str) -> Page[Resource]:
        await _pause(self.state, self.state.list_delay)
        return Page([group_res(g) for g in sorted(self.state.members)])

    async def entitlements(self, resource: Resource, page_token: str) -> Page[Entitlement]:
        return Page([model.assignment_entitlement(resource, "member", grantable_to=[USER])])

    async def grants(self, resource: Resource, page_token: str) -> Page[Grant]:
        if resource.id.resource in self.state.fail_grant_listing:
            raise self.state.fail_grant_listing[resource.id.resource]
        gid = resource.id.resource
        members = sorted(self.state.members.get(gid, set()))
        grants = [model.new_grant(resource, "member", model.resource_id("user", u)) for u in members]
        for inner in sorted(self.state.nested.get(gid, set())):
            expand = model.expandable([model.entitlement_id(model.resource_id("group", inner), "member")])
            grants.append(
                model.new_grant(resource, "member", model.resource_id("group", inner), annotations=[expand])
            )
        return Page(grants)

    async def _slow(self, gid: str) -> None:
        self.state.in_flight += 1
        self.state.max_in_flight = max(self.state.max_in_flight, self.state.in_flight)
        try:
            await _pause(self.state, self.state.grant_delay)
        finally:
            self.state.in_flight -= 1
        if gid in self.state.fail_group:
            raise self.state.fail_group[gid]
        if gid not in self.state.members:
            raise UpstreamError("toy", "POST", "/groups/{group}/members", 404, f"group {gid} does not exist")

    async def grant(self, principal: Resource, entitlement: Entitlement) -> GrantResult:
        gid, uid = entitlement.resource.id.resource, principal.id.resource
        self.state.calls.append(f"grant {gid} {uid}")
        await self._slow(gid)
        if uid in self.state.members[gid]:
            return GrantResult(already_exists=True)
        self.state.members[gid].add(uid)
        return GrantResult(grants=[model.new_grant(entitlement.resource, "member", principal.id)])

    async def revoke(self, grant: Grant) -> RevokeResult:
        gid, uid = grant.entitlement.resource.id.resource, grant.principal.id.resource
        self.state.calls.append(f"revoke {gid} {uid}")
        await self._slow(gid)
        if uid not in self.state.members[gid]:
            return RevokeResult(already_revoked=True)
        self.state.members[gid].discard(uid)
        return RevokeResult()


class Accounts(AccountManager):
    def __init__(self, state: ToyState) -> None:
        self.state = state

    def credential_options(self) -> Sequence[connector_pb2.CapabilityDetailCredentialOption.ValueType]:
        return [
            CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_NO_PASSWORD,
            CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_RANDOM_PASSWORD,
            CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_ENCRYPTED_PASSWORD,
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
        self.state.calls.append(f"create_account {login}")
        if login in self.state.users:
            return CreateAccountResult("already_exists", user_res(login, self.state.users[login]))
        self.state.users[login] = login.capitalize()
        self.state.created.append((login, credentials))
        secrets = [PlaintextSecret("password", credentials.password.encode())] if credentials.password else []
        return CreateAccountResult("success", user_res(login, self.state.users[login]), secrets=secrets)


class ToyConnector(Connector):
    supports_resource_delete = True

    def __init__(self, state: ToyState | None = None) -> None:
        self.state = state or ToyState()

    def metadata(self) -> connector_pb2.ConnectorMetadata:
        return connector_pb2.ConnectorMetadata(display_name="Toy", description="in-memory test connector")

    async def validate(self) -> list[Message]:
        return []

    def syncers(self) -> Sequence[ResourceSyncer]:
        return [Users(self.state), Groups(self.state)]

    def account_manager(self) -> AccountManager | None:
        return Accounts(self.state)

    async def delete_resource(self, resource_id: ResourceId, parent: ResourceId | None) -> list[Message]:
        self.state.calls.append(f"delete {resource_id.resource_type} {resource_id.resource}")
        if resource_id.resource_type != "user":
            raise ConnectorError(grpc.StatusCode.UNIMPLEMENTED, "only users can be deleted")
        if self.state.users.pop(resource_id.resource, None) is None:
            raise ConnectorError(grpc.StatusCode.NOT_FOUND, f"user {resource_id.resource} not found")
        for members in self.state.members.values():
            members.discard(resource_id.resource)
        return []


def rate_limited(message: str = "too many requests") -> UpstreamError:
    """An upstream 429 (maps to UNAVAILABLE with a RateLimitDescription detail)."""
    return UpstreamError(
        "toy", "POST", "/groups/{group}/members", 429, message, rate_limit=RateLimitInfo(limit=10)
    )


class RecordingTimer(Timer):
    """A timer for tests: records every wait as (purpose, seconds), really sleeps only
    clamp(seconds x `scale`, `floor`, `cap`) and moves its clock forward by the full amount, so production
    schedules (minutes of backoff) run in milliseconds and can be asserted exactly."""

    def __init__(self, scale: float = 0.0, floor: float = 0.002, cap: float = 0.05) -> None:
        self.scale = scale
        self.floor = floor
        self.cap = cap
        self.waits: list[tuple[str, float]] = []
        self.skipped = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    async def sleep(self, seconds: float, purpose: str) -> None:
        self.waits.append((purpose, seconds))
        if seconds <= 0:
            return
        real = min(max(seconds * self.scale, self.floor), self.cap, seconds)
        await asyncio.sleep(real)
        self.skipped += seconds - real

    def of(self, purpose: str) -> list[float]:
        """The waits recorded for `purpose`, in order (rounded to the millisecond)."""
        return [round(s, 3) for p, s in self.waits if p == purpose]


def fast_options() -> DaemonOptions:
    """Test timings for the daemon (also used by the demo, which should finish in seconds)."""
    return DaemonOptions(
        scheduler=SchedulerConfig(
            hello_backoff_initial=0.05,
            hello_backoff_max=0.2,
            poll_default=0.05,
            poll_min=0.05,
            error_backoff_unit=0.05,
            error_backoff_max=0.5,
            shutdown_finish_reserve=1.0,
        ),
        tasks=TaskConfig(
            heartbeat_min=0.05,
            heartbeat_default=0.5,
            upload_retry_unit=0.05,
            finish_backoff_initial=0.05,
            finish_backoff_max=0.2,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from connector.ops.logging import configure_logging
    from connector.ops.settings import BatonSettings, SettingsError, parse_settings, secret_values

    try:
        settings = parse_settings(BatonSettings, list(sys.argv[1:] if argv is None else argv))
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, secret_values(settings))
    state = ToyState(
        list_delay=float(os.environ.get("TOY_LIST_DELAY", "0") or 0),
        grant_delay=float(os.environ.get("TOY_GRANT_DELAY", "0") or 0),
    )
    opts = fast_options() if os.environ.get("TOY_FAST") == "1" else DaemonOptions()
    return asyncio.run(run_daemon(lambda: ToyConnector(state), settings, options=opts, app_name="baton-toy"))


if __name__ == "__main__":
    sys.exit(main())
