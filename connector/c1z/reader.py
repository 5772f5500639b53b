"""Reading a v1 c1z: ours, or one written by the Go SDK (old or new schema).

The file is decompressed into a private temp copy, which then gets the same create-if-missing step and
migrations the Go reader runs (so a 5-column `v1_sync_runs`, a grants table without `expansion`, or
GrantExpandable left inside grant blobs all read the same way). The input file is never modified.

Which sync is shown when none is asked for follows the Go reader: the latest finished `full` sync; else
the latest unfinished sync started within 7 days; else no sync filter at all. Listings stream from a
cursor, so reading a large file does not load it into memory.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from google.protobuf.message import Message

from connector.c1z import container, schema
from connector.c1z.container import C1zError
from connector.c1z.timefmt import format_timestamp
from connector.pb.c1.connector.v2 import entitlement_pb2, grant_pb2, resource_pb2

FETCH = 1000


@dataclass(frozen=True)
class SyncRun:
    id: int
    sync_id: str
    started_at: str
    ended_at: str | None
    sync_token: str
    sync_type: str
    parent_sync_id: str
    linked_sync_id: str
    supports_diff: bool

    @property
    def finished(self) -> bool:
        return self.ended_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.sync_id,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "syncToken": self.sync_token,
            "syncType": self.sync_type,
            "parentSyncId": self.parent_sync_id,
        }


@dataclass(frozen=True)
class GrantRecord:
    """A grant with the columns that are not part of its blob."""

    row_id: int
    grant: grant_pb2.Grant
    expansion: bytes | None
    needs_expansion: bool
    sync_id: str
    discovered_at: str


class C1zReader:
    """Read-only view of a c1z file. Use as a context manager (or call `close()`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync_id: str | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise C1zError(f"no such file: {self.path}")
        self._work = Path(tempfile.mkdtemp(prefix="c1z", dir=temp_dir))
        self._db_path = self._work / "db"
        self.conn: sqlite3.Connection | None = None
        try:
            if container.decompress_file(self.path, self._db_path):
                with open(self._db_path, "rb") as f:
                    if f.read(16) != b"SQLite format 3\x00":
                        raise C1zError("corrupt c1z: the payload is not a SQLite database")
            conn = sqlite3.connect(str(self._db_path), isolation_level=None)
            self.conn = conn
            conn.execute("pragma journal_mode = off")
            conn.execute("pragma synchronous = off")
            conn.execute("begin")
            schema.create_schema(conn)
            conn.execute("commit")
        except C1zError:
            self.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.close()
            raise C1zError(f"unreadable c1z database: {exc}") from None
        except BaseException:
            self.close()
            raise
        self.view_sync_id = sync_id if sync_id is not None else self._default_view()
        if sync_id is not None and self.get_sync(sync_id) is None:
            self.close()
            raise C1zError(f"no sync with id {sync_id!r} in {self.path}")

    # --- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> C1zReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def _c(self) -> sqlite3.Connection:
        if self.conn is None:
            raise C1zError("reader is closed")
        return self.conn

    # --- syncs --------------------------------------------------------------------------------------

    def syncs(self) -> list[SyncRun]:
        cur = self._c.execute(
            "select id, sync_id, started_at, ended_at, sync_token, sync_type, parent_sync_id, "
            f"linked_sync_id, supports_diff from {schema.SYNC_RUNS} order by id"
        )
        return [_sync_run(r) for r in cur]

    def get_sync(self, sync_id: str) -> SyncRun | None:
        row = self._c.execute(
            "select id, sync_id, started_at, ended_at, sync_token, sync_type, parent_sync_id, "
            f"linked_sync_id, supports_diff from {schema.SYNC_RUNS} where sync_id = ?",
            (sync_id,),
        ).fetchone()
        return _sync_run(row) if row else None

    def latest_finished_sync(self, sync_type: str | None = "full") -> SyncRun | None:
        query = (
            "select id, sync_id, started_at, ended_at, sync_token, sync_type, parent_sync_id, "
            f"linked_sync_id, supports_diff from {schema.SYNC_RUNS} where ended_at is not null"
        )
        args: tuple[str, ...] = ()
        if sync_type is not None:
            query += " and sync_type = ?"
            args = (sync_type,)
        row = self._c.execute(query + " order by ended_at desc, id desc limit 1", args).fetchone()
        return _sync_run(row) if row else None

    def _default_view(self) -> str | None:
        latest = self.latest_finished_sync("full")
        if latest is not None:
            return latest.sync_id
        cutoff = format_timestamp(dt.datetime.now(dt.UTC) - dt.timedelta(days=7))
        row = self._c.execute(
            f"select sync_id from {schema.SYNC_RUNS} where ended_at is null and started_at >= ? "
            "order by started_at desc, id desc limit 1",
            (cutoff,),
        ).fetchone()
        return str(row[0]) if row else None

    def _sync_filter(self, sync_id: str | None) -> tuple[str, list[Any]]:
        chosen = sync_id if sync_id is not None else self.view_sync_id
        if chosen is None:
            return "", []
        return " and sync_id = ?", [chosen]

    # --- listings -----------------------------------------------------------------------------------

    def _iter_blobs(self, query: str, args: list[Any]) -> Iterator[bytes]:
        cur = self._c.execute(query, args)
        while True:
            batch = cur.fetchmany(FETCH)
            if not batch:
                return
            for (data,) in batch:
                yield bytes(data)

    def _latest(
        self, kind: type[M], table: str, match: str, values: list[Any], sync_id: str | None
    ) -> M | None:
        """The newest row of `table` matching `match` in the viewed sync (last write wins, as in Go)."""
        where, args = self._sync_filter(sync_id)
        row = self._c.execute(
            f"select data from {table} where {match}{where} order by id desc limit 1", [*values, *args]
        ).fetchone()
        return _parse(kind, bytes(row[0])) if row else None

    def resource_types(self, *, sync_id: str | None = None) -> Iterator[resource_pb2.ResourceType]:
        where, args = self._sync_filter(sync_id)
        for data in self._iter_blobs(
            f"select data from {schema.RESOURCE_TYPES} where 1 = 1{where} order by id", args
        ):
            yield _parse(resource_pb2.ResourceType, data)

    def get_resource_type(
        self, type_id: str, *, sync_id: str | None = None
    ) -> resource_pb2.ResourceType | None:
        return self._latest(
            resource_pb2.ResourceType, schema.RESOURCE_TYPES, "external_id = ?", [type_id], sync_id
        )

    def resources(
        self,
        *,
        resource_type: str | None = None,
        parent: resource_pb2.ResourceId | None = None,
        sync_id: str | None = None,
    ) -> Iterator[resource_pb2.Resource]:
        where, args = self._sync_filter(sync_id)
        if resource_type is not None:
            where += " and resource_type_id = ?"
            args.append(resource_type)
        if parent is not None:
            where += " and parent_resource_type_id = ? and parent_resource_id = ?"
            args += [parent.resource_type, parent.resource]
        for data in self._iter_blobs(
            f"select data from {schema.RESOURCES} where 1 = 1{where} order by id", args
        ):
            yield _parse(resource_pb2.Resource, data)

    def get_resource(
        self, resource_type: str, resource: str, *, sync_id: str | None = None
    ) -> resource_pb2.Resource | None:
        return self._latest(
            resource_pb2.Resource,
            schema.RESOURCES,
            "external_id = ? and resource_type_id = ?",
            [f"{resource_type}:{resource}", resource_type],
            sync_id,
        )

    def entitlements(
        self,
        *,
        resource_type: str | None = None,
        resource: resource_pb2.ResourceId | None = None,
        sync_id: str | None = None,
    ) -> Iterator[entitlement_pb2.Entitlement]:
        where, args = self._sync_filter(sync_id)
        if resource is not None:
            where += " and resource_type_id = ? and resource_id = ?"
            args += [resource.resource_type, resource.resource]
        elif resource_type is not None:
            where += " and resource_type_id = ?"
            args.append(resource_type)
        for data in self._iter_blobs(
            f"select data from {schema.ENTITLEMENTS} where 1 = 1{where} order by id", args
        ):
            yield _parse(entitlement_pb2.Entitlement, data)

    def get_entitlement(
        self, entitlement_id: str, *, sync_id: str | None = None
    ) -> entitlement_pb2.Entitlement | None:
        return self._latest(
            entitlement_pb2.Entitlement, schema.ENTITLEMENTS, "external_id = ?", [entitlement_id], sync_id
        )

    def grant_records(
        self,
        *,
        resource_type: str | None = None,
        resource: resource_pb2.ResourceId | None = None,
        entitlement_id: str | None = None,
        principal: resource_pb2.ResourceId | None = None,
        principal_types: tuple[str, ...] = (),
        sync_id: str | None = None,
    ) -> Iterator[GrantRecord]:
        """Grants with their storage columns (expansion, needs_expansion), in insertion order."""
        where, args = self._sync_filter(sync_id)
        if resource is not None:
            where += " and resource_type_id = ? and resource_id = ?"
            args += [resource.resource_type, resource.resource]
        elif resource_type is not None:
            where += " and resource_type_id = ?"
            args.append(resource_type)
        if entitlement_id is not None:
            where += " and entitlement_id = ?"
            args.append(entitlement_id)
        if principal is not None:
            where += " and principal_resource_type_id = ? and principal_resource_id = ?"
            args += [principal.resource_type, principal.resource]
        if principal_types:
            where += f" and principal_resource_type_id in ({', '.join('?' * len(principal_types))})"
            args += list(principal_types)
        cur = self._c.execute(
            f"select id, data, expansion, needs_expansion, sync_id, discovered_at from {schema.GRANTS} "
            f"where 1 = 1{where} order by id",
            args,
        )
        while True:
            batch = cur.fetchmany(FETCH)
            if not batch:
                return
            for row_id, data, expansion, needs, sid, discovered in batch:
                yield GrantRecord(
                    int(row_id),
                    _parse(grant_pb2.Grant, bytes(data)),
                    bytes(expansion) if expansion is not None else None,
                    bool(needs),
                    str(sid),
                    str(discovered),
                )

    def grants(
        self,
        *,
        resource_type: str | None = None,
        resource: resource_pb2.ResourceId | None = None,
        entitlement_id: str | None = None,
        principal: resource_pb2.ResourceId | None = None,
        principal_types: tuple[str, ...] = (),
        sync_id: str | None = None,
    ) -> Iterator[grant_pb2.Grant]:
        for rec in self.grant_records(
            resource_type=resource_type,
            resource=resource,
            entitlement_id=entitlement_id,
            principal=principal,
            principal_types=principal_types,
            sync_id=sync_id,
        ):
            yield rec.grant

    # --- stats --------------------------------------------------------------------------------------

    def stats(self, *, sync_id: str | None = None) -> dict[str, int]:
        """Counts for one sync, as `baton stats` prints them.

        Default: the latest finished sync of any type (like the Go reader's Stats). Resource counts are
        keyed by resource type id; `entitlements` and `grants` are omitted for resources-only syncs.
        """
        if sync_id is None:
            run = self.latest_finished_sync(None)
            if run is None:
                raise C1zError("no finished sync in this file")
        else:
            run = self.get_sync(sync_id)
            if run is None:
                raise C1zError(f"no sync with id {sync_id!r}")
        c = self._c
        out: dict[str, int] = {}
        out["resource_types"] = int(
            c.execute(
                f"select count(*) from {schema.RESOURCE_TYPES} where sync_id = ?", (run.sync_id,)
            ).fetchone()[0]
        )
        for type_id, n in c.execute(
            f"select resource_type_id, count(*) from {schema.RESOURCES} where sync_id = ? "
            "group by resource_type_id order by resource_type_id",
            (run.sync_id,),
        ):
            out[str(type_id)] = int(n)
        if run.sync_type != "resources_only":
            for key, table in (("entitlements", schema.ENTITLEMENTS), ("grants", schema.GRANTS)):
                out[key] = int(
                    c.execute(f"select count(*) from {table} where sync_id = ?", (run.sync_id,)).fetchone()[0]
                )
        return out

    def stats_sync(self, sync_id: str | None = None) -> SyncRun | None:
        return self.get_sync(sync_id) if sync_id is not None else self.latest_finished_sync(None)

    def table_names(self) -> list[str]:
        return [str(r[0]) for r in self._c.execute("select name from sqlite_master where type = 'table'")]


def _sync_run(row: Any) -> SyncRun:
    return SyncRun(
        id=int(row[0]),
        sync_id=str(row[1]),
        started_at=_ts_text(row[2]),
        ended_at=_ts_text(row[3]) if row[3] is not None else None,
        sync_token=str(row[4] or ""),
        sync_type=str(row[5] or "full"),
        parent_sync_id=str(row[6] or ""),
        linked_sync_id=str(row[7] or ""),
        supports_diff=bool(row[8]),
    )


def _ts_text(value: Any) -> str:
    """Timestamps are shown as stored (Go files carry nanoseconds)."""
    return value if isinstance(value, str) else str(value)


M = TypeVar("M", bound=Message)


def _parse(kind: type[M], data: bytes) -> M:
    msg = kind()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError; the file is damaged
        raise C1zError(f"corrupt c1z: a row does not hold a valid {kind.DESCRIPTOR.name}: {exc}") from None
    return msg
