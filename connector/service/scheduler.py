"""The task loop: bootstrap Hello, slots, polling, backoff, shutdown (spec §4.1-4.3, §4.10).

- Bootstrap Hello with backoff from 1 s doubling to 5 min. UNAUTHENTICATED, PERMISSION_DENIED,
  INVALID_ARGUMENT, UNIMPLEMENTED, FAILED_PRECONDITION and NOT_FOUND are fatal: the daemon stops with that
  gRPC code as its exit status. Anything else (an unreachable tenant included) is retried for ever while
  health reports not-ready; the Go daemon gives up after its 30 s dial deadline.
- N slots; a slot is taken *before* GetTask so the daemon never claims work it cannot start.
- `next_poll` is honoured after every poll, clamped to [1 s, 5 min]; 0 or unset means 1 s (the Go daemon
  re-polls at once and spins). Poll errors back off n² s, capped at 60 s.
- Shutdown (SIGTERM/SIGINT → `request_stop`): polling stops; running syncs are cancelled and finished
  with a retryable error; provisioning tasks get the grace period (minus a reserve for their FinishTask)
  and are then cancelled the same way; the loop returns within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import grpc

from connector.ops.health import DaemonHealth
from connector.ops.logging import get_logger
from connector.ops.metrics import Metrics
from connector.pb.c1.connector.v2 import connector_pb2
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2
from connector.sdk.errors import ConnectorError
from connector.service.tasks import TaskRunner, clamp_duration, hello_request
from connector.service.tenant import TenantClient, TenantError

log = get_logger(__name__)

FATAL_HELLO_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    }
)


@dataclass(frozen=True)
class SchedulerConfig:
    concurrency: int = 3
    hello_backoff_initial: float = 1.0
    hello_backoff_max: float = 300.0
    poll_min: float = 1.0
    poll_max: float = 300.0
    error_backoff_unit: float = 1.0  # poll error n waits min(n² x unit, error_backoff_max)
    error_backoff_max: float = 60.0
    shutdown_grace: float = 20.0
    # On stop, an in-flight GetTask gets this long to return: a task the tenant already handed out is
    # then run (or finished as cancelled) instead of being stranded until its lease expires.
    stop_poll_grace: float = 2.0
    # Part of the grace period kept for finishing (FinishTask) tasks cancelled when it runs out.
    shutdown_finish_reserve: float = 5.0


class FatalError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Scheduler:
    def __init__(
        self,
        tenant: TenantClient,
        runner: TaskRunner,
        *,
        config: SchedulerConfig,
        metrics: Metrics | None = None,
        health: DaemonHealth | None = None,
        package: str = "",
    ) -> None:
        self.tenant = tenant
        self.runner = runner
        self.config = config
        self.metrics = metrics
        self.health = health
        self.package = package
        self.fatal_message: str | None = None
        self._stop = asyncio.Event()
        self._stop_at: float | None = None
        self._slots = asyncio.Semaphore(config.concurrency)
        self._handlers: dict[str, asyncio.Task[None]] = {}
        self.hello_attempts = 0
        self.polls = 0

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            # From now on a sync that has not started yet is reported as cancelled instead of run.
            self.runner.shutting_down = True
            log.info("shutdown_requested", running=len(self._handlers), grace=self.config.shutdown_grace)
            self._stop.set()

    def force_stop(self) -> None:
        """Stop without waiting: cancel every running task now (their FinishTask is not awaited)."""
        self.request_stop()
        self.runner.finish_deadline = time.monotonic()
        for handler in list(self._handlers.values()):
            handler.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """Sleep; True if a stop was requested meanwhile."""
        if seconds <= 0:
            return self._stop.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def _unless_stopped(self, coro: Any) -> Any:
        """Run `coro`; cancel it and return None if a stop is requested first."""
        task = asyncio.ensure_future(coro)
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TenantError):
            await task
        return None

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        """Hello, then the task loop until stopped. Returns the process exit code."""
        try:
            said_hello = await self._bootstrap()
        except FatalError as err:
            self.fatal_message = f"error: ConductorOne refused the connector: {err.code.name}: {err.message}"
            log.error("hello_fatal", code=err.code.name, error=err.message)
            return int(err.code.value[0])
        if said_hello:
            await self._loop()
        await self._shutdown()
        return 0

    async def _bootstrap(self) -> bool:
        delay = self.config.hello_backoff_initial
        while not self._stop.is_set():
            self.hello_attempts += 1
            try:
                md = await self.runner.runtime.get_metadata(
                    connector_pb2.ConnectorServiceGetMetadataRequest()
                )
                req = hello_request(self.tenant.host_id, md.metadata, "", self.package)
                result = await self._unless_stopped(self.tenant.hello(req))
                if self._stop.is_set() and result is None:
                    return False
            except (TenantError, ConnectorError) as err:
                if err.code in FATAL_HELLO_CODES:
                    raise FatalError(err.code, err.message) from None
                if self.health is not None:
                    self.health.mark_tenant_error(f"hello: {err}")
                log.warning(
                    "hello_failed_retrying", error=str(err), retry_in=delay, attempt=self.hello_attempts
                )
                if await self._sleep_or_stop(delay):
                    return False
                delay = min(delay * 2, self.config.hello_backoff_max)
                continue
            if self.health is not None:
                self.health.mark_hello_done()
            log.info("hello_done", host_id=self.tenant.host_id, endpoint=self.tenant.endpoint.target)
            return True
        return False

    async def _loop(self) -> None:
        errors = 0
        wait = 0.0
        while not self._stop.is_set():
            if await self._sleep_or_stop(wait):
                break
            if await self._unless_stopped(self._slots.acquire()) is None and self._stop.is_set():
                break
            try:
                resp = await self._poll()
            except TenantError as err:
                self._slots.release()
                errors += 1
                wait = min(errors * errors * self.config.error_backoff_unit, self.config.error_backoff_max)
                if self.health is not None:
                    self.health.mark_tenant_error(f"GetTask: {err}")
                log.warning("poll_failed", error=str(err), consecutive=errors, retry_in=wait)
                continue
            if resp is None:  # stopped while polling, nothing received
                self._slots.release()
                break
            self.polls += 1
            errors = 0
            if self.health is not None:
                self.health.mark_tenant_ok()
            if self.metrics is not None:
                self.metrics.poll_succeeded()
            wait = clamp_duration(
                resp.next_poll if resp.HasField("next_poll") else None,
                default=self.config.poll_min,
                low=self.config.poll_min,
                high=self.config.poll_max,
            )
            task = resp.task if resp.HasField("task") else None
            if task is None or task.WhichOneof("task_type") == "none" or not task.id:
                self._slots.release()
                continue
            self._spawn(task)

    async def _poll(self) -> baton_pb2.BatonServiceGetTaskResponse | None:
        """GetTask; on stop, wait a little for an in-flight answer rather than dropping a handed-out task."""
        poll = asyncio.ensure_future(self.tenant.get_task())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not poll.done():
            try:
                return await asyncio.wait_for(poll, self.config.stop_poll_grace)
            except TimeoutError:
                return None
        result: baton_pb2.BatonServiceGetTaskResponse = poll.result()
        return result

    def _spawn(self, task: baton_pb2.Task) -> None:
        handler = asyncio.create_task(self.runner.handle(task), name=f"task-{task.id}")
        self._handlers[task.id] = handler

        def done(t: asyncio.Task[None], task_id: str = task.id) -> None:
            self._handlers.pop(task_id, None)
            self._slots.release()
            if not t.cancelled() and t.exception() is not None:
                log.error("task_handler_crashed", task_id=task_id, error=repr(t.exception()))

        handler.add_done_callback(done)

    # ------------------------------------------------------------------ shutdown

    async def _shutdown(self) -> None:
        start = self._stop_at if self._stop_at is not None else time.monotonic()
        grace = self.config.shutdown_grace
        hard = start + grace
        reserve = min(self.config.shutdown_finish_reserve, grace / 4)
        self.runner.finish_deadline = hard - min(0.25, grace / 10)
        self.runner.shutting_down = True
        running = dict(self._handlers)
        if not running:
            return
        # Syncs can take hours: stop them now and tell the tenant, which reschedules them at once.
        for task_id, active in list(self.runner.active.items()):
            if active.kind == "sync":
                self.runner.cancel(task_id, "the connector is shutting down")
        pending = set(running.values())
        _, pending = await asyncio.wait(pending, timeout=max(0.0, hard - reserve - time.monotonic()))
        if pending:
            for task_id in list(self.runner.active):
                self.runner.cancel(task_id, f"not finished within the {grace:g} s shutdown grace period")
            _, pending = await asyncio.wait(pending, timeout=max(0.0, hard - time.monotonic()))
        for handler in pending:
            handler.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
            log.warning("shutdown_abandoned_tasks", count=len(pending))
