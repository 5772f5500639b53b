"""UploadAsset: stream a file to the tenant (spec §5.4).

Per attempt: metadata{host_id, task_id}, the file in 512 KiB data messages, eof{sha256 of the whole file},
half-close, wait for the response. Up to 3 attempts, each on a fresh stream from byte 0; the pause after
the n-th failed attempt is (n - 1) x `retry_unit` seconds: none after the first, 1 s after the second, as
in the Go SDK.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from connector.ops.logging import get_logger
from connector.ops.metrics import Metrics
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2
from connector.service.tenant import TenantClient, TenantError

log = get_logger(__name__)

CHUNK_SIZE = 512 * 1024
Req = baton_pb2.BatonServiceUploadAssetRequest


class UploadError(Exception):
    """Every attempt failed; the message names the last failure."""


def file_digest(path: Path) -> tuple[bytes, int]:
    """SHA-256 and size of the whole file (blocking: run it in a thread)."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.digest(), size


def _read(fh: BinaryIO, n: int) -> bytes:
    return fh.read(n)


async def upload_file(
    tenant: TenantClient,
    task_id: str,
    path: Path,
    *,
    attempts: int = 3,
    retry_unit: float = 1.0,
    chunk_size: int = CHUNK_SIZE,
    metrics: Metrics | None = None,
    sleep: Callable[[float], object] = asyncio.sleep,
) -> int:
    """Upload `path` for `task_id`; returns the number of bytes sent. Raises UploadError."""
    digest, size = await asyncio.to_thread(file_digest, path)
    started = time.monotonic()
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            await sleep_for(sleep, (attempt - 1) * retry_unit)
        fh = await asyncio.to_thread(path.open, "rb")
        try:

            def stream(fh: BinaryIO = fh) -> AsyncIterator[Req]:
                return _messages(tenant.host_id, task_id, fh, digest, chunk_size)

            await tenant.upload_asset(stream, size=size)
        except TenantError as err:
            last = err
            log.warning("upload_attempt_failed", task_id=task_id, attempt=attempt + 1, error=str(err))
            continue
        finally:
            await asyncio.to_thread(fh.close)
        if metrics is not None:
            metrics.upload_finished(size, time.monotonic() - started, True)
        log.info("upload_done", task_id=task_id, bytes=size, attempts=attempt + 1)
        return size
    if metrics is not None:
        metrics.upload_finished(size, time.monotonic() - started, False)
    raise UploadError(f"upload failed after {attempts} attempts: {last}")


async def sleep_for(sleep: Callable[[float], object], seconds: float) -> None:
    if seconds > 0:
        result = sleep(seconds)
        if asyncio.iscoroutine(result):
            await result


async def _messages(
    host_id: str, task_id: str, fh: BinaryIO, digest: bytes, chunk_size: int
) -> AsyncIterator[Req]:
    # A retry re-creates the stream; start from byte 0 every time.
    await asyncio.to_thread(fh.seek, 0)
    yield Req(metadata=Req.UploadMetadata(host_id=host_id, task_id=task_id))
    while chunk := await asyncio.to_thread(_read, fh, chunk_size):
        yield Req(data=Req.UploadData(data=chunk))
    yield Req(eof=Req.UploadEOF(sha256_checksum=digest))
