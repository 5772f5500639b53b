"""Full syncs of the sandbox to a .c1z (in process and over gRPC), read back with C1zReader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import annotation_trait_pb2
from connector.sandbox.confluence import data as sandbox_data
from connector.sandbox.confluence.server import SandboxConfig, start_confluence_sandbox
from connector.sdk import model
from connector.sdk.client import GrpcConnectorClient
from connector.sdk.runtime import ConnectorRuntime
from connector.sdk.server import serve
from connector.sync.engine import SyncOptions, run_sync
from tests.test_confluence_support import TINY_CAPS, expected_grant_ids, running, user_id, user_ids


@pytest.mark.parametrize("version", ["7.19", "9.2"])
async def test_run_sync_writes_everything_and_expands_group_permissions(version: str, tmp_path: Path) -> None:
    data = sandbox_data.small()
    out = tmp_path / "sync.c1z"
    config = SandboxConfig(version=version, caps=TINY_CAPS)
    async with running(version, data=data, config=config) as (_, connector):
        report = await run_sync(ConnectorRuntime(connector), out, SyncOptions())

    assert report.resources == {"user": len(data.users), "group": len(data.groups), "space": len(data.spaces)}
    assert report.entitlements == len(data.groups) + 14 * len(data.spaces)
    assert report.upstream_requests > 0
    # Anonymous permissions and alias keys are no grants, but the report counts them.
    anonymous = sum(1 for _, p in data.iter_permissions() if p[1] == "anonymous")
    assert anonymous > 0
    assert report.connector_counters["space_permissions_anonymous_skipped"] == anonymous
    if version == "7.19":  # JSON-RPC returns EXPORTPAGE next to every VIEWSPACE entry; REST has no aliases
        viewspace = sum(1 for _, p in data.iter_permissions() if p[0] == "VIEWSPACE")
        assert report.connector_counters["space_permissions_alias_skipped"] == viewspace
    else:
        assert "space_permissions_alias_skipped" not in report.connector_counters
    assert report.to_dict()["connector_counters"] == report.connector_counters

    with C1zReader(out) as reader:
        assert {rt.id for rt in reader.resource_types()} == {"user", "group", "space"}
        users = {r.id.resource: r for r in reader.resources(resource_type="user")}
        assert set(users) == set(user_ids(data))
        zoe = users[user_id(data, "zoë.müller")]
        trait = model.find_annotation(zoe.annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None and trait.login == "zoë.müller"
        assert expected_grant_ids(data) <= {g.id for g in reader.grants()}
        # Every member of a group holding a space permission now holds it too (derived by the engine).
        for key, (perm, kind, name) in data.iter_permissions():
            if kind != "group" or perm != "EDITSPACE" or name is None:
                continue
            for member in data.groups[name].members:
                grants = list(
                    reader.grants(
                        entitlement_id=f"space:{key}:create-page",
                        principal=model.resource_id("user", user_id(data, member)),
                    )
                )
                assert grants, f"{member} should hold create-page on {key} through {name}"


async def test_each_sync_of_a_long_lived_connector_reports_its_own_counters(tmp_path: Path) -> None:
    data = sandbox_data.small()
    anonymous = sum(1 for _, p in data.iter_permissions() if p[1] == "anonymous")
    async with running("9.2", data=data) as (_, connector):
        runtime = ConnectorRuntime(connector)
        first = await run_sync(runtime, tmp_path / "first.c1z", SyncOptions(skip_expand_grants=True))
        second = await run_sync(runtime, tmp_path / "second.c1z", SyncOptions(skip_expand_grants=True))
    assert first.connector_counters["space_permissions_anonymous_skipped"] == anonymous
    assert second.connector_counters == first.connector_counters  # not accumulated across syncs


async def test_sync_over_grpc_matches_in_process(tmp_path: Path) -> None:
    data = sandbox_data.small()
    async with running("8.5", data=data) as (_, connector):
        runtime = ConnectorRuntime(connector)
        server = await serve(runtime, "127.0.0.1:0")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        client = GrpcConnectorClient(channel)
        try:
            report = await run_sync(client, tmp_path / "grpc.c1z", SyncOptions(skip_expand_grants=True))
        finally:
            await client.close()
            await server.stop()
    assert report.grants_direct == len(expected_grant_ids(data))
    with C1zReader(tmp_path / "grpc.c1z") as reader:
        assert {g.id for g in reader.grants()} == expected_grant_ids(data)


async def test_cli_one_shot_sync_and_failed_validation_leaves_no_file(tmp_path: Path) -> None:
    sandbox = await start_confluence_sandbox(sandbox_data.small(), SandboxConfig(version="9.2"))
    try:
        ok = tmp_path / "ok.c1z"
        bad = tmp_path / "bad.c1z"
        common = [
            sys.executable,
            "-m",
            "connector.apps.confluence_datacenter.main",
            "--hostname",
            sandbox.base_url,
        ]
        done = await _run([*common, "--access-token", "admin-pat", "-f", str(ok), "--log-level", "error"])
        failed = await _run(
            [*common, "--access-token", "bogus-token", "-f", str(bad), "--log-level", "error"]
        )
    finally:
        await sandbox.stop()
    assert done.returncode == 0, done.stderr
    with C1zReader(ok) as reader:
        assert sum(1 for _ in reader.resources(resource_type="space")) == 8
    assert failed.returncode == 1
    assert "personal access token" in failed.stderr and "bogus-token" not in failed.stderr
    assert not bad.exists()


async def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(argv, proc.returncode or 0, out.decode(), err.decode())
