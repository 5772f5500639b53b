"""Building a c1z: a SQLite database in a private temp dir, then one atomic write of the container.

Lifecycle: `C1zWriter(target)` creates `<tmp>/c1zXXXX/db` beside the target (or in `temp_dir`). If the
target already holds a c1z, its database is decompressed into the temp copy first, so earlier syncs are
kept as the Go syncer keeps them (older full syncs beyond `keep_sync_count` are dropped at the end).
Rows are upserted in batches of multi-row statements (each statement one transaction). `commit()` builds
the deferred indexes, closes the database, streams it through zstd into `<target>.tmp`, fsyncs, renames
over the target and fsyncs the directory.
`abort()` (or any exception inside `with`) removes the temp dir and `<target>.tmp`; the target is then
exactly as it was before.

Every method is synchronous and must be called from one thread at a time; the sync engine drives the
writer from a dedicated worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from types import TracebackType

from connector.c1z import container, ksuid, rows, schema
from connector.c1z.container import C1zError
from connector.c1z.timefmt import format_timestamp
from connector.pb.c1.connector.v2 import entitlement_pb2, grant_pb2, resource_pb2

SYNC_TYPES = ("full", "partial", "resources_only", "partial_upserts", "partial_deletions")

# Bulk-load settings: the temp database is private and disposable until commit, so durability during the
# build buys nothing. The cache is a fixed cap, so memory does not grow with the number of rows.
CACHE_KIB = 8 * 1024

# Rows go to SQLite as multi-row `INSERT ... VALUES (...), (...)` statements with numbered parameters:
# the whole batch is bound in one C loop and executed in one sqlite3_step call, during which Python's GIL
# is released. (executemany re-takes the GIL for every row, which serializes the SQLite thread behind the
# event loop's protobuf work.) `?1` and `?2` are the sync id and the timestamp, shared by every row.
# Each statement is its own transaction: a batch needs no BEGIN/COMMIT round trips (each one is another
# GIL hand-over), and a half-written build database is discarded anyway if the sync fails.
# Statement size: SQLite's cost per row grows with the size of a VALUES list (measured on 300k grant
# rows: ~6 us/row at 4000 rows per statement, ~3.5 at 2000, ~3 at 64-512), so statements stay at a few
# hundred rows; the engine's short GIL switch interval keeps the more frequent GIL hand-overs cheap.
MAX_ROWS_PER_STATEMENT = 512

# Databases this large are compressed by several zstd workers (about 0.15 s single-threaded at this size).
MT_COMPRESS_FROM = 64 << 20

# Grants written to a new file before its grant indexes are dropped for a bulk load (see C1zWriter).
BULK_LOAD_AFTER = 100_000

# Page size of a new database. Building the grant indexes scans the whole grants table once per index, and
# with 16 KiB pages those scans and sorts take about 30% less time than with SQLite's default 4 KiB (measured
# on 1M grants); any SQLite reader, the Go one included, reads either.
NEW_PAGE_SIZE = 16384

# Grant indexes nothing reads while a sync runs (expansion looks grants up by entitlement and by id): a new
# file builds them once at the end instead of keeping them live through every derived grant.
LOOKUP_ONLY_GRANT_INDEXES = frozenset(
    {"idx_grants_resource_type_id_resource_id_v1", "idx_grants_principal_id_v1"}
)


class MultiRowUpsert:
    def __init__(self, table: str, columns: str, row: tuple[str, ...], conflict: str) -> None:
        """`row`: one SQL expression per column; "?" marks a per-row parameter (in order)."""
        self.head = f"insert into {table} ({columns}) values "
        self.row = row
        self.params = sum(1 for c in row if c == "?")
        self.conflict = conflict
        self._sql: dict[int, str] = {}

    def sql(self, rows_: int) -> str:
        text = self._sql.get(rows_)
        if text is None:
            groups = []
            n = 3
            for _ in range(rows_):
                exprs = []
                for c in self.row:
                    if c == "?":
                        exprs.append(f"?{n}")
                        n += 1
                    else:
                        exprs.append(c)
                groups.append(f"({', '.join(exprs)})")
            text = self.head + ", ".join(groups) + " " + self.conflict
            self._sql[rows_] = text
        return text

    def rows_per_statement(self, max_variables: int) -> int:
        return max(1, min(MAX_ROWS_PER_STATEMENT, (max_variables - 2) // max(1, self.params)))


_RESOURCE_TYPES_UPSERT = MultiRowUpsert(
    schema.RESOURCE_TYPES,
    "external_id, data, sync_id, discovered_at",
    ("?", "?", "?1", "?2"),
    "on conflict (external_id, sync_id) do update set data = excluded.data",
)
_RESOURCES_UPSERT = MultiRowUpsert(
    schema.RESOURCES,
    "resource_type_id, external_id, parent_resource_type_id, parent_resource_id, data, sync_id, "
    "discovered_at",
    ("?", "?", "?", "?", "?", "?1", "?2"),
    "on conflict (external_id, sync_id) do update set resource_type_id = excluded.resource_type_id, "
    "parent_resource_type_id = excluded.parent_resource_type_id, "
    "parent_resource_id = excluded.parent_resource_id, data = excluded.data",
)
_ENTITLEMENTS_UPSERT = MultiRowUpsert(
    schema.ENTITLEMENTS,
    "resource_type_id, resource_id, external_id, data, sync_id, discovered_at",
    ("?", "?", "?", "?", "?1", "?2"),
    "on conflict (external_id, sync_id) do update set resource_type_id = excluded.resource_type_id, "
    "resource_id = excluded.resource_id, data = excluded.data",
)

_GRANT_COLUMNS = (
    "resource_type_id, resource_id, entitlement_id, principal_resource_type_id, principal_resource_id, "
    "external_id, data, expansion, needs_expansion, sync_id, discovered_at"
)
_GRANT_DENORM_UPDATE = (
    "resource_type_id = excluded.resource_type_id, resource_id = excluded.resource_id, "
    "entitlement_id = excluded.entitlement_id, "
    "principal_resource_type_id = excluded.principal_resource_type_id, "
    "principal_resource_id = excluded.principal_resource_id, data = excluded.data"
)
# A grant written again by the connector: last write wins, and needs_expansion follows the Go rule
# (0 without an expansion, 1 if the expansion appeared or changed, otherwise unchanged).
_GRANT_CONNECTOR_CONFLICT = (
    "on conflict (external_id, sync_id) do update set " + _GRANT_DENORM_UPDATE + ", "
    "needs_expansion = case when excluded.expansion is null then 0 "
    f"when {schema.GRANTS}.expansion is null or {schema.GRANTS}.expansion != excluded.expansion then 1 "
    f"else {schema.GRANTS}.needs_expansion end, "
    "expansion = excluded.expansion"
)
# Writes made by grant expansion leave `expansion` and `needs_expansion` alone ("preserve expansion").
_GRANT_PRESERVE_CONFLICT = "on conflict (external_id, sync_id) do update set " + _GRANT_DENORM_UPDATE
_PLAIN_GRANT = ("?", "?", "?", "?", "?", "?", "?", "null", "0", "?1", "?2")
_EXPANDABLE_GRANT = ("?", "?", "?", "?", "?", "?", "?", "?", "1", "?1", "?2")
# A fresh database has no grant indexes while the connector's grants stream in (see C1zWriter): plain
# appends, several times cheaper than upserts into a unique index that grows to millions of keys.
_GRANTS_INSERT = {
    False: MultiRowUpsert(schema.GRANTS, _GRANT_COLUMNS, _PLAIN_GRANT, ""),
    True: MultiRowUpsert(schema.GRANTS, _GRANT_COLUMNS, _EXPANDABLE_GRANT, ""),
}
_GRANTS_UPSERT = {
    (False, False): MultiRowUpsert(schema.GRANTS, _GRANT_COLUMNS, _PLAIN_GRANT, _GRANT_CONNECTOR_CONFLICT),
    (True, False): MultiRowUpsert(
        schema.GRANTS, _GRANT_COLUMNS, _EXPANDABLE_GRANT, _GRANT_CONNECTOR_CONFLICT
    ),
    (False, True): MultiRowUpsert(schema.GRANTS, _GRANT_COLUMNS, _PLAIN_GRANT, _GRANT_PRESERVE_CONFLICT),
    (True, True): MultiRowUpsert(schema.GRANTS, _GRANT_COLUMNS, _EXPANDABLE_GRANT, _GRANT_PRESERVE_CONFLICT),
}


def open_database(path: Path, page_size: int = 4096) -> sqlite3.Connection:
    """Connection tuned for a private build database (no journal, no fsync, exclusive lock).

    `page_size` applies to a new database only (an existing file keeps its own).
    """
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, cached_statements=64)
    conn.execute(f"pragma page_size = {page_size}")
    conn.execute("pragma journal_mode = off")
    conn.execute("pragma synchronous = off")
    conn.execute("pragma locking_mode = exclusive")
    conn.execute(f"pragma cache_size = -{CACHE_KIB}")
    conn.execute("pragma temp_store = file")
    return conn


class DiskFullError(C1zError):
    """The file system holding the sync's files is full. The sync fails (retryable: the next one works
    once there is room) and leaves nothing behind."""


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left" from the OS or from SQLite (SQLITE_FULL, which SQLite reports for ENOSPC)."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(exc)
    return False


def disk_full_error(directory: str | os.PathLike[str]) -> DiskFullError:
    return DiskFullError(
        f"no space left on the device holding {directory} while writing the c1z: free space there, or give "
        "the sync's temp dir (--c1z-temp-dir / BATON_C1Z_TEMP_DIR) a larger volume"
    )


class C1zWriter:
    """Writes one c1z file atomically. See the module docstring for the lifecycle."""

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        temp_dir: str | os.PathLike[str] | None = None,
        keep_existing: bool = True,
        keep_sync_count: int = 2,
        cancel: threading.Event | None = None,
        bulk_load_after: int = BULK_LOAD_AFTER,
    ) -> None:
        self.target = Path(target)
        self.tmp_target = self.target.with_name(self.target.name + ".tmp")
        self.keep_sync_count = max(1, keep_sync_count)
        self.cancel = cancel or threading.Event()
        self.sync_id = ""
        self.sync_type = ""
        self.bytes_written = 0
        self._closed = False
        self._deferred_indexes = False
        self._bulk_candidate = False
        self._fresh = False
        self._late_indexes: frozenset[str] = frozenset()
        parent = Path(temp_dir) if temp_dir is not None else self.target.parent
        if not parent.is_dir():
            what = "temp dir" if temp_dir is not None else "output directory"
            raise C1zError(f"{what} {parent} does not exist")
        try:
            self.work_dir = Path(tempfile.mkdtemp(prefix="c1z", dir=parent))
        except OSError as exc:
            raise C1zError(f"cannot create a temp dir in {parent}: {exc.strerror or exc}") from None
        self.db_path = self.work_dir / "db"
        try:
            loaded = False
            if keep_existing and self.target.exists():
                loaded = container.decompress_file(self.target, self.db_path, cancel=self.cancel)
            fresh = not loaded
            self.conn = open_database(self.db_path, NEW_PAGE_SIZE if fresh else 4096)
            self._max_variables = self.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            # A fresh database starts with every index and upserts. Past `bulk_load_after` grants it drops
            # the grant indexes and appends without a conflict check: building them once at the end is
            # much faster than maintaining them row by row, but for a smaller sync that build would only
            # lengthen the serial end of the sync (the store is mostly idle while grants are listed).
            # `ensure_indexes` then resolves repeated grant ids (last write wins, as an upsert would).
            self._bulk_candidate = fresh
            self._fresh = fresh
            self._bulk_load_after = bulk_load_after
            self._grants_written = 0
            schema.create_schema(self.conn)
        except C1zError as exc:
            self._remove_work()
            if keep_existing and self.target.exists():
                raise C1zError(f"existing file {self.target} is not usable: {exc}") from None
            raise
        except sqlite3.DatabaseError as exc:
            self._remove_work()
            if is_disk_full(exc):
                raise disk_full_error(parent) from None
            raise C1zError(f"existing file {self.target} holds an unusable database: {exc}") from None
        except BaseException as exc:
            self._remove_work()
            if is_disk_full(exc):
                raise disk_full_error(parent) from None
            raise

    # --- sync runs ----------------------------------------------------------------------------------

    def latest_finished_sync(self, sync_type: str | None = None) -> str:
        query = f"select sync_id from {schema.SYNC_RUNS} where ended_at is not null"
        args: tuple[str, ...] = ()
        if sync_type is not None:
            query += " and sync_type = ?"
            args = (sync_type,)
        row = self.conn.execute(query + " order by ended_at desc, id desc limit 1", args).fetchone()
        return str(row[0]) if row else ""

    def start_sync(
        self, sync_type: str = "full", parent_sync_id: str = "", sync_id: str | None = None
    ) -> str:
        if sync_type not in SYNC_TYPES:
            raise ValueError(f"unknown sync type {sync_type!r}")
        if sync_type in ("full", "resources_only") and parent_sync_id:
            raise ValueError(f"a {sync_type} sync has no parent sync")
        self.sync_id = sync_id or ksuid.new_ksuid()
        self.sync_type = sync_type
        self.conn.execute(
            f"insert into {schema.SYNC_RUNS} (sync_id, started_at, sync_token, sync_type, parent_sync_id, "
            "linked_sync_id, supports_diff) values (?, ?, '', ?, ?, '', 1)",
            (self.sync_id, format_timestamp(), sync_type, parent_sync_id),
        )
        return self.sync_id

    def end_sync(self) -> None:
        self.conn.execute(
            f"update {schema.SYNC_RUNS} set ended_at = ? where sync_id = ? and ended_at is null",
            (format_timestamp(), self.sync_id),
        )

    def timestamp(self) -> str:
        return format_timestamp()

    # --- writes -------------------------------------------------------------------------------------

    def _upsert(self, stmt: MultiRowUpsert, batch: Sequence[tuple[object, ...]]) -> None:
        """Upsert `batch`, a few thousand rows per statement (each statement is atomic)."""
        if not self.sync_id:
            raise C1zError("no sync started")
        per = stmt.rows_per_statement(self._max_variables)
        shared = (self.sync_id, format_timestamp())
        execute = self.conn.execute
        i, total = 0, len(batch)
        while i < total:
            # Full statements, then the remainder in power-of-two pieces: only ~13 distinct statements
            # are ever prepared, so the statement cache (and its memory) stays small.
            left = total - i
            n = per if left >= per else 1 << (left.bit_length() - 1)
            execute(stmt.sql(n), shared + tuple(chain.from_iterable(batch[i : i + n])))
            i += n

    def _write(self, stmt: MultiRowUpsert, batch: Sequence[tuple[object, ...]]) -> None:
        if batch:
            self._upsert(stmt, batch)

    def write_resource_type_rows(self, batch: Sequence[rows.ResourceTypeRow]) -> None:
        self._write(_RESOURCE_TYPES_UPSERT, batch)

    def write_resource_rows(self, batch: Sequence[rows.ResourceRow]) -> None:
        self._write(_RESOURCES_UPSERT, batch)

    def write_entitlement_rows(self, batch: Sequence[rows.EntitlementRow]) -> None:
        self._write(_ENTITLEMENTS_UPSERT, batch)

    def write_grant_rows(
        self,
        plain: Sequence[rows.PlainGrantRow],
        expandable: Sequence[rows.ExpandableGrantRow] = (),
        *,
        preserve_expansion: bool = False,
        expandable_after: Sequence[int] | None = None,
    ) -> None:
        """Upsert grant rows (rows without, then rows with, a GrantExpandable). `expandable_after`: how
        many plain rows were listed before each expandable one; when a grant listed without an expansion
        comes after the same grant listed with one, the batch is written in listing order so that the last
        write still wins."""
        if expandable_after is not None and _relisted_plain(plain, expandable, expandable_after):
            start = 0
            for row, after in zip(expandable, expandable_after, strict=True):
                if after > start:
                    self.write_grant_rows(plain[start:after], preserve_expansion=preserve_expansion)
                    start = after
                self.write_grant_rows((), [row], preserve_expansion=preserve_expansion)
            self.write_grant_rows(plain[start:], preserve_expansion=preserve_expansion)
            return
        if self._bulk_candidate and not preserve_expansion:
            self._grants_written += len(plain) + len(expandable)
            if self._grants_written > self._bulk_load_after:
                self._start_bulk_load()
        if self._deferred_indexes:
            if preserve_expansion:
                self.ensure_indexes(final=False)
            else:
                if plain:
                    self._upsert(_GRANTS_INSERT[False], plain)
                if expandable:
                    self._upsert(_GRANTS_INSERT[True], expandable)
                return
        if plain:
            self._upsert(_GRANTS_UPSERT[(False, preserve_expansion)], plain)
        if expandable:
            self._upsert(_GRANTS_UPSERT[(True, preserve_expansion)], expandable)

    def _start_bulk_load(self) -> None:
        self._bulk_candidate = False
        for index in schema.deferrable_grant_indexes():
            self.conn.execute(f"drop index if exists {index.name}")
        self._deferred_indexes = True

    def write_grant_batch(self, batch: rows.GrantRows) -> None:
        self.write_grant_rows(batch.plain, batch.expandable, expandable_after=batch.expandable_after)

    def put_resource_types(self, items: Iterable[resource_pb2.ResourceType]) -> None:
        self.write_resource_type_rows([rows.resource_type_row(i) for i in items])

    def put_resources(self, items: Iterable[resource_pb2.Resource]) -> None:
        self.write_resource_rows([rows.resource_row(i) for i in items])

    def put_entitlements(self, items: Iterable[entitlement_pb2.Entitlement]) -> None:
        self.write_entitlement_rows([rows.entitlement_row(i) for i in items])

    def put_grants(self, items: Iterable[grant_pb2.Grant], *, preserve_expansion: bool = False) -> list[str]:
        """Upsert grants; GrantExpandable is moved from each grant (a copy) into `expansion`.

        Returns the reasons grants were not stored (missing id, entitlement or principal ids).
        """
        batch = rows.GrantRows()
        copies = []
        for g in items:
            copy = grant_pb2.Grant()
            copy.CopyFrom(g)
            copies.append(copy)
        batch.add_all(copies)
        self.write_grant_rows(
            batch.plain,
            batch.expandable,
            preserve_expansion=preserve_expansion,
            expandable_after=batch.expandable_after,
        )
        return [f"grant {g.id or '(no id)'} {why}" for g, why in batch.problems]

    # --- reads used while syncing -------------------------------------------------------------------

    def get_resource_data(self, resource_type: str, resource: str) -> bytes | None:
        row = self.conn.execute(
            f"select data from {schema.RESOURCES} where external_id = ? and resource_type_id = ? "
            "and sync_id = ?",
            (rows.resource_external_id(resource_type, resource), resource_type, self.sync_id),
        ).fetchone()
        return bytes(row[0]) if row else None

    def resource_exists(self, resource_type: str, resource: str) -> bool:
        row = self.conn.execute(
            f"select 1 from {schema.RESOURCES} where external_id = ? and sync_id = ?",
            (rows.resource_external_id(resource_type, resource), self.sync_id),
        ).fetchone()
        return row is not None

    def get_entitlement_data(self, entitlement_id: str) -> bytes | None:
        row = self.conn.execute(
            f"select data from {schema.ENTITLEMENTS} where external_id = ? and sync_id = ?",
            (entitlement_id, self.sync_id),
        ).fetchone()
        return bytes(row[0]) if row else None

    def resource_page(
        self,
        after_id: int,
        limit: int,
        resource_type: str | None = None,
        exclude_types: Sequence[str] = (),
    ) -> list[tuple[int, bytes]]:
        """Resources of the current sync with rowid > after_id, in rowid order: of `resource_type` only, or
        of every type but `exclude_types`."""
        where = f"select id, data from {schema.RESOURCES} where sync_id = ? and id > ?"
        args: list[str | int] = [self.sync_id, after_id]
        if resource_type is not None:
            where += " and resource_type_id = ?"
            args.append(resource_type)
        if exclude_types:
            where += f" and resource_type_id not in ({', '.join('?' * len(exclude_types))})"
            args.extend(exclude_types)
        cur = self.conn.execute(where + " order by id limit ?", [*args, limit])
        return [(int(i), bytes(d)) for i, d in cur]

    def count(self, table: str) -> int:
        row = self.conn.execute(f"select count(*) from {table} where sync_id = ?", (self.sync_id,)).fetchone()
        return int(row[0])

    def resource_counts(self) -> dict[str, int]:
        cur = self.conn.execute(
            f"select resource_type_id, count(*) from {schema.RESOURCES} where sync_id = ? "
            "group by resource_type_id order by resource_type_id",
            (self.sync_id,),
        )
        return {str(t): int(n) for t, n in cur}

    def defer_lookup_indexes(self) -> None:
        """Drop the grant indexes a sync never reads (LOOKUP_ONLY_GRANT_INDEXES) until the final
        `ensure_indexes`; only in a new file, whose indexes cover this sync's rows alone."""
        if not self._fresh or self._late_indexes:
            return
        for name in sorted(LOOKUP_ONLY_GRANT_INDEXES):
            self.conn.execute(f"drop index if exists {name}")
        self._late_indexes = LOOKUP_ONLY_GRANT_INDEXES

    def ensure_indexes(self, *, final: bool = True) -> None:
        """Create every index of the schema (deferred ones included; with `final` false, not those
        `defer_lookup_indexes` put off).

        After a load without grant indexes, the unique `(external_id, sync_id)` index comes first; if a
        grant id was written more than once, only its last row is kept (what the upserts of an indexed
        load would have left) and the index is built again.
        """
        conn = self.conn
        # SQLite's sorter may use helper threads to build indexes (here the sync's only work).
        conn.execute(f"pragma threads = {min(4, os.cpu_count() or 1)}")
        try:
            if self._deferred_indexes:
                unique = next(i for i in schema.deferrable_grant_indexes() if i.unique)
                try:
                    conn.execute(unique.ddl())
                except sqlite3.IntegrityError:
                    conn.execute(
                        f"delete from {schema.GRANTS} where id not in "
                        f"(select max(id) from {schema.GRANTS} group by external_id, sync_id)"
                    )
                    conn.execute(unique.ddl())
            if final:
                self._late_indexes = frozenset()
            for index in schema.all_indexes():
                if index.name not in self._late_indexes:
                    conn.execute(index.ddl())
        finally:
            conn.execute("pragma threads = 0")
        self._deferred_indexes = False
        self._bulk_candidate = False  # the indexes are final for this sync

    # --- retention ----------------------------------------------------------------------------------

    def cleanup_old_syncs(self) -> int:
        """Drop finished syncs the Go store would drop (keep the newest `keep_sync_count` full syncs,
        and partial/resources-only syncs that ended after the oldest kept full sync started)."""
        full = self.conn.execute(
            f"select sync_id, started_at from {schema.SYNC_RUNS} where ended_at is not null "
            "and sync_type = 'full' order by ended_at desc, id desc"
        ).fetchall()
        doomed = [str(r[0]) for r in full[self.keep_sync_count :]]
        kept = full[: self.keep_sync_count]
        if kept:
            oldest_start = min(str(r[1]) for r in kept)
            doomed += [
                str(r[0])
                for r in self.conn.execute(
                    f"select sync_id from {schema.SYNC_RUNS} where ended_at is not null "
                    "and sync_type in ('partial', 'resources_only') and ended_at < ?",
                    (oldest_start,),
                )
            ]
        doomed = [s for s in doomed if s != self.sync_id]
        if not doomed:
            return 0
        self.conn.execute("begin")
        for sync_id in doomed:
            for table in schema.TABLES:
                self.conn.execute(f"delete from {table.name} where sync_id = ?", (sync_id,))
        self.conn.execute("commit")
        self.conn.execute("vacuum")
        return len(doomed)

    # --- finishing ----------------------------------------------------------------------------------

    def finish_database(self) -> None:
        """Make the database a clean, self-contained file: all indexes, no journal, closed."""
        if self._closed:
            return
        if self._deferred_indexes or self._late_indexes:
            self.ensure_indexes()
        conn = self.conn
        conn.execute("pragma journal_mode = delete")
        conn.close()
        self._closed = True
        for suffix in ("-wal", "-journal", "-shm"):
            leftover = Path(str(self.db_path) + suffix)
            if leftover.exists() and leftover.stat().st_size > 0:
                raise C1zError(f"database not fully checkpointed ({leftover.name} is not empty)")

    def commit(self, *, threads: int | None = None) -> int:
        """Finish the database and atomically replace the target with the c1z. Returns its size.

        `threads`: zstd worker threads (default: one per CPU, up to 4, for a database of MT_COMPRESS_FROM
        bytes or more; 0 compresses on this thread). Compression is the last step of a sync, with nothing
        else left to run; the workers' buffers (~40 MB) only pay off on a large database.
        """
        try:
            self.finish_database()
            if threads is None:
                cpus = min(4, os.cpu_count() or 1)
                large = self.db_path.stat().st_size >= MT_COMPRESS_FROM
                threads = cpus if cpus > 1 and large else 0
            try:
                with open(self.tmp_target, "wb") as out:
                    size = container.compress_file(self.db_path, out, threads=threads, cancel=self.cancel)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(self.tmp_target, self.target)
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full_error(self.target.parent) from None
                raise C1zError(f"cannot write {self.target}: {exc.strerror or exc}") from None
            _fsync_dir(self.target.parent)
            self.bytes_written = size
            return size
        except BaseException as exc:
            self.abort()
            if is_disk_full(exc):  # building the last indexes, or the journal of the final checkpoint
                raise disk_full_error(self.work_dir.parent) from None
            raise
        finally:
            self._remove_work()

    def abort(self) -> None:
        """Discard everything: the temp database and any partial `<target>.tmp`. Safe to call twice."""
        if not self._closed:
            with contextlib.suppress(Exception):
                self.conn.close()
            self._closed = True
        with contextlib.suppress(FileNotFoundError):
            self.tmp_target.unlink()
        self._remove_work()

    def _remove_work(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> C1zWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _relisted_plain(
    plain: Sequence[rows.PlainGrantRow],
    expandable: Sequence[rows.ExpandableGrantRow],
    expandable_after: Sequence[int],
) -> bool:
    """Whether a plain row repeats the id of an expandable row listed before it (rare: a connector
    listing one grant twice, differently)."""
    if not plain or not expandable:
        return False
    first: dict[str, int] = {}
    for row, after in zip(expandable, expandable_after, strict=True):
        first.setdefault(row[5], after)
    if first.keys().isdisjoint({row[5] for row in plain}):  # the usual case, checked at C speed
        return False
    return any(first.get(row[5], len(plain)) <= i for i, row in enumerate(plain))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
