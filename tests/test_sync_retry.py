"""Retries: UNAVAILABLE / DEADLINE_EXCEEDED are retried (honouring RateLimitDescription), bounded."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from connector.sdk.errors import ConnectorError, RateLimitInfo
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncError, SyncOptions, run_sync
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


async def test_deadline_exceeded_retries_with_linear_backoff(tmp_path: Path) -> None:
    org = Org()
    calls, hook = _failing(2, lambda: ConnectorError(grpc.StatusCode.DEADLINE_EXCEEDED, "upstream timed out"))
    org.fail[("entitlements", "group:ops")] = hook
    report = await run_sync(
        ConnectorRuntime(OrgConnector(org)), tmp_path / "sync.c1z", SyncOptions(retry_base_delay_s=0.1)
    )
    assert report.retries == 2
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 1 x base, then 2 x base


async def test_retries_are_bounded(tmp_path: Path) -> None:
    org = Org()
    calls, hook = _failing(100, lambda: ConnectorError(grpc.StatusCode.UNAVAILABLE, "HTTP 503: maintenance"))
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
