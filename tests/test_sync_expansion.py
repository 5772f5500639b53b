"""Grant expansion (nested groups): chains, shallow, principal-type filters, cycles, depth limit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connector.c1z.container import decompress_file
from connector.c1z.reader import C1zReader
from connector.c1z.writer import open_database
from connector.pb.c1.connector.v2 import annotation_grant_pb2, grant_pb2
from connector.sdk import model
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncError, SyncOptions, run_sync
from connector.sync.expansion import Expander
from connector.sync.report import SyncReport
from tests.test_sync_support import Nest, Org, OrgConnector, files, grant_map


async def sync(tmp_path: Path, org: Org, **options: object) -> tuple[SyncReport, dict[str, grant_pb2.Grant]]:
    out = tmp_path / "sync.c1z"
    report = await run_sync(ConnectorRuntime(OrgConnector(org)), out, SyncOptions(**options))  # type: ignore[arg-type]
    return report, grant_map(out)


def sources(g: grant_pb2.Grant) -> dict[str, bool]:
    return {k: v.is_direct for k, v in g.sources.sources.items()}


def org_of(groups: dict[str, list[str]], nested: dict[str, list[Nest]], **kw: object) -> Org:
    return Org(groups=groups, nested=nested, projects={}, repo_admins={}, **kw)  # type: ignore[arg-type]


async def test_members_of_a_nested_group_inherit(tmp_path: Path) -> None:
    report, grants = await sync(tmp_path, Org())
    derived = grants["group:all:member:user:alice"]
    assert sources(derived) == {"group:eng:member": True}
    assert derived.entitlement.id == "group:all:member"
    assert derived.entitlement.display_name == "member"  # the full entitlement from the store
    assert derived.entitlement.resource.display_name == "ALL"
    assert derived.principal.id == model.resource_id("user", "alice")
    assert [a.type_url for a in derived.annotations] == ["type.googleapis.com/c1.connector.v2.GrantImmutable"]
    assert sources(grants["group:all:member:user:carol"]) == {"group:ops:member": True}
    # erin is a direct member of "all" and nothing else: untouched
    assert sources(grants["group:all:member:user:erin"]) == {}
    assert report.grants_expanded == 3
    with C1zReader(tmp_path / "sync.c1z") as r:
        recs = {rec.grant.id: rec for rec in r.grant_records()}
    assert recs["group:all:member:user:alice"].expansion is None
    assert not recs["group:all:member:user:alice"].needs_expansion
    # the expandable grants keep their expansion state (Go leaves needs_expansion set)
    assert recs["group:all:member:group:eng"].needs_expansion


async def test_direct_grant_that_also_inherits_gets_both_sources(tmp_path: Path) -> None:
    org = org_of({"eng": ["user:alice"], "all": ["user:alice"]}, {"all": [Nest("eng")]})
    report, grants = await sync(tmp_path, org)
    assert report.grants_expanded == 0
    assert sources(grants["group:all:member:user:alice"]) == {
        "group:all:member": True,
        "group:eng:member": True,
    }


async def test_chains_propagate_through_layers(tmp_path: Path) -> None:
    org = org_of({"a": ["user:alice"], "b": ["user:bob"], "c": []}, {"b": [Nest("a")], "c": [Nest("b")]})
    report, grants = await sync(tmp_path, org)
    assert sources(grants["group:b:member:user:alice"]) == {"group:a:member": True}
    # alice holds b only indirectly, so in c she is marked as not direct
    assert sources(grants["group:c:member:user:alice"]) == {"group:b:member": False}
    assert sources(grants["group:c:member:user:bob"]) == {"group:b:member": True}
    # the group a itself is a member of b, so it inherits c too
    assert sources(grants["group:c:member:group:a"]) == {"group:b:member": True}
    assert report.grants_expanded == 4


async def test_shallow_only_passes_direct_members(tmp_path: Path) -> None:
    org = org_of(
        {"a": ["user:alice"], "b": ["user:bob"], "c": []}, {"b": [Nest("a")], "c": [Nest("b", shallow=True)]}
    )
    _, grants = await sync(tmp_path, org)
    assert "group:c:member:user:bob" in grants
    assert "group:c:member:user:alice" not in grants


async def test_resource_type_ids_limit_who_inherits(tmp_path: Path) -> None:
    org = org_of(
        {"eng": ["user:alice", "bot:b1"], "all": []},
        {"all": [Nest("eng", resource_type_ids=("user",))]},
        bots=["b1"],
    )
    _, grants = await sync(tmp_path, org)
    assert "group:all:member:user:alice" in grants
    assert "group:all:member:bot:b1" not in grants


async def test_cycles_are_collapsed_and_still_expand_outward(tmp_path: Path) -> None:
    org = org_of(
        {"a": ["user:alice"], "b": ["user:bob"], "c": []},
        {"a": [Nest("b")], "b": [Nest("a")], "c": [Nest("a")]},
    )
    report, grants = await sync(tmp_path, org)
    # members of every group in the cycle reach c
    assert sources(grants["group:c:member:user:alice"]) == {"group:a:member": True}
    assert sources(grants["group:c:member:user:bob"]) == {"group:b:member": True}
    # inside the collapsed cycle nothing propagates (Go semantics: internal edges are dropped)
    assert "group:a:member:user:bob" not in grants
    assert "group:b:member:user:alice" not in grants
    assert report.grants_expanded >= 2


async def test_self_loop_is_harmless(tmp_path: Path) -> None:
    org = org_of({"a": ["user:alice"]}, {"a": [Nest("a")]})
    report, grants = await sync(tmp_path, org)
    assert report.grants_expanded == 0
    assert set(grants) == {"group:a:member:user:alice", "group:a:member:group:a"}


def _chain(n: int) -> Org:
    groups = {f"g{i}": [f"user:u{i}"] for i in range(n + 1)}
    nested = {f"g{i + 1}": [Nest(f"g{i}")] for i in range(n)}
    return org_of(groups, nested, users=[f"u{i}" for i in range(n + 1)])


async def test_depth_limit_allows_twenty_one_levels(tmp_path: Path) -> None:
    report, grants = await sync(tmp_path, _chain(21))
    # u0 reaches the top of the chain
    assert "group:g21:member:user:u0" in grants
    assert report.grants_expanded == sum(range(1, 22)) + sum(range(1, 21))


async def test_depth_limit_exceeded_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(SyncError) as err:
        await sync(tmp_path, _chain(22))
    assert str(err.value) == (
        "sync failed in phase grant-expansion: grant expansion exceeded the maximum depth of 20 "
        "(entitlements nested more deeply than that)"
    )
    assert files(tmp_path) == []


async def test_unknown_source_entitlement_is_skipped_with_a_warning(tmp_path: Path) -> None:
    org = org_of({"a": ["user:alice"], "b": []}, {"b": [Nest("a", entitlement_ids=("group:a:owner",))]})
    report, _ = await sync(tmp_path, org)
    assert report.grants_expanded == 0
    assert report.warnings == [
        "grant group:b:member:group:a: expandable source entitlement group:a:owner does not exist; edge "
        "skipped"
    ]


async def test_source_entitlement_of_another_principal_fails(tmp_path: Path) -> None:
    org = org_of(
        {"a": ["user:alice"], "b": [], "c": []}, {"b": [Nest("a", entitlement_ids=("group:c:member",))]}
    )
    with pytest.raises(
        SyncError, match="grant group:b:member:group:a is expandable from entitlement group:c:member"
    ):
        await sync(tmp_path, org)


async def test_expanded_grant_ids_follow_the_convention(tmp_path: Path) -> None:
    _, grants = await sync(tmp_path, Org())
    derived = 0
    for gid, g in grants.items():
        assert gid == f"{g.entitlement.id}:{g.principal.id.resource_type}:{g.principal.id.resource}"
        if any(a.Is(annotation_grant_pb2.GrantImmutable.DESCRIPTOR) for a in g.annotations):
            derived += 1
            assert g.sources.sources and g.entitlement.id not in g.sources.sources
    assert derived == 3


def _expanded_with(
    db_source: Path, work: Path, sync_id: str, *, page_size: int, per_layer: bool
) -> dict[str, grant_pb2.Grant]:
    """Run the Expander by hand on a copy of a database synced without expansion; the grants after it."""
    shutil.copyfile(db_source, work)
    conn = open_database(work)
    try:
        expander = Expander(conn, sync_id, page_size=page_size)
        assert expander.load() > 0
        while (layer := expander.next_layer()) is not None:
            if per_layer:
                expander.expand_layer(layer)
                continue
            for action in layer:
                cursor = None
                while True:
                    cursor = expander.expand_page(action, cursor)
                    if cursor is None:
                        break
        out: dict[str, grant_pb2.Grant] = {}
        for (data,) in conn.execute("select data from v1_grants where sync_id = ?", (sync_id,)):
            g = grant_pb2.Grant.FromString(bytes(data))
            # Derived grants are assembled as bytes: exactly what protobuf itself would write.
            assert g.SerializeToString(deterministic=True) == bytes(data), g.id
            out[g.id] = g
        return out
    finally:
        conn.close()


async def test_paged_and_per_layer_expansion_match_the_engine(tmp_path: Path) -> None:
    # Groups with more members than a page, a source feeding several destinations (its pages are
    # parsed once and reused), a shallow edge, a principal type filter, a member who already holds a
    # destination directly, and a two-level chain.
    members = [f"user:u{i:02d}" for i in range(11)]
    org = org_of(
        {
            "big": members,
            "small": ["user:u03", "user:x1"],
            "d1": ["user:u04"],
            "d2": [],
            "d3": ["user:u05"],
            "top": [],
        },
        {
            "d1": [Nest("big"), Nest("small")],
            "d2": [Nest("big", shallow=True)],
            "d3": [Nest("big", resource_type_ids=("user",)), Nest("small")],
            "top": [Nest("d1"), Nest("d3", shallow=True)],
        },
        users=[m.split(":", 1)[1] for m in members] + ["x1"],
    )
    _, expected = await sync(tmp_path, org)
    plain = tmp_path / "plain.c1z"
    report = await run_sync(ConnectorRuntime(OrgConnector(org)), plain, SyncOptions(skip_expand_grants=True))
    db = tmp_path / "plain.db"
    decompress_file(plain, db)
    # The chain reached the top, through d1 only: d3 passes its direct members (shallow), and u00 holds
    # d3 only through big.
    assert sources(expected["group:top:member:user:u00"]) == {"group:d1:member": False}
    assert sources(expected["group:d3:member:user:u05"]) == {
        "group:d3:member": True,
        "group:big:member": True,
    }
    assert "group:d2:member:user:u00" in expected and "group:d3:member:user:x1" in expected
    for page_size in (2, 3, 10_000):
        for per_layer in (False, True):
            got = _expanded_with(
                db, tmp_path / "work.db", report.sync_id, page_size=page_size, per_layer=per_layer
            )
            assert got.keys() == expected.keys(), (page_size, per_layer)
            for gid, grant in expected.items():
                assert sources(got[gid]) == sources(grant), (gid, page_size, per_layer)
                assert got[gid].entitlement == grant.entitlement
                assert got[gid].principal == grant.principal
                assert list(got[gid].annotations) == list(grant.annotations)
