"""The SQLite schema inside a c1z we write is exactly the v1 schema of the spec (§1.4)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from connector.c1z.writer import C1zWriter
from connector.sdk import model
from tests.test_sync_support import GROUP, USER, Org, group_res, user_res

# Spec §1.4 (baton-sdk v0.7.27): table -> [(column, declared type, not null, default, primary key)].
EXPECTED_TABLES: dict[str, list[tuple[str, str, int, str | None, int]]] = {
    "v1_resource_types": [
        ("id", "INTEGER", 0, None, 1),
        ("external_id", "TEXT", 1, None, 0),
        ("data", "BLOB", 1, None, 0),
        ("sync_id", "TEXT", 1, None, 0),
        ("discovered_at", "DATETIME", 1, None, 0),
    ],
    "v1_resources": [
        ("id", "INTEGER", 0, None, 1),
        ("resource_type_id", "TEXT", 1, None, 0),
        ("external_id", "TEXT", 1, None, 0),
        ("parent_resource_type_id", "TEXT", 0, None, 0),
        ("parent_resource_id", "TEXT", 0, None, 0),
        ("data", "BLOB", 1, None, 0),
        ("sync_id", "TEXT", 1, None, 0),
        ("discovered_at", "DATETIME", 1, None, 0),
    ],
    "v1_entitlements": [
        ("id", "INTEGER", 0, None, 1),
        ("resource_type_id", "TEXT", 1, None, 0),
        ("resource_id", "TEXT", 1, None, 0),
        ("external_id", "TEXT", 1, None, 0),
        ("data", "BLOB", 1, None, 0),
        ("sync_id", "TEXT", 1, None, 0),
        ("discovered_at", "DATETIME", 1, None, 0),
    ],
    "v1_grants": [
        ("id", "INTEGER", 0, None, 1),
        ("resource_type_id", "TEXT", 1, None, 0),
        ("resource_id", "TEXT", 1, None, 0),
        ("entitlement_id", "TEXT", 1, None, 0),
        ("principal_resource_type_id", "TEXT", 1, None, 0),
        ("principal_resource_id", "TEXT", 1, None, 0),
        ("external_id", "TEXT", 1, None, 0),
        ("expansion", "BLOB", 0, None, 0),
        ("needs_expansion", "INTEGER", 1, "0", 0),
        ("data", "BLOB", 1, None, 0),
        ("sync_id", "TEXT", 1, None, 0),
        ("discovered_at", "DATETIME", 1, None, 0),
    ],
    "v1_sync_runs": [
        ("id", "INTEGER", 0, None, 1),
        ("sync_id", "TEXT", 1, None, 0),
        ("started_at", "DATETIME", 1, None, 0),
        ("ended_at", "DATETIME", 0, None, 0),
        ("sync_token", "TEXT", 1, None, 0),
        ("sync_type", "TEXT", 1, "'full'", 0),
        ("parent_sync_id", "TEXT", 1, "''", 0),
        ("linked_sync_id", "TEXT", 1, "''", 0),
        ("supports_diff", "INTEGER", 1, "0", 0),
    ],
    "v1_assets": [
        ("id", "INTEGER", 0, None, 1),
        ("external_id", "TEXT", 1, None, 0),
        ("content_type", "TEXT", 1, None, 0),
        ("data", "BLOB", 1, None, 0),
        ("sync_id", "TEXT", 1, None, 0),
        ("discovered_at", "DATETIME", 1, None, 0),
    ],
    "v1_connector_sessions": [
        ("id", "INTEGER", 0, None, 1),
        ("sync_id", "TEXT", 1, None, 0),
        ("key", "TEXT", 1, None, 0),
        ("value", "BLOB", 1, None, 0),
    ],
}

# index name -> (table, columns, unique, partial predicate)
EXPECTED_INDEXES: dict[str, tuple[str, tuple[str, ...], bool, str]] = {
    "idx_resource_types_external_sync_v1": ("v1_resource_types", ("external_id", "sync_id"), True, ""),
    "idx_resources_resource_type_id_v1": ("v1_resources", ("resource_type_id",), False, ""),
    # the swapped names of the Go store
    "idx_resources_external_sync_v1": (
        "v1_resources",
        ("parent_resource_type_id", "parent_resource_id"),
        False,
        "",
    ),
    "idx_resources_parent_resource_id_v1": ("v1_resources", ("external_id", "sync_id"), True, ""),
    "idx_entitlements_resource_id_v1": ("v1_entitlements", ("resource_type_id", "resource_id"), False, ""),
    "idx_entitlements_external_sync_v1": ("v1_entitlements", ("external_id", "sync_id"), True, ""),
    "idx_sync_runs_sync_id_v1": ("v1_sync_runs", ("sync_id",), True, ""),
    "idx_grants_resource_type_id_resource_id_v1": (
        "v1_grants",
        ("resource_type_id", "resource_id"),
        False,
        "",
    ),
    "idx_grants_principal_id_v1": (
        "v1_grants",
        ("principal_resource_type_id", "principal_resource_id"),
        False,
        "",
    ),
    "idx_grants_entitlement_id_principal_id_v1": (
        "v1_grants",
        ("entitlement_id", "principal_resource_type_id", "principal_resource_id"),
        False,
        "",
    ),
    "idx_grants_external_sync_v1": ("v1_grants", ("external_id", "sync_id"), True, ""),
    "idx_grants_sync_expansion_v1": ("v1_grants", ("sync_id",), False, "expansion is not null"),
    "idx_grants_sync_needs_expansion_v1": ("v1_grants", ("sync_id",), False, "needs_expansion = 1"),
    "idx_assets_external_sync_v1": ("v1_assets", ("external_id", "sync_id"), True, ""),
    "idx_session_store_sync_key_v1": ("v1_connector_sessions", ("sync_id", "key"), True, ""),
}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    out = tmp_path / "sync.c1z"
    with C1zWriter(out) as w:
        w.start_sync("full")
        w.put_resource_types([USER, GROUP])
        alice = user_res("alice")
        w.put_resources([alice])
        eng = group_res("eng", Org())
        w.put_resources([eng])
        w.put_entitlements([model.assignment_entitlement(eng, "member")])
        w.put_grants([model.new_grant(eng, "member", alice.id)])
        w.end_sync()
    path = tmp_path / "inner.db"
    path.write_bytes(zstandard.ZstdDecompressor().decompress(out.read_bytes()[5:]))
    conn = sqlite3.connect(path)
    yield conn
    conn.close()


def test_tables_and_columns_are_exactly_the_v1_schema(db: sqlite3.Connection) -> None:
    tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
    assert tables == set(EXPECTED_TABLES)
    for table, expected in EXPECTED_TABLES.items():
        got = [(r[1], r[2].upper(), r[3], r[4], r[5]) for r in db.execute(f"pragma table_info({table})")]
        assert got == expected, table


def test_indexes_have_the_go_names_columns_and_predicates(db: sqlite3.Connection) -> None:
    got: dict[str, tuple[str, tuple[str, ...], bool, str]] = {}
    for name, table, sql in db.execute("select name, tbl_name, sql from sqlite_master where type = 'index'"):
        cols = tuple(r[2] for r in db.execute(f"pragma index_info({name})"))
        unique = bool(next(r[2] for r in db.execute(f"pragma index_list({table})") if r[1] == name))
        where = sql.split(" where ", 1)[1].strip() if " where " in sql.lower() else ""
        got[name] = (table, cols, unique, where.lower())
    assert got == EXPECTED_INDEXES


def test_no_strict_or_without_rowid_tables(db: sqlite3.Connection) -> None:
    for (sql,) in db.execute("select sql from sqlite_master where type = 'table'"):
        assert "strict" not in sql.lower()
        assert "without rowid" not in sql.lower()
