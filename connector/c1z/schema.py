"""The v1 SQLite schema of a c1z, exactly as the Go store (baton-sdk v0.7.27) creates it.

Names matter: the Go readers run `CREATE ... IF NOT EXISTS` with these names on every open, so a
differently named index would be created a second time, and `baton export c1z` copies rows by column
name, so extra columns break it. Two index names on `v1_resources` look swapped relative to their
columns; that is how the Go code names them and is reproduced on purpose.

Reading (and appending to) a file runs the same create-if-missing step plus the migrations the Go
reader runs: missing optional columns are added, the partial grant indexes are created, and
GrantExpandable annotations left inside grant `data` by older writers are moved into `expansion`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from connector.pb.c1.connector.v2 import annotation_grant_pb2, grant_pb2

VERSION = "1"

RESOURCE_TYPES = "v1_resource_types"
RESOURCES = "v1_resources"
ENTITLEMENTS = "v1_entitlements"
GRANTS = "v1_grants"
SYNC_RUNS = "v1_sync_runs"
ASSETS = "v1_assets"
CONNECTOR_SESSIONS = "v1_connector_sessions"

GRANT_EXPANDABLE_TYPE_URL = "type.googleapis.com/c1.connector.v2.GrantExpandable"
_GRANT_EXPANDABLE_NAME = b"c1.connector.v2.GrantExpandable"


@dataclass(frozen=True)
class IndexDef:
    name: str
    table: str
    columns: tuple[str, ...]
    unique: bool = False
    where: str = ""

    def ddl(self) -> str:
        unique = "unique " if self.unique else ""
        cols = ", ".join(self.columns)
        where = f" where {self.where}" if self.where else ""
        return f"create {unique}index if not exists {self.name} on {self.table} ({cols}){where}"


@dataclass(frozen=True)
class TableDef:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, declaration after the name)
    indexes: tuple[IndexDef, ...]

    def ddl(self) -> str:
        cols = ",\n".join(f"    {name} {decl}" for name, decl in self.columns)
        return f"create table if not exists {self.name} (\n{cols}\n)"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


TABLES: tuple[TableDef, ...] = (
    TableDef(
        RESOURCE_TYPES,
        (
            ("id", "integer primary key"),
            ("external_id", "text not null"),
            ("data", "blob not null"),
            ("sync_id", "text not null"),
            ("discovered_at", "datetime not null"),
        ),
        (IndexDef("idx_resource_types_external_sync_v1", RESOURCE_TYPES, ("external_id", "sync_id"), True),),
    ),
    TableDef(
        RESOURCES,
        (
            ("id", "integer primary key"),
            ("resource_type_id", "text not null"),
            ("external_id", "text not null"),
            ("parent_resource_type_id", "text"),
            ("parent_resource_id", "text"),
            ("data", "blob not null"),
            ("sync_id", "text not null"),
            ("discovered_at", "datetime not null"),
        ),
        (
            IndexDef("idx_resources_resource_type_id_v1", RESOURCES, ("resource_type_id",)),
            # Swapped names, as in the Go store.
            IndexDef(
                "idx_resources_external_sync_v1", RESOURCES, ("parent_resource_type_id", "parent_resource_id")
            ),
            IndexDef("idx_resources_parent_resource_id_v1", RESOURCES, ("external_id", "sync_id"), True),
        ),
    ),
    TableDef(
        ENTITLEMENTS,
        (
            ("id", "integer primary key"),
            ("resource_type_id", "text not null"),
            ("resource_id", "text not null"),
            ("external_id", "text not null"),
            ("data", "blob not null"),
            ("sync_id", "text not null"),
            ("discovered_at", "datetime not null"),
        ),
        (
            IndexDef("idx_entitlements_resource_id_v1", ENTITLEMENTS, ("resource_type_id", "resource_id")),
            IndexDef("idx_entitlements_external_sync_v1", ENTITLEMENTS, ("external_id", "sync_id"), True),
        ),
    ),
    TableDef(
        SYNC_RUNS,
        (
            ("id", "integer primary key"),
            ("sync_id", "text not null"),
            ("started_at", "datetime not null"),
            ("ended_at", "datetime"),
            ("sync_token", "text not null"),
            ("sync_type", "text not null default 'full'"),
            ("parent_sync_id", "text not null default ''"),
            ("linked_sync_id", "text not null default ''"),
            ("supports_diff", "integer not null default 0"),
        ),
        (IndexDef("idx_sync_runs_sync_id_v1", SYNC_RUNS, ("sync_id",), True),),
    ),
    TableDef(
        GRANTS,
        (
            ("id", "integer primary key"),
            ("resource_type_id", "text not null"),
            ("resource_id", "text not null"),
            ("entitlement_id", "text not null"),
            ("principal_resource_type_id", "text not null"),
            ("principal_resource_id", "text not null"),
            ("external_id", "text not null"),
            ("expansion", "blob"),
            ("needs_expansion", "integer not null default 0"),
            ("data", "blob not null"),
            ("sync_id", "text not null"),
            ("discovered_at", "datetime not null"),
        ),
        (
            IndexDef(
                "idx_grants_resource_type_id_resource_id_v1", GRANTS, ("resource_type_id", "resource_id")
            ),
            IndexDef(
                "idx_grants_principal_id_v1", GRANTS, ("principal_resource_type_id", "principal_resource_id")
            ),
            IndexDef(
                "idx_grants_entitlement_id_principal_id_v1",
                GRANTS,
                ("entitlement_id", "principal_resource_type_id", "principal_resource_id"),
            ),
            IndexDef("idx_grants_external_sync_v1", GRANTS, ("external_id", "sync_id"), True),
        ),
    ),
    TableDef(
        ASSETS,
        (
            ("id", "integer primary key"),
            ("external_id", "text not null"),
            ("content_type", "text not null"),
            ("data", "blob not null"),
            ("sync_id", "text not null"),
            ("discovered_at", "datetime not null"),
        ),
        (IndexDef("idx_assets_external_sync_v1", ASSETS, ("external_id", "sync_id"), True),),
    ),
    TableDef(
        CONNECTOR_SESSIONS,
        (
            ("id", "integer primary key"),
            ("sync_id", "text not null"),
            ("key", "text not null"),
            ("value", "blob not null"),
        ),
        (IndexDef("idx_session_store_sync_key_v1", CONNECTOR_SESSIONS, ("sync_id", "key"), True),),
    ),
)

# Created by the grants migration (after the table's own indexes), as in the Go store.
GRANT_PARTIAL_INDEXES: tuple[IndexDef, ...] = (
    IndexDef("idx_grants_sync_expansion_v1", GRANTS, ("sync_id",), where="expansion is not null"),
    IndexDef("idx_grants_sync_needs_expansion_v1", GRANTS, ("sync_id",), where="needs_expansion = 1"),
)

TABLES_BY_NAME = {t.name: t for t in TABLES}

# Columns a migration adds to a table created by an older writer (name, declaration).
_ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    SYNC_RUNS: (
        ("sync_type", "text not null default 'full'"),
        ("parent_sync_id", "text not null default ''"),
        ("linked_sync_id", "text not null default ''"),
        ("supports_diff", "integer not null default 0"),
    ),
    GRANTS: (
        ("expansion", "blob"),
        ("needs_expansion", "integer not null default 0"),
    ),
}


def all_indexes() -> tuple[IndexDef, ...]:
    out: list[IndexDef] = []
    for t in TABLES:
        out.extend(t.indexes)
    out.extend(GRANT_PARTIAL_INDEXES)
    return tuple(out)


def deferrable_grant_indexes() -> tuple[IndexDef, ...]:
    """Every grant index, the unique one first: a bulk load drops them, appends, and builds them again in
    this order (expansion's upserts conflict on the unique one)."""
    table = TABLES_BY_NAME[GRANTS]
    return tuple(sorted(table.indexes, key=lambda i: not i.unique)) + GRANT_PARTIAL_INDEXES


def create_schema(conn: sqlite3.Connection) -> None:
    """Create every table and index that is missing, in the Go order, then run the migrations."""
    for table in TABLES:
        conn.execute(table.ddl())
        _add_missing_columns(conn, table.name)
        for index in table.indexes:
            conn.execute(index.ddl())
    for index in GRANT_PARTIAL_INDEXES:
        conn.execute(index.ddl())
    backfill_grant_expansion(conn)


def create_indexes(conn: sqlite3.Connection) -> None:
    for index in all_indexes():
        conn.execute(index.ddl())


def _add_missing_columns(conn: sqlite3.Connection, table: str) -> None:
    additions = _ADDED_COLUMNS.get(table)
    if not additions:
        return
    present = {row[1] for row in conn.execute(f"pragma table_info({table})")}
    for name, decl in additions:
        if name not in present:
            conn.execute(f"alter table {table} add column {name} {decl}")


def extract_expansion(grant: grant_pb2.Grant) -> tuple[bytes | None, bool]:
    """Strip GrantExpandable annotations from `grant` (in place).

    Returns (serialized GrantExpandable or None, whether an annotation was removed). The bytes are None
    when the annotation names no non-blank entitlement id, as in the Go store.
    """
    found: annotation_grant_pb2.GrantExpandable | None = None
    removed = False
    annotations = grant.annotations
    i = 0
    while i < len(annotations):
        a = annotations[i]
        if a.type_url.endswith("/c1.connector.v2.GrantExpandable"):
            if found is None:
                found = annotation_grant_pb2.GrantExpandable()
                found.ParseFromString(a.value)
            del annotations[i]
            removed = True
            continue
        i += 1
    if found is None or not any(e.strip() for e in found.entitlement_ids):
        return None, removed
    return found.SerializeToString(deterministic=True), removed


def backfill_grant_expansion(conn: sqlite3.Connection, batch: int = 1000) -> int:
    """Move GrantExpandable out of grant `data` for syncs written without diff support.

    Files from older Go SDKs (and writers choosing the spec's option (b)) keep the annotation inside the
    blob and have `supports_diff = 0`; the Go reader fixes such rows at every open, and so do we, so that
    expansion and listings see one layout. Returns the number of rows rewritten.
    """
    last = 0
    changed = 0
    query = (
        f"select g.id, g.data from {GRANTS} g join {SYNC_RUNS} sr on g.sync_id = sr.sync_id "
        f"where g.expansion is null and sr.supports_diff = 0 and g.id > ? order by g.id limit ?"
    )
    while True:
        rows = conn.execute(query, (last, batch)).fetchall()
        if not rows:
            break
        updates: list[tuple[bytes | None, int, bytes, int]] = []
        for row_id, data in rows:
            last = row_id
            # Cheap byte test first: only blobs naming the type can carry the annotation.
            if data is None or _GRANT_EXPANDABLE_NAME not in bytes(data):
                continue
            grant = grant_pb2.Grant()
            try:
                grant.ParseFromString(bytes(data))
            except Exception as exc:  # protobuf raises DecodeError; any failure means a corrupt row
                raise sqlite3.DatabaseError(f"grant row {row_id} holds an invalid Grant: {exc}") from None
            expansion, removed = extract_expansion(grant)
            if removed:
                updates.append(
                    (expansion, 1 if expansion else 0, grant.SerializeToString(deterministic=True), row_id)
                )
        if updates:
            conn.executemany(
                f"update {GRANTS} set expansion = ?, needs_expansion = ?, data = ? where id = ?", updates
            )
            changed += len(updates)
    return changed
