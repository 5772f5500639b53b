"""Soak: a Confluence daemon serving hundreds of sync tasks, grants and revokes from the sandbox tenant.

    python -m bench.bench_soak                       # 500 syncs after 50 warm-up syncs
    python -m bench.bench_soak --syncs 60 --warmup 20  # a quick look

The daemon (`baton-confluence-datacenter` with a client id) runs as its own process, exactly as deployed,
against the sandbox tenant (in this process; access tokens live `--token-ttl` seconds, so the daemon keeps
exchanging new ones) and a small Confluence sandbox (its own process). Tasks go one at a time: a sync, and
every `--grant-every` syncs a group-membership grant and its revoke.

Printed after the warm-up and at the end: the daemon's RSS, the RSS of its whole process tree (the c1z
writer's forkserver and children included), its open file descriptors and threads. Target: RSS grows at
most 5% from the warm-up sample to the end; FDs do not grow; threads do not grow over the second half of
the run (asyncio's default executor may add a worker once, the first time two blocking calls overlap).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.tenant import TenantHandle, start_tenant
from connector.sdk import model

TARGET_GROWTH = 0.05
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Sample:
    tasks: int
    syncs: int
    rss_mb: float
    tree_rss_mb: float
    processes: int
    fds: int
    threads: int


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def sample(pid: int, tasks: int, syncs: int) -> Sample:
    tree = 0.0
    procs = _descendants(pid)
    for p in procs:
        with contextlib.suppress(OSError):  # a child that just ended
            tree += _rss_mb(p)
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        threads = next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))
    return Sample(
        tasks=tasks,
        syncs=syncs,
        rss_mb=round(_rss_mb(pid), 1),
        tree_rss_mb=round(tree, 1),
        processes=len(procs),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=threads,
    )


def _start_confluence(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "connector.sandbox.confluence.server", "--port", "0"]
    cmd += ["--users", str(args.users), "--groups", str(args.groups)]
    cmd += ["--memberships", str(args.memberships), "--spaces", str(args.spaces)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("CONFLUENCE_SANDBOX_URL="):
        proc.kill()
        raise SystemExit(f"the Confluence sandbox did not start: {line!r}")
    return proc, line.split("=", 1)[1]


def _grant_target(args: argparse.Namespace) -> tuple[str, str]:
    """A group and a licensed user outside it, from the same seeded data the sandbox generated."""
    data = sandbox_data.sized(args.users, args.groups, args.memberships, args.spaces)
    for group in data.groups.values():
        for user in data.users.values():
            if user.licensed and not group.has(user.username):
                return group.name, user.username
    raise SystemExit("no group / user pair to grant")


async def _run_task(tenant: TenantHandle, task_id: str, within: float) -> None:
    rec = await tenant.wait_finished(task_id, within=within)
    if rec.outcome != "success":
        raise SystemExit(f"{rec.task_type} {task_id} failed: {rec.status_code} {rec.status_message}")


async def soak(args: argparse.Namespace, url: str, work: Path) -> dict[str, object]:
    tenant = await start_tenant(
        data_dir=work / "tenant", next_poll=0.05, next_heartbeat=5.0, token_ttl=args.token_ttl
    )
    env = {
        **os.environ,
        **tenant.env(),
        "BATON_HOSTNAME": url,
        "BATON_ACCESS_TOKEN": "admin-pat",
        "BATON_PROVISIONING": "true",
        "BATON_LOG_LEVEL": "warn",
        "BATON_C1Z_TEMP_DIR": str(work),
    }
    log_path = work / "daemon.log"
    with open(log_path, "wb") as log_fh:
        daemon = subprocess.Popen(  # noqa: ASYNC220 - started once, before any task
            [sys.executable, "-m", "connector.apps.confluence_datacenter.main"],
            env=env,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
        )
    group, user = _grant_target(args)
    ent = model.assignment_entitlement(model.new_resource(group, "group", group), "member")
    principal = model.new_resource(user, "user", user)
    samples: list[Sample] = []
    tasks = 0
    started = time.monotonic()
    try:
        await tenant.wait_hello(within=60)
        total = args.warmup + args.syncs
        for n in range(1, total + 1):
            await _run_task(tenant, tenant.enqueue_sync(), args.task_timeout)
            tasks += 1
            if n % args.grant_every == 0:
                await _run_task(tenant, tenant.enqueue_grant(ent, principal), args.task_timeout)
                finish = tenant.finish_of(tenant.finishes[-1].task_id)
                assert finish is not None and finish.response is not None
                grants = list(getattr(finish.response, "grants", ()))
                revoke = grants[0] if grants else None
                if revoke is not None:
                    await _run_task(tenant, tenant.enqueue_revoke(revoke), args.task_timeout)
                    tasks += 1
                tasks += 1
            if n == args.warmup or n == total or (n > args.warmup and n % args.every == 0):
                s = sample(daemon.pid, tasks, n)
                samples.append(s)
                print(
                    f"  after {n:>4} syncs ({tasks} tasks, {time.monotonic() - started:.0f}s): "
                    f"daemon {s.rss_mb:.1f} MB, tree {s.tree_rss_mb:.1f} MB in {s.processes} processes, "
                    f"{s.fds} fds, {s.threads} threads",
                    flush=True,
                )
    finally:
        daemon.send_signal(signal.SIGTERM)
        # Waited for off the event loop: the tenant (on this loop) must keep answering the daemon's
        # last RPCs while it shuts down.
        try:
            await asyncio.to_thread(daemon.wait, 60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            await asyncio.to_thread(daemon.wait)
        await tenant.close()
    warm, end = samples[0], samples[-1]
    return {
        "syncs": args.syncs,
        "warmup": args.warmup,
        "tasks": tasks,
        "users": args.users,
        "token_ttl_s": args.token_ttl,
        "wall_s": round(time.monotonic() - started, 1),
        "daemon_growth": round(end.rss_mb / warm.rss_mb - 1, 4),
        "tree_growth": round(end.tree_rss_mb / warm.tree_rss_mb - 1, 4),
        "fds_delta": end.fds - warm.fds,
        "threads_delta": end.threads - warm.threads,
        # A leak grows all the time; asyncio's default executor starts a worker the first time two
        # blocking calls overlap and keeps it (at most min(32, CPUs + 4)): judge threads on the second half.
        "threads_delta_second_half": end.threads - samples[len(samples) // 2].threads,
        "samples": [asdict(s) for s in samples],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_soak")
    p.add_argument("--syncs", type=int, default=500, help="syncs measured after the warm-up")
    p.add_argument("--warmup", type=int, default=50, help="syncs before the first sample")
    p.add_argument("--every", type=int, default=100, help="sample every N syncs after the warm-up")
    p.add_argument("--grant-every", type=int, default=10, help="a grant and a revoke every N syncs")
    p.add_argument("--token-ttl", type=int, default=20, help="access token lifetime, seconds")
    p.add_argument("--users", type=int, default=250)
    p.add_argument("--groups", type=int, default=20)
    p.add_argument("--memberships", type=int, default=600)
    p.add_argument("--spaces", type=int, default=10)
    p.add_argument("--task-timeout", type=float, default=300.0)
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = p.parse_args(argv)
    if args.syncs < 1 or args.warmup < 1 or args.grant_every < 1 or args.every < 1:
        p.error("--syncs, --warmup, --every and --grant-every must be at least 1")
    confluence, url = _start_confluence(args)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            result = asyncio.run(soak(args, url, Path(tmp)))
    finally:
        confluence.terminate()
        confluence.wait(timeout=30)
    ok = (
        result["daemon_growth"] <= TARGET_GROWTH  # type: ignore[operator]
        and result["tree_growth"] <= TARGET_GROWTH  # type: ignore[operator]
        and result["fds_delta"] <= 0  # type: ignore[operator]
        and result["threads_delta_second_half"] <= 0  # type: ignore[operator]
    )
    print(
        f"soak: {args.syncs} syncs after {args.warmup} warm-up, {args.users} users, "
        f"{args.token_ttl}s tokens: daemon RSS {result['daemon_growth']:+.1%}, "
        f"tree RSS {result['tree_growth']:+.1%}, fds {result['fds_delta']:+d}, "
        f"threads {result['threads_delta']:+d} "
        f"({result['threads_delta_second_half']:+d} in the second half)  "
        f"{'ok' if ok else 'MISS'} (target <= {TARGET_GROWTH:.0%}, fds and threads flat)"
    )
    print(json.dumps(result))
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
