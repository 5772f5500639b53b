"""Batched polling with BATON_GET_TASKS (spec §4.4) against the sandbox tenant's GetTasks."""

from __future__ import annotations

import pytest

from connector.service.scheduler import parse_go_bool
from connector.service.testing_app import RecordingTimer, ToyState, user_res
from tests import service_support
from tests.service_support import Starter, code_of, eventually, member_ent

new_tenant = service_support.new_tenant  # fixtures
start = service_support.start

GROUPS = ("eng", "ops", "sales")


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True"])
def test_get_tasks_is_enabled_by_go_bool_spellings(value: str) -> None:
    assert parse_go_bool(value)


@pytest.mark.parametrize("value", [None, "", "0", "false", "yes", "on", "tRuE"])
def test_anything_else_leaves_get_tasks_off(value: str | None) -> None:
    assert not parse_go_bool(value)


async def test_get_tasks_fills_a_local_queue_and_runs_every_task_once(start: Starter) -> None:
    run = await start(
        env={"BATON_GET_TASKS": "true", "BATON_TASK_CONCURRENCY": "2"}, state=ToyState(grant_delay=0.3)
    )
    users = [user_res(u, u.capitalize()) for u in ("alice", "bob", "carol", "dave")]
    # Five tasks for two slots: at some point one runs alone with nothing queued, and the daemon asks for
    # more while naming it.
    pairs = [(g, u) for g in GROUPS for u in users[:2]][:5]
    tids = [run.tenant.enqueue_grant(member_ent(g), u) for g, u in pairs]
    for tid in tids:
        assert (await run.tenant.wait_finished(tid)).outcome == "success"
    tenant = run.tenant.tenant
    assert "GetTask" not in run.rpc_codes and run.rpc_codes["GetTasks"]
    assert all(tenant.tasks[t].deliveries == 1 for t in tids)
    assert sorted(f.task_id for f in run.tenant.finishes) == sorted(tids)
    # low water = 2 slots, high water = 4: each request asks for 4 minus the tasks it already holds,
    # naming them so the tenant does not hand them out again.
    for req in tenant.batch_polls:
        assert req.host_id == "test-host"
        assert req.page_size == 4 - len(req.known_task_ids) >= 1
        assert set(req.known_task_ids) <= set(tids)
    assert any(req.known_task_ids for req in tenant.batch_polls)
    # Two grants at a time (the slots), although up to 4 tasks were held.
    assert run.state.max_in_flight == 2


async def test_batched_polls_keep_the_tenants_cadence(start: Starter) -> None:
    timer = RecordingTimer(scale=1.0, floor=0.002, cap=0.02)
    run = await start(env={"BATON_GET_TASKS": "1"}, timer=timer, next_poll=0.0)
    await eventually(lambda: len(run.tenant.tenant.batch_polls) >= 4)
    # next_poll 0 → the 1 s default, as for GetTask: no spinning.
    assert set(timer.of("poll")[1:4]) == {1.0}
    run.tenant.tenant.next_poll = 7.0
    mark = len(run.tenant.tenant.batch_polls)
    await eventually(lambda: len(run.tenant.tenant.batch_polls) >= mark + 3)
    assert timer.of("poll")[-1] == 7.0


async def test_tasks_received_but_not_started_are_handed_back_at_shutdown(start: Starter) -> None:
    run = await start(
        env={
            "BATON_GET_TASKS": "true",
            "BATON_TASK_CONCURRENCY": "1",
            "BATON_SHUTDOWN_GRACE_SECONDS": "10",
        },
        state=ToyState(grant_delay=0.5),
    )
    dave = user_res("dave", "Dave")
    running, queued, left = (run.tenant.enqueue_grant(member_ent(g), dave) for g in GROUPS)
    tenant = run.tenant.tenant
    await run.tenant.wait_for(lambda: tenant.tasks[running].state == "running" == tenant.tasks[queued].state)
    assert await run.stopped(within=10) == 0
    assert (run.tenant.finish_of(running) or pytest.fail("no finish")).outcome == "success"
    rec = run.tenant.finish_of(queued)
    assert rec is not None and (code_of(rec), rec.non_retryable) == ("CANCELLED", False)
    assert "not started" in rec.status_message
    assert tenant.tasks[left].state == "pending" and run.tenant.finish_of(left) is None
    assert run.state.calls == ["grant eng dave"]
