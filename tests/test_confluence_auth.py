"""Settings, validation and auth failures of the Confluence connector, as a user meets them."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from pathlib import Path

import grpc
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connector.apps.confluence_datacenter.connector import ConfluenceConnector
from connector.apps.confluence_datacenter.main import SPEC
from connector.apps.confluence_datacenter.settings import ConfluenceSettings
from connector.ops.settings import SettingsError, parse_settings
from connector.pb.c1.connector.v2 import resource_pb2
from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.server import SandboxConfig, start_confluence_sandbox
from connector.sdk.errors import ConnectorError
from connector.sdk.runtime import ConnectorRuntime
from tests.test_confluence_support import expected_grant_ids, running, settings_for, sync_all

# --- settings -------------------------------------------------------------------------------------


def test_flags_and_env_use_the_go_connector_names() -> None:
    env = {
        "BATON_HOSTNAME": "https://wiki.example.com/confluence/",
        "BATON_ACCESS_TOKEN": "pat-from-env",
        "BATON_USERNAME": "svc",
        "BATON_PASSWORD": "pw-from-env",
        "BATON_PROVISIONING": "true",
    }
    s = parse_settings(ConfluenceSettings, [], env=env)
    assert s.hostname == "https://wiki.example.com/confluence"  # trailing slash dropped, context kept
    assert s.access_token is not None and s.access_token.get_secret_value() == "pat-from-env"
    assert s.username == "svc" and s.password is not None
    assert s.provisioning is True
    assert s.request_concurrency == 8 and s.rate_limit is None
    flags = parse_settings(
        ConfluenceSettings,
        [
            "--hostname",
            "https://wiki.example.com",
            "--username",
            "a",
            "--password",
            "b",
            "--ca-file",
            "/x.pem",
        ],
        env={},
    )
    assert flags.hostname == "https://wiki.example.com"
    assert flags.ca_file == "/x.pem"
    assert SPEC.name == "baton-confluence-datacenter" and SPEC.settings_cls is ConfluenceSettings


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--hostname", "https://h"], "--access-token / BATON_ACCESS_TOKEN"),
        (["--hostname", "https://h", "--username", "u"], "missing --password / BATON_PASSWORD"),
        (["--hostname", "https://h", "--password", "p"], "missing --username / BATON_USERNAME"),
        (["--access-token", "t"], "missing --hostname / BATON_HOSTNAME"),
        (["--hostname", "ftp://h", "--access-token", "t"], "--hostname / BATON_HOSTNAME"),
        (
            ["--hostname", "https://h", "--access-token", "t", "--request-concurrency", "0"],
            "--request-concurrency",
        ),
        (
            ["--hostname", "https://h", "--access-token", "t", "--ca-file", "c", "--insecure-skip-verify"],
            "set only one",
        ),
    ],
)
def test_bad_settings_name_the_flag(argv: list[str], needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings(ConfluenceSettings, argv, env={})
    assert needle in str(err.value)
    assert "pw" not in str(err.value)


async def test_token_wins_over_basic_credentials() -> None:
    async with running("9.2", args=("--username", "viewer", "--password", "viewer")) as (_, connector):
        await connector.validate()  # as admin (the token), not viewer (Basic)
        assert connector.client.auth_mode == "token"


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["7.19", "8.5", "9.2"])
async def test_validate_accepts_an_admin_token_and_detects_the_version(version: str) -> None:
    async with running(version) as (_, connector):
        assert await connector.validate() == []
        caps = await connector.client.capabilities()
    assert caps.version is not None and ".".join(map(str, caps.version[:2])) == version


async def test_invalid_pat_answered_as_anonymous_is_rejected() -> None:
    async with running("9.2", token="not-a-real-token") as (_, connector):
        with pytest.raises(ConnectorError) as err:
            await connector.validate()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "personal access token" in err.value.message and "anonymous" in err.value.message
    assert "not-a-real-token" not in err.value.message


@pytest.mark.parametrize("version", ["7.19", "9.2"])
async def test_non_admin_token_lacks_admin_rights(version: str) -> None:
    async with running(version, token="viewer-pat") as (_, connector):
        with pytest.raises(ConnectorError) as err:
            await connector.validate()
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "administrator" in err.value.message and "viewer" in err.value.message


async def test_wrong_basic_credentials_give_a_clear_message() -> None:
    sandbox = await start_confluence_sandbox(sandbox_data.small(), SandboxConfig(version="8.5"))
    try:
        good = ConfluenceConnector(
            settings_for(sandbox, "--username", "admin", "--password", "admin", token=None)
        )
        assert await good.validate() == []
        await good.close()
        bad = ConfluenceConnector(
            settings_for(sandbox, "--username", "admin", "--password", "wrong", token=None)
        )
        with pytest.raises(ConnectorError) as err:
            await bad.validate()
        await bad.close()
    finally:
        await sandbox.stop()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "username/password" in err.value.message and "AUTHENTICATION_DENIED" in err.value.message
    assert "wrong" not in err.value.message


async def test_unreachable_host_and_wrong_context_path() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    settings = parse_settings(
        ConfluenceSettings, ["--hostname", f"http://127.0.0.1:{port}", "--access-token", "t"], env={}
    )
    connector = ConfluenceConnector(settings)
    connector.client.http.retry = connector.client.http.retry.__class__(max_attempts=1)
    with pytest.raises(ConnectorError) as err:
        await connector.validate()
    await connector.close()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert f"cannot reach Confluence at http://127.0.0.1:{port}" in err.value.message

    config = SandboxConfig(version="9.2", context_path="/confluence")
    sandbox = await start_confluence_sandbox(sandbox_data.small(), config)
    try:
        rootless = parse_settings(
            ConfluenceSettings, ["--hostname", sandbox.origin, "--access-token", "admin-pat"], env={}
        )
        connector = ConfluenceConnector(rootless)
        with pytest.raises(ConnectorError) as err:
            await connector.validate()
        await connector.close()
    finally:
        await sandbox.stop()
    assert "context path" in err.value.message


# --- TLS ------------------------------------------------------------------------------------------


def _pki(tmp: Path) -> tuple[Path, ssl.SSLContext]:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Private CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp / "server.pem", tmp / "server.key")
    return ca_file, server_ctx


async def test_tls_private_ca_needs_ca_file_or_explicit_insecure_mode(tmp_path: Path) -> None:
    ca_file, server_ctx = _pki(tmp_path)
    sandbox = await start_confluence_sandbox(
        sandbox_data.small(), SandboxConfig(version="9.2"), ssl_context=server_ctx
    )
    try:
        assert sandbox.base_url.startswith("https://")
        plain = ConfluenceConnector(settings_for(sandbox))
        with pytest.raises(ConnectorError) as err:
            await plain.validate()
        await plain.close()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "TLS" in err.value.message and "--ca-file" in err.value.message

        trusted = ConfluenceConnector(settings_for(sandbox, "--ca-file", str(ca_file)))
        assert await trusted.validate() == []
        await trusted.close()

        insecure = ConfluenceConnector(settings_for(sandbox, "--insecure-skip-verify"))
        assert await insecure.validate() == []
        await insecure.close()
    finally:
        await sandbox.stop()

    with pytest.raises(SettingsError) as bad:
        ConfluenceConnector(settings_for(sandbox, "--ca-file", str(tmp_path / "missing.pem")))
    assert "--ca-file" in str(bad.value)


def test_insecure_skip_verify_is_logged_loudly() -> None:
    settings = parse_settings(
        ConfluenceSettings,
        ["--hostname", "https://wiki.example.com", "--access-token", "t", "--insecure-skip-verify"],
        env={},
    )
    with structlog.testing.capture_logs() as logs:
        connector = ConfluenceConnector(settings)
    warnings = [e for e in logs if e["event"] == "confluence_tls_verification_disabled"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert "NOT checked" in warnings[0]["detail"] and warnings[0]["hostname"] == "https://wiki.example.com"
    assert connector.settings.insecure_skip_verify
    verified = ["--hostname", "https://wiki.example.com", "--access-token", "t"]
    with structlog.testing.capture_logs() as quiet:
        ConfluenceConnector(parse_settings(ConfluenceSettings, verified, env={}))
    assert not [e for e in quiet if e["event"] == "confluence_tls_verification_disabled"]


# --- secrets that follow their files ---------------------------------------------------------------


def _swap(directory: Path, name: str, value: str) -> None:
    """Rotate the way the kubelet does: write a new file, then atomically repoint the symlink."""
    target = directory / f".{name}.{len(list(directory.iterdir()))}"
    target.write_text(value + "\n")
    tmp = directory / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    os.replace(tmp, directory / name)


async def test_rotated_token_file_is_used_by_the_next_request(tmp_path: Path) -> None:
    data = sandbox_data.small()
    data.tokens["admin-pat-rotated"] = "admin"
    sandbox = await start_confluence_sandbox(data, SandboxConfig(version="9.2"))
    _swap(tmp_path, "token", "admin-pat")
    settings = parse_settings(
        ConfluenceSettings,
        ["--hostname", sandbox.base_url],
        env={"BATON_ACCESS_TOKEN_FILE": str(tmp_path / "token")},
    )
    connector = ConfluenceConnector(settings)
    try:
        assert await connector.validate() == []
        # The token is rotated and the old one revoked at once: well inside the file-check interval, so
        # only Confluence answering as anonymous can tell the connector to re-read the file.
        _swap(tmp_path, "token", "admin-pat-rotated")
        del data.tokens["admin-pat"]
        synced = await sync_all(connector)
        assert connector.client.http.stats.requests > 10
    finally:
        await connector.close()
        await sandbox.stop()
    assert synced.ids("space") == list(data.spaces)  # every space, not just the ones anonymous users see
    assert synced.grant_ids() == expected_grant_ids(data)
    assert settings.access_token is not None
    assert settings.access_token.get_secret_value() == "admin-pat-rotated"


async def test_revoked_token_mid_sync_fails_rather_than_syncing_what_anonymous_sees() -> None:
    data = sandbox_data.small()
    async with running("9.2", data=data) as (_, connector):
        await connector.validate()
        del data.tokens["admin-pat"]  # revoked in Confluence, nothing rotated
        with pytest.raises(ConnectorError) as err:
            await ConnectorRuntime(connector).list_resources(
                resource_pb2.ResourcesServiceListResourcesRequest(resource_type_id="space")
            )
    anonymous_view = [k for k in data.spaces if data.can_view(None, k)]
    assert anonymous_view, "the data set should have spaces open to anonymous readers"
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "anonymous" in err.value.message and "invalid, expired or revoked" in err.value.message
    assert "admin-pat" not in err.value.message


async def test_rotated_password_file_is_used_after_the_401(tmp_path: Path) -> None:
    data = sandbox_data.small()
    sandbox = await start_confluence_sandbox(data, SandboxConfig(version="8.5"))
    _swap(tmp_path, "password", "admin")
    settings = parse_settings(
        ConfluenceSettings,
        ["--hostname", sandbox.base_url, "--username", "admin"],
        env={"BATON_PASSWORD_FILE": str(tmp_path / "password")},
    )
    connector = ConfluenceConnector(settings)
    try:
        assert await connector.validate() == []
        data.users["admin"].password = "n3w-Passw0rd"
        _swap(tmp_path, "password", "n3w-Passw0rd")
        synced = await sync_all(connector)
    finally:
        await connector.close()
        await sandbox.stop()
    assert synced.grant_ids() == expected_grant_ids(data)
    assert sandbox.stats.unauthorized == 1  # one 401, then the new password
