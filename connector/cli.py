"""Command line shared by every app: `baton-<app> [flags] [capabilities|serve]`.

Mode selection follows the Go connectors: with a client id the process is the service-mode daemon; without
one it runs a sync to `--file` (once, or every `--sync-interval`). `capabilities` prints what the connector
can do; `serve` exposes it over `c1.connector.v2` for an external driver.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

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
    try:
        connector = spec.build(settings)
    except SettingsError as err:
        print(f"{spec.name}: error: {err}", file=sys.stderr)
        return 2
    if command == "capabilities":
        print(capabilities_json(connector))
        return 0
    try:
        if command == "serve":
            return asyncio.run(_serve(connector, settings, listen))
        if settings.client_id:
            from connector.service.daemon import run_daemon

            return asyncio.run(run_daemon(lambda: spec.build(settings), settings))
        if settings.sync_interval:
            from connector.service.standalone import run_standalone

            return asyncio.run(run_standalone(lambda: spec.build(settings), settings))
        return asyncio.run(_sync_once(connector, settings))
    except KeyboardInterrupt:
        return 130


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


async def _sync_once(connector: Connector, settings: BatonSettings) -> int:
    """One full sync to --file. A failure prints one line and leaves no file behind."""
    from connector.sdk.runtime import ConnectorRuntime
    from connector.sync.engine import SyncOptions, run_sync
    from connector.sync.report import format_report

    log = get_logger("connector.cli")
    runtime = ConnectorRuntime(connector, provisioning=settings.provisioning)
    options = SyncOptions(
        skip_entitlements_and_grants=settings.skip_entitlements_and_grants,
        skip_grants=settings.skip_grants,
        sync_resource_type_ids=tuple(settings.sync_resource_types),
        concurrency=settings.sync_concurrency,
        skip_full_sync=settings.skip_full_sync,
    )
    output = Path(settings.file)
    temp_dir = Path(settings.c1z_temp_dir) if settings.c1z_temp_dir else None
    try:
        report = await run_sync(
            runtime,
            output,
            options,
            temp_dir=temp_dir,
            upstream_requests=connector.upstream_request_count,
        )
    except Exception as err:  # the engine's errors already name the phase and object
        log.debug("sync_failed", error=str(err))
        print(f"error: sync failed: {err}", file=sys.stderr)
        return 1
    finally:
        await runtime.close()
    print(format_report(report))
    print(f"wrote {output} (look inside: python -m connector inspect {output} stats)")
    return 0
