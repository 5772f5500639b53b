"""structlog set-up shared by every process, with secret redaction.

All output (structlog and stdlib `logging` records from httpx, grpc, ...) goes through one stdlib handler
whose formatter runs the same processors, so one redactor covers everything. Redaction happens twice: on
the event dict just before rendering (strings, nested containers, the formatted exception) and on the
rendered line, which catches what rendering produced (reprs of objects, console tracebacks).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import quote

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

# Shorter values would match inside ordinary words and make logs unreadable without protecting a real
# credential.
MIN_SECRET_LENGTH = 4

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Libraries whose INFO lines carry full URLs (query strings may hold tokens) and are noisy anyway.
_QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "urllib3")

_lock = threading.Lock()
# Secrets that never change while the process runs (configured values).
_fixed: set[str] = set()
# Secrets that rotate (an access token, a secret re-read from its file): one named slot each, holding the
# current value and the one before it, which requests already in flight may still carry. Older values are
# dropped, so a daemon that refreshes its token every few minutes for months keeps a bounded set.
_slots: dict[str, tuple[str, ...]] = {}
SLOT_HISTORY = 2
# Every registered value and its escaped forms as one alternation, longest first so the longest form
# wins where one contains another: one pass over each text whatever the number of secrets.
_matcher: re.Pattern[str] | None = None
_pattern_count = 0
_handler: logging.Handler | None = None

# Header-shaped credentials: `Authorization: Bearer x`, `"authorization": "Basic x"`, `'X-Api-Key': 'x'`.
_HEADER_RE = re.compile(
    r"""(?ix)
    (\b(?:proxy-)?authorization|\bx-api-key|\bapi[-_]key)   # header name
    (["']?\s*[:=]\s*["']?)                                   # separator, optional quotes
    (?![\s"']*\[REDACTED\])                                  # idempotent: the line pass sees it again
    ([^\s"',}\]][^"'\r\n,}\]]*)                               # the value, up to a quote or delimiter
    """
)
# `Bearer <token>` anywhere (scheme names are case-insensitive in HTTP).
_BEARER_RE = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
# `Basic <base64>`: only when it looks like base64 rather than an English word ("Basic authentication").
_BASIC_RE = re.compile(r"\b(Basic)\s+(?=[A-Za-z0-9+/]*[A-Z0-9+/=])[A-Za-z0-9+/]{6,}={0,2}")
# Credentials embedded in URLs: scheme://user:password@host
_URL_CRED_RE = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s:/@]+:)[^\s@/]+@", re.IGNORECASE)


def _variants(secret: str) -> set[str]:
    """The forms a secret takes after JSON or URL encoding, so encoded copies are caught too."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms.add(quote(secret, safe=""))
    forms.add(repr(secret)[1:-1])
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def _rebuild() -> None:
    """Recompile the matcher from the registered values (caller holds _lock)."""
    global _matcher, _pattern_count
    forms: set[str] = set()
    for value in _fixed.union(*_slots.values()):
        forms |= _variants(value)
    ordered = sorted(forms, key=lambda f: (-len(f), f))
    _matcher = re.compile("|".join(map(re.escape, ordered))) if ordered else None
    _pattern_count = len(ordered)


def register_secret(value: str, slot: str | None = None) -> None:
    """Redact `value` from all further log output.

    Without `slot` the value is redacted for the life of the process. With `slot` (a name for one
    secret, e.g. "tenant_access_token") the value becomes that slot's current one: its predecessor stays
    redacted as well, anything older is forgotten. Values shorter than MIN_SECRET_LENGTH are ignored.
    """
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if slot is None:
            if value in _fixed:
                return
            _fixed.add(value)
        else:
            history = _slots.get(slot, ())
            if history[:1] == (value,):
                return
            _slots[slot] = (value, *(v for v in history if v != value))[:SLOT_HISTORY]
        _rebuild()


def clear_secrets() -> None:
    """Forget every registered secret (tests only)."""
    with _lock:
        _fixed.clear()
        _slots.clear()
        _rebuild()


def redaction_pattern_count() -> int:
    """How many literal forms the redactor matches (bounded: see register_secret)."""
    return _pattern_count


def redact_text(text: str) -> str:
    """Replace registered secrets and credential-shaped substrings in `text`."""
    matcher = _matcher
    if matcher is not None:
        text = matcher.sub(REDACTED, text)
    if not any(k in text.lower() for k in ("auth", "bearer", "basic", "key", "://")):
        return text
    text = _HEADER_RE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _BEARER_RE.sub(lambda m: m.group(1) + " " + REDACTED, text)
    text = _BASIC_RE.sub(lambda m: m.group(1) + " " + REDACTED, text)
    return _URL_CRED_RE.sub(lambda m: m.group(1) + REDACTED + "@", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {_redact_value(k): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(v) for v in value)
    if isinstance(value, set | frozenset):
        return {_redact_value(v) for v in value}
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    # Arbitrary objects render through repr()/str(); redact that text instead of trusting it.
    return redact_text(str(value))


def redact_processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact every string in the event dict, recursively.

    `exc_info` is left for the renderer to format (the rendered line is redacted afterwards).
    """
    return {key: val if key == "exc_info" else _redact_value(val) for key, val in event_dict.items()}


class _RedactingRenderer:
    """Wraps the final renderer so the rendered line is redacted as well."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        rendered = self._renderer(logger, method_name, event_dict)
        if isinstance(rendered, bytes):
            rendered = rendered.decode("utf-8", "replace")
        return redact_text(str(rendered))


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _drop_color_message(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # uvicorn-style duplicates of the message; harmless elsewhere.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    level: str = "info", fmt: str = "json", secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Set up structlog and stdlib logging to write `fmt` ("json" or "console") lines to `stream`.

    May be called again (e.g. once settings are known); it replaces the handler it installed before.
    """
    global _handler
    for secret in secrets:
        register_secret(secret)
    out = stream if stream is not None else sys.stderr
    numeric = _LEVELS.get(level.lower(), logging.INFO)

    # The renderer lives in the handler's formatter, so this chain is the same for every format.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: module-level loggers must follow a later reconfiguration (and test capture); the
        # cost is one config lookup per call.
        cache_logger_on_first_use=False,
    )

    renderer: Processor
    final: list[Processor]
    if fmt == "console":
        colors = bool(getattr(out, "isatty", lambda: False)())
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
        # The console renderer formats exc_info itself; the redacting wrapper cleans its output.
        final = [redact_processor]
    else:
        renderer = structlog.processors.JSONRenderer()
        final = [structlog.processors.format_exc_info, redact_processor]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            *final,
            _RedactingRenderer(renderer),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    with _lock:
        if _handler is not None:
            root.removeHandler(_handler)
        _handler = handler
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric))


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """The logger every module uses: `log = get_logger(__name__)`."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger
