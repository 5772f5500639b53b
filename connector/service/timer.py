"""The daemon's notion of time: one object for every wait and deadline of the task loop and the task runner.

Production uses `Timer()` (the monotonic clock and `asyncio.sleep`). Tests substitute a timer that records
each wait with its purpose and sleeps less (or not at all) while advancing its clock by the full amount, so
the real backoff and polling schedules (1 s doubling to 5 min, n² up to 60 s, the 2-minute FinishTask
window) can be checked exactly without waiting for them, and without wall-clock tolerances that flake on a
loaded machine.

Purposes: "hello_backoff", "poll", "poll_error", "heartbeat", "finish_retry", "upload_retry".
"""

from __future__ import annotations

import asyncio
import time


class Timer:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float, purpose: str) -> None:
        """Wait `seconds` (a no-op for 0 or less). `purpose` names the schedule the wait belongs to."""
        if seconds > 0:
            await asyncio.sleep(seconds)


REAL_TIMER = Timer()
