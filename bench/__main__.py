"""`make bench`: every benchmark scenario, each in its own process so peak RSS is that scenario's own.

Usage: python -m bench [NAME ...]   (names: synthetic, confluence, expansion, atlassian, soak; default: all)
"""

from __future__ import annotations

import subprocess
import sys
import time

SCENARIOS = {
    "synthetic": "bench.synthetic",
    "confluence": "bench.bench_confluence",
    "expansion": "bench.bench_expansion",
    "atlassian": "bench.bench_atlassian",
    "soak": "bench.bench_soak",
}


def main(argv: list[str]) -> int:
    names = argv or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(
            f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr
        )
        return 2
    failed: list[str] = []
    for name in names:
        print(f"\n=== {name} ({SCENARIOS[name]}) ===", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", SCENARIOS[name]])
        print(f"--- {name}: exit {rc} after {time.monotonic() - started:.1f}s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
