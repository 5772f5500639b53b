"""The ops server on a real loopback socket: probe semantics, /health caching and /metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import connector
from connector.ops.health import DaemonHealth, OpsServer
from connector.ops.logging import clear_secrets, register_secret
from connector.ops.metrics import Metrics

RFC3339_UTC_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@dataclass
class Upstream:
    """A connector Validate stand-in that counts calls and can be told to fail or stall."""

    calls: int = 0
    error: Exception | None = None
    delay: float = 0.0

    async def validate(self) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error


@dataclass
class Ops:
    client: httpx.AsyncClient
    health: DaemonHealth
    metrics: Metrics
    upstream: Upstream
    port: int


ServerFactory = Callable[..., Awaitable[Ops]]


@pytest.fixture(autouse=True)
def isolated_redactor() -> Iterator[None]:
    """The redactor is process-global; secrets other tests registered (e.g. a sandbox's "admin") would
    otherwise rewrite the error texts asserted here."""
    clear_secrets()
    yield
    clear_secrets()


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[OpsServer] = []
    clients: list[httpx.AsyncClient] = []

    async def factory(**kwargs: Any) -> Ops:
        health = DaemonHealth(**kwargs.pop("health_kwargs", {}))
        metrics = Metrics("atlassian")
        upstream = Upstream()
        server = OpsServer(metrics, health, upstream.validate, **kwargs)
        port = await server.start("127.0.0.1", 0)
        servers.append(server)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0)
        clients.append(client)
        return Ops(client, health, metrics, upstream, port)

    yield factory
    for client in clients:
        await client.aclose()
    for server in servers:
        await server.stop()


def assert_baton_shape(body: dict[str, Any], status: str) -> None:
    assert body["status"] == status
    assert RFC3339_UTC_SECONDS.match(body["timestamp"]), body["timestamp"]
    assert set(body) <= {"status", "timestamp", "details"}


async def test_live_is_always_ok_even_before_hello(make_server: ServerFactory) -> None:
    ops = await make_server()
    assert ops.port > 0
    resp = await ops.client.get("/live")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert_baton_shape(resp.json(), "alive")
    assert "details" not in resp.json()  # omitted when empty, like the Go SDK


async def test_ready_follows_hello_and_a_tenant_outage_and_recovery(make_server: ServerFactory) -> None:
    ops = await make_server()

    resp = await ops.client.get("/ready")
    assert resp.status_code == 503
    assert_baton_shape(resp.json(), "not_ready")
    assert resp.json()["details"]["reason"] == "bootstrap hello not done"

    ops.health.mark_hello_done()
    resp = await ops.client.get("/ready")
    assert resp.status_code == 200
    assert_baton_shape(resp.json(), "ready")
    assert resp.json()["details"]["hello_done"] == "true"

    ops.health.mark_tenant_error("GetTask: UNAVAILABLE: connection refused")
    resp = await ops.client.get("/ready")
    assert resp.status_code == 503
    details = resp.json()["details"]
    assert details["reason"] == "tenant unreachable"
    assert details["tenant_error"] == "GetTask: UNAVAILABLE: connection refused"
    assert (await ops.client.get("/live")).status_code == 200  # an outage must not get the pod restarted

    ops.health.mark_tenant_ok()
    resp = await ops.client.get("/ready")
    assert resp.status_code == 200
    assert "tenant_error" not in resp.json()["details"]


async def test_ready_turns_false_when_the_tenant_goes_quiet(make_server: ServerFactory) -> None:
    ops = await make_server(health_kwargs={"stale_after": 0.1})
    ops.health.mark_hello_done()
    assert (await ops.client.get("/ready")).status_code == 200
    await asyncio.sleep(0.15)
    resp = await ops.client.get("/ready")
    assert resp.status_code == 503
    assert resp.json()["details"]["reason"] == "no successful tenant call recently"
    ops.health.mark_tenant_ok()  # e.g. a heartbeat during a long sync
    assert (await ops.client.get("/ready")).status_code == 200


async def test_health_calls_validate_once_within_the_cache_window(make_server: ServerFactory) -> None:
    ops = await make_server(validate_cache_seconds=0.3)
    for _ in range(3):
        resp = await ops.client.get("/health")
        assert resp.status_code == 200
        assert_baton_shape(resp.json(), "healthy")
    assert ops.upstream.calls == 1
    await asyncio.sleep(0.35)
    assert (await ops.client.get("/health")).status_code == 200
    assert ops.upstream.calls == 2


async def test_concurrent_health_probes_share_one_validate(make_server: ServerFactory) -> None:
    ops = await make_server()
    ops.upstream.delay = 0.1
    responses = await asyncio.gather(*(ops.client.get("/health") for _ in range(5)))
    assert [r.status_code for r in responses] == [200] * 5
    assert ops.upstream.calls == 1


async def test_health_failure_is_503_with_details_and_cached_too(make_server: ServerFactory) -> None:
    ops = await make_server(validate_cache_seconds=0.3)
    ops.upstream.error = RuntimeError("atlassian GET /admin/v1/orgs/{org}: HTTP 401: invalid API key")
    resp = await ops.client.get("/health")
    assert resp.status_code == 503
    body = resp.json()
    assert_baton_shape(body, "unhealthy")
    assert body["details"] == {
        "error": "connector validation failed",
        "validation_error": "atlassian GET /admin/v1/orgs/{org}: HTTP 401: invalid API key",
    }
    assert (await ops.client.get("/health")).status_code == 503
    assert ops.upstream.calls == 1  # a failing upstream is not hammered either

    ops.upstream.error = None  # credentials fixed
    await asyncio.sleep(0.35)
    assert (await ops.client.get("/health")).status_code == 200


async def test_health_reports_a_validate_that_hangs(make_server: ServerFactory) -> None:
    ops = await make_server(validate_timeout=0.1)
    ops.upstream.delay = 5.0
    resp = await ops.client.get("/health")
    assert resp.status_code == 503
    assert "timed out" in resp.json()["details"]["validation_error"]


async def test_health_error_text_never_carries_a_registered_secret(make_server: ServerFactory) -> None:
    secret = "s3cr3t-api-token-value-123"
    register_secret(secret)
    ops = await make_server()
    ops.upstream.error = RuntimeError(f"upstream rejected token {secret}")
    resp = await ops.client.get("/health")
    assert resp.status_code == 503
    assert secret not in resp.text
    assert "upstream rejected token" in resp.json()["details"]["validation_error"]


async def test_metrics_endpoint_serves_prometheus_text(make_server: ServerFactory) -> None:
    ops = await make_server()
    ops.metrics.task_received("grant")
    ops.metrics.tenant_rpc("GetTask", "OK")
    resp = await ops.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(resp.text)
        for s in f.samples
    }
    assert samples[("baton_tasks_received_total", (("task_type", "grant"),))] == 1
    assert samples[("baton_tenant_rpcs_total", (("code", "OK"), ("method", "GetTask")))] == 1
    assert ("baton_build_info", (("connector", "atlassian"), ("version", connector.__version__))) in samples


async def test_stop_releases_the_port_and_a_busy_port_is_a_clear_error(make_server: ServerFactory) -> None:
    ops = await make_server()
    other = OpsServer(Metrics("atlassian"), DaemonHealth(), Upstream().validate)
    with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{ops.port} for health checks"):
        await other.start("127.0.0.1", ops.port)

    server = OpsServer(Metrics("atlassian"), DaemonHealth(), Upstream().validate)
    port = await server.start("127.0.0.1", 0)
    await server.stop()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/live")
