"""`python -m connector inspect FILE ...` on engine-written and Go-layout files."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from connector.inspect_cli import inspect_main
from connector.sdk import model
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncOptions, SyncReport, run_sync
from tests.test_sync_support import Org, OrgConnector, build_go_c1z, go_fixture


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = inspect_main(list(argv), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
async def engine_file(tmp_path: Path) -> tuple[Path, SyncReport]:
    out = tmp_path / "sync.c1z"
    report = await run_sync(ConnectorRuntime(OrgConnector(Org())), out, SyncOptions())
    return out, report


def table(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line and not line.startswith("sync ")]
    return [[c.strip() for c in line.split("|")] for line in lines if not set(line) <= set("-+")]


async def test_resources_table_and_type_filter(engine_file: tuple[Path, SyncReport]) -> None:
    path, _ = engine_file
    rc, out, err = run(str(path), "resources")
    assert rc == 0 and err == ""
    rows = table(out)
    assert rows[0] == ["ID", "Display Name", "Resource Type", "Parent Resource"]
    assert ["alice", "Alice", "User", "-"] in rows
    assert ["web", "web", "Repository", "Apollo (Project)"] in rows
    assert len(rows) == 1 + 13
    rc, out, _ = run(str(path), "resources", "-t", "repo")
    assert sorted(r[0] for r in table(out)[1:]) == ["api", "infra", "web"]


async def test_grants_filters_and_sources(engine_file: tuple[Path, SyncReport]) -> None:
    path, _ = engine_file
    rc, out, _ = run(str(path), "grants", "--principal", "user:alice")
    assert rc == 0
    rows = table(out)
    assert rows[0] == ["ID", "Resource Type", "Resource", "Entitlement", "Principal", "Source"]
    by_id = {r[0]: r for r in rows[1:]}
    assert set(by_id) == {
        "group:eng:member:user:alice",
        "group:all:member:user:alice",
        "repo:web:admin:user:alice",
    }
    assert by_id["group:all:member:user:alice"][5] == "via group:eng:member"
    assert by_id["group:eng:member:user:alice"][1:] == ["Group", "ENG", "member", "Alice", "direct"]
    rc, out, _ = run(str(path), "grants", "-e", "repo:api:admin")
    assert {r[0] for r in table(out)[1:]} == {"repo:api:admin:user:bob", "repo:api:admin:user:carol"}
    rc, out, _ = run(str(path), "grants", "-t", "repo", "-r", "web")
    assert [r[0] for r in table(out)[1:]] == ["repo:web:admin:user:alice"]


async def test_json_output_has_the_baton_shapes(engine_file: tuple[Path, SyncReport]) -> None:
    path, report = engine_file
    rc, out, _ = run(str(path), "grants", "--principal", "user:carol", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert set(doc) == {"grants"}
    item = next(g for g in doc["grants"] if g["grant"]["id"] == "group:all:member:user:carol")
    assert set(item) == {"grant", "entitlement", "resource", "principal"}
    assert item["grant"]["sources"] == {"sources": {"group:ops:member": {"isDirect": True}}}
    assert item["entitlement"]["purpose"] == "PURPOSE_VALUE_ASSIGNMENT"
    assert item["principal"]["displayName"] == "Carol"
    rc, out, _ = run(str(path), "resources", "-t", "user", "--json")
    first = json.loads(out)["resources"][0]
    assert first["resourceType"]["id"] == "user"
    assert first["resource"]["annotations"][0]["@type"] == "type.googleapis.com/c1.connector.v2.UserTrait"
    rc, out, _ = run(str(path), "syncs", "--json")
    [sync] = json.loads(out)["syncs"]
    assert sync["id"] == report.sync_id and sync["syncType"] == "full" and sync["endedAt"]
    rc, out, _ = run(str(path), "stats", "--json")
    assert json.loads(out) == {
        "syncId": report.sync_id,
        "syncType": "full",
        "stats": {
            "resource_types": 4,
            "group": 3,
            "project": 2,
            "repo": 3,
            "user": 5,
            "entitlements": 6,
            "grants": 12,
        },
    }
    rc, out, _ = run(str(path), "entitlements", "-t", "repo", "--json")
    ents = json.loads(out)["entitlements"]
    assert {e["entitlement"]["id"] for e in ents} == {"repo:web:admin", "repo:api:admin", "repo:infra:admin"}
    assert all(e["resourceType"]["id"] == "repo" for e in ents)


async def test_stats_and_syncs_tables(engine_file: tuple[Path, SyncReport]) -> None:
    path, report = engine_file
    rc, out, _ = run(str(path), "stats")
    assert rc == 0
    assert out.startswith(f"sync {report.sync_id} (full, ended ")
    assert ["grants", "12"] in table(out) and ["user", "5"] in table(out)
    rc, out, _ = run(str(path), "syncs")
    rows = table(out)
    assert rows[0] == ["ID", "Started", "Ended", "Type", "Parent"]
    assert rows[1][0] == report.sync_id and rows[1][3] == "full"


async def test_sync_id_selects_an_older_sync(engine_file: tuple[Path, SyncReport]) -> None:
    path, first = engine_file
    org = Org(users=["zoe"])
    await run_sync(ConnectorRuntime(OrgConnector(org)), path, SyncOptions())
    rc, out, _ = run(str(path), "resources", "-t", "user")
    assert [r[0] for r in table(out)[1:]] == ["zoe"]
    rc, out, _ = run(str(path), "resources", "-t", "user", "--sync-id", first.sync_id)
    assert [r[0] for r in table(out)[1:]] == ["alice", "bob", "carol", "dave", "erin"]
    rc, _, err = run(str(path), "stats", "--sync-id", "nope")
    assert rc == 1 and err.strip().endswith("no sync with id 'nope' in " + str(path))


def test_go_layout_file(tmp_path: Path) -> None:
    path = tmp_path / "go.c1z"
    build_go_c1z(path)
    rc, out, _ = run(str(path), "stats")
    assert rc == 0
    rows = table(out)
    for expected in (
        ["entitlements", "5"],
        ["grants", "7"],
        ["group", "3"],
        ["resource_types", "3"],
        ["space", "2"],
    ):
        assert expected in rows
    rc, out, _ = run(str(path), "grants", "-e", "space:ENG:view")
    by_id = {r[0]: r for r in table(out)[1:]}
    assert by_id["space:ENG:view:group:confluence-users"][1:5] == [
        "Space",
        "Engineering",
        "Can view Engineering",
        "confluence-users",
    ]
    rc, out, _ = run(str(path), "grants", "--principal", "group:devs", "--json")
    [item] = json.loads(out)["grants"]
    # the backfill moved GrantExpandable out of the blob
    assert "annotations" not in item["grant"]


def test_unknown_annotation_types_are_dropped_from_json_with_a_note(tmp_path: Path) -> None:
    fx = go_fixture()
    custom = any_pb2.Any(type_url="type.googleapis.com/acme.v1.Custom", value=b"\x08\x01")
    fx.users[0] = model.new_resource("Alice", "user", "alice", annotations=[custom, model.user_trait()])
    path = tmp_path / "go.c1z"
    build_go_c1z(path, fx)
    rc, out, err = run(str(path), "resources", "-t", "user", "--json")
    assert rc == 0
    alice = json.loads(out)["resources"][0]["resource"]
    assert [a["@type"] for a in alice["annotations"]] == ["type.googleapis.com/c1.connector.v2.UserTrait"]
    assert err.strip() == "inspect: annotations of unknown types omitted from JSON: acme.v1.Custom"
    rc, out, _ = run(str(path), "resources", "-t", "user")
    assert rc == 0 and "Alice" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello world, not a c1z", "not a c1z file (bad magic)"),
        (
            b"C1Z3\x00\x00\x00\x00\x10",
            "c1z v3 (Pebble) files are not supported; only the v1 SQLite format is",
        ),
        (b"C1ZF\x00garbage", "corrupt c1z: zstd: "),
    ],
)
def test_bad_files_give_one_line_and_exit_1(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.c1z"
    path.write_bytes(content)
    rc, out, err = run(str(path), "stats")
    assert rc == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"inspect: {path}: {message}")


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    rc, _, err = run(str(tmp_path / "nope.c1z"), "resources")
    assert rc == 1 and err == f"inspect: {tmp_path / 'nope.c1z'}: no such file: {tmp_path / 'nope.c1z'}\n"
    # argparse problems are returned as status 2, not raised
    rc, _, _ = run(str(tmp_path / "x.c1z"), "grants", "--principal", "alice")
    assert rc == 2


def test_python_dash_m_connector_inspect(tmp_path: Path) -> None:
    path = tmp_path / "sync.c1z"
    asyncio.run(run_sync(ConnectorRuntime(OrgConnector(Org())), path, SyncOptions()))
    proc = subprocess.run(
        [sys.executable, "-m", "connector", "inspect", str(path), "resources", "-t", "project"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r[0] for r in table(proc.stdout)[1:]] == ["apollo", "zeus"]
    bad = path.with_name("bad.c1z")
    bad.write_bytes(b"nope!")
    proc = subprocess.run(
        [sys.executable, "-m", "connector", "inspect", str(bad), "stats"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == f"inspect: {bad}: not a c1z file (bad magic)\n"
