"""`baton-<app> health-check`: an exec probe that asks the running daemon's ops server and exits 0 or 1.

ConductorOne's health-check page shows Kubernetes probes built on `<connector> health-check
--endpoint=health|ready|live --timeout=5`, for clusters where the kubelet cannot reach the pod's port (or
where the ops server binds loopback only, its default). The probe runs in the same container, so it finds the
server from the same BATON_HEALTH_CHECK_PORT / BATON_HEALTH_CHECK_BIND_ADDRESS the daemon was given; a
wildcard bind address is reached over loopback.

Deliberately small: the standard library only, no connector settings (a probe must not fail because an
upstream credential is missing from its own environment) and one request with an overall deadline.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence

ENDPOINTS = ("health", "ready", "live")
DEFAULT_TIMEOUT = 5.0
DEFAULT_PORT = 8081
DEFAULT_BIND = "127.0.0.1"

HEALTHY, UNHEALTHY, USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} health-check",
        description="Ask the running connector's health check server; exit 0 when healthy, 1 otherwise.",
    )
    parser.add_argument("--endpoint", default="health", help="health (connector validation), ready or live")
    parser.add_argument("--timeout", default=str(DEFAULT_TIMEOUT), help="seconds to wait for the answer")
    parser.add_argument("--health-check-port", default=None, help="default: BATON_HEALTH_CHECK_PORT or 8081")
    parser.add_argument(
        "--health-check-bind-address",
        default=None,
        help="default: BATON_HEALTH_CHECK_BIND_ADDRESS or 127.0.0.1",
    )
    return parser


def _port(text: str, source: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise _UsageError(f"invalid {source} {text!r}: not a port number") from None
    if not 1 <= port <= 65535:
        raise _UsageError(f"invalid {source} {port}: must be between 1 and 65535")
    return port


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise _UsageError(f"invalid --timeout {text!r}: not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise _UsageError(f"invalid --timeout {text!r}: must be a positive number of seconds")
    return seconds


def _connect_host(bind: str) -> str:
    """Where to reach a server bound to `bind`: a wildcard address means every interface, loopback too."""
    host = bind.strip().strip("[]")
    if not host:
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return host


def _summary(body: bytes) -> str:
    """The status and reason of a JSON health body, for the probe's one line of output."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    found = doc.get("details")
    details: dict[str, object] = found if isinstance(found, dict) else {}
    reason = details.get("reason") or details.get("validation_error") or details.get("tenant_error")
    status = doc.get("status")
    return ", ".join(str(p) for p in (status, reason) if p)


def probe(host: str, port: int, endpoint: str, timeout: float) -> tuple[bool, str]:
    """One GET of /<endpoint>; (healthy, what to print). Every step shares one deadline."""
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    where = f"{host}:{port}/{endpoint}"
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
        conn.request("GET", f"/{endpoint}", headers={"User-Agent": "baton-health-check"})
        response = conn.getresponse()
        body = response.read(64 * 1024)
    except TimeoutError:
        return False, f"{where}: no answer within {timeout:g}s"
    except ConnectionRefusedError:
        return False, f"{where}: connection refused (is BATON_HEALTH_CHECK=true and the daemon running?)"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{where}: {type(exc).__name__}: {exc}"
    finally:
        conn.close()
    summary = _summary(body)
    text = f"{where}: HTTP {response.status}" + (f" ({summary})" if summary else "")
    return response.status == 200, text


def health_check_main(prog: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    environ = os.environ if env is None else env
    try:
        args = _parser(prog).parse_args(list(argv))
        if args.endpoint not in ENDPOINTS:
            raise _UsageError(f"invalid --endpoint {args.endpoint!r}: one of {', '.join(ENDPOINTS)}")
        timeout = _timeout(args.timeout)
        if args.health_check_port is not None:
            port = _port(args.health_check_port, "--health-check-port")
        else:
            raw = environ.get("BATON_HEALTH_CHECK_PORT", "").strip()
            port = _port(raw, "BATON_HEALTH_CHECK_PORT") if raw else DEFAULT_PORT
        bind = args.health_check_bind_address
        if bind is None:
            bind = environ.get("BATON_HEALTH_CHECK_BIND_ADDRESS", "").strip() or DEFAULT_BIND
    except _UsageError as err:
        print(f"{prog} health-check: error: {err}", file=sys.stderr)
        return USAGE
    healthy, text = probe(_connect_host(bind), port, args.endpoint, timeout)
    print(text, file=sys.stdout if healthy else sys.stderr)
    return HEALTHY if healthy else UNHEALTHY
