"""What a benchmark sees of a sync over time: upstream requests, phases, the process tree's memory and CPU.

* `RequestLog` is an UpstreamClient hook: each attempt's (start, end) on the monotonic clock, from which
  the busy share of the connection slots over any span is the time integral of requests in flight divided
  by slots x span.
* `PhaseClock` is an `on_phase` callback: when each phase started.
* `TreeSampler` reads /proc every few milliseconds for this process and its descendants (the store's
  forkserver and writer process), leaving out the given pids (the sandbox): the peak of the summed RSS
  (what the machine had to hold at once) and each process's CPU seconds at its last sample.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from connector.sdk.http import RequestEvent

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class RequestLog:
    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []

    def __call__(self, event: RequestEvent) -> None:
        end = time.monotonic()
        self.spans.append((end - event.elapsed, end))

    def started_in(self, t0: float, t1: float) -> int:
        return sum(1 for s, _ in self.spans if t0 <= s < t1)

    def busy_share(self, t0: float, t1: float, slots: int) -> float:
        if t1 <= t0 or slots <= 0:
            return 0.0
        busy = sum(max(0.0, min(e, t1) - max(s, t0)) for s, e in self.spans)
        return busy / (slots * (t1 - t0))

    def mean_latency(self, t0: float, t1: float) -> float:
        inside = [e - s for s, e in self.spans if t0 <= s < t1]
        return sum(inside) / len(inside) if inside else 0.0

    @property
    def last_end(self) -> float:
        return max((e for _, e in self.spans), default=0.0)


class PhaseClock:
    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        self.started.setdefault(name, time.monotonic())

    def span(self, phase: str, next_phase: str) -> tuple[float, float]:
        return self.started[phase], self.started[next_phase]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            out.extend(int(c) for c in text.split())
    except OSError:
        pass
    return out


def _stat(pid: int) -> tuple[int, float] | None:
    """(RSS bytes, CPU seconds) of one process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state is field 3, utime 14, stime 15, rss 24 (1-based, as in proc(5)).
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    return int(fields[21]) * _PAGE, cpu


def process_cpu_s(pid: int) -> float:
    stat = _stat(pid)
    return stat[1] if stat is not None else 0.0


class TreeSampler:
    def __init__(self, exclude: Iterable[int] = (), interval_s: float = 0.01) -> None:
        self.exclude = set(exclude)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.cpu: dict[int, float] = {}
        self.peak_each: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[int]:
        pids, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            if pid in self.exclude:
                continue
            pids.append(pid)
            todo.extend(_children(pid))
        return pids

    def _run(self) -> None:
        while True:
            total = 0
            for pid in self._tree():
                stat = _stat(pid)
                if stat is None:
                    continue
                rss, cpu = stat
                total += rss
                self.cpu[pid] = cpu
                self.peak_each[pid] = max(self.peak_each.get(pid, 0), rss)
            self.peak_bytes = max(self.peak_bytes, total)
            if self._stop.wait(self.interval_s):
                return

    @property
    def cpu_others_s(self) -> float:
        """CPU seconds of the descendants (the store's processes), at their last samples."""
        me = os.getpid()
        return sum(c for pid, c in self.cpu.items() if pid != me)
