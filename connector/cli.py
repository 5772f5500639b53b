"""Command line shared by every app: `baton-<app> [flags] [capabilities|serve]`.

Mode selection follows the Go connectors: with a client id the process is the service-mode daemon; without
one it runs a sync to `--file` (once, or every `--sync-interval`). `capabilities` prints what the connector
can do; `serve` exposes it over `c1.connector.v2` for an external driver.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from connector import oneshot_actions
from connector.ops.logging import configure_logging, get_logger
from connector.ops.settings import (
    BatonSettings,
    HelpRequested,
    SettingsError,
    format_help,
    parse_settings,
    secret_values,
)
from connector.sdk.interface import Connector

SUBCOMMANDS = ("capabilities", "serve")


@dataclass(frozen=True)
class AppSpec:
    name: str
    settings_cls: type[BatonSettings]
    build: Callable[[Any], Connector]
    description: str = ""


def _usage(spec: AppSpec) -> str:
    head = (
        f"{spec.name}: {spec.description}\n\n"
        f"usage: {spec.name} [flags]               sync once to --file (or every --sync-interval);\n"
        f"                                         with --client-id: run as the service-mode daemon\n"
        f"       {spec.name} capabilities [flags]  print the connector's capabilities as JSON\n"
        f"       {spec.name} serve --listen HOST:PORT [flags]\n"
        f"                                         serve c1.connector.v2 over gRPC (plaintext, loopback)\n\n"
    )
    return head + format_help(spec.settings_cls, spec.name)


def _split_argv(argv: Sequence[str]) -> tuple[str | None, str, list[str]]:
    """Pull out the subcommand and `--listen` (not settings) and leave the flags for the settings parser."""
    command: str | None = None
    listen = "127.0.0.1:0"
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if command is None and arg in SUBCOMMANDS and not rest:
            command = arg
        elif arg == "--listen":
            listen = next(it, "")
        elif arg.startswith("--listen="):
            listen = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return command, listen, rest


def capabilities_json(connector: Connector) -> str:
    """ConnectorCapabilities as protojson with `@type`, like the public baton_capabilities.json files."""
    from connector.sdk.runtime import ConnectorRuntime

    caps = ConnectorRuntime(connector).capabilities()
    body = json_format.MessageToDict(caps)
    doc = {"@type": f"type.googleapis.com/{caps.DESCRIPTOR.full_name}", **body}
    return json.dumps(doc, indent=2)


def run_app(spec: AppSpec, argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["health-check"]:  # an exec probe: no connector settings, see connector/ops/probe.py
        from connector.ops.probe import health_check_main

        return health_check_main(spec.name, args[1:])
    command, listen, flags = _split_argv(args)
    try:
        settings = parse_settings(spec.settings_cls, flags)
    except HelpRequested:
        print(_usage(spec))
        return 0
    except SettingsError as err:
        print(f"{spec.name}: error: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, secret_values(settings))
    if command is None and oneshot_actions.requested(settings):
        return oneshot_actions.main(spec.build, settings, spec.name, daemon=_is_daemon(settings))
    try:
        if command in SUBCOMMANDS:
            try:
                connector = spec.build(settings)
            except SettingsError as err:
                print(f"{spec.name}: error: {err}", file=sys.stderr)
                return 2
            if command == "capabilities":
                print(capabilities_json(connector))
                return 0
            return asyncio.run(_serve(connector, settings, listen))
        return asyncio.run(_run_service(spec, settings))
    except KeyboardInterrupt:
        return 130


def _is_daemon(settings: BatonSettings) -> bool:
    return bool(settings.client_id or os.environ.get("BATON_CLIENT_ID_FILE"))


def _is_service(settings: BatonSettings) -> bool:
    """Long-running modes (daemon, periodic syncs) get the ops server; a one-shot sync does not."""
    return bool(settings.client_id or os.environ.get("BATON_CLIENT_ID_FILE") or settings.sync_interval)


async def _run_service(spec: AppSpec, settings: BatonSettings) -> int:
    """Daemon mode with a client id, else syncs to --file (once, or every --sync-interval)."""
    from connector.ops.health import DaemonHealth, OpsServer
    from connector.ops.metrics import Metrics
    from connector.service.daemon import run_daemon

    metrics = Metrics(spec.name)
    health = DaemonHealth()
    built: list[Connector] = []

    def factory() -> Connector:
        connector = spec.build(settings)
        built.append(connector)  # /health validates the connector the daemon runs
        return connector

    async def validate() -> None:
        if not built:
            raise RuntimeError("the connector has not started yet")
        await built[-1].validate()

    ops: OpsServer | None = None
    if settings.health_check and _is_service(settings):
        ops = OpsServer(metrics, health, validate)
        try:
            port = await ops.start(settings.health_check_bind_address, settings.health_check_port)
        except OSError as err:
            print(f"{spec.name}: error: cannot start the health check server: {err}", file=sys.stderr)
            return 2
        get_logger("connector.cli").info(
            "ops_server_listening", address=settings.health_check_bind_address, port=port
        )
    try:
        return await run_daemon(factory, settings, metrics=metrics, health=health, app_name=spec.name)
    finally:
        if ops is not None:
            await ops.stop()


async def _serve(connector: Connector, settings: BatonSettings, listen: str) -> int:
    from connector.sdk.runtime import ConnectorRuntime
    from connector.sdk.server import serve

    runtime = ConnectorRuntime(connector, provisioning=settings.provisioning)
    server = await serve(runtime, listen)
    print(f"serving c1.connector.v2 on {listen.rsplit(':', 1)[0]}:{server.port}", flush=True)
    try:
        await server.wait()
    finally:
        await runtime.close()
    return 0
