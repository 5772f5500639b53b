"""What a sync did: counts, timings and warnings, for logs, the CLI and the daemon's metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_WARNING_MESSAGES = 50


@dataclass
class SyncReport:
    sync_id: str = ""
    sync_type: str = "full"
    output: str = ""
    resource_types: int = 0
    resources: dict[str, int] = field(default_factory=dict)
    entitlements: int = 0
    grants_direct: int = 0
    grants_expanded: int = 0
    # Of those, created while grants were still being listed (connector/sync/early_expansion.py).
    grants_expanded_early: int = 0
    duration_s: float = 0.0
    upstream_requests: int = 0
    connector_calls: int = 0
    retries: int = 0
    connector_counters: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0
    dropped_records: int = 0
    phase_durations: dict[str, float] = field(default_factory=dict)
    c1z_bytes: int = 0
    # Peak RSS of the c1z writer process (0 when the writer ran in this process).
    writer_peak_rss_kib: int = 0
    # Rows handed to the store so far, by table ("resources", "entitlements", "grants"): live progress.
    live_rows: dict[str, int] = field(default_factory=dict)

    @property
    def grants(self) -> int:
        return self.grants_direct + self.grants_expanded

    @property
    def resources_total(self) -> int:
        return sum(self.resources.values())

    def warn(self, message: str) -> None:
        """Count a warning; the first MAX_WARNING_MESSAGES messages are kept verbatim."""
        self.warning_count += 1
        if len(self.warnings) < MAX_WARNING_MESSAGES:
            self.warnings.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sync_id": self.sync_id,
            "sync_type": self.sync_type,
            "output": self.output,
            "resource_types": self.resource_types,
            "resources": dict(self.resources),
            "resources_total": self.resources_total,
            "entitlements": self.entitlements,
            "grants_direct": self.grants_direct,
            "grants_expanded": self.grants_expanded,
            "grants_expanded_early": self.grants_expanded_early,
            "grants": self.grants,
            "duration_s": round(self.duration_s, 3),
            "upstream_requests": self.upstream_requests,
            "connector_calls": self.connector_calls,
            "retries": self.retries,
            "connector_counters": dict(self.connector_counters),
            "warning_count": self.warning_count,
            "warnings": list(self.warnings),
            "dropped_records": self.dropped_records,
            "phase_durations": {k: round(v, 3) for k, v in self.phase_durations.items()},
            "c1z_bytes": self.c1z_bytes,
            "writer_peak_rss_kib": self.writer_peak_rss_kib,
        }


def format_report(report: SyncReport) -> str:
    """A few aligned lines for people (the one-shot CLI prints this after a sync)."""
    lines = [
        f"sync {report.sync_id} ({report.sync_type}) finished in {report.duration_s:.2f}s",
        f"  file            {report.output} ({_size(report.c1z_bytes)})",
        f"  resource types  {report.resource_types}",
    ]
    if report.resources:
        width = max(len(t) for t in report.resources)
        lines.append(f"  resources       {report.resources_total}")
        for type_id, n in sorted(report.resources.items()):
            lines.append(f"    {type_id.ljust(width)}  {n}")
    else:
        lines.append("  resources       0")
    lines.append(f"  entitlements    {report.entitlements}")
    lines.append(
        f"  grants          {report.grants} "
        f"({report.grants_direct} direct, {report.grants_expanded} expanded)"
    )
    lines.append(
        f"  calls           {report.connector_calls} connector, {report.upstream_requests} upstream, "
        f"{report.retries} retried"
    )
    for key, value in sorted(report.connector_counters.items()):
        lines.append(f"  {key.replace('_', ' ')}: {value}")
    if report.dropped_records:
        lines.append(f"  dropped records {report.dropped_records}")
    if report.warning_count:
        lines.append(f"  warnings        {report.warning_count}")
        for w in report.warnings[:10]:
            lines.append(f"    - {w}")
        if report.warning_count > 10:
            lines.append(f"    ... and {report.warning_count - 10} more")
    return "\n".join(lines)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
