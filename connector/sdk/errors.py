"""Errors that cross the connector boundary, and how upstream failures become gRPC statuses.

One place decides the mapping (upstream HTTP status -> gRPC code) so that the servicers, the sync engine's
retry logic and the daemon's FinishTask payloads all agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from connector.pb.c1.connector.v2 import annotation_ratelimit_pb2 as ratelimit_pb2


@dataclass(frozen=True)
class RateLimitInfo:
    """What an upstream told us about its rate limit, in absolute terms."""

    limit: int = 0
    remaining: int = 0
    reset_at: dt.datetime | None = None

    def to_proto(self, overlimit: bool = True) -> ratelimit_pb2.RateLimitDescription:
        desc = ratelimit_pb2.RateLimitDescription(
            status=(
                ratelimit_pb2.RateLimitDescription.STATUS_OVERLIMIT
                if overlimit
                else ratelimit_pb2.RateLimitDescription.STATUS_OK
            ),
            limit=self.limit,
            remaining=0 if overlimit else self.remaining,
        )
        if self.reset_at is not None:
            ts = timestamp_pb2.Timestamp()
            ts.FromDatetime(self.reset_at.astimezone(dt.UTC))
            desc.reset_at.CopyFrom(ts)
        return desc


class UpstreamError(Exception):
    """An upstream API answered with an error status, or could not be reached.

    `status` is None for transport failures (connection refused, TLS, timeouts). `detail` is a short,
    secret-free summary of the error body (the upstream's own message and code where it has one).
    """

    def __init__(
        self,
        upstream: str,
        method: str,
        route: str,
        status: int | None,
        detail: str,
        *,
        body: Any = None,
        rate_limit: RateLimitInfo | None = None,
    ) -> None:
        self.upstream = upstream
        self.method = method
        self.route = route
        self.status = status
        self.detail = detail
        self.body = body
        self.rate_limit = rate_limit
        where = f"{upstream} {method} {route}"
        what = f"HTTP {status}" if status is not None else "request failed"
        super().__init__(f"{where}: {what}: {detail}" if detail else f"{where}: {what}")


_HTTP_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.UNAVAILABLE,
    501: grpc.StatusCode.UNIMPLEMENTED,
}


def grpc_code_for_http(status: int | None) -> grpc.StatusCode:
    """gRPC code for an upstream HTTP status (None = transport failure)."""
    if status is None:
        return grpc.StatusCode.UNAVAILABLE
    if status in _HTTP_TO_GRPC:
        return _HTTP_TO_GRPC[status]
    if status >= 500:
        return grpc.StatusCode.UNAVAILABLE
    if 400 <= status < 500:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.UNKNOWN


@dataclass
class ConnectorError(Exception):
    """A failure with a gRPC code, raised by connectors and by the runtime.

    `details` are protobuf messages attached to the status (packed as Any on the wire), e.g. a
    RateLimitDescription so that callers know when to retry.
    """

    code: grpc.StatusCode
    message: str
    details: Sequence[Message] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    @property
    def rate_limit(self) -> ratelimit_pb2.RateLimitDescription | None:
        for d in self.details:
            if isinstance(d, ratelimit_pb2.RateLimitDescription):
                return d
        return None

    @property
    def retryable(self) -> bool:
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    def to_status(self) -> status_pb2.Status:
        st = status_pb2.Status(code=self.code.value[0], message=self.message)
        for d in self.details:
            packed = any_pb2.Any()
            packed.Pack(d)
            st.details.append(packed)
        return st

    @classmethod
    def from_status(cls, st: status_pb2.Status) -> ConnectorError:
        return cls(_code_from_int(st.code), st.message, tuple(_unpack_known(st.details)))


def _code_from_int(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def _unpack_known(details: Sequence[any_pb2.Any]) -> list[Message]:
    out: list[Message] = []
    for d in details:
        if d.Is(ratelimit_pb2.RateLimitDescription.DESCRIPTOR):
            msg = ratelimit_pb2.RateLimitDescription()
            d.Unpack(msg)
            out.append(msg)
    return out


def code_from_int(value: int) -> grpc.StatusCode:
    return _code_from_int(value)


def from_upstream(err: UpstreamError, action: str = "") -> ConnectorError:
    """Map an upstream failure to the gRPC error the rest of the system understands."""
    code = grpc_code_for_http(err.status)
    details: list[Message] = []
    if err.rate_limit is not None or err.status == 429:
        info = err.rate_limit or RateLimitInfo()
        if info.reset_at is None:
            info = RateLimitInfo(
                limit=info.limit,
                remaining=0,
                reset_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60),
            )
        details.append(info.to_proto(overlimit=True))
    prefix = f"{action}: " if action else ""
    return ConnectorError(code, f"{prefix}{err}", tuple(details))


def unimplemented(what: str, why: str) -> ConnectorError:
    return ConnectorError(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not supported: {why}")


def invalid_argument(message: str) -> ConnectorError:
    return ConnectorError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ConnectorError:
    return ConnectorError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ConnectorError:
    return ConnectorError(grpc.StatusCode.FAILED_PRECONDITION, message)
