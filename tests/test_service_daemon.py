"""The service-mode daemon end to end, in process, against the sandbox tenant over real TLS: task types,
uploads, heartbeat cancellation, rotation and shutdown. (Schedules and backoffs: test_service_schedule.py;
exact FinishTask payloads and sync options: test_service_payloads.py.)"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from pathlib import Path

import grpc
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    annotation_ratelimit_pb2,
    connector_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2
from connector.sandbox.tenant import start_tenant
from connector.sdk import model
from connector.sdk.crypto import decrypt_encrypted_data, encrypt_password_for, parse_client_secret, public_jwk
from connector.sdk.errors import ConnectorError, UpstreamError
from connector.service.credentials import CredentialSource, TokenSource, make_ssl_context
from connector.service.tenant import TenantClient, TenantEndpoint, root_certificates
from connector.service.testing_app import ToyState, group_res, rate_limited, user_res
from connector.service.upload import upload_file
from tests import service_support
from tests.service_support import Starter, TenantMaker, code_of, eventually, member_ent, metric

new_tenant = service_support.new_tenant  # fixtures
start = service_support.start

Task = baton_pb2.Task
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


# ---------------------------------------------------------------------------------------------- hello


async def test_bootstrap_hello_describes_host_build_and_connector(start: Starter) -> None:
    run = await start()
    hello = run.tenant.hellos[0]
    assert hello.task_id == "" and hello.host_id == "test-host"
    assert hello.build_info.lang_version.startswith("python3.")
    assert hello.build_info.package == "baton-toy" and hello.build_info.package_version
    for f in baton_pb2.BatonServiceHelloRequest.OSInfo.DESCRIPTOR.fields:
        assert getattr(hello.os_info, f.name), f.name
    md = hello.metadata
    assert md.display_name == "Toy"
    caps = {c.resource_type.id: set(c.capabilities) for c in md.capabilities.resource_type_capabilities}
    assert connector_pb2.Capability.CAPABILITY_PROVISION in caps["group"]
    assert connector_pb2.Capability.CAPABILITY_ACCOUNT_PROVISIONING in caps["user"]
    client_name = run.tenant.client_id.split("@")[0]
    # The user agent names the C1 client, the connector and our version.
    assert hello.user_agent.startswith(f"{client_name} baton-toy/{hello.build_info.package_version} ")
    assert await eventually(lambda: run.health.hello_done)
    await run.tenant.wait_for(lambda: len(run.tenant.tenant.polls) >= 5)
    assert await run.stopped() == 0
    # One long-lived channel for Hello and every poll (the Go client dials one per RPC), one token.
    assert run.tenant.connections["grpc"] == 1
    assert [r.ok for r in run.tenant.tenant.token_requests] == [True]


async def test_hello_task_is_answered_by_hello_without_finish(start: Starter) -> None:
    run = await start()
    tid = run.tenant.enqueue_hello()
    hello = await run.tenant.wait_hello(tid)
    assert hello.metadata.display_name == "Toy"
    assert run.tenant.tenant.tasks[tid].state == "finished"
    await run.stopped()
    assert run.tenant.finish_of(tid) is None


# ---------------------------------------------------------------------------------------------- sync


async def test_sync_full_uploads_the_c1z_then_finishes_and_cleans_up(start: Starter, tmp_path: Path) -> None:
    run = await start()
    tid = run.tenant.enqueue_sync()
    rec = await run.tenant.wait_finished(tid)
    assert rec.outcome == "success" and rec.response is None and rec.annotations == []
    assert not rec.request.HasField("status")
    (up,) = [u for u in run.tenant.uploads if u.task_id == tid]
    assert up.kind == "c1z-v1" and up.host_id == "test-host"
    assert up.summary is not None
    assert up.summary.resources_by_type == {"group": 3, "user": 4}
    assert up.summary.grants == 3 and up.summary.entitlements == 3
    assert sorted(up.summary.resource_names["user"]) == ["Alice", "Bob", "Carol", "Dave"]
    # The heartbeat came first, before any upload.
    assert run.tenant.tenant.tasks[tid].heartbeats[0] <= up.at
    await run.stopped()
    assert [p.name for p in os.scandir(tmp_path) if p.name.startswith("baton-sync")] == []
    assert metric(run.metrics, "baton_sync_runs_total", outcome="success") == 1
    assert metric(run.metrics, "baton_upload_bytes_total") == up.size
    assert metric(run.metrics, "baton_tasks_finished_total", task_type="sync_full", outcome="success") == 1


async def test_sync_task_fields_become_sync_options(start: Starter) -> None:
    run = await start()
    only_resources = run.tenant.enqueue_sync(skip_entitlements_and_grants=True)
    only_users = run.tenant.enqueue_sync(sync_resource_type_ids=["user"])
    for tid in (only_resources, only_users):
        assert (await run.tenant.wait_finished(tid)).outcome == "success"
    by_task = {u.task_id: u.summary for u in run.tenant.uploads}
    assert by_task[only_resources] is not None and by_task[only_users] is not None
    assert by_task[only_resources].resources == 7
    assert (by_task[only_resources].entitlements, by_task[only_resources].grants) == (0, 0)
    assert by_task[only_users].resources_by_type == {"user": 4}


async def test_skip_full_sync_uploads_an_empty_sync(start: Starter) -> None:
    run = await start(env={"BATON_SKIP_FULL_SYNC": "true"})
    tid = run.tenant.enqueue_sync()
    assert (await run.tenant.wait_finished(tid)).outcome == "success"
    (up,) = run.tenant.uploads
    assert up.summary is not None and up.summary.resources == 0 and len(up.summary.syncs) == 1


async def test_upload_uses_512_kib_chunks_and_the_whole_file_checksum(tmp_path: Path) -> None:
    async with await start_tenant(data_dir=tmp_path / "t") as tenant:
        source = CredentialSource(client_id=tenant.client_id, client_secret=tenant.client_secret)
        creds = source.load()
        endpoint = TenantEndpoint.resolve(creds.client_id, tenant.address)
        tokens = TokenSource(
            source, token_url=endpoint.token_url, verify=make_ssl_context(str(tenant.ca_pem))
        )
        client = TenantClient(
            endpoint,
            tokens,
            host_id="h",
            user_agent="t",
            root_certificates=root_certificates(str(tenant.ca_pem)),
        )
        tid = tenant.enqueue_sync()
        await client.get_task()
        blob = tmp_path / "big.c1z"
        blob.write_bytes(b"C1Z3\x00" + os.urandom(1024 * 1024 + 100))
        try:
            sent = await upload_file(client, tid, blob)
        finally:
            await client.close()
            await tokens.aclose()
        (up,) = tenant.uploads
        assert sent == up.size == blob.stat().st_size
        assert up.chunks == math.ceil(up.size / (512 * 1024)) == 3
        assert up.path.read_bytes() == blob.read_bytes() and up.kind == "c1z-v3"


async def test_upload_is_retried_after_a_broken_stream(start: Starter) -> None:
    run = await start()
    run.tenant.tenant.break_uploads(1)
    tid = run.tenant.enqueue_sync()
    rec = await run.tenant.wait_finished(tid)
    assert rec.outcome == "success"
    assert [r.code for r in run.tenant.tenant.rpcs if r.method == "UploadAsset"] == ["UNAVAILABLE", "OK"]
    assert len(run.tenant.uploads) == 1


async def test_upload_failing_three_times_finishes_retryable_and_uploads_nothing(start: Starter) -> None:
    run = await start()
    run.tenant.tenant.break_uploads(3)
    tid = run.tenant.enqueue_sync()
    rec = await run.tenant.wait_finished(tid)
    assert rec.outcome == "error" and not rec.non_retryable
    assert "upload failed after 3 attempts" in rec.status_message and "uploading" in rec.status_message
    assert run.tenant.uploads == []
    await run.stopped()
    assert metric(run.metrics, "baton_uploads_total", outcome="failure") == 1


async def test_heartbeat_cancellation_stops_the_sync_without_upload(start: Starter) -> None:
    run = await start(state=ToyState(gate=asyncio.Event()))  # the listing waits until cancelled
    tid = run.tenant.enqueue_sync()
    await run.tenant.wait_for(lambda: run.tenant.tenant.tasks[tid].heartbeats)
    await run.tenant.tenant.cancel_task(tid)
    rec = await run.tenant.wait_finished(tid)
    assert (rec.outcome, code_of(rec), rec.non_retryable) == ("error", "CANCELLED", False)
    assert "sync cancelled during" in rec.status_message and "tenant cancelled" in rec.status_message
    assert run.tenant.uploads == []


async def test_cancelled_first_heartbeat_abandons_the_task(start: Starter) -> None:
    run = await start()
    run.tenant.tenant.cancel_heartbeats(True)
    tid = run.tenant.enqueue_sync()
    await run.tenant.wait_for(lambda: run.tenant.tenant.heartbeat_log)
    await run.tenant.wait_for(
        lambda: (
            metric(run.metrics, "baton_tasks_in_flight", task_type="sync_full") == 0
            and run.tenant.tenant.polls[-1] > run.tenant.tenant.heartbeat_log[0][1]
        )
    )
    assert run.tenant.finish_of(tid) is None and run.tenant.uploads == []


async def test_failed_sync_finishes_retryable_naming_the_phase(start: Starter) -> None:
    state = ToyState()
    state.fail_grant_listing["ops"] = ConnectorError(grpc.StatusCode.PERMISSION_DENIED, "token lacks scope")
    run = await start(state=state)
    tid = run.tenant.enqueue_sync()
    rec = await run.tenant.wait_finished(tid)
    assert (rec.outcome, code_of(rec), rec.non_retryable) == ("error", "PERMISSION_DENIED", False)
    assert rec.status_message.startswith("sync failed in phase grants")
    assert "group:ops" in rec.status_message and "token lacks scope" in rec.status_message
    assert run.tenant.uploads == []
    await run.stopped()
    assert metric(run.metrics, "baton_sync_runs_total", outcome="failure") == 1


# ---------------------------------------------------------------------------------------------- provisioning


async def test_grant_and_revoke_finish_with_packed_responses_and_annotations(start: Starter) -> None:
    run = await start()
    dave = user_res("dave", "Dave")
    first = run.tenant.enqueue_grant(member_ent("eng"), dave)
    rec = await run.tenant.wait_finished(first)
    assert isinstance(rec.response, grant_pb2.GrantManagerServiceGrantResponse)
    assert [g.principal.id.resource for g in rec.response.grants] == ["dave"]
    assert rec.annotations == [] and "dave" in run.state.members["eng"]

    again = run.tenant.enqueue_grant(member_ent("eng"), dave)
    rec = await run.tenant.wait_finished(again)
    assert [type(a) for a in rec.annotations] == [annotation_grant_pb2.GrantAlreadyExists]
    assert rec.request.success.annotations == rec.response.annotations  # type: ignore[union-attr]

    grant = model.new_grant(group_res("eng"), "member", model.resource_id("user", "dave"))
    revoke = run.tenant.enqueue_revoke(grant)
    rec = await run.tenant.wait_finished(revoke)
    assert isinstance(rec.response, grant_pb2.GrantManagerServiceRevokeResponse) and rec.annotations == []
    assert "dave" not in run.state.members["eng"]
    rec = await run.tenant.wait_finished(run.tenant.enqueue_revoke(grant))
    assert [type(a) for a in rec.annotations] == [annotation_grant_pb2.GrantAlreadyRevoked]
    assert rec.request.success.response.type_url == (
        "type.googleapis.com/c1.connector.v2.GrantManagerServiceRevokeResponse"
    )


async def test_provisioning_errors_keep_code_and_details_and_only_transient_ones_are_retryable(
    start: Starter,
) -> None:
    state = ToyState()
    state.fail_group["ops"] = rate_limited()  # a 429 still there after the client's retries
    state.fail_group["sales"] = UpstreamError("toy", "POST", "/groups/{group}/members", 403, "forbidden")
    run = await start(state=state)
    missing = run.tenant.enqueue_grant(member_ent("nope"), user_res("dave", "Dave"))
    limited = run.tenant.enqueue_grant(member_ent("ops"), user_res("dave", "Dave"))
    forbidden = run.tenant.enqueue_grant(member_ent("sales"), user_res("dave", "Dave"))
    malformed = run.tenant.enqueue(Task(grant=Task.GrantTask(entitlement=member_ent("eng"))))
    rec = await run.tenant.wait_finished(missing)
    assert (rec.outcome, code_of(rec), rec.non_retryable) == ("error", "NOT_FOUND", True)
    assert "group nope does not exist" in rec.status_message
    assert not rec.request.error.HasField("response")
    rec = await run.tenant.wait_finished(limited)
    assert (code_of(rec), rec.non_retryable) == ("UNAVAILABLE", False)
    assert [type(d) for d in rec.status_details] == [annotation_ratelimit_pb2.RateLimitDescription]
    rec = await run.tenant.wait_finished(forbidden)
    assert (code_of(rec), rec.non_retryable) == ("PERMISSION_DENIED", True)
    rec = await run.tenant.wait_finished(malformed)
    assert (code_of(rec), rec.non_retryable) == ("UNKNOWN", True)
    assert "malformed grant task" in rec.status_message
    assert sorted(state.calls) == ["grant nope dave", "grant ops dave", "grant sales dave"]


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.UNAUTHENTICATED, False),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.INTERNAL, False),
    ],
)
async def test_revoke_retryability_follows_the_code(
    start: Starter, code: grpc.StatusCode, retryable: bool
) -> None:
    state = ToyState()
    state.fail_group["eng"] = ConnectorError(code, "upstream trouble")
    run = await start(state=state)
    grant = model.new_grant(group_res("eng"), "member", model.resource_id("user", "alice"))
    rec = await run.tenant.wait_finished(run.tenant.enqueue_revoke(grant))
    assert (code_of(rec), rec.non_retryable) == (code.name, not retryable)


async def test_without_provisioning_every_provisioning_task_fails_precondition(start: Starter) -> None:
    run = await start(env={"BATON_PROVISIONING": ""})
    tids = [
        run.tenant.enqueue_grant(member_ent("eng"), user_res("dave", "Dave")),
        run.tenant.enqueue_create_account(resource_pb2.AccountInfo(login="erin")),
        run.tenant.enqueue_delete_resource(model.resource_id("user", "bob")),
        run.tenant.enqueue_create_resource(group_res("new")),
    ]
    for tid in tids:
        rec = await run.tenant.wait_finished(tid)
        assert (code_of(rec), rec.non_retryable) == ("FAILED_PRECONDITION", True), rec.task_type
        assert rec.status_message == "provisioning is not enabled"
    assert run.state.calls == []


async def test_create_account_returns_the_response_with_encrypted_secrets(start: Starter) -> None:
    run = await start()
    recipient = Ed25519PrivateKey.generate()
    config = resource_pb2.EncryptionConfig(provider="baton/jwk/v1")
    config.jwk_public_key_config.pub_key = json.dumps(public_jwk(recipient)).encode()
    options = resource_pb2.CredentialOptions()
    options.random_password.length = 20
    tid = run.tenant.enqueue_create_account(resource_pb2.AccountInfo(login="erin"), options, [config])
    rec = await run.tenant.wait_finished(tid)
    assert isinstance(rec.response, resource_pb2.CreateAccountResponse)
    assert rec.response.WhichOneof("result") == "success"
    assert rec.response.success.resource.id.resource == "erin"
    (enc,) = rec.response.encrypted_data
    password = decrypt_encrypted_data(enc, recipient).decode()
    assert len(password) == 20 and run.state.created[0][1].password == password
    assert password not in rec.request.SerializeToString().decode("latin-1")

    again = await run.tenant.wait_finished(
        run.tenant.enqueue_create_account(resource_pb2.AccountInfo(login="erin"))
    )
    assert again.response.WhichOneof("result") == "already_exists"  # type: ignore[union-attr]
    malformed = await run.tenant.wait_finished(
        run.tenant.enqueue(Task(create_account=Task.CreateAccountTask()))
    )
    assert (code_of(malformed), malformed.non_retryable) == ("UNKNOWN", True)


async def test_delete_create_rotate_and_unknown_task_types(start: Starter) -> None:
    run = await start()
    deleted = run.tenant.enqueue_delete_resource(model.resource_id("user", "bob"))
    created = run.tenant.enqueue_create_resource(group_res("new"))
    rotated = run.tenant.enqueue_rotate_credentials(model.resource_id("user", "alice"))
    feed = run.tenant.enqueue(Task(event_feed=Task.EventFeedTask()))
    compact = run.tenant.enqueue(Task(compact_syncs=Task.CompactSyncs()))
    diff = run.tenant.enqueue(Task(create_sync_diff=Task.CreateSyncDiffTask()))
    typeless = run.tenant.enqueue(Task())  # a task type this daemon's protos do not know
    rec = await run.tenant.wait_finished(deleted)
    assert rec.outcome == "success" and isinstance(rec.response, resource_pb2.DeleteResourceResponse)
    assert "bob" not in run.state.users
    for tid, what in ((created, "creating resources"), (rotated, "rotating credentials")):
        rec = await run.tenant.wait_finished(tid)
        assert (code_of(rec), rec.non_retryable) == ("UNIMPLEMENTED", True)
        assert what in rec.status_message
    for tid in (feed, compact, diff, typeless):
        rec = await run.tenant.wait_finished(tid)
        assert (code_of(rec), rec.status_message, rec.non_retryable) == (
            "UNKNOWN",
            "unsupported task type",
            False,
        )


async def test_finish_task_is_retried_through_a_network_blip(start: Starter) -> None:
    run = await start()
    run.tenant.fail_rpc("FinishTask", times=3)
    tid = run.tenant.enqueue_grant(member_ent("eng"), user_res("dave", "Dave"))
    rec = await run.tenant.wait_finished(tid)
    assert rec.outcome == "success"
    codes = [r.code for r in run.tenant.tenant.rpcs if r.method == "FinishTask"]
    assert codes == ["UNAVAILABLE"] * 3 + ["OK"]
    assert metric(run.metrics, "baton_finish_task_retries_total") == 3


# ---------------------------------------------------------------------------------------------- rotation


async def test_rotating_the_secret_file_mid_run_keeps_tasks_working(
    start: Starter, new_tenant: TenantMaker, tmp_path: Path
) -> None:
    tenant = await new_tenant(next_poll=0.05)
    secret_file = tmp_path / "secret"
    secret_file.write_text(tenant.client_secret)
    run = await start(
        tenant=tenant,
        state=ToyState(grant_delay=0.5),
        env={"BATON_CLIENT_SECRET": "", "BATON_CLIENT_SECRET_FILE": str(secret_file)},
    )
    old_key = tenant.tenant.token_requests[-1].secret
    slow = tenant.enqueue_grant(member_ent("eng"), user_res("dave", "Dave"))
    await tenant.wait_for(lambda: tenant.tenant.tasks[slow].state == "running")
    new_secret = tenant.rotate_secret(revoke_tokens=True)
    tmp = tmp_path / "secret.new"
    tmp.write_text(new_secret + "\n")
    with structlog.testing.capture_logs() as logs:
        os.replace(tmp, secret_file)
        rec = await tenant.wait_finished(slow)
    assert rec.outcome == "success"  # the running task was not disturbed
    new_key = tenant.tenant.token_requests[-1].secret
    assert new_key is not None and new_key is not old_key and new_key.secret == new_secret
    assert all(r.ok for r in tenant.tenant.token_requests)
    # The runtime decrypts passwords for the *new* key id without a restart.
    new_key_parsed = parse_client_secret(new_secret)
    options = encrypt_password_for(new_key_parsed, "S3cret-pass!")
    tid = tenant.enqueue_create_account(resource_pb2.AccountInfo(login="erin"), options)
    assert (await tenant.wait_finished(tid)).outcome == "success"
    assert run.state.created[-1][1].password == "S3cret-pass!"
    assert metric(run.metrics, "baton_credential_reloads_total", name="client_secret") == 1
    # The reload is logged, naming what changed and never a value.
    (event,) = [e for e in logs if e["event"] == "credentials_reloaded"]
    assert event["changed"] == "client_secret"
    for secret in (new_secret, new_secret.rsplit(":", 1)[1]):
        assert not any(secret in str(e) for e in logs)
    assert await run.stopped() == 0


async def test_rotation_mid_sync_keeps_heartbeats_and_upload_going(
    start: Starter, new_tenant: TenantMaker, tmp_path: Path
) -> None:
    tenant = await new_tenant(next_poll=0.05, next_heartbeat=0.05)
    secret_file = tmp_path / "secret"
    secret_file.write_text(tenant.client_secret)
    gate = asyncio.Event()
    run = await start(
        tenant=tenant,
        state=ToyState(gate=gate),  # the sync's listings wait until the test opens the gate
        env={"BATON_CLIENT_SECRET": "", "BATON_CLIENT_SECRET_FILE": str(secret_file)},
    )
    tid = tenant.enqueue_sync()
    beats = tenant.tenant.tasks[tid].heartbeats
    await tenant.wait_for(lambda: beats)
    new_secret = tenant.rotate_secret(revoke_tokens=True)  # the old secret and its tokens die now
    tmp = tmp_path / "secret.new"
    tmp.write_text(new_secret)
    os.replace(tmp, secret_file)
    mark = len(beats)
    await tenant.wait_for(lambda: len(beats) >= mark + 2)  # heartbeats go on with the new secret
    gate.set()
    rec = await tenant.wait_finished(tid)
    assert rec.outcome == "success"
    (up,) = tenant.uploads
    assert up.summary is not None and up.summary.resources == 7
    assert tenant.tenant.token_requests[-1].secret is not None
    assert tenant.tenant.token_requests[-1].secret.secret == new_secret
    assert metric(run.metrics, "baton_credential_reloads_total", name="client_secret") == 1
    # Nothing failed along the way: the running task never saw the rotation.
    assert "UNAVAILABLE" not in run.rpc_codes["Heartbeat"]


async def test_client_id_without_secret_exits_2(start: Starter, new_tenant: TenantMaker) -> None:
    tenant = await new_tenant()
    run = await start(tenant=tenant, wait_hello=False, env={"BATON_CLIENT_SECRET": ""})
    assert await asyncio.wait_for(run.task, 5) == 2
    out = run.stderr.getvalue()
    assert out == "error: client-secret is required in service mode (BATON_CLIENT_SECRET)\n"
    assert tenant.tenant.token_requests == [] and tenant.tenant.rpcs == []


# ---------------------------------------------------------------------------------------------- shutdown


async def test_stop_during_a_sync_finishes_it_retryable_and_exits_quickly(start: Starter) -> None:
    run = await start(state=ToyState(list_delay=30.0), env={"BATON_SHUTDOWN_GRACE_SECONDS": "20"})
    tid = run.tenant.enqueue_sync()
    await run.tenant.wait_for(lambda: run.tenant.tenant.tasks[tid].heartbeats)
    began = time.monotonic()
    assert await run.stopped(within=15) == 0
    assert time.monotonic() - began < 5.0  # far below the 20 s grace: a sync is not waited for
    rec = run.tenant.finish_of(tid)
    assert rec is not None and (code_of(rec), rec.non_retryable) == ("CANCELLED", False)
    assert "shutting down" in rec.status_message
    assert run.tenant.uploads == []


async def test_stop_lets_a_grant_finish_within_the_grace_period(start: Starter) -> None:
    run = await start(state=ToyState(grant_delay=0.6), env={"BATON_SHUTDOWN_GRACE_SECONDS": "5"})
    tid = run.tenant.enqueue_grant(member_ent("eng"), user_res("dave", "Dave"))
    await run.tenant.wait_for(lambda: run.tenant.tenant.tasks[tid].state == "running")
    polls = len(run.tenant.tenant.polls)
    assert await run.stopped() == 0
    rec = run.tenant.finish_of(tid)
    assert rec is not None and rec.outcome == "success" and "dave" in run.state.members["eng"]
    assert len(run.tenant.tenant.polls) <= polls + 1  # at most a poll already in flight; no new work


async def test_a_grant_outliving_the_grace_period_is_cancelled_retryable(start: Starter) -> None:
    run = await start(state=ToyState(grant_delay=30), env={"BATON_SHUTDOWN_GRACE_SECONDS": "1.5"})
    tid = run.tenant.enqueue_grant(member_ent("eng"), user_res("dave", "Dave"))
    await run.tenant.wait_for(lambda: run.tenant.tenant.tasks[tid].state == "running")
    began_wall, began = time.time(), time.monotonic()
    assert await run.stopped() == 0
    # The cancelled grant is reported inside the grace period (the tenant's own clock says when); the
    # process returns right after (generous margin: a loaded CI machine is slow to tear down channels).
    rec = run.tenant.finish_of(tid)
    assert rec is not None and rec.at - began_wall <= 1.5
    assert time.monotonic() - began < 3.0
    assert rec is not None and (code_of(rec), rec.non_retryable) == ("CANCELLED", False)
    assert "grace period" in rec.status_message
