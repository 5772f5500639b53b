"""Grant expansion (nested groups), done in the SQLite store.

A grant G of entitlement D to principal P carrying `GrantExpandable{entitlement_ids: [S...]}` (stored in
`v1_grants.expansion`) means: every principal holding S also holds D. S must be an entitlement *of* P.
`shallow` limits inheritance to principals holding S directly; `resource_type_ids` limits which principal
types inherit.

Only the graph of entitlements lives in memory (one edge per expandable grant); grants are read and
written in pages through the `(entitlement_id, principal_resource_type_id, principal_resource_id)` index,
so expanding millions of grants needs no more memory than expanding a thousand.

Algorithm (as the Go syncer, v0.7.27 semantics plus the [HEAD] merged-edge rules):
1. Load edges S -> D from the grants that need expansion; an unknown S is skipped, an S whose resource is
   not the grant's principal fails the sync.
2. Collapse strongly connected components (cycles, self-loops included) into single nodes; edges inside a
   component are dropped, merged edges are shallow only if all inputs were, unfiltered if any input was.
3. Expand in topological layers: a node's out-edges run once everything flowing into it is done. More
   than `max_depth` layers fails the sync. For each edge and each source grant g (skipped under shallow
   unless g is direct), P = g.principal gets D: a new grant `<D>:<P>` with sources {S: {is_direct}} and a
   GrantImmutable annotation, or the sources of its existing grant(s) of D are extended.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain

from connector.c1z import schema
from connector.c1z.timefmt import format_timestamp
from connector.c1z.writer import MultiRowUpsert
from connector.pb.c1.connector.v2 import annotation_grant_pb2, entitlement_pb2, grant_pb2
from connector.sdk import model

DEFAULT_MAX_DEPTH = 20
PAGE = 10_000
# Principals per `IN (...)` lookup of existing grants (well under SQLite's variable limit).
_IN_CHUNK = 500

# (row id, principal type, principal id) of the last grant of a page.
Cursor = tuple[str, str, int]
# A source grant as expansion needs it: principal type and id (its columns), whether it holds the source
# directly, its principal serialized as a Grant's field 2 (built once per source grant, used for every
# destination), and the principal id's type and id (the derived grant's columns).
_SourceRow = tuple[str, str, bool, bytes, str, str]
# Source grants kept parsed across destinations when the expander's sources cannot change under it
# (early expansion; see `keep_sources`), at most this many.
MAX_KEPT_SOURCE_ROWS = 50_000


class ExpansionError(Exception):
    """Expansion cannot proceed; the message names the offending grant or the depth limit."""


@dataclass
class Edge:
    shallow: bool
    # None = every principal type inherits; otherwise only these types.
    resource_type_ids: frozenset[str] | None


@dataclass
class Action:
    """Expand one (source entitlement -> destination entitlement) pair."""

    source: str
    destination: str
    shallow: bool
    resource_type_ids: tuple[str, ...]  # empty = all principal types


@dataclass
class ExpansionStats:
    edges: int = 0
    components_collapsed: int = 0
    layers: int = 0
    created: int = 0
    updated: int = 0


@dataclass
class _Component:
    entitlement_ids: list[str]
    out: dict[int, Edge] = field(default_factory=dict)
    indegree: int = 0


def _merge(edges: list[Edge]) -> Edge:
    shallow = all(e.shallow for e in edges)
    if any(e.resource_type_ids is None for e in edges):
        return Edge(shallow, None)
    types: set[str] = set()
    for e in edges:
        assert e.resource_type_ids is not None
        types |= e.resource_type_ids
    return Edge(shallow, frozenset(types))


class Expander:
    """Runs on the store's thread. Call `load()`, then `next_layer()` until it returns None, running
    `expand_page(action, cursor)` for each action until it returns None."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        sync_id: str,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        page_size: int = PAGE,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.conn = conn
        self.sync_id = sync_id
        self.max_depth = max_depth
        self.page_size = page_size
        self.warn = warn or (lambda _m: None)
        self.stats = ExpansionStats()
        self._edges: dict[tuple[str, str], Edge] = {}
        # Fallback entitlement objects for destinations not listed as entitlements (taken from the
        # expandable grant itself, which always embeds {id, resource}).
        self._fallback_entitlements: dict[str, bytes] = {}
        self._components: list[_Component] = []
        self._ready: list[int] = []
        self._depth = 0
        self._entitlement_cache: dict[str, entitlement_pb2.Entitlement] = {}
        immutable = model.pack(annotation_grant_pb2.GrantImmutable())
        self._immutable_any = immutable
        self._immutable_field = _field(4, immutable.SerializeToString(deterministic=True))
        self._source_cache: (
            tuple[tuple[str, tuple[str, ...], Cursor | None], list[_SourceRow], Cursor | None] | None
        ) = None
        # Set by early expansion (early_expansion.py): what this expander writes is recorded so that it
        # can be taken back, and new grants never overwrite a stored one.
        self.journal: Journal | None = None
        # Early expansion never writes a source while it runs (a later grant of one takes everything back,
        # which calls forget_pages), so source pages are kept across destinations, up to a bound.
        self.keep_sources = False
        self._kept: dict[
            tuple[str, tuple[str, ...], Cursor | None], tuple[list[_SourceRow], Cursor | None]
        ] = {}
        self._kept_rows = 0

    # --- graph ---------------------------------------------------------------------------------------

    @property
    def edges(self) -> dict[tuple[str, str], Edge]:
        """The (source, destination) edges `load()` found, before cycles are collapsed."""
        return self._edges

    def stored(self, entitlement_id: str) -> bool:
        """Whether the entitlement is stored (or was embedded in an expandable grant `load()` read)."""
        return self._entitlement(entitlement_id) is not None

    def source_belongs_to(self, source: str, ptype: str, pid: str) -> bool:
        """Whether `source` is a known entitlement of the principal ptype:pid (what `load()` requires of
        an edge; anything else is left to it, to warn about or fail on)."""
        ent = self._entitlement(source)
        if ent is None:
            return False
        rid = ent.resource.id
        return rid.resource_type == ptype and rid.resource == pid

    def forget_pages(self) -> None:
        """Drop the cached source pages (the grants under them may have changed since they were read)."""
        self._source_cache = None
        self._kept.clear()
        self._kept_rows = 0

    def load(self) -> int:
        """Read expandable grants and build the graph. Returns the number of edges."""
        last = 0
        while True:
            rows = self.conn.execute(
                f"select id, external_id, entitlement_id, principal_resource_type_id, "
                f"principal_resource_id, expansion, data from {schema.GRANTS} "
                "where sync_id = ? and expansion is not null and needs_expansion = 1 and id > ? "
                "order by id limit ?",
                (self.sync_id, last, self.page_size),
            ).fetchall()
            if not rows:
                break
            for row_id, grant_id, dest, ptype, pid, expansion, data in rows:
                last = row_id
                exp = annotation_grant_pb2.GrantExpandable()
                exp.ParseFromString(bytes(expansion))
                for source in exp.entitlement_ids:
                    if not source.strip():
                        continue
                    self._add_edge(str(grant_id), str(dest), str(ptype), str(pid), source, exp, bytes(data))
        self.stats.edges = len(self._edges)
        self._build_components()
        return len(self._edges)

    def _add_edge(
        self,
        grant_id: str,
        dest: str,
        ptype: str,
        pid: str,
        source: str,
        exp: annotation_grant_pb2.GrantExpandable,
        grant_data: bytes,
    ) -> None:
        ent = self._entitlement(source)
        if ent is None:
            self.warn(
                f"grant {grant_id}: expandable source entitlement {source} does not exist; edge skipped"
            )
            return
        rid = ent.resource.id
        if rid.resource_type != ptype or rid.resource != pid:
            raise ExpansionError(
                f"grant {grant_id} is expandable from entitlement {source}, which belongs to "
                f"{rid.resource_type}:{rid.resource}, not to the grant's principal {ptype}:{pid}"
            )
        key = (source, dest)
        if key in self._edges:
            self.warn(f"duplicate expansion edge {source} -> {dest} (grant {grant_id}); ignored")
            return
        types = frozenset(t for t in exp.resource_type_ids if t) or None
        self._edges[key] = Edge(exp.shallow, types)
        if dest not in self._fallback_entitlements and self._stored_entitlement_data(dest) is None:
            g = grant_pb2.Grant()
            g.ParseFromString(grant_data)
            self._fallback_entitlements[dest] = g.entitlement.SerializeToString(deterministic=True)

    def _stored_entitlement_data(self, entitlement_id: str) -> bytes | None:
        row = self.conn.execute(
            f"select data from {schema.ENTITLEMENTS} where external_id = ? and sync_id = ?",
            (entitlement_id, self.sync_id),
        ).fetchone()
        return bytes(row[0]) if row else None

    def _entitlement(self, entitlement_id: str) -> entitlement_pb2.Entitlement | None:
        cached = self._entitlement_cache.get(entitlement_id)
        if cached is not None:
            return cached
        data = self._stored_entitlement_data(entitlement_id)
        if data is None:
            data = self._fallback_entitlements.get(entitlement_id)
        if data is None:
            return None
        ent = entitlement_pb2.Entitlement()
        ent.ParseFromString(data)
        if len(self._entitlement_cache) > 4096:
            self._entitlement_cache.clear()
        self._entitlement_cache[entitlement_id] = ent
        return ent

    def _build_components(self) -> None:
        nodes: dict[str, int] = {}
        names: list[str] = []
        for pair in self._edges:
            for eid in pair:
                if eid not in nodes:
                    nodes[eid] = len(names)
                    names.append(eid)
        adjacency: list[list[int]] = [[] for _ in names]
        for src, dst in self._edges:
            adjacency[nodes[src]].append(nodes[dst])
        comp_of = _tarjan(adjacency)
        count = max(comp_of, default=-1) + 1
        members: list[list[str]] = [[] for _ in range(count)]
        for idx, comp in enumerate(comp_of):
            members[comp].append(names[idx])
        self._components = [_Component(sorted(m)) for m in members]
        self_loops = {comp_of[nodes[src]] for src, dst in self._edges if src == dst}
        self.stats.components_collapsed = sum(
            1 for i, m in enumerate(members) if len(m) > 1 or i in self_loops
        )
        grouped: dict[tuple[int, int], list[Edge]] = {}
        for (src, dst), edge in self._edges.items():
            a, b = comp_of[nodes[src]], comp_of[nodes[dst]]
            if a == b:
                continue  # inside a cycle (or a self-loop): dropped, as in the Go syncer
            grouped.setdefault((a, b), []).append(edge)
        for (a, b), edges in grouped.items():
            self._components[a].out[b] = _merge(edges)
            self._components[b].indegree += 1
        self._ready = [i for i, c in enumerate(self._components) if c.indegree == 0 and c.out]

    # --- layers --------------------------------------------------------------------------------------

    def next_layer(self) -> list[Action] | None:
        """The actions of the next layer, or None when everything is expanded."""
        if not self._ready:
            return None
        if self._depth > self.max_depth:
            raise ExpansionError(
                f"grant expansion exceeded the maximum depth of {self.max_depth} "
                "(entitlements nested more deeply than that)"
            )
        self._depth += 1
        self.stats.layers = self._depth
        self._source_cache = None
        layer, self._ready = self._ready, []
        actions: list[Action] = []
        for comp_idx in layer:
            comp = self._components[comp_idx]
            for dest_idx, edge in sorted(comp.out.items()):
                dest = self._components[dest_idx]
                types = tuple(sorted(edge.resource_type_ids)) if edge.resource_type_ids is not None else ()
                for s in comp.entitlement_ids:
                    for d in dest.entitlement_ids:
                        actions.append(Action(s, d, edge.shallow, types))
                dest.indegree -= 1
                if dest.indegree == 0 and dest.out:
                    self._ready.append(dest_idx)
        return actions

    # --- one page of one action ---------------------------------------------------------------------

    def expand_layer(self, actions: list[Action]) -> None:
        """Every page of every action of one layer, in one call (one hop to the store's thread per layer
        instead of one per page)."""
        # One transaction for the layer: a commit per page wrote the touched index pages out every time.
        conn = self.conn
        conn.execute("begin")
        try:
            for action in actions:
                cursor: Cursor | None = None
                while True:
                    cursor = self.expand_page(action, cursor)
                    if cursor is None:
                        break
        except BaseException:
            conn.execute("rollback")
            raise
        conn.execute("commit")

    def expand_page(self, action: Action, cursor: Cursor | None) -> Cursor | None:
        """Propagate one page of the source entitlement's grants. Returns the next cursor or None."""
        rows, nxt = self._source_page(action, cursor)
        if not rows:
            return None
        dest = self._entitlement(action.destination)
        if dest is None:
            self.warn(f"expansion destination entitlement {action.destination} not found; edge skipped")
            return None
        # New grants are written as bytes, assembled from fields serialized once per page or once per source
        # grant (see _field): the same bytes `SerializeToString(deterministic=True)` gives, at a fraction
        # of the cost.
        head = _field(1, dest.SerializeToString(deterministic=True))
        tails = {d: self._immutable_field + _field(5, _sources(action.source, d)) for d in (False, True)}
        rid = dest.resource.id
        rtype, rres = rid.resource_type, rid.resource
        inserts: dict[tuple[str, str], _DerivedRow] = {}
        updates: dict[int, grant_pb2.Grant] = {}
        source = action.source
        destination = action.destination
        prefix = f"{dest.id}:"
        candidates = rows if not action.shallow else [r for r in rows if r[2]]
        existing = self._existing(destination, candidates)
        for ptype, pid, direct, pfield, col_type, col_id in candidates:
            key = (ptype, pid)
            if key in inserts:
                continue  # the same principal twice in the source: its first grant already says it all
            held = existing.get(key)
            if not held:
                gid = f"{prefix}{ptype}:{pid}"
                gid_bytes = gid.encode()
                size = len(gid_bytes)
                gid_field = b"\x1a" + bytes((size,)) + gid_bytes if size < 0x80 else _field(3, gid_bytes)
                inserts[key] = (
                    rtype,
                    rres,
                    destination,
                    col_type,
                    col_id,
                    gid,
                    head + pfield + gid_field + tails[direct],
                )
                continue
            for row_id, d in held:
                changed = False
                dsrc = d.sources.sources
                if len(dsrc) == 0:
                    dsrc[destination].is_direct = True
                    changed = True
                if source not in dsrc:
                    dsrc[source].is_direct = direct
                    changed = True
                if changed:
                    updates[row_id] = d
        self._write(inserts, updates)
        if self._source_cache is not None and self._source_cache[0][0] == destination:
            self._source_cache = None  # never true across components; kept so a cache can never go stale
        return nxt

    def _source_page(self, action: Action, cursor: Cursor | None) -> tuple[list[_SourceRow], Cursor | None]:
        """One page of the source entitlement's grants, parsed, and the cursor after it (None at the end).

        Actions of one source come one after another (all destinations of a component in turn), so the
        last page is kept: the grants of a group with many space permissions are read and parsed once per
        page, not once per permission. Sources are never written within a layer (a destination is always
        in a later layer), and `next_layer` drops the page.
        """
        key = (action.source, action.resource_type_ids, cursor)
        cached = self._source_cache
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        kept = self._kept.get(key) if self.keep_sources else None
        if kept is not None:
            return kept
        query = (
            f"select id, principal_resource_type_id, principal_resource_id, data from {schema.GRANTS} "
            "where entitlement_id = ? and sync_id = ?"
        )
        args: list[object] = [action.source, self.sync_id]
        if action.resource_type_ids:
            query += f" and principal_resource_type_id in ({', '.join('?' * len(action.resource_type_ids))})"
            args += list(action.resource_type_ids)
        if cursor is not None:
            query += " and (principal_resource_type_id, principal_resource_id, id) > (?, ?, ?)"
            args += list(cursor)
        query += " order by principal_resource_type_id, principal_resource_id, id limit ?"
        args.append(self.page_size)
        found = self.conn.execute(query, args).fetchall()
        source = action.source
        rows: list[_SourceRow] = []
        for _row_id, ptype, pid, data in found:
            g = grant_pb2.Grant()
            g.ParseFromString(bytes(data))
            sources = g.sources.sources
            principal = g.principal
            rows.append(
                (
                    str(ptype),
                    str(pid),
                    len(sources) == 0 or source in sources,
                    _field(2, principal.SerializeToString(deterministic=True)),
                    principal.id.resource_type,
                    principal.id.resource,
                )
            )
        # A short page is the last one: nothing of the source is written while its actions run.
        nxt: Cursor | None = None
        if len(found) == self.page_size:
            last = found[-1]
            nxt = (str(last[1]), str(last[2]), int(last[0]))
        self._source_cache = (key, rows, nxt)
        if self.keep_sources:
            if self._kept_rows + len(rows) > MAX_KEPT_SOURCE_ROWS:
                self._kept.clear()
                self._kept_rows = 0
            self._kept[key] = (rows, nxt)
            self._kept_rows += len(rows)
        return rows, nxt

    def _existing(
        self, entitlement_id: str, rows: list[_SourceRow]
    ) -> dict[tuple[str, str], list[tuple[int, grant_pb2.Grant]]]:
        """The stored grants of `entitlement_id` to the principals of `rows`, by principal, in id order
        (a few queries per page rather than one per principal)."""
        wanted: dict[str, list[str]] = {}
        seen: set[tuple[str, str]] = set()
        for ptype, pid, *_ in rows:
            if (ptype, pid) not in seen:
                seen.add((ptype, pid))
                wanted.setdefault(ptype, []).append(pid)
        out: dict[tuple[str, str], list[tuple[int, grant_pb2.Grant]]] = {}
        found: list[tuple[int, str, str, bytes]] = []
        for ptype, pids in wanted.items():
            for i in range(0, len(pids), _IN_CHUNK):
                chunk = pids[i : i + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                query = (
                    "select id, principal_resource_type_id, principal_resource_id, data "
                    f"from {schema.GRANTS} where entitlement_id = ? and sync_id = ? "
                    f"and principal_resource_type_id = ? and principal_resource_id in ({marks})"
                )
                found.extend(self.conn.execute(query, [entitlement_id, self.sync_id, ptype, *chunk]))
        found.sort(key=lambda r: int(r[0]))
        for row_id, ptype, pid, data in found:
            g = grant_pb2.Grant()
            g.ParseFromString(bytes(data))
            out.setdefault((str(ptype), str(pid)), []).append((int(row_id), g))
        return out

    def _write(
        self, inserts: dict[tuple[str, str], _DerivedRow], updates: dict[int, grant_pb2.Grant]
    ) -> None:
        if not inserts and not updates:
            return
        new_rows = list(inserts.values())
        conn = self.conn
        # Inside expand_layer's transaction (or early expansion's) already, or a transaction of its own.
        own = not conn.in_transaction
        if own:
            conn.execute("begin")
        journal = self.journal
        try:
            if new_rows:
                first = _max_grant_id(conn) + 1 if journal is not None else 0
                _insert_derived(conn, new_rows, self.sync_id, journal is not None)
                if journal is not None:
                    journal.inserted_since(conn, first, new_rows)
            if updates:
                if journal is not None:
                    journal.keep_previous(conn, list(updates))
                conn.executemany(
                    f"update {schema.GRANTS} set data = ? where id = ?",
                    [(g.SerializeToString(deterministic=True), row_id) for row_id, g in updates.items()],
                )
        except BaseException:
            if own:
                conn.execute("rollback")
            raise
        if own:
            conn.execute("commit")
        self.stats.created += len(new_rows)
        self.stats.updated += len(updates)


# A derived grant's per-row columns: resource type, resource, entitlement, principal type, principal id,
# external id, data (sync id and timestamp are shared by the statement).
_DerivedRow = tuple[str, str, str, str, str, str, bytes]
_DERIVED_ROW = ("?", "?", "?", "?", "?", "?", "null", "0", "?", "?1", "?2")
# Rows per statement: one statement binds a few hundred rows in one call (executemany steps once per row).
_DERIVED_PER_STATEMENT = 256


def _insert_derived(
    conn: sqlite3.Connection, new_rows: list[_DerivedRow], sync_id: str, journalled: bool
) -> None:
    stmt = _INSERT_DERIVED[journalled]
    shared = (sync_id, format_timestamp())
    i, total = 0, len(new_rows)
    while i < total:
        # Full statements, then the remainder in power-of-two pieces (few distinct statements prepared).
        left = total - i
        n = _DERIVED_PER_STATEMENT if left >= _DERIVED_PER_STATEMENT else 1 << (left.bit_length() - 1)
        conn.execute(stmt.sql(n), shared + tuple(chain.from_iterable(new_rows[i : i + n])))
        i += n


_DERIVED_COLUMNS = (
    "resource_type_id, resource_id, entitlement_id, principal_resource_type_id, principal_resource_id, "
    "external_id, expansion, needs_expansion, data, sync_id, discovered_at"
)
# Derived grants, by whether a journal records them. Without one, "preserve expansion": a derived grant
# never overwrites a stored grant's expansion state. With one, a taken id is skipped (and reported).
_INSERT_DERIVED = {
    False: MultiRowUpsert(
        schema.GRANTS,
        _DERIVED_COLUMNS,
        _DERIVED_ROW,
        "on conflict (external_id, sync_id) do update set data = excluded.data",
    ),
    True: MultiRowUpsert(schema.GRANTS, _DERIVED_COLUMNS, _DERIVED_ROW, "on conflict do nothing"),
}


class JournalConflict(Exception):
    """A grant early expansion would create already exists under its id (for another entitlement)."""


class Journal:
    """What early expansion wrote, so that it can be taken back (see early_expansion.py).

    New grants are plain inserts: SQLite gives them consecutive row ids after the largest one, so one
    range per write records them. An insert whose id is taken (never by a well-behaved connector: the id
    names the destination entitlement) is skipped by SQLite and reported as a conflict. Updated grants
    keep their previous bytes.
    """

    def __init__(self) -> None:
        # (first row id, last row id, destination entitlement)
        self.inserted: list[tuple[int, int, str]] = []
        # (row id, previous data, destination entitlement), in write order
        self.updated: list[tuple[int, bytes, str]] = []
        self.updated_bytes = 0

    def inserted_since(self, conn: sqlite3.Connection, first: int, new_rows: list[_DerivedRow]) -> None:
        """Record the grants just inserted from row id `first` on (raises JournalConflict if SQLite
        skipped any)."""
        destination = new_rows[0][2]
        last = _max_grant_id(conn)
        if last >= first:
            self.inserted.append((first, last, destination))
        if last - first + 1 != len(new_rows):
            raise JournalConflict(f"a grant of {destination} exists under a derived grant's id")

    def keep_previous(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        """Keep the bytes of grants about to be updated."""
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for row_id, entitlement_id, data in conn.execute(
                f"select id, entitlement_id, data from {schema.GRANTS} where id in ({marks})", chunk
            ):
                old = bytes(data)
                self.updated.append((int(row_id), old, str(entitlement_id)))
                self.updated_bytes += len(old)

    def undo(self, conn: sqlite3.Connection) -> None:
        """Delete the inserted grants and restore the updated ones. A row a later write gave to another
        entitlement (a connector reusing a derived grant's id) is left as that write made it."""
        for row_id, old, entitlement_id in reversed(self.updated):
            conn.execute(
                f"update {schema.GRANTS} set data = ? where id = ? and entitlement_id = ?",
                (old, row_id, entitlement_id),
            )
        for first, last, entitlement_id in self.inserted:
            conn.execute(
                f"delete from {schema.GRANTS} where id between ? and ? and entitlement_id = ?",
                (first, last, entitlement_id),
            )
        self.inserted.clear()
        self.updated.clear()
        self.updated_bytes = 0


def _max_grant_id(conn: sqlite3.Connection) -> int:
    row = conn.execute(f"select max(id) from {schema.GRANTS}").fetchone()
    return int(row[0] or 0)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (a message or string); an empty one is left out, as proto3
    leaves out an empty string (and the messages used here are never empty)."""
    if not payload:
        return b""
    size = len(payload)
    out = bytearray([number << 3 | 2])
    while size > 0x7F:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + payload


def _sources(source: str, direct: bool) -> bytes:
    sources = grant_pb2.GrantSources()
    sources.sources[source].is_direct = direct
    return sources.SerializeToString(deterministic=True)


def _tarjan(adjacency: list[list[int]]) -> list[int]:
    """Strongly connected components (iterative Tarjan). Returns the component index of each node."""
    n = len(adjacency)
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    comp = [-1] * n
    stack: list[int] = []
    counter = 0
    comp_count = 0
    for root in range(n):
        if index[root] != -1:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            recurse = False
            edges = adjacency[v]
            while i < len(edges):
                w = edges[i]
                i += 1
                if index[w] == -1:
                    work.append((v, i))
                    work.append((w, 0))
                    recurse = True
                    break
                if on_stack[w]:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    comp[w] = comp_count
                    if w == v:
                        break
                comp_count += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return comp
