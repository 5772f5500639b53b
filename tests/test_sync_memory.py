"""A long-running process stays flat across syncs: what became garbage during a sync is freed when it ends.

The engine freezes the collector's view of older objects while a sync runs (connector/sync/tuning.py);
garbage that was frozen, or that lived through the sync, must not wait for a full collection that a
daemon syncing every few minutes would never reach (it grew ~0.35 MB per sync)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncOptions, run_sync
from tests.test_sync_support import Org, OrgConnector


class Node:
    """Holds a reference cycle, as per-sync state often does (parents and children, callbacks)."""

    def __init__(self) -> None:
        self.me = self


async def test_garbage_from_during_a_sync_is_freed_when_it_ends(tmp_path: Path) -> None:
    assert gc.isenabled()
    refs: list[weakref.ref[Node]] = []
    for n in range(5):
        holder = [Node()]  # exists before the sync (frozen with everything else) ...
        refs.append(weakref.ref(holder[0]))
        org = Org()

        def drop(holder: list[Node] = holder) -> None:
            holder.clear()  # ... and becomes garbage while the sync runs

        org.fail[("grants", "group:eng")] = drop
        del holder
        await run_sync(ConnectorRuntime(OrgConnector(org)), tmp_path / f"sync{n}.c1z", SyncOptions())
        # No explicit collection here: the process must not depend on one.
        assert refs[-1]() is None, f"sync {n}: a cycle that became garbage during the sync is still alive"
