"""Read-ahead of the grants phase: the first request of each listed group's and space's grants, started
while the sync is still listing resources.

Why: a sync lists every resource before it asks for any grant, and listing the users (the largest
listing, whose pages wait for the e-mail listing) leaves most connection slots idle for seconds. Group
members and space permissions are one request per group or space and make up most of a sync's requests,
so starting them as soon as a page of groups or spaces is listed keeps the slots busy.

Bounded: at most `limit` results are held (started and not yet asked for), so memory stays flat and a
sync that never asks for grants wastes at most `limit` requests. The connector turns it off when the
operator skips entitlements or grants. Each result is taken at most once; whatever the request raised
is raised by the grants call that takes it, as if that call had made the request. A key that was never
started (or was already taken) is fetched by its caller as usual.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Key = tuple[str, str]  # (kind, name), e.g. ("group", "confluence-users")
Fetch = Callable[[str], Awaitable[Any]]


class Prefetcher:
    def __init__(self, *, limit: int, in_flight: int) -> None:
        self.limit = max(1, limit)
        self.in_flight = max(1, in_flight)
        self.enabled = True
        self._fetchers: dict[str, Fetch] = {}
        self._queue: deque[Key] = deque()
        self._queued: set[Key] = set()
        self._held: dict[Key, asyncio.Task[Any]] = {}  # started, not yet taken
        self._running = 0
        self.started = 0
        self.taken = 0

    @property
    def held(self) -> int:
        """Requests started and not yet taken (finished or still on the wire)."""
        return len(self._held)

    @property
    def busy(self) -> bool:
        """A request it started is still on the wire."""
        return self._running > 0

    def register(self, kind: str, fetch: Fetch) -> None:
        self._fetchers[kind] = fetch

    def offer(self, kind: str, names: Iterable[str]) -> None:
        """Queue the first grants request of these resources (in the order given, after earlier ones)."""
        if not self.enabled or kind not in self._fetchers:
            return
        for name in names:
            key = (kind, name)
            if key not in self._queued and key not in self._held:
                self._queued.add(key)
                self._queue.append(key)
        self._pump()

    def take(self, kind: str, name: str) -> asyncio.Task[Any] | None:
        """The started request for this resource (to await), or None: then the caller fetches it itself.
        A queued request not yet started is withdrawn, so nothing is ever fetched twice."""
        key = (kind, name)
        task = self._held.pop(key, None)
        if task is None:
            self._queued.discard(key)  # left in the deque; skipped when it comes up
            return None
        self.taken += 1
        self._pump()
        return task

    def forget(self, kind: str, name: str) -> None:
        """Drop what was read ahead for one resource (its grants just changed through this connector):
        its next grants call reads the current state."""
        key = (kind, name)
        self._queued.discard(key)
        task = self._held.pop(key, None)
        if task is not None:
            task.cancel()

    def reset(self) -> None:
        """Drop everything (end of a sync, or a new one): queued keys and held results, cancelling what
        is still on the wire."""
        for task in self._held.values():
            task.cancel()
        self._held.clear()
        self._queue.clear()
        self._queued.clear()

    def _pump(self) -> None:
        while self._queue and self._running < self.in_flight and len(self._held) < self.limit:
            key = self._queue.popleft()
            if key not in self._queued:
                continue  # taken by its caller before it started
            self._queued.discard(key)
            task = asyncio.ensure_future(self._fetchers[key[0]](key[1]))
            self._held[key] = task
            self._running += 1
            self.started += 1
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running -= 1
        # Retrieved here so a result nobody takes never logs "exception was never retrieved"; the taker
        # gets the exception from the task itself.
        if not task.cancelled():
            task.exception()
        self._pump()
