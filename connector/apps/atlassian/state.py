"""Per-sync state shared by the syncers: the request pattern that keeps large organizations cheap.

The admin API has no "members of a group" listing, and per-group user searches would cost one request
chain per group (500 groups = 500+ requests). Instead one pass of `POST users/search` with
`expand: ["groups", ...]` (100 users per page) yields every user *and* every membership. That pass runs
in the background as soon as users are first listed, ahead of the sync engine, and feeds:

* the `user` listing (the engine's page token is the pass's page number);
* the `group` member grants (an index group id -> account ids, complete when the pass ends);
* the subtraction that keeps workspace grants exact (see `RoleHolders`).

Workspace roles are read per (workspace, role) with two filtered searches, users and groups holding the
role, launched together for every workspace on the first workspace grant listing.

Everything here lives for one sync: `cleanup()` (end of every sync) drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from connector.apps.atlassian.client import PAGE_LIMIT, AdminApiError, AtlassianClient, Json

USER_EXPAND = ["groups", "productAccess", "platformRoles"]


class PageGone(LookupError):
    """A page of the user pass was already handed out and freed (the engine restarted the listing)."""


class UserPass:
    """The user walk over `POST users/search`, in background tasks, from both ends when it can.

    Cursor pagination makes the walk a chain of dependent requests: 200 of them for 20,000 users. To halve
    that chain, two walks run at once, one sorted by nickname ascending and one descending, and stop when
    they have met in the middle. Meeting alone is not trusted (the server may order ties differently in
    each direction, or ignore the sort): the walks also need to have seen as many users as
    `GET users/count` reports. When either check fails they simply carry on, so the worst case is both
    walks reading everything; a walk that reaches its last page always ends the pass. Without a count (or
    for small directories) there is one ascending walk.
    """

    def __init__(self, client: AtlassianClient, *, two_ended: bool = True) -> None:
        self._client = client
        self._two_ended = two_ended
        self._pages: dict[int, tuple[list[Json], bool]] = {}
        self.fetched = 0
        self.done = False
        self.error: BaseException | None = None
        self.members: dict[str, list[str]] = defaultdict(list)
        self.users_seen = 0
        self.requests = 0
        self.walks = 0
        self.started = time.monotonic()
        self._seen: dict[str, str] = {}  # account id -> the walk that saw it first
        self._met = False
        self._total: int | None = None
        self._cond = asyncio.Condition()
        self._task = asyncio.create_task(self._run(), name="atlassian-user-pass")

    async def _run(self) -> None:
        try:
            if self._two_ended:
                self._total = await self._count()
            directions = ["asc"]
            if self._total is not None and self._total > 2 * PAGE_LIMIT:
                directions.append("desc")
            self.walks = len(directions)
            await asyncio.gather(*(self._walk(d) for d in directions))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to every waiter; the task itself ends cleanly
            async with self._cond:
                self.error = exc
                self._cond.notify_all()

    async def _count(self) -> int | None:
        try:
            count = await self._client.count_users()
        except AdminApiError:
            return None  # no count, no early stop: one walk
        finally:
            self.requests += 1
        return count

    async def _walk(self, direction: str) -> None:
        body: Json = {
            "limit": PAGE_LIMIT,
            "expand": USER_EXPAND,
            "sortBy": [{"field": "nick_name", "direction": direction}],
        }
        cursor: str | None = None
        while not self.done:
            items, cursor, _ = await self._client.users_search_page(body, cursor)
            self.requests += 1
            async with self._cond:
                # Under the lock: once one walk has handed out the last page, the other adds nothing.
                if self.done:
                    return
                fresh = self._take(items, direction)
                finished = cursor is None or (
                    self._met and self._total is not None and len(self._seen) >= self._total
                )
                if fresh or finished:
                    self._pages[self.fetched] = (fresh, not finished)
                    self.fetched += 1
                self.done = finished
                self._cond.notify_all()

    def _take(self, items: list[Json], direction: str) -> list[Json]:
        """The users of a page not seen before; records memberships and whether the walks have met."""
        fresh: list[Json] = []
        for user in items:
            account_id = user.get("accountId")
            if not isinstance(account_id, str):
                continue
            first = self._seen.get(account_id)
            if first is not None:
                if first != direction:
                    self._met = True
                continue
            self._seen[account_id] = direction
            fresh.append(user)
            for group in user.get("groups") or []:
                gid = group.get("id") if isinstance(group, dict) else None
                if isinstance(gid, str):
                    self.members[gid].append(account_id)
        self.users_seen += len(fresh)
        return fresh

    @property
    def failed(self) -> bool:
        return self.error is not None

    async def page(self, number: int) -> tuple[list[Json], bool]:
        """Users of page `number` and whether more pages follow. Earlier pages are freed."""
        async with self._cond:
            await self._cond.wait_for(lambda: number < self.fetched or self.done or self.error is not None)
            if number in self._pages:
                for old in [n for n in self._pages if n < number]:
                    del self._pages[old]
                return self._pages[number]
            if number < self.fetched:
                raise PageGone(number)
            if self.error is not None:
                raise self.error
            return [], False

    async def memberships(self) -> dict[str, list[str]]:
        async with self._cond:
            await self._cond.wait_for(lambda: self.done or self.error is not None)
            if self.error is not None:
                raise self.error
        return self.members

    def cancel(self) -> None:
        self._task.cancel()


@dataclass
class RoleHolders:
    """Who holds one role on one workspace, as the two filtered searches report it."""

    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


class SyncState:
    def __init__(self, client: AtlassianClient) -> None:
        self._client = client
        self.user_pass: UserPass | None = None
        self.workspaces: dict[str, tuple[str, ...]] = {}  # workspace id -> roles (from the listing)
        self._roles: dict[tuple[str, str], asyncio.Task[RoleHolders]] = {}
        # Role searches leave four request slots free: the two ends of the user walk and the API-token
        # listing are chains of dependent requests (the critical path of a sync) and must never queue
        # behind them.
        self._role_slots = asyncio.Semaphore(max(1, client.concurrency - 4))
        self.counters: dict[str, int] = defaultdict(int)

    def ensure_user_pass(self, restart: bool = False) -> UserPass:
        current = self.user_pass
        if current is None or restart or current.failed:
            if current is not None:
                current.cancel()
            current = self.user_pass = UserPass(self._client)
            self.counters["user_passes"] += 1
        return current

    async def memberships(self) -> dict[str, list[str]]:
        return await self.ensure_user_pass().memberships()

    def prefetch_roles(self, workspace_roles: dict[str, tuple[str, ...]]) -> None:
        for ws_id, roles in workspace_roles.items():
            for role in roles:
                key = (ws_id, role)
                if key not in self._roles:
                    self._roles[key] = asyncio.create_task(self._holders(ws_id, role), name="atlassian-role")

    async def role_holders(self, ws_id: str, roles: tuple[str, ...], role: str) -> RoleHolders:
        if (ws_id, role) not in self._roles:
            # Launch every workspace's role searches together: they are independent request chains.
            wanted = dict(self.workspaces)
            wanted.setdefault(ws_id, roles)
            self.prefetch_roles(wanted)
        task = self._roles[(ws_id, role)]
        try:
            return await asyncio.shield(task)
        except Exception:
            # A failed search is retried by the next call rather than cached for the rest of the sync.
            if task.done():
                self._roles.pop((ws_id, role), None)
            raise

    async def _holders(self, ws_id: str, role: str) -> RoleHolders:
        query: Json = {"resourceIds": [ws_id], "roleIds": [role], "limit": PAGE_LIMIT}

        async def limited(search: Callable[[Json], Awaitable[list[Json]]]) -> list[Json]:
            async with self._role_slots:
                return await search(query)

        users, groups = await asyncio.gather(
            limited(self._client.search_users), limited(self._client.search_groups)
        )
        self.counters["role_queries"] += 2
        return RoleHolders(
            users=[u["accountId"] for u in users if isinstance(u.get("accountId"), str)],
            groups=[g["id"] for g in groups if isinstance(g.get("id"), str)],
        )

    @property
    def active(self) -> bool:
        return self.user_pass is not None or bool(self._roles) or bool(self.counters)

    def snapshot(self) -> dict[str, int]:
        out = dict(self.counters)
        if self.user_pass is not None:
            out["user_pages"] = self.user_pass.fetched
            out["users_seen"] = self.user_pass.users_seen
            out["user_walk_requests"] = self.user_pass.requests
            out["user_walks"] = self.user_pass.walks
        return out

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = list(self._roles.values())
        for task in tasks:
            task.cancel()
        if self.user_pass is not None:
            self.user_pass.cancel()
            tasks.append(self.user_pass._task)
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
