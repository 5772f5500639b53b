"""Prometheus metrics for the daemon: sync health, tasks, tenant link, upstream API and build info.

Every series lives on the registry owned by one ``Metrics`` object (never the process-global default
registry), so tests and several connectors in one process never share state.

Labels are bounded on purpose: phases, task types, outcomes, gRPC codes, resource types and route
*templates* only. User, group, space or task ids never become label values, because each new value is a
new time series that Prometheus keeps for weeks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

import connector

__all__ = ["CONTENT_TYPE", "Metrics", "RequestEventLike"]

# The classic text format (0.0.4) is understood by every Prometheus and agent version; the body produced
# by generate_latest() is identical for the legacy-valid names used here.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# The *_created companion series double the series count and no dashboard or alert here reads them. This
# is a process-wide switch in prometheus-client; the daemon is its only user.
disable_created_metrics()  # type: ignore[no-untyped-call]

# A full sync of a large tenant takes minutes to hours, so the default sub-second buckets would put every
# observation in +Inf.
_SYNC_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
_UPLOAD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_TASK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

SYNC_OUTCOMES = ("success", "failure", "cancelled")
TASK_OUTCOMES = ("success", "retryable_error", "non_retryable_error")
IDLE_PHASE = "idle"


class RequestEventLike(Protocol):
    """What the upstream hook reads from ``connector.sdk.http.RequestEvent`` (one event per attempt)."""

    @property
    def upstream(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def route(self) -> str: ...
    @property
    def status(self) -> int | None: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def attempt(self) -> int: ...
    @property
    def retrying(self) -> bool: ...
    @property
    def rate_limited(self) -> bool: ...
    @property
    def wait(self) -> float: ...


def _count(value: Any) -> int:
    """A report figure may be a plain count or a per-type mapping; either way we want the total."""
    if isinstance(value, Mapping):
        return sum(int(v) for v in value.values())
    return int(value or 0)


class Metrics:
    """All daemon series on one registry; methods are cheap and safe to call from the event loop."""

    def __init__(self, connector: str, registry: CollectorRegistry | None = None) -> None:
        self.connector = connector
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._started_at = time.monotonic()
        self._last_poll: float | None = None
        self._phases: set[str] = {IDLE_PHASE}
        self._running_syncs = 0

        # process_* series (RSS, CPU, open fds, start time) on our own registry: the memory alert and the
        # "no sync since the pod started" alert read them.
        ProcessCollector(registry=r)

        self._build_info = Gauge(
            "baton_build_info",
            "Build information; the value is always 1.",
            ["version", "connector"],
            registry=r,
        )
        self._build_info.labels(version=connector_version(), connector=connector).set(1)

        # sync
        self._sync_runs = Counter("baton_sync_runs_total", "Sync runs by outcome.", ["outcome"], registry=r)
        self._sync_duration = Histogram(
            "baton_sync_duration_seconds", "Wall time of sync runs.", buckets=_SYNC_BUCKETS, registry=r
        )
        self._sync_last_success = Gauge(
            "baton_sync_last_success_timestamp_seconds",
            "Unix time at which the last successful sync finished (0 if none yet).",
            registry=r,
        )
        self._sync_last_attempt = Gauge(
            "baton_sync_last_attempt_timestamp_seconds",
            "Unix time at which the last sync attempt started (0 if none yet).",
            registry=r,
        )
        self._sync_objects = Gauge(
            "baton_sync_objects",
            "Objects written by the last successful sync, by kind and resource type.",
            ["kind", "resource_type"],
            registry=r,
        )
        self._sync_c1z_bytes = Gauge(
            "baton_sync_c1z_bytes", "Size of the c1z file produced by the last successful sync.", registry=r
        )
        self._sync_in_progress = Gauge(
            "baton_sync_in_progress", "Number of syncs currently running.", registry=r
        )
        self._sync_phase = Gauge(
            "baton_sync_phase",
            "Current phase of a running sync (1 for the current phase, 0 otherwise; idle when none).",
            ["phase"],
            registry=r,
        )
        self._upload_bytes = Counter(
            "baton_upload_bytes_total", "Bytes of c1z uploaded to the tenant successfully.", registry=r
        )
        self._upload_duration = Histogram(
            "baton_upload_duration_seconds", "Duration of c1z uploads.", buckets=_UPLOAD_BUCKETS, registry=r
        )
        self._uploads = Counter("baton_uploads_total", "c1z uploads by outcome.", ["outcome"], registry=r)
        for outcome in SYNC_OUTCOMES:
            self._sync_runs.labels(outcome=outcome)
        for outcome in ("success", "failure"):
            self._uploads.labels(outcome=outcome)
        self._set_phase(IDLE_PHASE)

        # tasks
        self._tasks_received = Counter(
            "baton_tasks_received_total",
            "Tasks received from the tenant, by type.",
            ["task_type"],
            registry=r,
        )
        self._tasks_finished = Counter(
            "baton_tasks_finished_total",
            "Tasks finished, by type and outcome.",
            ["task_type", "outcome"],
            registry=r,
        )
        self._task_duration = Histogram(
            "baton_task_duration_seconds",
            "Task handling time, by type.",
            ["task_type"],
            buckets=_TASK_BUCKETS,
            registry=r,
        )
        self._tasks_in_flight = Gauge(
            "baton_tasks_in_flight", "Tasks being handled, by type.", ["task_type"], registry=r
        )
        self._finish_task_retries = Counter(
            "baton_finish_task_retries_total", "FinishTask calls retried after a failure.", registry=r
        )

        # tenant
        self._tenant_rpcs = Counter(
            "baton_tenant_rpcs_total",
            "RPCs to the ConductorOne tenant, by method and gRPC status code.",
            ["method", "code"],
            registry=r,
        )
        self._token_refreshes = Counter(
            "baton_token_refreshes_total", "Access-token exchanges, by outcome.", ["outcome"], registry=r
        )
        self._credential_reloads = Counter(
            "baton_credential_reloads_total",
            "Credentials reloaded from mounted files, by credential name.",
            ["name"],
            registry=r,
        )
        self._auth_failures = Counter(
            "baton_auth_failures_total",
            "Authentication failures, by where they happened (tenant, token, upstream).",
            ["where"],
            registry=r,
        )
        self._poll_age = Gauge(
            "baton_tenant_last_poll_age_seconds",
            "Seconds since the last successful task poll (since start-up if none yet).",
            registry=r,
        )
        # Computed at scrape time from a monotonic clock so wall-clock jumps cannot fake freshness.
        self._poll_age.set_function(self._poll_age_seconds)

        # upstream
        self._up_requests = Counter(
            "baton_upstream_requests_total",
            "Upstream API requests (one per attempt), by upstream, method, route template and status.",
            ["connector", "method", "route", "status"],
            registry=r,
        )
        self._up_duration = Histogram(
            "baton_upstream_request_duration_seconds",
            "Upstream API request latency, by upstream, method and route template.",
            ["connector", "method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self._up_rate_limited = Counter(
            "baton_upstream_rate_limited_total",
            "Upstream responses that signalled a rate limit.",
            ["connector"],
            registry=r,
        )
        self._up_rate_wait = Counter(
            "baton_upstream_rate_limit_wait_seconds_total",
            "Seconds spent waiting before retrying after upstream rate limits or transient errors.",
            ["connector"],
            registry=r,
        )
        self._up_retries = Counter(
            "baton_upstream_retries_total", "Upstream requests retried.", ["connector"], registry=r
        )
        self._capability_missing = Counter(
            "baton_upstream_capability_missing_total",
            "Upstream features unavailable in the connected server version, by capability.",
            ["capability"],
            registry=r,
        )

    # ------------------------------------------------------------------ sync

    def sync_started(self) -> None:
        self._running_syncs += 1
        self._sync_in_progress.set(self._running_syncs)
        self._sync_last_attempt.set(time.time())
        self._set_phase("starting")

    def sync_phase(self, phase: str) -> None:
        self._set_phase(phase or IDLE_PHASE)

    def sync_finished(self, outcome: str, report: Any | None, duration: float, c1z_bytes: int | None) -> None:
        """Record a finished sync; on success also the object counts of ``report`` (a SyncReport)."""
        self._running_syncs = max(0, self._running_syncs - 1)
        self._sync_in_progress.set(self._running_syncs)
        self._sync_runs.labels(outcome=outcome).inc()
        self._sync_duration.observe(max(0.0, duration))
        if self._running_syncs == 0:
            self._set_phase(IDLE_PHASE)
        if outcome != "success":
            return
        self._sync_last_success.set(time.time())
        if c1z_bytes is not None:
            self._sync_c1z_bytes.set(c1z_bytes)
        if report is not None:
            self._record_objects(report)

    def _record_objects(self, report: Any) -> None:
        # Replace the whole set: a resource type that vanished from the tenant must not keep its old count.
        self._sync_objects.clear()
        # The engine's SyncReport calls the per-type counts `resources`; `resources_by_type` is accepted too.
        by_type = getattr(report, "resources_by_type", None)
        if not isinstance(by_type, Mapping):
            by_type = getattr(report, "resources", None)
        if not isinstance(by_type, Mapping):
            by_type = {}
        for resource_type, n in by_type.items():
            self._sync_objects.labels(kind="resource", resource_type=resource_type).set(n)
        direct = getattr(report, "grants_direct", 0)
        expanded = getattr(report, "grants_expanded", 0)
        # `grant` counts every grant the sync wrote (what the file holds and C1 sees), expansion's
        # included; `expanded_grant` is the part of it that expansion derived.
        grants: Any = direct
        if not isinstance(direct, Mapping):
            grants = _count(direct) + _count(expanded)
        for kind, value in (
            ("entitlement", getattr(report, "entitlements", 0)),
            ("grant", grants),
            ("expanded_grant", expanded),
        ):
            # Per-type when the report breaks the figure down, else one series with an empty (= absent)
            # resource_type, so `sum by (kind)` never double counts.
            if isinstance(value, Mapping):
                for resource_type, n in value.items():
                    self._sync_objects.labels(kind=kind, resource_type=resource_type).set(n)
            else:
                self._sync_objects.labels(kind=kind, resource_type="").set(_count(value))

    def upload_finished(self, nbytes: int, duration: float, ok: bool) -> None:
        self._uploads.labels(outcome="success" if ok else "failure").inc()
        self._upload_duration.observe(max(0.0, duration))
        if ok:
            self._upload_bytes.inc(max(0, nbytes))

    def _set_phase(self, phase: str) -> None:
        self._phases.add(phase)
        for p in self._phases:
            self._sync_phase.labels(phase=p).set(1 if p == phase else 0)

    # ------------------------------------------------------------------ tasks

    def task_received(self, task_type: str) -> None:
        self._tasks_received.labels(task_type=task_type).inc()

    def task_finished(self, task_type: str, outcome: str, duration: float) -> None:
        self._tasks_finished.labels(task_type=task_type, outcome=outcome).inc()
        self._task_duration.labels(task_type=task_type).observe(max(0.0, duration))

    @contextlib.contextmanager
    def track_task(self, task_type: str) -> Iterator[None]:
        gauge = self._tasks_in_flight.labels(task_type=task_type)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def finish_task_retry(self) -> None:
        self._finish_task_retries.inc()

    # ------------------------------------------------------------------ tenant

    def tenant_rpc(self, method: str, code: str) -> None:
        self._tenant_rpcs.labels(method=method, code=code).inc()

    def token_refresh(self, outcome: str) -> None:
        self._token_refreshes.labels(outcome=outcome).inc()

    def credential_reload(self, name: str) -> None:
        self._credential_reloads.labels(name=name).inc()

    def auth_failure(self, where: str) -> None:
        self._auth_failures.labels(where=where).inc()

    def poll_succeeded(self) -> None:
        self._last_poll = time.monotonic()

    def _poll_age_seconds(self) -> float:
        since = self._last_poll if self._last_poll is not None else self._started_at
        return max(0.0, time.monotonic() - since)

    # ------------------------------------------------------------------ upstream

    def upstream_hook(self) -> Callable[[RequestEventLike], None]:
        def hook(event: RequestEventLike) -> None:
            name = event.upstream
            method = event.method.upper()
            status = str(event.status) if event.status else "error"
            self._up_requests.labels(connector=name, method=method, route=event.route, status=status).inc()
            self._up_duration.labels(connector=name, method=method, route=event.route).observe(
                max(0.0, event.elapsed)
            )
            if event.status == 401:
                # The upstream rejected the connector's credentials (revoked or rotated key/token).
                self._auth_failures.labels(where="upstream").inc()
            if event.rate_limited:
                self._up_rate_limited.labels(connector=name).inc()
            if event.retrying:
                self._up_retries.labels(connector=name).inc()
            if event.wait > 0:
                self._up_rate_wait.labels(connector=name).inc(event.wait)

        return hook

    def capability_missing(self, capability: str) -> None:
        self._capability_missing.labels(capability=capability).inc()

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        return generate_latest(self.registry)


def connector_version() -> str:
    return str(getattr(connector, "__version__", "0.0.0"))
