"""Pieces shared by the app benchmarks."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def run_scenarios(
    module: str, names: Iterable[str], args: argparse.Namespace, flags: Sequence[str]
) -> tuple[list[dict[str, Any]], bool]:
    """Run each scenario as `python -m <module> --single NAME` in its own process, so each peak RSS is that
    scenario's own; pass `flags` (argparse dests) through. Returns the JSON rows and whether any failed."""
    rows: list[dict[str, Any]] = []
    failed = False
    for name in names:
        cmd = [sys.executable, "-m", module, "--single", name]
        for flag in flags:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            failed = True
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows, failed
