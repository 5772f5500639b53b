"""Atlassian connector benchmark: a full sync of a large fake organization, through run_sync to a c1z.

    python -m bench.bench_atlassian                  # the default scenarios (below)
    python -m bench.bench_atlassian --scenarios latency,ratelimit
    python -m bench.bench_atlassian --accounts 2000 --groups 50 --memberships 6000 --single latency

Organization: 20k accounts, 500 groups with 60k memberships, 12 workspaces with role assignments (50
role-holding groups with 6.6k distinct members). Scenarios:

* `latency`: every answer of the fake admin API takes 30 ms; the connector as configured by default,
  which checks, one request per account, whether members of role-holding groups also hold the role
  directly (exact direct grants);
* `latency-fast`: the same with `--verify-direct-roles=false` (no per-account checks);
* `ratelimit-fast`: the fast configuration against 50 requests per second per key (token bucket, 429 with
  X-RateLimit-Reset as an ISO-8601 timestamp). The connector is not told the limit: it learns it from 429s;
* `ratelimit-paced-fast`: the same limit, with --api-rate-limit 50 so the client paces itself;
* `ratelimit`, `ratelimit-paced`: the rate-limited runs in the default configuration (about 7,200
  requests at 50/s: 2.5 minutes each, so not run unless asked for).

The sandbox runs in its own process, so the peak RSS reported is the sync's own (the connector + engine
process plus the c1z writer process, each at its peak). The lower
bound is what the chosen request pattern cannot beat on the network: the longest chain of dependent
requests (cursor pagination of the user walk, split over its two ends) times the latency, the request
count over the concurrency times the latency, and, under a rate limit, the request count over the rate
(less the bucket's initial burst). The engine's own work after the last request (grants phase, grant
expansion, writing the file) is not in the bound; `upstream_span_s` is the time from the first to the
last upstream request, to compare with the bound without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import run_scenarios
from connector.apps.atlassian.connector import build_connector
from connector.apps.atlassian.settings import AtlassianSettings
from connector.ops.logging import configure_logging
from connector.ops.settings import parse_settings
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncOptions, run_sync

TARGET_RATIO = 1.3
PAGE = 100  # users per page of the user walk (the API's maximum)


def _start_sandbox(args: argparse.Namespace, rate_limit: float | None) -> tuple[subprocess.Popen[str], Any]:
    cmd = [
        sys.executable,
        "-m",
        "connector.sandbox.atlassian.server",
        "--accounts",
        str(args.accounts),
        "--groups",
        str(args.groups),
        "--memberships",
        str(args.memberships),
        "--workspaces",
        str(args.workspaces),
        "--latency-ms",
        str(args.latency_ms),
    ]
    if rate_limit:
        cmd += ["--rate-limit", str(rate_limit), "--no-retry-after"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the sandbox did not start")
    return proc, json.loads(line)


async def _sync(info: dict[str, Any], args: argparse.Namespace, client_rate: float | None) -> dict[str, Any]:
    flags = ["--api-base-url", info["base_url"], "--org", info["org_id"]]
    flags += ["--api-concurrency", str(args.concurrency), "--log-level", "warn", "--log-format", "json"]
    if client_rate:
        flags += ["--api-rate-limit", str(client_rate)]
    if getattr(args, "fast", False):
        flags += ["--verify-direct-roles=false"]
    settings = parse_settings(AtlassianSettings, flags, {"BATON_API_TOKEN": info["api_key"]})
    connector = build_connector(settings)
    span: list[float] = []

    def stamp(event: Any) -> None:
        now = time.monotonic()
        if not span:
            span.append(now - event.elapsed)
        span[1:] = [now]

    connector.client.http.add_hook(stamp)
    runtime = ConnectorRuntime(connector)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "atlassian.c1z"
        started = time.monotonic()
        report = await run_sync(runtime, out, SyncOptions(concurrency=args.concurrency))
        wall = time.monotonic() - started
        size = out.stat().st_size
    stats = connector.client.http.stats
    await runtime.close()
    return {
        "wall_s": wall,
        "upstream_span_s": span[-1] - span[0] if len(span) > 1 else 0.0,
        "requests": stats.requests,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
        "report": report.to_dict(),
        "c1z_bytes": size,
    }


def _lower_bound(
    requests: int, accounts: int, walks: int, latency: float, concurrency: int, rate: float | None
) -> dict[str, float]:
    # validate, the user count, then the user walk: ceil(accounts / 100) dependent pages, split over
    # `walks` walks running at once (two when the walk goes from both ends).
    chain = 2 + math.ceil(math.ceil(accounts / PAGE) / max(1, walks))
    bounds = {
        "chain_s": chain * latency,
        "throughput_s": requests * latency / concurrency,
    }
    if rate:
        burst = max(1, int(rate))
        bounds["rate_s"] = max(0, requests - burst) / rate
    bounds["bound_s"] = max(bounds.values())
    return bounds


SCENARIOS = (
    "latency",
    "latency-fast",
    "ratelimit",
    "ratelimit-paced",
    "ratelimit-fast",
    "ratelimit-paced-fast",
)
DEFAULT_SCENARIOS = ("latency", "latency-fast", "ratelimit-fast", "ratelimit-paced-fast")


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    server_rate = args.rate_limit if name.startswith("ratelimit") else None
    client_rate = args.rate_limit if name.startswith("ratelimit-paced") else None
    args.fast = name.endswith("-fast")
    proc, info = _start_sandbox(args, server_rate)
    try:
        result = asyncio.run(_sync(info, args, client_rate))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # Requests the pattern needs: retried 429s are the price of not knowing the limit, not the pattern.
    needed = result["requests"] - result["retries"]
    walks = int(result["report"]["connector_counters"].get("user_walks", 1))
    bound = _lower_bound(needed, args.accounts, walks, args.latency_ms / 1000, args.concurrency, server_rate)
    report = result["report"]
    # The connector + engine process and the sync's c1z writer process, each at its peak.
    rss_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + report["writer_peak_rss_kib"]) / 1024
    return {
        "scenario": name,
        "wall_s": round(result["wall_s"], 2),
        "upstream_span_s": round(result["upstream_span_s"], 2),
        "requests": result["requests"],
        "requests_needed": needed,
        "rate_limited_429": result["rate_limited"],
        "peak_rss_mb": round(rss_mb, 1),
        "lower_bound_s": round(bound["bound_s"], 2),
        "bound_parts_s": {k: round(v, 2) for k, v in bound.items() if k != "bound_s"},
        "ratio": round(result["wall_s"] / bound["bound_s"], 2) if bound["bound_s"] else None,
        "resources": report["resources"],
        "entitlements": report["entitlements"],
        "grants_direct": report["grants_direct"],
        "grants_expanded": report["grants_expanded"],
        "grants_expanded_early": report["grants_expanded_early"],
        "connector_counters": report["connector_counters"],
        "phase_s": report.get("phase_durations", {}),
        "c1z_bytes": result["c1z_bytes"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_atlassian")
    p.add_argument("--accounts", type=int, default=20_000)
    p.add_argument("--groups", type=int, default=500)
    p.add_argument("--memberships", type=int, default=60_000)
    p.add_argument("--workspaces", type=int, default=12)
    p.add_argument("--latency-ms", type=float, default=30.0)
    p.add_argument("--rate-limit", type=float, default=50.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--single",
        choices=SCENARIOS,
        help="run one scenario in this process (used internally so each gets its own peak RSS)",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated scenarios to run, from {', '.join(SCENARIOS)}",
    )
    args = p.parse_args(argv)
    configure_logging("warn", "json", [])
    if args.single:
        print(json.dumps(run_one(args.single, args)), flush=True)
        return 0
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenario {', '.join(unknown)} (choose from {', '.join(SCENARIOS)})")
    rows, failed = run_scenarios(
        "bench.bench_atlassian",
        names,
        args,
        ("accounts", "groups", "memberships", "workspaces", "latency_ms", "rate_limit", "concurrency"),
    )
    print(
        f"atlassian: {args.accounts} accounts, {args.groups} groups, {args.memberships} memberships, "
        f"{args.workspaces} workspaces, {args.latency_ms:g} ms latency, concurrency {args.concurrency}"
    )
    head = f"{'scenario':<22}{'wall s':>8}{'span s':>8}{'bound s':>9}{'ratio':>7}{'requests':>10}{'429s':>6}"
    print(head + f"{'RSS MB':>8}  verdict")
    for r in rows:
        ok = r["ratio"] is not None and r["ratio"] <= TARGET_RATIO
        verdict = f"{'ok' if ok else 'MISS'} (target <= {TARGET_RATIO}x)"
        print(
            f"{r['scenario']:<22}{r['wall_s']:>8.2f}{r['upstream_span_s']:>8.2f}{r['lower_bound_s']:>9.2f}"
            f"{r['ratio']:>7.2f}"
            f"{r['requests']:>10}{r['rate_limited_429']:>6}{r['peak_rss_mb']:>8.1f}  {verdict}"
        )
    for r in rows:
        print(json.dumps(r))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
