"""`Task.debug`: a task's own log lines, at debug level, as JSON in `<tempDir>/debug.log` (spec §4.9).

While a debug task runs, every log record emitted *in that task's context* (its handler, the connector
code it calls, threads it starts through `asyncio.to_thread`) is also written to the file, whatever the
process log level; the regular log output keeps its configured level. Records are recognised by a
context variable set in the task's asyncio context, so concurrent tasks do not leak into each other's
file. Lines go through the same secret redaction as the regular output, and the file is private (0600).

Mechanics: the first active tee lowers the root logger to DEBUG (so debug records are created at all) and
pins every other root handler that had no level of its own to the previous root level (so they keep
printing what they printed before); the last tee to stop restores both.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import threading
from pathlib import Path
from typing import IO

import structlog

from connector.ops.logging import redact_processor, redact_text

DEBUG_LOG_NAME = "debug.log"
# A debug sync of a large instance logs every upstream request: the file is capped so it cannot fill the
# temp dir (an emptyDir the c1z needs too) or make the upload unbounded. Past the cap one last line says
# so and the rest of the task's lines go to the regular output only.
DEBUG_LOG_MAX_BYTES = 64 << 20

_task: contextvars.ContextVar[str | None] = contextvars.ContextVar("baton_debug_task", default=None)


def _formatter() -> logging.Formatter:
    # Library (stdlib) records get the task's context fields too: emit runs in the emitting context.
    pre_chain: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_processor,
            structlog.processors.JSONRenderer(),
        ],
    )


class _File:
    """One task's open debug.log and how much of its cap is used."""

    def __init__(self, fh: IO[str], max_bytes: int) -> None:
        self.fh = fh
        self.max_bytes = max_bytes
        self.written = 0
        self.full = False

    def write(self, line: str) -> None:
        if self.full:
            return
        data = line + "\n"
        size = len(data.encode("utf-8"))
        if self.written + size > self.max_bytes:
            self.full = True
            data = json.dumps(
                {"event": "debug_log_truncated", "level": "warning", "max_bytes": self.max_bytes}
            )
            data += "\n"
        self.fh.write(data)
        self.fh.flush()
        self.written += size

    def close(self) -> None:
        self.fh.close()


class _Tee(logging.Handler):
    """One handler on the root logger for every active debug task: routes a record to the file of the
    task whose context emitted it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(_formatter())
        self.files: dict[str, _File] = {}

    def emit(self, record: logging.LogRecord) -> None:
        task_id = _task.get()
        if task_id is None:
            return
        out = self.files.get(task_id)
        if out is None or out.full:
            return
        try:
            out.write(redact_text(self.format(record)))
        except Exception:  # a log line must never break the task
            self.handleError(record)


_lock = threading.Lock()
_tee: _Tee | None = None
_saved_root_level = logging.NOTSET
_pinned: list[logging.Handler] = []


def _activate() -> _Tee:
    global _tee, _saved_root_level
    if _tee is None:
        root = logging.getLogger()
        _saved_root_level = root.level
        for handler in root.handlers:
            if handler.level == logging.NOTSET:
                handler.setLevel(_saved_root_level)
                _pinned.append(handler)
        _tee = _Tee()
        root.addHandler(_tee)
        root.setLevel(logging.DEBUG)
    return _tee


def _deactivate() -> None:
    global _tee
    if _tee is None or _tee.files:
        return
    root = logging.getLogger()
    root.removeHandler(_tee)
    if root.level == logging.DEBUG:  # unless someone reconfigured logging meanwhile
        root.setLevel(_saved_root_level)
    for handler in _pinned:
        handler.setLevel(logging.NOTSET)
    _pinned.clear()
    _tee = None


class DebugLog:
    """The tee for one task. `start()` (re)creates the file (truncating it) and must be called in the
    task's own asyncio context; `stop()` closes it (idempotent). The file itself is left in place."""

    def __init__(self, path: Path, task_id: str, max_bytes: int | None = None) -> None:
        self.path = path
        self.task_id = task_id
        self.max_bytes = DEBUG_LOG_MAX_BYTES if max_bytes is None else max_bytes
        self._token: contextvars.Token[str | None] | None = None
        self._active = False

    def start(self) -> None:
        # O_APPEND: a second debug task truncates the shared file, but lines never overwrite each other.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        fh = _File(os.fdopen(fd, "w", encoding="utf-8"), self.max_bytes)
        with _lock:
            tee = _activate()
            old = tee.files.pop(self.task_id, None)
            tee.files[self.task_id] = fh
        if old is not None:
            old.close()
        self._token = _task.set(self.task_id)
        self._active = True

    def stop(self) -> None:
        if not self._active:
            return
        self._active = False
        if self._token is not None:
            # Stopped from another context (a child task): the variable then dies with its own context.
            with contextlib.suppress(ValueError):
                _task.reset(self._token)
            self._token = None
        with _lock:
            fh = _tee.files.pop(self.task_id, None) if _tee is not None else None
            _deactivate()
        if fh is not None:
            fh.close()
