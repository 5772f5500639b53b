"""End to end: the daemon serves the sandbox tenant with the Confluence connector against the Confluence
sandbox; /metrics is scraped after a sync and a grant, and /ready follows a tenant outage and recovery.

Everything is real: TLS gRPC tenant, HTTP upstream, sqlite/zstd c1z, the ops server on a loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import connector
from connector.apps.confluence_datacenter.connector import ConfluenceConnector
from connector.apps.confluence_datacenter.settings import ConfluenceSettings
from connector.c1z.reader import C1zReader
from connector.ops.health import DaemonHealth, OpsServer
from connector.ops.metrics import Metrics
from connector.ops.settings import parse_settings
from connector.sandbox.confluence.server import start_confluence_sandbox
from connector.sandbox.tenant.server import TenantHandle, start_tenant
from connector.service.daemon import run_daemon
from connector.service.testing_app import fast_options

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Stack:
    tenant: TenantHandle
    metrics: Metrics
    health: DaemonHealth
    client: httpx.AsyncClient
    daemon: asyncio.Task[int]


async def scrape(client: httpx.AsyncClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(resp.text)
        for s in f.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def matching(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in samples.items() if n == name and want <= set(lbl)}


async def until(check: Callable[[], object], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    temp_dir = tmp_path / "c1z"
    temp_dir.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        confluence = await start_confluence_sandbox()
        stack.push_async_callback(confluence.stop)
        tenant = await start_tenant(next_poll=0.05, next_heartbeat=0.2)
        stack.push_async_callback(tenant.close)

        env = tenant.env() | {
            "BATON_HOSTNAME": confluence.base_url,
            "BATON_ACCESS_TOKEN": "admin-pat",
            "BATON_PROVISIONING": "true",
            "BATON_C1Z_TEMP_DIR": str(temp_dir),
            "BATON_HOST_ID": "baton-confluence-datacenter-0",
        }
        settings = parse_settings(ConfluenceSettings, [], env=env)
        metrics = Metrics("confluence-datacenter")
        health = DaemonHealth()
        built: list[ConfluenceConnector] = []

        # run_daemon attaches the metrics hooks itself; the list lets /health validate that connector.
        def factory() -> ConfluenceConnector:
            conn = ConfluenceConnector(settings)
            built.append(conn)
            return conn

        async def validate() -> None:
            await built[-1].validate()

        ops = OpsServer(metrics, health, validate)
        port = await ops.start("127.0.0.1", 0)
        stack.push_async_callback(ops.stop)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0)
        stack.push_async_callback(client.aclose)

        stop = asyncio.Event()
        options = fast_options()
        daemon = asyncio.create_task(
            run_daemon(
                factory,
                settings,
                metrics=metrics,
                health=health,
                options=type(options)(options.scheduler, options.tasks, install_signal_handlers=False),
                env=env,
                stop=stop,
                app_name="baton-confluence-datacenter",
            )
        )

        async def shutdown() -> None:
            stop.set()
            assert await asyncio.wait_for(daemon, 10) == 0

        stack.push_async_callback(shutdown)
        yield Stack(tenant, metrics, health, client, daemon)


async def test_metrics_after_a_sync_and_a_grant(stack: Stack) -> None:
    tenant, client = stack.tenant, stack.client
    await until(lambda: stack.health.ready)
    assert (await client.get("/ready")).status_code == 200

    sync_id = tenant.enqueue_sync()
    finish = await tenant.wait_finished(sync_id, within=10)
    assert finish.outcome == "success", finish.status_message
    upload = tenant.uploads[-1]

    with C1zReader(upload.path) as reader:
        stats = reader.stats()
        member = next(e for e in reader.entitlements(resource_type="group") if e.slug == "member")
        members = {g.principal.id.resource for g in reader.grants(entitlement_id=member.id)}
        outsider = next(u for u in reader.resources(resource_type="user") if u.id.resource not in members)

    grant_id = tenant.enqueue_grant(member, outsider)
    granted = await tenant.wait_finished(grant_id, within=10)
    assert granted.outcome == "success", granted.status_message
    # The daemon counts a task once its FinishTask call has returned, just after the tenant recorded it.
    registry = stack.metrics.registry
    for task_type in ("sync_full", "grant"):
        labels = {"task_type": task_type, "outcome": "success"}
        await until(lambda labels=labels: registry.get_sample_value("baton_tasks_finished_total", labels))

    s = await scrape(client)
    assert (
        sample(s, "baton_build_info", connector="confluence-datacenter", version=connector.__version__) == 1
    )
    # sync
    assert sample(s, "baton_sync_runs_total", outcome="success") == 1
    assert sample(s, "baton_sync_runs_total", outcome="failure") == 0
    assert sample(s, "baton_sync_duration_seconds_count") == 1
    assert sample(s, "baton_sync_last_success_timestamp_seconds") >= sample(
        s, "baton_sync_last_attempt_timestamp_seconds"
    )
    for resource_type in ("user", "group", "space"):
        assert (
            sample(s, "baton_sync_objects", kind="resource", resource_type=resource_type)
            == stats[resource_type]
        )
    assert sample(s, "baton_sync_objects", kind="entitlement", resource_type="") == stats["entitlements"]
    # The grants reported are the grants in the uploaded file, expanded ones included (and counted
    # on their own too).
    assert sample(s, "baton_sync_objects", kind="grant", resource_type="") == stats["grants"]
    assert 0 < sample(s, "baton_sync_objects", kind="expanded_grant", resource_type="") < stats["grants"]
    assert sample(s, "baton_sync_c1z_bytes") == upload.size
    assert sample(s, "baton_upload_bytes_total") == upload.size
    assert sample(s, "baton_uploads_total", outcome="success") == 1
    assert sample(s, "baton_sync_phase", phase="idle") == 1
    # tasks
    assert sample(s, "baton_tasks_received_total", task_type="sync_full") == 1
    assert sample(s, "baton_tasks_received_total", task_type="grant") == 1
    assert sample(s, "baton_tasks_finished_total", task_type="sync_full", outcome="success") == 1
    assert sample(s, "baton_tasks_finished_total", task_type="grant", outcome="success") == 1
    assert sample(s, "baton_task_duration_seconds_count", task_type="grant") == 1
    assert sample(s, "baton_tasks_in_flight", task_type="grant") == 0
    # tenant
    assert sample(s, "baton_tenant_rpcs_total", method="Hello", code="OK") == 1
    assert sample(s, "baton_tenant_rpcs_total", method="FinishTask", code="OK") == 2
    assert sample(s, "baton_tenant_rpcs_total", method="GetTask", code="OK") >= 2
    assert sample(s, "baton_token_refreshes_total", outcome="success") >= 1
    assert sample(s, "baton_tenant_last_poll_age_seconds") < 2
    # upstream: route templates only, never ids from the data
    requests = matching(s, "baton_upstream_requests_total")
    assert sum(requests.values()) > 0
    routes = {dict(lbl)["route"] for lbl in requests}
    assert all(r.startswith("/") for r in routes)
    assert any("{" in r for r in routes), routes
    for rid in (outsider.id.resource, member.resource.id.resource):
        assert not any(rid in v for lbl in requests for _, v in lbl), f"id {rid!r} leaked into a label"
    assert {dict(lbl)["connector"] for lbl in requests} == {"confluence"}
    writes = matching(s, "baton_upstream_requests_total", method="POST") | matching(
        s, "baton_upstream_requests_total", method="PUT"
    )
    assert writes, "the grant's write request is counted"
    assert sum(matching(s, "baton_upstream_request_duration_seconds_count").values()) == sum(
        requests.values()
    )


async def test_ready_and_health_through_a_tenant_outage_and_recovery(stack: Stack) -> None:
    tenant, client = stack.tenant, stack.client
    await until(lambda: stack.health.ready)
    assert (await client.get("/ready")).status_code == 200
    health = await client.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "healthy"

    tenant.fail_rpc("GetTask", times=None, code=grpc.StatusCode.UNAVAILABLE, message="tenant down")
    await until(lambda: not stack.health.ready)
    resp = await client.get("/ready")
    assert resp.status_code == 503
    assert resp.json()["details"]["reason"] == "tenant unreachable"
    assert (await client.get("/live")).status_code == 200
    s = await scrape(client)
    assert sample(s, "baton_tenant_rpcs_total", method="GetTask", code="UNAVAILABLE") >= 1

    tenant.tenant.clear_faults()
    await until(lambda: stack.health.ready)
    assert (await client.get("/ready")).status_code == 200
    # Work flows again after recovery.
    sync_id = tenant.enqueue_sync()
    assert (await tenant.wait_finished(sync_id, within=10)).outcome == "success"
