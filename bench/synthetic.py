"""Synthetic end-to-end sync benchmark: an in-process connector of configurable size, no upstream latency.

    python -m bench.synthetic                     # 100k users, 5k groups, 1M grants + an RSS-scaling run
    python -m bench.synthetic --users N --groups N --grants N [--nested-every K] [--single]

The connector generates its organisation on the fly from indices (it stores nothing), so what is measured
is the engine: runtime calls, row building, SQLite, grant expansion, zstd, atomic write. Every
`--nested-every`-th group also contains the next group (a GrantExpandable grant), so expansion does real
work. Groups list their members through the SDK's GrantEncoder, as the Confluence and Atlassian
connectors do. Each size runs in its own process, so `ru_maxrss` is that run's own peak; the sync's c1z
writer runs in a child process and reports its own peak, and the figure checked against the target is the
sum of the two. The default run also repeats the sync with a quarter of the grants to show that peak RSS
does not grow with the number of grants.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message

from connector.ops.logging import configure_logging
from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    annotation_trait_pb2,
    connector_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.sdk import model
from connector.sdk.encoded_grants import EncodedGrants, GrantEncoder
from connector.sdk.interface import Connector, Page, ResourceSyncer
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncOptions, run_sync

USER = model.resource_type("user", "User", [model.Trait.TRAIT_USER])
GROUP = model.resource_type("group", "Group", [model.Trait.TRAIT_GROUP])

TARGET_GRANTS_PER_S = 100_000
TARGET_RSS_MB = 250


class Org:
    """Deterministic organisation: group g has members users[(g * 7919 + k) % users] for k < size(g)."""

    def __init__(self, users: int, groups: int, grants: int, nested_every: int) -> None:
        self.users = users
        self.groups = max(1, groups)
        self.nested_every = nested_every
        self.nested = [g for g in range(self.groups - 1) if nested_every and g % nested_every == 0]
        self.nested_set = set(self.nested)
        user_grants = max(0, grants - len(self.nested))
        base, extra = divmod(user_grants, self.groups)
        self.base, self.extra = base, extra
        if base + 1 > users:
            raise SystemExit(f"{grants} grants over {groups} groups needs more than {users} users")

    def members(self, g: int) -> int:
        return self.base + (1 if g < self.extra else 0)

    def member(self, g: int, k: int) -> int:
        return (g * 7919 + k) % self.users


_USER_TRAIT_URL = "type.googleapis.com/c1.connector.v2.UserTrait"


def _user(i: int) -> resource_pb2.Resource:
    """A user as a connector would build it (UserTrait with email, login, status, profile), built
    directly rather than through the model helpers, so that the benchmark measures the engine."""
    trait = annotation_trait_pb2.UserTrait(
        emails=[annotation_trait_pb2.UserTrait.Email(address=f"user{i}@example.com", is_primary=True)],
        status=annotation_trait_pb2.UserTrait.Status(
            status=annotation_trait_pb2.UserTrait.Status.STATUS_ENABLED
        ),
        account_type=annotation_trait_pb2.UserTrait.ACCOUNT_TYPE_HUMAN,
        login=f"user{i}",
    )
    trait.profile.fields["user_id"].string_value = f"u{i}"
    return resource_pb2.Resource(
        id=resource_pb2.ResourceId(resource_type="user", resource=f"u{i}"),
        display_name=f"User {i}",
        annotations=[
            any_pb2.Any(type_url=_USER_TRAIT_URL, value=trait.SerializeToString(deterministic=True))
        ],
    )


def _group(g: int) -> resource_pb2.Resource:
    return model.group_resource(f"Group {g}", GROUP, f"g{g}", profile={"group_id": f"g{g}"})


def _index(token: str) -> int:
    return int(token) if token else 0


class Users(ResourceSyncer):
    resource_type = USER

    def __init__(self, org: Org, page: int) -> None:
        self.org, self.page = org, page

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        start = _index(page_token)
        end = min(start + self.page, self.org.users)
        return Page([_user(i) for i in range(start, end)], str(end) if end < self.org.users else "")

    async def entitlements(
        self, resource: resource_pb2.Resource, page_token: str
    ) -> Page[entitlement_pb2.Entitlement]:
        return Page()

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        return Page()


class Groups(ResourceSyncer):
    resource_type = GROUP

    def __init__(self, org: Org, page: int) -> None:
        self.org, self.page = org, page

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        start = _index(page_token)
        end = min(start + self.page, self.org.groups)
        return Page([_group(g) for g in range(start, end)], str(end) if end < self.org.groups else "")

    async def entitlements(
        self, resource: resource_pb2.Resource, page_token: str
    ) -> Page[entitlement_pb2.Entitlement]:
        return Page([model.assignment_entitlement(resource, "member", grantable_to=[USER, GROUP])])

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        org = self.org
        g = int(resource.id.resource[1:])
        total = org.members(g)
        start = _index(page_token)
        end = min(start + self.page, total)
        # Built the way a connector built on the SDK does it: one GrantEncoder per entitlement.
        enc = GrantEncoder(resource, "member")
        items = EncodedGrants()
        users = self.org.users
        enc.add_all(items, "user", [f"u{(g * 7919 + k) % users}" for k in range(start, end)])
        nxt = str(end) if end < total else ""
        if not nxt and g in org.nested_set:
            child = g + 1
            enc.add(
                items,
                "group",
                f"g{child}",
                annotations=[
                    annotation_grant_pb2.GrantExpandable(entitlement_ids=[f"group:g{child}:member"])
                ],
            )
        return Page(items, nxt)


class _Timed(ResourceSyncer):
    """Wraps a syncer and adds the time spent inside it to `clock[0]` (connector time, not engine)."""

    def __init__(self, inner: ResourceSyncer, clock: list[float]) -> None:
        self.inner = inner
        self.resource_type = inner.resource_type
        self.clock = clock

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        t = time.perf_counter()
        try:
            return await self.inner.list(parent, page_token)
        finally:
            self.clock[0] += time.perf_counter() - t

    async def entitlements(
        self, resource: resource_pb2.Resource, page_token: str
    ) -> Page[entitlement_pb2.Entitlement]:
        t = time.perf_counter()
        try:
            return await self.inner.entitlements(resource, page_token)
        finally:
            self.clock[0] += time.perf_counter() - t

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        t = time.perf_counter()
        try:
            return await self.inner.grants(resource, page_token)
        finally:
            self.clock[0] += time.perf_counter() - t


class SyntheticConnector(Connector):
    def __init__(self, org: Org, page: int = 500, user_skip: bool = False) -> None:
        self.org = org
        self.page = page
        self.clock = [0.0]
        if user_skip:
            USER.annotations.append(model.pack(model.skip_entitlements_and_grants()))

    def metadata(self) -> connector_pb2.ConnectorMetadata:
        return connector_pb2.ConnectorMetadata(display_name="Synthetic", description="benchmark connector")

    async def validate(self) -> list[Message]:
        return []

    def syncers(self) -> Sequence[ResourceSyncer]:
        return [
            _Timed(Users(self.org, self.page), self.clock),
            _Timed(Groups(self.org, self.page), self.clock),
        ]


class RssSampler:
    """Samples VmRSS from /proc/self/status while the run is in progress."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, _vm_rss_kib())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, _vm_rss_kib())


def _vm_rss_kib() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def _run_once(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    org = Org(args.users, args.groups, args.grants, args.nested_every)
    connector = SyntheticConnector(org, args.page_size, args.user_skip)
    runtime = ConnectorRuntime(connector)
    out = workdir / "synthetic.c1z"
    phases: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    with RssSampler() as sampler:
        report = await run_sync(
            runtime,
            out,
            SyncOptions(concurrency=args.concurrency),
            temp_dir=workdir,
            on_phase=lambda p: phases.append((p, time.perf_counter() - t0)),
        )
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "users": args.users,
        "groups": args.groups,
        "grants_requested": args.grants,
        "grants_direct": report.grants_direct,
        "grants_expanded": report.grants_expanded,
        "resources": report.resources_total,
        "entitlements": report.entitlements,
        "wall_s": round(wall, 2),
        "grants_per_s": round(report.grants_direct / wall) if wall else 0,
        # The sync's two processes: this one (connector and engine) and the c1z writer; the sum of the
        # two peaks bounds what the sync ever held.
        "parent_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "writer_peak_rss_mb": round(report.writer_peak_rss_kib / 1024, 1),
        "peak_rss_mb": round(
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + report.writer_peak_rss_kib) / 1024, 1
        ),
        "sampled_vmrss_mb": round(sampler.peak_kib / 1024, 1),
        "c1z_bytes": report.c1z_bytes,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "connector_s": round(connector.clock[0], 2),
        "connector_calls": report.connector_calls,
        "phases": {k: round(v, 2) for k, v in report.phase_durations.items()},
    }


def _single(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory(prefix="bench-synthetic") as tmp:
        result = asyncio.run(_run_once(args, Path(tmp)))
        left = sorted(p.name for p in Path(tmp).iterdir())
    result["temp_left_behind"] = [n for n in left if n != "synthetic.c1z"]
    return result


def _child(args: argparse.Namespace, grants: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.synthetic",
        "--single",
        "--json",
        f"--users={args.users}",
        f"--groups={args.groups}",
        f"--grants={grants}",
        f"--nested-every={args.nested_every}",
        f"--page-size={args.page_size}",
        f"--concurrency={args.concurrency}",
    ]
    if args.user_skip:
        cmd.append("--user-skip")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise SystemExit(f"benchmark run with {grants} grants failed:\n{out.stderr.strip()}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _print(result: dict[str, Any]) -> None:
    print(
        f"users={result['users']} groups={result['groups']} grants={result['grants_direct']} "
        f"(+{result['grants_expanded']} expanded)\n"
        f"  wall time     {result['wall_s']:.2f} s\n"
        f"  grants/s      {result['grants_per_s']:,} (target >= {TARGET_GRANTS_PER_S:,})\n"
        f"  peak RSS      {result['peak_rss_mb']:.1f} MB (target <= {TARGET_RSS_MB} MB): engine process "
        f"{result['parent_peak_rss_mb']:.1f} MB ru_maxrss "
        f"({result['sampled_vmrss_mb']:.1f} MB sampled VmRSS) "
        f"+ c1z writer process {result['writer_peak_rss_mb']:.1f} MB\n"
        f"  c1z           {result['c1z_bytes']:,} bytes\n"
        f"  cpu time      {result['cpu_s']:.2f} s (user+system, engine process only); "
        f"{result['connector_s']:.2f} s inside the synthetic connector's own code\n"
        f"  phases        {', '.join(f'{k} {v:.2f}s' for k, v in result['phases'].items())}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--groups", type=int, default=5_000)
    p.add_argument("--grants", type=int, default=1_000_000)
    p.add_argument(
        "--nested-every", type=int, default=50, help="every Kth group contains the next group (0: none)"
    )
    p.add_argument("--page-size", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--user-skip", action="store_true", help="annotate the user type with SkipEntitlementsAndGrants"
    )
    p.add_argument("--single", action="store_true", help="one run in this process (no scaling comparison)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = p.parse_args(argv)
    if args.single:
        result = _single(args)
        if args.json:
            print(json.dumps(result))
        else:
            _print(result)
        return 0
    results = []
    for grants in (args.grants, max(1, args.grants // 4)):
        result = _child(args, grants)
        _print(result)
        results.append(result)
    big, small = results
    growth = big["peak_rss_mb"] - small["peak_rss_mb"]
    print(
        f"RSS scaling: {small['grants_direct']:,} grants -> {small['peak_rss_mb']:.1f} MB, "
        f"{big['grants_direct']:,} grants -> {big['peak_rss_mb']:.1f} MB (difference {growth:+.1f} MB)"
    )
    ok = big["grants_per_s"] >= TARGET_GRANTS_PER_S and big["peak_rss_mb"] <= TARGET_RSS_MB
    print("targets met" if ok else "targets NOT met", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
