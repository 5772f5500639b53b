"""The sandbox tenant is as strict as ConductorOne: these tests talk to it over real TLS with hand-made
requests, so a client bug cannot hide behind a lenient fake."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import any_pb2

from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    connector_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2, baton_pb2_grpc
from connector.sandbox.tenant import TenantHandle, start_tenant
from connector.sandbox.tenant.server import new_task_id
from connector.service.credentials import CredentialSource, TokenSource, make_ssl_context
from connector.service.tenant import TenantEndpoint

Req = baton_pb2.BatonServiceUploadAssetRequest
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def secret_key(secret: str) -> Ed25519PrivateKey:
    jwk = json.loads(base64.urlsafe_b64decode(secret.split(":", 3)[3] + "=="))
    return Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(jwk["d"] + "=="))


def assertion(
    handle: TenantHandle,
    *,
    key: Ed25519PrivateKey | None = None,
    alg: str = "EdDSA",
    aud: object = None,
    iss: str | None = None,
    nbf_delta: int = -120,
    exp_delta: int = 120,
) -> str:
    now = int(time.time())
    header = {"alg": alg, "nonce": "00" * 16}
    claims = {
        "aud": aud if aud is not None else "tenant.sandbox.conductor.one",
        "exp": now + exp_delta,
        "iat": now,
        "iss": iss or handle.client_id,
        "nbf": now + nbf_delta,
        "sub": handle.client_id,
    }
    head = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = (key or secret_key(handle.client_secret)).sign(head.encode())
    return f"{head}.{b64(sig)}"


async def post_token(handle: TenantHandle, client_assertion: str, **extra: str) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(handle.ca_pem))
    form = {
        "client_id": handle.client_id,
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
        **extra,
    }
    async with httpx.AsyncClient(verify=ctx) as client:
        return await client.post(f"https://{handle.address}/auth/v1/token", data=form)


@pytest.fixture
async def tenant(tmp_path: Path) -> AsyncIterator[TenantHandle]:
    handle = await start_tenant(data_dir=tmp_path / "tenant", next_poll=0.2, next_heartbeat=0.5)
    try:
        yield handle
    finally:
        await handle.close()


class Client:
    """A bare BatonService client with a real token."""

    def __init__(self, handle: TenantHandle, token: str) -> None:
        creds = grpc.ssl_channel_credentials(root_certificates=handle.ca_pem.read_bytes())
        self.channel = grpc.aio.secure_channel(handle.address, creds)
        self.stub = baton_pb2_grpc.BatonServiceStub(self.channel)
        self.md = (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def client(tenant: TenantHandle) -> AsyncIterator[Client]:
    resp = await post_token(tenant, assertion(tenant))
    assert resp.status_code == 200, resp.text
    c = Client(tenant, resp.json()["access_token"])
    try:
        yield c
    finally:
        await c.channel.close()


# ---------------------------------------------------------------------------------------------- token


async def test_token_endpoint_issues_bearer_tokens_for_a_valid_assertion(tenant: TenantHandle) -> None:
    resp = await post_token(tenant, assertion(tenant))
    assert resp.status_code == 200
    body = resp.json()
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 10
    assert body["token_type"].lower() == "bearer" and body["access_token"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"alg": "HS256"}, "unsupported alg"),
        ({"aud": "other.conductor.one"}, "aud"),
        ({"iss": "someone@else/pcc"}, "iss"),
        ({"nbf_delta": 300, "exp_delta": 400}, "nbf"),
        ({"nbf_delta": -400, "exp_delta": -300}, "exp"),
        ({"key": Ed25519PrivateKey.generate()}, "signature"),
    ],
)
async def test_token_endpoint_rejects_bad_assertions(tenant: TenantHandle, kwargs: dict, reason: str) -> None:
    resp = await post_token(tenant, assertion(tenant, **kwargs))
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert reason in resp.json()["error_description"]


async def test_token_endpoint_accepts_the_old_sdk_array_audience(tenant: TenantHandle) -> None:
    resp = await post_token(tenant, assertion(tenant, aud=["tenant.sandbox.conductor.one"]))
    assert resp.status_code == 200


async def test_token_endpoint_rejects_wrong_grant_type_and_unknown_parameters(tenant: TenantHandle) -> None:
    resp = await post_token(tenant, assertion(tenant), grant_type="password")
    assert resp.status_code == 400
    resp = await post_token(tenant, assertion(tenant), scope="all")
    assert resp.status_code == 400


async def test_rotated_secret_invalidates_the_old_one(tenant: TenantHandle) -> None:
    old = tenant.client_secret
    new = tenant.rotate_secret()
    assert new != old
    assert (await post_token(tenant, assertion(tenant, key=secret_key(old)))).status_code == 401
    assert (await post_token(tenant, assertion(tenant, key=secret_key(new)))).status_code == 200


async def test_injected_token_failures_answer_401(tenant: TenantHandle) -> None:
    tenant.tenant.reject_tokens(1)
    assert (await post_token(tenant, assertion(tenant))).status_code == 401
    assert (await post_token(tenant, assertion(tenant))).status_code == 200


# ---------------------------------------------------------------------------------------------- gRPC


async def test_every_rpc_requires_a_live_bearer_token(tenant: TenantHandle, client: Client) -> None:
    req = baton_pb2.BatonServiceGetTaskRequest(host_id="h")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.GetTask(req)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.GetTask(req, metadata=(("authorization", "Bearer not-a-token"),))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    resp = await client.stub.GetTask(req, metadata=client.md)
    assert resp.task.WhichOneof("task_type") == "none"
    assert resp.next_poll.ToNanoseconds() > 0  # a positive next_poll, always
    tenant.tenant.revoke_tokens()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.GetTask(req, metadata=client.md)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_tasks_are_leased_once_and_requeued_when_the_lease_expires(
    tenant: TenantHandle, client: Client
) -> None:
    now = [time.time()]
    tenant.tenant.clock = lambda: now[0]  # the tenant's clock, moved by hand
    tenant.tenant.lease_seconds = 30
    tid = tenant.enqueue_hello()
    assert len(tid) == 27 and tid.isalnum()
    req = baton_pb2.BatonServiceGetTaskRequest(host_id="h")
    first = await client.stub.GetTask(req, metadata=client.md)
    assert first.task.id == tid and first.task.WhichOneof("task_type") == "hello"
    now[0] += 29
    again = await client.stub.GetTask(req, metadata=client.md)
    assert again.task.WhichOneof("task_type") == "none"
    now[0] += 2
    redelivered = await client.stub.GetTask(req, metadata=client.md)
    assert redelivered.task.id == tid
    assert tenant.tenant.tasks[tid].deliveries == 2


async def test_fault_injection_fails_the_next_calls_with_the_given_code(
    tenant: TenantHandle, client: Client
) -> None:
    tenant.fail_rpc("GetTask", times=2)
    req = baton_pb2.BatonServiceGetTaskRequest(host_id="h")
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.GetTask(req, metadata=client.md)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await client.stub.GetTask(req, metadata=client.md)


async def test_hello_validates_and_records_the_payload(tenant: TenantHandle, client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.Hello(baton_pb2.BatonServiceHelloRequest(host_id="h"), metadata=client.md)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    os_info = baton_pb2.BatonServiceHelloRequest.OSInfo(
        **{f.name: "x" for f in baton_pb2.BatonServiceHelloRequest.OSInfo.DESCRIPTOR.fields}
    )
    await client.stub.Hello(
        baton_pb2.BatonServiceHelloRequest(
            host_id="h", os_info=os_info, connector_metadata=connector_pb2.ConnectorMetadata(display_name="X")
        ),
        metadata=client.md,
    )
    hello = await tenant.wait_hello()
    assert hello.metadata.display_name == "X" and hello.host_id == "h"


async def _running_task(tenant: TenantHandle, client: Client) -> str:
    tid = tenant.enqueue_sync()
    await client.stub.GetTask(baton_pb2.BatonServiceGetTaskRequest(host_id="h"), metadata=client.md)
    return tid


def _c1z_bytes(tmp_path: Path) -> bytes:
    import sqlite3

    db = tmp_path / "x.db"
    conn = sqlite3.connect(db)
    conn.execute("create table v1_resource_types (id integer primary key, external_id text, data blob)")
    conn.execute(
        "create table v1_resources"
        " (id integer primary key, resource_type_id text, external_id text, data blob)"
    )
    conn.execute("create table v1_entitlements (id integer primary key, data blob)")
    conn.execute("create table v1_grants (id integer primary key, data blob)")
    for uid in ("a", "b"):
        res = resource_pb2.Resource(display_name=uid.upper())
        res.id.resource_type, res.id.resource = "user", uid
        conn.execute(
            "insert into v1_resources (resource_type_id, external_id, data) values (?, ?, ?)",
            ("user", uid, res.SerializeToString()),
        )
    conn.commit()
    conn.close()
    return b"C1ZF\x00" + zstandard.ZstdCompressor().compress(db.read_bytes())


async def test_upload_is_verified_decoded_and_kept(
    tenant: TenantHandle, client: Client, tmp_path: Path
) -> None:
    tid = await _running_task(tenant, client)
    data = _c1z_bytes(tmp_path)

    async def stream(checksum: bytes) -> AsyncIterator[Req]:
        yield Req(metadata=Req.UploadMetadata(host_id="h", task_id=tid))
        for i in range(0, len(data), 1000):
            yield Req(data=Req.UploadData(data=data[i : i + 1000]))
        yield Req(eof=Req.UploadEOF(sha256_checksum=checksum))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.UploadAsset(stream(hashlib.sha256(b"other").digest()), metadata=client.md)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "checksum" in (info.value.details() or "")
    assert tenant.uploads == []

    await client.stub.UploadAsset(stream(hashlib.sha256(data).digest()), metadata=client.md)
    (up,) = tenant.uploads
    assert up.kind == "c1z-v1" and up.size == len(data) and up.path.read_bytes() == data
    assert up.summary is not None and up.summary.resources_by_type == {"user": 2}


async def test_upload_must_start_with_metadata(tenant: TenantHandle, client: Client) -> None:
    async def stream() -> AsyncIterator[Req]:
        yield Req(data=Req.UploadData(data=b"x"))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.UploadAsset(stream(), metadata=client.md)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_broken_upload_fault_aborts_the_stream(tenant: TenantHandle, client: Client) -> None:
    tid = await _running_task(tenant, client)
    tenant.tenant.break_uploads(1)

    async def stream() -> AsyncIterator[Req]:
        yield Req(metadata=Req.UploadMetadata(host_id="h", task_id=tid))
        yield Req(data=Req.UploadData(data=b"C1ZF\x00abc"))
        yield Req(eof=Req.UploadEOF(sha256_checksum=hashlib.sha256(b"C1ZF\x00abc").digest()))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.UploadAsset(stream(), metadata=client.md)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await client.stub.UploadAsset(stream(), metadata=client.md)
    assert len(tenant.uploads) == 1


async def test_sync_cannot_succeed_without_an_upload(tenant: TenantHandle, client: Client) -> None:
    tid = await _running_task(tenant, client)
    req = baton_pb2.BatonServiceFinishTaskRequest(host_id="h", task_id=tid)
    req.success.SetInParent()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.FinishTask(req, metadata=client.md)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_heartbeat_cancellation_and_finish_recording(tenant: TenantHandle, client: Client) -> None:
    tid = await _running_task(tenant, client)
    hb = baton_pb2.BatonServiceHeartbeatRequest(host_id="h", task_id=tid)
    resp = await client.stub.Heartbeat(hb, metadata=client.md)
    assert not resp.cancelled and resp.next_heartbeat.ToNanoseconds() == 500_000_000
    await tenant.tenant.cancel_task(tid)
    assert (await client.stub.Heartbeat(hb, metadata=client.md)).cancelled

    req = baton_pb2.BatonServiceFinishTaskRequest(host_id="h", task_id=tid)
    req.status.code, req.status.message = grpc.StatusCode.CANCELLED.value[0], "sync cancelled"
    req.error.non_retryable = False
    await client.stub.FinishTask(req, metadata=client.md)
    rec = await tenant.wait_finished(tid)
    assert (rec.outcome, rec.status_code, rec.non_retryable) == ("error", 1, False)
    assert tenant.tenant.tasks[tid].state == "finished"


async def test_finish_records_unpacked_responses_and_annotations(
    tenant: TenantHandle, client: Client
) -> None:
    group = resource_pb2.Resource(display_name="g")
    tid = tenant.enqueue_grant(entitlement_pb2.Entitlement(id="group:g:member", resource=group), group)
    await client.stub.GetTask(baton_pb2.BatonServiceGetTaskRequest(host_id="h"), metadata=client.md)
    note = any_pb2.Any()
    note.Pack(annotation_grant_pb2.GrantAlreadyExists())
    response = any_pb2.Any()
    response.Pack(grant_pb2.GrantManagerServiceGrantResponse(annotations=[note]))
    req = baton_pb2.BatonServiceFinishTaskRequest(host_id="h", task_id=tid)
    req.success.response.CopyFrom(response)
    req.success.annotations.append(note)
    await client.stub.FinishTask(req, metadata=client.md)
    rec = await tenant.wait_finished(tid)
    assert isinstance(rec.response, grant_pb2.GrantManagerServiceGrantResponse)
    assert [type(a).__name__ for a in rec.annotations] == ["GrantAlreadyExists"]


async def test_unknown_task_ids_are_rejected(tenant: TenantHandle, client: Client) -> None:
    hb = baton_pb2.BatonServiceHeartbeatRequest(host_id="h", task_id=new_task_id())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.Heartbeat(hb, metadata=client.md)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_get_tasks_hands_out_a_page_excluding_known_ids(tenant: TenantHandle, client: Client) -> None:
    tids = [tenant.enqueue_hello() for _ in range(4)]
    req = baton_pb2.BatonServiceGetTasksRequest(host_id="h", page_size=2, known_task_ids=[tids[0]])
    resp = await client.stub.GetTasks(req, metadata=client.md)
    assert [t.id for t in resp.tasks] == tids[1:3]  # the known id is skipped, not handed out
    assert resp.next_poll.ToNanoseconds() > 0
    resp = await client.stub.GetTasks(req, metadata=client.md)
    assert [t.id for t in resp.tasks] == [tids[3]]
    assert tenant.tenant.tasks[tids[0]].state == "pending"  # still queued for a client that asks
    resp = await client.stub.GetTasks(
        baton_pb2.BatonServiceGetTasksRequest(host_id="h", page_size=5), metadata=client.md
    )
    assert [t.id for t in resp.tasks] == [tids[0]]


@pytest.mark.parametrize(
    "req",
    [
        baton_pb2.BatonServiceGetTasksRequest(host_id="h", page_size=0),
        baton_pb2.BatonServiceGetTasksRequest(host_id="h", page_size=101),
        baton_pb2.BatonServiceGetTasksRequest(host_id="", page_size=1),
        baton_pb2.BatonServiceGetTasksRequest(host_id="h", page_size=1, known_task_ids=["short"]),
    ],
)
async def test_get_tasks_validates_requests(
    tenant: TenantHandle, client: Client, req: baton_pb2.BatonServiceGetTasksRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.GetTasks(req, metadata=client.md)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_scripted_heartbeat_failures(tenant: TenantHandle, client: Client) -> None:
    tid = await _running_task(tenant, client)
    tenant.tenant.script_heartbeats("oxo")
    hb = baton_pb2.BatonServiceHeartbeatRequest(host_id="h", task_id=tid)
    await client.stub.Heartbeat(hb, metadata=client.md)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.Heartbeat(hb, metadata=client.md)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await client.stub.Heartbeat(hb, metadata=client.md)
    await client.stub.Heartbeat(hb, metadata=client.md)  # script over: normal again


async def test_the_sandbox_tenant_runs_by_itself(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        "sandbox",
        "tenant",
        "--data-dir",
        str(tmp_path),
        "--next-poll",
        "0.5",
        cwd=root,
        env={**env, "PYTHONPATH": str(root)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert first.startswith(b"sandbox tenant listening on 127.0.0.1:")
        env_file = tmp_path / "daemon.env"
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert set(values) == {
            "BATON_CLIENT_ID",
            "BATON_CLIENT_SECRET",
            "BATON_C1_API_HOST",
            "BATON_C1_CA_FILE",
        }
        # The printed address and CA work for a real token request with the generated credentials.
        source = CredentialSource(
            client_id=values["BATON_CLIENT_ID"], client_secret=values["BATON_CLIENT_SECRET"]
        )
        endpoint = TenantEndpoint.resolve(source.load().client_id, values["BATON_C1_API_HOST"])
        tokens = TokenSource(
            source, token_url=endpoint.token_url, verify=make_ssl_context(values["BATON_C1_CA_FILE"])
        )
        try:
            assert (await tokens.authorization()).startswith("Bearer ")
        finally:
            await tokens.aclose()
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0
        assert values["BATON_CLIENT_SECRET"].encode() not in first + out  # the secret stays in the file
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
