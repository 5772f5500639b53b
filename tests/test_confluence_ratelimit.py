"""Rate limits and transient failures: the connector waits as told, paces itself and syncs everything."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from connector.pb.c1.connector.v2 import resource_pb2
from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.server import RateLimitConfig, SandboxConfig
from connector.sdk.errors import ConnectorError
from connector.sdk.http import RetryPolicy
from connector.sdk.runtime import ConnectorRuntime
from tests.test_confluence_support import expected_grant_ids, running, sync_all


async def test_429_is_retried_after_the_servers_retry_after() -> None:
    config = SandboxConfig(version="9.2", rate_limit=RateLimitConfig(capacity=2, fill_rate=50))
    # A fixed (high) client rate turns off pacing from the headers, so the server's bucket runs dry.
    async with running("9.2", config=config, args=("--rate-limit", "1000")) as (sandbox, connector):
        started = time.monotonic()
        results = await asyncio.gather(*(connector.client.get_json("/rest/api/space") for _ in range(6)))
        elapsed = time.monotonic() - started
        limited = sandbox.stats.rate_limited
    assert all(r["size"] > 0 for r in results)
    assert limited >= 3
    assert connector.client.http.stats.rate_limited == limited
    assert elapsed >= 1.0  # retry-after is whole seconds on Confluence: the client waited for it


async def test_exhausted_retries_surface_as_unavailable_with_a_reset_time() -> None:
    config = SandboxConfig(version="9.2", rate_limit=RateLimitConfig(capacity=1, fill_rate=0.01))
    async with running("9.2", config=config, args=("--rate-limit", "1000")) as (_, connector):
        connector.client.http.retry = RetryPolicy(max_attempts=1)
        await connector.client.get_json("/rest/api/server-information")  # the only token
        rt = ConnectorRuntime(connector)
        with pytest.raises(ConnectorError) as err:
            await rt.list_resources(
                resource_pb2.ResourcesServiceListResourcesRequest(resource_type_id="space")
            )
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.retryable
    assert err.value.rate_limit is not None and err.value.rate_limit.reset_at.seconds > 0


async def test_connector_paces_itself_from_the_rate_limit_headers() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="9.2", rate_limit=RateLimitConfig(capacity=5, fill_rate=100))
    async with running("9.2", data=data, config=config) as (sandbox, connector):
        started = time.monotonic()
        synced = await sync_all(connector)
        elapsed = time.monotonic() - started
        requests, limited = sandbox.stats.requests, sandbox.stats.rate_limited
    assert synced.grant_ids() == expected_grant_ids(data)
    assert limited == 0  # never ran the bucket dry
    assert elapsed >= (requests - 5 - 8) / 100 * 0.9  # and did wait for tokens (burst + first wave aside)


async def test_transient_503s_are_retried_transparently() -> None:
    data = sandbox_data.small()
    config = SandboxConfig(version="8.5", transient_503_every=4)
    async with running("8.5", data=data, config=config) as (_, connector):
        synced = await sync_all(connector)
        retries = connector.client.http.stats.retries
    assert synced.grant_ids() == expected_grant_ids(data)
    assert retries > 0
