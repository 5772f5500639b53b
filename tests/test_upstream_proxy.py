"""Upstream clients behind a corporate proxy: HTTPS_PROXY / NO_PROXY with the tenant channel's rules.

Both sandboxes speak TLS under a name only the proxy can resolve (like an egress proxy doing the DNS the pod
cannot), so a request that does not go through the loopback CONNECT proxy cannot reach them at all."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.apps.atlassian.client import AtlassianClient
from connector.apps.atlassian.connector import AtlassianConnector
from connector.apps.confluence_datacenter.connector import ConfluenceConnector
from connector.apps.confluence_datacenter.settings import ConfluenceSettings
from connector.ops.settings import parse_settings
from connector.sandbox.atlassian.server import start_atlassian_sandbox
from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.server import SandboxConfig, start_confluence_sandbox
from connector.sandbox.tenant.certs import make_pki
from connector.sandbox.tenant.proxy import ConnectProxy
from connector.sdk.errors import ConnectorError
from connector.sdk.http import RetryPolicy
from connector.sdk.runtime import ConnectorRuntime
from tests.test_atlassian_support import list_all

ATLASSIAN = "atlassian.proxied.test"
CONFLUENCE = "confluence.proxied.test"
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY")


class Pki:
    def __init__(self, tmp: Path) -> None:
        pki = make_pki((ATLASSIAN, CONFLUENCE))
        self.ca_file = tmp / "ca.pem"
        self.ca_file.write_bytes(pki.ca_pem)
        (tmp / "server.pem").write_bytes(pki.cert_pem)
        (tmp / "server.key").write_bytes(pki.key_pem)
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.load_cert_chain(tmp / "server.pem", tmp / "server.key")
        self.client = ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ConnectProxy]:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    p = ConnectProxy(hosts={ATLASSIAN: "127.0.0.1", CONFLUENCE: "127.0.0.1"})
    monkeypatch.setenv("HTTPS_PROXY", await p.start())
    yield p
    await p.close()


async def test_the_atlassian_client_goes_through_the_proxy_and_keeps_its_pacing(
    pki: Pki, proxy: ConnectProxy
) -> None:
    sandbox = await start_atlassian_sandbox(ssl_context=pki.server, rate_limit=20, burst=1, retry_after=False)
    port = sandbox.base_url.rsplit(":", 1)[1]
    sandbox.base_url = f"https://{ATLASSIAN}:{port}"  # the links it writes name the proxied host
    client = AtlassianClient(
        base_url=sandbox.base_url,
        api_key=sandbox.api_key,
        org_id=sandbox.org_id,
        concurrency=8,
        verify=pki.client,
    )
    runtime = ConnectorRuntime(AtlassianConnector(client))
    try:
        assert client.http.wire == "httpx" and client.http.proxy == os.environ["HTTPS_PROXY"]
        users = await list_all(runtime, "user")
        assert len(users) == len(sandbox.state.users) > 0
        # Pacing is the client's attempt hook, so it works whatever the wire: after the sandbox's 429s
        # the requests are spread out, and every one went through a CONNECT tunnel to the proxied name.
        await asyncio.gather(*(client.get_org() for _ in range(16)))
        assert sandbox.stats.rate_limited > 0 and client.pacer.spacing > 0
        assert proxy.targets and set(proxy.targets) == {f"{ATLASSIAN}:{port}"}
    finally:
        await runtime.close()
        await sandbox.stop()


async def test_the_confluence_client_goes_through_the_proxy(pki: Pki, proxy: ConnectProxy) -> None:
    sandbox = await start_confluence_sandbox(
        sandbox_data.small(), SandboxConfig(version="9.2"), ssl_context=pki.server
    )
    port = sandbox.origin.rsplit(":", 1)[1]
    settings = parse_settings(
        ConfluenceSettings,
        ["--hostname", f"https://{CONFLUENCE}:{port}", "--ca-file", str(pki.ca_file)],
        env={"BATON_ACCESS_TOKEN": "admin-pat"},
    )
    connector = ConfluenceConnector(settings)
    runtime = ConnectorRuntime(connector)
    try:
        assert await connector.validate() == []
        users = await list_all(runtime, "user")
        assert users
        assert proxy.targets and set(proxy.targets) == {f"{CONFLUENCE}:{port}"}
    finally:
        await runtime.close()
        await sandbox.stop()


async def test_no_proxy_sends_the_upstream_direct(
    pki: Pki, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NO_PROXY entry (Go's rules: `.domain` matches subdomains) bypasses the proxy, so the proxied-only
    name is looked up directly and cannot be reached; the proxy sees nothing."""
    monkeypatch.setenv("NO_PROXY", ".proxied.test")
    client = AtlassianClient(
        base_url=f"https://{ATLASSIAN}:1",
        api_key="x" * 8,
        org_id="org",
        verify=pki.client,
        retry=RetryPolicy(max_attempts=1),
        timeout=5,
    )
    try:
        assert client.http.proxy is None
        with pytest.raises(ConnectorError) as err:
            await client.get_org()
        # Never reached: outside the proxy there is no DNS for the name.
        assert f"cannot resolve host {ATLASSIAN}" in err.value.message
    finally:
        await client.aclose()
    assert proxy.records == []


async def test_a_proxy_that_needs_credentials_gets_them_from_the_url(
    pki: Pki, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy.credentials = ("corp", "s3cret")
    address = os.environ["HTTPS_PROXY"].removeprefix("http://")
    sandbox = await start_confluence_sandbox(
        sandbox_data.small(), SandboxConfig(version="9.2"), ssl_context=pki.server
    )
    port = sandbox.origin.rsplit(":", 1)[1]

    def connector() -> ConfluenceConnector:
        settings = parse_settings(
            ConfluenceSettings,
            ["--hostname", f"https://{CONFLUENCE}:{port}", "--ca-file", str(pki.ca_file)],
            env={"BATON_ACCESS_TOKEN": "admin-pat"},
        )
        return ConfluenceConnector(settings)

    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://corp:wrong@{address}")
        refused = connector()
        with pytest.raises(ConnectorError) as err:
            await refused.validate()
        await refused.close()
        # A configuration error, reported at once: not retried, and the password is not in the message.
        assert "407" in err.value.message and "wrong" not in err.value.message
        # validate tries up to three routes (version fallbacks), each once.
        refusals = [r.status for r in proxy.records]
        assert set(refusals) == {407} and len(refusals) <= 3
        proxy.records.clear()
        monkeypatch.setenv("HTTPS_PROXY", f"http://corp:s3cret@{address}")
        accepted = connector()
        assert await accepted.validate() == []
        await accepted.close()
    finally:
        await sandbox.stop()
    assert proxy.records and {r.status for r in proxy.records} == {200}
