"""Provisioning through the c1.connector.v2 surface (in process) against the sandbox: group membership,
workspace roles for users and groups, account creation by invitation and by SCIM."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from connector.apps.atlassian.connector import build_connector
from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    connector_pb2,
    entitlement_pb2,
    resource_pb2,
)
from connector.sandbox.atlassian.data import OrgState
from connector.sandbox.atlassian.server import start_atlassian_sandbox
from connector.sdk import model
from connector.sdk.errors import ConnectorError
from connector.sdk.runtime import ConnectorRuntime
from tests.test_atlassian_support import (
    SMALL,
    Env,
    atlassian_env,
    entitlement,
    grant,
    group_ref,
    list_all,
    revoke,
    settings_for,
    user_ref,
)

CredOpt = connector_pb2.CapabilityDetailCredentialOption
MEMBERSHIPS = "POST /admin/v2/orgs/{org_id}/directories/{directory_id}/groups/{group_id}/memberships"
ROLE_ASSIGN = "POST /admin/v1/orgs/{org_id}/users/{account_id}/roles/assign"


def already_exists(resp: object) -> bool:
    return model.has_annotation(resp.annotations, annotation_grant_pb2.GrantAlreadyExists)  # type: ignore[attr-defined]


def already_revoked(resp: object) -> bool:
    return model.has_annotation(resp.annotations, annotation_grant_pb2.GrantAlreadyRevoked)  # type: ignore[attr-defined]


def active_user(st: OrgState, *, not_in: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    return next(
        u.account_id
        for u in st.users.values()
        if u.status == "active" and u.account_type == "atlassian" and u.account_id not in not_in
    )


async def resource(env: Env, type_id: str, object_id: str) -> resource_pb2.Resource:
    for res in await list_all(env.runtime, type_id):
        if res.id.resource == object_id:
            return res
    raise AssertionError(f"{type_id} {object_id} not listed")


async def member_entitlement(env: Env, *, synced: bool) -> tuple[str, entitlement_pb2.Entitlement]:
    st = env.sandbox.state
    gid = next(g.id for g in st.groups.values() if g.external_synced == synced)
    return gid, await entitlement(env.runtime, await resource(env, "group", gid), "member")


async def role_entitlement(env: Env, type_key: str, role: str) -> tuple[str, entitlement_pb2.Entitlement]:
    st = env.sandbox.state
    ws = next(
        w for w in st.workspaces.values() if w.type_key == type_key and w.capacity > st.seat_usage(w.id)
    )
    return ws.id, await entitlement(env.runtime, await resource(env, "workspace", ws.id), f"role:{role}")


# --- group membership ---------------------------------------------------------------------------------


@pytest.mark.parametrize("duplicate_mode", ["idempotent", "conflict"])
async def test_group_membership_grant_and_revoke_are_idempotent(duplicate_mode: str) -> None:
    async with atlassian_env(duplicate_mode=duplicate_mode) as env:
        st = env.sandbox.state
        gid, ent = await member_entitlement(env, synced=False)
        uid = active_user(st, not_in=st.members(gid))
        first = await grant(env.runtime, ent, user_ref(uid))
        assert uid in st.members(gid)
        assert not already_exists(first)
        assert [g.entitlement.id for g in first.grants] == [ent.id]
        assert first.grants[0].principal.id.resource == uid
        again = await grant(env.runtime, ent, user_ref(uid))
        assert already_exists(again) and uid in st.members(gid)
        gone = await revoke(env.runtime, ent, user_ref(uid))
        assert not already_revoked(gone) and uid not in st.members(gid)
        twice = await revoke(env.runtime, ent, user_ref(uid))
        assert already_revoked(twice) and uid not in st.members(gid)


async def test_idp_synced_groups_refuse_membership_changes() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        gid, ent = await member_entitlement(env, synced=True)
        uid = active_user(st, not_in=st.members(gid))
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, ent, user_ref(uid))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "identity provider" in info.value.message
        member = next(iter(st.members(gid)))
        with pytest.raises(ConnectorError) as info:
            await revoke(env.runtime, ent, user_ref(member))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert uid not in st.members(gid) and member in st.members(gid)
        assert env.sandbox.stats.by_route[MEMBERSHIPS] == 0  # refused before calling Atlassian


async def test_membership_errors_name_what_is_missing() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        gid, ent = await member_entitlement(env, synced=False)
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, ent, user_ref("no-such-account"))
        assert info.value.code == grpc.StatusCode.NOT_FOUND and "no-such-account" in info.value.message
        ghost = entitlement_pb2.Entitlement()
        ghost.CopyFrom(ent)
        ghost.resource.id.resource = "00000000-0000-4000-8000-000000000000"
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, ghost, user_ref(active_user(st)))
        assert info.value.code == grpc.StatusCode.NOT_FOUND and "ADMIN-404-10" in info.value.message
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, ent, group_ref(gid))
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_provisioning_is_gated() -> None:
    async with atlassian_env(provisioning=False) as env:
        _, ent = await member_entitlement(env, synced=False)
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, ent, user_ref(active_user(env.sandbox.state)))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert env.sandbox.stats.by_route[MEMBERSHIPS] == 0


# --- workspace roles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("duplicate_mode", ["idempotent", "conflict"])
async def test_workspace_role_for_a_user(duplicate_mode: str) -> None:
    async with atlassian_env(duplicate_mode=duplicate_mode) as env:
        st = env.sandbox.state
        ws, ent = await role_entitlement(env, "confluence", "atlassian/user")
        uid = active_user(st, not_in=st.effective_users(ws, "atlassian/user"))
        first = await grant(env.runtime, ent, user_ref(uid))
        assert not already_exists(first)
        assert st.roles.has("user", uid, ws, "atlassian/user")
        assert first.grants[0].entitlement.id == f"workspace:{ws}:role:atlassian/user"
        assert first.grants[0].id == f"workspace:{ws}:role:atlassian/user:user:{uid}"
        assert already_exists(await grant(env.runtime, ent, user_ref(uid)))
        assert not already_revoked(await revoke(env.runtime, ent, user_ref(uid)))
        assert not st.roles.has("user", uid, ws, "atlassian/user")
        assert already_revoked(await revoke(env.runtime, ent, user_ref(uid)))


async def test_workspace_role_for_a_group_expands_to_members() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        ws, ent = await role_entitlement(env, "confluence", "atlassian/guest")
        gid = next(
            g for g in st.groups if st.members(g) and not st.roles.has("group", g, ws, "atlassian/guest")
        )
        resp = await grant(env.runtime, ent, group_ref(gid))
        assert not already_exists(resp)
        assert st.roles.has("group", gid, ws, "atlassian/guest")
        exp = model.find_annotation(resp.grants[0].annotations, annotation_grant_pb2.GrantExpandable)
        assert exp is not None and list(exp.entitlement_ids) == [f"group:{gid}:member"]
        assert already_exists(await grant(env.runtime, ent, group_ref(gid)))
        assert not already_revoked(await revoke(env.runtime, ent, group_ref(gid)))
        assert not st.roles.has("group", gid, ws, "atlassian/guest")
        assert already_revoked(await revoke(env.runtime, ent, group_ref(gid)))


async def test_role_endpoints_not_enabled_ask_for_atlassian_support() -> None:
    async with atlassian_env(disabled_endpoints=frozenset({"roles"})) as env:
        st = env.sandbox.state
        ws, ent = await role_entitlement(env, "confluence", "atlassian/user")
        uid = active_user(st)
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, ent, user_ref(uid))
        err = info.value
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "ADMIN-UAM-403-1" in err.message and "Atlassian Support" in err.message
        assert "Grant User Access" in err.message
        with pytest.raises(ConnectorError) as info:
            await revoke(env.runtime, ent, user_ref(uid))
        assert (
            info.value.code == grpc.StatusCode.FAILED_PRECONDITION
            and "Revoke User Access" in info.value.message
        )
        # Group role assignments are a different API that needs no enablement.
        ws, guest = await role_entitlement(env, "confluence", "atlassian/guest")
        gid = next(g for g in st.groups if not st.roles.has("group", g, ws, "atlassian/guest"))
        await grant(env.runtime, guest, group_ref(gid))
        assert st.roles.has("group", gid, ws, "atlassian/guest")


async def test_jira_admin_workspace_quirk_is_explained() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        ws = next(w for w in st.workspaces.values() if w.type_key == "jira-admin")
        ent = await entitlement(env.runtime, await resource(env, "workspace", ws.id), "role:atlassian/admin")
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, ent, user_ref(active_user(st)))
        err = info.value
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "ADMIN-UAM-400-5" in err.message and "Empty/Invalid Resource" in err.message
        assert "ID-8887" in err.message and "Atlassian Support" in err.message


async def test_documented_role_errors_are_failed_preconditions() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        conf, user_ent = await role_entitlement(env, "confluence", "atlassian/user")
        # A role the product does not offer (ADMIN-UAM-400-3).
        bad_role = entitlement_pb2.Entitlement()
        bad_role.CopyFrom(user_ent)
        bad_role.slug = "role:atlassian/customer"
        bad_role.id = f"workspace:{conf}:role:atlassian/customer"
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, bad_role, user_ref(active_user(st)))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "ADMIN-UAM-400-3" in info.value.message and "not available" in info.value.message
        # An inactive account (ADMIN-UAM-400-2).
        inactive = next(u.account_id for u in st.users.values() if u.status == "deactivated")
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, user_ent, user_ref(inactive))
        assert (
            info.value.code == grpc.StatusCode.FAILED_PRECONDITION and "ADMIN-UAM-400-2" in info.value.message
        )
        # No free seat (ADMIN-UAM-409-3).
        full = next(w for w in st.workspaces.values() if w.capacity == st.seat_usage(w.id))
        full_ent = await entitlement(
            env.runtime, await resource(env, "workspace", full.id), "role:atlassian/user"
        )
        outsider = active_user(st, not_in=st.seat_holders(full.id))
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, full_ent, user_ref(outsider))
        assert (
            info.value.code == grpc.StatusCode.FAILED_PRECONDITION and "ADMIN-UAM-409-3" in info.value.message
        )
        assert not st.roles.has("user", outsider, full.id, "atlassian/user")
        # An unknown account.
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, user_ent, user_ref("nobody-here"))
        assert info.value.code == grpc.StatusCode.NOT_FOUND


async def test_group_role_errors_name_the_problem() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        conf, user_ent = await role_entitlement(env, "confluence", "atlassian/user")
        gid = next(g for g in st.groups if st.members(g) and not st.roles.group_roles(g))
        bad_role = entitlement_pb2.Entitlement()
        bad_role.CopyFrom(user_ent)
        bad_role.slug = "role:atlassian/customer"
        bad_role.id = f"workspace:{conf}:role:atlassian/customer"
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, bad_role, group_ref(gid))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "ADMIN-UAM-400-3" in info.value.message and "not available" in info.value.message
        # A group whose members would exceed the product's seats.
        full = next(w for w in st.workspaces.values() if w.capacity == st.seat_usage(w.id))
        full_ent = await entitlement(
            env.runtime, await resource(env, "workspace", full.id), "role:atlassian/user"
        )
        outsiders = next(g for g in st.groups if st.members(g) - st.seat_holders(full.id))
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, full_ent, group_ref(outsiders))
        assert (
            info.value.code == grpc.StatusCode.FAILED_PRECONDITION and "ADMIN-UAM-409-3" in info.value.message
        )
        assert not st.roles.has("group", outsiders, full.id, "atlassian/user")
        with pytest.raises(ConnectorError) as info:
            await grant(env.runtime, user_ent, group_ref("00000000-0000-4000-8000-000000000000"))
        assert info.value.code == grpc.StatusCode.NOT_FOUND and "ADMIN-404-10" in info.value.message
        with pytest.raises(ConnectorError) as info:
            await revoke(env.runtime, user_ent, group_ref("00000000-0000-4000-8000-000000000000"))
        assert info.value.code == grpc.StatusCode.NOT_FOUND


async def test_revoke_right_after_grant_survives_replication_lag() -> None:
    async with atlassian_env(role_delay=0.3) as env:
        st = env.sandbox.state
        ws, ent = await role_entitlement(env, "confluence", "atlassian/user")
        uid = active_user(st, not_in=st.effective_users(ws, "atlassian/user"))
        await grant(env.runtime, ent, user_ref(uid))
        # Reads do not show the new role yet, but the revoke is still sent.
        await revoke(env.runtime, ent, user_ref(uid))
        await asyncio.sleep(0.35)
        st.roles.settle()
        assert uid not in st.effective_users(ws, "atlassian/user")
        assert env.sandbox.stats.by_route["POST /admin/v1/orgs/{org_id}/users/{account_id}/roles/revoke"] == 1


# --- account creation ------------------------------------------------------------------------------


def account_request(email: str, **extra: Any) -> resource_pb2.CreateAccountRequest:
    profile = struct_pb2.Struct()
    profile.update({"email": email, **extra})
    return resource_pb2.CreateAccountRequest(
        resource_type_id="user",
        account_info=resource_pb2.AccountInfo(profile=profile),
        credential_options=resource_pb2.CredentialOptions(
            no_password=resource_pb2.CredentialOptions.NoPassword()
        ),
    )


async def test_capabilities_advertise_no_password_and_the_schema() -> None:
    async with atlassian_env() as env:
        md = (await env.runtime.get_metadata(connector_pb2.ConnectorServiceGetMetadataRequest())).metadata
        opts = md.capabilities.credential_details.capability_account_provisioning
        no_password = (
            connector_pb2.CapabilityDetailCredentialOption.CAPABILITY_DETAIL_CREDENTIAL_OPTION_NO_PASSWORD
        )
        assert list(opts.supported_credential_options) == [no_password]
        assert opts.preferred_credential_option == no_password
        fields = md.account_creation_schema.field_map
        assert fields["email"].required and fields["email"].HasField("string_field")
        assert not fields["display_name"].required
        # The Go connector's fields, in its order, then this connector's own (all optional).
        go = ["userName", "email", "givenName", "familyName", "displayName"]
        ordered = sorted(fields, key=lambda k: fields[k].order)
        assert ordered[:5] == go
        assert ordered[5:] == ["display_name", "workspace", "role", "groups"]
        assert {k for k in fields if fields[k].required} == {"userName", "email"}
        assert fields["userName"].placeholder == "user@example.com"
        by_type = {
            c.resource_type.id: set(c.capabilities) for c in md.capabilities.resource_type_capabilities
        }
        cap = connector_pb2.Capability
        assert cap.CAPABILITY_ACCOUNT_PROVISIONING in by_type["user"]
        assert (
            cap.CAPABILITY_PROVISION in by_type["group"] and cap.CAPABILITY_PROVISION in by_type["workspace"]
        )
        assert cap.CAPABILITY_PROVISION not in by_type["api_token"]
        assert cap.CAPABILITY_PROVISION not in by_type["organization"]
        request = account_request("pw@acme.example")
        request.credential_options.CopyFrom(
            resource_pb2.CredentialOptions(
                random_password=resource_pb2.CredentialOptions.RandomPassword(length=16)
            )
        )
        with pytest.raises(ConnectorError) as info:
            await env.runtime.create_account(request)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_invite_creates_the_account_with_initial_role_and_groups() -> None:
    async with atlassian_env() as env:
        st = env.sandbox.state
        ws = next(w for w in st.workspaces.values() if w.type_key == "confluence")
        gid = next(g.id for g in st.groups.values() if not g.external_synced)
        synced = next(g.id for g in st.groups.values() if g.external_synced)
        resp = await env.runtime.create_account(
            account_request(
                "new.hire@acme.example", workspace=ws.id, role="atlassian/guest", groups=[gid, synced]
            )
        )
        assert resp.WhichOneof("result") == "success"
        account_id = resp.success.resource.id.resource
        created = st.users[account_id]
        assert created.email == "new.hire@acme.example"
        assert st.roles.has("user", account_id, ws.id, "atlassian/guest")
        assert account_id in st.members(gid)
        assert account_id not in st.members(synced)  # partial: the IdP group refused, the account stands
        again = await env.runtime.create_account(account_request("NEW.HIRE@acme.example"))
        assert again.WhichOneof("result") == "already_exists"
        assert again.already_exists.resource.id.resource == account_id


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"disabled_endpoints": frozenset({"invite"})}, "Invite User to Org"),
        ({"paid": False}, "paid Atlassian subscription"),
    ],
)
async def test_invite_refusals_are_failed_preconditions(options: dict[str, object], expected: str) -> None:
    async with atlassian_env(**options) as env:  # type: ignore[arg-type]
        with pytest.raises(ConnectorError) as info:
            await env.runtime.create_account(account_request("someone@acme.example"))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert expected in info.value.message
        assert env.sandbox.state.user_by_email("someone@acme.example") is None


async def test_scim_creates_and_links_accounts() -> None:
    sandbox = await start_atlassian_sandbox(spec=SMALL)
    settings = settings_for(
        sandbox, "--scim-base-url", sandbox.scim_base_url, BATON_SCIM_TOKEN=sandbox.scim_token
    )
    runtime = ConnectorRuntime(build_connector(settings), provisioning=True)
    try:
        st = sandbox.state
        await runtime.validate(connector_pb2.ConnectorServiceValidateRequest())
        resp = await runtime.create_account(
            account_request("scim.user@acme.example", display_name="Scim User")
        )
        assert resp.WhichOneof("result") == "success"
        account_id = resp.success.resource.id.resource
        assert st.users[account_id].management_source == "synced"
        assert st.users[account_id].name == "Scim User"
        assert [s.account_id for s in st.scim_users.values()] == [account_id]
        # The same user again: SCIM answers 409, which links rather than fails.
        again = await runtime.create_account(
            account_request("scim.user@acme.example", display_name="Scim User")
        )
        assert again.WhichOneof("result") == "already_exists"
        assert again.already_exists.resource.id.resource == account_id
        # An existing account that SCIM does not know yet is linked, not duplicated.
        existing = next(u for u in st.users.values() if u.email and u.status == "active")
        linked = await runtime.create_account(account_request(existing.email or ""))
        assert linked.success.resource.id.resource == existing.account_id
        assert len([u for u in st.users.values() if u.email == existing.email]) == 1
        assert sandbox.stats.by_route["POST /admin/v2/orgs/{org_id}/users/invite"] == 0
    finally:
        await runtime.close()
        await sandbox.stop()


async def test_bad_account_requests_are_invalid_arguments() -> None:
    async with atlassian_env() as env:
        with pytest.raises(ConnectorError) as info:
            await env.runtime.create_account(account_request("not-an-email"))
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def go_account_request(**profile: str) -> resource_pb2.CreateAccountRequest:
    request = account_request("")
    request.account_info.profile.Clear()
    request.account_info.profile.update(profile)
    return request


@pytest.mark.parametrize("extension", [True, False])
async def test_scim_account_with_the_go_connectors_fields(extension: bool) -> None:
    sandbox = await start_atlassian_sandbox(spec=SMALL, scim_extension=extension)
    settings = settings_for(
        sandbox, "--scim-base-url", sandbox.scim_base_url, BATON_SCIM_TOKEN=sandbox.scim_token
    )
    runtime = ConnectorRuntime(build_connector(settings), provisioning=True)
    try:
        st = sandbox.state
        resp = await runtime.create_account(
            go_account_request(
                userName="jane.go@acme.example",
                email="jane.go@acme.example",
                givenName="Jane",
                familyName="Go",
                displayName="Jane Go",
            )
        )
        assert resp.WhichOneof("result") == "success"
        (scim,) = st.scim_users.values()
        account_id = resp.success.resource.id.resource
        # The account id is the Atlassian one (from the SCIM extension, else looked up), never the SCIM id.
        assert account_id == scim.account_id != scim.id
        assert (scim.user_name, scim.email, scim.display_name) == (
            "jane.go@acme.example",
            "jane.go@acme.example",
            "Jane Go",
        )
        assert st.users[account_id].name == "Jane Go"
        lookups = sandbox.stats.by_route[
            "POST /admin/v2/orgs/{org_id}/directories/{directory_id}/users/search"
        ]
        assert (lookups == 0) == extension
        # givenName / familyName alone make the display name.
        named = await runtime.create_account(
            go_account_request(
                userName="ann.lee@acme.example",
                email="ann.lee@acme.example",
                givenName="Ann",
                familyName="Lee",
            )
        )
        assert st.users[named.success.resource.id.resource].name == "Ann Lee"
    finally:
        await runtime.close()
        await sandbox.stop()
