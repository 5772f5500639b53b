"""The ops HTTP server: /live, /ready, /health (cached connector Validate) and /metrics.

The JSON bodies follow the baton-sdk health-check shape, ``{"status", "timestamp", "details"}`` with an
RFC 3339 UTC timestamp at second precision and ``details`` omitted when empty, so probes and scripts
written for Go connectors keep working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from connector.ops.logging import redact_text
from connector.ops.metrics import CONTENT_TYPE, Metrics

__all__ = ["DEFAULT_TENANT_STALE_AFTER", "DaemonHealth", "OpsServer"]

# The daemon polls at least every 5 minutes (the SDK's max poll interval) and heartbeats running syncs
# every 30 s, so three missed poll intervals without any successful tenant call means the link is gone,
# not merely slow.
DEFAULT_TENANT_STALE_AFTER = 3 * 300.0

# Error texts end up in probe bodies (readable by anything that can reach the port): bounded, and with
# registered secrets and credential-shaped substrings redacted.
_MAX_ERROR_CHARS = 500


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(status: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "timestamp": _timestamp()}
    if details:
        body["details"] = details
    return body


def _short(text: str) -> str:
    text = redact_text(text)
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


class DaemonHealth:
    """Readiness state fed by the daemon: bootstrap Hello done, and the tenant answering recently.

    Ready means: Hello succeeded, the most recent tenant call succeeded, and that success is no older
    than ``stale_after`` seconds (a wedged poll loop that stops calling the tenant is not ready either).
    """

    def __init__(
        self,
        *,
        stale_after: float = DEFAULT_TENANT_STALE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stale_after = stale_after
        self._clock = clock
        self._hello_done = False
        self._last_ok: float | None = None
        self._last_error: str | None = None

    def mark_hello_done(self) -> None:
        self._hello_done = True
        # The Hello itself was a successful tenant call.
        self.mark_tenant_ok()

    def mark_tenant_ok(self) -> None:
        self._last_ok = self._clock()
        self._last_error = None

    def mark_tenant_error(self, err: str) -> None:
        self._last_error = _short(err) or "tenant call failed"

    @property
    def hello_done(self) -> bool:
        return self._hello_done

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        if not self._hello_done:
            return "bootstrap hello not done"
        if self._last_error is not None:
            return "tenant unreachable"
        if self._last_ok is None or self._clock() - self._last_ok > self._stale_after:
            return "no successful tenant call recently"
        return None

    def details(self) -> dict[str, str]:
        details = {"hello_done": "true" if self._hello_done else "false"}
        if self._last_ok is not None:
            details["tenant_last_ok_age_seconds"] = f"{max(0.0, self._clock() - self._last_ok):.1f}"
        if self._last_error is not None:
            details["tenant_error"] = self._last_error
        return details


@dataclass(frozen=True)
class _ValidateResult:
    at: float
    error: str | None


class OpsServer:
    """aiohttp server for probes and Prometheus; runs on the daemon's event loop."""

    def __init__(
        self,
        metrics: Metrics,
        health: DaemonHealth,
        validate: Callable[[], Awaitable[None]],
        *,
        validate_cache_seconds: float = 30.0,
        validate_timeout: float = 30.0,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._validate = validate
        self._cache_seconds = validate_cache_seconds
        self._validate_timeout = validate_timeout
        self._cached: _ValidateResult | None = None
        # Concurrent /health requests share one Validate call instead of each reaching the upstream.
        self._validate_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None

        app = web.Application()
        app.router.add_route("*", "/live", self._live)
        app.router.add_route("*", "/ready", self._ready)
        app.router.add_route("*", "/health", self._health_check)
        app.router.add_route("GET", "/metrics", self._metrics_handler)
        self._app = app

    async def start(self, host: str, port: int) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        if self._runner is not None:
            raise RuntimeError("ops server already started")
        # Probes hit these endpoints every few seconds; access logs would drown the useful lines.
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno, f"cannot listen on {host}:{port} for health checks: {exc.strerror}"
            ) from exc
        self._runner = runner
        addresses = runner.addresses
        return int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------------ handlers

    async def _live(self, _request: web.Request) -> web.Response:
        return web.json_response(_body("alive"))

    async def _ready(self, _request: web.Request) -> web.Response:
        reason = self._health.not_ready_reason()
        details = self._health.details()
        if reason is None:
            return web.json_response(_body("ready", details))
        details["reason"] = reason
        return web.json_response(_body("not_ready", details), status=503)

    async def _health_check(self, _request: web.Request) -> web.Response:
        result = await self._validated()
        if result.error is None:
            return web.json_response(_body("healthy"))
        details = {"error": "connector validation failed", "validation_error": result.error}
        return web.json_response(_body("unhealthy", details), status=503)

    async def _metrics_handler(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _validated(self) -> _ValidateResult:
        async with self._validate_lock:
            now = time.monotonic()
            cached = self._cached
            if cached is not None and now - cached.at < self._cache_seconds:
                return cached
            error: str | None = None
            try:
                async with asyncio.timeout(self._validate_timeout):
                    await self._validate()
            except TimeoutError:
                error = f"validation timed out after {self._validate_timeout:g}s"
            except Exception as exc:  # any connector failure is reported, never raised to the prober
                error = _short(str(exc) or type(exc).__name__)
            # Failures are cached too: a failing upstream is exactly the one not to hammer.
            self._cached = _ValidateResult(at=time.monotonic(), error=error)
            return self._cached
