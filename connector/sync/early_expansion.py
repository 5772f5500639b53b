"""Grant expansion started while the grants phase is still listing, for edges whose inputs are final.

Why: expansion otherwise starts after the last upstream request and adds its whole cost to the sync's
wall time (for Confluence, a space permission held by a group expands to every member of the group: about
half a second of derived grants written after the last request). Most edges can run long before that.

An edge S -> D (a grant of D to the owner of S, carrying GrantExpandable{S}) runs early, in the store,
when the engine's watermark says that the grant listings of D's resource and of S's owner are complete
and no edge into S is known. What it writes is then exactly what the expansion at the end would write
for that edge in its first layer, provided nothing written later touches S or D. Connectors normally
list an entitlement's grants with the entitlement's own resource, so nothing does; but a connector may
list grants anywhere, so:

- every grant written after an edge has run is checked: a grant of an entitlement that was the source
  or destination of an early edge takes all early work back (`Journal.undo`) before it is stored, and the
  expansion at the end does everything, as it would have without this module;
- at the end the full graph is built as always; early edges must appear in it unchanged, with no edge
  into their sources (otherwise everything is taken back), and only those exact (source, destination,
  flags) actions are skipped. A merged edge with wider flags is run again, which only adds what the
  narrower one left out.

Early work needs the grant indexes, so it stops when a large sync drops them for its bulk load.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections.abc import Callable, Sequence

from connector.c1z import rows, schema
from connector.pb.c1.connector.v2 import annotation_grant_pb2
from connector.sync.expansion import Action, Edge, Expander, ExpansionStats, Journal, JournalConflict

# Early work per call into the store (it runs between row batches, which wait for it).
STEP_BUDGET_S = 0.02
# Previous bytes of updated grants kept for undo; past this, no new early work.
MAX_UNDO_BYTES = 64 << 20
# "Every resource is done": the watermark after the grants phase.
ALL_DONE = 1 << 62

# (shallow, principal types) of an action, as Expander.next_layer forms them
Flags = tuple[bool, tuple[str, ...]]


class EarlyExpansion:
    """Runs on the store's thread: `before_write` and `after_write` around every grant batch,
    `step` when idle, `agrees_with` and `done` at the end."""

    def __init__(self, conn: sqlite3.Connection, sync_id: str, indexes_live: Callable[[], bool]) -> None:
        self.conn = conn
        self.sync_id = sync_id
        self.indexes_live = indexes_live
        self.expander = Expander(conn, sync_id)
        self.journal = Journal()
        self.expander.journal = self.journal
        self.expander.keep_sources = True
        self.active = True
        self.undone = 0
        self.watermark = 0
        # Every entitlement an expandable grant was written for (has, or had, an edge into it).
        self.targets: set[str] = set()
        # Sources and destinations of edges that ran: a later grant of one takes everything back.
        self.frozen: set[str] = set()
        self.ran: dict[tuple[str, str], Flags] = {}
        # (row id of the resource whose listing must end first, destination)
        self._waiting: list[tuple[int, str]] = []
        self._queued: set[tuple[int, str]] = set()
        # Listings the engine reported ended above the watermark (a slow listing holds the watermark back,
        # not the edges of every listing after it), the items waiting for them, and items ready to run.
        self.ended: set[int] = set()
        self._by_row: dict[int, list[tuple[int, str]]] = {}
        self._ready: list[tuple[int, str]] = []
        self._rowids: dict[tuple[str, str], int | None] = {}

    @property
    def stats(self) -> ExpansionStats:
        return self.expander.stats

    # --- around the connector's writes --------------------------------------------------------------

    def before_write(
        self, plain: Sequence[rows.PlainGrantRow], expandable: Sequence[rows.ExpandableGrantRow]
    ) -> None:
        """Called before a batch of connector grants is stored."""
        frozen = self.frozen
        if frozen and (any(r[2] in frozen for r in plain) or any(r[2] in frozen for r in expandable)):
            self.undo()
        if not self.active:
            return
        for r in expandable:
            destination = r[2]
            self.targets.add(destination)
            self._wait_for((r[0], r[1]), destination)

    def after_write(self, watermark: int | None, ended: Sequence[int] = ()) -> None:
        """Called after a batch is stored; `watermark`: every resource with a smaller row id has had its
        grants listed (None: not known, as in a targeted sync); `ended`: row ids of further resources
        whose listings have ended."""
        if watermark is not None and watermark > self.watermark:
            self.watermark = watermark
        for rowid in ended:
            if rowid >= self.watermark:
                self.ended.add(rowid)
            self._ready.extend(self._by_row.pop(rowid, ()))
        self.step()

    def _done(self, rowid: int) -> bool:
        return rowid < self.watermark or rowid in self.ended

    def _has_ready(self) -> bool:
        return bool(self._ready) or bool(self._waiting and self._waiting[0][0] < self.watermark)

    def step(self) -> bool:
        """Run ready edges for up to STEP_BUDGET_S. Returns whether ready work is left."""
        if not self.active:
            return False
        if not self.indexes_live() or self.journal.updated_bytes > MAX_UNDO_BYTES:
            self.active = False  # what ran stays valid; the rest is for the expansion at the end
            return False
        if not self._has_ready():
            return False
        deadline = time.monotonic() + STEP_BUDGET_S
        more = False
        conflict = False
        # One transaction per step (a commit writes out the touched index pages), never rolled back (the
        # database runs without a rollback journal): a conflict is taken back through the journal instead.
        self.conn.execute("begin")
        try:
            while self._has_ready():
                if time.monotonic() > deadline:
                    more = True
                    break
                item = self._ready.pop() if self._ready else heapq.heappop(self._waiting)
                if item not in self._queued:
                    continue  # ran already (it was both past the watermark and reported ended)
                self._queued.discard(item)
                self._run_destination(item[1])
        except JournalConflict:
            conflict = True
        finally:
            self.conn.execute("commit")
        if conflict:
            self.undo()
            return False
        return more

    # --- the end --------------------------------------------------------------------------------------

    def agrees_with(self, edges: dict[tuple[str, str], Edge]) -> bool:
        """Whether every early edge is in the final graph as it ran, with nothing flowing into its source."""
        if not self.ran:
            return True
        targets = {destination for _source, destination in edges}
        for (source, destination), flags in self.ran.items():
            edge = edges.get((source, destination))
            if edge is None or source in targets or _flags(edge) != flags:
                return False
        return True

    def done(self, action: Action) -> bool:
        """Whether `action` already ran early, exactly as given."""
        return self.ran.get((action.source, action.destination)) == (action.shallow, action.resource_type_ids)

    def undo(self) -> None:
        """Take back every early write; the expansion at the end does all the work."""
        if self.journal.inserted or self.journal.updated:
            self.conn.execute("begin")
            try:
                self.journal.undo(self.conn)
            finally:
                self.conn.execute("commit")
        self.expander.forget_pages()
        self.undone += self.expander.stats.created
        self.expander.stats = ExpansionStats()
        self.ran.clear()
        self.frozen.clear()
        self._waiting.clear()
        self._queued.clear()
        self._by_row.clear()
        self._ready.clear()
        self.active = False

    # --- edges ----------------------------------------------------------------------------------------

    def _rowid(self, resource: tuple[str, str]) -> int | None:
        if resource not in self._rowids:
            row = self.conn.execute(
                f"select id from {schema.RESOURCES} where external_id = ? and sync_id = ?",
                (rows.resource_external_id(*resource), self.sync_id),
            ).fetchone()
            self._rowids[resource] = int(row[0]) if row else None
        return self._rowids[resource]

    def _wait_for(self, resource: tuple[str, str], destination: str) -> None:
        rowid = self._rowid(resource)
        if rowid is None:
            return  # not a stored resource: its grants have no end to wait for
        item = (rowid, destination)
        if item not in self._queued:
            self._queued.add(item)
            heapq.heappush(self._waiting, item)
            if rowid in self.ended:
                self._ready.append(item)
            else:
                self._by_row.setdefault(rowid, []).append(item)

    def _edges_into(self, destination: str) -> list[tuple[str, Flags, tuple[str, str]]]:
        """The edges into `destination` as the final graph will have them (the first grant naming a source
        wins), with the owner of each source."""
        out: dict[str, tuple[str, Flags, tuple[str, str]]] = {}
        # `+sync_id`: through the entitlement's index. Left to itself SQLite picks the partial index of
        # every grant that needs expansion and scans all of them, for every destination.
        for ptype, pid, expansion in self.conn.execute(
            f"select principal_resource_type_id, principal_resource_id, expansion from {schema.GRANTS} "
            "where entitlement_id = ? and +sync_id = ? and expansion is not null and needs_expansion = 1 "
            "order by id",
            (destination, self.sync_id),
        ):
            exp = annotation_grant_pb2.GrantExpandable.FromString(bytes(expansion))
            types = frozenset(t for t in exp.resource_type_ids if t) or None
            flags = _flags(Edge(exp.shallow, types))
            for source in exp.entitlement_ids:
                if source.strip() and source not in out:
                    out[source] = (source, flags, (str(ptype), str(pid)))
        return list(out.values())

    def _run_destination(self, destination: str) -> None:
        if not self.expander.stored(destination):
            return  # the expansion at the end finds it in the grant, or warns
        ready: list[Action] = []
        for source, flags, owner in self._edges_into(destination):
            if (source, destination) in self.ran or source in self.targets:
                continue  # ran already; or something flows into the source, so it is not final yet
            owner_row = self._rowid(owner)
            if owner_row is None or not self.expander.source_belongs_to(source, *owner):
                continue  # the expansion at the end warns about it or fails on it
            if not self._done(owner_row):
                self._wait_for(owner, destination)
                continue
            ready.append(Action(source, destination, flags[0], flags[1]))
        if not ready:
            return
        expander = self.expander
        for action in ready:
            cursor = expander.expand_page(action, None)
            while cursor is not None:
                cursor = expander.expand_page(action, cursor)
            self.ran[(action.source, action.destination)] = (action.shallow, action.resource_type_ids)
            self.frozen.add(action.source)
            self.frozen.add(action.destination)


def _flags(edge: Edge) -> Flags:
    types = tuple(sorted(edge.resource_type_ids)) if edge.resource_type_ids is not None else ()
    return edge.shallow, types


__all__ = ["ALL_DONE", "EarlyExpansion"]
