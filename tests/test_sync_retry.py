"""Retries: in process, errors with a RateLimitDescription are retried (honouring it), bounded; others are
not (the upstream client has retried them already). Over gRPC UNAVAILABLE / DEADLINE_EXCEEDED are retried
too (test_sync_grpc.py)."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from connector.sandbox.confluence.server import SandboxConfig
from connector.sdk.errors import ConnectorError, RateLimitInfo
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncError, SyncOptions, run_sync
from tests.test_confluence_support import running
from tests.test_sync_support import Org, OrgConnector, files, grant_ids


def _failing(
    times: int, error: Callable[[], Exception]
) -> tuple[list[float], Callable[[], Exception | None]]:
    """A fail hook raising `error()` for the first `times` calls, recording when each call happened."""
    calls: list[float] = []

    def hook() -> Exception | None:
        calls.append(time.monotonic())
        return error() if len(calls) <= times else None

    return calls, hook


def _rate_limited(seconds: float) -> ConnectorError:
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    info = RateLimitInfo(limit=100, remaining=0, reset_at=reset)
    return ConnectorError(grpc.StatusCode.UNAVAILABLE, "HTTP 429: slow down", (info.to_proto(),))


async def test_unavailable_with_rate_limit_waits_for_reset(tmp_path: Path) -> None:
    org = Org()
    calls, hook = _failing(1, lambda: _rate_limited(0.4))
    org.fail[("grants", "group:eng")] = hook
    out = tmp_path / "sync.c1z"
    report = await run_sync(ConnectorRuntime(OrgConnector(org)), out, SyncOptions(retry_base_delay_s=5.0))
    assert report.retries == 1
    assert len(calls) == 2
    waited = calls[1] - calls[0]
    # the wait follows reset_at (0.4 s), not the 5 s linear backoff
    assert 0.3 <= waited < 2.0
    assert "group:eng:member:user:alice" in grant_ids(out)


def _rate_limited_without_reset(message: str) -> ConnectorError:
    info = RateLimitInfo(limit=100, remaining=0)
    return ConnectorError(grpc.StatusCode.UNAVAILABLE, message, (info.to_proto(),))


async def test_rate_limit_without_reset_retries_with_linear_backoff(tmp_path: Path) -> None:
    org = Org()
    calls, hook = _failing(2, lambda: _rate_limited_without_reset("HTTP 429: slow down"))
    org.fail[("entitlements", "group:ops")] = hook
    report = await run_sync(
        ConnectorRuntime(OrgConnector(org)), tmp_path / "sync.c1z", SyncOptions(retry_base_delay_s=0.1)
    )
    assert report.retries == 2
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 1 x base, then 2 x base


async def test_retries_are_bounded(tmp_path: Path) -> None:
    org = Org()
    calls, hook = _failing(100, lambda: _rate_limited_without_reset("HTTP 503: maintenance"))
    org.fail[("grants", "repo:web")] = hook
    with pytest.raises(SyncError) as err:
        await run_sync(
            ConnectorRuntime(OrgConnector(org)),
            tmp_path / "sync.c1z",
            SyncOptions(max_retries=2, retry_base_delay_s=0.01),
        )
    assert str(err.value) == "sync failed in phase grants for repo:web: UNAVAILABLE: HTTP 503: maintenance"
    assert len(calls) == 3
    assert files(tmp_path) == []


async def test_rate_limit_beyond_wait_budget_fails_fast(tmp_path: Path) -> None:
    org = Org()
    calls, hook = _failing(100, lambda: _rate_limited(30))
    org.fail[("grants", "group:eng")] = hook
    started = time.monotonic()
    with pytest.raises(SyncError, match="UNAVAILABLE: HTTP 429: slow down"):
        await run_sync(
            ConnectorRuntime(OrgConnector(org)), tmp_path / "sync.c1z", SyncOptions(max_retry_wait_s=1.0)
        )
    assert time.monotonic() - started < 5
    assert len(calls) == 1


async def test_other_codes_are_not_retried(tmp_path: Path) -> None:
    org = Org()
    calls, hook = _failing(
        100, lambda: ConnectorError(grpc.StatusCode.UNAUTHENTICATED, "HTTP 401: bad token")
    )
    org.fail[("grants", "group:eng")] = hook
    with pytest.raises(SyncError, match="phase grants for group:eng: UNAUTHENTICATED: HTTP 401: bad token"):
        await run_sync(ConnectorRuntime(OrgConnector(org)), tmp_path / "sync.c1z", SyncOptions())
    assert len(calls) == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_in_process_transient_errors_without_rate_limit_are_not_retried_again(
    tmp_path: Path, code: grpc.StatusCode
) -> None:
    org = Org()
    calls, hook = _failing(1, lambda: ConnectorError(code, "upstream gave up after 6 attempts"))
    org.fail[("entitlements", "group:ops")] = hook
    with pytest.raises(SyncError, match=f"phase entitlements for group:ops: {code.name}"):
        await run_sync(
            ConnectorRuntime(OrgConnector(org)), tmp_path / "sync.c1z", SyncOptions(retry_base_delay_s=0.01)
        )
    assert len(calls) == 1


async def test_one_call_costs_at_most_the_upstream_clients_own_attempts(tmp_path: Path) -> None:
    async with running("9.2") as (_, healthy):
        await healthy.validate()
        per_validation = healthy.client.http.stats.requests  # validation asks a few routes at once
    config = SandboxConfig(version="9.2", transient_503_every=1)  # every request answers 503
    async with running("9.2", config=config) as (sandbox, connector):
        with pytest.raises(SyncError, match="phase validate: UNAVAILABLE"):
            await run_sync(
                ConnectorRuntime(connector), tmp_path / "sync.c1z", SyncOptions(retry_base_delay_s=0.01)
            )
        attempts = connector.client.http.retry.max_attempts
        served = sandbox.stats.requests
    # The failing call went out once: each of its requests tried at most as often as the client tries
    # (the engine retrying too would multiply this by up to 9).
    assert attempts <= served <= per_validation * attempts
    assert served % attempts == 0
