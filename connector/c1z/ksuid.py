"""KSUIDs, the sync ids of the c1z store (segmentio/ksuid layout).

20 raw bytes: a big-endian uint32 of `unix seconds - 1_400_000_000`, then 16 random bytes; written as
base62 (`0-9A-Za-z`) left-padded with '0' to 27 characters. C1 treats the id as opaque but expects the
format, and the timestamp prefix makes ids sort by creation second.
"""

from __future__ import annotations

import datetime as dt
import os
import time

EPOCH = 1_400_000_000
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LENGTH = 27
_MAX = (1 << 160) - 1
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def new_ksuid(now: float | None = None, payload: bytes | None = None) -> str:
    """A new KSUID string for the given time (default: now) and payload (default: 16 random bytes)."""
    seconds = int(time.time() if now is None else now) - EPOCH
    if not 0 <= seconds < 1 << 32:
        raise ValueError("time is outside the KSUID range")
    body = os.urandom(16) if payload is None else payload
    if len(body) != 16:
        raise ValueError("KSUID payload must be 16 bytes")
    return encode(seconds.to_bytes(4, "big") + body)


def encode(raw: bytes) -> str:
    if len(raw) != 20:
        raise ValueError("a raw KSUID is 20 bytes")
    n = int.from_bytes(raw, "big")
    out: list[str] = []
    while n:
        n, rem = divmod(n, 62)
        out.append(ALPHABET[rem])
    return "".join(reversed(out)).rjust(LENGTH, "0")


def decode(text: str) -> bytes:
    """The 20 raw bytes of a KSUID string; ValueError if it is not one."""
    if len(text) != LENGTH:
        raise ValueError(f"a KSUID has {LENGTH} characters, got {len(text)}")
    n = 0
    for c in text:
        try:
            n = n * 62 + _INDEX[c]
        except KeyError:
            raise ValueError(f"invalid KSUID character {c!r}") from None
    if n > _MAX:
        raise ValueError("KSUID value out of range")
    return n.to_bytes(20, "big")


def is_ksuid(text: str) -> bool:
    try:
        decode(text)
    except ValueError:
        return False
    return True


def timestamp(text: str) -> dt.datetime:
    """The creation time encoded in a KSUID (second precision, UTC)."""
    seconds = int.from_bytes(decode(text)[:4], "big") + EPOCH
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
