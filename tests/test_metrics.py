"""Metrics: each method moves the series an operator reads, on the object's own registry."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import connector
from connector.ops.metrics import Metrics
from connector.sync.report import SyncReport


def report(
    resources: dict[str, int] | None = None,
    entitlements: int = 0,
    grants_direct: int = 0,
    grants_expanded: int = 0,
) -> SyncReport:
    """The engine's own report type, filled as a sync would."""
    return SyncReport(
        resources=dict(resources or {}),
        entitlements=entitlements,
        grants_direct=grants_direct,
        grants_expanded=grants_expanded,
    )


@dataclass(frozen=True)
class Event:
    """Shape of connector.sdk.http.RequestEvent (one per attempt)."""

    upstream: str
    method: str
    route: str
    status: int | None
    elapsed: float
    attempt: int = 1
    retrying: bool = False
    rate_limited: bool = False
    wait: float = 0.0


def value(m: Metrics, metric: str, /, **labels: str) -> float | None:
    return m.registry.get_sample_value(metric, labels)


def test_each_instance_has_its_own_registry_and_build_info() -> None:
    a = Metrics("atlassian")
    b = Metrics("confluence-datacenter", registry=CollectorRegistry())
    a.task_received("grant")
    assert value(a, "baton_tasks_received_total", task_type="grant") == 1
    assert value(b, "baton_tasks_received_total", task_type="grant") is None
    assert value(a, "baton_build_info", version=connector.__version__, connector="atlassian") == 1
    assert value(b, "baton_build_info", version=connector.__version__, connector="confluence-datacenter") == 1


def test_successful_sync_records_outcome_duration_timestamps_objects_and_size() -> None:
    m = Metrics("atlassian")
    before = time.time()
    m.sync_started()
    attempt = value(m, "baton_sync_last_attempt_timestamp_seconds")
    assert attempt is not None and attempt >= before
    assert value(m, "baton_sync_in_progress") == 1
    assert value(m, "baton_sync_last_success_timestamp_seconds") == 0

    sync_report = report(
        {"user": 40, "group": 3, "space": 2}, entitlements=11, grants_direct=57, grants_expanded=9
    )
    m.sync_finished("success", sync_report, 12.5, 4096)

    assert value(m, "baton_sync_runs_total", outcome="success") == 1
    assert value(m, "baton_sync_runs_total", outcome="failure") == 0
    assert value(m, "baton_sync_duration_seconds_count") == 1
    assert value(m, "baton_sync_duration_seconds_sum") == 12.5
    assert value(m, "baton_sync_duration_seconds_bucket", le="15.0") == 1
    assert value(m, "baton_sync_duration_seconds_bucket", le="5.0") == 0
    success = value(m, "baton_sync_last_success_timestamp_seconds")
    assert success is not None and success >= attempt
    assert value(m, "baton_sync_objects", kind="resource", resource_type="user") == 40
    assert value(m, "baton_sync_objects", kind="resource", resource_type="group") == 3
    assert value(m, "baton_sync_objects", kind="resource", resource_type="space") == 2
    assert value(m, "baton_sync_objects", kind="entitlement", resource_type="") == 11
    # Every grant of the file (direct and expanded); the expanded ones also on their own.
    assert value(m, "baton_sync_objects", kind="grant", resource_type="") == 66
    assert value(m, "baton_sync_objects", kind="expanded_grant", resource_type="") == 9
    assert value(m, "baton_sync_c1z_bytes") == 4096
    assert value(m, "baton_sync_in_progress") == 0


def test_failed_sync_keeps_the_last_successful_figures() -> None:
    m = Metrics("atlassian")
    m.sync_started()
    m.sync_finished("success", report({"user": 5}, 1, 2, 0), 1.0, 100)
    success = value(m, "baton_sync_last_success_timestamp_seconds")

    m.sync_started()
    m.sync_finished("failure", None, 3.0, None)
    m.sync_started()
    m.sync_finished("cancelled", None, 0.5, None)

    assert value(m, "baton_sync_runs_total", outcome="success") == 1
    assert value(m, "baton_sync_runs_total", outcome="failure") == 1
    assert value(m, "baton_sync_runs_total", outcome="cancelled") == 1
    assert value(m, "baton_sync_duration_seconds_count") == 3
    assert value(m, "baton_sync_last_success_timestamp_seconds") == success
    assert value(m, "baton_sync_objects", kind="resource", resource_type="user") == 5
    assert value(m, "baton_sync_c1z_bytes") == 100


def test_a_resource_type_gone_from_the_tenant_disappears_from_the_object_counts() -> None:
    m = Metrics("confluence-datacenter")
    m.sync_started()
    m.sync_finished("success", report({"user": 5, "space": 4}), 1.0, 10)
    m.sync_started()
    m.sync_finished("success", report({"user": 6}), 1.0, 10)
    assert value(m, "baton_sync_objects", kind="resource", resource_type="user") == 6
    assert value(m, "baton_sync_objects", kind="resource", resource_type="space") is None


def test_duck_typed_reports_with_per_type_breakdowns_become_per_type_series() -> None:
    @dataclass
    class Detailed:
        resources_by_type: dict[str, int]
        entitlements: dict[str, int]
        grants_direct: dict[str, int]
        grants_expanded: int

    m = Metrics("atlassian")
    m.sync_started()
    m.sync_finished("success", Detailed({"group": 2}, {"group": 4}, {"group": 7}, 1), 1.0, None)
    assert value(m, "baton_sync_objects", kind="entitlement", resource_type="group") == 4
    assert value(m, "baton_sync_objects", kind="grant", resource_type="group") == 7
    assert value(m, "baton_sync_objects", kind="grant", resource_type="") is None
    assert value(m, "baton_sync_objects", kind="expanded_grant", resource_type="") == 1
    assert value(m, "baton_sync_objects", kind="resource", resource_type="group") == 2


def test_phase_gauge_marks_exactly_the_current_phase_and_idle_between_syncs() -> None:
    m = Metrics("atlassian")
    assert value(m, "baton_sync_phase", phase="idle") == 1
    m.sync_started()
    m.sync_phase("resources")
    m.sync_phase("grants")
    assert value(m, "baton_sync_phase", phase="grants") == 1
    assert value(m, "baton_sync_phase", phase="resources") == 0
    assert value(m, "baton_sync_phase", phase="idle") == 0
    m.sync_finished("failure", None, 1.0, None)
    assert value(m, "baton_sync_phase", phase="idle") == 1
    assert value(m, "baton_sync_phase", phase="grants") == 0


def test_uploads_count_bytes_only_when_they_succeed() -> None:
    m = Metrics("atlassian")
    m.upload_finished(1000, 0.4, ok=True)
    m.upload_finished(500, 2.0, ok=False)
    assert value(m, "baton_upload_bytes_total") == 1000
    assert value(m, "baton_uploads_total", outcome="success") == 1
    assert value(m, "baton_uploads_total", outcome="failure") == 1
    assert value(m, "baton_upload_duration_seconds_count") == 2
    assert value(m, "baton_upload_duration_seconds_sum") == pytest.approx(2.4)


def test_tasks_received_finished_in_flight_and_finish_retries() -> None:
    m = Metrics("atlassian")
    m.task_received("grant")
    m.task_received("grant")
    m.task_received("sync_full")
    with m.track_task("grant"):
        assert value(m, "baton_tasks_in_flight", task_type="grant") == 1
        with m.track_task("grant"):
            assert value(m, "baton_tasks_in_flight", task_type="grant") == 2
    assert value(m, "baton_tasks_in_flight", task_type="grant") == 0
    with pytest.raises(RuntimeError), m.track_task("revoke"):
        raise RuntimeError("handler crashed")
    assert value(m, "baton_tasks_in_flight", task_type="revoke") == 0

    m.task_finished("grant", "success", 0.3)
    m.task_finished("grant", "non_retryable_error", 0.1)
    m.task_finished("sync_full", "retryable_error", 42.0)
    m.finish_task_retry()
    m.finish_task_retry()
    assert value(m, "baton_tasks_received_total", task_type="grant") == 2
    assert value(m, "baton_tasks_received_total", task_type="sync_full") == 1
    assert value(m, "baton_tasks_finished_total", task_type="grant", outcome="success") == 1
    assert value(m, "baton_tasks_finished_total", task_type="grant", outcome="non_retryable_error") == 1
    assert value(m, "baton_tasks_finished_total", task_type="sync_full", outcome="retryable_error") == 1
    assert value(m, "baton_task_duration_seconds_count", task_type="grant") == 2
    assert value(m, "baton_task_duration_seconds_sum", task_type="sync_full") == 42.0
    assert value(m, "baton_finish_task_retries_total") == 2


def test_tenant_rpcs_tokens_reloads_and_auth_failures() -> None:
    m = Metrics("atlassian")
    m.tenant_rpc("GetTask", "OK")
    m.tenant_rpc("GetTask", "OK")
    m.tenant_rpc("FinishTask", "UNAVAILABLE")
    m.token_refresh("success")
    m.token_refresh("failure")
    m.credential_reload("client_secret")
    m.auth_failure("token")
    m.auth_failure("token")
    assert value(m, "baton_tenant_rpcs_total", method="GetTask", code="OK") == 2
    assert value(m, "baton_tenant_rpcs_total", method="FinishTask", code="UNAVAILABLE") == 1
    assert value(m, "baton_token_refreshes_total", outcome="success") == 1
    assert value(m, "baton_token_refreshes_total", outcome="failure") == 1
    assert value(m, "baton_credential_reloads_total", name="client_secret") == 1
    assert value(m, "baton_auth_failures_total", where="token") == 2


def test_poll_age_grows_from_start_and_resets_on_a_successful_poll() -> None:
    m = Metrics("atlassian")
    time.sleep(0.05)
    first = value(m, "baton_tenant_last_poll_age_seconds")
    assert first is not None and first >= 0.05
    m.poll_succeeded()
    after = value(m, "baton_tenant_last_poll_age_seconds")
    assert after is not None and after < first
    time.sleep(0.02)
    later = value(m, "baton_tenant_last_poll_age_seconds")
    assert later is not None and later >= after + 0.02


def test_upstream_hook_counts_requests_by_route_template_with_retries_and_rate_limits() -> None:
    m = Metrics("confluence-datacenter")
    hook = m.upstream_hook()
    route = "/rest/api/group/{group}/member"
    hook(Event("confluence", "get", route, 429, 0.02, attempt=1, retrying=True, rate_limited=True, wait=2.5))
    hook(Event("confluence", "GET", route, 200, 0.03, attempt=2))
    hook(Event("confluence", "GET", "/rest/api/space", None, 1.5, retrying=True, wait=1.0))
    hook(Event("confluence", "GET", "/rest/api/space", 503, 0.01, attempt=2))

    assert (
        value(
            m,
            "baton_upstream_requests_total",
            connector="confluence",
            method="GET",
            route=route,
            status="429",
        )
        == 1
    )
    assert (
        value(
            m,
            "baton_upstream_requests_total",
            connector="confluence",
            method="GET",
            route=route,
            status="200",
        )
        == 1
    )
    assert (
        value(
            m,
            "baton_upstream_requests_total",
            connector="confluence",
            method="GET",
            route="/rest/api/space",
            status="error",
        )
        == 1
    )
    assert (
        value(
            m,
            "baton_upstream_request_duration_seconds_count",
            connector="confluence",
            method="GET",
            route=route,
        )
        == 2
    )
    assert value(m, "baton_upstream_rate_limited_total", connector="confluence") == 1
    assert value(m, "baton_upstream_retries_total", connector="confluence") == 2
    assert value(m, "baton_upstream_rate_limit_wait_seconds_total", connector="confluence") == 3.5


def test_upstream_401_counts_as_an_upstream_auth_failure() -> None:
    m = Metrics("atlassian")
    hook = m.upstream_hook()
    hook(Event("atlassian", "GET", "/admin/v1/orgs/{org}/users", 401, 0.01))
    hook(Event("atlassian", "GET", "/admin/v1/orgs/{org}/users", 403, 0.01))
    hook(Event("atlassian", "GET", "/admin/v1/orgs/{org}/users", 200, 0.01))
    assert value(m, "baton_auth_failures_total", where="upstream") == 1


def test_capability_missing_is_counted_by_capability() -> None:
    m = Metrics("confluence-datacenter")
    m.capability_missing("space_permissions_v2")
    m.capability_missing("space_permissions_v2")
    assert value(m, "baton_upstream_capability_missing_total", capability="space_permissions_v2") == 2


def _exercised() -> Metrics:
    m = Metrics("atlassian")
    m.sync_started()
    m.sync_phase("grants")
    m.sync_finished("success", report({"user": 3}, 2, 4, 1), 2.0, 512)
    m.upload_finished(512, 0.1, ok=True)
    m.task_received("grant")
    m.task_finished("grant", "success", 0.2)
    m.tenant_rpc("GetTask", "OK")
    m.token_refresh("success")
    m.credential_reload("client_secret")
    m.auth_failure("upstream")
    m.poll_succeeded()
    m.upstream_hook()(Event("atlassian", "GET", "/admin/v1/orgs/{org}/users", 200, 0.05))
    m.capability_missing("x")
    return m


def test_render_is_parseable_exposition_with_conventional_names() -> None:
    families = {f.name: f for f in text_string_to_metric_families(_exercised().render().decode())}
    for name, family in families.items():
        # our own series, plus the standard process_* collector (RSS, CPU, start time)
        assert name.startswith(("baton_", "process_")), name
        if family.type == "counter":
            # the parser strips _total from counter family names; the samples keep it
            assert all(s.name == name + "_total" for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name
    assert families["baton_sync_runs"].type == "counter"
    assert families["baton_tenant_last_poll_age_seconds"].type == "gauge"
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_start_time_seconds"].samples[0].value > 0
    # no *_created companions: they would double the series count for nothing
    assert not [n for n in families if n.endswith("_created")]


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (Debian package: prometheus)"
)
def test_promtool_check_metrics_accepts_the_exposition() -> None:
    proc = subprocess.run(
        ["promtool", "check", "metrics"],
        input=_exercised().render(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
