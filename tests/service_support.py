"""Shared fixtures and helpers for the service-mode tests: a sandbox tenant over real TLS and the real
daemon (`run_daemon`) around the toy connector, in process.

Test modules import the fixtures by name (`from tests.service_support import new_tenant, start`)."""

from __future__ import annotations

import asyncio
import io
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from connector.ops.health import DaemonHealth
from connector.ops.metrics import Metrics
from connector.ops.settings import BatonSettings, parse_settings
from connector.sandbox.tenant import FinishRecord, TenantHandle, start_tenant
from connector.sdk import model
from connector.service.daemon import DaemonOptions, run_daemon
from connector.service.testing_app import RecordingTimer, ToyConnector, ToyState, fast_options, group_res
from connector.service.timer import Timer


def code_of(rec: FinishRecord) -> str:
    return next(c.name for c in grpc.StatusCode if c.value[0] == rec.status_code)


def metric(metrics: Metrics, sample: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(sample, labels) or 0.0


async def eventually(predicate: Callable[[], Any], within: float = 5.0) -> Any:
    """Poll daemon-side state (health, metrics, timers), which does not wake the tenant's waiters."""
    deadline = time.monotonic() + within
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)
    return value


def member_ent(gid: str) -> Any:
    return model.assignment_entitlement(group_res(gid), "member")


def production_options(timer: Timer) -> DaemonOptions:
    """The production schedules (1 s Hello backoff doubling to 5 min, n² poll backoff to 60 s, 1 s poll
    floor, 30 s default heartbeat clamped 1 s..5 min, 2 min FinishTask window, upload retry pauses) driven
    by a recording timer, so they are asserted exactly without waiting for them."""
    return DaemonOptions(timer=timer)


def with_timer(options: DaemonOptions, timer: Timer) -> DaemonOptions:
    return replace(options, timer=timer)


@dataclass
class Run:
    tenant: TenantHandle
    state: ToyState
    metrics: Metrics
    health: DaemonHealth
    stop: asyncio.Event
    task: asyncio.Task[int]
    stderr: io.StringIO
    env: dict[str, str]
    timer: RecordingTimer | None = None

    async def stopped(self, within: float = 5.0) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, within)

    @property
    def rpc_codes(self) -> defaultdict[str, list[str]]:
        """Status codes the tenant answered, by method, in order."""
        out: defaultdict[str, list[str]] = defaultdict(list)
        for r in self.tenant.tenant.rpcs:
            out[r.method].append(r.code)
        return out


Starter = Callable[..., Awaitable[Run]]
TenantMaker = Callable[..., Awaitable[TenantHandle]]


@pytest.fixture
async def new_tenant(tmp_path: Path) -> AsyncIterator[TenantMaker]:
    """Tenants outlive the daemons (this fixture is torn down after `start`'s)."""
    tenants: list[TenantHandle] = []

    async def _new(**kwargs: Any) -> TenantHandle:
        kwargs = {"next_poll": 0.05, "next_heartbeat": 0.1, **kwargs}
        handle = await start_tenant(data_dir=tmp_path / f"tenant{len(tenants)}", **kwargs)
        tenants.append(handle)
        return handle

    yield _new
    for t in tenants:
        await t.close()


@pytest.fixture
async def start(tmp_path: Path, new_tenant: TenantMaker) -> AsyncIterator[Starter]:
    """`await start(...)`: a tenant (or the given one) and the daemon serving it, Hello done unless
    `wait_hello=False`. `timer=RecordingTimer(...)` runs the production schedules on that timer."""
    runs: list[Run] = []

    async def _start(
        *,
        env: dict[str, str] | None = None,
        state: ToyState | None = None,
        options: DaemonOptions | None = None,
        timer: RecordingTimer | None = None,
        tenant: TenantHandle | None = None,
        wait_hello: bool = True,
        **tenant_kwargs: Any,
    ) -> Run:
        if tenant is None:
            tenant = await new_tenant(**tenant_kwargs)
        full_env = {
            **tenant.env(),
            "BATON_PROVISIONING": "true",
            "BATON_HOST_ID": "test-host",
            "BATON_C1Z_TEMP_DIR": str(tmp_path),
            **(env or {}),
        }
        full_env = {k: v for k, v in full_env.items() if v != ""}
        settings = parse_settings(BatonSettings, [], env=full_env)
        st = state or ToyState()
        if options is None:
            options = production_options(timer) if timer is not None else fast_options()
        elif timer is not None:
            options = with_timer(options, timer)
        options = replace(options, install_signal_handlers=False)
        metrics, health = Metrics("toy"), DaemonHealth()
        stop, err = asyncio.Event(), io.StringIO()
        task = asyncio.create_task(
            run_daemon(
                lambda: ToyConnector(st),
                settings,
                metrics=metrics,
                health=health,
                options=options,
                env=full_env,
                stderr=err,
                stop=stop,
                app_name="baton-toy",
            )
        )
        run = Run(tenant, st, metrics, health, stop, task, err, full_env, timer)
        runs.append(run)
        if wait_hello:
            await tenant.wait_hello(within=5)
        return run

    yield _start
    for run in runs:
        run.stop.set()
        if not run.task.done():
            try:
                await asyncio.wait_for(run.task, 5)
            except (TimeoutError, asyncio.CancelledError):
                run.task.cancel()
