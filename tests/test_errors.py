"""Upstream failures become the gRPC codes the sync engine and the daemon act on."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from connector.pb.c1.connector.v2 import annotation_ratelimit_pb2
from connector.sdk.errors import (
    ConnectorError,
    RateLimitInfo,
    UpstreamError,
    from_upstream,
    grpc_code_for_http,
)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (None, grpc.StatusCode.UNAVAILABLE),  # transport failure: retryable
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (404, grpc.StatusCode.NOT_FOUND),
        (408, grpc.StatusCode.DEADLINE_EXCEEDED),
        (409, grpc.StatusCode.ALREADY_EXISTS),
        (429, grpc.StatusCode.UNAVAILABLE),
        (500, grpc.StatusCode.UNAVAILABLE),
        (502, grpc.StatusCode.UNAVAILABLE),
        (503, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.UNAVAILABLE),
        (501, grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_http_status_to_grpc_code(status: int | None, code: grpc.StatusCode) -> None:
    assert grpc_code_for_http(status) == code


def test_429_without_reset_gets_a_default_reset_a_minute_ahead() -> None:
    before = dt.datetime.now(dt.UTC)
    err = from_upstream(UpstreamError("app", "GET", "/things", 429, "too many"), "list things")
    assert err.code == grpc.StatusCode.UNAVAILABLE and err.retryable
    assert err.message.startswith("list things: app GET /things: HTTP 429")
    desc = err.rate_limit
    assert desc is not None and desc.status == annotation_ratelimit_pb2.RateLimitDescription.STATUS_OVERLIMIT
    reset = desc.reset_at.ToDatetime(tzinfo=dt.UTC)
    assert dt.timedelta(seconds=55) < reset - before < dt.timedelta(seconds=65)


def test_not_found_carries_no_rate_limit_and_is_not_retryable() -> None:
    err = from_upstream(UpstreamError("app", "GET", "/things/{id}", 404, "no such thing"))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.rate_limit is None and not err.retryable


def test_status_round_trip_keeps_code_message_and_rate_limit() -> None:
    reset = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    original = from_upstream(
        UpstreamError("app", "GET", "/x", 503, "maintenance", rate_limit=RateLimitInfo(10, 0, reset))
    )
    back = ConnectorError.from_status(original.to_status())
    assert back.code == grpc.StatusCode.UNAVAILABLE
    assert back.message == original.message
    assert back.rate_limit is not None and back.rate_limit.reset_at.ToDatetime(tzinfo=dt.UTC) == reset
