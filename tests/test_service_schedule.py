"""The daemon's schedules with their production values, against the sandbox tenant over real TLS: Hello
backoff, poll cadence and error backoff, heartbeat intervals and failures, FinishTask and upload retries,
slots, fatal codes.

Every wait goes through the daemon's timer; these tests use a recording timer that sleeps a few
milliseconds while advancing its clock by the full amount. So the assertions are exact (the daemon asked
for 1 s, 2 s, 4 s, ... 300 s) and do not depend on how loaded the machine is, and minutes of backoff take
milliseconds."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from connector.service.testing_app import RecordingTimer, ToyState, user_res
from tests import service_support
from tests.service_support import Starter, TenantMaker, code_of, eventually, member_ent, metric

new_tenant = service_support.new_tenant  # fixtures
start = service_support.start


def fast_timer() -> RecordingTimer:
    """Real sleeps of at most 20 ms, whatever the daemon asks for."""
    return RecordingTimer(scale=1.0, floor=0.002, cap=0.02)


# ---------------------------------------------------------------------------------------------- hello


async def test_hello_backs_off_from_1s_doubling_to_5_minutes(start: Starter, new_tenant: TenantMaker) -> None:
    timer = fast_timer()
    tenant = await new_tenant()
    tenant.fail_rpc("Hello", times=10)
    run = await start(tenant=tenant, timer=timer, wait_hello=False)
    await eventually(lambda: timer.of("hello_backoff"))
    assert not run.health.ready
    await tenant.wait_hello(within=10)
    assert timer.of("hello_backoff") == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert run.rpc_codes["Hello"] == ["UNAVAILABLE"] * 10 + ["OK"]
    await eventually(lambda: run.health.ready)
    assert await run.stopped() == 0


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, 16),
        (grpc.StatusCode.PERMISSION_DENIED, 7),
        (grpc.StatusCode.INVALID_ARGUMENT, 3),
        (grpc.StatusCode.UNIMPLEMENTED, 12),
        (grpc.StatusCode.FAILED_PRECONDITION, 9),
        (grpc.StatusCode.NOT_FOUND, 5),
    ],
)
async def test_fatal_hello_codes_stop_with_that_exit_code(
    start: Starter, new_tenant: TenantMaker, code: grpc.StatusCode, exit_code: int
) -> None:
    tenant = await new_tenant()
    tenant.fail_rpc("Hello", times=None, code=code, message="connector is disabled")
    run = await start(tenant=tenant, timer=fast_timer(), wait_hello=False)
    assert await asyncio.wait_for(run.task, 5) == exit_code
    line = run.stderr.getvalue()
    assert line == f"error: ConductorOne refused the connector: {code.name}: connector is disabled\n"
    assert run.timer is not None and run.timer.of("hello_backoff") == []  # not retried


async def test_other_hello_errors_are_retried(start: Starter, new_tenant: TenantMaker) -> None:
    timer = fast_timer()
    tenant = await new_tenant()
    tenant.fail_rpc("Hello", times=2, code=grpc.StatusCode.INTERNAL)
    tenant.fail_rpc("Hello", times=1, code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    run = await start(tenant=tenant, timer=timer, wait_hello=False)
    await tenant.wait_hello(within=10)
    assert run.rpc_codes["Hello"] == ["INTERNAL", "INTERNAL", "RESOURCE_EXHAUSTED", "OK"]
    assert timer.of("hello_backoff") == [1, 2, 4]


async def test_refused_credentials_at_start_exit_16_with_one_line(
    start: Starter, new_tenant: TenantMaker
) -> None:
    tenant = await new_tenant()
    old_secret = tenant.client_secret
    tenant.rotate_secret()  # the daemon still holds the old, now unknown, secret
    run = await start(tenant=tenant, wait_hello=False, env={"BATON_CLIENT_SECRET": old_secret})
    assert await asyncio.wait_for(run.task, 5) == 16
    out = run.stderr.getvalue()
    assert out.count("\n") == 1 and "UNAUTHENTICATED" in out and "401" in out
    assert old_secret not in out and old_secret.rsplit(":", 1)[1][:20] not in out
    # Refused once, credentials re-read once (nothing changed), refused again: then fatal.
    assert [r.ok for r in tenant.tenant.token_requests] == [False, False]


async def test_unreachable_tenant_is_retried_and_reported_not_ready(
    start: Starter, new_tenant: TenantMaker
) -> None:
    timer = fast_timer()
    tenant = await new_tenant()
    await tenant.close()
    run = await start(tenant=tenant, timer=timer, wait_hello=False)
    await eventually(lambda: len(timer.of("hello_backoff")) >= 4)
    assert not run.task.done()  # the Go daemon would have exited
    assert timer.of("hello_backoff")[:4] == [1, 2, 4, 8]
    assert not run.health.ready and run.health.not_ready_reason() == "bootstrap hello not done"
    assert "UNAVAILABLE" in run.health.details().get("tenant_error", "")
    assert await run.stopped() == 0


# ---------------------------------------------------------------------------------------------- polling


async def test_poll_errors_back_off_n_squared_up_to_60s_and_reset_on_success(start: Starter) -> None:
    timer = fast_timer()
    run = await start(timer=timer)
    run.tenant.fail_rpc("GetTask", times=9)
    await eventually(lambda: run.rpc_codes["GetTask"].count("UNAVAILABLE") == 9)
    await run.tenant.wait_for(lambda: run.rpc_codes["GetTask"][-1] == "OK")
    assert timer.of("poll_error") == [1, 4, 9, 16, 25, 36, 49, 60, 60]
    assert "GetTask" in run.health.details().get("tenant_error", "") or run.health.ready
    # A success resets the count: the next failures start again at 1 s.
    run.tenant.fail_rpc("GetTask", times=2)
    await eventually(lambda: run.rpc_codes["GetTask"].count("UNAVAILABLE") == 11)
    await run.tenant.wait_for(lambda: run.rpc_codes["GetTask"][-1] == "OK")
    assert timer.of("poll_error")[9:] == [1, 4]
    await eventually(lambda: run.health.ready)


@pytest.mark.parametrize(
    ("next_poll", "expected"),
    [
        (0.0, 1.0),  # "poll again at once": 1 s (the Go daemon spins)
        (None, 1.0),  # nothing said: 1 s
        (0.3, 0.3),  # honoured
        (42.0, 42.0),
        (1000.0, 300.0),  # capped at 5 minutes
        (0.001, 0.05),  # absurdly small values are raised to 50 ms
    ],
)
async def test_next_poll_is_honoured_with_1s_default_and_5_minute_cap(
    start: Starter, next_poll: float | None, expected: float
) -> None:
    timer = fast_timer()
    run = await start(timer=timer, next_poll=next_poll)
    await eventually(lambda: len(timer.of("poll")) >= 5)
    assert set(timer.of("poll")[1:5]) == {expected}
    # No poll without its wait: a tenant saying 0 gets no spin.
    polls = len(run.tenant.tenant.polls)
    assert polls <= len(timer.of("poll")) + 1


async def test_a_slot_is_taken_before_polling(start: Starter) -> None:
    gate = asyncio.Event()  # grants wait until it opens
    run = await start(env={"BATON_TASK_CONCURRENCY": "1"}, state=ToyState(gate=gate))
    first = run.tenant.enqueue_grant(member_ent("eng"), user_res("dave", "Dave"))
    second = run.tenant.enqueue_grant(member_ent("ops"), user_res("dave", "Dave"))
    await run.tenant.wait_for(lambda: run.tenant.tenant.tasks[first].state == "running")
    polls_at_start = len(run.tenant.tenant.polls)
    await asyncio.sleep(0.3)  # six poll intervals
    assert len(run.tenant.tenant.polls) == polls_at_start  # no poll while the only slot is busy
    assert run.tenant.tenant.tasks[second].state == "pending"
    gate.set()
    await run.tenant.wait_finished(second, within=5)


async def test_concurrency_slots_run_tasks_in_parallel(start: Starter) -> None:
    gate = asyncio.Event()
    run = await start(env={"BATON_TASK_CONCURRENCY": "3"}, state=ToyState(gate=gate))
    dave = user_res("dave", "Dave")
    tids = [run.tenant.enqueue_grant(member_ent(g), dave) for g in ("eng", "ops", "sales")]
    await eventually(lambda: run.state.in_flight == 3)  # all three in the connector at once
    assert all(run.tenant.finish_of(t) is None for t in tids)
    gate.set()
    for tid in tids:
        assert (await run.tenant.wait_finished(tid)).outcome == "success"


# ---------------------------------------------------------------------------------------------- heartbeats


async def test_heartbeat_interval_defaults_to_30s_and_is_clamped_to_1s_and_5_minutes(start: Starter) -> None:
    timer = fast_timer()
    run = await start(timer=timer, state=ToyState(list_delay=30), next_heartbeat=5.0)
    tid = run.tenant.enqueue_sync()
    await run.tenant.wait_for(lambda: run.tenant.tenant.tasks[tid].heartbeats)
    for next_heartbeat, expected in [(5.0, 5.0), (0.0, 30.0), (None, 30.0), (0.2, 1.0), (1000.0, 300.0)]:
        run.tenant.tenant.next_heartbeat = next_heartbeat
        mark = len(timer.of("heartbeat"))
        await eventually(lambda mark=mark: len(timer.of("heartbeat")) >= mark + 2)
        assert timer.of("heartbeat")[-1] == expected, (next_heartbeat, timer.of("heartbeat"))
    await run.tenant.tenant.cancel_task(tid)
    rec = await run.tenant.wait_finished(tid)
    assert (code_of(rec), rec.non_retryable) == ("CANCELLED", False)


async def test_nine_consecutive_heartbeat_failures_cancel_the_sync(start: Starter) -> None:
    timer = fast_timer()
    run = await start(timer=timer, state=ToyState(list_delay=30), next_heartbeat=2.0)
    # The first heartbeat passes (else the task is abandoned); then 8 failures, a success that resets
    # the count, and 9 failures in a row.
    run.tenant.tenant.script_heartbeats("o" + "x" * 8 + "o" + "x" * 20)
    tid = run.tenant.enqueue_sync()
    rec = await run.tenant.wait_finished(tid)
    assert (code_of(rec), rec.non_retryable) == ("CANCELLED", False)
    assert "task failed heartbeat (9 consecutive failures)" in rec.status_message
    beats = [t for t, _ in run.tenant.tenant.heartbeat_log if t == tid]
    assert len(beats) == 1 + 8 + 1 + 9
    # A failed heartbeat keeps the previous interval.
    assert timer.of("heartbeat") == [2.0] * 18
    assert run.tenant.uploads == []


# ---------------------------------------------------------------------------------------------- FinishTask


async def test_finish_task_is_retried_for_two_minutes_on_unavailable_then_given_up(start: Starter) -> None:
    timer = RecordingTimer(scale=0.0, floor=0.001, cap=0.001)
    run = await start(timer=timer)
    run.tenant.fail_rpc("FinishTask", times=None)
    tid = run.tenant.enqueue_grant(member_ent("eng"), user_res("dave", "Dave"))
    await eventually(
        lambda: metric(run.metrics, "baton_tasks_finished_total", task_type="grant", outcome="success")
    )
    waits = timer.of("finish_retry")
    assert waits[:5] == [1, 2, 4, 8, 15] and set(waits[4:-1]) == {15}
    assert 119 < sum(waits) <= 120  # the whole 2-minute window, not a second more
    assert run.rpc_codes["FinishTask"] == ["UNAVAILABLE"] * (len(waits) + 1)
    assert run.tenant.finish_of(tid) is None
    assert metric(run.metrics, "baton_finish_task_retries_total") == len(waits)


async def test_finish_task_is_retried_on_deadline_but_not_on_other_errors(start: Starter) -> None:
    timer = fast_timer()
    run = await start(timer=timer)
    run.tenant.fail_rpc("FinishTask", times=2, code=grpc.StatusCode.DEADLINE_EXCEEDED)
    tid = run.tenant.enqueue_grant(member_ent("eng"), user_res("dave", "Dave"))
    assert (await run.tenant.wait_finished(tid)).outcome == "success"
    assert run.rpc_codes["FinishTask"] == ["DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", "OK"]
    assert timer.of("finish_retry") == [1, 2]

    run.tenant.fail_rpc("FinishTask", times=1, code=grpc.StatusCode.INTERNAL)
    lost = run.tenant.enqueue_grant(member_ent("ops"), user_res("dave", "Dave"))
    await eventually(lambda: run.rpc_codes["FinishTask"][3:] == ["INTERNAL"])
    await eventually(
        lambda: metric(run.metrics, "baton_tasks_finished_total", task_type="grant", outcome="success") == 2
    )
    assert run.rpc_codes["FinishTask"][3:] == ["INTERNAL"] and run.tenant.finish_of(lost) is None
    assert timer.of("finish_retry") == [1, 2]


# ---------------------------------------------------------------------------------------------- uploads


async def test_upload_retries_pause_nothing_then_1s(start: Starter) -> None:
    timer = fast_timer()
    run = await start(timer=timer)
    run.tenant.tenant.break_uploads(2)
    tid = run.tenant.enqueue_sync()
    assert (await run.tenant.wait_finished(tid)).outcome == "success"
    assert run.rpc_codes["UploadAsset"] == ["UNAVAILABLE", "UNAVAILABLE", "OK"]
    assert timer.of("upload_retry") == [1.0]  # none after the 1st failure, 1 s after the 2nd (as Go)
    (up,) = run.tenant.uploads
    assert up.summary is not None and up.summary.resources == 7
