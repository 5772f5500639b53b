"""gRPC servicers exposing a ConnectorRuntime as `c1.connector.v2` (plus the standard health service).

The handlers are generated from the same RPC table the client uses, so every RPC of the surface is served
and none is forgotten. Errors carry their google.rpc.Status (with details such as RateLimitDescription) in
the `grpc-status-details-bin` trailer, the way grpc-go and the baton-sdk read them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from connector.ops.logging import get_logger
from connector.sdk.client import PACKAGE, RPCS
from connector.sdk.errors import ConnectorError
from connector.sdk.runtime import ConnectorRuntime

log = get_logger(__name__)

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _handler(method: Callable[[Any], Awaitable[Any]], name: str) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(request)
        except ConnectorError as err:
            await context.abort(
                err.code,
                err.message,
                trailing_metadata=((_STATUS_DETAILS_KEY, err.to_status().SerializeToString()),),
            )
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug: report it as UNKNOWN rather than killing the stream silently
            log.exception("rpc_failed", rpc=name)
            await context.abort(grpc.StatusCode.UNKNOWN, f"{name}: {type(err).__name__}: {err}")

    return handle


def connector_handlers(runtime: ConnectorRuntime) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method, service, rpc, req_t, resp_t in RPCS:
        fn = getattr(runtime, method)
        by_service.setdefault(service, {})[rpc] = grpc.unary_unary_rpc_method_handler(
            _handler(fn, f"{service}/{rpc}"),
            request_deserializer=req_t.FromString,
            response_serializer=resp_t.SerializeToString,
        )
    return [
        grpc.method_handlers_generic_handler(f"{PACKAGE}.{service}", handlers)
        for service, handlers in by_service.items()
    ]


class ConnectorServer:
    """A running grpc.aio server for one connector runtime."""

    def __init__(
        self, server: grpc.aio.Server, port: int, health_servicer: health.aio.HealthServicer
    ) -> None:
        self.server = server
        self.port = port
        self.health = health_servicer

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def serve(
    runtime: ConnectorRuntime,
    address: str = "127.0.0.1:0",
    *,
    credentials: grpc.ServerCredentials | None = None,
) -> ConnectorServer:
    """Start serving `runtime` on `address` ("host:port"; port 0 picks one). Plaintext unless credentials
    are given: the default bind is loopback, for a driver on the same host."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(connector_handlers(runtime))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    await health_servicer.set("", serving)
    for _, service, *_ in RPCS:
        await health_servicer.set(f"{PACKAGE}.{service}", serving)
    log.info("connector_server_listening", address=address, port=port)
    return ConnectorServer(server, port, health_servicer)
