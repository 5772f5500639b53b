"""Live progress of a one-shot sync on a terminal: one stderr line rewritten in place.

Shown only when stderr is a terminal (a pipe, a file or a container log gets the plain log lines and
nothing else). The line names the phase and counts what the engine has handed to the store so far, the
connector calls and the upstream requests with their rate:

    grants  resources 12,034  entitlements 3,100  grants 48,211  requests 2,310 (41/s)  56s
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from connector.sync.report import SyncReport

INTERVAL = 0.5
_CLEAR = "\r\x1b[K"  # back to column 0 and erase the line


class Progress:
    def __init__(
        self,
        report: SyncReport,
        upstream_requests: Callable[[], int],
        stream: TextIO,
        *,
        interval: float = INTERVAL,
    ) -> None:
        self.report = report
        self.upstream_requests = upstream_requests
        self.stream = stream
        self.interval = interval
        self.current = "starting"
        self.started = time.monotonic()
        self.requests_at_start = self._requests()
        self._last: tuple[float, int] = (self.started, self.requests_at_start)
        self._rate = 0.0
        self._task: asyncio.Task[None] | None = None
        self._shown = False
        self._swapped: list[logging.StreamHandler[TextIO]] = []

    @classmethod
    def for_terminal(
        cls, report: SyncReport, upstream_requests: Callable[[], int], stream: TextIO | None = None
    ) -> Progress | None:
        out = stream if stream is not None else sys.stderr
        try:
            tty = out.isatty()
        except (AttributeError, ValueError):
            tty = False
        return cls(report, upstream_requests, out) if tty else None

    def _requests(self) -> int:
        try:
            return int(self.upstream_requests())
        except Exception:
            return 0

    def phase(self, name: str) -> None:
        if name:
            self.current = name
            self.draw()

    def line(self) -> str:
        now = time.monotonic()
        requests = self._requests() - self.requests_at_start
        since, before = self._last
        if now - since >= self.interval:
            self._rate = (requests - (before - self.requests_at_start)) / (now - since)
            self._last = (now, requests + self.requests_at_start)
        rows = self.report.live_rows
        return (
            f"{self.current:<18} resources {rows.get('resources', 0):,}  "
            f"entitlements {rows.get('entitlements', 0):,}  grants {rows.get('grants', 0):,}  "
            f"requests {requests:,} ({self._rate:.0f}/s)  {now - self.started:.0f}s"
        )

    def draw(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(_CLEAR + self.line())
            self.stream.flush()
            self._shown = True

    def wipe(self) -> None:
        if self._shown:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write(_CLEAR)
                self.stream.flush()
            self._shown = False

    def start(self) -> None:
        # Log lines to the same terminal go through _Interleave, so they never share a line with progress.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream:
                handler.setStream(_Interleave(self))  # type: ignore[arg-type]
                self._swapped.append(handler)
        self.draw()
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.draw()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for handler in self._swapped:
            handler.setStream(self.stream)
        self._swapped.clear()
        self.wipe()


class _Interleave:
    """The terminal as the log handlers see it while progress is shown: the progress line is wiped before
    each log line (the next tick draws it again below)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def write(self, text: str) -> int:
        self.progress.wipe()
        return self.progress.stream.write(text)

    def flush(self) -> None:
        self.progress.stream.flush()
