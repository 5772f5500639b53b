"""A c1z written by the engine satisfies every bullet of spec §6 ("minimum compatible writer")."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from connector.c1z import ksuid
from connector.c1z.reader import C1zReader
from connector.c1z.writer import C1zWriter
from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    annotation_resource_tree_pb2,
    annotation_trait_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncOptions, run_sync
from tests.test_sync_support import Org, OrgConnector, user_res

TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,9})?$")
# Annotation messages that exist only at baton-sdk [HEAD]; the v0.7.27 CLI's JSON output fails on them.
HEAD_ONLY = {
    "AgentTrait",
    "LicenseProfileTrait",
    "ManagedDeviceTrait",
    "NonHumanIdentityTrait",
    "VendorTrait",
    "VendorAgreementTrait",
    "EntitlementExclusionGroup",
    "GrantReplaced",
    "ResourceDeleted",
    "TypeScopedEntitlements",
    "TypeScopedGrants",
    "EnqueuePageTokens",
    "SessionStoreUsage",
    "RateLimitWaitReport",
    "Status",
    "OptInRequired",
    "Deprecated",
    "SkipSyncAnomalyDetection",
}
TRAITS = {1: "UserTrait", 2: "GroupTrait", 3: "RoleTrait", 4: "AppTrait", 5: "SecretTrait"}


@pytest.fixture(scope="module")
def c1z(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    org = Org()
    org.groups["all"].append("user:alice")  # a direct grant that also inherits
    out = tmp_path_factory.mktemp("min") / "sync.c1z"
    asyncio.run(run_sync(ConnectorRuntime(OrgConnector(org)), out, SyncOptions()))
    return out


@pytest.fixture
def db(c1z: Path, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "inner.db"
    path.write_bytes(zstandard.ZstdDecompressor().decompress(c1z.read_bytes()[5:]))
    conn = sqlite3.connect(path)
    yield conn
    conn.close()


def _frames(payload: bytes) -> int:
    """Number of zstd frames (walks frame headers and blocks)."""
    count, pos = 0, 0
    while pos < len(payload):
        assert payload[pos : pos + 4] == b"\x28\xb5\x2f\xfd"
        fhd = payload[pos + 4]
        single = bool(fhd & 0x20)
        fcs_size = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[fhd >> 6]
        did_size = {0: 0, 1: 1, 2: 2, 3: 4}[fhd & 3]
        pos += 5 + (0 if single else 1) + did_size + fcs_size
        while True:
            header = int.from_bytes(payload[pos : pos + 3], "little")
            last, btype, size = header & 1, (header >> 1) & 3, header >> 3
            pos += 3 + (1 if btype == 1 else size)
            if last:
                break
        pos += 4 if fhd & 0x04 else 0
        count += 1
    return count


def test_container(c1z: Path) -> None:
    raw = c1z.read_bytes()
    assert raw[:5] == bytes([0x43, 0x31, 0x5A, 0x46, 0x00])
    params = zstandard.get_frame_parameters(raw[5:])
    assert params.window_size <= 128 << 20
    assert params.has_checksum and params.content_size > 0
    assert params.content_size < 3 << 30
    assert _frames(raw[5:]) == 1
    assert not (c1z.parent / (c1z.name + ".tmp")).exists()


@pytest.mark.parametrize("workers", [0, 2, None])
def test_container_is_one_frame_with_or_without_compression_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int | None
) -> None:
    """Large databases are compressed by several zstd workers: still one frame, an 8 MiB window, a checksum
    and the content size, and the same database back."""
    import connector.c1z.writer as writer_module

    monkeypatch.setattr(writer_module, "MT_COMPRESS_FROM", 0)
    out = tmp_path / "sync.c1z"
    w = C1zWriter(out)
    w.start_sync()
    w.put_resources([user_res(f"u{i}") for i in range(3000)])
    w.end_sync()
    w.finish_database()
    db_size = w.db_path.stat().st_size
    w.commit(threads=workers)
    raw = out.read_bytes()
    params = zstandard.get_frame_parameters(raw[5:])
    assert _frames(raw[5:]) == 1
    assert params.window_size <= 8 << 20 and params.has_checksum and params.content_size == db_size
    with C1zReader(out) as r:
        assert len(list(r.resources())) == 3000


def test_database_committed_without_journal(db: sqlite3.Connection) -> None:
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("pragma journal_mode").fetchone()[0] == "delete"
    for (sql,) in db.execute("select sql from sqlite_master where type = 'table'"):
        assert "strict" not in sql.lower() and "without rowid" not in sql.lower()


def test_exactly_one_finished_full_sync(db: sqlite3.Connection) -> None:
    runs = db.execute(
        "select sync_id, started_at, ended_at, typeof(started_at), typeof(ended_at), sync_token, sync_type, "
        "parent_sync_id, linked_sync_id, supports_diff from v1_sync_runs"
    ).fetchall()
    assert len(runs) == 1
    sync_id, started, ended, t1, t2, token, stype, parent, linked, diff = runs[0]
    assert ksuid.is_ksuid(sync_id) and len(sync_id) == 27
    assert (t1, t2) == ("text", "text") and TS.match(started) and TS.match(ended)
    assert (token, stype, parent, linked, diff) == ("", "full", "", "", 1)
    for table in ("v1_resource_types", "v1_resources", "v1_entitlements", "v1_grants"):
        rows = db.execute(f"select distinct sync_id, typeof(discovered_at) from {table}").fetchall()
        assert rows == [(sync_id, "text")], table
        for (ts,) in db.execute(f"select discovered_at from {table}"):
            assert TS.match(ts)


def test_ids_are_assigned_by_sqlite_and_unique_per_sync(db: sqlite3.Connection) -> None:
    for table in ("v1_resource_types", "v1_resources", "v1_entitlements", "v1_grants"):
        ids = [r[0] for r in db.execute(f"select id from {table} order by id")]
        assert ids == list(range(1, len(ids) + 1)), table
        dupes = db.execute(
            f"select external_id from {table} group by external_id, sync_id having count(*) > 1"
        ).fetchall()
        assert dupes == [], table


def _annotation_names(annotations: object) -> list[str]:
    names = []
    for a in annotations:  # type: ignore[attr-defined]
        assert a.type_url.startswith("type.googleapis.com/c1.connector.v2.")
        names.append(a.type_url.rsplit(".", 1)[-1])
    return names


def test_resource_type_and_resource_rows(db: sqlite3.Connection) -> None:
    types: dict[str, resource_pb2.ResourceType] = {}
    for ext, data in db.execute("select external_id, data from v1_resource_types"):
        rt = resource_pb2.ResourceType.FromString(data)
        assert ext == rt.id
        types[rt.id] = rt
    children: dict[tuple[str, str], set[str]] = {}
    parents: dict[tuple[str, str], set[str]] = {}
    for rtype, ext, ptype, pid, data in db.execute(
        "select resource_type_id, external_id, parent_resource_type_id, parent_resource_id, data from "
        "v1_resources"
    ):
        r = resource_pb2.Resource.FromString(data)
        assert rtype == r.id.resource_type and ext == f"{r.id.resource_type}:{r.id.resource}"
        if r.HasField("parent_resource_id"):
            assert (ptype, pid) == (r.parent_resource_id.resource_type, r.parent_resource_id.resource)
            children.setdefault((ptype, pid), set()).add(rtype)
        else:
            assert ptype is None and pid is None
        names = _annotation_names(r.annotations)
        for trait in types[rtype].traits:
            if trait in TRAITS:
                assert TRAITS[trait] in names
        for a in r.annotations:
            if a.Is(annotation_trait_pb2.UserTrait.DESCRIPTOR):
                ut = annotation_trait_pb2.UserTrait()
                a.Unpack(ut)
                assert ut.HasField("profile")
            if a.Is(annotation_resource_tree_pb2.ChildResourceType.DESCRIPTOR):
                crt = annotation_resource_tree_pb2.ChildResourceType()
                a.Unpack(crt)
                parents.setdefault((r.id.resource_type, r.id.resource), set()).add(crt.resource_type_id)
    assert children
    for parent, kinds in children.items():
        assert kinds <= parents[parent]


def test_entitlement_rows(db: sqlite3.Connection) -> None:
    for rtype, rid, ext, data in db.execute(
        "select resource_type_id, resource_id, external_id, data from v1_entitlements"
    ):
        e = entitlement_pb2.Entitlement.FromString(data)
        assert (rtype, rid) == (e.resource.id.resource_type, e.resource.id.resource)
        assert ext == e.id == f"{rtype}:{rid}:{e.slug}"
        assert e.display_name and e.slug and e.purpose and len(e.grantable_to) > 0


def test_grant_rows(db: sqlite3.Connection) -> None:
    expandable = 0
    for rtype, rid, eid, ptype, pid, ext, expansion, needs, data in db.execute(
        "select resource_type_id, resource_id, entitlement_id, principal_resource_type_id, "
        "principal_resource_id, "
        "external_id, expansion, needs_expansion, data from v1_grants"
    ):
        g = grant_pb2.Grant.FromString(data)
        assert (rtype, rid) == (g.entitlement.resource.id.resource_type, g.entitlement.resource.id.resource)
        assert eid == g.entitlement.id and (ptype, pid) == (
            g.principal.id.resource_type,
            g.principal.id.resource,
        )
        assert ext == g.id == f"{eid}:{ptype}:{pid}"
        assert g.entitlement.id and g.entitlement.resource.id.resource and g.principal.id.resource
        names = _annotation_names(g.annotations)
        assert "GrantExpandable" not in names
        assert not (set(names) & HEAD_ONLY)
        if expansion is not None:
            expandable += 1
            assert needs == 1
            annotation_grant_pb2.GrantExpandable.FromString(expansion)
    assert expandable == 2


def test_expansion_results_follow_go(db: sqlite3.Connection) -> None:
    grants = {
        ext: grant_pb2.Grant.FromString(data)
        for ext, data in db.execute("select external_id, data from v1_grants")
    }
    derived = grants["group:all:member:user:bob"]
    assert "GrantImmutable" in _annotation_names(derived.annotations)
    assert dict(derived.sources.sources)["group:eng:member"].is_direct
    both = grants["group:all:member:user:alice"]
    assert {k: v.is_direct for k, v in both.sources.sources.items()} == {
        "group:all:member": True,
        "group:eng:member": True,
    }
    assert "GrantImmutable" not in _annotation_names(both.annotations)


def test_no_annotation_types_unknown_to_the_cli(db: sqlite3.Connection) -> None:
    for table, kind in (
        ("v1_resource_types", resource_pb2.ResourceType),
        ("v1_resources", resource_pb2.Resource),
        ("v1_entitlements", entitlement_pb2.Entitlement),
    ):
        for (data,) in db.execute(f"select data from {table}"):
            msg = kind.FromString(data)
            assert not (set(_annotation_names(msg.annotations)) & HEAD_ONLY)
