"""Provisioning through ConnectorRuntime (in process) against the sandbox: grants, revokes, accounts."""

from __future__ import annotations

import json
import string

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from google.protobuf import struct_pb2

from connector.apps.confluence_datacenter.connector import ConfluenceConnector
from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    connector_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.server import SandboxConfig
from connector.sdk import model
from connector.sdk.crypto import (
    PROVIDER_JWK,
    CredentialHelper,
    PrivateKey,
    decrypt_encrypted_data,
    encrypt_password_for,
    new_client_secret,
    public_jwk,
)
from connector.sdk.errors import ConnectorError
from connector.sdk.runtime import ConnectorRuntime
from tests.test_confluence_support import LEGACY_SLUGS, SLUGS, running, settings_for, sync_all, user_id

CredOpt = connector_pb2.CapabilityDetailCredentialOption


def _res(type_id: str, rid: str, name: str | None = None) -> resource_pb2.Resource:
    return model.new_resource(name or rid, type_id, rid)


def _entitlement(type_id: str, rid: str, slug: str) -> entitlement_pb2.Entitlement:
    return entitlement_pb2.Entitlement(id=f"{type_id}:{rid}:{slug}", resource=_res(type_id, rid), slug=slug)


def _grant_req(
    type_id: str, rid: str, slug: str, principal: resource_pb2.Resource
) -> grant_pb2.GrantManagerServiceGrantRequest:
    return grant_pb2.GrantManagerServiceGrantRequest(
        entitlement=_entitlement(type_id, rid, slug), principal=principal
    )


def _revoke_req(
    type_id: str, rid: str, slug: str, principal: resource_pb2.Resource
) -> grant_pb2.GrantManagerServiceRevokeRequest:
    ent = _entitlement(type_id, rid, slug)
    grant = grant_pb2.Grant(
        id=f"{ent.id}:{principal.id.resource_type}:{principal.id.resource}",
        entitlement=ent,
        principal=principal,
    )
    return grant_pb2.GrantManagerServiceRevokeRequest(grant=grant)


def _has(annotations: object, kind: type) -> bool:
    return model.has_annotation(annotations, kind)  # type: ignore[arg-type]


SCHEMES = pytest.mark.parametrize("legacy", [False, True], ids=["default-ids", "legacy-ids"])


@SCHEMES
@pytest.mark.parametrize("version", ["7.19", "8.5", "9.2"])
async def test_group_membership_grant_and_revoke_are_idempotent(version: str, legacy: bool) -> None:
    data = sandbox_data.small()
    group = data.groups["qa/automation"]
    user = next(u for u in data.users.values() if u.licensed and not group.has(u.username))
    uid = user_id(data, user.username, legacy=legacy)
    args = ["--legacy-ids"] if legacy else []
    async with running(version, data=data, args=args) as (sandbox, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        principal = _res("user", uid)
        first = await rt.grant(_grant_req("group", group.name, "member", principal))
        # 7.19 has no membership REST: the legacy remote API does the write.
        rest = sandbox.stats.by_route["PUT /rest/api/user/*/group/*"]
        rpc = sandbox.stats.by_route["POST /rpc/json-rpc/confluenceservice-v2/*"]
        assert (rest, rpc > 1) == ((0, True) if version == "7.19" else (1, False))
        assert group.has(user.username)
        assert not _has(first.annotations, annotation_grant_pb2.GrantAlreadyExists)
        assert [g.id for g in first.grants] == [f"group:qa/automation:member:user:{uid}"]
        again = await rt.grant(_grant_req("group", group.name, "member", principal))
        assert _has(again.annotations, annotation_grant_pb2.GrantAlreadyExists)

        revoked = await rt.revoke(_revoke_req("group", group.name, "member", principal))
        assert not group.has(user.username)
        assert not _has(revoked.annotations, annotation_grant_pb2.GrantAlreadyRevoked)
        again_revoked = await rt.revoke(_revoke_req("group", group.name, "member", principal))
        assert _has(again_revoked.annotations, annotation_grant_pb2.GrantAlreadyRevoked)


async def test_group_membership_only_for_users_and_existing_accounts() -> None:
    async with running("9.2") as (_, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        with pytest.raises(ConnectorError) as err:
            await rt.grant(_grant_req("group", "Dev Ops", "member", _res("group", "qa/automation")))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ConnectorError) as err:
            await rt.grant(_grant_req("group", "Dev Ops", "member", _res("user", "nobody-here")))
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert "nobody-here" in err.value.message
        # A username is no user id unless --legacy-ids says so.
        with pytest.raises(ConnectorError) as err:
            await rt.grant(_grant_req("group", "Dev Ops", "member", _res("user", "admin")))
        assert err.value.code == grpc.StatusCode.NOT_FOUND


@SCHEMES
@pytest.mark.parametrize("version", ["7.19", "8.5", "9.2"])
@pytest.mark.parametrize("kind", ["user", "group"])
async def test_space_permission_grant_and_revoke(version: str, kind: str, legacy: bool) -> None:
    data = sandbox_data.small()
    slugs = LEGACY_SLUGS if legacy else SLUGS
    view, edit = slugs["VIEWSPACE"], slugs["EDITSPACE"]
    space = "SP0002"
    if kind == "user":
        name = next(
            u.username
            for u in data.users.values()
            if ("VIEWSPACE", "user", u.username) not in data.permissions[space]
        )
    else:
        name = "Dev Ops"
        data.permissions[space] = [p for p in data.permissions[space] if p[2] != name]
    principal = _res(kind, user_id(data, name, legacy=legacy) if kind == "user" else name)
    pid = principal.id.resource
    args = ["--legacy-ids"] if legacy else []
    async with running(version, data=data, args=args) as (sandbox, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        for slug, key in ((view, "VIEWSPACE"), (edit, "EDITSPACE")):
            res = await rt.grant(_grant_req("space", space, slug, principal))
            assert (key, kind, name) in data.permissions[space]
            assert not _has(res.annotations, annotation_grant_pb2.GrantAlreadyExists)
            grant = res.grants[0]
            assert grant.id == f"space:{space}:{slug}:{kind}:{pid}"
            expandable = model.find_annotation(grant.annotations, annotation_grant_pb2.GrantExpandable)
            assert (expandable is not None) == (kind == "group")
            res = await rt.grant(_grant_req("space", space, slug, principal))
            assert _has(res.annotations, annotation_grant_pb2.GrantAlreadyExists)

        rev = await rt.revoke(_revoke_req("space", space, edit, principal))
        assert ("EDITSPACE", kind, name) not in data.permissions[space]
        assert ("VIEWSPACE", kind, name) in data.permissions[space]
        assert not _has(rev.annotations, annotation_grant_pb2.GrantAlreadyRevoked)
        rev = await rt.revoke(_revoke_req("space", space, edit, principal))
        assert _has(rev.annotations, annotation_grant_pb2.GrantAlreadyRevoked)
        rest_writes = sum(
            n for route, n in sandbox.stats.by_route.items() if route.endswith(("/grant", "/revoke"))
        )
        assert rest_writes == (3 if version == "9.2" else 0)


async def test_rest_space_grant_needs_view_first_and_says_so() -> None:
    data = sandbox_data.small()
    user = next(
        u.username
        for u in data.users.values()
        if ("VIEWSPACE", "user", u.username) not in data.permissions["ENG"]
    )
    async with running("9.2", data=data) as (_, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        with pytest.raises(ConnectorError) as err:
            await rt.grant(_grant_req("space", "ENG", "delete-page", _res("user", user_id(data, user))))
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "space:ENG:read-space" in err.value.message
        # A slug of the other scheme is named as such, not just "unknown".
        with pytest.raises(ConnectorError) as err:
            await rt.grant(_grant_req("space", "ENG", "view", _res("user", user_id(data, user))))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "legacy-scheme slug" in err.value.message and "--legacy-ids" in err.value.message
    assert ("REMOVEPAGE", "user", user) not in data.permissions["ENG"]


async def test_provisioning_is_gated_and_deprovisioning_refused() -> None:
    async with running("9.2") as (_, connector):
        gated = ConnectorRuntime(connector, provisioning=False)
        with pytest.raises(ConnectorError) as err:
            await gated.grant(_grant_req("group", "Dev Ops", "member", _res("user", "admin")))
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION

        rt = ConnectorRuntime(connector, provisioning=True)
        with pytest.raises(ConnectorError) as err:
            await rt.delete_resource(
                resource_pb2.DeleteResourceRequest(resource_id=model.resource_id("user", "user00004"))
            )
    assert err.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert "must be deprovisioned in Confluence" in err.value.message


# --- account creation -----------------------------------------------------------------------------


def _account(username: str, email: str, display: str) -> resource_pb2.AccountInfo:
    profile = struct_pb2.Struct()
    profile.update({"username": username, "email": email, "display_name": display})
    return resource_pb2.AccountInfo(login=username, profile=profile)


def _jwk_config(key: PrivateKey) -> resource_pb2.EncryptionConfig:
    return resource_pb2.EncryptionConfig(
        provider=PROVIDER_JWK,
        jwk_public_key_config=resource_pb2.EncryptionConfig.JWKPublicKeyConfig(
            pub_key=json.dumps(public_jwk(key)).encode()
        ),
    )


async def test_metadata_advertises_schema_and_credential_options() -> None:
    async with running("9.2") as (_, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        md = (await rt.get_metadata(connector_pb2.ConnectorServiceGetMetadataRequest())).metadata
    assert md.display_name == "Confluence Data Center"
    assert set(md.account_creation_schema.field_map) == {"username", "email", "display_name"}
    assert all(f.required for f in md.account_creation_schema.field_map.values())
    prov = md.capabilities.credential_details.capability_account_provisioning
    assert list(prov.supported_credential_options) == [
        CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_NO_PASSWORD,
        CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_RANDOM_PASSWORD,
        CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_ENCRYPTED_PASSWORD,
    ]
    assert prov.preferred_credential_option == CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_NO_PASSWORD
    user_caps = next(c for c in md.capabilities.resource_type_capabilities if c.resource_type.id == "user")
    assert connector_pb2.CAPABILITY_ACCOUNT_PROVISIONING in user_caps.capabilities
    assert connector_pb2.CAPABILITY_RESOURCE_DELETE not in user_caps.capabilities


async def test_create_account_without_password_asks_confluence_to_email_the_user() -> None:
    data = sandbox_data.small()
    async with running("8.5", data=data) as (_, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        resp = await rt.create_account(
            resource_pb2.CreateAccountRequest(
                account_info=_account("new.hire", "new.hire@example.com", "New Hire"),
                credential_options=resource_pb2.CredentialOptions(
                    no_password=resource_pb2.CredentialOptions.NoPassword()
                ),
            )
        )
    created = data.users["new.hire"]
    assert created.password is None and created.notify_via_email
    assert created.email == "new.hire@example.com" and created.display_name == "New Hire"
    assert resp.WhichOneof("result") == "success"
    assert resp.success.resource.id.resource == created.user_key
    assert not resp.encrypted_data
    async with running("8.5", data=data, args=["--legacy-ids"]) as (_, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        resp = await rt.create_account(
            resource_pb2.CreateAccountRequest(
                account_info=_account("old.style", "old.style@example.com", "Old Style"),
                credential_options=resource_pb2.CredentialOptions(
                    no_password=resource_pb2.CredentialOptions.NoPassword()
                ),
            )
        )
    assert resp.success.resource.id.resource == "old.style"


async def test_create_account_with_random_password_returns_it_encrypted_to_each_recipient() -> None:
    data = sandbox_data.small()
    okp = ed25519.Ed25519PrivateKey.generate()
    p256 = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    options = resource_pb2.CredentialOptions(
        random_password=resource_pb2.CredentialOptions.RandomPassword(
            length=24,
            constraints=[resource_pb2.PasswordConstraint(char_set=string.digits, min_count=3)],
        )
    )
    async with running("9.2", data=data) as (sandbox, connector):
        rt = ConnectorRuntime(connector, provisioning=True, credentials=CredentialHelper(None))
        resp = await rt.create_account(
            resource_pb2.CreateAccountRequest(
                account_info=_account("rnd.user", "rnd@example.com", "Random User"),
                credential_options=options,
                encryption_configs=[_jwk_config(okp), _jwk_config(p256), _jwk_config(rsa_key)],
            )
        )
        assert resp.WhichOneof("result") == "success"
        received = data.users["rnd.user"].password
        assert received is not None and len(received) == 24
        assert sum(c in string.digits for c in received) >= 3
        assert len(resp.encrypted_data) == 3
        keys: tuple[PrivateKey, ...] = (okp, p256, rsa_key)
        decrypted = [
            decrypt_encrypted_data(item, key).decode()
            for item, key in zip(resp.encrypted_data, keys, strict=True)
        ]
        assert decrypted == [received] * 3
        for item in resp.encrypted_data:
            assert received.encode() not in item.encrypted_bytes
        # What each recipient decrypts is a working Confluence password for the new account.
        async with httpx.AsyncClient(auth=("rnd.user", decrypted[0])) as http:
            me = await http.get(sandbox.base_url + "/rest/api/user/current")
        assert me.status_code == 200 and me.json()["username"] == "rnd.user"


async def test_create_account_with_encrypted_password_uses_the_supplied_one() -> None:
    data = sandbox_data.small()
    _, key = new_client_secret()
    async with running("9.2", data=data) as (sandbox, connector):
        rt = ConnectorRuntime(connector, provisioning=True, credentials=CredentialHelper(key))
        resp = await rt.create_account(
            resource_pb2.CreateAccountRequest(
                account_info=_account("enc.user", "enc@example.com", "Encrypted User"),
                credential_options=encrypt_password_for(key, "Chosen-by-C1-42!"),
            )
        )
        assert resp.WhichOneof("result") == "success"
        assert data.users["enc.user"].password == "Chosen-by-C1-42!"
        assert not data.users["enc.user"].notify_via_email
        assert not resp.encrypted_data  # the requester chose it: nothing is sent back
        async with httpx.AsyncClient(auth=("enc.user", "Chosen-by-C1-42!")) as http:
            me = await http.get(sandbox.base_url + "/rest/api/user/current")
        assert me.status_code == 200 and me.json()["username"] == "enc.user"


async def test_create_account_errors_are_clear() -> None:
    data = sandbox_data.small()
    no_password = resource_pb2.CredentialOptions(no_password=resource_pb2.CredentialOptions.NoPassword())
    async with running("9.2", data=data) as (_, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        dup = await rt.create_account(
            resource_pb2.CreateAccountRequest(
                account_info=_account("admin", "x@example.com", "Dup"), credential_options=no_password
            )
        )
        assert dup.WhichOneof("result") == "already_exists"
        assert dup.already_exists.resource.id.resource == data.users["admin"].user_key
        with pytest.raises(ConnectorError) as err:
            await rt.create_account(
                resource_pb2.CreateAccountRequest(
                    account_info=_account("Bad Name", "b@example.com", "Bad"), credential_options=no_password
                )
            )
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "lowercase" in err.value.message
    async with running("7.19") as (_, old):
        rt = ConnectorRuntime(old, provisioning=True)
        with pytest.raises(ConnectorError) as err:
            await rt.create_account(
                resource_pb2.CreateAccountRequest(
                    account_info=_account("new.user", "n@example.com", "New"), credential_options=no_password
                )
            )
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "8.4" in err.value.message


async def test_json_rpc_writes_refusing_tokens_say_to_use_basic_auth() -> None:
    data = sandbox_data.small()
    user = next(u for u in data.users.values() if u.licensed and not data.groups["Dev Ops"].has(u.username))
    config = SandboxConfig(version="7.19", rpc_accepts_bearer=False)
    async with running("7.19", data=data, config=config) as (_, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        with pytest.raises(ConnectorError) as member_err:
            await rt.grant(_grant_req("group", "Dev Ops", "member", _res("user", user.user_key)))
        with pytest.raises(ConnectorError) as space_err:
            await rt.grant(_grant_req("space", "ENG", "read-space", _res("user", user.user_key)))
    assert member_err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "--username/--password" in member_err.value.message and "Dev Ops" in member_err.value.message
    assert space_err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "JSON-RPC remote API" in space_err.value.message
    assert not data.groups["Dev Ops"].has(user.username)
    basic = ("--username", "admin", "--password", "admin")
    async with running("7.19", data=data, config=config, args=basic, token=None) as (_, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        await rt.grant(_grant_req("group", "Dev Ops", "member", _res("user", user.user_key)))
    assert data.groups["Dev Ops"].has(user.username)


@pytest.mark.parametrize("version", ["7.19", "8.5", "9.2"])
async def test_a_user_renamed_since_the_sync_is_provisioned_by_its_user_key(version: str) -> None:
    data = sandbox_data.small()
    # The space whose permissions most users hold directly (each would cost a lookup if resolved one by one).
    space = max(data.spaces, key=lambda k: sum(1 for _, kind, _n in data.permissions[k] if kind == "user"))
    holders = {n for _, kind, n in data.permissions[space] if kind == "user"}
    assert len(holders) > 1
    user = next(
        u
        for u in data.users.values()
        if u.active
        and u.licensed
        and not data.groups["Dev Ops"].has(u.username)
        and ("VIEWSPACE", "user", u.username) not in data.permissions[space]
    )
    async with running(version, data=data) as (sandbox, connector):
        rt = ConnectorRuntime(connector, provisioning=True)
        await sync_all(connector)  # the connector has seen the old username
        data.rename_user(user.username, "renamed.user")
        sandbox.stats.reset()
        principal = _res("user", user.user_key)
        await rt.grant(_grant_req("group", "Dev Ops", "member", principal))
        await rt.grant(_grant_req("space", space, "read-space", principal))
        again = await rt.grant(_grant_req("space", space, "read-space", principal))
        assert _has(again.annotations, annotation_grant_pb2.GrantAlreadyExists)
        # A daemon that has not synced yet (no usernames known): today's username is asked once for the
        # write that needs it, never once per holder of the permission.
        fresh = ConfluenceConnector(settings_for(sandbox))
        try:
            sandbox.stats.reset()
            rev = await ConnectorRuntime(fresh, provisioning=True).revoke(
                _revoke_req("space", space, "read-space", principal)
            )
            lookups = sandbox.stats.by_route["GET /rest/api/user"]
        finally:
            await fresh.close()
    assert data.groups["Dev Ops"].has("renamed.user")
    assert ("VIEWSPACE", "user", "renamed.user") not in data.permissions[space]
    assert not _has(rev.annotations, annotation_grant_pb2.GrantAlreadyRevoked)
    assert lookups == (0 if version == "9.2" else 1)
