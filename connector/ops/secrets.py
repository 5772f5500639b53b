"""Secrets that follow their files: credential rotation without a restart.

Kubernetes updates a mounted Secret in place (an atomic symlink swap). A `SecretSource` re-reads the file
when its identity (inode, size, mtime) changes, checking at most once per `check_interval`, so each upstream
request uses the current value without a restart and without a syscall storm. Values given directly (env or
flag) are fixed for the life of the process; rotating those needs a rolling restart, which the manifests
make safe.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path

import httpx

from connector.ops.logging import get_logger
from connector.ops.settings import BatonSettings, SettingsError, reload_secret

log = get_logger(__name__)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows the symlink: the swap changes the target's inode
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class SecretSource:
    """The current value of one secret setting of `settings` (e.g. "access_token")."""

    def __init__(
        self,
        settings: BatonSettings,
        name: str,
        *,
        check_interval: float = 1.0,
        on_reload: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self.name = name
        self._path = settings.secret_file(name)
        self._check_interval = check_interval
        self._on_reload = on_reload
        self._clock = clock
        self._lock = threading.Lock()
        self._value = reload_secret(settings, name)
        self._identity = _identity(self._path) if self._path is not None else None
        self._next_check = clock() + check_interval

    @property
    def path(self) -> Path | None:
        return self._path

    def _read(self) -> str:
        return reload_secret(self._settings, self.name)

    def get(self) -> str:
        if self._path is None or self._clock() < self._next_check:
            return self._value
        with self._lock:
            self._next_check = self._clock() + self._check_interval
            ident = _identity(self._path)
            if ident is not None and ident != self._identity:
                self._reload(ident, reason="file changed")
        return self._value

    def force_reload(self, reason: str) -> bool:
        """Re-read now (e.g. after the upstream answered 401); True when the value changed."""
        if self._path is None:
            return False
        with self._lock:
            before = self._value
            self._reload(_identity(self._path), reason=reason)
            return self._value != before

    def _reload(self, ident: tuple[int, int, int] | None, *, reason: str) -> None:
        try:
            value = self._read()
        except SettingsError as err:
            # A half-written or briefly missing file during a swap: keep the old value, try again later.
            log.warning("secret_reload_failed", secret=self.name, error=str(err))
            return
        self._identity = ident
        if value != self._value:
            self._value = value
            log.info("secret_reloaded", secret=self.name, reason=reason)
            if self._on_reload is not None:
                self._on_reload(self.name)


class BearerAuth(httpx.Auth):
    """`Authorization: Bearer <current secret>`; on 401 re-reads a file-backed secret once and retries."""

    def __init__(self, token: SecretSource, scheme: str = "Bearer") -> None:
        self._token = token
        self._scheme = scheme

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"{self._scheme} {self._token.get()}"
        response = yield request
        if response.status_code == 401 and self._token.force_reload("upstream answered 401"):
            request.headers["Authorization"] = f"{self._scheme} {self._token.get()}"
            yield request


class BasicAuth(httpx.Auth):
    """HTTP Basic with a fixed username and a password that follows its file."""

    def __init__(self, username: str, password: SecretSource) -> None:
        self._username = username
        self._password = password

    def _apply(self, request: httpx.Request) -> None:
        pair = f"{self._username}:{self._password.get()}".encode()
        request.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._apply(request)
        response = yield request
        if response.status_code == 401 and self._password.force_reload("upstream answered 401"):
            self._apply(request)
            yield request
