"""HTTPS_PROXY / NO_PROXY, decided once with Go's rules, for every outbound connection.

Both the tenant channel (connector.service.proxy: the token endpoint and gRPC) and every upstream client
(connector.sdk.transport) ask this module, so one environment means one behaviour. httpx and grpc-core each
have their own reading of these variables (grpc-core ignores the upper-case `HTTPS_PROXY`, httpx proxies
loopback and knows no CIDR ranges); neither is used: the decision is made here and handed to each client
explicitly.

Rules (Go's `httpproxy.FromEnvironment`):
- the proxy for an https target is `HTTPS_PROXY`, else `https_proxy` (for an http target `HTTP_PROXY`, else
  `http_proxy`); a value without a scheme means `http://`; only `http://` proxies are supported (HTTP
  CONNECT; gRPC cannot speak TLS to a proxy), with optional `user:password@`;
- `NO_PROXY`, else `no_proxy`: comma-separated; `*` disables the proxy; an IP address or CIDR range matches
  IP hosts; `example.com` matches that host and its subdomains, `.example.com` / `*.example.com` only its
  subdomains; any entry may carry `:port`;
- `localhost` and loopback addresses are never proxied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit


class ProxyConfigError(ValueError):
    """A proxy variable that cannot be used; the message names the variable, never its value."""


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
    """`http://[user:pass@]host:port` from a proxy setting; raises ProxyConfigError (never echoing the
    value, which may hold a password)."""
    text = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ProxyConfigError(f"invalid {name}: not a proxy URL") from None
    if parts.scheme.lower() != "http":
        raise ProxyConfigError(
            f"invalid {name}: only http:// proxies (HTTP CONNECT) are supported, not {parts.scheme}://"
        )
    if not parts.hostname:
        raise ProxyConfigError(f"invalid {name}: the proxy host is missing")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    userinfo = parts.netloc.rpartition("@")[0]
    auth = f"{userinfo}@" if userinfo else ""
    return f"http://{auth}{host}:{port or 80}"


def proxy_for(host: str, port: int, env: Mapping[str, str], scheme: str = "https") -> str | None:
    """The proxy URL to reach host:port through, or None for a direct connection.

    `scheme` is the target's: https targets use HTTPS_PROXY, http targets HTTP_PROXY (as in Go).
    """
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    name, value = _first(env, *names)
    if not value:
        return None
    url = normalize_proxy(value, name)
    _, no_proxy = _first(env, "NO_PROXY", "no_proxy")
    if bypasses_proxy(host, port, no_proxy):
        return None
    return url


def proxy_for_url(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy for an upstream base URL (`https://host[:port]/...`), or None for a direct connection."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "https").lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None  # not a URL we can reach anyway; the client reports it on the first request
    return proxy_for(parts.hostname or "", port, env, scheme)


def describe(url: str | None) -> str:
    """For logs: the proxy's address without credentials."""
    if url is None:
        return "direct"
    parts = urlsplit(url)
    return f"http://{parts.netloc.rpartition('@')[2]}"
