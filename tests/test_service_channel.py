"""The way to the tenant: HTTPS_PROXY / NO_PROXY (one decision for the token endpoint and gRPC) through a
real HTTP CONNECT proxy on loopback, and the trust store (system roots plus BATON_C1_CA_FILE)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from connector.sandbox.tenant import TenantHandle
from connector.sandbox.tenant.proxy import ConnectProxy
from connector.service.credentials import CredentialError
from connector.service.proxy import bypasses_proxy, normalize_proxy, proxy_for
from connector.service.tenant import _system_roots_pem, channel_options, root_certificates
from connector.service.testing_app import RecordingTimer
from tests import service_support
from tests.service_support import Starter, TenantMaker, eventually

new_tenant = service_support.new_tenant  # fixtures
start = service_support.start

NAME = "tenant.proxied.test"  # resolvable only by the proxy


# ---------------------------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypass"),
    [
        ("acme.conductor.one", "", False),
        ("acme.conductor.one", "*", True),
        ("acme.conductor.one", "conductor.one", True),  # a domain matches itself and its subdomains
        ("conductor.one", "conductor.one", True),
        ("conductor.one", ".conductor.one", False),  # a leading dot: subdomains only
        ("acme.conductor.one", ".conductor.one", True),
        ("acme.conductor.one", "*.conductor.one", True),
        ("notconductor.one", "conductor.one", False),
        ("acme.conductor.one", "other.example, ACME.conductor.one ", True),
        ("acme.conductor.one", "acme.conductor.one:8443", False),  # port must match when given
        ("acme.conductor.one", "acme.conductor.one:443", True),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("10.1.2.3", "10.1.2.3", True),
        ("10.1.2.3", "10.1.2.4,192.168.0.0/16", False),
        ("10.1.2.3", "1.2.3", False),  # domain entries never match IP hosts
        ("localhost", "", True),  # loopback is never proxied (as Go's net/http)
        ("127.0.0.1", "", True),
        ("::1", "", True),
    ],
)
def test_no_proxy_rules_follow_go(host: str, no_proxy: str, bypass: bool) -> None:
    assert bypasses_proxy(host, 443, no_proxy) is bypass


def test_proxy_variables_and_their_precedence() -> None:
    env = {"HTTPS_PROXY": "proxy.corp:3128", "https_proxy": "http://other:1"}
    assert proxy_for("acme.conductor.one", 443, env) == "http://proxy.corp:3128"
    assert proxy_for("acme.conductor.one", 443, {"https_proxy": "http://p:8080"}) == "http://p:8080"
    # HTTP_PROXY is for http:// URLs; the tenant is https.
    assert proxy_for("acme.conductor.one", 443, {"HTTP_PROXY": "http://p:8080"}) is None
    env = {"HTTPS_PROXY": "http://p:8080", "NO_PROXY": "conductor.one", "no_proxy": ""}
    assert proxy_for("acme.conductor.one", 443, env) is None
    env = {"HTTPS_PROXY": "http://p:8080", "no_proxy": "conductor.one"}
    assert proxy_for("acme.conductor.one", 443, env) is None
    assert normalize_proxy("http://u:p%40ss@[::1]", "HTTPS_PROXY") == "http://u:p%40ss@[::1]:80"


@pytest.mark.parametrize("value", ["https://u:hunter22@proxy:443", "socks5://u:hunter22@proxy:1080"])
def test_unsupported_proxies_are_refused_without_echoing_credentials(value: str) -> None:
    with pytest.raises(CredentialError) as info:
        normalize_proxy(value, "HTTPS_PROXY")
    assert "HTTPS_PROXY" in str(info.value) and "hunter22" not in str(info.value)


def test_grpc_gets_the_decision_explicitly() -> None:
    assert ("grpc.http_proxy", "http://p:1") in channel_options("ua", "http://p:1")
    # Direct: grpc-core must not apply its own (lower-case only) reading of the environment.
    assert ("grpc.enable_http_proxy", 0) in channel_options("ua", None)


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    """Not yet listening: `url = await proxy.start()`."""
    p = ConnectProxy(hosts={NAME: "127.0.0.1"}, credentials=("egress", "s3cret pass"))
    try:
        yield p
    finally:
        await p.close()


async def proxied_tenant(new_tenant: TenantMaker) -> tuple[TenantHandle, str]:
    tenant = await new_tenant(server_names=(NAME,))
    return tenant, f"{NAME}:{tenant.address.rsplit(':', 1)[1]}"


async def test_token_and_grpc_both_go_through_https_proxy(
    start: Starter, new_tenant: TenantMaker, proxy: ConnectProxy
) -> None:
    tenant, address = await proxied_tenant(new_tenant)
    url = await proxy.start()
    host_port = url.removeprefix("http://")
    env = {
        "BATON_C1_API_HOST": address,  # only the proxy can resolve this name
        "HTTPS_PROXY": f"http://egress:s3cret%20pass@{host_port}",
        "NO_PROXY": "other.example,.corp.internal",
    }
    run = await start(tenant=tenant, env=env)
    tid = tenant.enqueue_sync()
    assert (await tenant.wait_finished(tid)).outcome == "success"
    # Two tunnels: the token client's and the gRPC channel's, both authenticated and to the tenant.
    assert proxy.targets == [address, address]
    assert {r.status for r in proxy.records} == {200}
    assert tenant.connections == {"grpc": 1, "http": 1}
    assert await run.stopped() == 0


async def test_wrong_proxy_credentials_keep_the_daemon_retrying(
    start: Starter, new_tenant: TenantMaker, proxy: ConnectProxy
) -> None:
    tenant, address = await proxied_tenant(new_tenant)
    url = await proxy.start()
    timer = RecordingTimer(scale=1.0, cap=0.02)
    env = {"BATON_C1_API_HOST": address, "HTTPS_PROXY": url.replace("http://", "http://egress:wrong@")}
    run = await start(tenant=tenant, env=env, timer=timer, wait_hello=False)
    await eventually(lambda: len(timer.of("hello_backoff")) >= 2)
    assert {r.status for r in proxy.records} == {407} and tenant.tenant.token_requests == []
    assert not run.health.ready
    assert await run.stopped() == 0


async def test_a_bypassed_tenant_is_reached_directly(start: Starter, new_tenant: TenantMaker) -> None:
    # The tenant is on loopback (never proxied) and NO_PROXY names it too: the daemon must not use the
    # proxy for either client. (Which hosts bypass is covered rule by rule above.)
    decoy = ConnectProxy()
    url = await decoy.start()
    try:
        with structlog.testing.capture_logs() as logs:
            run = await start(env={"HTTPS_PROXY": url, "NO_PROXY": "127.0.0.0/8"})
        assert decoy.records == []
        (starting,) = [e for e in logs if e["event"] == "daemon_starting"]
        assert starting["proxy"] == "direct"
        assert await run.stopped() == 0
    finally:
        await decoy.close()


async def test_an_unusable_proxy_setting_exits_2(start: Starter, new_tenant: TenantMaker) -> None:
    run = await start(env={"HTTPS_PROXY": "https://egress:hunter22@proxy.corp:443"}, wait_hello=False)
    assert await asyncio.wait_for(run.task, 5) == 2
    out = run.stderr.getvalue()
    assert out.startswith("error: invalid HTTPS_PROXY") and out.count("\n") == 1 and "hunter22" not in out


# ---------------------------------------------------------------------------------------------- trust


def test_the_ca_file_adds_to_the_system_roots(tmp_path: Path) -> None:
    from connector.sandbox.tenant.certs import make_pki

    ca = make_pki().ca_pem
    (tmp_path / "ca.pem").write_bytes(ca)
    bundle = root_certificates(str(tmp_path / "ca.pem"))
    system = _system_roots_pem()
    assert bundle is not None and ca in bundle
    assert system and bundle.startswith(system)  # added, not replacing
    assert root_certificates(None) is None  # grpc's defaults


async def test_without_the_ca_file_the_tenant_is_not_trusted(start: Starter) -> None:
    timer = RecordingTimer(scale=1.0, cap=0.02)
    run = await start(env={"BATON_C1_CA_FILE": ""}, timer=timer, wait_hello=False)
    await eventually(lambda: len(timer.of("hello_backoff")) >= 2)
    assert run.tenant.tenant.token_requests == [] and not run.health.ready
    assert "CERTIFICATE_VERIFY_FAILED" in run.health.details().get("tenant_error", "")
    assert await run.stopped() == 0
