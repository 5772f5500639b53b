"""Timestamps as the c1z store writes and reads them.

The Go store writes `started_at`, `ended_at` and `discovered_at` as TEXT in the Go layout
`2006-01-02 15:04:05.999999999` (trailing fractional zeros dropped, no `.` when the fraction is zero, no
zone). Its reader's SQLite driver interprets the text as UTC, and `ORDER BY ended_at` compares the text, so
every writer must use one layout consistently. We write UTC (the readers interpret it as UTC, so the
instant stays right) with microsecond precision, which is all Python's datetime carries.
"""

from __future__ import annotations

import datetime as dt
import re

# The layouts the Go reader's driver accepts, in its order of preference, after stripping one trailing
# "Z". Python cannot parse 9 fractional digits with %f, so fractions are handled separately.
_LAYOUTS = (
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)


def format_timestamp(value: dt.datetime | None = None) -> str:
    """`YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC, trailing fractional zeros dropped (Go layout)."""
    if value is None:
        value = dt.datetime.now(dt.UTC)
    elif value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    base = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        return f"{base}.{value.microsecond:06d}".rstrip("0")
    return base


def parse_timestamp(text: str) -> dt.datetime:
    """Parse a stored timestamp the way the Go reader does; the result is timezone-aware (UTC).

    Raises ValueError for text no Go reader would accept either.
    """
    raw = text.strip()
    if raw.endswith("Z"):
        raw = raw[:-1]
    # Go's time.String() output: "2006-01-02 15:04:05.999999999 -0700 MST" (+ optional monotonic part).
    if " m=" in raw:
        raw = raw.split(" m=", 1)[0]
    parts = raw.split(" ")
    if len(parts) >= 3 and (parts[2].startswith("+") or parts[2].startswith("-")):
        raw = f"{parts[0]} {parts[1]}{parts[2][:3]}:{parts[2][3:5]}"
    main, frac, rest = _split_fraction(raw)
    for layout in _LAYOUTS:
        try:
            parsed = dt.datetime.strptime(main + rest, layout)
        except ValueError:
            continue
        if frac:
            parsed = parsed.replace(microsecond=int((frac + "000000")[:6]))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    raise ValueError(f"unrecognised timestamp {text!r}")


_FRACTION = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?(.*)$")


def _split_fraction(raw: str) -> tuple[str, str, str]:
    """Split `...HH:MM:SS.fffffffff[+hh:mm]` into (without fraction, digits, zone suffix)."""
    m = _FRACTION.match(raw)
    if m is None:
        return raw, "", ""
    return m.group(1), m.group(2) or "", m.group(3)
