"""Command line shared by every app: `baton-<app> [flags] [capabilities|serve]`.

Mode selection follows the Go connectors: with a client id the process is the service-mode daemon; without
one it runs a sync to `--file` (once, or every `--sync-interval`), or one of the Go SDK's one-shot
operations (connector/oneshot.py). `capabilities` prints what the connector can do; `serve` exposes it
over `c1.connector.v2` for an external driver.

Whatever the user does, the answer is an exit code and at most one line on stderr, never a traceback:
interrupted one-shot runs exit 128 + the signal number, a closed pipe on stdout ends quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from connector import __version__, oneshot_actions
from connector.ops.logging import configure_logging, get_logger
from connector.ops.settings import (
    BatonSettings,
    HelpRequested,
    SettingsError,
    format_help,
    parse_settings,
    secret_values,
    unknown_env_warning,
)
from connector.sdk.interface import Connector

SUBCOMMANDS = ("capabilities", "serve")
# `serve` options, not settings: where to listen and the TLS credentials a non-loopback address needs.
SERVE_OPTIONS = {"--listen": "127.0.0.1:0", "--tls-cert": "", "--tls-key": ""}


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
        f"       {spec.name} serve --listen HOST:PORT [--tls-cert PEM --tls-key PEM] [flags]\n"
        f"                                         serve c1.connector.v2 over gRPC (plaintext on loopback\n"
        f"                                         only; any other address needs TLS)\n"
        f"       {spec.name} --version\n\n"
    )
    return head + format_help(spec.settings_cls, spec.name)


def _split_argv(argv: Sequence[str]) -> tuple[str | None, dict[str, str], list[str]]:
    """Pull out the subcommand and the serve options and leave the flags for the settings parser."""
    command: str | None = None
    serve_opts = dict(SERVE_OPTIONS)
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if command is None and arg in SUBCOMMANDS and not rest:
            command = arg
        elif name in SERVE_OPTIONS:
            serve_opts[name] = value if eq else next(it, "")
        else:
            rest.append(arg)
    return command, serve_opts, rest


def capabilities_json(connector: Connector) -> str:
    """ConnectorCapabilities as protojson with `@type`, like the public baton_capabilities.json files."""
    from connector.sdk.runtime import ConnectorRuntime

    caps = ConnectorRuntime(connector).capabilities()
    body = json_format.MessageToDict(caps)
    doc = {"@type": f"type.googleapis.com/{caps.DESCRIPTOR.full_name}", **body}
    return json.dumps(doc, indent=2)


def run_app(spec: AppSpec, argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run_app(spec, args)
    except KeyboardInterrupt:
        print(f"{spec.name}: interrupted (SIGINT)", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # The reader went away (`capabilities | head`): nothing is wrong, and nothing more can be said.
        # stdout is pointed at /dev/null so that the interpreter's final flush does not complain either.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run_app(spec: AppSpec, args: list[str]) -> int:
    if args[:1] == ["health-check"]:  # an exec probe: no connector settings, see connector/ops/probe.py
        from connector.ops.probe import health_check_main

        return health_check_main(spec.name, args[1:])
    if "--version" in args:
        print(f"{spec.name} version {__version__}")
        return 0
    command, serve_opts, flags = _split_argv(args)
    try:
        settings = parse_settings(spec.settings_cls, flags)
    except HelpRequested:
        print(_usage(spec))
        return 0
    except SettingsError as err:
        print(f"{spec.name}: error: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, secret_values(settings))
    warning = unknown_env_warning(spec.settings_cls)
    if warning:
        print(f"{spec.name}: warning: {warning}", file=sys.stderr, flush=True)
    if command is None and oneshot_actions.requested(settings):
        return oneshot_actions.main(spec.build, settings, spec.name, daemon=_is_daemon(settings))
    from connector import oneshot

    try:
        operation = oneshot.requested(settings, command, bool(_is_service(settings)))
        if command == "serve":
            credentials = _serve_credentials(serve_opts)
    except SettingsError as err:
        print(f"{spec.name}: error: {err}", file=sys.stderr)
        return 2
    if command in SUBCOMMANDS or operation is not None:
        try:
            connector = spec.build(settings)
        except SettingsError as err:
            print(f"{spec.name}: error: {err}", file=sys.stderr)
            return 2
        if command == "capabilities":
            print(capabilities_json(connector), flush=True)
            return 0
        if command == "serve":
            return asyncio.run(_serve(connector, settings, serve_opts["--listen"], credentials))
        assert operation is not None
        return asyncio.run(oneshot.run(operation, connector, settings, prog=spec.name))
    return asyncio.run(_run_service(spec, settings))


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


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve_credentials(opts: dict[str, str]) -> Any:
    """grpc server credentials from --tls-cert/--tls-key, or None; plaintext only on loopback, because
    `serve` answers grant and revoke without authentication."""
    listen, cert, key = opts["--listen"], opts["--tls-cert"], opts["--tls-key"]
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SettingsError(f'invalid --listen "{listen}": must be HOST:PORT, e.g. 127.0.0.1:50051')
    if bool(cert) != bool(key):
        raise SettingsError("--tls-cert and --tls-key must be given together")
    if not cert:
        if not _is_loopback(host):
            raise SettingsError(
                f"refusing to serve plaintext gRPC on {host}: anyone who can reach it could grant and "
                "revoke access. Listen on 127.0.0.1, or give --tls-cert and --tls-key"
            )
        return None
    import grpc

    pems: list[bytes] = []
    for flag, path in (("--tls-key", key), ("--tls-cert", cert)):
        try:
            pems.append(open(path, "rb").read())  # noqa: SIM115 - two small files, read once
        except OSError as exc:
            raise SettingsError(f"cannot read {flag} ({path}): {exc.strerror or exc}") from None
        if b"-----BEGIN" not in pems[-1]:
            raise SettingsError(f"invalid {flag} ({path}): not a PEM file")
    return grpc.ssl_server_credentials([(pems[0], pems[1])])


async def _serve(connector: Connector, settings: BatonSettings, listen: str, credentials: Any) -> int:
    from connector.sdk.runtime import ConnectorRuntime
    from connector.sdk.server import serve

    runtime = ConnectorRuntime(connector, provisioning=settings.provisioning)
    try:
        server = await serve(runtime, listen, credentials=credentials)
    except (OSError, RuntimeError) as err:
        await runtime.close()
        print(f"error: cannot listen on {listen}: {err}", file=sys.stderr, flush=True)
        return 2
    received: list[signal.Signals] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    tls = " (TLS)" if credentials is not None else ""
    print(f"serving c1.connector.v2{tls} on {listen.rsplit(':', 1)[0]}:{server.port}", flush=True)
    waiting = asyncio.create_task(server.wait())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stopping.cancel()
        if not waiting.done():
            await server.stop(grace=2.0)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        await runtime.close()
    # Stopping a server is its normal end (exit 0), except at the keyboard, where 130 is the convention.
    return 130 if received and received[0] == signal.SIGINT else 0
