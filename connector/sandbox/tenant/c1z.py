"""Reading an uploaded c1z the way the tenant would: magic, zstd, SQLite, row counts.

Only what the tenant needs to say "this is a sync and here is what it holds"; the project's own reader
lives in `connector.c1z` and is not used here on purpose (the sandbox stands in for the outside world).
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from connector.pb.c1.connector.v2 import resource_pb2

MAGIC_V1 = b"C1ZF\x00"
MAGIC_V3 = b"C1Z3\x00"
# The Go reader's default cap on decoded size is 3 GiB; a sandbox has no business with more than this.
MAX_DECODED = 512 * 1024 * 1024


class C1zDecodeError(Exception):
    pass


@dataclass
class C1zSummary:
    format: str  # "v1" or "v3"
    resource_types: int = 0
    resources: int = 0
    entitlements: int = 0
    grants: int = 0
    syncs: list[dict[str, str]] = field(default_factory=list)
    resources_by_type: dict[str, int] = field(default_factory=dict)
    resource_names: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "resource_types": self.resource_types,
            "resources": self.resources,
            "entitlements": self.entitlements,
            "grants": self.grants,
            "resources_by_type": dict(self.resources_by_type),
            "syncs": list(self.syncs),
        }


def kind_of(head: bytes) -> str:
    if head.startswith(MAGIC_V1):
        return "c1z-v1"
    if head.startswith(MAGIC_V3):
        return "c1z-v3"
    return "other"


def summarize(path: Path) -> C1zSummary:
    """Decode a v1 c1z at `path` and count its rows. v3 (Pebble) files are recognised but not opened."""
    with path.open("rb") as fh:
        head = fh.read(5)
        if head == MAGIC_V3:
            return C1zSummary(format="v3")
        if head != MAGIC_V1:
            raise C1zDecodeError("not a c1z file (bad magic)")
        with tempfile.TemporaryDirectory(prefix="sandbox-tenant-c1z-") as tmp:
            db_path = Path(tmp) / "c1z.db"
            dctx = zstandard.ZstdDecompressor(max_window_size=1 << 27)
            written = 0
            try:
                with db_path.open("wb") as out, dctx.stream_reader(fh) as reader:
                    while chunk := reader.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_DECODED:
                            raise C1zDecodeError("decoded c1z is too large")
                        out.write(chunk)
            except zstandard.ZstdError as err:
                raise C1zDecodeError(f"zstd: {err}") from None
            return _count(db_path)


def _count(db_path: Path) -> C1zSummary:
    """Counts for the newest finished sync in the file (a c1z may also keep earlier syncs)."""
    summary = C1zSummary(format="v1")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        for table in ("v1_resource_types", "v1_resources", "v1_entitlements", "v1_grants"):
            if table not in tables:
                raise C1zDecodeError(f"c1z database has no {table} table")
        where: str = ""
        args: tuple[str, ...] = ()
        if "v1_sync_runs" in tables:
            cols = [r[1] for r in conn.execute("pragma table_info(v1_sync_runs)")]
            wanted = [c for c in ("sync_id", "sync_type", "started_at", "ended_at") if c in cols]
            if wanted:
                for row in conn.execute(f"select {', '.join(wanted)} from v1_sync_runs order by rowid"):
                    summary.syncs.append(
                        {k: "" if v is None else str(v) for k, v in zip(wanted, row, strict=True)}
                    )
            finished = [s["sync_id"] for s in summary.syncs if s.get("ended_at") and s.get("sync_id")]
            if finished:
                where, args = " where sync_id = ?", (finished[-1],)
        summary.resource_types = _one(conn, f"select count(*) from v1_resource_types{where}", args)
        summary.resources = _one(conn, f"select count(*) from v1_resources{where}", args)
        summary.entitlements = _one(conn, f"select count(*) from v1_entitlements{where}", args)
        summary.grants = _one(conn, f"select count(*) from v1_grants{where}", args)
        for type_id, n in conn.execute(
            f"select resource_type_id, count(*) from v1_resources{where} group by 1 order by 1",
            args,
        ):
            summary.resources_by_type[str(type_id)] = int(n)
        for type_id, data in conn.execute(
            f"select resource_type_id, data from v1_resources{where} order by id", args
        ):
            res = resource_pb2.Resource()
            try:
                res.ParseFromString(data)
            except Exception:  # a row we cannot parse is still counted; the name list is best effort
                continue
            summary.resource_names.setdefault(str(type_id), []).append(res.display_name or res.id.resource)
    except sqlite3.DatabaseError as err:
        raise C1zDecodeError(f"sqlite: {err}") from None
    finally:
        conn.close()
    return summary


def _one(conn: sqlite3.Connection, sql: str, args: tuple[str, ...]) -> int:
    return int(conn.execute(sql, args).fetchone()[0])
