"""ConductorOne client credentials: parsing, the EdDSA client assertion, the token cache and rotation.

Formats and lifetimes follow the Go SDK exactly (spec §2): the client id is `<name>@<host>/<use-case>`,
the secret an Ed25519 JWK behind `secret-token:conductorone.com:v1:`, the assertion a compact JWS with
header `{"alg":"EdDSA","kid"?,"nonce"}` and claims iss = sub = client id, aud = the client id's host,
exp = now + 120 s, nbf = now - 120 s, iat = now. Tokens are cached until 10 s before they expire.

Beyond the Go SDK:
- credentials given as files (BATON_CLIENT_ID_FILE, BATON_CLIENT_SECRET_FILE) are re-read when the files
  change (Kubernetes swaps a symlink when a Secret is updated) and, once, when the tenant rejects a token;
- a token endpoint that cannot be reached or answers 5xx/429 is a transient failure (UNAVAILABLE), so the
  daemon keeps retrying instead of exiting; only a 4xx is an authentication failure (UNAUTHENTICATED).

Nothing here ever puts a secret or a token into an exception message or a log field.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from connector.ops.logging import get_logger, register_secret
from connector.ops.metrics import Metrics
from connector.sdk.crypto import ClientSecretKey, CryptoError, parse_client_secret

log = get_logger(__name__)

TOKEN_PATH = "/auth/v1/token"
GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 120  # seconds either side of now (exp and nbf), as the Go SDK
EXPIRY_MARGIN = 10.0  # a cached token is considered expired this long before it really is
# The whole exchange (connect, TLS, answer): a token endpoint that accepts and never answers must not hold
# every RPC for the 300 s HTTP timeout. Each RPC's own deadline covers the exchange too (tenant.py).
EXCHANGE_TIMEOUT = 30.0


class CredentialError(Exception):
    """A client id or secret that cannot be used. The message is one line and never contains the secret."""


class TokenError(Exception):
    """The token exchange failed. `code` is UNAUTHENTICATED when the tenant refused the credentials and
    UNAVAILABLE when it could not be asked (network, TLS, 5xx, 429)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class ClientId:
    value: str
    client_name: str
    token_host: str  # may carry a :port

    @property
    def audience(self) -> str:
        """The JWT `aud`: the client id's host without any port (BATON_C1_API_HOST never changes it)."""
        return split_host_port(self.token_host)[0]


def parse_client_id(value: str) -> ClientId:
    """`<client-name>@<tenant-host>/<use-case>`: split on the first `@`, then on the first `/` (spec §2.1)."""
    value = value.strip()
    name, at, rest = value.partition("@")
    host, slash, _use_case = rest.partition("/")
    if not at or not slash:
        raise CredentialError("invalid client id: expected the form <name>@<tenant host>/<use case>")
    if not host:
        raise CredentialError("invalid client id: the tenant host after '@' is empty")
    return ClientId(value=value, client_name=name, token_host=host)


def split_host_port(hostport: str, default_port: int = 443) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` → (host without brackets, port)."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
    else:
        host, port = hostport, ""
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CredentialError(f"invalid port in {hostport!r}")
    return host, int(port)


@dataclass(frozen=True)
class ClientCredentials:
    client_id: ClientId
    key: ClientSecretKey
    # The JWS `kid` header is sent only when the secret's JWK carried a kid (spec §2.4); ClientSecretKey.kid
    # is always set (thumbprint fallback) because the credential helper needs it.
    signing_kid: str | None
    fingerprint: str  # hash of id + secret: tells a real change from a rewrite of the same values


def parse_credentials(client_id: str, client_secret: str) -> ClientCredentials:
    cid = parse_client_id(client_id)
    secret = client_secret.strip()
    if not secret:
        raise CredentialError("invalid client secret: it is empty")
    try:
        key = parse_client_secret(secret)
    except CryptoError as err:
        reason = str(err).replace(secret, "[REDACTED]")
        if not reason.startswith("invalid client secret"):
            reason = f"invalid client secret: {reason}"
        raise CredentialError(reason) from None
    register_secret(secret, slot="client_secret")
    fingerprint = hashlib.sha256(f"{cid.value}\n{secret}".encode()).hexdigest()
    kid = key.public_jwk.get("kid")
    return ClientCredentials(cid, key, kid if isinstance(kid, str) and kid else None, fingerprint)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def build_assertion(creds: ClientCredentials, now: float) -> str:
    """The compact JWS the token endpoint expects (spec §2.4). Keys are sorted, as Go's encoder does."""
    header: dict[str, Any] = {"alg": "EdDSA", "nonce": secrets.token_hex(16)}
    if creds.signing_kid:
        header["kid"] = creds.signing_kid
    t = int(now)
    claims = {
        "aud": creds.client_id.audience,
        "exp": t + ASSERTION_LIFETIME,
        "iat": t,
        "iss": creds.client_id.value,
        "nbf": t - ASSERTION_LIFETIME,
        "sub": creds.client_id.value,
    }
    enc = [
        b64url(json.dumps(part, sort_keys=True, separators=(",", ":")).encode()) for part in (header, claims)
    ]
    signing_input = f"{enc[0]}.{enc[1]}".encode("ascii")
    signature = creds.key.private_key.sign(signing_input)
    return f"{enc[0]}.{enc[1]}.{b64url(signature)}"


def normalize_token_type(token_type: str) -> str:
    """Authorization scheme from `token_type`, as x/oauth2 normalizes it."""
    lowered = token_type.lower()
    if lowered in ("", "bearer"):
        return "Bearer"
    if lowered == "mac":
        return "MAC"
    if lowered == "basic":
        return "Basic"
    return token_type


# ------------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class _FileSig:
    """What identifies a file version cheaply; k8s secret updates change the inode behind the symlink."""

    ino: int
    size: int
    mtime_ns: int


def _sig(path: Path) -> _FileSig | None:
    try:
        st = os.stat(path)  # follows symlinks: ..data swaps are seen
    except OSError:
        return None
    return _FileSig(st.st_ino, st.st_size, st.st_mtime_ns)


def _read_value(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CredentialError(
            f"cannot read {what} file {path}: {err.strerror or type(err).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise CredentialError(f"cannot read {what} file {path}: not UTF-8 text") from None
    value = text.strip()
    if not value:
        raise CredentialError(f"{what} file {path} is empty")
    return value


class CredentialSource:
    """Where the client id and secret come from: values (env/flags) or files that may be rotated."""

    def __init__(
        self,
        *,
        client_id: str = "",
        client_secret: str = "",
        client_id_file: Path | None = None,
        client_secret_file: Path | None = None,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self.client_id_file = client_id_file
        self.client_secret_file = client_secret_file
        self._sigs: dict[str, _FileSig | None] = {}

    @classmethod
    def from_settings(cls, settings: Any, env: Mapping[str, str] | None = None) -> CredentialSource:
        """From BatonSettings plus the `_FILE` variables: BATON_CLIENT_SECRET_FILE (also known to the
        settings, which remember the path) and BATON_CLIENT_ID_FILE (ours: the id is not a secret field)."""
        env = os.environ if env is None else env
        secret_file: Path | None = None
        finder = getattr(settings, "secret_file", None)
        if callable(finder):
            found = finder("client_secret")
            secret_file = found if isinstance(found, Path) else None
        if secret_file is None and env.get("BATON_CLIENT_SECRET_FILE"):
            secret_file = Path(env["BATON_CLIENT_SECRET_FILE"]).expanduser().absolute()
        id_file = (
            Path(env["BATON_CLIENT_ID_FILE"]).expanduser().absolute()
            if env.get("BATON_CLIENT_ID_FILE")
            else None
        )
        secret_value: Any = getattr(settings, "client_secret", None)
        secret = str(secret_value.get_secret_value()) if secret_value is not None else ""
        return cls(
            client_id=str(getattr(settings, "client_id", "") or ""),
            client_secret=secret,
            client_id_file=id_file,
            client_secret_file=secret_file,
        )

    @property
    def has_client_id(self) -> bool:
        return bool(self._client_id.strip()) or self.client_id_file is not None

    @property
    def watches_files(self) -> bool:
        return self.client_id_file is not None or self.client_secret_file is not None

    def load(self) -> ClientCredentials:
        """Read (files) and parse. Raises CredentialError with a one-line, secret-free message.

        The files' signatures are remembered even when the content is bad, so a broken file is reported
        once per change rather than on every call."""
        sigs: dict[str, _FileSig | None] = {}
        if self.client_id_file is not None:
            sigs["client_id"] = _sig(self.client_id_file)
        if self.client_secret_file is not None:
            sigs["client_secret"] = _sig(self.client_secret_file)
        self._sigs = sigs
        if self.client_id_file is not None:
            client_id = _read_value(self.client_id_file, "BATON_CLIENT_ID_FILE")
        else:
            client_id = self._client_id
        if self.client_secret_file is not None:
            secret = _read_value(self.client_secret_file, "BATON_CLIENT_SECRET_FILE")
        else:
            secret = self._client_secret
        if not client_id.strip():
            raise CredentialError("client-id is required in service mode (BATON_CLIENT_ID)")
        if not secret.strip():
            raise CredentialError("client-secret is required in service mode (BATON_CLIENT_SECRET)")
        return parse_credentials(client_id, secret)

    def changed_files(self) -> list[str]:
        """Names of the credential files whose content may have changed since the last load."""
        out = []
        for name, path in (("client_id", self.client_id_file), ("client_secret", self.client_secret_file)):
            if path is not None and _sig(path) != self._sigs.get(name):
                out.append(name)
        return out


# ------------------------------------------------------------------------------------------------ tokens


@dataclass
class _Token:
    header: str  # "Bearer <token>"
    valid_until: float  # monotonic


class TokenSource:
    """Access tokens for the tenant, exchanged with the client assertion and cached.

    One exchange at a time (a lock), so concurrent RPCs after expiry share one token request.
    """

    def __init__(
        self,
        source: CredentialSource,
        *,
        token_url: str,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 300.0,
        user_agent: str = "",
        metrics: Metrics | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
        initial: ClientCredentials | None = None,
        proxy: str | None = None,
        exchange_timeout: float = EXCHANGE_TIMEOUT,
    ) -> None:
        self._source = source
        self._exchange_timeout = min(exchange_timeout, timeout)
        self._token_url = token_url
        self._metrics = metrics
        self._wall = wall_clock
        self._mono = monotonic
        self._lock = asyncio.Lock()
        self._token: _Token | None = None
        self._creds = initial if initial is not None else source.load()
        headers = {"User-Agent": user_agent} if user_agent else {}
        # The proxy is decided by the daemon (`proxy.proxy_for`) for gRPC and this client alike, so httpx
        # must not apply its own reading of the environment on top.
        self._http = httpx.AsyncClient(
            verify=verify,
            timeout=self._exchange_timeout,
            headers=headers,
            transport=transport,
            proxy=proxy,
            trust_env=False,
        )
        self.exchanges = 0

    @property
    def credentials(self) -> ClientCredentials:
        return self._creds

    def invalidate(self) -> None:
        self._token = None

    async def authorization(self) -> str:
        """The `authorization` metadata value, exchanging a new token when needed."""
        if self._source.watches_files:
            changed = self._source.changed_files()
            if changed:
                self._reload(changed, reason="file changed")
        token = self._token
        if token is not None and self._mono() < token.valid_until:
            return token.header
        async with self._lock:
            token = self._token
            if token is not None and self._mono() < token.valid_until:
                return token.header
            token = await self._exchange()
            self._token = token
            return token.header

    def reload(self, reason: str) -> bool:
        """Re-read the credential files (after the tenant refused us). True when they changed."""
        if not self._source.watches_files:
            return False
        return self._reload(["client_id", "client_secret"], reason=reason)

    def _reload(self, names: list[str], *, reason: str) -> bool:
        try:
            creds = self._source.load()
        except CredentialError as err:
            # A half-written or bad file must not take a working daemon down: keep the current credentials.
            log.warning("credential_reload_failed", reason=reason, error=str(err))
            return False
        if creds.fingerprint == self._creds.fingerprint:
            return False
        changed = []
        if creds.client_id.value != self._creds.client_id.value:
            changed.append("client_id")
        if creds.key.public_jwk != self._creds.key.public_jwk:
            changed.append("client_secret")
        self._creds = creds
        self._token = None  # the next RPC uses the new credentials
        for name in changed or names:
            if self._metrics is not None:
                self._metrics.credential_reload(name)
        log.info("credentials_reloaded", reason=reason, changed=",".join(changed), kid=creds.key.kid)
        return True

    async def _exchange(self) -> _Token:
        creds = self._creds
        form = {
            "client_id": creds.client_id.value,
            "grant_type": GRANT_TYPE,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": build_assertion(creds, self._wall()),
        }
        self.exchanges += 1
        try:
            async with asyncio.timeout(self._exchange_timeout):
                resp = await self._http.post(self._token_url, data=form)
        except TimeoutError:
            self._count("error")
            raise TokenError(
                grpc.StatusCode.UNAVAILABLE,
                f"failed to get token: no answer within {self._exchange_timeout:g} s",
            ) from None
        except httpx.HTTPError as err:
            self._count("error")
            raise TokenError(
                grpc.StatusCode.UNAVAILABLE, f"failed to get token: {type(err).__name__}: {err}"
            ) from None
        received = self._mono()
        if resp.status_code != 200:
            self._count("rejected" if 400 <= resp.status_code < 500 and resp.status_code != 429 else "error")
            status_line = f"{resp.status_code} {resp.reason_phrase}".strip()
            detail = _error_description(resp)
            message = f"failed to get token: {status_line}" + (f" ({detail})" if detail else "")
            if resp.status_code >= 500 or resp.status_code == 429:
                raise TokenError(grpc.StatusCode.UNAVAILABLE, message)
            if self._metrics is not None:
                self._metrics.auth_failure("token")
            raise TokenError(grpc.StatusCode.UNAUTHENTICATED, message)
        try:
            body = resp.json()
        except ValueError:
            body = None
        access = body.get("access_token") if isinstance(body, dict) else None
        expires_in = body.get("expires_in", 0) if isinstance(body, dict) else None
        token_type = body.get("token_type", "") if isinstance(body, dict) else ""
        if (
            not isinstance(access, str)
            or not access
            or not isinstance(expires_in, int)
            or isinstance(expires_in, bool)
            or not isinstance(token_type, str)
        ):
            self._count("error")
            raise TokenError(
                grpc.StatusCode.UNAUTHENTICATED,
                "failed to get token: the response is not {access_token, token_type, expires_in:int}",
            )
        register_secret(access, slot="tenant_access_token")
        self._count("success")
        # expires_in 0 means "already expired": a new token for every call, as in Go.
        return _Token(f"{normalize_token_type(token_type)} {access}", received + expires_in - EXPIRY_MARGIN)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.token_refresh(outcome)

    async def aclose(self) -> None:
        await self._http.aclose()


def _error_description(resp: httpx.Response) -> str:
    """The OAuth `error` / `error_description` of a refusal, bounded (never echoes our request)."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(body[k]) for k in ("error", "error_description") if isinstance(body.get(k), str)]
    return ": ".join(parts)[:200]


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """System roots plus an optional PEM bundle (corporate TLS-inspecting proxies), TLS >= 1.2."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as err:
            reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or str(err)
            raise CredentialError(f"invalid --c1-ca-file / BATON_C1_CA_FILE ({ca_file}): {reason}") from None
    return ctx
