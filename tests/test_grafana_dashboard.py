"""deploy/grafana: the dashboard imports as it is and asks only for series the daemon exports.

The exported series come from a live scrape of the ops server's /metrics after every kind of event has
been recorded once, so a renamed or dropped metric breaks this test rather than an empty panel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from connector.ops.health import DaemonHealth, OpsServer
from connector.ops.metrics import Metrics
from connector.sync.report import SyncReport

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "baton-connectors.json"
# Labels Prometheus adds when it scrapes (target labels), and the histogram bucket label.
SCRAPE_LABELS = {"job", "instance", "namespace", "pod", "service", "le"}
# What the issue asks a glance at the dashboard to show.
REQUIRED = {
    "baton_sync_last_success_timestamp_seconds": "last successful sync per connector",
    "baton_sync_duration_seconds_bucket": "sync duration",
    "baton_sync_objects": "objects synced",
    "baton_tasks_finished_total": "task outcomes",
    "baton_tenant_rpcs_total": "tenant RPC errors",
    "baton_upstream_requests_total": "upstream requests",
    "baton_upstream_rate_limited_total": "upstream 429s",
}
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def expressions(doc: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(doc) for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:baton|process|python)_[a-z0-9_]+)\b", expr))


async def scraped() -> dict[str, set[str]]:
    """Series name -> label names, from the daemon's /metrics with one of every event recorded."""
    m = Metrics("baton-atlassian")
    m.sync_started()
    m.sync_phase("grants")
    report = SyncReport(resources={"user": 3}, entitlements=2, grants_direct=4, grants_expanded=1)
    m.sync_finished("success", report, 12.0, 1024)
    m.task_received("grant")
    m.task_finished("grant", "success", 0.1)
    m.tenant_rpc("GetTask", "UNAVAILABLE")
    m.auth_failure("token")

    class Event:
        upstream, method, route, status, elapsed = "atlassian", "GET", "/admin/v1/orgs/{org}", 429, 0.1
        attempt, retrying, rate_limited, wait = 1, True, True, 1.0

    m.upstream_hook()(Event())

    async def validate() -> None:
        return None

    ops = OpsServer(m, DaemonHealth(), validate)
    port = await ops.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=30)).text
    finally:
        await ops.stop()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_the_dashboard_is_importable_as_it_is() -> None:
    doc = dashboard()
    assert doc["title"] and doc["uid"] and isinstance(doc["schemaVersion"], int)
    assert "__inputs" not in doc and "id" not in doc  # no import-time questions, no instance's own id
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(doc):
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        # Every query goes to the chosen Prometheus, never to a data source uid of someone's instance.
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert 'job=~"$job"' in t["expr"], f"{p['title']}: not filtered by the connector variable"


async def test_every_query_uses_only_series_and_labels_the_daemon_exports() -> None:
    exported = await scraped()
    used: set[str] = set()
    for expr in expressions(dashboard()):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - set(exported)
        assert not unknown, f"{expr!r} uses series the daemon does not export: {sorted(unknown)}"
        used |= names
        labels = set().union(*(exported[n] for n in names)) | SCRAPE_LABELS
        grouped = {
            label.strip()
            for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for label in clause.split(",")
            if label.strip()
        }
        matched = set(re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!=|!~|=)", expr))
        for label in (grouped | matched) - _PROMQL_WORDS:
            assert label in labels, f"{expr!r}: label {label!r} is on none of {sorted(names)}"
    missing = {what for name, what in REQUIRED.items() if name not in used}
    assert not missing, f"the dashboard does not show: {sorted(missing)}"


def test_the_operations_guide_shows_how_to_import_it() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    assert "deploy/grafana/baton-connectors.json" in docs
