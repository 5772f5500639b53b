"""The standalone scheduler (no client id): periodic syncs written atomically to BATON_FILE."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc

from connector.ops.health import DaemonHealth
from connector.ops.metrics import Metrics
from connector.ops.settings import BatonSettings, parse_settings
from connector.sandbox.tenant.c1z import summarize
from connector.sdk.errors import ConnectorError
from connector.service.daemon import run_daemon
from connector.service.standalone import run_standalone
from connector.service.testing_app import ToyConnector, ToyState


def settings_for(tmp_path: Path, *flags: str) -> BatonSettings:
    env = {"BATON_FILE": str(tmp_path / "out.c1z"), "BATON_C1Z_TEMP_DIR": str(tmp_path)}
    return parse_settings(BatonSettings, list(flags), env=env)


async def test_interval_syncs_replace_the_file_atomically_each_time(tmp_path: Path) -> None:
    state = ToyState()
    settings = settings_for(tmp_path, "--sync-interval", "0.2s")
    stop = asyncio.Event()
    health, metrics = DaemonHealth(), Metrics("toy")
    out = tmp_path / "out.c1z"
    run = asyncio.create_task(
        run_standalone(lambda: ToyConnector(state), settings, metrics=metrics, health=health, stop=stop)
    )
    seen: list[tuple[int, int]] = []
    try:
        async with asyncio.timeout(5):
            while len(seen) < 2:
                if out.exists():
                    st = os.stat(out)
                    key = (st.st_ino, st.st_mtime_ns)
                    if not seen or seen[-1] != key:
                        # Every version of the file is complete: a reader never sees a partial c1z.
                        summary = summarize(out)
                        assert summary.resources_by_type == {"group": 3, "user": len(state.users)}
                        seen.append(key)
                        state.users[f"new{len(seen)}"] = "New"  # the next sync sees a change
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        assert await asyncio.wait_for(run, 5) == 0
    assert seen[0][0] != seen[1][0]  # replaced by rename, not rewritten in place
    assert health.ready
    assert metrics.registry.get_sample_value("baton_sync_runs_total", {"outcome": "success"}) >= 2


async def test_a_failed_sync_keeps_the_previous_file_and_the_schedule(tmp_path: Path) -> None:
    state = ToyState()
    settings = settings_for(tmp_path)
    health = DaemonHealth()
    out = tmp_path / "out.c1z"
    assert (
        await run_standalone(lambda: ToyConnector(state), settings, health=health, interval=0.05, max_runs=1)
        == 0
    )
    before = out.read_bytes()
    state.fail_grant_listing["eng"] = ConnectorError(grpc.StatusCode.PERMISSION_DENIED, "no access")
    assert (
        await run_standalone(lambda: ToyConnector(state), settings, health=health, interval=0.05, max_runs=2)
        == 0
    )
    assert out.read_bytes() == before
    assert not health.ready and "no access" in health.details()["tenant_error"]


async def test_one_shot_without_interval_reports_failure(tmp_path: Path) -> None:
    state = ToyState()
    state.fail_grant_listing["ops"] = ConnectorError(grpc.StatusCode.PERMISSION_DENIED, "no access")
    settings = settings_for(tmp_path)
    assert await run_standalone(lambda: ToyConnector(state), settings) == 1
    assert not (tmp_path / "out.c1z").exists()


async def test_run_daemon_without_client_id_runs_the_standalone_scheduler(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert await run_daemon(lambda: ToyConnector(ToyState()), settings, env={}) == 0
    assert summarize(tmp_path / "out.c1z").resources == 7
