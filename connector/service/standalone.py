"""The standalone scheduler: periodic full syncs to BATON_FILE without a tenant.

`--sync-interval DURATION` runs a sync at start and then every interval (measured from the end of one sync
to the start of the next, so a slow sync never overlaps the next one). Each sync is written atomically
(the engine writes a temp file and renames it over `--file`), so a reader never sees a half-written c1z.
Without an interval it syncs once. SIGTERM/SIGINT stop it: a running sync is cancelled and the previous
file is left intact. A one-shot sync stopped that way exits 128 + the signal number (130, 143) with one
line saying so, so that `sync && upload` or a CronJob does not take it for a success; a periodic run
stopped by a signal is a normal shutdown (0). On a terminal a one-shot sync shows live progress.

Health for the ops server: Hello counts as done at start; a successful sync marks the link OK (refreshed
while idle, so readiness does not go stale between long intervals), a failed one marks it in error until
the next success.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.ops.health import DaemonHealth
from connector.ops.logging import get_logger
from connector.ops.metrics import Metrics
from connector.progress import Progress
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.report import SyncReport

log = get_logger(__name__)

HEALTH_REFRESH = 60.0


def _interval_seconds(value: Any) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
    return seconds if seconds > 0 else None


async def run_standalone(
    connector_factory: Callable[..., Any],
    settings: Any,
    *,
    metrics: Metrics | None = None,
    health: DaemonHealth | None = None,
    stop: asyncio.Event | None = None,
    interval: float | None = None,
    output: Path | None = None,
    install_signal_handlers: bool = True,
    max_runs: int | None = None,
) -> int:
    """Sync now and then every `interval` seconds (default: settings.sync_interval) to `output` (default:
    settings.file). Returns 0 when stopped; in one-shot mode 1 if the sync failed."""
    from connector.service.daemon import build_connector  # shared factory handling
    from connector.sync.engine import SyncOptions, run_sync
    from connector.sync.report import format_report

    every = interval if interval is not None else _interval_seconds(getattr(settings, "sync_interval", None))
    target = output if output is not None else Path(getattr(settings, "file", "sync.c1z"))
    temp = getattr(settings, "c1z_temp_dir", None)
    temp_dir = Path(temp) if temp else None
    stop_event = stop if stop is not None else asyncio.Event()

    try:
        connector = await build_connector(connector_factory, settings, metrics)
    except Exception as err:
        print(f"error: cannot start the connector: {err}", file=sys.stderr, flush=True)
        return 2
    runtime = ConnectorRuntime(connector, provisioning=False)
    options = SyncOptions(
        skip_entitlements_and_grants=bool(getattr(settings, "skip_entitlements_and_grants", False)),
        skip_grants=bool(getattr(settings, "skip_grants", False)),
        sync_resource_type_ids=tuple(getattr(settings, "sync_resource_types", ()) or ()),
        targeted_resources=tuple(getattr(settings, "sync_resources", ()) or ()),
        concurrency=int(getattr(settings, "sync_concurrency", 8)),
        skip_full_sync=bool(getattr(settings, "skip_full_sync", False)),
    )

    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        stop_event.set()

    if install_signal_handlers:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
    if health is not None:
        health.mark_hello_done()

    runs = 0
    last_ok = False
    exit_code = 0
    try:
        while not stop_event.is_set():
            runs += 1
            started = time.monotonic()
            if metrics is not None:
                metrics.sync_started()

            live = SyncReport(output=str(target))
            progress = (
                Progress.for_terminal(live, connector.upstream_request_count) if every is None else None
            )

            def on_phase(phase: str, progress: Progress | None = progress) -> None:
                if metrics is not None:
                    metrics.sync_phase(phase)
                if progress is not None:
                    progress.phase(phase)

            sync = asyncio.create_task(
                run_sync(
                    runtime,
                    target,
                    options,
                    temp_dir=temp_dir,
                    on_phase=on_phase,
                    upstream_requests=connector.upstream_request_count,
                    report=live,
                )
            )
            stopper = asyncio.create_task(stop_event.wait())
            try:
                if progress is not None:
                    progress.start()
                await asyncio.wait({sync, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if progress is not None:
                    await progress.stop()
            if not sync.done():
                sync.cancel()
                with contextlib.suppress(BaseException):
                    await sync
                if metrics is not None:
                    metrics.sync_finished("cancelled", None, time.monotonic() - started, None)
                log.info("standalone_sync_cancelled", reason="shutdown")
                if every is None and received:
                    sig = received[0]
                    print(
                        f"error: sync interrupted by {sig.name}: no file written "
                        f"({target} is as it was before)",
                        file=sys.stderr,
                        flush=True,
                    )
                    exit_code = 128 + int(sig)
                break
            duration = time.monotonic() - started
            exc = sync.exception()
            if exc is not None:
                last_ok = False
                if metrics is not None:
                    metrics.sync_finished("failure", None, duration, None)
                if health is not None:
                    health.mark_tenant_error(f"sync failed: {exc}")
                log.error("standalone_sync_failed", error=str(exc), run=runs)
                if every is None:
                    reason = str(exc) if str(exc).startswith("sync failed") else f"sync failed: {exc}"
                    print(f"error: {reason}", file=sys.stderr, flush=True)
                    exit_code = 1
            else:
                last_ok = True
                report = sync.result()
                size = target.stat().st_size if target.exists() else None
                if metrics is not None:
                    metrics.sync_finished("success", report, duration, size)
                if health is not None:
                    health.mark_tenant_ok()
                if every is None:
                    print(format_report(report), flush=True)
                    print(
                        f"wrote {target} (look inside: python -m connector inspect {target} stats)",
                        flush=True,
                    )
                summary = report.to_dict() if hasattr(report, "to_dict") else {}
                log.info(
                    "standalone_sync_done",
                    file=str(target),
                    run=runs,
                    duration=round(duration, 3),
                    bytes=size,
                    report=summary,
                )
            if every is None or (max_runs is not None and runs >= max_runs):
                break
            # Wait for the next run; keep readiness fresh while the last sync is good.
            next_at = time.monotonic() + every
            while not stop_event.is_set():
                remaining = next_at - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), min(remaining, HEALTH_REFRESH))
                if last_ok and health is not None:
                    health.mark_tenant_ok()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await runtime.close()
    return exit_code
