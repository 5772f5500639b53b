"""Upstream secrets mounted as files are followed without a restart (Kubernetes Secret rotation)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from pydantic import Field, SecretStr

from connector.ops.secrets import BasicAuth, BearerAuth, SecretSource
from connector.ops.settings import BatonSettings, parse_settings

SEEN = web.AppKey("seen", list[str])


class AppSettings(BatonSettings):
    api_token: SecretStr | None = Field(default=None, description="token")
    password: SecretStr | None = Field(default=None, description="password")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _swap(directory: Path, name: str, value: str) -> None:
    """Rotate the way the kubelet does: write a new file, then atomically repoint the symlink."""
    target = directory / f".{name}.{value}"
    target.write_text(value + "\n")
    tmp = directory / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    os.replace(tmp, directory / name)


def test_file_secret_is_reread_after_swap_and_not_more_often(tmp_path: Path) -> None:
    _swap(tmp_path, "token", "first-token")
    settings = parse_settings(AppSettings, [], {"BATON_API_TOKEN_FILE": str(tmp_path / "token")})
    clock = Clock()
    reloads: list[str] = []
    source = SecretSource(settings, "api_token", check_interval=5.0, clock=clock, on_reload=reloads.append)
    assert source.get() == "first-token"
    _swap(tmp_path, "token", "second-token")
    assert source.get() == "first-token"  # within the check interval: no re-read yet
    clock.now = 6.0
    assert source.get() == "second-token"
    assert reloads == ["api_token"]
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "second-token"


def test_missing_file_during_swap_keeps_the_old_value(tmp_path: Path) -> None:
    _swap(tmp_path, "token", "stable-token")
    settings = parse_settings(AppSettings, [], {"BATON_API_TOKEN_FILE": str(tmp_path / "token")})
    clock = Clock()
    source = SecretSource(settings, "api_token", check_interval=1.0, clock=clock)
    (tmp_path / "token").unlink()
    clock.now = 2.0
    assert source.get() == "stable-token"


def test_direct_value_never_changes(tmp_path: Path) -> None:
    settings = parse_settings(AppSettings, ["--api-token", "fixed-token"], {})
    source = SecretSource(settings, "api_token")
    assert source.get() == "fixed-token"
    assert source.force_reload("401") is False


@pytest.fixture
async def upstream() -> web.AppRunner:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        seen.append(header)
        if header in ("Bearer good-token", "Basic " + base64.b64encode(b"admin:good-pass").decode()):
            return web.json_response({"ok": True})
        return web.json_response({"message": "unauthorized"}, status=401)

    app = web.Application()
    app.router.add_get("/", handler)
    app[SEEN] = seen
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner


def _url(runner: web.AppRunner) -> str:
    port = runner.addresses[0][1]
    return f"http://127.0.0.1:{port}/"


async def test_bearer_auth_rereads_on_401_and_retries_once(tmp_path: Path, upstream: web.AppRunner) -> None:
    _swap(tmp_path, "token", "old-token")
    settings = parse_settings(AppSettings, [], {"BATON_API_TOKEN_FILE": str(tmp_path / "token")})
    source = SecretSource(settings, "api_token", check_interval=3600)
    _swap(tmp_path, "token", "good-token")  # rotated, but the periodic check has not run yet
    async with httpx.AsyncClient(auth=BearerAuth(source)) as client:
        resp = await client.get(_url(upstream))
    assert resp.status_code == 200
    assert upstream.app[SEEN] == ["Bearer old-token", "Bearer good-token"]
    await upstream.cleanup()


async def test_basic_auth_uses_rotated_password(tmp_path: Path, upstream: web.AppRunner) -> None:
    _swap(tmp_path, "password", "old-pass")
    settings = parse_settings(AppSettings, [], {"BATON_PASSWORD_FILE": str(tmp_path / "password")})
    clock = Clock()
    source = SecretSource(settings, "password", check_interval=1.0, clock=clock)
    async with httpx.AsyncClient(auth=BasicAuth("admin", source)) as client:
        first = await client.get(_url(upstream))
        _swap(tmp_path, "password", "good-pass")
        clock.now = 5.0
        second = await client.get(_url(upstream))
    assert first.status_code == 401  # old password, and the file had not changed: no retry loop
    assert second.status_code == 200
    await upstream.cleanup()
