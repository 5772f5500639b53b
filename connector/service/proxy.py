"""HTTPS_PROXY / NO_PROXY for the connection to the tenant, decided once for the token endpoint and gRPC.

The two clients would otherwise disagree: httpx reads `HTTPS_PROXY`/`https_proxy` and `NO_PROXY`/`no_proxy`,
while grpc-core reads only the lower-case `https_proxy` (or `grpc_proxy`) and `no_proxy`, so an upper-case
`HTTPS_PROXY` (the usual spelling in Kubernetes manifests) would proxy the token request but not gRPC.
Instead the daemon resolves the proxy itself, with the rules of Go's `net/http` (which the Go daemon uses
for both), and hands the result to both clients explicitly: httpx gets `proxy=` with `trust_env=False`,
gRPC gets the `grpc.http_proxy` channel argument, or `grpc.enable_http_proxy=0` when the connection is
direct (so grpc-core does not apply its own environment rules on top).

Rules (Go's `httpproxy.FromEnvironment` for an https URL):
- the proxy is `HTTPS_PROXY`, else `https_proxy`; a value without a scheme means `http://`; only `http://`
  proxies are supported (HTTP CONNECT; gRPC cannot speak TLS to a proxy), with optional `user:password@`;
- `NO_PROXY`, else `no_proxy`: comma-separated; `*` disables the proxy; an IP address or CIDR range matches
  IP hosts; `example.com` matches that host and its subdomains, `.example.com` / `*.example.com` only its
  subdomains; any entry may carry `:port`;
- `localhost` and loopback addresses are never proxied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from connector.service.credentials import CredentialError


def _first(env: Mapping[str, str], *names: str) -> tuple[str, str]:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return "", ""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _split_entry(entry: str) -> tuple[str, str]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address → (host, port or "")."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """True when a connection to host:port must not use the proxy."""
    host = host.strip("[]").lower().rstrip(".")
    ip = _ip(host)
    if host == "localhost" or (ip is not None and ip.is_loopback):
        return True
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if ip is not None and ip.version == network.version and ip in network:
                return True
            continue
        ehost, eport = _split_entry(entry)
        if eport and eport != str(port):
            continue
        eip = _ip(ehost)
        if eip is not None:
            if ip is not None and ip == eip:
                return True
            continue
        if ip is not None or not ehost:
            continue
        if ehost.startswith("*."):
            ehost = ehost[1:]
        if ehost.startswith("."):
            if host.endswith(ehost):
                return True
        elif host == ehost or host.endswith("." + ehost):
            return True
    return False


def normalize_proxy(value: str, name: str) -> str:
    """`http://[user:pass@]host:port` from a proxy setting; raises CredentialError (never echoing the
    value, which may hold a password)."""
    text = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise CredentialError(f"invalid {name}: not a proxy URL") from None
    if parts.scheme.lower() != "http":
        raise CredentialError(
            f"invalid {name}: only http:// proxies (HTTP CONNECT) are supported, not {parts.scheme}://"
        )
    if not parts.hostname:
        raise CredentialError(f"invalid {name}: the proxy host is missing")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    userinfo = parts.netloc.rpartition("@")[0]
    auth = f"{userinfo}@" if userinfo else ""
    return f"http://{auth}{host}:{port or 80}"


def proxy_for(host: str, port: int, env: Mapping[str, str]) -> str | None:
    """The proxy URL to reach host:port through, or None for a direct connection."""
    name, value = _first(env, "HTTPS_PROXY", "https_proxy")
    if not value:
        return None
    url = normalize_proxy(value, name)
    _, no_proxy = _first(env, "NO_PROXY", "no_proxy")
    if bypasses_proxy(host, port, no_proxy):
        return None
    return url


def describe(url: str | None) -> str:
    """For logs: the proxy's address without credentials."""
    if url is None:
        return "direct"
    parts = urlsplit(url)
    return f"http://{parts.netloc.rpartition('@')[2]}"
