"""The task loop: bootstrap Hello, slots, polling, backoff, shutdown (spec §4.1-4.3, §4.10).

- Bootstrap Hello with backoff from 1 s doubling to 5 min. UNAUTHENTICATED, PERMISSION_DENIED,
  INVALID_ARGUMENT, UNIMPLEMENTED, FAILED_PRECONDITION and NOT_FOUND are fatal: the daemon stops with that
  gRPC code as its exit status. Anything else (an unreachable tenant included) is retried for ever while
  health reports not-ready; the Go daemon gives up after its 30 s dial deadline.
- N slots; a slot is taken *before* GetTask so the daemon never claims work it cannot start.
- `next_poll` is honoured after every poll, capped at 5 min; 0 or unset means 1 s (the Go daemon re-polls
  at once and spins), and anything below 50 ms is raised to 50 ms. Poll errors back off n² s, capped at
  60 s. With BATON_GET_TASKS the same loop takes tasks from a local queue filled by GetTasks (§4.4).
- Shutdown (SIGTERM/SIGINT → `request_stop`): polling stops; running syncs are cancelled and finished
  with a retryable error; provisioning tasks get the grace period (minus a reserve for their FinishTask)
  and are then cancelled the same way; the loop returns within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2

from connector.ops.health import DaemonHealth
from connector.ops.logging import get_logger
from connector.ops.metrics import Metrics
from connector.pb.c1.connector.v2 import connector_pb2
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2
from connector.sdk.errors import ConnectorError
from connector.service.tasks import TaskRunner, clamp_duration, hello_request
from connector.service.tenant import TenantClient, TenantError
from connector.service.timer import REAL_TIMER, Timer

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
    # next_poll: 0 or unset means `poll_default` (the Go daemon re-polls at once and spins); other values
    # are honoured within [poll_min, poll_max].
    poll_default: float = 1.0
    poll_min: float = 0.05
    poll_max: float = 300.0
    error_backoff_unit: float = 1.0  # poll error n waits min(n² x unit, error_backoff_max)
    error_backoff_max: float = 60.0
    shutdown_grace: float = 20.0
    # On stop, an in-flight GetTask gets this long to return: a task the tenant already handed out is
    # then run (or finished as cancelled) instead of being stranded until its lease expires.
    stop_poll_grace: float = 2.0
    # Part of the grace period kept for finishing (FinishTask) tasks cancelled when it runs out.
    shutdown_finish_reserve: float = 5.0
    # BATON_GET_TASKS: batched polling with a local queue (spec §4.4) instead of one GetTask per slot.
    get_tasks: bool = False


def parse_go_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool truthy spellings; anything else (invalid included) is false, as in the SDK."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def poll_wait(next_poll: duration_pb2.Duration | None, config: SchedulerConfig) -> float:
    return clamp_duration(next_poll, default=config.poll_default, low=config.poll_min, high=config.poll_max)


class TaskSource:
    """Where the loop gets work: `next()` → (task or None, seconds to wait before asking again)."""

    async def next(self) -> tuple[baton_pb2.Task | None, float]:
        raise NotImplementedError

    def done(self, task_id: str) -> None:
        """The task's handler returned."""

    def drain(self) -> list[baton_pb2.Task]:
        """Tasks received but not started (batched polling); the caller reports them at shutdown."""
        return []


class SingleSource(TaskSource):
    """GetTask: one task per call; the loop waits `next_poll` after every call, task or not (spec §4.3)."""

    def __init__(self, tenant: TenantClient, config: SchedulerConfig) -> None:
        self.tenant = tenant
        self.config = config

    async def next(self) -> tuple[baton_pb2.Task | None, float]:
        resp = await self.tenant.get_task()
        wait = poll_wait(resp.next_poll if resp.HasField("next_poll") else None, self.config)
        task = resp.task if resp.HasField("task") else None
        if task is None or task.WhichOneof("task_type") == "none" or not task.id:
            return None, wait
        return task, wait


class BatchSource(TaskSource):
    """GetTasks with a local queue (spec §4.4): fetch when queued + in-flight tasks fall below the number
    of slots, asking for up to twice that many and naming the ids already known; never sooner than the
    tenant's `next_poll`. A queued task is handed out with no wait."""

    IDLE_WAIT = 0.1  # Go's wait when nothing is due yet

    def __init__(self, tenant: TenantClient, config: SchedulerConfig, timer: Timer) -> None:
        self.tenant = tenant
        self.config = config
        self.timer = timer
        self.low_water = max(1, config.concurrency)
        self.high_water = 2 * self.low_water
        self.queued: deque[baton_pb2.Task] = deque()
        self.in_flight: set[str] = set()
        self.next_poll_at: float | None = None
        self.fetches = 0

    def _pop(self) -> baton_pb2.Task | None:
        if not self.queued:
            return None
        task = self.queued.popleft()
        self.in_flight.add(task.id)
        return task

    def _remaining(self) -> float:
        left = (self.next_poll_at or 0.0) - self.timer.monotonic()
        return left if left > 0 else self.IDLE_WAIT

    async def next(self) -> tuple[baton_pb2.Task | None, float]:
        task = self._pop()
        if len(self.queued) + len(self.in_flight) >= self.low_water:
            return task, 0.0 if task is not None else self.IDLE_WAIT
        now = self.timer.monotonic()
        if self.next_poll_at is not None and now < self.next_poll_at:
            return task, 0.0 if task is not None else self.next_poll_at - now
        known = [t.id for t in self.queued] + sorted(self.in_flight)
        # The proto allows 1..100 per page (Go can exceed 100 above 50 slots; we do not).
        page_size = max(1, min(100, self.high_water - len(known)))
        try:
            resp = await self.tenant.get_tasks(page_size, known)
        except TenantError:
            if task is None:
                raise
            return task, 0.0  # we still have work; the next fetch retries
        self.fetches += 1
        wait = poll_wait(resp.next_poll if resp.HasField("next_poll") else None, self.config)
        self.next_poll_at = self.timer.monotonic() + wait
        seen = set(known)
        for got in resp.tasks:
            if not got.id or got.WhichOneof("task_type") in (None, "none") or got.id in seen:
                continue
            seen.add(got.id)
            self.queued.append(got)
        if task is None:
            task = self._pop()
        if task is not None:
            return task, 0.0
        return None, self._remaining()

    def done(self, task_id: str) -> None:
        self.in_flight.discard(task_id)

    def drain(self) -> list[baton_pb2.Task]:
        tasks = list(self.queued)
        self.queued.clear()
        return tasks


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
        timer: Timer = REAL_TIMER,
    ) -> None:
        self.tenant = tenant
        self.runner = runner
        self.config = config
        self.metrics = metrics
        self.health = health
        self.package = package
        self.timer = timer
        self.fatal_message: str | None = None
        self._stop = asyncio.Event()
        self._stop_at: float | None = None
        self._slots = asyncio.Semaphore(config.concurrency)
        self._handlers: dict[str, asyncio.Task[None]] = {}
        self.source: TaskSource = (
            BatchSource(tenant, config, timer) if config.get_tasks else SingleSource(tenant, config)
        )
        self.hello_attempts = 0
        self.polls = 0

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        if not self._stop.is_set():
            self._stop_at = self.timer.monotonic()
            # From now on a sync that has not started yet is reported as cancelled instead of run.
            self.runner.shutting_down = True
            log.info("shutdown_requested", running=len(self._handlers), grace=self.config.shutdown_grace)
            self._stop.set()

    def force_stop(self) -> None:
        """Stop without waiting: cancel every running task now (their FinishTask is not awaited)."""
        self.request_stop()
        self.runner.finish_deadline = self.timer.monotonic()
        for handler in list(self._handlers.values()):
            handler.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def _sleep_or_stop(self, seconds: float, purpose: str) -> bool:
        """Sleep (through the timer); True if a stop was requested meanwhile."""
        if seconds <= 0 or self._stop.is_set():
            return self._stop.is_set()
        await self._unless_stopped(self.timer.sleep(seconds, purpose))
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
                if await self._sleep_or_stop(delay, "hello_backoff"):
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
        wait, purpose = 0.0, "poll"
        while not self._stop.is_set():
            if await self._sleep_or_stop(wait, purpose):
                break
            if await self._unless_stopped(self._slots.acquire()) is None and self._stop.is_set():
                break
            try:
                got = await self._poll()
            except TenantError as err:
                self._slots.release()
                errors += 1
                wait = min(errors * errors * self.config.error_backoff_unit, self.config.error_backoff_max)
                purpose = "poll_error"
                if self.health is not None:
                    self.health.mark_tenant_error(f"{self._poll_method}: {err}")
                log.warning("poll_failed", error=str(err), consecutive=errors, retry_in=wait)
                continue
            if got is None:  # stopped while polling, nothing received
                self._slots.release()
                break
            task, wait = got
            purpose = "poll"
            self.polls += 1
            errors = 0
            if self.health is not None:
                self.health.mark_tenant_ok()
            if self.metrics is not None:
                self.metrics.poll_succeeded()
            if task is None:
                self._slots.release()
                continue
            self._spawn(task)

    @property
    def _poll_method(self) -> str:
        return "GetTasks" if self.config.get_tasks else "GetTask"

    async def _poll(self) -> tuple[baton_pb2.Task | None, float] | None:
        """Ask the source for work; on stop, wait a little for an in-flight answer rather than dropping a
        handed-out task. None when stopped without an answer."""
        poll = asyncio.ensure_future(self.source.next())
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
        result: tuple[baton_pb2.Task | None, float] = poll.result()
        return result

    def _spawn(self, task: baton_pb2.Task) -> None:
        handler = asyncio.create_task(self.runner.handle(task), name=f"task-{task.id}")
        self._handlers[task.id] = handler

        def done(t: asyncio.Task[None], task_id: str = task.id) -> None:
            self._handlers.pop(task_id, None)
            self.source.done(task_id)
            self._slots.release()
            if not t.cancelled() and t.exception() is not None:
                log.error("task_handler_crashed", task_id=task_id, error=repr(t.exception()))

        handler.add_done_callback(done)

    # ------------------------------------------------------------------ shutdown

    async def _shutdown(self) -> None:
        now = self.timer.monotonic()
        start = self._stop_at if self._stop_at is not None else now
        grace = self.config.shutdown_grace
        hard = start + grace
        reserve = min(self.config.shutdown_finish_reserve, grace / 4)
        self.runner.finish_deadline = hard - min(0.25, grace / 10)
        self.runner.shutting_down = True
        # Tasks received in a GetTasks batch but never started: tell the tenant now (retryable) rather than
        # leave them leased to a process that is going away.
        for task in self.source.drain():
            self._spawn_unstarted(task)
        running = dict(self._handlers)
        if not running:
            return
        # Syncs can take hours: stop them now and tell the tenant, which reschedules them at once.
        for task_id, active in list(self.runner.active.items()):
            if active.kind == "sync":
                self.runner.cancel(task_id, "the connector is shutting down")
        pending = set(running.values())
        _, pending = await asyncio.wait(pending, timeout=max(0.0, hard - reserve - self.timer.monotonic()))
        if pending:
            for task_id in list(self.runner.active):
                self.runner.cancel(task_id, f"not finished within the {grace:g} s shutdown grace period")
            _, pending = await asyncio.wait(pending, timeout=max(0.0, hard - self.timer.monotonic()))
        for handler in pending:
            handler.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
            log.warning("shutdown_abandoned_tasks", count=len(pending))

    def _spawn_unstarted(self, task: baton_pb2.Task) -> None:
        handler = asyncio.create_task(self.runner.release_unstarted(task), name=f"release-{task.id}")
        self._handlers[task.id] = handler

        def done(_t: asyncio.Task[None], task_id: str = task.id) -> None:
            self._handlers.pop(task_id, None)

        handler.add_done_callback(done)
