"""Early grant expansion: edges whose grants are all listed expand while other listings go on, and the
result is always exactly what expansion after the last listing gives (connector/sync/early_expansion.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from connector.c1z import container, rows
from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import connector_pb2, grant_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.interface import Connector, Page, ResourceSyncer
from connector.sdk.runtime import ConnectorRuntime
from connector.sync import early_expansion
from connector.sync.early_expansion import ALL_DONE
from connector.sync.engine import SyncOptions, run_sync
from connector.sync.report import SyncReport
from connector.sync.store import LocalStore
from tests.test_sync_support import content

USER = model.resource_type("user", "User", [model.Trait.TRAIT_USER])
GROUP = model.resource_type("group", "Group", [model.Trait.TRAIT_GROUP])

# A grant as a listing emits it: (group whose member entitlement it is, principal type, principal id,
# GrantExpandable or None).
GrantSpec = tuple[str, str, str, Message | None]
# Random graphs per case (raise it for a soak run).
SEEDS = int(os.environ.get("EARLY_EXPANSION_SEEDS", "40"))


def user(uid: str) -> resource_pb2.Resource:
    return model.user_resource(uid, USER, uid, model.user_trait(login=uid))


def group(gid: str) -> resource_pb2.Resource:
    return model.group_resource(gid, GROUP, gid)


def grant(spec: GrantSpec) -> grant_pb2.Grant:
    owner, ptype, pid, expandable = spec
    return model.new_grant(
        group(owner), "member", model.resource_id(ptype, pid), annotations=[expandable] if expandable else []
    )


def member_of(gid: str) -> str:
    return f"group:{gid}:member"


@dataclass
class Graph:
    users: list[str]
    groups: list[str]
    # listing group -> the pages of grants its ListGrants returns (any group's entitlements)
    listings: dict[str, list[list[GrantSpec]]]
    # listing group -> seconds each of its pages takes
    delays: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)


class Users(ResourceSyncer):
    resource_type = USER

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    async def list(self, parent: resource_pb2.ResourceId | None, page_token: str) -> Page[Any]:
        return Page([user(u) for u in self.graph.users])

    async def entitlements(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        return Page()

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        return Page()


class Groups(ResourceSyncer):
    resource_type = GROUP

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    async def list(self, parent: resource_pb2.ResourceId | None, page_token: str) -> Page[Any]:
        return Page([group(g) for g in self.graph.groups])

    async def entitlements(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        return Page([model.assignment_entitlement(resource, "member", grantable_to=[USER, GROUP])])

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        gid = resource.id.resource
        self.graph.started.setdefault(gid, time.monotonic())
        pages = self.graph.listings.get(gid, [])
        index = int(page_token or 0)
        await asyncio.sleep(self.graph.delays.get(gid, 0.0))
        out = [grant(s) for s in pages[index]] if index < len(pages) else []
        nxt = str(index + 1) if index + 1 < len(pages) else ""
        if not nxt:
            self.graph.ended[gid] = time.monotonic()
        return Page(out, nxt)


class GraphConnector(Connector):
    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def metadata(self) -> connector_pb2.ConnectorMetadata:
        return connector_pb2.ConnectorMetadata(display_name="Graph")

    async def validate(self) -> list[Message]:
        return []

    def syncers(self) -> Sequence[ResourceSyncer]:
        return [Users(self.graph), Groups(self.graph)]


async def sync(tmp_path: Path, graph: Graph, name: str, **options: Any) -> tuple[SyncReport, Path]:
    out = tmp_path / f"{name}.c1z"
    report = await run_sync(ConnectorRuntime(GraphConnector(graph)), out, SyncOptions(**options))
    return report, out


def random_graph(seed: int, messy: bool, in_order: bool) -> Graph:
    """Nested groups (cycles, self-loops, shallow and type-filtered edges, unknown sources). Messy graphs
    also list grants with other groups than their own and list some twice: differently if the groups are
    listed one at a time (`in_order`; otherwise which listing is last, and wins, is down to timing)."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(rng.randint(2, 7))]
    groups = [f"g{i}" for i in range(rng.randint(2, 7))]
    specs: list[GrantSpec] = []
    for owner in groups:
        for u in rng.sample(users, rng.randint(0, len(users))):
            specs.append((owner, "user", u, None))
        for child in rng.sample(groups, rng.randint(0, min(3, len(groups)))):
            sources = [member_of(child)]
            if rng.random() < 0.1:
                sources.append("group:nobody:member")  # unknown: skipped with a warning either way
            expandable = model.expandable(
                sources,
                shallow=rng.random() < 0.2,
                resource_type_ids=["user"] if rng.random() < 0.2 else [],
            )
            specs.append((owner, "group", child, expandable))
    listed: dict[str, list[GrantSpec]] = {g: [] for g in groups}
    for spec in specs:
        where = spec[0] if not messy or rng.random() < 0.7 else rng.choice(groups)
        listed[where].append(spec)
        if messy and rng.random() < 0.15:
            # Listed again: a group's membership now without an expansion, or with other flags (the last
            # write wins).
            again = spec
            owner, ptype, pid, _ = spec
            if ptype == "group" and in_order:
                flags = model.expandable([member_of(pid)], shallow=rng.random() < 0.5)
                again = (owner, ptype, pid, None if rng.random() < 0.5 else flags)
            listed[rng.choice(groups)].append(again)
    listings: dict[str, list[list[GrantSpec]]] = {}
    for gid, items in listed.items():
        rng.shuffle(items)
        size = rng.randint(1, 4)
        listings[gid] = [items[i : i + size] for i in range(0, len(items), size)] or [[]]
    delays = {g: rng.choice((0.0, 0.0, 0.002, 0.01)) for g in groups}
    return Graph(users, groups, listings, delays)


@pytest.mark.parametrize("messy", [False, True], ids=["own-listings", "grants-listed-anywhere"])
async def test_early_expansion_gives_exactly_what_expansion_at_the_end_gives(
    tmp_path: Path, messy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hand batches to the store after every listing, so edges become ready in every possible order.
    monkeypatch.setattr("connector.sync.engine.EARLY_EXPANSION_FLUSH_S", 0.0)
    undone: list[int] = []
    original_undo = early_expansion.EarlyExpansion.undo

    def counting_undo(self: early_expansion.EarlyExpansion) -> None:
        if self.ran:
            undone.append(len(self.ran))
        original_undo(self)

    monkeypatch.setattr(early_expansion.EarlyExpansion, "undo", counting_undo)
    early_total = 0
    for seed in range(SEEDS):
        concurrency = 1 + seed % 4
        graph = random_graph(seed, messy, concurrency == 1)
        common: dict[str, Any] = {"concurrency": concurrency, "writer_process": seed % 8 == 0}
        late, late_out = await sync(tmp_path, graph, f"late{seed}", early_expansion=False, **common)
        early, early_out = await sync(tmp_path, graph, f"early{seed}", **common)
        assert content(early_out) == content(late_out), f"seed {seed}"
        assert early.grants_expanded == late.grants_expanded, f"seed {seed}"
        assert sorted(early.warnings) == sorted(late.warnings), f"seed {seed}"
        early_total += early.grants_expanded_early
    # Both paths were taken: edges expanded early, and (with grants listed anywhere) early work undone.
    assert early_total > 0
    assert bool(undone) == messy


async def test_edges_expand_while_a_slow_listing_is_still_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """g1's members inherit g0; g9 (listed last) takes long. The edge g1 -> g0 runs during g9's listing."""
    monkeypatch.setattr("connector.sync.engine.EARLY_EXPANSION_FLUSH_S", 0.0)
    runs: list[float] = []
    original = early_expansion.EarlyExpansion._run_destination

    def recording(self: early_expansion.EarlyExpansion, destination: str) -> None:
        before = self.stats.created
        original(self, destination)
        if self.stats.created > before:
            runs.append(time.monotonic())

    monkeypatch.setattr(early_expansion.EarlyExpansion, "_run_destination", recording)
    graph = Graph(
        users=["ann", "bob"],
        groups=["g0", "g1", "g9"],
        listings={
            "g0": [[("g0", "group", "g1", model.expandable([member_of("g1")]))]],
            "g1": [[("g1", "user", "ann", None), ("g1", "user", "bob", None)]],
            "g9": [[("g9", "user", "ann", None)]] * 3,
        },
        delays={"g9": 0.2},
    )
    report, out = await sync(tmp_path, graph, "slow", concurrency=2, writer_process=False)
    assert report.grants_expanded == report.grants_expanded_early == 2
    assert runs and runs[0] < graph.ended["g9"]
    with C1zReader(out) as r:
        derived = {g.id for g in r.grants() if g.sources.sources}
    assert derived == {"group:g0:member:user:ann", "group:g0:member:user:bob"}


# --- the store, batch by batch ----------------------------------------------------------------------------


def store_with_groups(tmp_path: Path, *groups: str, bulk_load_after: int = 100_000) -> LocalStore:
    store = LocalStore(
        tmp_path / "store.c1z", keep_sync_count=2, cancel=threading.Event(), bulk_load_after=bulk_load_after
    )
    store.start_sync("full")
    resources = [user("ann"), user("bob"), *(group(g) for g in groups)]
    store.write_resource_rows([rows.resource_row(r) for r in resources])
    store.write_entitlement_rows(
        [
            rows.entitlement_row(model.assignment_entitlement(group(g), "member", grantable_to=[USER, GROUP]))
            for g in groups
        ]
    )
    return store


def write(store: LocalStore, specs: list[GrantSpec], watermark: int | None) -> None:
    batch = rows.GrantRows()
    batch.add_all([grant(s) for s in specs])
    store.write_grants(batch.plain, batch.expandable, batch.expandable_after, watermark)


def resource_rowid(store: LocalStore, gid: str) -> int:
    row = store.conn.execute(
        "select id from v1_resources where external_id = ? and sync_id = ?", (f"group:{gid}", store.sync_id)
    ).fetchone()
    return int(row[0])


def derived(store: LocalStore) -> set[str]:
    found = store.conn.execute(
        "select external_id, data from v1_grants where sync_id = ?", (store.sync_id,)
    ).fetchall()
    return {str(i) for i, data in found if grant_pb2.Grant.FromString(bytes(data)).sources.sources}


NEST = ("outer", "group", "inner", model.expandable([member_of("inner")]))
INNER = [("inner", "user", "ann", None), ("inner", "user", "bob", None)]


def test_an_edge_runs_once_both_listings_have_ended(tmp_path: Path) -> None:
    store = store_with_groups(tmp_path, "inner", "outer")
    try:
        inner, outer = resource_rowid(store, "inner"), resource_rowid(store, "outer")
        assert inner < outer
        write(store, INNER, inner)  # inner's listing has not ended
        write(store, [NEST], inner + 1)  # now it has; outer's has not
        assert derived(store) == set()
        write(store, [], outer + 1)
        assert derived(store) == {"group:outer:member:user:ann", "group:outer:member:user:bob"}
        stats, warnings = store.expand_grants(20)
        assert (stats["created"], stats["created_early"], stats["early_taken_back"]) == (2, 2, 0)
        assert warnings == []
    finally:
        store.abort()


@pytest.mark.parametrize(
    "late",
    [
        ("inner", "user", "carl", None),  # a new member of the source, listed elsewhere
        ("outer", "user", "ann", None),  # a direct grant of the destination that an early one took
        ("inner", "group", "outer", model.expandable([member_of("outer")])),  # a cycle through the source
    ],
    ids=["source", "destination", "edge-into-source"],
)
def test_a_later_grant_of_an_expanded_entitlement_takes_early_work_back(
    tmp_path: Path, late: GrantSpec
) -> None:
    store = store_with_groups(tmp_path, "inner", "outer")
    try:
        write(store, [*INNER, NEST], ALL_DONE)
        assert len(derived(store)) == 2
        write(store, [late], ALL_DONE)
        assert derived(store) == set()  # taken back before the late grant was stored
        stats, _ = store.expand_grants(20)
        assert stats["created_early"] == 0 and stats["early_taken_back"] == 2
    finally:
        store.abort()


def test_early_work_stops_when_the_grant_indexes_are_dropped_for_a_bulk_load(tmp_path: Path) -> None:
    store = store_with_groups(tmp_path, "inner", "outer", "third", bulk_load_after=4)
    try:
        write(store, [*INNER, NEST], ALL_DONE)
        assert len(derived(store)) == 2
        # Past 4 connector grants the indexes go: nothing more runs early, what ran stays.
        third = [("third", "group", "inner", model.expandable([member_of("inner")]))]
        write(store, [("third", "user", "ann", None), *third], ALL_DONE)
        assert len(derived(store)) == 2
        stats, _ = store.expand_grants(20)
        assert (stats["created"], stats["created_early"]) == (3, 2)
        assert "group:third:member:user:bob" in derived(store)
    finally:
        store.abort()


def test_a_derived_grant_id_already_taken_takes_early_work_back(tmp_path: Path) -> None:
    """A connector that stored another entitlement's grant under the id an expanded grant would get."""
    store = store_with_groups(tmp_path, "inner", "outer")
    try:
        taken = grant(("inner", "user", "ann", None))
        taken.id = "group:outer:member:user:bob"
        batch = rows.GrantRows()
        batch.add_all([grant(s) for s in [*INNER, NEST]] + [taken])
        store.write_grants(batch.plain, batch.expandable, batch.expandable_after, ALL_DONE)
        assert derived(store) == set()
        stats, _ = store.expand_grants(20)
        assert stats["created_early"] == 0
    finally:
        store.abort()


def test_an_edge_runs_when_both_listings_ended_even_behind_a_slower_listing(tmp_path: Path) -> None:
    """`slow` comes first in row order and is still listing (the watermark stays at it); inner and outer
    have ended and say so: their edge runs now, not when `slow` ends."""
    store = store_with_groups(tmp_path, "slow", "inner", "outer")
    try:
        slow = resource_rowid(store, "slow")
        inner, outer = resource_rowid(store, "inner"), resource_rowid(store, "outer")
        assert slow < inner < outer
        batch = rows.GrantRows()
        batch.add_all([grant(s) for s in [*INNER, NEST]])
        store.write_grants(batch.plain, batch.expandable, batch.expandable_after, slow, [inner])
        assert derived(store) == set()  # outer's listing has not ended
        store.write_grants([], [], [], slow, [outer])
        assert derived(store) == {"group:outer:member:user:ann", "group:outer:member:user:bob"}
        stats, _ = store.expand_grants(20)
        assert (stats["created"], stats["created_early"], stats["early_taken_back"]) == (2, 2, 0)
    finally:
        store.abort()


async def test_the_engine_reports_listings_that_ended_behind_a_slower_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """g0 is listed first and takes long; g1 -> g2 expands while g0 is still listing."""
    monkeypatch.setattr("connector.sync.engine.EARLY_EXPANSION_FLUSH_S", 0.0)
    runs: list[float] = []
    original = early_expansion.EarlyExpansion._run_destination

    def recording(self: early_expansion.EarlyExpansion, destination: str) -> None:
        before = self.stats.created
        original(self, destination)
        if self.stats.created > before:
            runs.append(time.monotonic())

    monkeypatch.setattr(early_expansion.EarlyExpansion, "_run_destination", recording)
    graph = Graph(
        users=["ann", "bob"],
        groups=["g0", "g1", "g2"],
        listings={
            "g0": [[("g0", "user", "ann", None)]] * 3,
            "g1": [[("g1", "group", "g2", model.expandable([member_of("g2")]))]],
            "g2": [[("g2", "user", "ann", None), ("g2", "user", "bob", None)]],
        },
        delays={"g0": 0.3},
    )
    report, _ = await sync(tmp_path, graph, "slow-first", concurrency=3, writer_process=False)
    assert report.grants_expanded == report.grants_expanded_early == 2
    assert runs and runs[0] < graph.ended["g0"]


async def test_group_grants_are_listed_before_other_resources_grants(tmp_path: Path) -> None:
    """Groups are usually the sources of expansion: listed first, each other resource's edges can run as
    soon as its own listing ends. Resources stored before the groups are listed after them."""
    doc = model.resource_type("doc", "Document", [])
    calls: list[str] = []

    class Docs(ResourceSyncer):
        resource_type = doc

        async def list(self, parent: resource_pb2.ResourceId | None, page_token: str) -> Page[Any]:
            return Page([model.new_resource(f"d{i}", doc, f"d{i}") for i in range(3)])

        async def entitlements(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
            return Page([model.permission_entitlement(resource, "read", grantable_to=[GROUP])])

        async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
            calls.append(f"doc:{resource.id.resource}")
            g = model.new_grant(
                resource,
                "read",
                model.resource_id("group", "g0"),
                annotations=[model.expandable([member_of("g0")])],
            )
            return Page([g])

    graph = Graph(users=["ann"], groups=["g0", "g1"], listings={"g0": [[("g0", "user", "ann", None)]]})

    class Recorded(Groups):
        async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
            calls.append(f"group:{resource.id.resource}")
            return await super().grants(resource, page_token)

    class DocsFirst(GraphConnector):
        def syncers(self) -> Sequence[ResourceSyncer]:
            return [Docs(), Users(self.graph), Recorded(self.graph)]

    out = tmp_path / "docs.c1z"
    report = await run_sync(ConnectorRuntime(DocsFirst(graph)), out, SyncOptions(concurrency=1))
    assert calls == ["group:g0", "group:g1", "doc:d0", "doc:d1", "doc:d2"]
    assert report.grants_expanded == 3


def test_a_feed_out_of_row_order_vouches_for_nothing_until_it_is_exhausted() -> None:
    """Groups first: a running group with a high row id says nothing of the resources below it that are
    still to come, so the watermark stays at 0 (ended listings are reported one by one instead)."""
    from connector.sync.engine import _Listings, _ResourceFeed

    feed = _ResourceFeed(None, (), ("group",))  # type: ignore[arg-type]
    listings = _Listings()
    listings.feed = feed
    feed.last = 40
    listings.running = {40}
    assert listings.watermark() == 0
    feed.done = True
    assert listings.watermark() == 40
    listings.running = set()
    assert listings.watermark() == ALL_DONE


def grant_indexes(conn: Any) -> dict[str, str]:
    found = conn.execute(
        "select name, sql from sqlite_master where type = 'index' and tbl_name = 'v1_grants'"
    )
    return {str(n): str(s) for n, s in found}


def test_lookup_indexes_wait_for_the_end_of_a_full_sync_and_come_back_as_before(tmp_path: Path) -> None:
    """A new file keeps no principal or resource index of grants while a full sync runs (nothing reads
    them then); the written file has every grant index exactly as a file that kept them all along."""
    store = store_with_groups(tmp_path, "inner", "outer")
    try:
        before = grant_indexes(store.conn)
        write(store, [*INNER, NEST], ALL_DONE)
        assert set(before) - set(grant_indexes(store.conn)) == {
            "idx_grants_principal_id_v1",
            "idx_grants_resource_type_id_resource_id_v1",
        }
        store.expand_grants(20)
        assert "idx_grants_principal_id_v1" not in grant_indexes(store.conn)
        store.finish()
        assert grant_indexes(store.conn) == before
        plan = store.conn.execute(
            "explain query plan select id from v1_grants where principal_resource_type_id = ? "
            "and principal_resource_id = ?",
            ("user", "ann"),
        ).fetchall()
        assert "idx_grants_principal_id_v1" in str(plan)
        store.commit()
        # Read raw: a reader would create any missing index itself.
        container.decompress_file(tmp_path / "store.c1z", tmp_path / "db")
        written = sqlite3.connect(tmp_path / "db")
        try:
            assert grant_indexes(written) == before
        finally:
            written.close()
    finally:
        store.abort()
