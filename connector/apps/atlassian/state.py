"""Per-sync state shared by the syncers: the request pattern that keeps large organizations cheap.

The admin API has no "members of a group" listing, and per-group user searches would cost one request
chain per group (500 groups = 500+ requests). Instead one pass of `POST users/search` with
`expand: ["groups", ...]` (100 users per page) yields every user *and* every membership. That pass runs
in the background as soon as users are first listed, ahead of the sync engine, and feeds:

* the `user` listing (the engine's page token is the pass's page number);
* the `group` member grants (an index group id -> account ids, complete when the pass ends);
* the membership side of workspace role grants (see `roles.py`, which holds the role state of a sync);
* the organization role grants (the users' expanded `platformRoles`).

Everything here lives for one sync: `cleanup()` (end of every sync) drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from connector.apps.atlassian.client import PAGE_LIMIT, R_USERS_SEARCH, AdminApiError, AtlassianClient, Json
from connector.apps.atlassian.resources import missing_field
from connector.apps.atlassian.roles import PassRestarted, WorkspaceRoles

USER_EXPAND = ["groups", "productAccess", "platformRoles"]


def platform_roles(user: Json) -> list[str]:
    """The organization-level roles of an account, from `platformRoles` (role ids, or objects naming one)."""
    out: list[str] = []
    for item in user.get("platformRoles") or []:
        role = item.get("role") or item.get("roleId") if isinstance(item, dict) else item
        if isinstance(role, str) and role:
            out.append(role)
    return out


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
        self.groups_of: dict[str, list[str]] = {}  # account id -> its groups, for every account seen so far
        self.platform: dict[str, list[str]] = defaultdict(list)  # organization role -> account ids
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
            # Replaced or stopped: whoever waits on this pass must not wait forever.
            async with self._cond:
                if self.error is None and not self.done:
                    self.error = PassRestarted("the user walk was restarted")
                self._cond.notify_all()
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
            if not isinstance(account_id, str) or not account_id:
                raise missing_field(R_USERS_SEARCH, "an account", "accountId")
            first = self._seen.get(account_id)
            if first is not None:
                if first != direction:
                    self._met = True
                continue
            self._seen[account_id] = direction
            fresh.append(user)
            gids = []
            for group in user.get("groups") or []:
                gid = group.get("id") if isinstance(group, dict) else None
                if isinstance(gid, str):
                    self.members[gid].append(account_id)
                    gids.append(gid)
            self.groups_of[account_id] = gids
            for role in platform_roles(user):
                self.platform[role].append(account_id)
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

    async def finished(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.done or self.error is not None)
            if self.error is not None:
                raise self.error

    async def memberships(self) -> dict[str, list[str]]:
        await self.finished()
        return self.members

    async def platform_roles(self) -> dict[str, list[str]]:
        await self.finished()
        return self.platform

    async def until_progress(self, fetched: int) -> None:
        """Wait until more pages than `fetched` are in (or the pass ended); raises the pass's error."""
        async with self._cond:
            await self._cond.wait_for(lambda: self.fetched > fetched or self.done or self.error is not None)
            if self.error is not None:
                raise self.error

    def cancel(self) -> None:
        self._task.cancel()


class SyncState:
    def __init__(
        self,
        client: AtlassianClient,
        *,
        verify_direct_roles: bool = True,
        remembered_roles: dict[str, set[str]] | None = None,
        expect_grants: bool = False,
        expect_entitlements: bool = True,
    ) -> None:
        self._client = client
        self.user_pass: UserPass | None = None
        # While the user walk runs, role work leaves four request slots free: the two ends of the walk and
        # the API-token listing are chains of dependent requests (the critical path of a sync) and must
        # never queue behind it. Once the walk is done, role work may use every slot.
        self._narrow = asyncio.Semaphore(max(1, client.concurrency - 4))
        self._wide = asyncio.Semaphore(max(1, client.concurrency))
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.roles = WorkspaceRoles(
            client,
            slot=self.slot,
            user_pass=self.ensure_user_pass,
            counters=self.counters,
            verify_direct=verify_direct_roles,
            remembered=remembered_roles,
            prefetch=expect_grants,
            discover_early=expect_entitlements,
        )

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        upass = self.user_pass
        walking = upass is None or (not upass.done and upass.error is None)
        async with self._narrow if walking else self._wide:
            yield

    def ensure_user_pass(self, restart: bool = False) -> UserPass:
        current = self.user_pass
        if current is None or restart or current.failed:
            if current is not None:
                current.cancel()
            current = self.user_pass = UserPass(self._client)
            self.counters["user_passes"] += 1
        return current

    async def memberships(self) -> dict[str, list[str]]:
        while True:
            try:
                return await self.ensure_user_pass().memberships()
            except PassRestarted:
                continue  # a newer pass has taken over: wait for that one

    async def platform_roles(self) -> dict[str, list[str]]:
        """Organization role -> holders, from the user walk (waits for it to end)."""
        while True:
            try:
                return await self.ensure_user_pass().platform_roles()
            except PassRestarted:
                continue

    @property
    def active(self) -> bool:
        return self.user_pass is not None or self.roles.active or bool(self.counters)

    def snapshot(self) -> dict[str, int]:
        out = dict(self.counters)
        if self.user_pass is not None:
            out["user_pages"] = self.user_pass.fetched
            out["users_seen"] = self.user_pass.users_seen
            out["user_walk_requests"] = self.user_pass.requests
            out["user_walks"] = self.user_pass.walks
        return out

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = self.roles.tasks()
        for task in tasks:
            task.cancel()
        if self.user_pass is not None:
            self.user_pass.cancel()
            tasks.append(self.user_pass._task)
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
