"""A fake ConductorOne tenant: token endpoint and BatonService on one TLS address (spec §8).

Layout: an asyncio TLS front end owns the public address. Each accepted connection is routed on its first
bytes: the HTTP/2 connection preface goes to an internal grpc.aio server (plaintext h2c on loopback), any
other traffic to an internal aiohttp app that serves `POST /auth/v1/token` over HTTP/1.1. ALPN offers
`http/1.1` before `h2`, so gRPC clients (which offer only h2) get h2 while generic HTTP clients that could
speak either get HTTP/1.1; the token endpoint does not speak HTTP/2.

The tenant is as strict as the real one: assertions are verified (alg, signature, iss, sub, aud, nbf, exp),
every RPC needs a live bearer token, task ids are 27 alphanumerics, uploads must be metadata → data* → eof
with a matching SHA-256, a sync can only succeed after a complete c1z upload. Both polling styles are
served: GetTask and batched GetTasks (page size, known task ids). Faults can be injected: UNAVAILABLE (or
any code) on any RPC, a broken upload stream (optionally only for one kind of content, e.g. debug.log),
401s from the token endpoint, cancelled or failing heartbeats (scripted). `proxy.ConnectProxy` is a fake
corporate HTTP CONNECT proxy to reach it through.

Usable in process (`start_tenant`) by tests, the demo and the benchmark, and by itself:
`python -m connector sandbox tenant`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import ssl
import string
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
from aiohttp import web
from google.protobuf import any_pb2, descriptor_pool, duration_pb2, json_format, message_factory, struct_pb2
from google.protobuf.message import Message

from connector.pb.c1.connector.v2 import (  # noqa: F401  (imports register the Any types we unpack)
    action_pb2,
    annotation_entitlement_pb2,
    annotation_external_link_pb2,
    annotation_grant_pb2,
    annotation_ratelimit_pb2,
    annotation_request_pb2,
    annotation_resource_tree_pb2,
    annotation_trait_pb2,
    annotation_v1_identifier_pb2,
    connector_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2, baton_pb2_grpc
from connector.sandbox.tenant import c1z as c1z_mod
from connector.sandbox.tenant.certs import make_pki
from connector.sandbox.tenant.keys import (
    ASSERTION_TYPE,
    InvalidAssertion,
    IssuedSecret,
    issue_secret,
    new_client_name,
    verify_assertion,
)
from connector.sandbox.tenant.streams import close_writer, pipe

log = logging.getLogger("connector.sandbox.tenant")

Task = baton_pb2.Task
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_CHUNK = 1024 * 1024
_ID_ALPHABET = string.ascii_letters + string.digits


def new_task_id() -> str:
    """27 alphanumerics, the shape of a KSUID (the tenant's validation rejects anything else)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(27))


def _duration(seconds: float | None) -> duration_pb2.Duration | None:
    """None leaves the field unset (a tenant that says nothing about the cadence)."""
    if seconds is None:
        return None
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(values))
    return out


def action_result(record: FinishRecord) -> dict[str, Any]:
    """The result values of a finished action_invoke / action_status task ({} when there are none)."""
    response = record.response
    if isinstance(response, action_pb2.InvokeActionResponse | action_pb2.GetActionStatusResponse):
        return json_format.MessageToDict(response.response) if response.HasField("response") else {}
    return {}


def unpack_any(value: any_pb2.Any) -> Message:
    """Unpack an Any by its type URL when the message type is known; else return the Any itself."""
    name = value.TypeName()
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return value
    msg = message_factory.GetMessageClass(desc)()
    value.Unpack(msg)
    return msg


# ------------------------------------------------------------------------------------------ records


TaskState = Literal["pending", "running", "finished"]


@dataclass
class TenantTask:
    id: str
    task: baton_pb2.Task
    state: TaskState = "pending"
    deliveries: int = 0
    leased_until: float = 0.0
    cancel_requested: bool = False
    heartbeats: list[float] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.task.WhichOneof("task_type") or "unknown"


@dataclass
class FinishRecord:
    """One FinishTask call, decoded."""

    task_id: str
    task_type: str
    host_id: str
    outcome: Literal["success", "error"]
    response: Message | None
    annotations: list[Message]
    status_code: int
    status_message: str
    status_details: list[Message]
    non_retryable: bool
    request: baton_pb2.BatonServiceFinishTaskRequest
    duplicate: bool = False
    at: float = field(default_factory=time.time)


@dataclass
class UploadRecord:
    task_id: str
    host_id: str
    size: int
    sha256: str
    kind: str  # "c1z-v1", "c1z-v3" or "other" (e.g. debug.log)
    path: Path
    summary: c1z_mod.C1zSummary | None = None
    decode_error: str | None = None
    chunks: int = 0
    at: float = field(default_factory=time.time)


@dataclass
class HelloRecord:
    host_id: str
    task_id: str
    build_info: baton_pb2.BatonServiceHelloRequest.BuildInfo
    os_info: baton_pb2.BatonServiceHelloRequest.OSInfo
    metadata: connector_pb2.ConnectorMetadata
    user_agent: str
    at: float = field(default_factory=time.time)


@dataclass
class TokenRequestRecord:
    ok: bool
    status: int
    client_id: str
    error: str = ""
    header: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)
    user_agent: str = ""
    secret: IssuedSecret | None = None  # the registered secret whose key signed the assertion
    at: float = field(default_factory=time.time)


@dataclass
class RpcRecord:
    method: str
    code: str  # "OK" or the status code name
    at: float
    user_agent: str = ""


@dataclass
class _Fault:
    code: grpc.StatusCode
    message: str
    remaining: int | None  # None = until cleared


@dataclass
class _Client:
    client_id: str
    audience: str
    keys: list[IssuedSecret]


@dataclass
class _Token:
    client_id: str
    expires_at: float


# ------------------------------------------------------------------------------------------ the tenant


class Tenant(baton_pb2_grpc.BatonServiceServicer):
    """Task queue, token issuer and recorder. All methods run on the tenant's event loop."""

    def __init__(
        self,
        *,
        data_dir: Path,
        tenant_host: str,
        next_poll: float | None,
        next_heartbeat: float | None,
        token_ttl: int,
        lease_seconds: float,
        requeue_retryable: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = data_dir
        self.tenant_host = tenant_host
        self.next_poll = next_poll
        self.next_heartbeat = next_heartbeat
        self.token_ttl = token_ttl
        self.lease_seconds = lease_seconds
        self.requeue_retryable = requeue_retryable
        self.clock = clock

        self.clients: dict[str, _Client] = {}
        self.tokens: dict[str, _Token] = {}
        self.tasks: dict[str, TenantTask] = {}
        self.queue: deque[str] = deque()
        self.finishes: list[FinishRecord] = []
        self.uploads: list[UploadRecord] = []
        self.hellos: list[HelloRecord] = []
        self.token_requests: list[TokenRequestRecord] = []
        self.rpcs: list[RpcRecord] = []
        self.polls: list[float] = []
        self.heartbeat_log: list[tuple[str, float]] = []

        self._rpc_faults: dict[str, deque[_Fault]] = {}
        self._token_faults = 0
        self._corrupt_tokens = 0
        self._break_uploads = 0
        self._break_upload_after_chunks = 1
        self._break_upload_kind: str | None = None
        self._heartbeat_script: deque[bool] = deque()  # True = fail this heartbeat
        self._cancel_all_heartbeats = False
        self.get_tasks_enabled = True
        self.batch_polls: list[baton_pb2.BatonServiceGetTasksRequest] = []
        self._changed = asyncio.Condition()
        self._upload_seq = 0

    # --------------------------------------------------------------------------------- clients & tokens

    def register_client(self, *, name: str | None = None, with_kid: bool = False) -> tuple[str, str]:
        """A new client id (`name@host/pcc`) and secret for this tenant."""
        client_id = f"{name or new_client_name()}@{self.tenant_host}/pcc"
        issued = issue_secret(with_kid=with_kid)
        self.clients[client_id] = _Client(client_id, self.tenant_host.split(":", 1)[0], [issued])
        return client_id, issued.secret

    def rotate_secret(self, client_id: str, *, keep_old: bool = False, revoke_tokens: bool = False) -> str:
        """Issue a new secret for `client_id`; the old one stops working unless `keep_old`."""
        client = self.clients[client_id]
        issued = issue_secret(with_kid=any(k.kid for k in client.keys))
        client.keys = [*client.keys, issued] if keep_old else [issued]
        if revoke_tokens:
            self.revoke_tokens(client_id)
        return issued.secret

    def revoke_tokens(self, client_id: str | None = None) -> None:
        for tok in [t for t, info in self.tokens.items() if client_id is None or info.client_id == client_id]:
            del self.tokens[tok]

    async def token_endpoint(self, request: web.Request) -> web.Response:
        ua = request.headers.get("User-Agent", "")
        if request.content_type != "application/x-www-form-urlencoded":
            return self._token_error(400, "invalid_request", "expected a form body", "", ua)
        form = await request.post()
        client_id = str(form.get("client_id", ""))
        if self._token_faults:
            self._token_faults -= 1
            return self._token_error(401, "invalid_client", "injected failure", client_id, ua)
        if form.get("grant_type") != "client_credentials":
            return self._token_error(
                400, "unsupported_grant_type", "grant_type must be client_credentials", client_id, ua
            )
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return self._token_error(
                400, "invalid_request", "unsupported client_assertion_type", client_id, ua
            )
        for unexpected in ("scope", "audience"):
            if unexpected in form:
                return self._token_error(
                    400, "invalid_request", f"unexpected {unexpected} parameter", client_id, ua
                )
        client = self.clients.get(client_id)
        if client is None:
            return self._token_error(401, "invalid_client", "unknown client", client_id, ua)
        try:
            parsed = verify_assertion(
                str(form.get("client_assertion", "")),
                client_id=client_id,
                audience=client.audience,
                keys=client.keys,
                now=self.clock(),
            )
        except InvalidAssertion as err:
            return self._token_error(401, "invalid_client", str(err), client_id, ua)
        token = secrets.token_urlsafe(32)
        ttl = self.token_ttl
        if self._corrupt_tokens:
            # A broken token service: a "token" no HTTP/2 header may carry, valid for one call.
            self._corrupt_tokens -= 1
            token, ttl = token[:8] + "\n" + token[8:], 0
        self.tokens[token] = _Token(client_id, self.clock() + self.token_ttl)
        self.token_requests.append(
            TokenRequestRecord(
                True,
                200,
                client_id,
                header=parsed["header"],
                claims=parsed["claims"],
                user_agent=ua,
                secret=parsed["key"],
            )
        )
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": ttl})

    def _token_error(self, status: int, error: str, desc: str, client_id: str, ua: str) -> web.Response:
        self.token_requests.append(
            TokenRequestRecord(False, status, client_id, error=f"{error}: {desc}", user_agent=ua)
        )
        return web.json_response({"error": error, "error_description": desc}, status=status)

    # --------------------------------------------------------------------------------- faults

    def fail_rpc(
        self,
        method: str,
        times: int | None = 1,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        message: str = "injected failure",
    ) -> None:
        """The next `times` calls of `method` (e.g. "GetTask", or "*" for any) fail with `code`."""
        self._rpc_faults.setdefault(method, deque()).append(_Fault(code, message, times))

    def clear_faults(self) -> None:
        self._rpc_faults.clear()
        self._token_faults = 0
        self._corrupt_tokens = 0
        self._break_uploads = 0
        self._heartbeat_script.clear()
        self._cancel_all_heartbeats = False

    def reject_tokens(self, times: int = 1) -> None:
        """The next `times` token requests get 401 regardless of the assertion."""
        self._token_faults = times

    def corrupt_tokens(self, times: int = 1) -> None:
        """The next `times` token requests succeed with an access token holding a newline, which no
        gRPC call can send, and an `expires_in` of 0."""
        self._corrupt_tokens = times

    def break_uploads(self, times: int = 1, after_chunks: int = 1, kind: str | None = None) -> None:
        """The next `times` UploadAsset streams are aborted with UNAVAILABLE after `after_chunks` chunks.
        With `kind` ("c1z-v1", "c1z-v3", "other"), only streams whose content is of that kind count."""
        self._break_uploads = times
        self._break_upload_after_chunks = after_chunks
        self._break_upload_kind = kind

    def fail_heartbeats(self, times: int, after: int = 0) -> None:
        """Let the next `after` heartbeats through, then fail `times` in a row with UNAVAILABLE."""
        self.script_heartbeats("o" * after + "x" * times)

    def script_heartbeats(self, script: str) -> None:
        """The next heartbeats, one character each: "x" fails with UNAVAILABLE, "o" answers normally."""
        self._heartbeat_script = deque(c == "x" for c in script)

    def cancel_heartbeats(self, enabled: bool = True) -> None:
        """Every heartbeat answers cancelled=true (until disabled)."""
        self._cancel_all_heartbeats = enabled

    async def cancel_task(self, task_id: str) -> None:
        """The next heartbeat of this task answers cancelled=true."""
        self.tasks[task_id].cancel_requested = True

    def _take_fault(self, method: str) -> _Fault | None:
        for key in (method, "*"):
            q = self._rpc_faults.get(key)
            while q:
                fault = q[0]
                if fault.remaining is None:
                    return fault
                if fault.remaining <= 0:
                    q.popleft()
                    continue
                fault.remaining -= 1
                if fault.remaining == 0:
                    q.popleft()
                return fault
        return None

    async def _enter(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> RpcRecord:
        """Common prologue: fault injection, then bearer-token auth. Returns the call's record, whose code
        `_fail` updates if the handler rejects the call later."""
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        ua = md.get("user-agent", "")
        fault = self._take_fault(method)
        if fault is not None:
            self.rpcs.append(RpcRecord(method, fault.code.name, self.clock(), ua))
            await context.abort(fault.code, fault.message)
        auth = md.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        info = self.tokens.get(token) if scheme == "Bearer" else None
        if info is None or info.expires_at <= self.clock():
            self.rpcs.append(RpcRecord(method, "UNAUTHENTICATED", self.clock(), ua))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or expired access token")
        record = RpcRecord(method, "OK", self.clock(), ua)
        self.rpcs.append(record)
        return record

    async def _fail(
        self,
        record: RpcRecord,
        context: grpc.aio.ServicerContext[Any, Any],
        code: grpc.StatusCode,
        message: str,
    ) -> None:
        record.code = code.name
        await context.abort(code, message)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], within: float) -> Any:
        """Wait until `predicate()` is truthy (re-checked on every tenant state change)."""
        async with asyncio.timeout(within), self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                await self._changed.wait()

    # --------------------------------------------------------------------------------- the queue

    def enqueue(self, task: baton_pb2.Task) -> str:
        if not task.id:
            task.id = new_task_id()
        self.tasks[task.id] = TenantTask(task.id, task)
        self.queue.append(task.id)
        return task.id

    def _reap_leases(self) -> None:
        now = self.clock()
        for t in self.tasks.values():
            if t.state == "running" and t.leased_until and t.leased_until < now:
                # The client went quiet (crash, abandoned task): hand the task out again.
                log.info("lease expired for task %s (%s); re-queued", t.id, t.type)
                t.state = "pending"
                self.queue.append(t.id)

    # --------------------------------------------------------------------------------- RPCs

    async def Hello(
        self, request: baton_pb2.BatonServiceHelloRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> baton_pb2.BatonServiceHelloResponse:
        rec = await self._enter("Hello", context)
        if not 1 <= len(request.host_id) <= 256:
            await self._fail(
                rec, context, grpc.StatusCode.INVALID_ARGUMENT, "host_id must be 1..256 characters"
            )
        if not request.HasField("connector_metadata") or not request.connector_metadata.display_name:
            await self._fail(
                rec, context, grpc.StatusCode.INVALID_ARGUMENT, "connector_metadata.display_name is required"
            )
        os_fields = [f.name for f in baton_pb2.BatonServiceHelloRequest.OSInfo.DESCRIPTOR.fields]
        empty = [n for n in os_fields if not getattr(request.os_info, n)]
        if empty:
            await self._fail(
                rec,
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"os_info fields are empty: {', '.join(empty)}",
            )
        if request.task_id:
            t = self.tasks.get(request.task_id)
            if t is None or t.type != "hello":
                await self._fail(rec, context, grpc.StatusCode.NOT_FOUND, f"no hello task {request.task_id}")
            assert t is not None
            t.state = "finished"
        self.hellos.append(
            HelloRecord(
                request.host_id,
                request.task_id,
                request.build_info,
                request.os_info,
                request.connector_metadata,
                rec.user_agent,
            )
        )
        await self._notify()
        return baton_pb2.BatonServiceHelloResponse()

    async def GetTask(
        self, request: baton_pb2.BatonServiceGetTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> baton_pb2.BatonServiceGetTaskResponse:
        rec = await self._enter("GetTask", context)
        if not request.host_id:
            await self._fail(rec, context, grpc.StatusCode.INVALID_ARGUMENT, "host_id is required")
        self.polls.append(time.monotonic())
        self._reap_leases()
        resp = baton_pb2.BatonServiceGetTaskResponse(
            next_poll=_duration(self.next_poll), next_heartbeat=_duration(self.next_heartbeat)
        )
        leased = self._lease(1, set())
        if leased:
            resp.task.CopyFrom(leased[0])
        else:
            resp.task.none.SetInParent()
        await self._notify()
        return resp

    def _lease(self, limit: int, exclude: set[str]) -> list[baton_pb2.Task]:
        """Hand out up to `limit` pending tasks (not in `exclude`), marking them running with a lease."""
        out: list[baton_pb2.Task] = []
        skipped: list[str] = []
        while self.queue and len(out) < limit:
            tid = self.queue.popleft()
            t = self.tasks[tid]
            if t.state != "pending":
                continue
            if tid in exclude:
                skipped.append(tid)
                continue
            t.state = "running"
            t.deliveries += 1
            t.leased_until = self.clock() + self.lease_seconds
            task = Task()
            task.CopyFrom(t.task)
            task.status = Task.STATUS_RUNNING
            out.append(task)
        self.queue.extendleft(reversed(skipped))
        return out

    async def GetTasks(
        self, request: baton_pb2.BatonServiceGetTasksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> baton_pb2.BatonServiceGetTasksResponse:
        """Batched polling (BATON_GET_TASKS): up to `page_size` tasks, none of `known_task_ids`."""
        rec = await self._enter("GetTasks", context)
        if not self.get_tasks_enabled:
            await self._fail(
                rec, context, grpc.StatusCode.UNIMPLEMENTED, "GetTasks is not enabled on this tenant"
            )
        if not request.host_id:
            await self._fail(rec, context, grpc.StatusCode.INVALID_ARGUMENT, "host_id is required")
        if not 1 <= request.page_size <= 100:
            await self._fail(rec, context, grpc.StatusCode.INVALID_ARGUMENT, "page_size must be 1..100")
        bad = [k for k in request.known_task_ids if len(k) != 27 or not k.isalnum()]
        if bad or len(request.annotations) > 16:
            await self._fail(
                rec, context, grpc.StatusCode.INVALID_ARGUMENT, "known_task_ids must be 27 alphanumerics"
            )
        self.polls.append(time.monotonic())
        self.batch_polls.append(request)
        self._reap_leases()
        resp = baton_pb2.BatonServiceGetTasksResponse(
            tasks=self._lease(request.page_size, set(request.known_task_ids)),
            next_poll=_duration(self.next_poll),
            next_heartbeat=_duration(self.next_heartbeat),
        )
        await self._notify()
        return resp

    async def Heartbeat(
        self, request: baton_pb2.BatonServiceHeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> baton_pb2.BatonServiceHeartbeatResponse:
        rec = await self._enter("Heartbeat", context)
        t = self.tasks.get(request.task_id)
        if t is None:
            await self._fail(rec, context, grpc.StatusCode.NOT_FOUND, f"unknown task {request.task_id}")
        assert t is not None
        now = self.clock()
        self.heartbeat_log.append((t.id, time.monotonic()))
        if self._heartbeat_script and self._heartbeat_script.popleft():
            await self._fail(rec, context, grpc.StatusCode.UNAVAILABLE, "injected heartbeat failure")
        t.heartbeats.append(now)
        t.leased_until = now + self.lease_seconds
        cancelled = t.cancel_requested or self._cancel_all_heartbeats or t.state != "running"
        await self._notify()
        return baton_pb2.BatonServiceHeartbeatResponse(
            next_heartbeat=_duration(self.next_heartbeat), cancelled=cancelled
        )

    async def UploadAsset(
        self,
        request_iterator: AsyncIterator[baton_pb2.BatonServiceUploadAssetRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> baton_pb2.BatonServiceUploadAssetResponse:
        rec = await self._enter("UploadAsset", context)
        uploads = self.data_dir / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=uploads, prefix=".partial-")
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        size = chunks = 0
        meta: baton_pb2.BatonServiceUploadAssetRequest.UploadMetadata | None = None
        checksum: bytes | None = None
        head = b""
        try:
            with os.fdopen(fd, "wb") as out:
                async for msg in request_iterator:
                    kind = msg.WhichOneof("msg")
                    if kind is None:
                        await self._fail(
                            rec, context, grpc.StatusCode.INVALID_ARGUMENT, "upload message without msg"
                        )
                    if checksum is not None:
                        await self._fail(rec, context, grpc.StatusCode.INVALID_ARGUMENT, "message after eof")
                    if kind == "metadata":
                        if meta is not None:
                            await self._fail(
                                rec, context, grpc.StatusCode.INVALID_ARGUMENT, "metadata sent twice"
                            )
                        meta = msg.metadata
                        t = self.tasks.get(meta.task_id)
                        if t is None:
                            await self._fail(
                                rec, context, grpc.StatusCode.NOT_FOUND, f"unknown task {meta.task_id}"
                            )
                        continue
                    if meta is None:
                        await self._fail(
                            rec,
                            context,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            "the first message must be metadata",
                        )
                    if kind == "data":
                        data = msg.data.data
                        if not 1 <= len(data) <= MAX_CHUNK:
                            await self._fail(
                                rec,
                                context,
                                grpc.StatusCode.INVALID_ARGUMENT,
                                "data chunk must be 1 B..1 MiB",
                            )
                        chunks += 1
                        size += len(data)
                        if len(head) < 5:
                            head += data[: 5 - len(head)]
                        digest.update(data)
                        out.write(data)
                        if self._should_break(chunks, head):
                            self._break_uploads -= 1
                            await self._fail(
                                rec, context, grpc.StatusCode.UNAVAILABLE, "upload stream broken (injected)"
                            )
                    else:
                        checksum = msg.eof.sha256_checksum
                        if len(checksum) != 32:
                            await self._fail(
                                rec,
                                context,
                                grpc.StatusCode.INVALID_ARGUMENT,
                                "sha256_checksum must be 32 bytes",
                            )
            if meta is None or checksum is None:
                await self._fail(
                    rec, context, grpc.StatusCode.INVALID_ARGUMENT, "upload ended without metadata and eof"
                )
            assert meta is not None and checksum is not None
            if checksum != digest.digest():
                await self._fail(rec, context, grpc.StatusCode.INVALID_ARGUMENT, "sha256 checksum mismatch")
            self._upload_seq += 1
            kind_name = c1z_mod.kind_of(head)
            ext = ".c1z" if kind_name.startswith("c1z") else ".bin"
            final = uploads / f"{meta.task_id}-{self._upload_seq}{ext}"
            os.replace(tmp, final)  # local rename: cheap enough for the loop
            record = UploadRecord(
                meta.task_id, meta.host_id, size, digest.hexdigest(), kind_name, final, chunks=chunks
            )
            if kind_name == "c1z-v1":
                try:
                    record.summary = await asyncio.to_thread(c1z_mod.summarize, final)
                except c1z_mod.C1zDecodeError as err:
                    record.decode_error = str(err)
            self.uploads.append(record)
            await self._notify()
            return baton_pb2.BatonServiceUploadAssetResponse()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _should_break(self, chunks: int, head: bytes) -> bool:
        if self._break_uploads <= 0 or chunks != self._break_upload_after_chunks:
            return False
        return self._break_upload_kind is None or c1z_mod.kind_of(head) == self._break_upload_kind

    async def FinishTask(
        self, request: baton_pb2.BatonServiceFinishTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> baton_pb2.BatonServiceFinishTaskResponse:
        rec = await self._enter("FinishTask", context)
        state = request.WhichOneof("final_state")
        if state is None:
            await self._fail(
                rec, context, grpc.StatusCode.INVALID_ARGUMENT, "final_state (error or success) is required"
            )
        t = self.tasks.get(request.task_id)
        if t is None:
            await self._fail(rec, context, grpc.StatusCode.NOT_FOUND, f"unknown task {request.task_id}")
        assert t is not None and state is not None
        if t.type == "hello":
            await self._fail(
                rec, context, grpc.StatusCode.FAILED_PRECONDITION, "hello tasks are completed by Hello"
            )
        if state == "success":
            if request.HasField("status") and request.status.code != 0:
                await self._fail(
                    rec, context, grpc.StatusCode.INVALID_ARGUMENT, "status must be unset on success"
                )
            if t.type == "sync_full" and not any(
                u.task_id == t.id and u.kind.startswith("c1z") for u in self.uploads
            ):
                await self._fail(
                    rec, context, grpc.StatusCode.FAILED_PRECONDITION, "sync finished without a c1z upload"
                )
            resp_msg = unpack_any(request.success.response) if request.success.HasField("response") else None
            record = FinishRecord(
                t.id,
                t.type,
                request.host_id,
                "success",
                resp_msg,
                [unpack_any(a) for a in request.success.annotations],
                0,
                "",
                [],
                False,
                request,
            )
        else:
            if request.status.code == 0:
                await self._fail(
                    rec, context, grpc.StatusCode.INVALID_ARGUMENT, "an error finish needs a non-OK status"
                )
            record = FinishRecord(
                t.id,
                t.type,
                request.host_id,
                "error",
                None,
                [unpack_any(a) for a in request.error.annotations],
                request.status.code,
                request.status.message,
                [unpack_any(d) for d in request.status.details],
                request.error.non_retryable,
                request,
            )
        record.duplicate = t.state == "finished"
        self.finishes.append(record)
        if not record.duplicate:
            t.state = "finished"
            if record.outcome == "error" and not record.non_retryable and self.requeue_retryable:
                t.state = "pending"
                t.cancel_requested = False
                self.queue.append(t.id)
        await self._notify()
        return baton_pb2.BatonServiceFinishTaskResponse()

    async def StartDebugging(
        self, request: baton_pb2.StartDebuggingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> baton_pb2.StartDebuggingResponse:
        rec = await self._enter("StartDebugging", context)
        await self._fail(rec, context, grpc.StatusCode.UNIMPLEMENTED, "StartDebugging is not implemented")
        raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------ TLS front end


class _FrontEnd:
    """Terminates TLS and routes each connection to the gRPC or HTTP back end by its first bytes."""

    def __init__(self, ssl_ctx: ssl.SSLContext, grpc_port: int, http_port: int) -> None:
        self._ssl = ssl_ctx
        self._grpc_port = grpc_port
        self._http_port = http_port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Accepted connections by protocol ("grpc" or "http"): lets tests see channel reuse.
        self.connections: dict[str, int] = {"grpc": 0, "http": 0}

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._accept, host, port, ssl=self._ssl)
        return int(self._server.sockets[0].getsockname()[1])

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            first = b""
            async with asyncio.timeout(10):
                while len(first) < len(H2_PREFACE) and H2_PREFACE.startswith(first):
                    chunk = await reader.read(len(H2_PREFACE) - len(first))
                    if not chunk:
                        return
                    first += chunk
            is_grpc = first.startswith(H2_PREFACE)
            self.connections["grpc" if is_grpc else "http"] += 1
            port = self._grpc_port if is_grpc else self._http_port
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            self._conns.add(up_writer)
            up_writer.write(first)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._conns.discard(w)
                    close_writer(w)

    def drop_connections(self) -> None:
        """Reset every open connection (a network blip as seen by clients)."""
        for w in list(self._conns):
            close_writer(w)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


# ------------------------------------------------------------------------------------------ handle


@dataclass
class TenantHandle:
    """A running sandbox tenant. `env()` gives the variables a daemon needs to talk to it."""

    tenant: Tenant
    address: str
    ca_pem: Path
    client_id: str
    client_secret: str
    data_dir: Path
    _front: _FrontEnd
    _grpc_server: grpc.aio.Server
    _http_runner: web.AppRunner
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    # ---- configuration for a daemon
    def env(self) -> dict[str, str]:
        return {
            "BATON_CLIENT_ID": self.client_id,
            "BATON_CLIENT_SECRET": self.client_secret,
            "BATON_C1_API_HOST": self.address,
            "BATON_C1_CA_FILE": str(self.ca_pem),
        }

    # ---- tasks
    def enqueue(self, task: baton_pb2.Task) -> str:
        return self.tenant.enqueue(task)

    def enqueue_hello(self) -> str:
        return self.enqueue(Task(hello=Task.HelloTask()))

    def enqueue_sync(
        self,
        *,
        skip_expand_grants: bool = False,
        skip_entitlements_and_grants: bool = False,
        skip_grants: bool = False,
        sync_resource_type_ids: Sequence[str] = (),
        targeted_sync_resources: Sequence[resource_pb2.Resource] = (),
        debug: bool = False,
    ) -> str:
        return self.enqueue(
            Task(
                debug=debug,
                sync_full=Task.SyncFullTask(
                    skip_expand_grants=skip_expand_grants,
                    skip_entitlements_and_grants=skip_entitlements_and_grants,
                    skip_grants=skip_grants,
                    sync_resource_type_ids=list(sync_resource_type_ids),
                    targeted_sync_resources=list(targeted_sync_resources),
                ),
            )
        )

    def enqueue_grant(
        self, entitlement: entitlement_pb2.Entitlement, principal: resource_pb2.Resource
    ) -> str:
        return self.enqueue(Task(grant=Task.GrantTask(entitlement=entitlement, principal=principal)))

    def enqueue_revoke(self, grant: grant_pb2.Grant) -> str:
        return self.enqueue(Task(revoke=Task.RevokeTask(grant=grant)))

    def enqueue_create_account(
        self,
        account_info: resource_pb2.AccountInfo,
        credential_options: resource_pb2.CredentialOptions | None = None,
        encryption_configs: Sequence[resource_pb2.EncryptionConfig] = (),
        resource_type_id: str = "",
    ) -> str:
        task = Task.CreateAccountTask(
            account_info=account_info,
            encryption_configs=list(encryption_configs),
            resource_type_id=resource_type_id,
        )
        if credential_options is not None:
            task.credential_options.CopyFrom(credential_options)
        return self.enqueue(Task(create_account=task))

    def enqueue_create_resource(self, resource: resource_pb2.Resource) -> str:
        return self.enqueue(Task(create_resource=Task.CreateResourceTask(resource=resource)))

    def enqueue_delete_resource(
        self, resource_id: resource_pb2.ResourceId, parent: resource_pb2.ResourceId | None = None
    ) -> str:
        task = Task.DeleteResourceTask(resource_id=resource_id)
        if parent is not None:
            task.parent_resource_id.CopyFrom(parent)
        return self.enqueue(Task(delete_resource=task))

    def enqueue_rotate_credentials(self, resource_id: resource_pb2.ResourceId) -> str:
        return self.enqueue(Task(rotate_credentials=Task.RotateCredentialsTask(resource_id=resource_id)))

    def enqueue_action_list_schemas(self, resource_type_id: str = "") -> str:
        task = Task.ActionListSchemasTask(resource_type_id=resource_type_id)
        return self.enqueue(Task(action_list_schemas=task))

    def enqueue_action_get_schema(self, name: str) -> str:
        return self.enqueue(Task(action_get_schema=Task.ActionGetSchemaTask(name=name)))

    def enqueue_action_invoke(
        self, name: str, args: Mapping[str, Any] | None = None, resource_type_id: str = ""
    ) -> str:
        task = Task.ActionInvokeTask(name=name, resource_type_id=resource_type_id)
        if args is not None:
            task.args.CopyFrom(_struct(args))
        return self.enqueue(Task(action_invoke=task))

    def enqueue_action_status(self, action_id: str, name: str = "") -> str:
        return self.enqueue(Task(action_status=Task.ActionStatusTask(name=name, id=action_id)))

    # ---- records
    @property
    def finishes(self) -> list[FinishRecord]:
        return self.tenant.finishes

    @property
    def uploads(self) -> list[UploadRecord]:
        return self.tenant.uploads

    @property
    def hellos(self) -> list[HelloRecord]:
        return self.tenant.hellos

    def finish_of(self, task_id: str) -> FinishRecord | None:
        found = [f for f in self.tenant.finishes if f.task_id == task_id]
        return found[-1] if found else None

    async def wait_finished(self, task_id: str, within: float = 10.0) -> FinishRecord:
        result: FinishRecord = await self.tenant.wait_for(lambda: self.finish_of(task_id), within)
        return result

    async def wait_hello(self, task_id: str = "", within: float = 10.0) -> HelloRecord:
        def find() -> HelloRecord | None:
            return next((h for h in self.tenant.hellos if h.task_id == task_id), None)

        result: HelloRecord = await self.tenant.wait_for(find, within)
        return result

    async def wait_for(self, predicate: Callable[[], Any], within: float = 10.0) -> Any:
        return await self.tenant.wait_for(predicate, within)

    # ---- faults and rotation (see Tenant)
    def fail_rpc(
        self,
        method: str,
        times: int | None = 1,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        message: str = "injected failure",
    ) -> None:
        self.tenant.fail_rpc(method, times, code, message)

    def rotate_secret(self, *, keep_old: bool = False, revoke_tokens: bool = False) -> str:
        self.client_secret = self.tenant.rotate_secret(
            self.client_id, keep_old=keep_old, revoke_tokens=revoke_tokens
        )
        return self.client_secret

    def drop_connections(self) -> None:
        self._front.drop_connections()

    @property
    def connections(self) -> dict[str, int]:
        """TLS connections accepted so far, by protocol ("grpc", "http")."""
        return self._front.connections

    async def close(self) -> None:
        await self._front.close()
        await self._grpc_server.stop(grace=None)
        await self._http_runner.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def __aenter__(self) -> TenantHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_tenant(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: Path | None = None,
    tenant_host: str = "tenant.sandbox.conductor.one",
    next_poll: float | None = 1.0,
    next_heartbeat: float | None = 1.0,
    token_ttl: int = 3600,
    lease_seconds: float = 300.0,
    requeue_retryable: bool = False,
    client_name: str | None = None,
    secret_with_kid: bool = False,
    server_names: Sequence[str] = (),
) -> TenantHandle:
    """Start a tenant with one registered client. `tenant_host` is the host in the client id (the JWT
    audience); clients reach the tenant at `handle.address` through BATON_C1_API_HOST. `server_names` are
    extra DNS names in the server certificate (e.g. a name only a test proxy resolves)."""
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sandbox-tenant-")
        data_dir = Path(tmp.name)
    data_dir.mkdir(parents=True, exist_ok=True)

    names = (host, "localhost") if host not in ("localhost",) else ("localhost", "127.0.0.1")
    pki = make_pki((*names, *server_names))
    ca_path = data_dir / "ca.pem"
    ca_path.write_bytes(pki.ca_pem)
    cert_path, key_path = data_dir / "server.pem", data_dir / "server.key"
    cert_path.write_bytes(pki.cert_pem)
    key_path.write_bytes(pki.key_pem)
    key_path.chmod(0o600)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    # Server preference order: clients that can do both get HTTP/1.1 (the token endpoint), gRPC clients
    # (h2 only) get h2.
    ctx.set_alpn_protocols(["http/1.1", "h2"])

    tenant = Tenant(
        data_dir=data_dir,
        tenant_host=tenant_host,
        next_poll=next_poll,
        next_heartbeat=next_heartbeat,
        token_ttl=token_ttl,
        lease_seconds=lease_seconds,
        requeue_retryable=requeue_retryable,
    )
    client_id, client_secret = tenant.register_client(name=client_name, with_kid=secret_with_kid)

    grpc_server = grpc.aio.server()
    baton_pb2_grpc.add_BatonServiceServicer_to_server(tenant, grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()

    app = web.Application()
    app.router.add_post("/auth/v1/token", tenant.token_endpoint)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = int(runner.addresses[0][1])

    front = _FrontEnd(ctx, grpc_port, http_port)
    bound = await front.start(host, port)
    shown_host = f"[{host}]" if ":" in host else host
    return TenantHandle(
        tenant=tenant,
        address=f"{shown_host}:{bound}",
        ca_pem=ca_path,
        client_id=client_id,
        client_secret=client_secret,
        data_dir=data_dir,
        _front=front,
        _grpc_server=grpc_server,
        _http_runner=runner,
        _tmp=tmp,
    )


# ------------------------------------------------------------------------------------------ CLI


def describe_finish(f: FinishRecord) -> str:
    if f.outcome == "success":
        what = type(f.response).__name__ if f.response is not None else "no response"
        if isinstance(f.response, action_pb2.InvokeActionResponse | action_pb2.GetActionStatusResponse):
            status = action_pb2.BatonActionStatus.Name(f.response.status)
            what += f" {status} {json.dumps(action_result(f), sort_keys=True)}"
        notes = ", ".join(type(a).__name__ for a in f.annotations)
        return f"{f.task_type} {f.task_id}: success ({what}{'; ' + notes if notes else ''})"
    code = grpc.StatusCode.UNKNOWN
    for c in grpc.StatusCode:
        if c.value[0] == f.status_code:
            code = c
    kind = "non-retryable" if f.non_retryable else "retryable"
    return f"{f.task_type} {f.task_id}: {kind} error {code.name}: {f.status_message}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector sandbox tenant",
        description="Fake ConductorOne tenant (token endpoint + BatonService on one TLS port).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="keeps ca.pem, daemon.env and uploads")
    parser.add_argument("--next-poll", type=float, default=1.0, help="seconds between polls (next_poll)")
    parser.add_argument("--next-heartbeat", type=float, default=5.0)
    parser.add_argument("--token-ttl", type=int, default=3600)
    parser.add_argument("--sync-every", type=float, default=0.0, help="enqueue a sync_full every N seconds")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0


async def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="sandbox-tenant-"))
    handle = await start_tenant(
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        next_poll=args.next_poll,
        next_heartbeat=args.next_heartbeat,
        token_ttl=args.token_ttl,
    )
    env_file = data_dir / "daemon.env"
    # The secret goes only to this 0600 file, never to the terminal.
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{k}={v}\n" for k, v in handle.env().items())
    print(f"sandbox tenant listening on {handle.address}", flush=True)
    print(f"  client id: {handle.client_id}", flush=True)
    print(f"  CA:        {handle.ca_pem}", flush=True)
    print(f"  daemon env (with the client secret): {env_file}", flush=True)
    print(f"  run a connector against it:  set -a; . {env_file}; set +a; baton-<app> ...", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    seen = printed = 0
    next_sync = time.monotonic()
    try:
        while not stop.is_set():
            if args.sync_every > 0 and time.monotonic() >= next_sync:
                tid = handle.enqueue_sync()
                print(f"enqueued sync_full {tid}", flush=True)
                next_sync = time.monotonic() + args.sync_every
            for f in handle.finishes[seen:]:
                print(describe_finish(f), flush=True)
            for u in handle.uploads[printed:]:
                counts = json.dumps(u.summary.as_dict()) if u.summary is not None else u.kind
                print(f"upload {u.task_id}: {u.size} bytes, {counts}", flush=True)
            printed = len(handle.uploads)
            seen = len(handle.finishes)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await handle.close()
    return 0


__all__ = [
    "FinishRecord",
    "HelloRecord",
    "Tenant",
    "TenantHandle",
    "TokenRequestRecord",
    "UploadRecord",
    "action_result",
    "main",
    "new_task_id",
    "start_tenant",
    "unpack_any",
]
