"""The sync engine's store: a C1zWriter plus the work the engine does inside the database (grant
expansion, the end-of-sync bookkeeping), either in this process or in a child process.

Why a child process: a sync is Python work on two sides, the connector building rows and SQLite storing
them, and with one interpreter the two take turns on the GIL (binding a row batch's parameters alone holds
it for about a microsecond and a half per row). A writer in its own process runs SQLite, index building
and compression on the second core while the connector keeps the first. Row batches cross a pipe as
`marshal` bytes (rows are tuples of str and bytes; marshal is the cheapest encoding of those).

Both kinds expose the same synchronous methods and are driven from one engine thread. `ProcessStore`
sends writes without waiting (a few in flight, so the child always has the next batch) and reports a
failed write at the next call that waits for an answer. Errors come back as the same exception types.
The child ignores SIGINT/SIGTERM (the parent decides), and exits, discarding its temp files, when the
parent goes away (also when a reply meets a broken pipe). While the parent waits for an answer it checks
that the child is making progress (CPU time); a child stuck for STALL_GRACE_S is killed and the sync fails.
"""

from __future__ import annotations

import contextlib
import marshal
import multiprocessing
import multiprocessing.connection
import queue
import resource
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from connector.c1z import rows, schema
from connector.c1z.container import C1zError, Cancelled
from connector.c1z.writer import C1zWriter, disk_full_error, is_disk_full
from connector.ops.logging import get_logger
from connector.sync.early_expansion import EarlyExpansion
from connector.sync.expansion import Expander, ExpansionError, ExpansionStats

log = get_logger(__name__)

# Row batches that may be queued in the pipe before the engine waits for the child.
MAX_PENDING_WRITES = 4
# Liveness: while the engine waits for an answer, the child must use some CPU at least this often
# (SQLite, expansion and compression all do); otherwise it is killed and the sync fails.
STALL_GRACE_S = 120.0
LIVENESS_POLL_S = 1.0
# What the parent may ask of the child (the LocalStore methods a ProcessStore forwards).
_OPS = frozenset(
    {
        "start_sync",
        "latest_finished_sync",
        "write_resource_type_rows",
        "write_resource_rows",
        "write_entitlement_rows",
        "write_grants",
        "resource_page",
        "resource_exists",
        "expand_grants",
        "finish",
        "commit",
        "abort",
    }
)


class Store(Protocol):
    """What the engine calls (always from its one store thread)."""

    sync_id: str
    # Peak RSS of a child process store, known after commit (0 in process).
    peak_rss_kib: int

    def start_sync(
        self, sync_type: str = "full", parent_sync_id: str = "", sync_id: str | None = None
    ) -> str: ...
    def latest_finished_sync(self, sync_type: str | None = None) -> str: ...
    def write_resource_type_rows(self, batch: Sequence[rows.ResourceTypeRow]) -> None: ...
    def write_resource_rows(self, batch: Sequence[rows.ResourceRow]) -> None: ...
    def write_entitlement_rows(self, batch: Sequence[rows.EntitlementRow]) -> None: ...
    def write_grant_batch(self, batch: rows.GrantRows) -> None: ...
    def resource_page(
        self,
        after_id: int,
        limit: int,
        resource_type: str | None = None,
        exclude_types: Sequence[str] = (),
    ) -> list[tuple[int, bytes]]: ...
    def resource_exists(self, resource_type: str, resource: str) -> bool: ...
    def expand_grants(self, max_depth: int) -> tuple[dict[str, int], list[str]]: ...
    def finish(self) -> dict[str, Any]: ...
    def commit(self) -> int: ...
    def abort(self) -> None: ...


class LocalStore(C1zWriter):
    """The store in this process (the engine runs it on a worker thread)."""

    peak_rss_kib = 0
    _early: EarlyExpansion | None = None

    def write_grants(
        self,
        plain: Sequence[rows.PlainGrantRow],
        expandable: Sequence[rows.ExpandableGrantRow],
        expandable_after: Sequence[int],
        watermark: int | None,
        ended: Sequence[int] = (),
    ) -> None:
        """Store connector grants; with a watermark (a full sync's grants phase), expansion of the edges
        it makes final starts here (early_expansion.py)."""
        early = self._early
        if early is None and watermark is not None:
            early = self._early = EarlyExpansion(self.conn, self.sync_id, lambda: not self._deferred_indexes)
            self.defer_lookup_indexes()
        if early is not None:
            early.before_write(plain, expandable)
        self.write_grant_rows(plain, expandable, expandable_after=expandable_after)
        if early is not None:
            early.after_write(watermark, ended)

    def write_grant_batch(self, batch: rows.GrantRows) -> None:
        self.write_grants(batch.plain, batch.expandable, batch.expandable_after, batch.watermark, batch.ended)

    def idle(self) -> bool:
        """Early expansion while no request is waiting. Returns whether more is ready to run."""
        return self._early.step() if self._early is not None else False

    def expand_grants(self, max_depth: int) -> tuple[dict[str, int], list[str]]:
        """Grant expansion (the indexes it reads first), skipping what ran early. Returns the counts and
        warnings."""
        self.ensure_indexes(final=False)
        early, self._early = self._early, None
        if early is not None:
            early.active = False
        warnings: list[str] = []
        expander = Expander(self.conn, self.sync_id, max_depth=max_depth, warn=warnings.append)
        expander.load()
        if early is not None and not early.agrees_with(expander.edges):
            early.undo()
        skip = early if early is not None and early.ran else None
        while (layer := expander.next_layer()) is not None:
            if self.cancel.is_set():
                raise Cancelled("grant expansion cancelled")
            if skip is not None:
                layer = [a for a in layer if not skip.done(a)]
            expander.expand_layer(layer)
        s = expander.stats
        before = early.stats if early is not None else ExpansionStats()
        stats = {
            "edges": s.edges,
            "cycles_collapsed": s.components_collapsed,
            "layers": s.layers,
            "created": s.created + before.created,
            "updated": s.updated + before.updated,
            "created_early": before.created,
            "early_taken_back": early.undone if early is not None else 0,
        }
        return stats, warnings

    def finish(self) -> dict[str, Any]:
        """Final indexes, end of the sync run, counts for the report, retention of older syncs."""
        self.ensure_indexes()
        self.end_sync()
        return {
            "resources": self.resource_counts(),
            "entitlements": self.count(schema.ENTITLEMENTS),
            "grants": self.count(schema.GRANTS),
            "old_syncs_removed": self.cleanup_old_syncs(),
        }


def open_store(
    target: Path,
    *,
    temp_dir: Path | None,
    keep_sync_count: int,
    cancel: Any,
    in_process: bool,
) -> Store:
    """The store for one sync. A child process is used unless `in_process` (or `cancel` is a plain thread
    event, see `new_cancel_event`); if the child cannot be started (no fork allowed, no /dev/shm, out of
    memory), the store falls back to this process with a warning rather than failing the sync."""
    if not in_process and not isinstance(cancel, threading.Event):
        try:
            return ProcessStore(target, temp_dir=temp_dir, keep_sync_count=keep_sync_count, cancel=cancel)
        except OSError as exc:
            log.warning("c1z_writer_process_unavailable", error=str(exc), fallback="in process")
    return LocalStore(target, temp_dir=temp_dir, keep_sync_count=keep_sync_count, cancel=cancel)


def new_cancel_event(in_process: bool) -> Any:
    """A cancel flag the store can see: a thread event, or one shared with a child process (falling back
    to a thread event, and so to an in-process store, where process-shared semaphores are unavailable)."""
    if not in_process:
        try:
            return _context().Event()
        except OSError as exc:
            log.warning("c1z_writer_process_unavailable", error=str(exc), fallback="in process")
    return threading.Event()


# --- the child process ------------------------------------------------------------------------------


def _context() -> multiprocessing.context.ForkServerContext:
    # forkserver: children fork from a small clean server (this module preloaded), never from the daemon
    # with its gRPC and event-loop threads, and start in milliseconds after the first.
    ctx = multiprocessing.get_context("forkserver")
    assert isinstance(ctx, multiprocessing.context.ForkServerContext)
    ctx.set_forkserver_preload([__name__])
    return ctx


_START_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """multiprocessing re-imports the caller's main module in every forkserver child (so that objects
    defined there unpickle); the store needs nothing from it, and a script without an
    `if __name__ == "__main__"` guard would run again in the child. The child is told there is none."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _START_LOCK:
        saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


def _error_reply(exc: BaseException, work_dir: Path | None = None) -> bytes:
    kind = type(exc).__name__
    if isinstance(exc, Cancelled):
        kind = "Cancelled"
    elif isinstance(exc, C1zError):
        kind = "C1zError"
    elif work_dir is not None and is_disk_full(exc):
        # SQLite's "database or disk is full" from any write (rows, indexes, expansion): say where and what
        # to do, as the writer does for the errors it sees itself.
        return marshal.dumps(("error", "C1zError", str(disk_full_error(work_dir.parent))))
    return marshal.dumps(("error", kind, str(exc)))


def _child_main(
    conn: multiprocessing.connection.Connection,
    target: str,
    temp_dir: str | None,
    keep_sync_count: int,
    cancel: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        store = LocalStore(
            target,
            temp_dir=temp_dir,
            keep_sync_count=keep_sync_count,
            cancel=cancel,
        )
    except BaseException as exc:
        conn.send_bytes(_error_reply(exc))
        return
    conn.send_bytes(marshal.dumps(("ok", str(store.work_dir))))
    # A reader thread receives and decodes the next request while this thread is inside SQLite (which
    # runs without the GIL), so the two overlap; the small queue bounds what is held in memory.
    requests: queue.Queue[tuple[str, tuple[Any, ...]] | None] = queue.Queue(maxsize=2)

    def read() -> None:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                requests.put(None)
                return
            op, args = marshal.loads(data)
            requests.put((op, args))
            if op in ("commit", "abort"):
                return

    threading.Thread(target=read, name="c1z-writer-reader", daemon=True).start()
    finished = False  # commit or abort ran: the temp files are the writer's business no more
    try:
        while True:
            try:
                request = requests.get_nowait()
            except queue.Empty:
                if store.idle():
                    continue
                request = requests.get()
            if request is None:
                return  # the parent is gone: the finally clause leaves nothing behind
            op, args = request
            try:
                if op not in _OPS:
                    raise C1zError(f"unknown store operation {op!r}")
                if op == "commit":
                    # The peak is read after compression, the last and one of the hungriest steps.
                    result = (store.commit(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
                else:
                    result = getattr(store, op)(*args)
            except BaseException as exc:
                finished = op in ("commit", "abort")
                conn.send_bytes(_error_reply(exc, store.work_dir))
                if finished:
                    return
                continue
            finished = op in ("commit", "abort")
            conn.send_bytes(marshal.dumps(("ok", result)))
            if finished:
                return
    finally:
        # Also when a reply cannot be sent (BrokenPipeError: the parent went away mid-call, e.g. while it
        # shuts down): an unfinished store's temp database must not outlive this process.
        if not finished:
            with contextlib.suppress(BaseException):
                store.abort()
        with contextlib.suppress(OSError):
            conn.close()


class ProcessStore:
    """The store in a child process (see the module docstring)."""

    def __init__(
        self,
        target: Path,
        *,
        temp_dir: Path | None,
        keep_sync_count: int,
        cancel: Any,
        stall_grace: float = STALL_GRACE_S,
    ) -> None:
        ctx = _context()
        self.stall_grace = stall_grace
        self.sync_id = ""
        self.peak_rss_kib = 0
        self._tmp_target = target.with_name(target.name + ".tmp")  # as C1zWriter names it
        self._pending = 0
        self._closed = False
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child_main,
            args=(child, str(target), None if temp_dir is None else str(temp_dir), keep_sync_count, cancel),
            name="c1z-writer",
            daemon=True,
        )
        with _main_module_hidden():
            self._proc.start()
        child.close()
        self._work_dir: Path | None = None
        try:
            self._work_dir = Path(self._reply())
        except BaseException:
            self._shutdown()
            raise

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    # --- plumbing -----------------------------------------------------------------------------------

    def _cpu_ticks(self) -> int | None:
        """The child's CPU time so far (clock ticks), or None where /proc cannot tell."""
        try:
            with open(f"/proc/{self._proc.pid}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            return None

    def _await_answer(self) -> None:
        """Wait until an answer can be read. A child that is alive but has used no CPU for
        `stall_grace` seconds while we wait (stopped, deadlocked, stuck on a dead disk) is killed and the
        sync fails (retryably, as every failed sync in service mode)."""
        ticks = self._cpu_ticks()
        progressed = time.monotonic()
        while not self._conn.poll(min(LIVENESS_POLL_S, self.stall_grace)):
            if not self._proc.is_alive():
                return  # the read reports it
            now_ticks = self._cpu_ticks()
            if now_ticks is None or now_ticks != ticks:
                ticks, progressed = now_ticks, time.monotonic()
            elif time.monotonic() - progressed >= self.stall_grace:
                log.error("c1z_writer_stalled", pid=self._proc.pid, grace_s=self.stall_grace)
                self._proc.kill()
                self._proc.join(5)
                raise C1zError(
                    f"the c1z writer process made no progress for {self.stall_grace:g} s and was stopped"
                )

    def _reply(self) -> Any:
        self._await_answer()
        try:
            message = marshal.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            self._proc.join(5)
            raise C1zError(
                f"the c1z writer process exited unexpectedly (exit code {self._proc.exitcode})"
            ) from None
        if message[0] == "ok":
            return message[1]
        _, kind, text = message
        if kind == "Cancelled":
            raise Cancelled(text)
        if kind == "C1zError":
            raise C1zError(text)
        if kind == "ExpansionError":
            raise ExpansionError(text)
        raise C1zError(f"c1z writer: {kind}: {text}")

    def _send(self, op: str, args: tuple[Any, ...]) -> None:
        if self._closed:
            raise C1zError("the c1z writer is closed")
        try:
            self._conn.send_bytes(marshal.dumps((op, args)))
        except (BrokenPipeError, OSError):
            self._proc.join(5)
            raise C1zError(
                f"the c1z writer process exited unexpectedly (exit code {self._proc.exitcode})"
            ) from None

    def _drain(self) -> None:
        """Read the answers to writes in flight; raise the first failure after reading them all (so
        the next answer read is the next call's)."""
        first: BaseException | None = None
        while self._pending:
            self._pending -= 1
            try:
                self._reply()
            except (C1zError, ExpansionError) as exc:
                first = first or exc
        if first is not None:
            raise first

    def _call(self, op: str, *args: Any) -> Any:
        self._drain()
        self._send(op, args)
        return self._reply()

    def _write(self, op: str, *args: Any) -> None:
        if self._pending >= MAX_PENDING_WRITES:
            self._pending -= 1
            try:
                self._reply()
            except BaseException:
                self._drain()
                raise
        self._send(op, args)
        self._pending += 1

    def _shutdown(self) -> None:
        self._closed = True
        self._conn.close()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        if self._work_dir is not None and self._proc.exitcode != 0:
            # A child that died (killed, out of memory) could not remove its temp database.
            shutil.rmtree(self._work_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self._tmp_target.unlink(missing_ok=True)

    # --- the store ----------------------------------------------------------------------------------

    def start_sync(
        self, sync_type: str = "full", parent_sync_id: str = "", sync_id: str | None = None
    ) -> str:
        self.sync_id = str(self._call("start_sync", sync_type, parent_sync_id, sync_id))
        return self.sync_id

    def latest_finished_sync(self, sync_type: str | None = None) -> str:
        return str(self._call("latest_finished_sync", sync_type))

    def write_resource_type_rows(self, batch: Sequence[rows.ResourceTypeRow]) -> None:
        self._write("write_resource_type_rows", list(batch))

    def write_resource_rows(self, batch: Sequence[rows.ResourceRow]) -> None:
        self._write("write_resource_rows", list(batch))

    def write_entitlement_rows(self, batch: Sequence[rows.EntitlementRow]) -> None:
        self._write("write_entitlement_rows", list(batch))

    def write_grant_batch(self, batch: rows.GrantRows) -> None:
        self._write(
            "write_grants",
            batch.plain,
            batch.expandable,
            batch.expandable_after,
            batch.watermark,
            batch.ended,
        )

    def resource_page(
        self,
        after_id: int,
        limit: int,
        resource_type: str | None = None,
        exclude_types: Sequence[str] = (),
    ) -> list[tuple[int, bytes]]:
        page: list[tuple[int, bytes]] = self._call(
            "resource_page", after_id, limit, resource_type, tuple(exclude_types)
        )
        return page

    def resource_exists(self, resource_type: str, resource: str) -> bool:
        return bool(self._call("resource_exists", resource_type, resource))

    def expand_grants(self, max_depth: int) -> tuple[dict[str, int], list[str]]:
        stats, warnings = self._call("expand_grants", max_depth)
        return dict(stats), list(warnings)

    def finish(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("finish")
        return result

    def commit(self) -> int:
        try:
            size, self.peak_rss_kib = self._call("commit")
            return int(size)
        finally:
            self._shutdown()

    def abort(self) -> None:
        """Discard everything (also after a failed write, or when the child has died)."""
        if self._closed:
            return
        try:
            with contextlib.suppress(C1zError, ExpansionError):
                self._drain()  # a failed write: the abort still goes ahead
            with contextlib.suppress(C1zError, ExpansionError):
                self._send("abort", ())
                self._reply()
        finally:
            self._shutdown()


__all__ = ["LocalStore", "ProcessStore", "Store", "new_cancel_event", "open_store"]
