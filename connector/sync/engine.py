"""The sync engine: drive a connector through `c1.connector.v2` and write a v1 c1z.

Phases (spec §4): validate -> resource types -> resources (children via ChildResourceType) -> static
entitlements -> entitlements -> grants -> grant expansion -> save -> connector Cleanup. A targeted sync
instead fetches each target with GetResource and lists its entitlements and grants (a `partial` sync).

Concurrency: listings that do not depend on each other (pages of different resource types, children of
different parents, entitlements and grants of different resources) run in up to `options.concurrency`
worker tasks; the pages of one listing are sequential because page tokens chain. Results do not depend on
the order in which workers finish.

Storage: rows are built on the event loop and handed, in batches with a bounded number in flight, to the
store (store.py: by default a child process running SQLite, the index build, expansion and compression),
driven from one thread, so the connector keeps producing while the store writes and memory stays flat.
Grants a syncer built with a GrantEncoder arrive as rows already. Nothing holds the organisation in memory:
per-resource phases page through the resources already stored.

Failure: any error other than a retried UNAVAILABLE/DEADLINE_EXCEEDED (in process only those carrying a
RateLimitDescription are retried: the upstream client has retried the rest already), or a NOT_FOUND while
listing one resource's entitlements or grants (a counted warning), fails the sync with one line naming the
phase, resource type and resource. Nothing is then left at the output path (or in temp), and a file that
was already there is untouched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from connector.c1z import ksuid, rows
from connector.c1z.container import C1zError
from connector.ops.logging import get_logger
from connector.pb.c1.connector.v2 import (
    annotation_ratelimit_pb2,
    annotation_resource_tree_pb2,
    connector_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.sdk.client import ConnectorClient, EncodedGrantsClient
from connector.sdk.encoded_grants import EncodedGrants
from connector.sdk.errors import ConnectorError
from connector.sdk.runtime import ConnectorRuntime
from connector.sync import tuning
from connector.sync.early_expansion import ALL_DONE
from connector.sync.expansion import DEFAULT_MAX_DEPTH, ExpansionError
from connector.sync.report import SyncReport
from connector.sync.store import Store, new_cancel_event, open_store

log = get_logger(__name__)

T = TypeVar("T")
Resource = resource_pb2.Resource
ResourceId = resource_pb2.ResourceId
Target = resource_pb2.Resource | resource_pb2.ResourceId | str

# Validate.sdk_version from which connectors expect active_sync_id on requests (Go syncer rule).
ACTIVE_SYNC_ID_MIN_VERSION = (0, 4, 3)
# Longest the engine runs without handing the event loop back (per-resource workers, large pages).
MAX_STEP_S = 0.002
RESOURCE_PAGE = 1000
ROW_BATCH = 8000
MAX_BATCHES_IN_FLIGHT = 3
# With early expansion, a grants batch goes to the store at least this often, so the store learns soon
# which listings have ended.
EARLY_EXPANSION_FLUSH_S = 0.05
MAX_LINEAR_BACKOFF_S = 60.0
CLEANUP_TIMEOUT_S = 30.0
# Go syncer: abort when there are more than 10 warnings and they exceed 10% of completed listings.
WARNING_ABORT_MIN = 10
WARNING_ABORT_RATIO = 0.1

_TRAIT_ANNOTATIONS = {
    resource_pb2.ResourceType.TRAIT_USER: "c1.connector.v2.UserTrait",
    resource_pb2.ResourceType.TRAIT_GROUP: "c1.connector.v2.GroupTrait",
    resource_pb2.ResourceType.TRAIT_ROLE: "c1.connector.v2.RoleTrait",
    resource_pb2.ResourceType.TRAIT_APP: "c1.connector.v2.AppTrait",
    resource_pb2.ResourceType.TRAIT_SECRET: "c1.connector.v2.SecretTrait",
}
_SKIP_ALL = "c1.connector.v2.SkipEntitlementsAndGrants"
_SKIP_ENTITLEMENTS = "c1.connector.v2.SkipEntitlements"
_SKIP_GRANTS = "c1.connector.v2.SkipGrants"
_SKIP_MARK = b"c1.connector.v2.Skip"
_CHILD_TYPE = "c1.connector.v2.ChildResourceType"
_INSERT_RESOURCE_GRANTS = "c1.connector.v2.InsertResourceGrants"


@dataclass(frozen=True)
class SyncOptions:
    """What to sync (mirrors `SyncFullTask`) and how hard to push.

    `targeted_resources` accepts Resource messages (as in SyncFullTask.targeted_sync_resources),
    ResourceIds or "type:id" strings. `keep_sync_count`: when the output already holds a c1z, its newest
    finished full syncs up to this many (the new one included) are kept, as the Go syncer does.
    Retries: UNAVAILABLE / DEADLINE_EXCEEDED (in process: only with a RateLimitDescription) are retried
    up to `max_retries` times per call, waiting for
    a RateLimitDescription's reset time when there is one, else `retry_base_delay_s` x attempt (capped
    at 60 s); the waits of one call never add up to more than `max_retry_wait_s`.
    """

    skip_expand_grants: bool = False
    skip_entitlements_and_grants: bool = False
    skip_grants: bool = False
    sync_resource_type_ids: Sequence[str] = ()
    targeted_resources: Sequence[Target] = ()
    concurrency: int = 8
    skip_full_sync: bool = False
    keep_sync_count: int = 2
    max_retries: int = 8
    retry_base_delay_s: float = 1.0
    max_retry_wait_s: float = 600.0
    max_expansion_depth: int = DEFAULT_MAX_DEPTH
    # The c1z writer (SQLite, indexes, compression) runs in a child process, on another core than the
    # connector; False keeps it on a thread of this process.
    writer_process: bool = True
    # Expand the edges whose grants are all listed while the rest are still being listed (the result is
    # the same; early_expansion.py). False: all expansion after the last listing.
    early_expansion: bool = True


class SyncError(Exception):
    """A sync failed. `str()` is one line: `sync failed in phase <phase> for <where>: <cause>`."""

    def __init__(self, phase: str, where: str, cause: str, *, code: grpc.StatusCode | None = None) -> None:
        self.phase = phase
        self.where = where
        self.cause = cause
        self.code = code
        location = f" for {where}" if where else ""
        super().__init__(f"sync failed in phase {phase}{location}: {cause}")


class _CallFailed(Exception):
    def __init__(self, error: ConnectorError) -> None:
        super().__init__(str(error))
        self.error = error


def _describe(err: ConnectorError) -> str:
    return f"{err.code.name}: {err.message}"


def _as_connector_error(exc: BaseException) -> ConnectorError:
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):  # a raw channel rather than GrpcConnectorClient
        return ConnectorError(exc.code(), exc.details() or "")
    return ConnectorError(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")


def _annotation_names(annotations: Sequence[Any]) -> set[str]:
    return {a.type_url.rsplit("/", 1)[-1] for a in annotations}


def _rid(r: ResourceId) -> str:
    return f"{r.resource_type}:{r.resource}"


def _parse_version(text: str) -> tuple[int, ...] | None:
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return tuple(int(x) for x in m.groups()) if m else None


def _target_id(target: Target) -> tuple[ResourceId, ResourceId | None]:
    if isinstance(target, resource_pb2.Resource):
        parent = target.parent_resource_id if target.HasField("parent_resource_id") else None
        return target.id, parent
    if isinstance(target, resource_pb2.ResourceId):
        return target, None
    type_id, sep, res = str(target).partition(":")
    if not sep or not type_id or not res:
        raise SyncError("targeted-resources", "", f"invalid target {target!r}: expected TYPE:ID")
    return ResourceId(resource_type=type_id, resource=res), None


# Store jobs (run on the store's thread with the store as first argument).


def _start_sync(store: Store, sync_type: str, parent: str, sync_id: str) -> str:
    return store.start_sync(sync_type, parent, sync_id or None)


def _latest_finished_sync(store: Store, sync_type: str) -> str:
    return store.latest_finished_sync(sync_type)


def _write_resource_type_rows(store: Store, batch: list[rows.ResourceTypeRow]) -> None:
    store.write_resource_type_rows(batch)


def _write_resource_rows(store: Store, batch: list[rows.ResourceRow]) -> None:
    store.write_resource_rows(batch)


def _write_entitlement_rows(store: Store, batch: list[rows.EntitlementRow]) -> None:
    store.write_entitlement_rows(batch)


def _write_grant_batch(store: Store, batch: rows.GrantRows) -> None:
    store.write_grant_batch(batch)


def _resource_page(
    store: Store, after: int, limit: int, type_id: str | None, exclude: tuple[str, ...] = ()
) -> list[tuple[int, bytes]]:
    return store.resource_page(after, limit, type_id, exclude)


def _resource_exists(store: Store, type_id: str, res_id: str) -> bool:
    return store.resource_exists(type_id, res_id)


def _expand_grants(store: Store, max_depth: int) -> tuple[dict[str, int], list[str]]:
    return store.expand_grants(max_depth)


def _commit(store: Store) -> int:
    return store.commit()


def _abort(store: Store) -> None:
    store.abort()


class _Db:
    """The store's thread: jobs run one at a time in the order submitted, the first one opening the store.

    The engine never waits for the store to open: validation and the first listings go ahead while it
    starts (a child process takes a moment), and the rows they produce queue behind the opening. A job is
    `fn(store, *args)`; if the opening failed, every job raises the opening's error.
    """

    def __init__(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="c1z-db")
        self.store: Store | None = None
        self._open_error: BaseException | None = None

    def open(self, factory: Callable[[], Store]) -> concurrent.futures.Future[Store]:
        def job() -> Store:
            try:
                self.store = factory()
            except BaseException as exc:
                self._open_error = exc
                raise
            return self.store

        return self.executor.submit(job)

    def _with_store(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self.store is None:
            raise self._open_error or C1zError("the c1z store is not open")
        return fn(self.store, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self.executor.submit(self._with_store, fn, args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.submit(fn, *args))

    def close(self) -> None:
        self.executor.shutdown(wait=False)


class _Sink:
    """Batches rows for one table and hands them to the store thread, a bounded number in flight."""

    def __init__(
        self, db: _Db, write: Callable[[Any, Any], None], new: Callable[[], Any], size: Callable[[Any], int]
    ):
        self.db = db
        self.write = write
        self.new = new
        self.size = size
        self.buffer: Any = new()
        self.inflight: deque[asyncio.Future[None]] = deque()
        # Called with each batch as it is handed over (the grants sink stamps the expansion watermark).
        self.stamp: Callable[[Any], None] | None = None
        self.submitted_at = time.monotonic()
        # Rows handed over, counted into (counts, key) for progress displays.
        self.counted: tuple[dict[str, int], str] | None = None

    @classmethod
    def of_lists(cls, db: _Db, write: Callable[[Any, Any], None]) -> _Sink:
        return cls(db, write, list, len)

    async def maybe_submit(self) -> None:
        if self.size(self.buffer) >= ROW_BATCH:
            await self._submit()

    async def add(self, items: list[Any]) -> None:
        self.buffer.extend(items)
        await self.maybe_submit()

    async def submit_if_older(self, seconds: float) -> None:
        """Hand the buffer over, even small or empty, if nothing was handed over for `seconds`."""
        if time.monotonic() - self.submitted_at >= seconds:
            await self._submit()

    async def _submit(self) -> None:
        batch, self.buffer = self.buffer, self.new()
        if self.stamp is not None:
            self.stamp(batch)
        if self.counted is not None:
            counts, key = self.counted
            counts[key] = counts.get(key, 0) + self.size(batch)
        self.submitted_at = time.monotonic()
        self.inflight.append(asyncio.wrap_future(self.db.submit(self.write, batch)))
        while len(self.inflight) > MAX_BATCHES_IN_FLIGHT:
            await self.inflight.popleft()

    async def flush(self) -> None:
        if self.size(self.buffer):
            await self._submit()
        while self.inflight:
            await self.inflight.popleft()

    async def discard(self) -> None:
        """After a failure: wait for queued writes (so the thread is idle), ignoring their errors."""
        self.buffer = self.new()
        while self.inflight:
            fut = self.inflight.popleft()
            with contextlib.suppress(BaseException):
                await asyncio.shield(fut)


async def _wait_done(fut: concurrent.futures.Future[Any]) -> None:
    """Wait for a worker-thread job, even through further cancellations (only used while already
    failing or being cancelled, so the caller re-raises the original exception afterwards)."""
    wrapped = asyncio.wrap_future(fut)
    while not wrapped.done():
        with contextlib.suppress(BaseException):
            await asyncio.shield(wrapped)


class _ResourceFeed:
    """Stored resources of the current sync, fetched from SQLite a page at a time as workers need them.

    After a full page the next one is requested at once: the store thread serves requests in order, so
    a page asked for only when the buffer runs dry waits behind the row batches queued meanwhile (up to
    MAX_BATCHES_IN_FLIGHT per table), and every worker would stall with it. Two pages at most are held.
    """

    def __init__(self, db: _Db, exclude_types: Iterable[str] = (), first_types: Sequence[str] = ()) -> None:
        self.db = db
        # Types the phase skips: never read back (a connector's users are often most of its resources).
        self.exclude = tuple(sorted(exclude_types))
        # Passes over the store: (type or None for every other type, types left out). With `first_types`,
        # the resources of those types come first, one type after another, then every other type;
        # otherwise one pass in row id order.
        first = [t for t in first_types if t not in self.exclude]
        self.passes: deque[tuple[str | None, tuple[str, ...]]] = deque(
            [*((t, ()) for t in first), (None, tuple(sorted({*self.exclude, *first})))]
        )
        self.in_row_order = not first
        self.buffer: deque[tuple[int, bytes]] = deque()
        self.after = 0
        # Row id of the last resource handed out (those after it are not handed out yet).
        self.last = 0
        self.done = False
        self.lock = asyncio.Lock()
        self.pending: concurrent.futures.Future[list[tuple[int, bytes]]] | None = None

    def _request(self) -> concurrent.futures.Future[list[tuple[int, bytes]]]:
        type_id, exclude = self.passes[0]
        return self.db.submit(_resource_page, self.after, RESOURCE_PAGE, type_id, exclude)

    async def next(self) -> tuple[int, bytes] | None:
        """The next resource: its row id and its data."""
        while not self.buffer:
            if self.done:
                return None
            async with self.lock:
                if self.buffer or self.done:
                    continue
                fut, self.pending = self.pending or self._request(), None
                page = await asyncio.wrap_future(fut)
                if not page:
                    self.passes.popleft()
                    self.after = 0
                    self.done = not self.passes
                else:
                    self.after = page[-1][0]
                    self.buffer.extend(page)
                    if len(page) == RESOURCE_PAGE:
                        self.pending = self._request()
        item = self.buffer.popleft()
        self.last = item[0]
        return item

    def exhausted(self) -> bool:
        return self.done and not self.buffer

    async def close(self) -> None:
        """Wait for a prefetch still queued (its result is not needed), so the store thread is idle."""
        fut, self.pending = self.pending, None
        if fut is not None:
            await _wait_done(fut)


class _Listings:
    """Which resources have had their grants listed, as the watermark early expansion needs: every
    resource of the sync with a smaller row id has (connector/sync/early_expansion.py)."""

    def __init__(self) -> None:
        self.feed: _ResourceFeed | None = None
        self.running: set[int] = set()
        # Ended since the last batch was stamped: the store runs their edges even while an earlier,
        # slower listing holds the watermark back.
        self.ended: list[int] = []
        self.finished = False

    def watermark(self) -> int:
        feed = self.feed
        if self.finished:
            return ALL_DONE
        if feed is None:
            return 0
        # Resources are handed out in row id order: those before the last one handed out have ended
        # unless still running; a resource skipped by its annotations has nothing to list. Handed out in
        # another order, only the ended ones (`ended`) are known until the end.
        floor = feed.last + 1 if feed.in_row_order else 0
        if feed.exhausted():
            floor = ALL_DONE
        return min(floor, *self.running) if self.running else floor

    def stamp(self, batch: rows.GrantRows) -> None:
        batch.watermark = self.watermark()
        batch.ended, self.ended = self.ended, []


def _encoded_grants_lister(client: ConnectorClient) -> Any:
    """`client.list_grants_encoded` when the client's class defines it next to its own `list_grants`
    (ConnectorRuntime). A wrapper that delegates attributes or overrides `list_grants` keeps the plain
    path, so whatever it does to ListGrants is not bypassed."""
    cls = type(client)

    def owner(name: str) -> type | None:
        return next((k for k in cls.__mro__ if name in vars(k)), None)

    defined_in = owner("list_grants_encoded")
    if defined_in is None or owner("list_grants") is not defined_in:
        return None
    assert isinstance(client, EncodedGrantsClient)
    return client.list_grants_encoded


class _Syncer:
    def __init__(
        self,
        client: ConnectorClient,
        db: _Db,
        options: SyncOptions,
        report: SyncReport,
        on_phase: Callable[[str], None] | None,
    ) -> None:
        self.client = client
        # In process, the connector's upstream client has already retried everything worth retrying
        # (with its own backoff); retrying its failures again would multiply the attempts per page. Only
        # a rate limit (a reset time to wait for) is worth another try. Over gRPC the channel itself can
        # fail transiently, so UNAVAILABLE / DEADLINE_EXCEEDED are retried too.
        self.retry_only_rate_limits = isinstance(client, ConnectorRuntime)
        self.list_grants_encoded = _encoded_grants_lister(client)
        self.db = db
        self.sync_id = ""
        self.options = options
        self.report = report
        self.on_phase = on_phase
        self.concurrency = max(1, options.concurrency)
        self.active_sync_id = ""
        self.types: dict[str, resource_pb2.ResourceType] = {}
        self.type_annotations: dict[str, set[str]] = {}
        self.type_filter = {t for t in options.sync_resource_type_ids if t}
        self.resources = _Sink.of_lists(db, _write_resource_rows)
        self.entitlements = _Sink.of_lists(db, _write_entitlement_rows)
        self.grants = _Sink(db, _write_grant_batch, rows.GrantRows, len)
        for name in ("resources", "entitlements", "grants"):
            getattr(self, name).counted = (report.live_rows, name)
        # Store jobs not awaited where they were submitted (the sync run's start, the resource types):
        # `settle` collects their outcome before anything reads from the store.
        self.background: list[concurrent.futures.Future[Any]] = []
        self.actions_done = 0
        self.parents_listed: set[tuple[str, str, str]] = set()
        self._needed_traits: dict[str, tuple[str, ...]] = {}
        self.partial = bool(options.targeted_resources)
        self.phase_name = ""
        self._phase_started = 0.0

    # --- bookkeeping --------------------------------------------------------------------------------

    def phase(self, name: str) -> None:
        now = time.monotonic()
        if self.phase_name:
            durations = self.report.phase_durations
            durations[self.phase_name] = durations.get(self.phase_name, 0.0) + now - self._phase_started
        self.phase_name, self._phase_started = name, now
        if name:
            log.info("sync_phase", phase=name, sync_id=self.sync_id)
            if self.on_phase is not None:
                self.on_phase(name)

    def warn(self, message: str) -> None:
        self.report.warn(message)
        log.warning("sync_warning", message=message, sync_id=self.sync_id)

    def check_warnings(self, phase: str) -> None:
        n = self.report.warning_count
        if n > WARNING_ABORT_MIN and n > WARNING_ABORT_RATIO * max(1, self.actions_done):
            raise SyncError(
                phase,
                "",
                f"too many warnings ({n} after {self.actions_done} listings); "
                f"first: {self.report.warnings[0]}",
            )

    async def settle(self) -> None:
        """Wait for the store jobs submitted without waiting; raise the first failure."""
        while self.background:
            await asyncio.wrap_future(self.background.pop(0))

    async def flush_all(self) -> None:
        await self.settle()
        await self.resources.flush()
        await self.entitlements.flush()
        await self.grants.flush()

    async def discard_all(self) -> None:
        """After a failure: wait for every queued store job (so the store thread is idle), ignoring errors."""
        for fut in self.background:
            await _wait_done(fut)
        self.background.clear()
        for sink in (self.resources, self.entitlements, self.grants):
            await sink.discard()

    # --- calling the connector ----------------------------------------------------------------------

    def _retry_delay(self, err: ConnectorError, attempt: int) -> float:
        rate = err.rate_limit
        if rate is not None and rate.HasField("reset_at"):
            until_reset = (rate.reset_at.ToDatetime(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)).total_seconds()
            if until_reset > 0:
                overlimit = rate.status == annotation_ratelimit_pb2.RateLimitDescription.STATUS_OVERLIMIT
                if rate.remaining <= 0 or overlimit:
                    return until_reset
                return until_reset / rate.remaining
        return min(self.options.retry_base_delay_s * attempt, MAX_LINEAR_BACKOFF_S)

    async def call(
        self,
        method: Callable[[Any], Awaitable[T]],
        request: Any,
        what: str,
        *,
        rate_limits_only: bool = False,
    ) -> T:
        """One RPC with the retry policy; raises _CallFailed with the final ConnectorError.
        `rate_limits_only`: retry only errors that say when to come back (the others fail at once)."""
        attempt = 0
        waited = 0.0
        while True:
            self.report.connector_calls += 1
            try:
                return await method(request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = _as_connector_error(exc)
                only_rate_limited = rate_limits_only or self.retry_only_rate_limits
                retry = err.retryable and (err.rate_limit is not None or not only_rate_limited)
                if retry and attempt < self.options.max_retries:
                    delay = max(0.0, self._retry_delay(err, attempt + 1))
                    if waited + delay <= self.options.max_retry_wait_s:
                        attempt += 1
                        waited += delay
                        self.report.retries += 1
                        log.info(
                            "sync_retry",
                            call=what,
                            code=err.code.name,
                            error=err.message,
                            attempt=attempt,
                            delay_s=round(delay, 3),
                            rate_limited=err.rate_limit is not None,
                        )
                        await asyncio.sleep(delay)
                        continue
                raise _CallFailed(err) from None

    @staticmethod
    def next_token(resp: Any, token: str, what: str) -> str:
        nxt = str(resp.next_page_token)
        if nxt and nxt == token:
            raise _CallFailed(
                ConnectorError(
                    grpc.StatusCode.INTERNAL, f"{what}: next page token unchanged - likely a connector bug"
                )
            )
        return nxt

    # --- the run ------------------------------------------------------------------------------------

    async def run(self) -> None:
        opts = self.options
        if opts.skip_full_sync:
            self.phase("skip-full-sync")
            self.sync_id = await self.db.run(_start_sync, "full", "", "")
            self.report.sync_id, self.report.sync_type = self.sync_id, "full"
            return
        if self.partial:
            parent = await self.db.run(_latest_finished_sync, "full")
            sync_type = "partial"
        else:
            parent = ""
            sync_type = "resources_only" if opts.skip_entitlements_and_grants else "full"
        self.sync_id = ksuid.new_ksuid()
        self.background.append(self.db.submit(_start_sync, sync_type, parent, self.sync_id))
        self.report.sync_id, self.report.sync_type = self.sync_id, sync_type

        await self.validate()
        await self.resource_types()
        if self.partial:
            await self.settle()
            await self.targeted()
        else:
            await self.all_resources()
            if not opts.skip_entitlements_and_grants:
                await self.static_entitlements()
                await self.per_resource(
                    "entitlements", self.list_entitlements, (_SKIP_ALL, _SKIP_ENTITLEMENTS)
                )
                await self.entitlements.flush()
                if not opts.skip_grants:
                    listings = None
                    if opts.early_expansion and not opts.skip_expand_grants:
                        listings = _Listings()
                        self.grants.stamp = listings.stamp
                    await self.per_resource("grants", self.list_grants, (_SKIP_ALL, _SKIP_GRANTS), listings)
                    if listings is not None:
                        listings.finished = True
                await self.flush_all()
                if not opts.skip_expand_grants:
                    await self.expand()
        await self.flush_all()

    async def validate(self) -> None:
        self.phase("validate")
        try:
            # Not retried beyond what the upstream client already did (apart from rate limits): a
            # failing validation is a wrong address or credential, and the user should hear at once.
            resp = await self.call(
                self.client.validate,
                connector_pb2.ConnectorServiceValidateRequest(),
                "validate",
                rate_limits_only=True,
            )
        except _CallFailed as exc:
            raise SyncError("validate", "", _describe(exc.error), code=exc.error.code) from None
        version = _parse_version(resp.sdk_version)
        if version is not None and version >= ACTIVE_SYNC_ID_MIN_VERSION:
            self.active_sync_id = self.sync_id

    async def resource_types(self) -> None:
        self.phase("resource-types")
        seen: list[resource_pb2.ResourceType] = []
        token = ""
        try:
            while True:
                req = resource_pb2.ResourceTypesServiceListResourceTypesRequest(
                    page_token=token, active_sync_id=self.active_sync_id
                )
                resp = await self.call(self.client.list_resource_types, req, "list resource types")
                seen.extend(resp.list)
                token = self.next_token(resp, token, "list resource types")
                if not token:
                    break
        except _CallFailed as exc:
            raise SyncError("resource-types", "", _describe(exc.error), code=exc.error.code) from None
        known = {rt.id for rt in seen}
        unknown = sorted(self.type_filter - known)
        if unknown:
            raise SyncError(
                "resource-types",
                "",
                f"unknown resource type {', '.join(repr(u) for u in unknown)} in sync_resource_type_ids "
                f"(the connector has: {', '.join(sorted(known)) or 'none'})",
                code=grpc.StatusCode.INVALID_ARGUMENT,
            )
        kept = [rt for rt in seen if not self.type_filter or rt.id in self.type_filter]
        for rt in kept:
            self.types[rt.id] = rt
            self.type_annotations[rt.id] = _annotation_names(rt.annotations)
        self.background.append(
            self.db.submit(_write_resource_type_rows, [rows.resource_type_row(rt) for rt in kept])
        )
        self.report.resource_types = len(self.types)

    # --- resources ----------------------------------------------------------------------------------

    def _trait_urls(self, type_id: str) -> tuple[str, ...]:
        """Type URLs of the trait annotations every resource of this type must carry (cached)."""
        cached = self._needed_traits.get(type_id)
        if cached is None:
            rt = self.types.get(type_id)
            traits = rt.traits if rt is not None else ()
            cached = tuple(
                f"type.googleapis.com/{_TRAIT_ANNOTATIONS[t]}" for t in traits if t in _TRAIT_ANNOTATIONS
            )
            self._needed_traits[type_id] = cached
        return cached

    def check_traits(self, res: Resource, urls: Sequence[str]) -> None:
        for needed in self._trait_urls(res.id.resource_type):
            if needed not in urls:
                name = needed.rsplit(".", 1)[-1]
                raise SyncError(
                    "resources",
                    _rid(res.id),
                    f"resource was missing expected trait {name} "
                    f"(its resource type {res.id.resource_type} declares it)",
                    code=grpc.StatusCode.FAILED_PRECONDITION,
                )

    async def store_resources(self, items: Sequence[Resource]) -> list[tuple[str, ResourceId]]:
        """Trait-check and queue resources; returns the child listings their annotations ask for."""
        children: list[tuple[str, ResourceId]] = []
        batch = []
        clock = time.monotonic
        stepped = clock()
        for i, res in enumerate(items):
            # A connector may answer with thousands of resources at once (Confluence: a round of eight
            # pages of users): checking and encoding them is ~5 us each, so hand the loop back rather
            # than hold the answers to the requests in flight for tens of milliseconds.
            if i & 63 == 63 and clock() - stepped > MAX_STEP_S:
                await asyncio.sleep(0)
                stepped = clock()
            urls = [a.type_url for a in res.annotations]
            self.check_traits(res, urls)
            batch.append(rows.resource_row(res))
            if not any(u.endswith(_CHILD_TYPE) for u in urls):
                continue
            for a in res.annotations:
                if a.type_url.endswith(_CHILD_TYPE):
                    child = annotation_resource_tree_pb2.ChildResourceType()
                    a.Unpack(child)
                    if self.type_filter and child.resource_type_id not in self.type_filter:
                        continue
                    key = (child.resource_type_id, res.id.resource_type, res.id.resource)
                    if key in self.parents_listed:
                        continue
                    self.parents_listed.add(key)
                    children.append((child.resource_type_id, res.id))
        await self.resources.add(batch)
        return children

    async def all_resources(self) -> None:
        self.phase("resources")
        queue: asyncio.Queue[tuple[str, ResourceId | None]] = asyncio.Queue()
        for type_id in self.types:
            queue.put_nowait((type_id, None))

        async def list_one(type_id: str, parent: ResourceId | None) -> None:
            where = f"{type_id} under {_rid(parent)}" if parent is not None else type_id
            what = f"list {where} resources"
            token = ""
            try:
                while True:
                    req = resource_pb2.ResourcesServiceListResourcesRequest(
                        resource_type_id=type_id, page_token=token, active_sync_id=self.active_sync_id
                    )
                    if parent is not None:
                        req.parent_resource_id.CopyFrom(parent)
                    resp = await self.call(self.client.list_resources, req, what)
                    for child_type, parent_id in await self.store_resources(resp.list):
                        queue.put_nowait((child_type, parent_id))
                    token = self.next_token(resp, token, what)
                    if not token:
                        break
            except _CallFailed as exc:
                raise SyncError("resources", where, _describe(exc.error), code=exc.error.code) from None
            self.actions_done += 1

        async def worker() -> None:
            while True:
                type_id, parent = await queue.get()
                try:
                    await list_one(type_id, parent)
                finally:
                    queue.task_done()

        await _run_workers(self.concurrency, worker, queue.join)
        await self.resources.flush()

    async def targeted(self) -> None:
        self.phase("targeted-resources")
        targets = [_target_id(t) for t in self.options.targeted_resources]
        fetched: list[Resource] = []
        for rid, parent in targets:
            res = await self.get_resource(rid, parent, "targeted-resources")
            if res is not None:
                fetched.append(res)
        await self.resources.flush()
        if self.options.skip_entitlements_and_grants:
            return
        self.phase("entitlements")
        for res in fetched:
            if not self.skips(res, (_SKIP_ALL, _SKIP_ENTITLEMENTS)):
                await self.list_entitlements(res.SerializeToString(deterministic=True))
        await self.entitlements.flush()
        if not self.options.skip_grants:
            self.phase("grants")
            for res in fetched:
                if not self.skips(res, (_SKIP_ALL, _SKIP_GRANTS)):
                    await self.list_grants(res.SerializeToString(deterministic=True))

    async def get_resource(self, rid: ResourceId, parent: ResourceId | None, phase: str) -> Resource | None:
        req = resource_pb2.ResourceGetterServiceGetResourceRequest(
            resource_id=rid, active_sync_id=self.active_sync_id
        )
        if parent is not None:
            req.parent_resource_id.CopyFrom(parent)
        try:
            resp = await self.call(self.client.get_resource, req, f"get {_rid(rid)}")
        except _CallFailed as exc:
            if exc.error.code == grpc.StatusCode.NOT_FOUND:
                self.warn(f"{phase}: {_rid(rid)} not found: {exc.error.message}")
                return None
            raise SyncError(phase, _rid(rid), _describe(exc.error), code=exc.error.code) from None
        res: Resource = resp.resource
        if not res.id.resource_type:
            self.warn(f"{phase}: GetResource for {_rid(rid)} returned no resource")
            return None
        await self.store_resources([res])
        return res

    # --- entitlements and grants --------------------------------------------------------------------

    def skips(self, res: Resource, names: tuple[str, ...]) -> bool:
        """Whether the resource or its type carries one of the skip annotations `names`."""
        type_names = self.type_annotations.get(res.id.resource_type, set())
        if any(n in type_names for n in names):
            return True
        present = _annotation_names(res.annotations)
        return any(n in present for n in names)

    async def static_entitlements(self) -> None:
        self.phase("static-entitlements")
        await self.settle()
        for type_id in self.types:
            templates: list[entitlement_pb2.Entitlement] = []
            what = f"list static entitlements of {type_id}"
            token = ""
            try:
                while True:
                    req = entitlement_pb2.EntitlementsServiceListStaticEntitlementsRequest(
                        resource_type_id=type_id, page_token=token, active_sync_id=self.active_sync_id
                    )
                    resp = await self.call(self.client.list_static_entitlements, req, what)
                    templates.extend(resp.list)
                    token = self.next_token(resp, token, what)
                    if not token:
                        break
            except _CallFailed as exc:
                if exc.error.code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
                    continue
                raise SyncError(
                    "static-entitlements", type_id, _describe(exc.error), code=exc.error.code
                ) from None
            self.actions_done += 1
            if templates:
                await self.synthesize_static(type_id, templates)

    async def synthesize_static(self, type_id: str, templates: list[entitlement_pb2.Entitlement]) -> None:
        """One entitlement per template and stored resource of the type (`<type>:<id>:<slug>`)."""
        after = 0
        while True:
            page = await self.db.run(_resource_page, after, RESOURCE_PAGE, type_id)
            if not page:
                return
            batch = []
            for row_id, data in page:
                after = row_id
                res = Resource.FromString(data)
                if self.skips(res, (_SKIP_ALL, _SKIP_ENTITLEMENTS)):
                    continue
                for tpl in templates:
                    ent = entitlement_pb2.Entitlement(
                        id=f"{type_id}:{res.id.resource}:{tpl.slug}",
                        display_name=tpl.display_name or res.display_name,
                        description=tpl.description or res.description,
                        grantable_to=tpl.grantable_to,
                        annotations=tpl.annotations,
                        purpose=tpl.purpose,
                        slug=tpl.slug,
                    )
                    ent.resource.CopyFrom(res)
                    batch.append(rows.entitlement_row(ent))
            await self.entitlements.add(batch)

    async def per_resource(
        self,
        phase: str,
        handler: Callable[[bytes], Awaitable[None]],
        skip_names: tuple[str, ...],
        listings: _Listings | None = None,
    ) -> None:
        """Run `handler` for every stored resource of this sync that the skip annotations do not exclude;
        `listings`, if given, follows which have ended (and grant batches go to the store often enough for
        early expansion to follow)."""
        self.phase(phase)
        await self.settle()
        await self.resources.flush()
        # Types whose own annotations skip this phase are left in the store; a resource whose own
        # annotations skip it is parsed to find out.
        skipped_types = {
            t for t, names in self.type_annotations.items() if any(n in names for n in skip_names)
        }
        # Grants: resources of group types first. Group memberships are what usually expands into other
        # resources' entitlements; listed first, every later resource whose listing ends releases its
        # edges to early expansion at once, spread over the phase rather than left for its end (the result
        # is the same in any order).
        first_types: list[str] = []
        if listings is not None:
            first_types = [
                t for t, rt in self.types.items() if resource_pb2.ResourceType.TRAIT_GROUP in rt.traits
            ]
        feed = _ResourceFeed(self.db, skipped_types, first_types)
        if listings is not None:
            listings.feed = feed

        async def worker() -> None:
            clock = time.monotonic
            stepped = clock()
            while (item := await feed.next()) is not None:
                rowid, data = item
                if _SKIP_MARK in data:
                    res = Resource.FromString(data)
                    if any(n in _annotation_names(res.annotations) for n in skip_names):
                        continue
                if listings is None:
                    await handler(data)
                else:
                    listings.running.add(rowid)
                    try:
                        await handler(data)
                    finally:
                        listings.running.discard(rowid)
                    listings.ended.append(rowid)
                    await self.grants.submit_if_older(EARLY_EXPANSION_FLUSH_S)
                # Resources whose listings need no I/O (no grants, a connector's cache) never suspend the
                # worker; without a hand-back it could hold the loop for tens of milliseconds while the
                # answers to the requests in flight wait to be read.
                if clock() - stepped > MAX_STEP_S:
                    await asyncio.sleep(0)
                    stepped = clock()

        try:
            await _run_tasks([worker() for _ in range(self.concurrency)])
        finally:
            await feed.close()

    async def list_entitlements(self, data: bytes) -> None:
        """All pages of the entitlements of the resource serialized in `data` (parsed straight into the
        request, which saves a copy per resource)."""
        first = entitlement_pb2.EntitlementsServiceListEntitlementsRequest(active_sync_id=self.active_sync_id)
        first.resource.MergeFromString(data)
        where = _rid(first.resource.id)
        req = first
        try:
            while True:
                resp = await self.call(self.client.list_entitlements, req, where)
                if resp.list:
                    await self.entitlements.add([rows.entitlement_row(e) for e in resp.list])
                token = self.next_token(resp, req.page_token, f"list entitlements of {where}")
                if not token:
                    break
                req = entitlement_pb2.EntitlementsServiceListEntitlementsRequest()
                req.CopyFrom(first)
                req.page_token = token
        except _CallFailed as exc:
            if exc.error.code != grpc.StatusCode.NOT_FOUND:
                raise SyncError("entitlements", where, _describe(exc.error), code=exc.error.code) from None
            self.warn(f"entitlements of {where}: not found: {exc.error.message}")
        self.actions_done += 1
        self.check_warnings("entitlements")

    async def list_grants(self, data: bytes) -> None:
        """All pages of one resource's grants (see list_entitlements)."""
        first = grant_pb2.GrantsServiceListGrantsRequest(active_sync_id=self.active_sync_id)
        first.resource.MergeFromString(data)
        where = _rid(first.resource.id)
        req = first
        try:
            while True:
                if self.list_grants_encoded is not None:
                    resp, encoded = await self.call(self.list_grants_encoded, req, where)
                else:
                    resp, encoded = await self.call(self.client.list_grants, req, where), None
                if encoded is not None:
                    if len(encoded):
                        await self.store_encoded_grants(resp, encoded, where)
                elif resp.list:
                    await self.store_grants(resp, where)
                token = self.next_token(resp, req.page_token, f"list grants of {where}")
                if not token:
                    break
                req = grant_pb2.GrantsServiceListGrantsRequest()
                req.CopyFrom(first)
                req.page_token = token
        except _CallFailed as exc:
            if exc.error.code != grpc.StatusCode.NOT_FOUND:
                raise SyncError("grants", where, _describe(exc.error), code=exc.error.code) from None
            self.warn(f"grants of {where}: not found: {exc.error.message}")
        self.actions_done += 1
        self.check_warnings("grants")

    async def store_grants(self, resp: grant_pb2.GrantsServiceListGrantsResponse, where: str) -> None:
        batch: rows.GrantRows = self.grants.buffer
        before = len(batch.problems)
        batch.add_response(resp)
        if len(batch.problems) > before:
            for g, problem in batch.problems[before:]:
                self.report.dropped_records += 1
                self.warn(f"grants of {where}: grant {g.id or '(no id)'} {problem}; dropped")
            del batch.problems[before:]
        await self.grants.maybe_submit()
        insert_resources = bool(resp.annotations) and any(
            a.type_url.endswith(_INSERT_RESOURCE_GRANTS) for a in resp.annotations
        )
        if insert_resources or self.partial:
            await self.grant_resources(resp.list, insert_resources)

    async def store_encoded_grants(
        self, resp: grant_pb2.GrantsServiceListGrantsResponse, encoded: EncodedGrants, where: str
    ) -> None:
        """Grants an in-process connector built with a GrantEncoder: stored as they are."""
        batch: rows.GrantRows = self.grants.buffer
        batch.add_records(encoded.records, encoded.annotated)
        for g in encoded.problems:
            self.report.dropped_records += 1
            problem = rows.grant_identity_problem(g) or "has an empty identity field"
            self.warn(f"grants of {where}: grant {g.id or '(no id)'} {problem}; dropped")
        await self.grants.maybe_submit()
        insert_resources = bool(resp.annotations) and any(
            a.type_url.endswith(_INSERT_RESOURCE_GRANTS) for a in resp.annotations
        )
        if insert_resources or self.partial:
            await self.grant_resources(list(encoded), insert_resources)

    async def grant_resources(self, grants: Sequence[grant_pb2.Grant], insert: bool) -> None:
        """InsertResourceGrants: store each grant's entitlement resource. Partial syncs: fetch the
        entitlement resources that are not stored yet."""
        seen: dict[tuple[str, str], Resource] = {}
        for g in grants:
            res = g.entitlement.resource
            key = (res.id.resource_type, res.id.resource)
            if key[0] and key not in seen:
                seen[key] = res
        if insert:
            await self.store_resources(list(seen.values()))
            return
        await self.resources.flush()
        for type_id, res_id in seen:
            if not await self.db.run(_resource_exists, type_id, res_id):
                await self.get_resource(ResourceId(resource_type=type_id, resource=res_id), None, "grants")

    # --- expansion ----------------------------------------------------------------------------------

    async def expand(self) -> None:
        self.phase("grant-expansion")
        try:
            stats, warnings = await self.db.run(_expand_grants, self.options.max_expansion_depth)
        except ExpansionError as exc:
            raise SyncError("grant-expansion", "", str(exc)) from None
        for message in warnings:
            self.report.warn(message)
        self.report.grants_expanded = stats["created"]
        self.report.grants_expanded_early = stats.get("created_early", 0)
        log.info("grant_expansion_done", **stats)


async def _as_coro(aw: Awaitable[None]) -> None:
    await aw


async def _run_tasks(coros: Sequence[Awaitable[None]]) -> None:
    """Run coroutines together; the first failure cancels the rest and is re-raised as itself."""
    try:
        async with asyncio.TaskGroup() as tg:
            for c in coros:
                tg.create_task(_as_coro(c))
    except BaseExceptionGroup as group:
        raise _first(group) from None


async def _run_workers(
    n: int, worker: Callable[[], Awaitable[None]], until: Callable[[], Awaitable[None]]
) -> None:
    """`n` copies of `worker` until `until()` completes (then they are cancelled); a failure propagates."""

    async def supervisor(tasks: list[asyncio.Task[None]]) -> None:
        await until()
        for t in tasks:
            t.cancel()

    try:
        async with asyncio.TaskGroup() as tg:
            tasks: list[asyncio.Task[None]] = [tg.create_task(_as_coro(worker())) for _ in range(n)]
            tg.create_task(supervisor(tasks))
    except BaseExceptionGroup as group:
        raise _first(group) from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


async def run_sync(
    client: ConnectorClient,
    output: Path,
    options: SyncOptions,
    *,
    temp_dir: Path | None = None,
    on_phase: Callable[[str], None] | None = None,
    upstream_requests: Callable[[], int] | None = None,
    report: SyncReport | None = None,
) -> SyncReport:
    """Run one sync through `client` and write the c1z atomically at `output`.

    Raises SyncError (one line naming phase, resource type and resource) or C1zError (file problems,
    e.g. an existing output that is not a c1z). On any failure or cancellation nothing is left at
    `output` that was not there before, and the temp files are gone. `on_phase` is called with each
    phase name as it starts; `upstream_requests` (default: the in-process connector's
    `upstream_request_count`) is sampled before and after for the report. A `report` passed in is the one
    filled, so a caller can watch `connector_calls` and `live_rows` while the sync runs (progress).
    """
    with tuning.held():
        return await _run_sync(client, Path(output), options, temp_dir, on_phase, upstream_requests, report)


async def _run_sync(
    client: ConnectorClient,
    output: Path,
    options: SyncOptions,
    temp_dir: Path | None,
    on_phase: Callable[[str], None] | None,
    upstream_requests: Callable[[], int] | None,
    given: SyncReport | None = None,
) -> SyncReport:
    started = time.monotonic()
    report = given if given is not None else SyncReport(output=str(output))
    connector = getattr(client, "connector", None)
    if upstream_requests is None and connector is not None and hasattr(connector, "upstream_request_count"):
        upstream_requests = connector.upstream_request_count
    upstream_start = upstream_requests() if upstream_requests is not None else 0
    db = _Db()
    in_process = not options.writer_process
    cancel = new_cancel_event(in_process)
    syncer: _Syncer | None = None
    opening = db.open(
        lambda: open_store(
            output,
            temp_dir=temp_dir,
            keep_sync_count=options.keep_sync_count,
            cancel=cancel,
            in_process=in_process,
        )
    )
    try:
        syncer = _Syncer(client, db, options, report, on_phase)
        await syncer.run()
        syncer.phase("save")
        await db.run(_finish, report)
        report.c1z_bytes = await db.run(_commit)
        report.writer_peak_rss_kib = db.store.peak_rss_kib if db.store is not None else 0
        syncer.phase("")
    except BaseException as exc:
        cancel.set()
        # The opening may still be running (a child starting, an existing output being decompressed): it
        # stops early when cancelled; then whatever store it produced is discarded.
        await _wait_done(opening)
        if syncer is not None:
            await syncer.discard_all()
        if db.store is not None:
            await _wait_done(db.submit(_abort))
        db.close()
        cancelled = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit)
        if not cancelled:
            log.warning("sync_failed", error=str(exc), sync_id=report.sync_id)
            if syncer is not None and report.sync_id and not options.skip_full_sync:
                await _cleanup_connector(client, syncer.active_sync_id, report)
        if cancelled or isinstance(exc, SyncError | C1zError) or not isinstance(exc, Exception):
            raise
        phase = syncer.phase_name if syncer is not None and syncer.phase_name else "start"
        raise SyncError(phase, "", f"{type(exc).__name__}: {exc}") from exc
    db.close()
    if not options.skip_full_sync:
        await _cleanup_connector(client, syncer.active_sync_id, report)
    report.duration_s = time.monotonic() - started
    if upstream_requests is not None:
        report.upstream_requests = max(0, upstream_requests() - upstream_start)
    if connector is not None and hasattr(connector, "sync_counters"):
        try:
            report.connector_counters = {str(k): int(v) for k, v in connector.sync_counters().items()}
        except Exception as exc:  # a counter bug must not fail a finished sync
            log.warning("sync_counters_failed", error=str(exc))
    log.info("sync_finished", **report.to_dict())
    return report


def _finish(w: Store, report: SyncReport) -> None:  # a store job
    """On the store thread: final indexes, end the sync run, counts for the report, retention."""
    result = w.finish()
    report.resources = dict(result["resources"])
    report.entitlements = int(result["entitlements"])
    report.grants_direct = int(result["grants"]) - report.grants_expanded
    if result["old_syncs_removed"]:
        log.info("sync_old_syncs_removed", count=result["old_syncs_removed"])


async def _cleanup_connector(client: ConnectorClient, active_sync_id: str, report: SyncReport) -> None:
    """Connector Cleanup at the end of a sync; errors are logged only, as in the Go syncer."""
    try:
        await asyncio.wait_for(
            client.cleanup(connector_pb2.ConnectorServiceCleanupRequest(active_sync_id=active_sync_id)),
            CLEANUP_TIMEOUT_S,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        err = _as_connector_error(exc)
        log.warning("connector_cleanup_failed", error=_describe(err), sync_id=report.sync_id)
