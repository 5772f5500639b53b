"""What the tenant receives, decoded from the raw requests: every FinishTask shape (spec §4.7, §4.8) and
how SyncFullTask fields become the sync (spec §5.2)."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.protobuf.message import Message

from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    annotation_ratelimit_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2
from connector.sandbox.tenant import FinishRecord
from connector.sdk import model
from connector.sdk.errors import ConnectorError
from connector.service.testing_app import ToyState, group_res, rate_limited, user_res
from tests import service_support
from tests.service_support import Starter, member_ent

new_tenant = service_support.new_tenant  # fixtures
start = service_support.start

Task = baton_pb2.Task
URL = "type.googleapis.com/c1.connector.v2."


def success_shape(rec: FinishRecord, response: type[Message] | None) -> Message | None:
    """A success finish exactly as the Go SDK builds it; returns the unpacked response."""
    req = rec.request
    assert req.WhichOneof("final_state") == "success"
    assert req.host_id == "test-host" and req.task_id == rec.task_id
    assert not req.HasField("status")  # status only on error
    if response is None:
        assert not req.success.HasField("response") and list(req.success.annotations) == []
        return None
    assert req.success.response.type_url == URL + response.DESCRIPTOR.name
    msg = response()
    assert req.success.response.Unpack(msg)
    # The finish annotations are the response's own annotations.
    assert list(req.success.annotations) == list(msg.annotations)  # type: ignore[attr-defined]
    return msg


def error_shape(rec: FinishRecord, code: grpc.StatusCode, *, non_retryable: bool) -> None:
    req = rec.request
    assert req.WhichOneof("final_state") == "error"
    assert req.host_id == "test-host" and req.task_id == rec.task_id
    assert req.status.code == code.value[0] and req.status.message
    assert req.error.non_retryable is non_retryable
    assert not req.error.HasField("response")  # never set, as in Go
    assert list(req.error.annotations) == []


async def test_every_finish_shape(start: Starter) -> None:
    state = ToyState()
    state.fail_group["ops"] = rate_limited("slow down")
    run = await start(state=state)
    t = run.tenant
    dave = user_res("dave", "Dave")
    eng_dave = model.new_grant(group_res("eng"), "member", model.resource_id("user", "dave"))
    ids = {
        "sync": t.enqueue_sync(),
        "grant": t.enqueue_grant(member_ent("eng"), dave),
        "grant again": t.enqueue_grant(member_ent("eng"), dave),
        "revoke": t.enqueue_revoke(eng_dave),
        "revoke again": t.enqueue_revoke(eng_dave),
        "account": t.enqueue_create_account(resource_pb2.AccountInfo(login="erin")),
        "delete": t.enqueue_delete_resource(model.resource_id("user", "carol")),
        "grant error": t.enqueue_grant(member_ent("ops"), dave),
        "delete error": t.enqueue_delete_resource(model.resource_id("user", "nobody")),
        "malformed revoke": t.enqueue(Task(revoke=Task.RevokeTask())),
        "malformed delete": t.enqueue(Task(delete_resource=Task.DeleteResourceTask())),
        "create resource": t.enqueue_create_resource(group_res("new")),
        "rotate": t.enqueue_rotate_credentials(model.resource_id("user", "alice")),
        "event feed": t.enqueue(Task(event_feed=Task.EventFeedTask())),
    }
    recs = {name: await t.wait_finished(tid, within=15) for name, tid in ids.items()}

    assert success_shape(recs["sync"], None) is None
    granted = success_shape(recs["grant"], grant_pb2.GrantManagerServiceGrantResponse)
    assert isinstance(granted, grant_pb2.GrantManagerServiceGrantResponse)
    assert [g.id for g in granted.grants] == ["group:eng:member:user:dave"]
    again = success_shape(recs["grant again"], grant_pb2.GrantManagerServiceGrantResponse)
    assert again is not None and model.has_annotation(
        again.annotations, annotation_grant_pb2.GrantAlreadyExists
    )
    assert success_shape(recs["revoke"], grant_pb2.GrantManagerServiceRevokeResponse) is not None
    gone = success_shape(recs["revoke again"], grant_pb2.GrantManagerServiceRevokeResponse)
    assert gone is not None and model.has_annotation(
        gone.annotations, annotation_grant_pb2.GrantAlreadyRevoked
    )
    account = success_shape(recs["account"], resource_pb2.CreateAccountResponse)
    assert isinstance(account, resource_pb2.CreateAccountResponse) and account.HasField("success")
    assert success_shape(recs["delete"], resource_pb2.DeleteResourceResponse) is not None

    # Connector errors: non-retryable, code and details kept.
    error_shape(recs["grant error"], grpc.StatusCode.UNAVAILABLE, non_retryable=False)
    (detail,) = recs["grant error"].request.status.details
    assert detail.type_url == URL + "RateLimitDescription"
    assert isinstance(recs["grant error"].status_details[0], annotation_ratelimit_pb2.RateLimitDescription)
    assert "slow down" in recs["grant error"].status_message
    error_shape(recs["delete error"], grpc.StatusCode.NOT_FOUND, non_retryable=True)
    # Malformed tasks: UNKNOWN (no gRPC status in Go's error), non-retryable, no connector call.
    for name in ("malformed revoke", "malformed delete"):
        error_shape(recs[name], grpc.StatusCode.UNKNOWN, non_retryable=True)
        assert "malformed" in recs[name].status_message
    for name in ("create resource", "rotate"):
        error_shape(recs[name], grpc.StatusCode.UNIMPLEMENTED, non_retryable=True)
    error_shape(recs["event feed"], grpc.StatusCode.UNKNOWN, non_retryable=False)
    assert recs["event feed"].status_message == "unsupported task type"
    assert list(recs["event feed"].request.status.details) == []
    assert not any(c.startswith("revoke ") and "nobody" in c for c in state.calls)
    # Every task was finished exactly once.
    assert sorted(f.task_id for f in t.finishes) == sorted(ids.values())


async def test_a_failed_sync_is_a_retryable_error_without_upload(start: Starter) -> None:
    state = ToyState()
    state.fail_grant_listing["eng"] = ConnectorError(grpc.StatusCode.PERMISSION_DENIED, "no access")
    run = await start(state=state)
    rec = await run.tenant.wait_finished(run.tenant.enqueue_sync())
    error_shape(rec, grpc.StatusCode.PERMISSION_DENIED, non_retryable=False)
    assert run.tenant.uploads == []


# ---------------------------------------------------------------------------------------------- sync options


def _grants(path: Path) -> dict[str, set[str]]:
    """entitlement id -> principal ids, from an uploaded c1z."""
    out: dict[str, set[str]] = {}
    with C1zReader(path) as reader:
        for g in reader.grants():
            out.setdefault(g.entitlement.id, set()).add(
                f"{g.principal.id.resource_type}:{g.principal.id.resource}"
            )
    return out


async def test_sync_task_fields_become_sync_options(start: Starter) -> None:
    run = await start(state=ToyState(nested={"ops": {"eng"}}))
    t = run.tenant
    ids = {
        "full": t.enqueue_sync(),
        "no expansion": t.enqueue_sync(skip_expand_grants=True),
        "no grants": t.enqueue_sync(skip_grants=True),
        "resources only": t.enqueue_sync(skip_entitlements_and_grants=True),
        "groups only": t.enqueue_sync(sync_resource_type_ids=["group"]),
        "targeted": t.enqueue_sync(targeted_sync_resources=[group_res("ops")]),
    }
    for tid in ids.values():
        rec = await t.wait_finished(tid)
        assert rec.outcome == "success", rec.status_message
    up = {name: next(u for u in t.uploads if u.task_id == tid) for name, tid in ids.items()}
    summary = {name: u.summary for name, u in up.items()}
    assert all(s is not None for s in summary.values())

    full = _grants(up["full"].path)
    # ops holds carol and the eng group; expansion gives eng's members (alice, bob) ops membership too.
    assert full["group:ops:member"] == {"user:carol", "group:eng", "user:alice", "user:bob"}
    assert _grants(up["no expansion"].path)["group:ops:member"] == {"user:carol", "group:eng"}
    s = summary["no grants"]
    assert s is not None and (s.resources, s.entitlements, s.grants) == (7, 3, 0)
    s = summary["resources only"]
    assert s is not None and (s.resources, s.entitlements, s.grants) == (7, 0, 0)
    s = summary["groups only"]
    assert s is not None and s.resources_by_type == {"group": 3}
    s = summary["targeted"]
    assert s is not None and s.resources_by_type == {"group": 1} and s.resource_names["group"] == ["Ops"]
    assert set(_grants(up["targeted"].path)) == {"group:ops:member"}
    assert "get group ops" in run.state.calls


async def test_local_sync_flags_in_service_mode(start: Starter) -> None:
    # The local resource-type filter is the fallback when a task names none; the local skip flags are
    # ignored in service mode (the task decides).
    run = await start(
        env={
            "BATON_SYNC_RESOURCE_TYPES": "user",
            "BATON_SKIP_ENTITLEMENTS_AND_GRANTS": "true",
            "BATON_SKIP_GRANTS": "true",
        }
    )
    fallback = run.tenant.enqueue_sync()
    explicit = run.tenant.enqueue_sync(sync_resource_type_ids=["group"])
    for tid in (fallback, explicit):
        assert (await run.tenant.wait_finished(tid)).outcome == "success"
    by_task = {u.task_id: u.summary for u in run.tenant.uploads}
    users, groups = by_task[fallback], by_task[explicit]
    assert users is not None and users.resources_by_type == {"user": 4}
    assert groups is not None and groups.resources_by_type == {"group": 3}
    assert (groups.entitlements, groups.grants) == (3, 3)
