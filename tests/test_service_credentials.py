"""Client credentials, the client assertion, the token cache and rotation, against the sandbox tenant over
real TLS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from connector.ops.metrics import Metrics
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2
from connector.sandbox.tenant import TenantHandle, start_tenant
from connector.sandbox.tenant.keys import InvalidAssertion, verify_assertion
from connector.sdk.crypto import new_client_secret
from connector.service.credentials import (
    CredentialError,
    CredentialSource,
    TokenError,
    TokenSource,
    build_assertion,
    make_ssl_context,
    normalize_token_type,
    parse_client_id,
    parse_credentials,
)
from connector.service.tenant import TenantClient, TenantEndpoint, TenantError, root_certificates


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def tenant(tmp_path: Path) -> AsyncIterator[TenantHandle]:
    handle = await start_tenant(data_dir=tmp_path / "tenant", token_ttl=60)
    try:
        yield handle
    finally:
        await handle.close()


def token_source(
    handle: TenantHandle,
    source: CredentialSource,
    *,
    metrics: Metrics | None = None,
    mono: FakeClock | None = None,
) -> TokenSource:
    creds = source.load()
    endpoint = TenantEndpoint.resolve(creds.client_id, handle.address)
    kwargs = {"monotonic": mono} if mono is not None else {}
    return TokenSource(
        source,
        token_url=endpoint.token_url,
        verify=make_ssl_context(str(handle.ca_pem)),
        user_agent="tester baton-connectors/test",
        metrics=metrics,
        **kwargs,  # type: ignore[arg-type]
    )


def metric(metrics: Metrics, sample: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(sample, labels) or 0.0


# ---------------------------------------------------------------------------------------------- parsing


def test_client_id_is_split_on_the_first_at_and_slash() -> None:
    cid = parse_client_id("strange-hydra-68836@acme.conductor.one/pcc")
    assert (cid.client_name, cid.token_host, cid.audience) == (
        "strange-hydra-68836",
        "acme.conductor.one",
        "acme.conductor.one",
    )
    cid = parse_client_id("a@b@c.example:8443/x/y")
    assert (cid.client_name, cid.token_host, cid.audience) == ("a", "b@c.example:8443", "b@c.example")


@pytest.mark.parametrize("bad", ["no-at-sign/pcc", "name@host-without-use-case", "name@/pcc", ""])
def test_invalid_client_ids_are_refused_with_one_line(bad: str) -> None:
    with pytest.raises(CredentialError) as info:
        parse_client_id(bad)
    assert str(info.value).startswith("invalid client id") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "secret",
    [
        "secret-token:conductorone.com:v2:abc",
        "secret-token:conductorone.com:v1:not*base64",
        "secret-token:conductorone.com:v1:"
        + base64.urlsafe_b64encode(b'{"kty":"RSA"}').rstrip(b"=").decode(),
        "just-a-password-AAAAAAAA",
    ],
)
def test_invalid_secrets_never_echo_the_value(secret: str) -> None:
    with pytest.raises(CredentialError) as info:
        parse_credentials("n@h.example/pcc", secret)
    text = str(info.value)
    assert text.startswith("invalid client secret") and "\n" not in text
    assert secret not in text and secret.split(":")[-1] not in text


def test_assertion_has_exactly_the_go_sdk_header_and_claims(tenant: TenantHandle) -> None:
    creds = parse_credentials(tenant.client_id, tenant.client_secret)
    jws = build_assertion(creds, 1_700_000_000.7)
    head, body, _ = jws.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    assert set(header) == {"alg", "nonce"} and header["alg"] == "EdDSA"
    assert len(header["nonce"]) == 32 and int(header["nonce"], 16) >= 0
    assert claims == {
        "aud": "tenant.sandbox.conductor.one",
        "exp": 1_700_000_120,
        "iat": 1_700_000_000,
        "iss": tenant.client_id,
        "nbf": 1_699_999_880,
        "sub": tenant.client_id,
    }
    client = tenant.tenant.clients[tenant.client_id]
    verify_assertion(
        jws, client_id=tenant.client_id, audience=client.audience, keys=client.keys, now=1_700_000_000
    )
    with pytest.raises(InvalidAssertion):
        verify_assertion(
            jws, client_id=tenant.client_id, audience=client.audience, keys=client.keys, now=1_700_000_400
        )


def test_kid_header_only_when_the_secret_jwk_has_one() -> None:
    secret, _ = new_client_secret(kid="key-1")
    creds = parse_credentials("n@h.example/pcc", secret)
    header = json.loads(base64.urlsafe_b64decode(build_assertion(creds, 0).split(".")[0] + "=="))
    assert header["kid"] == "key-1"


def test_token_types_are_normalized_like_oauth2() -> None:
    assert [normalize_token_type(t) for t in ("bearer", "", "BEARER", "mac", "basic", "DPoP")] == [
        "Bearer",
        "Bearer",
        "Bearer",
        "MAC",
        "Basic",
        "DPoP",
    ]


def test_unreadable_or_empty_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="BATON_C1_CA_FILE"):
        root_certificates(str(tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_text("nothing here")
    with pytest.raises(CredentialError, match="no PEM certificate"):
        root_certificates(str(tmp_path / "empty.pem"))


def test_api_host_override_redirects_grpc_and_token_but_not_the_audience() -> None:
    cid = parse_client_id("n@acme.conductor.one/pcc")
    default = TenantEndpoint.resolve(cid, None)
    assert (default.target, default.token_url) == (
        "acme.conductor.one:443",
        "https://acme.conductor.one:443/auth/v1/token",
    )
    custom = TenantEndpoint.resolve(cid, "127.0.0.1:8443")
    assert (custom.target, custom.token_url) == ("127.0.0.1:8443", "https://127.0.0.1:8443/auth/v1/token")
    assert cid.audience == "acme.conductor.one"


# ---------------------------------------------------------------------------------------------- tokens


async def test_tokens_are_cached_until_ten_seconds_before_expiry(tenant: TenantHandle) -> None:
    mono = FakeClock()
    metrics = Metrics("test")
    ts = token_source(
        tenant,
        CredentialSource(client_id=tenant.client_id, client_secret=tenant.client_secret),
        metrics=metrics,
        mono=mono,
    )
    try:
        first = await ts.authorization()
        assert first.startswith("Bearer ")
        mono.now += 49.0  # token_ttl 60: still 11 s to go
        assert await ts.authorization() == first
        assert ts.exchanges == 1
        mono.now += 2.0  # inside the 10 s margin
        second = await ts.authorization()
        assert second != first and ts.exchanges == 2
        assert metric(metrics, "baton_token_refreshes_total", outcome="success") == 2
        record = tenant.tenant.token_requests[-1]
        assert record.ok and record.user_agent == "tester baton-connectors/test"
    finally:
        await ts.aclose()


async def test_refused_credentials_are_unauthenticated_and_unreachable_is_unavailable(
    tenant: TenantHandle,
) -> None:
    metrics = Metrics("test")
    ts = token_source(
        tenant,
        CredentialSource(client_id=tenant.client_id, client_secret=tenant.client_secret),
        metrics=metrics,
    )
    try:
        tenant.tenant.reject_tokens(1)
        with pytest.raises(TokenError) as info:
            await ts.authorization()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.message.startswith("failed to get token: 401 Unauthorized")
        assert tenant.client_secret not in info.value.message
        assert metric(metrics, "baton_auth_failures_total", where="token") == 1
    finally:
        await ts.aclose()
    address = tenant.address
    await tenant.close()
    creds = parse_credentials(tenant.client_id, tenant.client_secret)
    ts = TokenSource(
        CredentialSource(client_id=tenant.client_id, client_secret=tenant.client_secret),
        token_url=TenantEndpoint.resolve(creds.client_id, address).token_url,
        verify=make_ssl_context(str(tenant.ca_pem)) if tenant.ca_pem.exists() else True,
    )
    try:
        with pytest.raises(TokenError) as info:
            await ts.authorization()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        await ts.aclose()


async def test_rotated_secret_file_is_used_for_the_next_token(tenant: TenantHandle, tmp_path: Path) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(tenant.client_secret + "\n")
    metrics = Metrics("test")
    source = CredentialSource(client_id=tenant.client_id, client_secret_file=secret_file)
    ts = token_source(tenant, source, metrics=metrics)
    try:
        await ts.authorization()
        new_secret = tenant.rotate_secret()  # the old secret is now refused by the tenant
        # Kubernetes replaces the file behind a symlink; a plain rewrite changes mtime/size the same way.
        tmp = tmp_path / "client-secret.new"
        tmp.write_text(new_secret)
        os.replace(tmp, secret_file)
        header = await ts.authorization()
        assert header.startswith("Bearer ") and ts.exchanges == 2
        assert tenant.tenant.token_requests[-1].ok
        assert metric(metrics, "baton_credential_reloads_total", name="client_secret") == 1
        # A broken file (half-written, wrong content) never takes down working credentials.
        secret_file.write_text("garbage")
        ts.invalidate()
        assert (await ts.authorization()).startswith("Bearer ")
        assert ts.credentials.key.public_jwk == parse_credentials(tenant.client_id, new_secret).key.public_jwk
    finally:
        await ts.aclose()


async def test_unauthenticated_rpc_rereads_the_files_once_then_fails(
    tenant: TenantHandle, tmp_path: Path
) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(tenant.client_secret)
    metrics = Metrics("test")
    source = CredentialSource(client_id=tenant.client_id, client_secret_file=secret_file)
    ts = token_source(tenant, source, metrics=metrics)
    creds = source.load()
    endpoint = TenantEndpoint.resolve(creds.client_id, tenant.address)
    client = TenantClient(
        endpoint,
        ts,
        host_id="h",
        user_agent="tester baton-connectors/test",
        root_certificates=root_certificates(str(tenant.ca_pem)),
        metrics=metrics,
    )
    try:
        await client.get_task()
        # The tenant rotates the secret and revokes live tokens; the new secret appears in the file
        # without a change the stat check would see first (same size, same mtime).
        stat = secret_file.stat()
        old_secret = tenant.client_secret
        new_secret = tenant.rotate_secret(revoke_tokens=True)
        assert len(new_secret) == len(old_secret)
        secret_file.write_text(new_secret)
        os.utime(secret_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        resp = await client.get_task()  # UNAUTHENTICATED → drop token, re-read, retry: works
        assert isinstance(resp, baton_pb2.BatonServiceGetTaskResponse)
        assert metric(metrics, "baton_auth_failures_total", where="tenant") == 1
        codes = [r.code for r in tenant.tenant.rpcs if r.method == "GetTask"]
        assert codes == ["OK", "UNAUTHENTICATED", "OK"]

        tenant.tenant.revoke_tokens()
        tenant.tenant.reject_tokens(5)  # now nothing works: re-read once, then fail
        with pytest.raises(TenantError) as info:
            await client.get_task()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert [r.code for r in tenant.tenant.rpcs if r.method == "GetTask"][3:] == ["UNAUTHENTICATED"]
    finally:
        await client.close()
        await ts.aclose()


async def test_grpc_calls_carry_the_user_agent_and_bearer_token(tenant: TenantHandle) -> None:
    source = CredentialSource(client_id=tenant.client_id, client_secret=tenant.client_secret)
    ts = token_source(tenant, source)
    creds = source.load()
    client = TenantClient(
        TenantEndpoint.resolve(creds.client_id, tenant.address),
        ts,
        host_id="h",
        user_agent=f"{creds.client_id.client_name} baton-connectors/9.9",
        root_certificates=root_certificates(str(tenant.ca_pem)),
    )
    try:
        await client.get_task()
        await client.get_task()
        ua = tenant.tenant.rpcs[-1].user_agent
        assert ua.startswith(f"{creds.client_id.client_name} baton-connectors/9.9")
        assert ts.exchanges == 1  # one token, one long-lived channel
    finally:
        await client.close()
        await ts.aclose()


async def test_client_id_and_secret_can_both_come_from_files(tenant: TenantHandle, tmp_path: Path) -> None:
    (tmp_path / "id").write_text(tenant.client_id + "\n")
    (tmp_path / "secret").write_text(tenant.client_secret + "\n")
    settings = type("S", (), {"client_id": "", "client_secret": None})()
    source = CredentialSource.from_settings(
        settings,
        {"BATON_CLIENT_ID_FILE": str(tmp_path / "id"), "BATON_CLIENT_SECRET_FILE": str(tmp_path / "secret")},
    )
    assert source.has_client_id and source.watches_files
    ts = token_source(tenant, source)
    try:
        await ts.authorization()
        assert tenant.tenant.token_requests[-1].claims["iss"] == tenant.client_id
    finally:
        await ts.aclose()
    (tmp_path / "id").write_text("")
    with pytest.raises(CredentialError, match=r"BATON_CLIENT_ID_FILE .* is empty"):
        source.load()


@pytest.fixture
async def silent_token_url() -> AsyncIterator[str]:
    """A loopback endpoint that accepts connections and reads requests but never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/auth/v1/token"
    finally:
        for w in held:
            w.close()
        server.close()


async def test_a_token_endpoint_that_never_answers_fails_within_the_exchange_deadline(
    tenant: TenantHandle, silent_token_url: str
) -> None:
    source = CredentialSource(client_id=tenant.client_id, client_secret=tenant.client_secret)
    # The 300 s HTTP timeout does not apply to the exchange: 30 s at most, here shortened.
    assert TokenSource(source, token_url=silent_token_url, timeout=300)._exchange_timeout == 30
    ts = TokenSource(source, token_url=silent_token_url, timeout=300, exchange_timeout=0.5)
    try:
        async with asyncio.timeout(20):
            with pytest.raises(TokenError) as info:
                await ts.authorization()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert info.value.message == "failed to get token: no answer within 0.5 s"
    finally:
        await ts.aclose()


async def test_the_rpc_deadline_covers_the_token_exchange(
    tenant: TenantHandle, silent_token_url: str
) -> None:
    source = CredentialSource(client_id=tenant.client_id, client_secret=tenant.client_secret)
    ts = TokenSource(source, token_url=silent_token_url, timeout=300)
    creds = source.load()
    client = TenantClient(
        TenantEndpoint.resolve(creds.client_id, tenant.address),
        ts,
        host_id="h",
        user_agent="tester baton-connectors/test",
        root_certificates=root_certificates(str(tenant.ca_pem)),
    )
    req = baton_pb2.BatonServiceFinishTaskRequest(host_id="h", task_id="t")
    req.success.SetInParent()
    try:
        async with asyncio.timeout(20):
            with pytest.raises(TenantError) as info:
                await client.finish_task(req, deadline=0.5)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no access token" in info.value.message
    finally:
        await client.close()
        await ts.aclose()
