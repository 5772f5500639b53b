"""Heartbeats never take a task down: odd failures of the heartbeat RPC count as failed heartbeats, and
the task still ends with exactly one FinishTask."""

from __future__ import annotations

import asyncio

from connector.service.testing_app import ToyState
from tests.service_support import Starter, TenantMaker, metric, new_tenant, start

__all__ = ["new_tenant", "start"]


async def test_heartbeats_with_unsendable_tokens_fail_and_the_sync_still_finishes_once(
    start: Starter, new_tenant: TenantMaker
) -> None:
    tenant = await new_tenant(next_poll=0.05, next_heartbeat=0.05)
    gate = asyncio.Event()
    run = await start(tenant=tenant, state=ToyState(gate=gate))  # the listings wait for the gate
    tid = tenant.enqueue_sync()
    beats = tenant.tenant.tasks[tid].heartbeats
    await tenant.wait_for(lambda: beats)
    # The next three tokens hold a newline: grpc refuses to send them (not an AioRpcError), and the
    # tokens expire at once, so every RPC asks for a new one.
    tenant.tenant.corrupt_tokens(3)
    tenant.tenant.revoke_tokens()
    await tenant.wait_for(lambda: tenant.tenant._corrupt_tokens == 0 and tenant.tenant.token_requests)
    mark = len(beats)
    await tenant.wait_for(lambda: len(beats) >= mark + 2)  # heartbeats go on after the odd failures
    gate.set()
    rec = await tenant.wait_finished(tid)
    assert rec.outcome == "success"
    await run.stopped()
    assert [f.task_id for f in tenant.finishes].count(tid) == 1
    assert metric(run.metrics, "baton_tenant_rpcs_total", method="Heartbeat", code="INTERNAL") >= 1
