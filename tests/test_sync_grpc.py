"""The same connector synced in process and over a real gRPC channel produces the same content."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import grpc
import pytest

from connector.sdk.client import GrpcConnectorClient
from connector.sdk.errors import ConnectorError, RateLimitInfo
from connector.sdk.runtime import ConnectorRuntime
from connector.sdk.server import serve
from connector.sync.engine import SyncError, SyncOptions, run_sync
from tests.test_sync_support import Nest, Org, OrgConnector, content, files


def _org() -> Org:
    org = Org(bots=["b1"])
    org.groups["eng"].append("bot:b1")
    org.nested["ops"] = [Nest("eng", shallow=True, resource_type_ids=("user",))]
    return org


async def test_in_process_and_grpc_syncs_are_identical(tmp_path: Path) -> None:
    local = tmp_path / "local.c1z"
    remote = tmp_path / "remote.c1z"
    local_report = await run_sync(ConnectorRuntime(OrgConnector(_org())), local, SyncOptions())

    server = await serve(ConnectorRuntime(OrgConnector(_org())), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        remote_report = await run_sync(GrpcConnectorClient(channel), remote, SyncOptions(concurrency=3))
    finally:
        await channel.close()
        await server.stop(None)

    assert content(local) == content(remote)
    for field in ("resource_types", "resources", "entitlements", "grants_direct", "grants_expanded"):
        assert getattr(local_report, field) == getattr(remote_report, field), field
    assert remote_report.grants_expanded > 0


async def test_errors_over_grpc_keep_code_and_message(tmp_path: Path) -> None:
    org = _org()
    org.fail[("grants", "group:ops")] = lambda: ConnectorError(
        grpc.StatusCode.PERMISSION_DENIED, "HTTP 403: no"
    )
    server = await serve(ConnectorRuntime(OrgConnector(org)), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        with pytest.raises(SyncError) as err:
            await run_sync(GrpcConnectorClient(channel), tmp_path / "sync.c1z", SyncOptions())
    finally:
        await channel.close()
        await server.stop(None)
    assert str(err.value) == "sync failed in phase grants for group:ops: PERMISSION_DENIED: HTTP 403: no"
    assert files(tmp_path) == []


async def test_rate_limit_details_survive_the_channel(tmp_path: Path) -> None:
    org = _org()
    calls: list[float] = []

    def rate_limited_once() -> Exception | None:
        calls.append(time.monotonic())
        if len(calls) > 1:
            return None
        reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)
        info = RateLimitInfo(limit=10, remaining=0, reset_at=reset)
        return ConnectorError(grpc.StatusCode.UNAVAILABLE, "HTTP 429", (info.to_proto(),))

    org.fail[("grants", "group:eng")] = rate_limited_once
    server = await serve(ConnectorRuntime(OrgConnector(org)), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        report = await run_sync(
            GrpcConnectorClient(channel), tmp_path / "sync.c1z", SyncOptions(retry_base_delay_s=5.0)
        )
    finally:
        await channel.close()
        await server.stop(None)
    assert report.retries == 1
    assert 0.2 <= calls[1] - calls[0] < 2.0  # waited for reset_at, not the 5 s backoff
