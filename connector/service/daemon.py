"""Service mode: serve a ConductorOne tenant until told to stop.

`run_daemon` wires the pieces: credentials (env or files) → token source → tenant channel → connector
runtime → task runner → scheduler, installs SIGTERM/SIGINT handlers and returns the exit code:

- 0 after a clean shutdown;
- 2 for unusable configuration (client id/secret, CA file), with one line on stderr that never holds the
  secret;
- the gRPC code of a fatal bootstrap Hello failure (e.g. 16 UNAUTHENTICATED, 7 PERMISSION_DENIED), as the
  Go daemon does (spec §6.7).

Without a client id it runs the standalone scheduler instead (`standalone.run_standalone`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from connector.ops.health import DaemonHealth
from connector.ops.logging import get_logger
from connector.ops.metrics import Metrics
from connector.pb.c1.connector.v2 import resource_pb2
from connector.sdk.crypto import CredentialHelper
from connector.sdk.interface import Connector, PlaintextSecret
from connector.sdk.runtime import ConnectorRuntime
from connector.service.credentials import (
    CredentialError,
    CredentialSource,
    TokenSource,
    make_ssl_context,
)
from connector.service.proxy import describe as describe_proxy
from connector.service.proxy import proxy_for
from connector.service.scheduler import Scheduler, SchedulerConfig, parse_go_bool
from connector.service.tasks import TaskConfig, TaskRunner, package_version, sweep_leftovers
from connector.service.tenant import TenantClient, TenantEndpoint, root_certificates
from connector.service.timer import REAL_TIMER, Timer

log = get_logger(__name__)

ConnectorFactory = Callable[[], Connector | Awaitable[Connector]]


@dataclass(frozen=True)
class DaemonOptions:
    """Timing knobs with the production defaults; tests shrink them to keep runs fast."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    install_signal_handlers: bool = True
    # Every wait and deadline of the task loop and the task runner (tests record and shorten them).
    timer: Timer = REAL_TIMER


async def build_connector(
    factory: Callable[..., Any], settings: Any, metrics: Metrics | None = None
) -> Connector:
    """The CLI passes a zero-argument factory; accept `factory(settings)` too. With `metrics`, the
    connector's upstream requests and missing upstream capabilities are counted."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    result = factory(settings) if params else factory()
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, Connector):
        raise TypeError(f"connector factory returned {type(result).__name__}, not a Connector")
    if metrics is not None:
        hook = metrics.upstream_hook()
        for client in result.upstream_clients():
            client.add_hook(hook)
        result.on_capability_missing(metrics.capability_missing)
    return result


class _RotatingCredentials:
    """The runtime's CredentialResolver, always built on the current client secret, so encrypted
    passwords sent after a rotation (to the new key id) can be decrypted without a restart."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    def _helper(self) -> CredentialHelper:
        return CredentialHelper(self._tokens.credentials.key)

    def resolve(
        self,
        options: resource_pb2.CredentialOptions,
        encryption_configs: Sequence[resource_pb2.EncryptionConfig],
    ) -> Any:
        return self._helper().resolve(options, encryption_configs)

    def encrypt(
        self, secrets: Sequence[PlaintextSecret], configs: Sequence[resource_pb2.EncryptionConfig]
    ) -> list[resource_pb2.EncryptedData]:
        return self._helper().encrypt(secrets, configs)

    def check_configs(self, configs: Sequence[resource_pb2.EncryptionConfig]) -> None:
        self._helper().check_configs(configs)


def _fail(stream: TextIO, message: str) -> int:
    print(message if message.startswith("error:") else f"error: {message}", file=stream, flush=True)
    return 2


def task_config_from_settings(
    settings: Any, base: TaskConfig | None = None, env: Mapping[str, str] | None = None
) -> TaskConfig:
    env = os.environ if env is None else env
    temp = getattr(settings, "c1z_temp_dir", None) or env.get("BATON_TMPDIR") or None
    return replace(
        base or TaskConfig(),
        provisioning=bool(getattr(settings, "provisioning", False)),
        skip_full_sync=bool(getattr(settings, "skip_full_sync", False)),
        sync_resource_types=tuple(getattr(settings, "sync_resource_types", ()) or ()),
        sync_concurrency=int(getattr(settings, "sync_concurrency", 8)),
        c1z_temp_dir=Path(temp) if temp else None,
    )


async def run_daemon(
    connector_factory: Callable[..., Any],
    settings: Any,
    *,
    metrics: Metrics | None = None,
    health: DaemonHealth | None = None,
    options: DaemonOptions | None = None,
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
    stop: asyncio.Event | None = None,
    app_name: str = "",
) -> int:
    """Run service mode (or the standalone scheduler without a client id); returns the exit code.

    `stop` lets an embedding program (the demo, tests) request the same shutdown as SIGTERM.
    """
    env = os.environ if env is None else env
    err_stream = stderr if stderr is not None else sys.stderr
    opts = options or DaemonOptions()
    source = CredentialSource.from_settings(settings, env)
    if not source.has_client_id:
        from connector.service.standalone import run_standalone

        return await run_standalone(connector_factory, settings, metrics=metrics, health=health, stop=stop)

    # Everything that can be wrong with the configuration is checked before any network I/O.
    try:
        creds = source.load()
        endpoint = TenantEndpoint.resolve(creds.client_id, env.get("BATON_C1_API_HOST"))
        ca_file = getattr(settings, "c1_ca_file", None) or env.get("BATON_C1_CA_FILE") or None
        roots = root_certificates(ca_file)
        ssl_ctx = make_ssl_context(ca_file)
        proxy = proxy_for(endpoint.host, endpoint.port, env)
        temp_dir = task_config_from_settings(settings, env=env).c1z_temp_dir
        if temp_dir is not None and not temp_dir.is_dir():
            raise CredentialError(
                f"invalid --c1z-temp-dir / BATON_C1Z_TEMP_DIR ({temp_dir}): not a directory"
            )
    except CredentialError as err:
        return _fail(err_stream, str(err))

    from connector.ops.settings import host_id as settings_host_id

    host_id = settings_host_id(env)
    # Names the C1 client and the connector (the Go SDK sends `<client> baton-sdk/<version>`).
    user_agent = f"{creds.client_id.client_name} {app_name or 'baton-connectors'}/{package_version()}"
    tokens = TokenSource(
        source,
        token_url=endpoint.token_url,
        verify=ssl_ctx,
        timeout=float(getattr(settings, "http_timeout_seconds", 300)),
        user_agent=user_agent,
        metrics=metrics,
        initial=creds,
        proxy=proxy,
    )
    tenant = TenantClient(
        endpoint,
        tokens,
        host_id=host_id,
        user_agent=user_agent,
        root_certificates=roots,
        metrics=metrics,
        proxy=proxy,
    )
    try:
        connector = await build_connector(connector_factory, settings, metrics)
    except Exception as err:
        await tenant.close()
        await tokens.aclose()
        return _fail(err_stream, f"cannot start the connector: {err}")
    runtime = ConnectorRuntime(
        connector,
        provisioning=bool(getattr(settings, "provisioning", False)),
        credentials=_RotatingCredentials(tokens),
    )
    runner = TaskRunner(
        runtime,
        tenant,
        task_config_from_settings(settings, opts.tasks, env),
        metrics=metrics,
        health=health,
        upstream_requests=connector.upstream_request_count,
        package=app_name or "baton-connectors",
        timer=opts.timer,
    )
    sched_cfg = replace(
        opts.scheduler,
        concurrency=int(getattr(settings, "task_concurrency", opts.scheduler.concurrency)),
        shutdown_grace=float(getattr(settings, "shutdown_grace_seconds", opts.scheduler.shutdown_grace)),
        get_tasks=opts.scheduler.get_tasks or parse_go_bool(env.get("BATON_GET_TASKS")),
    )
    scheduler = Scheduler(
        tenant,
        runner,
        config=sched_cfg,
        metrics=metrics,
        health=health,
        package=runner.package,
        timer=opts.timer,
    )

    # A process killed mid-sync (OOM, SIGKILL) left its temp database and partial c1z behind.
    swept = await asyncio.to_thread(sweep_leftovers, runner.temp_root)
    if swept:
        log.info("temp_leftovers_removed", count=swept, temp_dir=str(runner.temp_root))

    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if opts.install_signal_handlers:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, _on_signal, scheduler, sig)
                installed.append(sig)
    watcher = asyncio.create_task(_watch(stop, scheduler)) if stop is not None else None
    log.info(
        "daemon_starting",
        endpoint=endpoint.target,
        client=creds.client_id.client_name,
        host_id=host_id,
        concurrency=sched_cfg.concurrency,
        provisioning=runner.config.provisioning,
        polling="GetTasks" if sched_cfg.get_tasks else "GetTask",
        proxy=describe_proxy(proxy),
    )
    try:
        code = await scheduler.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if watcher is not None:
            watcher.cancel()
        await tenant.close()
        await tokens.aclose()
        with contextlib.suppress(Exception):
            await runtime.close()
    log.info("daemon_stopped", exit_code=code)
    if scheduler.fatal_message:
        # Last, after every log line, so the one-line reason is what an operator sees at the bottom.
        print(scheduler.fatal_message, file=err_stream, flush=True)
    return code


def _on_signal(scheduler: Scheduler, sig: signal.Signals) -> None:
    log.info("signal_received", signal=sig.name)
    if scheduler.stopping:
        # A second signal: the operator does not want to wait for the grace period.
        scheduler.force_stop()
    else:
        scheduler.request_stop()


async def _watch(stop: asyncio.Event, scheduler: Scheduler) -> None:
    await stop.wait()
    scheduler.request_stop()
