"""The c1z v1 container: `C1ZF\\0` followed by one zstd stream of a SQLite database file.

Compression and decompression stream in fixed-size chunks, so neither side ever holds the database in
memory. The encoder settings are pinned rather than left to library defaults because the Go reader
rejects windows above 128 MiB (and single-segment frames whose content size exceeds that): level 3,
`window_log` 23 (8 MiB, the window the Go writer uses), content checksum on, content size on, no
long-distance matching.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO

import zstandard

MAGIC = b"C1ZF\x00"
MAGIC_V3 = b"C1Z3\x00"
COMPRESSION_LEVEL = 3
WINDOW_LOG = 23
# What the Go reader accepts: window <= 128 MiB. We refuse larger windows too, so a file we accept is one
# the baton CLI accepts.
MAX_WINDOW_SIZE = 128 << 20
# Decompressed-size cap (zip-bomb guard): the Go [HEAD] default, overridden by
# BATON_DECODER_MAX_DECODED_SIZE_MB.
DEFAULT_MAX_DECODED_BYTES = 10 << 30
CHUNK = 1 << 20
MT_JOB_SIZE = 4 << 20


class C1zError(Exception):
    """A c1z file could not be read or written; the message is one line a user can act on."""


class Cancelled(C1zError):
    """Streaming was stopped because the caller cancelled (the partial output is removed by the caller)."""


def _max_decoded_bytes() -> int:
    raw = os.environ.get("BATON_DECODER_MAX_DECODED_SIZE_MB", "")
    if raw.strip():
        try:
            return int(raw) << 20
        except ValueError:
            pass
    return DEFAULT_MAX_DECODED_BYTES


def check_header(head: bytes) -> None:
    """Raise C1zError unless `head` (the first 5 bytes) is the v1 magic."""
    if head == MAGIC:
        return
    if head == MAGIC_V3:
        raise C1zError("c1z v3 (Pebble) files are not supported; only the v1 SQLite format is")
    raise C1zError("not a c1z file (bad magic)")


def compress_file(
    db_path: Path,
    out: BinaryIO,
    *,
    threads: int = 0,
    cancel: threading.Event | None = None,
) -> int:
    """Write magic + zstd(db_path) to `out`; returns the number of bytes written.

    `threads` > 0 uses zstd's multi-threaded mode, which still emits a single frame.
    """
    size = db_path.stat().st_size
    params = zstandard.ZstdCompressionParameters.from_level(
        COMPRESSION_LEVEL,
        window_log=WINDOW_LOG,
        write_checksum=True,
        write_content_size=True,
        enable_ldm=False,
        threads=threads,
        # zstd's default job for this window is 32 MiB per worker, with its buffers; 4 MiB jobs compress
        # as fast here and keep the workers' memory to tens of MB.
        job_size=MT_JOB_SIZE if threads > 0 else 0,
    )
    cctx = zstandard.ZstdCompressor(compression_params=params)
    start = out.tell()
    out.write(MAGIC)
    with open(db_path, "rb") as src, cctx.stream_writer(out, size=size, closefd=False) as writer:
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("compression cancelled")
            chunk = src.read(CHUNK)
            if not chunk:
                break
            writer.write(chunk)
    return out.tell() - start


def decompress_file(src_path: Path, db_path: Path, *, cancel: threading.Event | None = None) -> bool:
    """Decompress a c1z into a SQLite file at `db_path`.

    Returns False (and writes nothing) for a 0-byte file, which counts as a new empty store.
    Raises C1zError for anything that is not a readable v1 c1z.
    """
    try:
        src = open(src_path, "rb")  # noqa: SIM115 - closed below, also on error
    except FileNotFoundError:
        raise C1zError(f"no such file: {src_path}") from None
    except IsADirectoryError:
        raise C1zError(f"{src_path} is a directory, not a c1z file") from None
    except OSError as exc:
        raise C1zError(f"cannot read {src_path}: {exc.strerror or exc}") from None
    limit = _max_decoded_bytes()
    with src:
        head = src.read(len(MAGIC))
        if not head:
            return False
        if len(head) < len(MAGIC):
            raise C1zError("not a c1z file (too short)")
        check_header(head)
        dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
        total = 0
        try:
            with (
                dctx.stream_reader(src, read_across_frames=True, closefd=False) as reader,
                open(db_path, "wb") as dst,
            ):
                while True:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("decompression cancelled")
                    chunk = reader.read(CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        raise C1zError(
                            f"c1z decompresses to more than {limit >> 20} MiB; "
                            "raise BATON_DECODER_MAX_DECODED_SIZE_MB to read it"
                        )
                    dst.write(chunk)
        except zstandard.ZstdError as exc:
            msg = str(exc)
            if "window" in msg.lower() or "too much memory" in msg.lower():
                raise C1zError("c1z: window size exceeded (zstd window above 128 MiB)") from None
            raise C1zError(f"corrupt c1z: zstd: {msg}") from None
        if total == 0:
            raise C1zError("corrupt c1z: empty zstd stream")
    return True
