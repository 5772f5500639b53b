"""HTTPS_PROXY / NO_PROXY for the connection to the tenant, decided once for the token endpoint and gRPC.

The two clients would otherwise disagree: httpx reads `HTTPS_PROXY`/`https_proxy` and `NO_PROXY`/`no_proxy`,
while grpc-core reads only the lower-case `https_proxy` (or `grpc_proxy`) and `no_proxy`, so an upper-case
`HTTPS_PROXY` (the usual spelling in Kubernetes manifests) would proxy the token request but not gRPC.
Instead the daemon resolves the proxy itself, with the rules of Go's `net/http` (connector.sdk.proxy, which
the upstream clients use too), and hands the result to both clients explicitly: httpx gets `proxy=` with
`trust_env=False`, gRPC gets the `grpc.http_proxy` channel argument, or `grpc.enable_http_proxy=0` when the
connection is direct (so grpc-core does not apply its own environment rules on top).
"""

from __future__ import annotations

from collections.abc import Mapping

from connector.sdk import proxy as rules
from connector.sdk.proxy import bypasses_proxy, describe
from connector.service.credentials import CredentialError

__all__ = ["bypasses_proxy", "describe", "normalize_proxy", "proxy_for"]


def normalize_proxy(value: str, name: str) -> str:
    """`http://[user:pass@]host:port`; raises CredentialError (a configuration error of the daemon)."""
    try:
        return rules.normalize_proxy(value, name)
    except rules.ProxyConfigError as err:
        raise CredentialError(str(err)) from None


def proxy_for(host: str, port: int, env: Mapping[str, str]) -> str | None:
    """The proxy URL to reach the tenant's host:port through (https), or None for a direct connection."""
    try:
        return rules.proxy_for(host, port, env)
    except rules.ProxyConfigError as err:
        raise CredentialError(str(err)) from None
