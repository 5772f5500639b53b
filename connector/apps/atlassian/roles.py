"""Workspace roles of one sync: which roles each workspace has, and who holds them (and how).

The admin API has no "roles of a workspace" listing and no bulk "direct holders of a role" query. What it
has, and what this module combines:

* `GET groups/{id}/role-assignments`: the roles a group holds, per workspace, spelled as Atlassian spells
  them. Read for every group whose `counts.resources` is not 0 (from the group listing): this gives the
  group grants of every workspace and discovers roles held by groups, whatever the product.
* `GET users/count` filtered by workspace, with and without the roles we know: when more accounts hold
  *some* role on a workspace than hold a known one, someone holds a role we do not know yet. Only then are
  the workspace's holders listed and the unexplained accounts' role assignments read, which names the
  role. Entitlements of a workspace = the fixed roles every workspace offers (`resources.FIXED_ROLES`,
  as ConductorOne's Go connector) + roles seen in data, so a role missing from both still syncs.
* The roles worth searching are the product's (`resources.PRODUCT_ROLES`) and those seen in data. For
  the rest of the fixed roles, one `GET users/count` per workspace (filtered by all of them) says whether
  anyone holds any of them; only then are their holders searched.
* `POST users/search {resourceIds, roleIds}` per (workspace, role): who holds the role. Whether this
  includes holders through a group is not documented, so the answer is used in a way that is right
  either way: an account that is not in any group holding the role holds it directly; an account that
  is (ambiguous) is checked with `GET users/{id}/role-assignments`, whose `roleAssignmentMethods` say
  `direct` or `group_direct`. One request per ambiguous account (all its workspaces at once); that is
  the price of exact direct grants, and `--verify-direct-roles=false` turns it off (such accounts then
  get only the group's derived grant).

Requests are made when the sync needs them: role discovery (group role assignments, counts) once both the
group and the workspace listings are done (entitlements need it). Holder searches and direct-role checks
are for grants: they start right after discovery (overlapping the user walk) when the sync is expected to
list grants, else on the first grant listing, so that a sync that skips grants never makes them (see
`Shared.expect_grants`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Coroutine, Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from connector.apps.atlassian.client import PAGE_LIMIT, AdminApiError, AtlassianClient, Json
from connector.apps.atlassian.resources import FIXED_ROLES, roles_for
from connector.ops.logging import get_logger

log = get_logger("connector.apps.atlassian.roles")

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# Id-list filters take at most 10 values (spec A.2); a workspace with more known roles skips the count check.
MAX_FILTER_IDS = 10
DIRECT = "direct"

Slot = Callable[[], AbstractAsyncContextManager[None]]


class PassRestarted(RuntimeError):
    """The user walk was replaced by a new one (or stopped): ask for the current walk again."""


class Walk(Protocol):
    """What role resolution needs from the user walk (`state.UserPass`): each account's groups, as soon
    as the walk has seen the account."""

    fetched: int
    done: bool
    groups_of: dict[str, list[str]]

    async def until_progress(self, fetched: int) -> None: ...


# (workspace id, role) -> how it was assigned; an empty list means "held, method not reported".
Assignments = dict[tuple[str, str], list[str]]


def assignment_roles(item: Json) -> dict[str, list[str]]:
    """role -> assignment methods of one role-assignment item.

    Users report `roleAssignments: [{role, roleAssignmentMethods}]` (and the deprecated `roles`); groups
    report plain `roles` (a group's roles are always its own).
    """
    out: dict[str, list[str]] = {}
    for ra in item.get("roleAssignments") or []:
        if isinstance(ra, dict) and isinstance(ra.get("role"), str) and ra["role"]:
            methods = ra.get("roleAssignmentMethods") or []
            out.setdefault(ra["role"], []).extend(m for m in methods if isinstance(m, str))
    for role in item.get("roles") or []:
        if isinstance(role, str) and role:
            out.setdefault(role, [])
    return out


def is_direct(methods: list[str] | None) -> bool:
    """Held directly. A role reported without methods (an older answer) counts as direct: showing a grant
    that is also inherited is safer than hiding one that would survive removal from the group."""
    return methods is not None and (not methods or DIRECT in methods)


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Failures are re-raised to whoever awaits; this only keeps asyncio from logging "never retrieved".
    if not task.cancelled():
        task.exception()


@dataclass
class RoleHolders:
    """Holders of one role on one workspace: accounts holding it directly, and groups holding it."""

    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    via_groups_only: int = 0  # accounts the search reported that hold the role only through a group


class WorkspaceRoles:
    def __init__(
        self,
        client: AtlassianClient,
        *,
        slot: Slot,
        user_pass: Callable[[], Walk],
        counters: defaultdict[str, int],
        verify_direct: bool = True,
        remembered: dict[str, set[str]] | None = None,
        prefetch: bool = False,
        discover_early: bool = True,
    ) -> None:
        self._client = client
        self._slot = slot
        self._user_pass = user_pass
        self.counters = counters
        self.verify_direct = verify_direct
        # Whether this sync is expected to list grants: then role holders are read as soon as a
        # workspace's roles are known, overlapping the user walk, instead of on the first grant listing.
        self.prefetch = prefetch
        # Whether entitlements are expected (not a resources-only sync): then roles are discovered as
        # soon as the listings allow, else only if an entitlement listing asks.
        self.discover_early = discover_early
        # Roles found after a sync had listed the workspace's entitlements are written to `remembered`
        # (kept by the connector across syncs) and offered from the next sync on; this sync keeps the
        # snapshot it started with, so that its role lists (and grant page tokens) never shift.
        self.remembered = remembered if remembered is not None else {}
        self._remembered_at_start = {ws: frozenset(r) for ws, r in self.remembered.items()}
        self.types: dict[str, str] = {}  # workspace id -> product type key
        self._workspaces_listed = False
        self._role_groups: set[str] = set()  # groups that may hold roles (counts.resources != 0)
        self._groups_listed = False
        self._group_roles: asyncio.Task[dict[str, dict[str, set[str]]]] | None = None
        # workspace -> role -> groups holding it; set (with the event) once every role-holding group is read
        self._by_ws: dict[str, dict[str, set[str]]] | None = None
        self._group_roles_known = asyncio.Event()
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._extra: dict[str, set[str]] = defaultdict(set)  # workspace -> roles discovered from users
        self._resolved: dict[tuple[str, str], asyncio.Task[RoleHolders]] = {}
        self._rare: dict[str, asyncio.Task[int | None]] = {}  # workspace -> holders of its unlikely roles
        # Role assignments of single accounts: futures filled by a few workers from a queue (thousands of
        # accounts may be asked for at once; a task each would hold a coroutine per waiting account).
        self._assignments: dict[str, asyncio.Future[Assignments]] = {}
        self._wanted: asyncio.Queue[str] = asyncio.Queue()
        self._readers: list[asyncio.Task[None]] = []
        self._late_logged: set[tuple[str, str]] = set()

    # --- what the listings tell us ---------------------------------------------------------------------

    def note_workspace(self, ws_id: str, type_key: str) -> None:
        self.types.setdefault(ws_id, type_key)

    def workspaces_listed(self) -> None:
        self._workspaces_listed = True
        if self.prefetch:
            # The product's own roles need no discovery: their holders can be searched right away.
            for ws in self.types:
                for role in self._table(ws):
                    self._resolve_task(ws, role)
        self._maybe_start()

    def note_groups(self, groups: list[Json], *, last: bool) -> None:
        for group in groups:
            gid = group.get("id")
            if not isinstance(gid, str) or not gid:
                continue
            if _resource_count(group) != 0:  # unknown (no counts) is read too
                self._role_groups.add(gid)
        if last:
            self._groups_listed = True
            self._maybe_start()

    def _maybe_start(self) -> None:
        # Both listings done (a full sync's resources phase): discover roles now, overlapping the user
        # walk, so that the entitlements phase finds them ready.
        if self.discover_early and self._workspaces_listed and self._groups_listed:
            for ws in self.types:
                self._check_task(ws)

    # --- roles of a workspace --------------------------------------------------------------------------

    def _table(self, ws: str) -> tuple[str, ...]:
        return roles_for(self.types.get(ws, ""))

    def _group_holders(self, ws: str) -> dict[str, set[str]]:
        return self._by_ws.get(ws, {}) if self._by_ws is not None else {}

    def likely_roles(self, ws: str) -> tuple[str, ...]:
        """Roles someone may well hold: the product's (table order), then roles seen in data (sorted)."""
        base = self._table(ws)
        seen = set(self._group_holders(ws)) | self._extra.get(ws, set())
        seen |= self._remembered_at_start.get(ws, frozenset())
        return base + tuple(sorted(seen - set(base)))

    def known_roles(self, ws: str) -> tuple[str, ...]:
        """The roles a workspace offers: the fixed ones (their order), then any other likely one (sorted)."""
        return FIXED_ROLES + tuple(sorted(set(self.likely_roles(ws)) - set(FIXED_ROLES)))

    async def roles_of(self, ws: str, type_key: str) -> tuple[str, ...]:
        self.note_workspace(ws, type_key)
        await asyncio.shield(self._check_task(ws))
        return self.known_roles(ws)

    def _group_roles_task(self) -> asyncio.Task[dict[str, dict[str, set[str]]]]:
        task = self._group_roles
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._group_roles = asyncio.create_task(
                self._load_group_roles(), name="atlassian-grp-roles"
            )
            task.add_done_callback(_retrieve)
        return task

    def _check_task(self, ws: str) -> asyncio.Task[None]:
        return _cached(self._checks, ws, lambda: self._check(ws))

    async def _load_group_roles(self) -> dict[str, dict[str, set[str]]]:
        if self._groups_listed:
            gids = sorted(self._role_groups)
        else:
            # Groups are not (or not yet) listed in this sync: find the role-holding ones ourselves.
            found = await self._client.search_groups({"limit": PAGE_LIMIT, "expand": ["counts.resources"]})
            gids = sorted(g["id"] for g in found if isinstance(g.get("id"), str) and _resource_count(g) != 0)
        results = await asyncio.gather(*(self._read_group_roles(g) for g in gids))
        by_ws: dict[str, dict[str, set[str]]] = {}
        for gid, items in zip(gids, results, strict=True):
            for item in items:
                ws = item.get("resourceId")
                if not isinstance(ws, str):
                    continue
                for role in assignment_roles(item):
                    by_ws.setdefault(ws, {}).setdefault(role, set()).add(gid)
        self.counters["role_groups_read"] += len(gids)
        self._by_ws = by_ws
        self._group_roles_known.set()
        return by_ws

    async def _read_group_roles(self, gid: str) -> list[Json]:
        async with self._slot():
            try:
                return await self._client.all_group_role_assignments(gid)
            except AdminApiError as err:
                if err.http_status == 404:
                    return []  # deleted since it was listed
                raise

    async def _check(self, ws: str) -> None:
        await self._discover(ws)
        if self.prefetch:
            for role in self.known_roles(ws):
                self._resolve_task(ws, role)

    async def _discover(self, ws: str) -> None:
        """Count check: does anyone hold a role on `ws` that we do not know? If so, find out which."""
        await asyncio.shield(self._group_roles_task())
        known = self.likely_roles(ws)
        if len(known) > MAX_FILTER_IDS:
            self.counters["role_checks_skipped"] += 1
            return
        everyone, covered = await asyncio.gather(
            self._count({"resourceIds": [ws]}), self._count({"resourceIds": [ws], "roleIds": list(known)})
        )
        if everyone is None or covered is None or everyone <= covered:
            return
        # Rare: list who holds anything here, take those no known role explains, and read their roles.
        self.counters["role_discovery_walks"] += 1
        async with self._slot():
            anyone = await self._client.search_users({"resourceIds": [ws], "limit": PAGE_LIMIT})
        async with self._slot():
            explained = await self._client.search_users(
                {"resourceIds": [ws], "roleIds": list(known), "limit": PAGE_LIMIT}
            )
        explained_ids = {u.get("accountId") for u in explained}
        unexplained = [
            u["accountId"]
            for u in anyone
            if isinstance(u.get("accountId"), str) and u["accountId"] not in explained_ids
        ]
        # Reading them adds the roles they reveal to this workspace (see _note_roles).
        await asyncio.gather(*(asyncio.shield(self._assignments_of(a)) for a in unexplained))
        new = sorted(self._extra[ws] - set(known))
        if new:
            self.counters["roles_discovered"] += len(new)
            log.info("workspace_roles_discovered", workspace=ws, roles=",".join(new))

    async def _count(self, filters: Json) -> int | None:
        self.counters["role_counts"] += 1
        async with self._slot():
            try:
                return await self._client.count_users(filters)
            except AdminApiError as err:
                if err.http_status in (400, 404, 405):
                    return None  # no count for this filter here: no check
                raise

    # --- holders -----------------------------------------------------------------------------------

    def prefetch_holders(self) -> None:
        """Resolve every (workspace, role) whose roles are known, in the background.

        Called by the first grant listing of any type (the grants phase has begun): the holders of all
        roles are independent request chains, and the engine would otherwise ask for them one role at a
        time, after the group grants it happens to list first.
        """
        for ws, task in list(self._checks.items()):
            if task.done() and not task.cancelled() and task.exception() is None:
                for role in self.known_roles(ws):
                    self._resolve_task(ws, role)

    async def holders(self, ws: str, role: str) -> RoleHolders:
        self.prefetch_holders()
        return await asyncio.shield(self._resolve_task(ws, role))

    def _resolve_task(self, ws: str, role: str) -> asyncio.Task[RoleHolders]:
        return _cached(self._resolved, (ws, role), lambda: self._resolve(ws, role))

    def _rare_task(self, ws: str) -> asyncio.Task[int | None]:
        return _cached(self._rare, ws, lambda: self._count_rare(ws))

    async def _count_rare(self, ws: str) -> int | None:
        rare = [r for r in FIXED_ROLES if r not in self.likely_roles(ws)]
        return await self._count({"resourceIds": [ws], "roleIds": rare}) if rare else 0

    async def _resolve(self, ws: str, role: str) -> RoleHolders:
        if role not in self.likely_roles(ws):
            await asyncio.shield(self._check_task(ws))  # what is likely is settled once the check is done
            if role not in self.likely_roles(ws) and await asyncio.shield(self._rare_task(ws)) == 0:
                self.counters["rare_role_searches_skipped"] += 1
                return RoleHolders()
        query: Json = {"resourceIds": [ws], "roleIds": [role], "limit": PAGE_LIMIT}
        async with self._slot():
            found = await self._client.search_users(query)
        self.counters["role_searches"] += 1
        users = [u["accountId"] for u in found if isinstance(u.get("accountId"), str)]
        # Who is ambiguous depends on which groups hold the role: wait for the group roles (read once
        # both listings are done, or by the first entitlement listing).
        await self._group_roles_known.wait()
        groups = sorted(self._group_holders(ws).get(role, ()))
        if not groups:
            return RoleHolders(users, [])
        direct, ambiguous = await self._split(users, set(groups))
        if ambiguous and self.verify_direct:
            found_roles = await asyncio.gather(*(asyncio.shield(self._assignments_of(u)) for u in ambiguous))
            direct += [u for u, a in zip(ambiguous, found_roles, strict=True) if is_direct(a.get((ws, role)))]
        elif ambiguous:
            self.counters["direct_checks_skipped"] += len(ambiguous)
        return RoleHolders(direct, groups, via_groups_only=len(users) - len(direct))

    async def _split(self, users: list[str], groups: set[str]) -> tuple[list[str], list[str]]:
        """(direct, ambiguous): accounts in none of `groups`, and accounts in one of them.

        An account's groups are known once the user walk has seen it, so this follows the walk, and the
        check of an ambiguous account starts as soon as it is known to be ambiguous, overlapping the walk.
        """
        direct: list[str] = []
        ambiguous: list[str] = []
        pending = users
        while pending:
            walk = self._user_pass()
            fetched = walk.fetched
            waiting: list[str] = []
            for account in pending:
                mine = walk.groups_of.get(account)
                if mine is None and not walk.done:
                    waiting.append(account)
                elif mine and not groups.isdisjoint(mine):
                    ambiguous.append(account)
                    if self.verify_direct:
                        self._assignments_of(account)
                else:
                    direct.append(account)  # in none of the groups (or not in the directory walk at all)
            pending = waiting
            if pending:
                try:
                    await walk.until_progress(fetched)
                except PassRestarted:
                    continue  # the walk started over: the new one reports the same accounts
        return direct, ambiguous

    def _assignments_of(self, account_id: str) -> asyncio.Future[Assignments]:
        """The role assignments of one account, read once per sync (again after a failure)."""
        fut = self._assignments.get(account_id)
        if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
            fut = self._assignments[account_id] = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_retrieve)
            self._wanted.put_nowait(account_id)
            self._readers = [r for r in self._readers if not r.done()]
            while len(self._readers) < min(self._wanted.qsize(), self._client.concurrency):
                self._readers.append(asyncio.create_task(self._reader(), name="atlassian-role-reader"))
        return fut

    async def _reader(self) -> None:
        while not self._wanted.empty():
            account_id = self._wanted.get_nowait()
            fut = self._assignments[account_id]
            if fut.done():
                continue
            try:
                result = await self._read_assignments(account_id)
            except asyncio.CancelledError:
                fut.cancel()
                raise
            except Exception as exc:  # handed to whoever waits for this account
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    async def _read_assignments(self, account_id: str) -> Assignments:
        async with self._slot():
            try:
                items = await self._client.all_user_role_assignments(account_id)
            except AdminApiError as err:
                if err.http_status == 404:
                    return {}  # the account is gone: it holds nothing
                raise
        self.counters["direct_checks"] += 1
        out: Assignments = {}
        for item in items:
            ws = item.get("resourceId")
            if not isinstance(ws, str):
                continue
            for role, methods in assignment_roles(item).items():
                out.setdefault((ws, role), []).extend(methods)
        self._note_roles(out)
        return out

    def _note_roles(self, assignments: Assignments) -> None:
        """Roles an account's assignments reveal: part of this sync while its workspace's roles are still
        being worked out, else (the entitlements may be listed already) remembered for the next sync."""
        for ws, role in assignments:
            if ws not in self.types or role in self.likely_roles(ws):
                continue
            check = self._checks.get(ws)
            if check is None or not check.done():
                self._extra[ws].add(role)
                continue
            if role in FIXED_ROLES:
                continue  # offered already; its holders are found through the count of unlikely roles
            if (ws, role) in self._late_logged:
                continue
            self._late_logged.add((ws, role))
            self.remembered.setdefault(ws, set()).add(role)
            self.counters["roles_found_late"] += 1
            log.warning("workspace_role_found_late", workspace=ws, role=role, next_sync=True)

    # --- lifecycle ---------------------------------------------------------------------------------

    def tasks(self) -> list[asyncio.Task[Any]]:
        out: list[asyncio.Task[Any]] = [
            *self._checks.values(),
            *self._resolved.values(),
            *self._rare.values(),
        ]
        out += self._readers
        if self._group_roles is not None:
            out.append(self._group_roles)
        return out

    @property
    def active(self) -> bool:
        return bool(self._checks or self._resolved or self._group_roles)


def _resource_count(group: Json) -> int | None:
    counts = group.get("counts")
    value = counts.get("resources") if isinstance(counts, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cached(
    table: dict[K, asyncio.Task[T]], key: K, make: Callable[[], Coroutine[Any, Any, T]]
) -> asyncio.Task[T]:
    """The task computing `key`, started if absent; a failed one is started again (retry on next ask)."""
    task = table.get(key)
    if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
        task = table[key] = asyncio.create_task(make())
        task.add_done_callback(_retrieve)
    return task
