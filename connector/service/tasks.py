"""One handler per task type, and the FinishTask payloads (spec §4.7, §4.8). The one place that decides
what the tenant is told about a task.

| task | connector call | success finish | failure finish |
|---|---|---|---|
| hello | GetMetadata, then Hello(task_id) | none (the Hello is the completion) | none |
| sync_full | heartbeats, run_sync, UploadAsset | success, no response/annotations | retryable, names phase |
| grant | runtime.grant | GrantManagerServiceGrantResponse + its annotations | non-retryable (1) |
| revoke | runtime.revoke | GrantManagerServiceRevokeResponse + its annotations | non-retryable (1) |
| create_account | runtime.create_account | CreateAccountResponse + its annotations | non-retryable (1) |
| delete_resource | runtime.delete_resource | DeleteResourceResponse + its annotations | non-retryable (1) |
| create_resource, rotate_credentials | (not supported) | - | UNIMPLEMENTED, non-retryable |
| action_list_schemas | runtime.list_action_schemas | ListActionSchemasResponse | retryable |
| action_get_schema | runtime.get_action_schema | GetActionSchemaResponse | retryable |
| action_invoke | runtime.invoke_action | InvokeActionResponse + annotations (or PENDING) | retryable |
| action_status | runtime.get_action_status | GetActionStatusResponse + its annotations | retryable |
| anything else | - | - | UNKNOWN "unsupported task type", retryable |

(1) except UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED (still transient after the upstream
client's retries), which are retryable.

A FAILED action finishes as a retryable error carrying the action's code and its `error` text.

Malformed provisioning tasks fail non-retryably before any connector call, with code UNKNOWN as in Go
(where that error carries no gRPC status). A connector error keeps its gRPC
code and details (e.g. RateLimitDescription) in the `google.rpc.Status`; other exceptions become UNKNOWN.

`Task.debug` (spec §4.9): the task's logs are teed at debug level into `<tempDir>/debug.log` (debuglog.py);
a sync uploads that file as a second stream after the c1z, and a debug task deletes it at its end.

Every wait (heartbeat interval, FinishTask backoff, upload retry pause) goes through the injectable timer.

Beyond the Go SDK: FinishTask is retried on UNAVAILABLE / DEADLINE_EXCEEDED with backoff for up to
`finish_retry_window` seconds, so a result survives a network blip; and running tasks can be cancelled
(shutdown, tenant cancellation) and are then finished with a retryable CANCELLED error so the tenant
reschedules them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from connector.ops.health import DaemonHealth
from connector.ops.logging import get_logger
from connector.ops.metrics import Metrics
from connector.pb.c1.connector.v2 import action_pb2, connector_pb2, grant_pb2, resource_pb2
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2
from connector.sdk.errors import ConnectorError
from connector.sdk.runtime import ConnectorRuntime
from connector.service.debuglog import DEBUG_LOG_NAME, DebugLog
from connector.service.tenant import TenantClient, TenantError
from connector.service.timer import REAL_TIMER, Timer
from connector.service.upload import UploadError, upload_file

log = get_logger(__name__)

Task = baton_pb2.Task
FinishReq = baton_pb2.BatonServiceFinishTaskRequest
Kind = Literal["sync", "provisioning", "other"]

UNSUPPORTED = "unsupported task type"
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
RETRYABLE_PROVISIONING_CODES = frozenset(
    c.value[0]
    for c in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
)
PROVISIONING_TYPES = frozenset(
    {"grant", "revoke", "create_account", "create_resource", "delete_resource", "rotate_credentials"}
)
ACTION_TYPES = frozenset({"action_list_schemas", "action_get_schema", "action_invoke", "action_status"})


def task_type(task: baton_pb2.Task) -> str:
    return task.WhichOneof("task_type") or "unknown"


def task_kind(task: baton_pb2.Task) -> Kind:
    t = task_type(task)
    if t == "sync_full":
        return "sync"
    if t in PROVISIONING_TYPES:
        return "provisioning"
    return "other"


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class TaskConfig:
    provisioning: bool = False
    skip_full_sync: bool = False
    sync_resource_types: tuple[str, ...] = ()
    sync_concurrency: int = 8
    c1z_temp_dir: Path | None = None
    # heartbeats (spec §4.6): next_heartbeat 0/unset → default, clamped to [min, max]
    heartbeat_default: float = 30.0
    heartbeat_min: float = 1.0
    heartbeat_max: float = 300.0
    heartbeat_max_failures: int = 9
    # uploads (spec §5.4)
    upload_attempts: int = 3
    upload_retry_unit: float = 1.0
    upload_chunk_size: int = 512 * 1024
    # Syncs run one at a time (connectors keep per-sync state, e.g. a shared user walk); a sync task that
    # arrives while another runs waits, heartbeating, at most this long, then fails retryably.
    sync_wait_max: float = 4 * 3600.0
    # FinishTask retries (ours)
    finish_retry_window: float = 120.0
    finish_backoff_initial: float = 1.0
    finish_backoff_max: float = 15.0


def clamp_duration(d: duration_pb2.Duration | None, *, default: float, low: float, high: float) -> float:
    seconds = d.ToNanoseconds() / 1e9 if d is not None else 0.0
    if seconds <= 0:
        seconds = default
    return min(max(seconds, low), high)


# ------------------------------------------------------------------------------------------------ hello


def _os_release() -> dict[str, str]:
    try:
        return platform.freedesktop_os_release()
    except OSError:
        return {}


def _virtualization() -> str:
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    try:
        with open("/proc/1/cgroup", encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        text = ""
    for marker, name in (
        ("kubepods", "kubernetes"),
        ("docker", "docker"),
        ("containerd", "containerd"),
        ("lxc", "lxc"),
    ):
        if marker in text:
            return name
    return "none"


def os_info() -> baton_pb2.BatonServiceHelloRequest.OSInfo:
    """Host facts with the Go SDK's non-empty fall-backs (spec §4.1)."""
    release = _os_release()
    system = platform.system().lower() or sys.platform
    kernel = platform.release() or "unknown"
    plat = release.get("ID", "") or system
    family = (release.get("ID_LIKE", "").split() or [""])[0] or plat
    return baton_pb2.BatonServiceHelloRequest.OSInfo(
        hostname=(socket.gethostname() or "unknown")[:256],
        os=system[:256],
        platform=plat[:256],
        platform_version=(release.get("VERSION_ID", "") or kernel)[:256],
        platform_family=family[:256],
        kernel_version=kernel[:256],
        kernel_arch=(platform.machine() or "unknown")[:256],
        virtualization_system=_virtualization(),
    )


def package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("baton-connectors")
    except (ImportError, PackageNotFoundError):
        import connector

        return str(getattr(connector, "__version__", "0.0.0"))


def hello_request(
    host_id: str, metadata: connector_pb2.ConnectorMetadata, task_id: str = "", package: str = ""
) -> baton_pb2.BatonServiceHelloRequest:
    return baton_pb2.BatonServiceHelloRequest(
        host_id=host_id,
        task_id=task_id,
        build_info=baton_pb2.BatonServiceHelloRequest.BuildInfo(
            lang_version=f"python{platform.python_version()}",
            package=(package or "baton-connectors")[:256],
            package_version=package_version()[:256],
        ),
        os_info=os_info(),
        connector_metadata=metadata,
    )


# ------------------------------------------------------------------------------------------------ payloads


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def success_request(
    host_id: str, task_id: str, response: Message | None = None, annotations: Any = ()
) -> FinishReq:
    """Success: the connector response packed in Any (when there is one) and its annotations."""
    req = FinishReq(host_id=host_id, task_id=task_id)
    req.success.SetInParent()
    req.success.annotations.extend(annotations)
    if response is not None:
        req.success.response.CopyFrom(pack(response))
    return req


def error_status(err: BaseException) -> status_pb2.Status:
    """gRPC-coded errors keep code and details; cancellation → CANCELLED, timeout → DEADLINE_EXCEEDED,
    anything else → UNKNOWN. The message is the error's text (spec §4.7)."""
    if isinstance(err, ConnectorError):
        return err.to_status()
    if isinstance(err, TenantError):
        return status_pb2.Status(code=err.code.value[0], message=err.message)
    code = getattr(err, "code", None)
    if isinstance(code, grpc.StatusCode):
        return status_pb2.Status(code=code.value[0], message=str(err))
    if isinstance(err, asyncio.CancelledError):
        return status_pb2.Status(code=grpc.StatusCode.CANCELLED.value[0], message=str(err) or "cancelled")
    if isinstance(err, TimeoutError):
        return status_pb2.Status(
            code=grpc.StatusCode.DEADLINE_EXCEEDED.value[0], message=str(err) or "deadline exceeded"
        )
    return status_pb2.Status(code=grpc.StatusCode.UNKNOWN.value[0], message=str(err) or type(err).__name__)


def error_request(
    host_id: str,
    task_id: str,
    status: status_pb2.Status,
    *,
    non_retryable: bool,
    annotations: Any = (),
) -> FinishReq:
    """Error: status + error{non_retryable, annotations}; `error.response` is never set (as in Go)."""
    req = FinishReq(host_id=host_id, task_id=task_id, status=status)
    req.error.non_retryable = non_retryable
    req.error.annotations.extend(annotations)
    return req


def _status(code: grpc.StatusCode, message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code.value[0], message=message)


# ------------------------------------------------------------------------------------------------ runner


@dataclass
class ActiveTask:
    task_id: str
    type: str
    kind: Kind
    work: asyncio.Task[Any] | None = None
    cancel_reason: str | None = None
    phase: str = "starting"
    started: float = field(default_factory=time.monotonic)
    debug: DebugLog | None = None


class TaskRunner:
    """Runs one task to its FinishTask. Safe to run several at once (one per slot)."""

    def __init__(
        self,
        runtime: ConnectorRuntime,
        tenant: TenantClient,
        config: TaskConfig,
        *,
        metrics: Metrics | None = None,
        health: DaemonHealth | None = None,
        upstream_requests: Callable[[], int] | None = None,
        package: str = "",
        timer: Timer = REAL_TIMER,
    ) -> None:
        self.runtime = runtime
        self.timer = timer
        self.tenant = tenant
        self.config = config
        self.metrics = metrics
        self.health = health
        self.upstream_requests = upstream_requests
        self.package = package
        self.active: dict[str, ActiveTask] = {}
        # Set at shutdown: FinishTask retries (and their per-call deadline) stop at this monotonic time.
        self.finish_deadline: float | None = None
        # Set at shutdown: syncs that have not started yet are finished as cancelled instead.
        self.shutting_down = False
        # One sync at a time, in arrival order, while grants and other tasks go on beside it: the app
        # connectors share per-sync state (the Atlassian user walk, Confluence's counters and read-aheads)
        # between concurrent syncs, and two syncs of one upstream only compete for its rate limit.
        self._sync_slot = asyncio.Lock()

    @property
    def host_id(self) -> str:
        return self.tenant.host_id

    def cancel(self, task_id: str, reason: str) -> bool:
        """Cancel a running task's work; its handler then finishes it with a retryable CANCELLED error."""
        active = self.active.get(task_id)
        if active is None:
            return False
        if active.cancel_reason is None:
            active.cancel_reason = reason
        # Work not started yet: the handler sees cancel_reason before starting it.
        if active.work is not None and not active.work.done():
            active.work.cancel()
        return True

    @property
    def temp_root(self) -> Path:
        """`<tempDir>`: BATON_C1Z_TEMP_DIR (or BATON_TMPDIR), else the system temp dir."""
        return self.config.c1z_temp_dir or Path(tempfile.gettempdir())

    async def handle(self, task: baton_pb2.Task) -> None:
        """Run `task` and report it. Never raises except on cancellation of the handler itself.

        Runs in its own asyncio task, so the context variables bound here (the log fields task_id and
        task_type, the debug tee) cover exactly this task and the work it starts."""
        ttype = task_type(task)
        active = ActiveTask(task.id, ttype, task_kind(task))
        self.active[task.id] = active
        structlog.contextvars.bind_contextvars(task_id=task.id, task_type=ttype)
        debug: DebugLog | None = None
        if task.debug:
            debug = DebugLog(self.temp_root / DEBUG_LOG_NAME, task.id)
            try:
                debug.start()
            except OSError as err:
                log.warning("debug_log_unavailable", error=err.strerror or type(err).__name__)
                debug = None
        active.debug = debug
        log.info("task_started", debug=task.debug)
        if self.metrics is not None:
            self.metrics.task_received(ttype)
        started = self.timer.monotonic()
        outcome = "success"
        try:
            cm = self.metrics.track_task(ttype) if self.metrics is not None else contextlib.nullcontext()
            with cm:
                outcome = await self._dispatch(task, active)
        finally:
            if debug is not None:
                debug.stop()
            self.active.pop(task.id, None)
            duration = self.timer.monotonic() - started
            if self.metrics is not None and outcome != "abandoned":
                self.metrics.task_finished(ttype, outcome, duration)
            log.info("task_done", outcome=outcome, duration=round(duration, 3))
            structlog.contextvars.unbind_contextvars("task_id", "task_type")

    async def release_unstarted(self, task: baton_pb2.Task) -> None:
        """A task received (GetTasks batch) but never started, at shutdown: finish it retryable so the
        tenant reschedules it at once. Hello tasks cannot be finished; their lease brings them back."""
        if task_type(task) == "hello":
            return
        await self._finish_error(
            task.id,
            _status(grpc.StatusCode.CANCELLED, "task not started: the connector is shutting down"),
            non_retryable=False,
        )

    async def _dispatch(self, task: baton_pb2.Task, active: ActiveTask) -> str:
        ttype = active.type
        if ttype == "hello":
            return await self._hello(task)
        if ttype == "sync_full":
            return await self._sync(task, active)
        if ttype in PROVISIONING_TYPES:
            return await self._provision(task, active)
        if ttype in ACTION_TYPES:
            return await self._action(task, active)
        return await self._finish_error(
            task.id, _status(grpc.StatusCode.UNKNOWN, UNSUPPORTED), non_retryable=False
        )

    # ------------------------------------------------------------------ hello

    async def _hello(self, task: baton_pb2.Task) -> str:
        try:
            md = await self.runtime.get_metadata(connector_pb2.ConnectorServiceGetMetadataRequest())
            await self.tenant.hello(hello_request(self.host_id, md.metadata, task.id, self.package))
        except (TenantError, ConnectorError) as err:
            # As in Go: no FinishTask for hello tasks; the tenant's lease brings it back.
            log.warning("hello_task_failed", error=str(err))
            return "abandoned"
        return "success"

    # ------------------------------------------------------------------ provisioning

    async def _provision(self, task: baton_pb2.Task, active: ActiveTask) -> str:
        if active.cancel_reason is not None:
            return await self._finish_error(
                task.id,
                _status(grpc.StatusCode.CANCELLED, f"{active.type} cancelled: {active.cancel_reason}"),
                non_retryable=False,
            )
        call = self._provisioning_call(task)
        if isinstance(call, status_pb2.Status):
            return await self._finish_error(task.id, call, non_retryable=True)
        # A cancelled change may or may not have reached the upstream; every provisioning call here is
        # idempotent (already-exists / already-revoked), so the tenant may safely retry it. A failure still
        # transient after the upstream client's own retries may be retried later too; refusals
        # (401/403/404), bad input and everything else are final.
        response = await self._run_call(
            task,
            active,
            call,
            "provisioning_task_crashed",
            final=lambda st: st.code not in RETRYABLE_PROVISIONING_CODES,
        )
        if isinstance(response, str):
            return response
        annotations = list(getattr(response, "annotations", ()))
        return await self._finish(success_request(self.host_id, task.id, response, annotations), "success")

    async def _run_call(
        self,
        task: baton_pb2.Task,
        active: ActiveTask,
        call: Coroutine[Any, Any, Message],
        crash_event: str,
        *,
        final: Callable[[status_pb2.Status], bool],
    ) -> Message | str:
        """Run a connector call as the task's cancellable work: its response, or (when it was cancelled or
        failed) the outcome of the FinishTask already sent. `final` says which failures are not retryable."""
        work = asyncio.create_task(call)
        active.work = work
        await _wait_quietly(work)
        if work.cancelled():
            reason = active.cancel_reason or "cancelled"
            return await self._finish_error(
                task.id,
                _status(grpc.StatusCode.CANCELLED, f"{active.type} cancelled: {reason}"),
                non_retryable=False,
            )
        exc = work.exception()
        if exc is not None:
            if not isinstance(exc, ConnectorError):
                log.error(crash_event, error_type=type(exc).__name__)
            st = error_status(exc)
            return await self._finish_error(task.id, st, non_retryable=final(st))
        result: Message = work.result()
        return result

    def _provisioning_call(self, task: baton_pb2.Task) -> Any:
        """The connector coroutine for a provisioning task, or the Status to fail it with (malformed,
        unsupported)."""
        ttype = task_type(task)
        if ttype == "grant":
            g = task.grant
            if not g.HasField("entitlement") or not g.HasField("principal"):
                return _status(
                    grpc.StatusCode.UNKNOWN, "malformed grant task: needs entitlement and principal"
                )
            # Task annotations and duration are not forwarded, as in the Go SDK.
            return self.runtime.grant(
                grant_pb2.GrantManagerServiceGrantRequest(entitlement=g.entitlement, principal=g.principal)
            )
        if ttype == "revoke":
            if not task.revoke.HasField("grant"):
                return _status(grpc.StatusCode.UNKNOWN, "malformed revoke task: needs a grant")
            return self.runtime.revoke(grant_pb2.GrantManagerServiceRevokeRequest(grant=task.revoke.grant))
        if ttype == "create_account":
            c = task.create_account
            if not c.HasField("account_info"):
                return _status(grpc.StatusCode.UNKNOWN, "malformed create account task: needs account_info")
            return self.runtime.create_account(
                resource_pb2.CreateAccountRequest(
                    account_info=c.account_info,
                    credential_options=c.credential_options,
                    encryption_configs=c.encryption_configs,
                    resource_type_id=c.resource_type_id,
                )
            )
        if ttype == "delete_resource":
            d = task.delete_resource
            if not d.resource_id.resource or not d.resource_id.resource_type:
                return _status(grpc.StatusCode.UNKNOWN, "malformed delete resource task: needs a resource id")
            req = resource_pb2.DeleteResourceRequest(resource_id=d.resource_id)
            if d.HasField("parent_resource_id"):
                req.parent_resource_id.CopyFrom(d.parent_resource_id)
            return self.runtime.delete_resource(req)
        # create_resource / rotate_credentials: no connector here implements them. The provisioning gate
        # comes first, as in the Go SDK's child process.
        if ttype == "create_resource" and not task.create_resource.HasField("resource"):
            return _status(grpc.StatusCode.UNKNOWN, "malformed create resource task: needs a resource")
        if ttype == "rotate_credentials" and not task.rotate_credentials.HasField("resource_id"):
            return _status(grpc.StatusCode.UNKNOWN, "malformed rotate credentials task: needs a resource id")
        if not self.config.provisioning:
            return _status(grpc.StatusCode.FAILED_PRECONDITION, "provisioning is not enabled")
        what = "creating resources" if ttype == "create_resource" else "rotating credentials"
        return _status(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not supported by this connector")

    # ------------------------------------------------------------------ actions

    async def _action(self, task: baton_pb2.Task, active: ActiveTask) -> str:
        """Action tasks: every failure is retryable, as in the Go SDK (spec §4.8)."""
        call = self._action_call(task)
        if isinstance(call, status_pb2.Status):
            return await self._finish_error(task.id, call, non_retryable=False)
        response = await self._run_call(task, active, call, "action_task_crashed", final=lambda st: False)
        if isinstance(response, str):
            return response
        failed = action_pb2.BATON_ACTION_STATUS_FAILED
        if isinstance(response, action_pb2.InvokeActionResponse) and response.status == failed:
            return await self._finish_error(task.id, self._failed_action(response), non_retryable=False)
        annotations = list(getattr(response, "annotations", ()))
        if isinstance(response, action_pb2.ListActionSchemasResponse | action_pb2.GetActionSchemaResponse):
            annotations = []
        return await self._finish(success_request(self.host_id, task.id, response, annotations), "success")

    def _failed_action(self, response: action_pb2.InvokeActionResponse) -> status_pb2.Status:
        """The Go SDK reports the `error` text of the result with code UNKNOWN; we keep the action's own
        code when it had one (an Atlassian org-admin refusal is FAILED_PRECONDITION, not a mystery)."""
        field = response.response.fields.get("error") if response.HasField("response") else None
        text = field.string_value if field is not None and field.string_value else "action failed"
        inv = self.runtime.action_invocation(response.id)
        if inv is not None and inv.error is not None:
            st = inv.error.to_status()
            st.message = text
            return st
        return _status(grpc.StatusCode.UNKNOWN, text)

    def _action_call(self, task: baton_pb2.Task) -> Any:
        """The connector coroutine for an action task, or the Status to fail it with."""
        ttype = task_type(task)
        if ttype == "action_list_schemas":
            ls = task.action_list_schemas
            return self.runtime.list_action_schemas(
                action_pb2.ListActionSchemasRequest(
                    annotations=ls.annotations, resource_type_id=ls.resource_type_id
                )
            )
        if ttype == "action_get_schema":
            gs = task.action_get_schema
            if not gs.name:
                return _status(grpc.StatusCode.UNKNOWN, "action name required")
            return self.runtime.get_action_schema(
                action_pb2.GetActionSchemaRequest(name=gs.name, annotations=gs.annotations)
            )
        if ttype == "action_invoke":
            iv = task.action_invoke
            if not iv.name:
                return _status(grpc.StatusCode.UNKNOWN, "action name required")
            return self.runtime.invoke_action(
                action_pb2.InvokeActionRequest(
                    name=iv.name,
                    args=iv.args,
                    annotations=iv.annotations,
                    resource_type_id=iv.resource_type_id,
                )
            )
        st = task.action_status
        if not st.id:
            return _status(grpc.StatusCode.UNKNOWN, "action id required")
        return self.runtime.get_action_status(
            action_pb2.GetActionStatusRequest(name=st.name, id=st.id, annotations=st.annotations)
        )

    # ------------------------------------------------------------------ sync

    def _sync_options(self, sync: baton_pb2.Task.SyncFullTask) -> Any:
        from connector.sync.engine import SyncOptions

        type_ids = tuple(sync.sync_resource_type_ids) or self.config.sync_resource_types
        # The local skip-entitlements/skip-grants flags are ignored in service mode (spec §5.2).
        return SyncOptions(
            skip_expand_grants=sync.skip_expand_grants,
            skip_entitlements_and_grants=sync.skip_entitlements_and_grants,
            skip_grants=sync.skip_grants,
            sync_resource_type_ids=type_ids,
            targeted_resources=tuple(sync.targeted_sync_resources),
            concurrency=self.config.sync_concurrency,
            skip_full_sync=self.config.skip_full_sync,
        )

    async def _sync(self, task: baton_pb2.Task, active: ActiveTask) -> str:
        if self.shutting_down:
            return await self._finish_error(
                task.id,
                _status(
                    grpc.StatusCode.CANCELLED,
                    "sync cancelled before it started: the connector is shutting down",
                ),
                non_retryable=False,
            )
        temp_dir = self.config.c1z_temp_dir
        try:
            # A private directory per task: the engine's working files and the c1z live and die together.
            work_dir, owner = await asyncio.to_thread(_claimed_work_dir, temp_dir)
        except OSError as err:
            return await self._finish_error(
                task.id,
                _status(grpc.StatusCode.UNKNOWN, f"cannot create a temp dir in {temp_dir}: {err.strerror}"),
                non_retryable=False,
            )
        try:
            try:
                first = await self.tenant.heartbeat(task.id)
            except TenantError as err:
                # As in Go: no FinishTask; the tenant reclaims the task when its lease runs out.
                log.warning("sync_first_heartbeat_failed", error=str(err))
                return "abandoned"
            if first.cancelled:
                log.info("sync_cancelled_before_start")
                return "abandoned"
            if active.cancel_reason is not None or self.shutting_down:
                reason = active.cancel_reason or "the connector is shutting down"
                return await self._finish_error(
                    task.id,
                    _status(grpc.StatusCode.CANCELLED, f"sync cancelled before it started: {reason}"),
                    non_retryable=False,
                )
            interval = self._heartbeat_interval(
                first.next_heartbeat if first.HasField("next_heartbeat") else None
            )
            return await self._sync_with_heartbeats(task, active, work_dir, interval)
        finally:
            await asyncio.to_thread(shutil.rmtree, work_dir, True)
            os.close(owner)
            if task.debug:
                # Spec §4.9: only a debug task removes debug.log; a leftover from an earlier debug task is
                # uploaded with the next sync and stays.
                if active.debug is not None:
                    active.debug.stop()
                with contextlib.suppress(OSError):
                    await asyncio.to_thread((self.temp_root / DEBUG_LOG_NAME).unlink, True)

    def _heartbeat_interval(self, d: duration_pb2.Duration | None) -> float:
        c = self.config
        return clamp_duration(d, default=c.heartbeat_default, low=c.heartbeat_min, high=c.heartbeat_max)

    async def _sync_with_heartbeats(
        self, task: baton_pb2.Task, active: ActiveTask, work_dir: Path, interval: float
    ) -> str:
        started = time.monotonic()
        if self.metrics is not None:
            self.metrics.sync_started()
        work = asyncio.create_task(self._sync_and_upload(task, active, work_dir))
        active.work = work
        beat = asyncio.create_task(self._heartbeat_loop(task.id, interval))
        try:
            await _wait_quietly(work)
        finally:
            beat.cancel()
            with contextlib.suppress(BaseException):
                await beat
        duration = time.monotonic() - started
        if work.cancelled():
            reason = active.cancel_reason or "cancelled"
            if self.metrics is not None:
                self.metrics.sync_finished("cancelled", None, duration, None)
            message = f"sync cancelled during {active.phase}: {reason}"
            log.warning("sync_cancelled", phase=active.phase, reason=reason)
            return await self._finish_error(
                task.id, _status(grpc.StatusCode.CANCELLED, message), non_retryable=False
            )
        exc = work.exception()
        if exc is not None:
            if self.metrics is not None:
                self.metrics.sync_finished("failure", None, duration, None)
            st = error_status(exc)
            # The engine's SyncError already says "sync failed in phase X for Y: ..."; other failures
            # (upload, file system) get the phase we were in.
            if not isinstance(getattr(exc, "phase", None), str):
                st.message = f"sync failed during {active.phase}: {st.message}"
            log.warning("sync_failed", phase=active.phase, error=st.message)
            # Retryable: the tenant may try again (the Go SDK makes only data-invariant verdicts final).
            return await self._finish_error(task.id, st, non_retryable=False)
        report, nbytes = work.result()
        if self.metrics is not None:
            self.metrics.sync_finished("success", report, duration, nbytes)
        return await self._finish(success_request(self.host_id, task.id), "success")

    async def _sync_and_upload(
        self, task: baton_pb2.Task, active: ActiveTask, work_dir: Path
    ) -> tuple[Any, int]:
        from connector.sync.engine import run_sync

        path = work_dir / "sync.c1z"

        def on_phase(phase: str) -> None:
            if not phase:
                return
            active.phase = phase
            if self.metrics is not None:
                self.metrics.sync_phase(phase)

        if self._sync_slot.locked():
            # Not on the phase gauge: that shows the running sync's phase.
            active.phase = "waiting for another sync"
            log.info("sync_waiting_for_another_sync")
        try:
            async with asyncio.timeout(self.config.sync_wait_max):
                await self._sync_slot.acquire()
        except TimeoutError:
            raise ConnectorError(
                grpc.StatusCode.UNAVAILABLE,
                f"another sync was still running after {self.config.sync_wait_max:g} s",
            ) from None
        try:
            on_phase("syncing")
            report = await run_sync(
                self.runtime,
                path,
                self._sync_options(task.sync_full),
                temp_dir=work_dir,
                on_phase=on_phase,
                upstream_requests=self.upstream_requests,
            )
        finally:
            self._sync_slot.release()
        on_phase("uploading")
        nbytes = await self._upload(task.id, path, "sync")
        debug_log = self.temp_root / DEBUG_LOG_NAME
        if active.debug is not None:
            # Stop teeing first: the file must not grow while it is being hashed and sent.
            active.debug.stop()
        if await asyncio.to_thread(debug_log.is_file):
            on_phase("uploading debug log")
            await self._upload(task.id, debug_log, "debug log")
        on_phase("finishing")
        return report, nbytes

    async def _upload(self, task_id: str, path: Path, what: str) -> int:
        async def pause(seconds: float) -> None:
            await self.timer.sleep(seconds, "upload_retry")

        try:
            return await upload_file(
                self.tenant,
                task_id,
                path,
                attempts=self.config.upload_attempts,
                retry_unit=self.config.upload_retry_unit,
                chunk_size=self.config.upload_chunk_size,
                metrics=self.metrics,
                sleep=pause,
            )
        except UploadError as err:
            text = str(err) if what == "sync" else f"{what} {err}"
            raise ConnectorError(grpc.StatusCode.UNAVAILABLE, text) from None

    async def _heartbeat_loop(self, task_id: str, interval: float) -> None:
        failures = 0
        while True:
            await self.timer.sleep(interval, "heartbeat")
            try:
                resp = await self.tenant.heartbeat(task_id)
                next_interval = self._heartbeat_interval(
                    resp.next_heartbeat if resp.HasField("next_heartbeat") else None
                )
            except Exception as err:
                # Whatever went wrong, it is one failed heartbeat: the loop must never end the task
                # itself (its work would go on unwatched, and the task would end without a FinishTask).
                failures += 1
                error = str(err) if isinstance(err, TenantError) else type(err).__name__
                log.warning("heartbeat_failed", failures=failures, error=error)
                if failures >= self.config.heartbeat_max_failures:
                    self.cancel(task_id, f"task failed heartbeat ({failures} consecutive failures)")
                    return
                continue  # keep the previous interval, as in Go
            failures = 0
            if self.health is not None:
                # Heartbeats are tenant contact: a long sync on the only slot must not fail /ready.
                self.health.mark_tenant_ok()
            interval = next_interval
            log.debug("heartbeat_ok", next_in=interval, cancelled=resp.cancelled)
            if resp.cancelled:
                self.cancel(task_id, "the tenant cancelled the task")
                return

    # ------------------------------------------------------------------ FinishTask

    async def _finish_error(self, task_id: str, status: status_pb2.Status, *, non_retryable: bool) -> str:
        outcome = "non_retryable_error" if non_retryable else "retryable_error"
        return await self._finish(
            error_request(self.host_id, task_id, status, non_retryable=non_retryable), outcome
        )

    async def _finish(self, request: FinishReq, outcome: str) -> str:
        """FinishTask, retried on transient failures for up to `finish_retry_window` seconds."""
        c = self.config
        now = self.timer.monotonic
        limit = now() + c.finish_retry_window
        if self.finish_deadline is not None:
            limit = min(limit, self.finish_deadline)
        delay = c.finish_backoff_initial
        attempt = 0
        while True:
            attempt += 1
            remaining = limit - now()
            try:
                await self.tenant.finish_task(request, deadline=max(0.5, min(30.0, remaining)))
                if attempt > 1:
                    log.info("finish_task_delivered", task_id=request.task_id, attempts=attempt)
                return outcome
            except TenantError as err:
                remaining = limit - now()
                if err.code not in TRANSIENT_CODES or remaining <= 0:
                    log.error("finish_task_failed", task_id=request.task_id, attempts=attempt, error=str(err))
                    return outcome
                if self.metrics is not None:
                    self.metrics.finish_task_retry()
                log.warning("finish_task_retry", task_id=request.task_id, attempt=attempt, error=str(err))
                await self.timer.sleep(min(delay, remaining), "finish_retry")
                delay = min(delay * 2, c.finish_backoff_max)


WORK_DIR_PREFIX = "baton-sync-upload-"
OWNER_FILE = ".owner"
# A work dir without its owner file may be one another daemon has just created (the file comes next).
UNCLAIMED_AGE_S = 300.0


def _claimed_work_dir(temp_dir: Path | None) -> tuple[Path, int]:
    """A new work dir and the descriptor holding its owner lock: while this process lives the lock is
    held, so `sweep_leftovers` (of this daemon after a restart, or of another one sharing the temp dir)
    can tell a live sync's files from a killed process's."""
    work_dir = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=temp_dir))
    fd = os.open(work_dir / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return work_dir, fd


def sweep_leftovers(temp_root: Path) -> int:
    """Remove the sync work dirs a killed process left in `temp_root` (temp databases, partial c1z files);
    dirs whose owner still holds its lock stay. Returns how many were removed."""
    removed = 0
    try:
        candidates = [p for p in temp_root.iterdir() if p.name.startswith(WORK_DIR_PREFIX) and p.is_dir()]
    except OSError:
        return 0
    for work_dir in candidates:
        try:
            fd = os.open(work_dir / OWNER_FILE, os.O_RDWR)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - work_dir.stat().st_mtime > UNCLAIMED_AGE_S:
                    shutil.rmtree(work_dir, ignore_errors=True)
                    removed += 1
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live sync's
        finally:
            os.close(fd)
        shutil.rmtree(work_dir, ignore_errors=True)
        removed += 1
    return removed


async def _wait_quietly(work: asyncio.Task[Any]) -> None:
    """Wait for `work` without raising its exception; if *we* are cancelled, cancel it too."""
    try:
        await asyncio.wait({work})
    except asyncio.CancelledError:
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        raise
