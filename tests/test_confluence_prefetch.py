"""Grants read ahead while resources are listed (prefetch.py): same grants, no extra requests in a full
sync, bounded waste when grants are never asked for, errors on the call that takes them, fresh reads
after provisioning, and the user listing read ahead one round at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

from connector.apps.confluence_datacenter.connector import ConfluenceConnector
from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import grant_pb2
from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.server import PageCaps, SandboxConfig
from connector.sdk import model
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncOptions, run_sync
from tests.test_confluence_support import TINY_CAPS, expected_grant_ids, running, sync_all, user_id, user_ids

MEMBERS = "GET /rest/api/group/*/member"
PERMISSIONS = "GET /rest/api/space/*/permissions"


async def _list_groups_and_spaces(connector: ConfluenceConnector) -> None:
    for syncer in connector.syncers()[1:]:
        token = ""
        while True:
            page = await syncer.list(None, token)
            token = page.next_token
            if not token:
                break


async def _settle(connector: ConfluenceConnector) -> None:
    """Let every read-ahead request that can start finish."""
    for _ in range(200):
        if connector.prefetch.held and not connector.prefetch.busy:
            return
        await asyncio.sleep(0.01)


async def test_read_ahead_gives_the_same_grants_with_no_extra_requests() -> None:
    data = sandbox_data.generate(users=150, groups=30, memberships=500, spaces=15, seed=5)
    # Caps below the group sizes, so groups have several member pages (read ahead: the first only).
    config = SandboxConfig(version="9.2", caps=PageCaps(user_list=20, group_member=6, space=4))
    counts = {}
    for enabled in (True, False):
        async with running("9.2", data=data, config=config) as (sandbox, connector):
            connector.prefetch.enabled = enabled
            synced = await sync_all(connector)
            assert synced.grant_ids() == expected_grant_ids(data)
            assert len(synced.grants) == len(synced.grant_ids())  # every grant exactly once
            counts[enabled] = dict(sandbox.stats.by_route)
            if enabled:
                assert connector.prefetch.taken == len(data.groups) + len(data.spaces)
            else:
                assert connector.prefetch.started == 0
    assert counts[True][MEMBERS] == counts[False][MEMBERS]
    assert counts[True][PERMISSIONS] == counts[False][PERMISSIONS] == len(data.spaces)
    assert sum(counts[True].values()) == sum(counts[False].values())


async def test_read_ahead_survives_pages_cut_short_through_the_engine(tmp_path: Path) -> None:
    data = sandbox_data.generate(users=90, groups=12, memberships=300, spaces=10, seed=8)
    config = SandboxConfig(version="9.2", caps=TINY_CAPS, short_page_every=2, latency=0.002)
    async with running("9.2", data=data, config=config) as (_, connector):
        out = tmp_path / "sync.c1z"
        await run_sync(ConnectorRuntime(connector), out, SyncOptions(concurrency=4))
        taken = connector.prefetch.taken
    with C1zReader(out) as reader:
        # Direct grants: no sources, or their own entitlement among them (expansion added others).
        grants = [
            g for g in reader.grants() if not g.sources.sources or g.entitlement.id in g.sources.sources
        ]
    ids = [g.id for g in grants]
    assert set(ids) == expected_grant_ids(data)
    assert len(ids) == len(set(ids))
    assert taken > 0  # the engine's grants calls really took read-ahead results


async def test_skipping_grants_turns_read_ahead_off() -> None:
    data = sandbox_data.generate(users=40, groups=10, memberships=80, spaces=6, seed=2)
    for flag in ("--skip-grants", "--skip-entitlements-and-grants"):
        async with running("9.2", data=data, args=(flag,)) as (sandbox, connector):
            await _list_groups_and_spaces(connector)
            await asyncio.sleep(0.05)
            assert sandbox.stats.by_route[MEMBERS] == 0
            assert sandbox.stats.by_route[PERMISSIONS] == 0


async def test_unused_read_ahead_is_bounded_and_dropped_at_cleanup() -> None:
    data = sandbox_data.generate(users=40, groups=25, memberships=80, spaces=6, seed=2)
    async with running("9.2", data=data) as (sandbox, connector):
        connector.prefetch.limit = 5
        await _list_groups_and_spaces(connector)
        await _settle(connector)
        # Nobody asked for grants: exactly `limit` requests were made ahead, then it waited.
        assert sandbox.stats.by_route[MEMBERS] + sandbox.stats.by_route[PERMISSIONS] == 5
        await connector.cleanup()
        await asyncio.sleep(0.05)
        assert sandbox.stats.by_route[MEMBERS] + sandbox.stats.by_route[PERMISSIONS] == 5
        assert connector.prefetch.held == 0


async def test_a_group_gone_before_its_read_ahead_request_is_counted_once_not_failed() -> None:
    data = sandbox_data.generate(users=40, groups=8, memberships=60, spaces=3, seed=4)
    config = SandboxConfig(version="9.2", latency=0.2)
    async with running("9.2", data=data, config=config) as (sandbox, connector):
        groups = connector.syncers()[1]
        page = await groups.list(None, "")
        assert not page.next_token
        # The read-ahead requests are on the wire (the server answers after 0.2 s): delete one group.
        gone = page.items[2]
        del sandbox.data.groups[gone.id.resource]
        got: dict[str, list[grant_pb2.Grant]] = {}
        for res in page.items:
            got[res.id.resource] = list((await groups.grants(res, "")).items)
        counters = connector.sync_counters()
        requests = sandbox.stats.by_route[MEMBERS]
    assert got[gone.id.resource] == []
    assert counters["groups_vanished"] == 1
    for res in page.items:
        if res.id != gone.id:
            members = {g.principal.id.resource for g in got[res.id.resource]}
            assert members == {user_id(data, m) for m in data.groups[res.id.resource].members}
    assert requests == len(page.items)  # the failed read ahead was not fetched again


async def test_provisioning_drops_what_was_read_ahead_for_that_group() -> None:
    data = sandbox_data.generate(users=40, groups=6, memberships=40, spaces=3, seed=6)
    async with running("9.2", data=data) as (_, connector):
        groups = connector.syncers()[1]
        users = connector.syncers()[0]
        page = await groups.list(None, "")
        await _settle(connector)
        group = page.items[0]
        outsider = next(u for u in data.users if u not in data.groups[group.id.resource].members)
        outsider_id = user_id(data, outsider)
        user = await users.get(model.resource_id("user", outsider_id), None)  # type: ignore[attr-defined]
        entitlement = model.assignment_entitlement(group, "member")
        await groups.grant(user, entitlement)  # type: ignore[attr-defined]
        members = {g.principal.id.resource for g in (await groups.grants(group, "")).items}
    assert outsider_id in members  # not the member list read before the change


async def test_user_listing_reads_one_round_ahead_and_fetches_each_page_once() -> None:
    # 9.x gives totals, so every page offset is known after the first: with server-cut pages the
    # listing must still return every user exactly once, in order, and never ask for a page twice
    # beyond the pages a cut page made it re-fetch.
    data = sandbox_data.generate(users=700, groups=4, memberships=20, spaces=2, seed=9)
    config = SandboxConfig(version="9.2", caps=PageCaps(user_list=9, admin_active=50), latency=0.002)
    async with running("9.2", data=data, config=config) as (sandbox, connector):
        users = connector.syncers()[0]
        seen: list[str] = []
        token = ""
        calls = 0
        while True:
            page = await users.list(None, token)
            calls += 1
            seen.extend(r.id.resource for r in page.items)
            # One round per call: never more than (first page +) `concurrency` pages of people.
            assert len(page.items) <= 9 * (connector.client.concurrency + 1)
            token = page.next_token
            if not token:
                break
        requests = sandbox.stats.by_route["GET /rest/api/user/list"]
    assert seen == user_ids(data)
    pages = -(-len(data.users) // 9)
    assert calls >= pages // (connector.client.concurrency + 1)
    assert requests == pages  # read ahead never fetched a page that was not needed


async def test_a_group_asked_for_before_its_turn_is_fetched_once() -> None:
    data = sandbox_data.generate(users=40, groups=12, memberships=80, spaces=2, seed=3)
    async with running("9.2", data=data) as (sandbox, connector):
        connector.prefetch.limit = 3
        groups = connector.syncers()[1]
        page = await groups.list(None, "")
        # Asked in reverse: the last groups are still queued (limit 3), so their callers fetch them and
        # the read-ahead must not fetch them again when their turn comes.
        got = {}
        for res in reversed(page.items):
            got[res.id.resource] = {g.principal.id.resource for g in (await groups.grants(res, "")).items}
        await _settle(connector)
        requests = sandbox.stats.by_route[MEMBERS]
    assert got == {name: {user_id(data, m) for m in g.members} for name, g in data.groups.items()}
    assert requests == len(data.groups)
