"""The BatonService client: one long-lived TLS channel to the tenant, bearer token per call.

Differences from the Go SDK (spec §2.6): the Go client dials a new channel for every RPC; we keep one
channel with keepalive. Keepalive pings are sent only while calls are active and no more often than every
5 minutes, because a grpc-go server with default enforcement answers more frequent pings with GOAWAY
`too_many_pings`; polling and heartbeats keep the connection busy anyway.

Proxies: the daemon decides once (`proxy.proxy_for`: HTTPS_PROXY / NO_PROXY with Go's rules) and passes
the result explicitly: `grpc.http_proxy` (HTTP CONNECT) when proxied, `grpc.enable_http_proxy=0` when
direct, so grpc-core's own environment handling (lower-case variables only) never disagrees with the token
client.

When the tenant answers UNAUTHENTICATED (or the token endpoint refuses us), the cached token is dropped,
the credentials are re-read from their files and the call is tried once more (the Go SDK keeps failing
until the token's own expiry).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from connector.ops.logging import get_logger
from connector.ops.metrics import Metrics
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2, baton_pb2_grpc
from connector.service.credentials import (
    TOKEN_PATH,
    ClientId,
    CredentialError,
    TokenError,
    TokenSource,
    split_host_port,
)

log = get_logger(__name__)

T = TypeVar("T")

HELLO_TIMEOUT = 30.0
GET_TASK_TIMEOUT = 330.0  # the Go client sets none (long polls are legal); ours outlives a 5-minute poll
HEARTBEAT_TIMEOUT = 30.0
FINISH_TIMEOUT = 30.0
UPLOAD_BASE_TIMEOUT = 600.0
UPLOAD_BYTES_PER_SECOND = 256 * 1024  # slowest link we still wait for before giving up on a stream


class TenantError(Exception):
    """A BatonService call failed; `code` is the gRPC status (token failures included)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TenantEndpoint:
    target: str  # host:port for gRPC
    host: str
    port: int
    token_url: str

    @classmethod
    def resolve(cls, client_id: ClientId, api_host: str | None) -> TenantEndpoint:
        """`<client id host>:443`, or BATON_C1_API_HOST (host[:port]) for both gRPC and the token URL."""
        hostport = api_host.strip() if api_host and api_host.strip() else client_id.token_host
        if "://" in hostport or "/" in hostport:
            raise CredentialError(f"invalid BATON_C1_API_HOST {hostport!r}: expected host or host:port")
        host, port = split_host_port(hostport)
        shown = f"[{host}]" if ":" in host else host
        return cls(
            target=f"{shown}:{port}", host=host, port=port, token_url=f"https://{shown}:{port}{TOKEN_PATH}"
        )


def _system_roots_pem() -> bytes:
    """The trust store grpc-core would use, so that an extra CA adds to it instead of replacing it."""
    candidates = [os.environ.get("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"), os.environ.get("SSL_CERT_FILE")]
    paths = ssl.get_default_verify_paths()
    candidates += [paths.cafile, paths.openssl_cafile]
    candidates.append(os.path.join(os.path.dirname(grpc.__file__), "_cython", "_credentials", "roots.pem"))
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            try:
                return Path(candidate).read_bytes()
            except OSError:
                continue
    return b""


def root_certificates(ca_file: str | None) -> bytes | None:
    """None = grpc's default roots; with BATON_C1_CA_FILE, the system roots plus that bundle."""
    if not ca_file:
        return None
    try:
        extra = Path(ca_file).read_bytes()
    except OSError as err:
        raise CredentialError(
            f"invalid --c1-ca-file / BATON_C1_CA_FILE ({ca_file}): {err.strerror}"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in extra:
        raise CredentialError(
            f"invalid --c1-ca-file / BATON_C1_CA_FILE ({ca_file}): no PEM certificate in it"
        )
    roots = _system_roots_pem()
    return roots + (b"\n" if roots and not roots.endswith(b"\n") else b"") + extra


def channel_options(user_agent: str, proxy: str | None = None) -> list[tuple[str, Any]]:
    routing: tuple[str, Any] = ("grpc.http_proxy", proxy) if proxy else ("grpc.enable_http_proxy", 0)
    return [
        routing,
        ("grpc.primary_user_agent", user_agent),
        ("grpc.keepalive_time_ms", 300_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect quickly after a blip; the task loop has its own backoff on top.
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 30_000),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ]


class TenantClient:
    """Typed wrappers for the RPCs the daemon uses (GetTasks only with BATON_GET_TASKS)."""

    def __init__(
        self,
        endpoint: TenantEndpoint,
        tokens: TokenSource,
        *,
        host_id: str,
        user_agent: str,
        root_certificates: bytes | None = None,
        metrics: Metrics | None = None,
        proxy: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.tokens = tokens
        self.host_id = host_id
        self._metrics = metrics
        creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        self._channel = grpc.aio.secure_channel(
            endpoint.target, creds, options=channel_options(user_agent, proxy)
        )
        self._stub = baton_pb2_grpc.BatonServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close(grace=None)

    # ------------------------------------------------------------------ the RPCs

    async def hello(self, request: baton_pb2.BatonServiceHelloRequest) -> None:
        await self._unary("Hello", self._stub.Hello, request, HELLO_TIMEOUT)

    async def get_task(self) -> baton_pb2.BatonServiceGetTaskResponse:
        req = baton_pb2.BatonServiceGetTaskRequest(host_id=self.host_id)
        resp: baton_pb2.BatonServiceGetTaskResponse = await self._unary(
            "GetTask", self._stub.GetTask, req, GET_TASK_TIMEOUT
        )
        return resp

    async def get_tasks(
        self, page_size: int, known_task_ids: list[str]
    ) -> baton_pb2.BatonServiceGetTasksResponse:
        req = baton_pb2.BatonServiceGetTasksRequest(
            host_id=self.host_id, page_size=page_size, known_task_ids=known_task_ids
        )
        resp: baton_pb2.BatonServiceGetTasksResponse = await self._unary(
            "GetTasks", self._stub.GetTasks, req, GET_TASK_TIMEOUT
        )
        return resp

    async def heartbeat(self, task_id: str) -> baton_pb2.BatonServiceHeartbeatResponse:
        req = baton_pb2.BatonServiceHeartbeatRequest(host_id=self.host_id, task_id=task_id)
        resp: baton_pb2.BatonServiceHeartbeatResponse = await self._unary(
            "Heartbeat", self._stub.Heartbeat, req, HEARTBEAT_TIMEOUT
        )
        return resp

    async def finish_task(
        self, request: baton_pb2.BatonServiceFinishTaskRequest, *, deadline: float = FINISH_TIMEOUT
    ) -> None:
        """`deadline` is the gRPC deadline of this call, in seconds."""
        await self._unary("FinishTask", self._stub.FinishTask, request, deadline)

    async def upload_asset(
        self,
        requests: Callable[[], AsyncIterator[baton_pb2.BatonServiceUploadAssetRequest]],
        *,
        size: int,
    ) -> None:
        """One client-streaming UploadAsset. `requests` builds a fresh stream (called again if the token
        had to be renewed before anything was accepted)."""
        timeout = UPLOAD_BASE_TIMEOUT + size / UPLOAD_BYTES_PER_SECOND

        async def call(metadata: tuple[tuple[str, str], ...]) -> Any:
            return await self._stub.UploadAsset(requests(), metadata=metadata, timeout=timeout)

        await self._with_auth("UploadAsset", call)

    # ------------------------------------------------------------------ plumbing

    async def _unary(self, method: str, fn: Any, request: Any, deadline: float) -> Any:
        # One deadline for the whole call: the token exchange, a retry after UNAUTHENTICATED and the RPC.
        end = time.monotonic() + deadline

        async def call(metadata: tuple[tuple[str, str], ...]) -> Any:
            return await fn(request, metadata=metadata, timeout=max(0.05, end - time.monotonic()))

        return await self._with_auth(method, call, end)

    async def _with_auth(
        self,
        method: str,
        call: Callable[[tuple[tuple[str, str], ...]], Awaitable[T]],
        end: float | None = None,
    ) -> T:
        retried = False
        while True:
            try:
                return await self._attempt(method, call, end)
            except TenantError as err:
                if err.code != grpc.StatusCode.UNAUTHENTICATED or retried:
                    raise
                # Once per call: drop the token, re-read rotated credential files, ask again.
                retried = True
                self.tokens.invalidate()
                changed = self.tokens.reload(reason=f"{method} unauthenticated")
                log.info("tenant_unauthenticated_retry", method=method, credentials_changed=changed)

    async def _attempt(
        self,
        method: str,
        call: Callable[[tuple[tuple[str, str], ...]], Awaitable[T]],
        end: float | None = None,
    ) -> T:
        try:
            async with asyncio.timeout(None if end is None else max(0.0, end - time.monotonic())):
                auth = await self.tokens.authorization()
        except TokenError as err:
            self._count(method, err.code.name)
            raise TenantError(err.code, err.message) from None
        except TimeoutError:
            self._count(method, grpc.StatusCode.DEADLINE_EXCEEDED.name)
            raise TenantError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{method}: no access token within the call's deadline"
            ) from None
        started = time.monotonic()
        try:
            result = await call((("authorization", auth),))
        except grpc.aio.AioRpcError as err:
            code = err.code()
            self._count(method, code.name)
            if code == grpc.StatusCode.UNAUTHENTICATED and self._metrics is not None:
                self._metrics.auth_failure("tenant")
            log.debug("tenant_rpc_failed", method=method, code=code.name, elapsed=time.monotonic() - started)
            raise TenantError(code, err.details() or code.name.lower()) from None
        except Exception as err:
            # Failures grpc reports outside AioRpcError (e.g. a token no header may carry): every caller
            # handles TenantError, and a poll or heartbeat must not die of anything else.
            self._count(method, grpc.StatusCode.INTERNAL.name)
            raise TenantError(grpc.StatusCode.INTERNAL, f"{method} failed: {type(err).__name__}") from None
        self._count(method, "OK")
        return result

    def _count(self, method: str, code: str) -> None:
        if self._metrics is not None:
            self._metrics.tenant_rpc(method, code)
