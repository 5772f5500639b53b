"""Interpreter settings held, process-wide, while at least one sync runs.

A sync is an event loop with eight or more requests in flight: anything that stops the loop for tens of
milliseconds leaves every answer that arrives meanwhile waiting, and each of those waits is lost time on
an upstream connection slot. Two interpreter defaults do exactly that, so `held()` changes them for the
duration and puts them back when the last concurrent sync ends.

* GIL switch interval. The store thread hands the GIL back and forth with the event loop for every batch
  it sends to the store process, or, with the store in process, for every SQLite statement it executes;
  with CPython's default 5 ms interval it waits that long each time the loop is busy. 0.5 ms keeps it fed:
  statements are a few hundred rows (see connector/c1z/writer.py), so an in-process store asks for the GIL
  about every millisecond of SQLite work, and waiting a full interval each time would make it the
  bottleneck.
* Cyclic garbage collector. A full collection walks every tracked object, and after the imports a
  connector process holds some 60,000 (functions, classes, module dicts) that will never be garbage. In
  the Confluence benchmark each full collection stopped the loop for ~50 ms, three to five times a sync.
  `gc.freeze()` moves what exists when the first sync starts to the permanent generation, so collections
  during the sync only walk what the sync itself allocated (~5 ms at most); `gc.unfreeze()` when the last
  one ends hands everything back, and a full collection then frees anything that became garbage
  meanwhile (without it, that garbage waits in the oldest generation, and a daemon grows with every sync).
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from collections.abc import Iterator

SWITCH_INTERVAL_S = 0.0005

_lock = threading.Lock()
_holders = 0
_saved_interval = 0.0
_froze = False


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold the sync settings for the duration of the block (re-entrant, thread-safe, counted)."""
    global _holders, _saved_interval, _froze
    with _lock:
        if _holders == 0:
            _saved_interval = sys.getswitchinterval()
            if _saved_interval > SWITCH_INTERVAL_S:
                sys.setswitchinterval(SWITCH_INTERVAL_S)
            # Someone else (an embedding application) may already manage a frozen set: leave it theirs.
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                sys.setswitchinterval(_saved_interval)
                if _froze:
                    gc.unfreeze()
                    _froze = False
                    # What became garbage while frozen (the previous sync's leftovers, the state this
                    # sync held to its end) now sits in the oldest generation, which the collector
                    # visits only when it has grown by a quarter since the last full collection: in a
                    # daemon that syncs every few minutes that is never, and the process grew ~0.35 MB
                    # per sync. One full collection per sync, after the work, keeps it flat.
                    gc.collect()
