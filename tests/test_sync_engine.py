"""The sync engine end to end through the in-process runtime: phases, options, failures, files."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from connector.c1z import writer as c1z_writer
from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    connector_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.sdk import model
from connector.sdk.errors import ConnectorError
from connector.sdk.runtime import ConnectorRuntime
from connector.sync import engine, tuning
from connector.sync.engine import SyncError, SyncOptions, run_sync
from tests import test_sync_support as sync_support
from tests.test_sync_support import (
    Org,
    OrgConnector,
    Wrapped,
    build_go_c1z,
    files,
    grant_ids,
    grant_map,
)


def runtime(org: Org | None = None) -> ConnectorRuntime:
    return ConnectorRuntime(OrgConnector(org or Org()))


async def test_full_sync_writes_everything_and_reports(tmp_path: Path) -> None:
    rt = runtime()
    out = tmp_path / "sync.c1z"
    phases: list[str] = []
    report = await run_sync(rt, out, SyncOptions(), on_phase=phases.append)
    assert phases == [
        "validate",
        "resource-types",
        "resources",
        "static-entitlements",
        "entitlements",
        "grants",
        "grant-expansion",
        "save",
    ]
    assert report.sync_type == "full"
    assert report.resource_types == 4
    assert report.resources == {"group": 3, "project": 2, "repo": 3, "user": 5}
    assert report.entitlements == 6
    assert report.grants_direct == 9
    assert report.grants_expanded == 3
    assert report.upstream_requests == len(rt.connector.org.calls)  # type: ignore[attr-defined]
    assert report.connector_counters == {"bots_seen": 0}
    assert report.c1z_bytes == out.stat().st_size
    assert report.warning_count == 0
    assert rt.connector.cleaned == 1  # type: ignore[attr-defined]
    assert files(tmp_path) == ["sync.c1z"]
    with C1zReader(out) as r:
        [run] = r.syncs()
        assert run.sync_id == report.sync_id and run.finished and run.sync_type == "full"
        assert r.stats() == {
            "resource_types": 4,
            "group": 3,
            "project": 2,
            "repo": 3,
            "user": 5,
            "entitlements": 6,
            "grants": 12,
        }
    d = report.to_dict()
    assert d["grants"] == 12 and d["resources_total"] == 13 and d["sync_id"] == report.sync_id


async def test_child_resources_are_listed_under_their_parent(tmp_path: Path) -> None:
    org = Org()
    out = tmp_path / "sync.c1z"
    await run_sync(runtime(org), out, SyncOptions())
    assert "list repo under apollo" in org.calls and "list repo under zeus" in org.calls
    with C1zReader(out) as r:
        apollo = model.resource_id("project", "apollo")
        assert sorted(x.id.resource for x in r.resources(parent=apollo)) == ["api", "web"]
        assert r.conn is not None
        rows = set(
            r.conn.execute(
                "select external_id, parent_resource_type_id, parent_resource_id from v1_resources"
            )
        )
        assert ("repo:infra", "project", "zeus") in rows
        assert ("user:alice", None, None) in rows
        admins = {g.principal.id.resource for g in r.grants(resource=model.resource_id("repo", "api"))}
        assert admins == {"bob", "carol"}


async def test_trait_check_fails_the_sync_naming_the_resource(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    with pytest.raises(SyncError) as err:
        await run_sync(runtime(Org(missing_trait_for="bob")), out, SyncOptions())
    assert str(err.value) == (
        "sync failed in phase resources for user:bob: resource was missing expected trait UserTrait "
        "(its resource type user declares it)"
    )
    assert files(tmp_path) == []


async def test_connector_error_mid_sync_leaves_no_file(tmp_path: Path) -> None:
    org = Org()
    org.fail[("grants", "group:eng")] = lambda: ConnectorError(
        grpc.StatusCode.PERMISSION_DENIED, "list members of eng: HTTP 403: not allowed"
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rt = runtime(org)
    with pytest.raises(SyncError) as err:
        await run_sync(rt, tmp_path / "sync.c1z", SyncOptions(), temp_dir=scratch)
    assert str(err.value) == (
        "sync failed in phase grants for group:eng: PERMISSION_DENIED: list members of eng: HTTP 403: not "
        "allowed"
    )
    assert err.value.phase == "grants" and err.value.where == "group:eng"
    assert files(tmp_path) == ["scratch"]
    assert files(scratch) == []
    assert rt.connector.cleaned == 1  # type: ignore[attr-defined]


async def test_connector_bug_is_reported_in_one_line(tmp_path: Path) -> None:
    org = Org()
    org.fail[("entitlements", "group:ops")] = lambda: KeyError("members")
    with pytest.raises(SyncError) as err:
        await run_sync(runtime(org), tmp_path / "sync.c1z", SyncOptions())
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("sync failed in phase entitlements for group:ops: UNKNOWN: ")
    assert files(tmp_path) == []


async def test_failure_keeps_an_existing_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    await run_sync(runtime(), out, SyncOptions())
    before = out.read_bytes()
    org = Org()
    org.fail[("grants", "repo:web")] = lambda: ConnectorError(grpc.StatusCode.INTERNAL, "boom")
    with pytest.raises(SyncError, match="phase grants for repo:web: INTERNAL: boom"):
        await run_sync(runtime(org), out, SyncOptions())
    assert out.read_bytes() == before
    assert files(tmp_path) == ["sync.c1z"]


async def test_cancellation_leaves_nothing(tmp_path: Path) -> None:
    started = asyncio.Event()
    never = asyncio.Event()
    rt = runtime()

    async def slow_grants(request: grant_pb2.GrantsServiceListGrantsRequest) -> Any:
        started.set()
        await never.wait()
        raise AssertionError("unreachable")

    client = Wrapped(rt, list_grants=slow_grants)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    task = asyncio.create_task(run_sync(client, tmp_path / "sync.c1z", SyncOptions(), temp_dir=scratch))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files(tmp_path) == ["scratch"]
    assert files(scratch) == []


async def test_validate_failure_names_the_phase(tmp_path: Path) -> None:
    conn = OrgConnector()
    conn.validate_error = ConnectorError(grpc.StatusCode.UNAUTHENTICATED, "token rejected by upstream")
    with pytest.raises(SyncError, match=r"^sync failed in phase validate: UNAUTHENTICATED: token rejected"):
        await run_sync(ConnectorRuntime(conn), tmp_path / "sync.c1z", SyncOptions())
    assert files(tmp_path) == []


# --- options -----------------------------------------------------------------------------------------


async def test_skip_expand_grants_keeps_expansion_for_c1(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    report = await run_sync(runtime(), out, SyncOptions(skip_expand_grants=True))
    assert report.grants_expanded == 0 and report.grants_direct == 9
    with C1zReader(out) as r:
        nested = [rec for rec in r.grant_records() if rec.expansion is not None]
    assert {rec.grant.id for rec in nested} == {"group:all:member:group:eng", "group:all:member:group:ops"}
    assert all(rec.needs_expansion for rec in nested)


async def test_skip_entitlements_and_grants_is_resources_only(tmp_path: Path) -> None:
    org = Org()
    out = tmp_path / "sync.c1z"
    report = await run_sync(runtime(org), out, SyncOptions(skip_entitlements_and_grants=True))
    assert report.sync_type == "resources_only"
    assert (report.entitlements, report.grants_direct, report.grants_expanded) == (0, 0, 0)
    assert not any(c.startswith(("grants", "entitlements")) for c in org.calls)
    with C1zReader(out) as r:
        [run] = r.syncs()
        assert run.sync_type == "resources_only"
        assert r.stats(sync_id=run.sync_id) == {
            "resource_types": 4,
            "group": 3,
            "project": 2,
            "repo": 3,
            "user": 5,
        }


async def test_skip_grants_keeps_entitlements(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    report = await run_sync(runtime(), out, SyncOptions(skip_grants=True))
    assert report.sync_type == "full"
    assert report.entitlements == 6 and report.grants_direct == 0
    assert grant_ids(out) == set()


async def test_sync_resource_type_ids_filters_types_and_children(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    report = await run_sync(runtime(), out, SyncOptions(sync_resource_type_ids=("project", "user")))
    assert report.resources == {"project": 2, "user": 5}
    assert report.resource_types == 2
    with C1zReader(out) as r:
        assert [t.id for t in r.resource_types()] == ["user", "project"]


async def test_unknown_sync_resource_type_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SyncError) as err:
        await run_sync(runtime(), tmp_path / "sync.c1z", SyncOptions(sync_resource_type_ids=("user", "nope")))
    assert str(err.value) == (
        "sync failed in phase resource-types: unknown resource type 'nope' in sync_resource_type_ids "
        "(the connector has: group, project, repo, user)"
    )
    assert files(tmp_path) == []


async def test_skip_full_sync_writes_an_empty_finished_sync(tmp_path: Path) -> None:
    org = Org()
    out = tmp_path / "sync.c1z"
    report = await run_sync(runtime(org), out, SyncOptions(skip_full_sync=True))
    assert report.connector_calls == 0 and org.calls == []
    with C1zReader(out) as r:
        [run] = r.syncs()
        assert run.finished and run.sync_type == "full"
        assert r.stats() == {"resource_types": 0, "entitlements": 0, "grants": 0}


async def test_targeted_sync_is_partial_with_parent(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    full = await run_sync(runtime(), out, SyncOptions())
    org = Org()
    org.groups["eng"].append("user:dave")
    target = model.group_resource("ENG", "group", "eng")
    report = await run_sync(
        runtime(org), out, SyncOptions(targeted_resources=[target, model.resource_id("user", "carol")])
    )
    assert report.sync_type == "partial"
    assert report.resources == {"group": 1, "user": 1}  # principals are not fetched (as in Go)
    assert report.entitlements == 1 and report.grants_direct == 3
    with C1zReader(out) as r:
        run = r.get_sync(report.sync_id)
        assert run is not None and run.parent_sync_id == full.sync_id and run.sync_type == "partial"
        assert {g.id for g in r.grants(sync_id=report.sync_id)} == {
            "group:eng:member:user:alice",
            "group:eng:member:user:bob",
            "group:eng:member:user:dave",
        }
        # the full sync is still what listings show by default
        assert r.view_sync_id == full.sync_id
    assert not any(c.startswith("grants group:ops") for c in org.calls)


async def test_targeted_sync_fetches_missing_entitlement_resources(tmp_path: Path) -> None:
    rt = runtime()
    alice = model.user_resource("Alice", "user", "alice", model.user_trait())
    team = model.new_resource("Team X", "team", "x")

    async def list_grants(request: grant_pb2.GrantsServiceListGrantsRequest) -> Any:
        if request.resource.id.resource_type == "user":
            return grant_pb2.GrantsServiceListGrantsResponse(list=[model.new_grant(team, "member", alice.id)])
        return await rt.list_grants(request)

    async def get_resource(request: resource_pb2.ResourceGetterServiceGetResourceRequest) -> Any:
        if request.resource_id.resource_type == "team":
            return resource_pb2.ResourceGetterServiceGetResourceResponse(resource=team)
        return await rt.get_resource(request)

    out = tmp_path / "sync.c1z"
    report = await run_sync(
        Wrapped(rt, list_grants=list_grants, get_resource=get_resource),
        out,
        SyncOptions(targeted_resources=["user:alice"]),
    )
    assert report.resources == {"team": 1, "user": 1}


async def test_invalid_target_string_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="invalid target 'alice': expected TYPE:ID"):
        await run_sync(runtime(), tmp_path / "sync.c1z", SyncOptions(targeted_resources=["alice"]))
    assert files(tmp_path) == []


async def test_skip_annotations_on_types_and_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = Org(
        user_annotations=[model.skip_entitlements_and_grants()],
        group_annotations_for={"ops": [model.skip_grants()], "all": [model.skip_entitlements()]},
    )
    # The resources of a skipped type are not even read back from the store for the phases they skip
    # (in a directory sync they are most of the resources).
    read_back: list[str] = []
    original = engine._resource_page

    def resource_page(*args: Any) -> list[tuple[int, bytes]]:
        page = original(*args)
        read_back.extend(resource_pb2.Resource.FromString(d).id.resource_type for _, d in page)
        return page

    monkeypatch.setattr(engine, "_resource_page", resource_page)
    out = tmp_path / "sync.c1z"
    await run_sync(runtime(org), out, SyncOptions(writer_process=False))
    assert "group" in read_back and "user" not in read_back
    assert not any(c.startswith(("entitlements user", "grants user")) for c in org.calls)
    assert not any(c.startswith("grants group:ops") for c in org.calls)
    with C1zReader(out) as r:
        ents = {e.id for e in r.entitlements()}
        assert "group:all:member" not in ents and "group:ops:member" in ents
        assert not any(g.entitlement.id == "group:ops:member" for g in r.grants())


async def test_insert_resource_grants_stores_entitlement_resources(tmp_path: Path) -> None:
    rt = runtime()
    alice = model.user_resource("Alice", "user", "alice", model.user_trait())
    team = model.new_resource("Team X", "team", "x")

    async def list_grants(request: grant_pb2.GrantsServiceListGrantsRequest) -> Any:
        if request.resource.id == alice.id:
            return grant_pb2.GrantsServiceListGrantsResponse(
                list=[model.new_grant(team, "member", alice.id)],
                annotations=[model.pack(annotation_grant_pb2.InsertResourceGrants())],
            )
        return await rt.list_grants(request)

    out = tmp_path / "sync.c1z"
    report = await run_sync(Wrapped(rt, list_grants=list_grants), out, SyncOptions())
    assert report.resources["team"] == 1
    with C1zReader(out) as r:
        assert r.get_resource("team", "x") == team
        assert "team:x:member:user:alice" in {g.id for g in r.grants()}


async def test_static_entitlements_are_synthesized_per_resource(tmp_path: Path) -> None:
    rt = runtime()

    async def static(request: entitlement_pb2.EntitlementsServiceListStaticEntitlementsRequest) -> Any:
        if request.resource_type_id == "project":
            tpl = entitlement_pb2.Entitlement(
                slug="viewer",
                display_name="Viewer",
                purpose=entitlement_pb2.Entitlement.PURPOSE_VALUE_PERMISSION,
            )
            return entitlement_pb2.EntitlementsServiceListStaticEntitlementsResponse(list=[tpl])
        raise ConnectorError(grpc.StatusCode.UNIMPLEMENTED, "no static entitlements")

    out = tmp_path / "sync.c1z"
    report = await run_sync(Wrapped(rt, list_static_entitlements=static), out, SyncOptions())
    assert report.entitlements == 8
    with C1zReader(out) as r:
        e = r.get_entitlement("project:zeus:viewer")
        assert e is not None
        assert e.display_name == "Viewer" and e.slug == "viewer"
        assert e.resource.id == model.resource_id("project", "zeus")
        assert e.resource.display_name == "Zeus"


async def test_not_found_on_one_resource_is_a_warning(tmp_path: Path) -> None:
    org = Org()
    org.fail[("grants", "repo:api")] = lambda: ConnectorError(
        grpc.StatusCode.NOT_FOUND, "repo api was deleted"
    )
    out = tmp_path / "sync.c1z"
    report = await run_sync(runtime(org), out, SyncOptions())
    assert report.warning_count == 1
    assert report.warnings == ["grants of repo:api: not found: repo api was deleted"]
    assert "repo:api:admin:user:bob" not in grant_ids(out)
    assert "repo:web:admin:user:alice" in grant_ids(out)


async def test_next_page_token_unchanged_is_an_error(tmp_path: Path) -> None:
    rt = runtime()

    async def list_resources(request: resource_pb2.ResourcesServiceListResourcesRequest) -> Any:
        resp = await rt.list_resources(request)
        if request.resource_type_id == "group" and request.page_token:
            resp.next_page_token = request.page_token
        return resp

    with pytest.raises(SyncError) as err:
        await run_sync(Wrapped(rt, list_resources=list_resources), tmp_path / "sync.c1z", SyncOptions())
    assert str(err.value) == (
        "sync failed in phase resources for group: INTERNAL: list group resources: "
        "next page token unchanged - likely a connector bug"
    )


async def test_active_sync_id_follows_sdk_version(tmp_path: Path) -> None:
    for version, expect in (("v0.25.0", True), ("0.4.2", False)):
        rt = runtime()
        seen: list[str] = []

        async def validate(request: Any, version: str = version) -> Any:
            return connector_pb2.ConnectorServiceValidateResponse(sdk_version=version)

        async def list_grants(
            request: grant_pb2.GrantsServiceListGrantsRequest, rt: Any = rt, seen: list[str] = seen
        ) -> Any:
            seen.append(request.active_sync_id)
            return await rt.list_grants(request)

        out = tmp_path / f"{version}.c1z"
        report = await run_sync(Wrapped(rt, validate=validate, list_grants=list_grants), out, SyncOptions())
        assert seen and set(seen) == ({report.sync_id} if expect else {""})


async def test_concurrency_bound_is_respected_and_results_equal(tmp_path: Path) -> None:
    org = Org(users=[f"u{i}" for i in range(30)])
    rt = runtime(org)
    active = 0
    peak = 0

    async def list_entitlements(request: entitlement_pb2.EntitlementsServiceListEntitlementsRequest) -> Any:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.002)
        active -= 1
        return await rt.list_entitlements(request)

    client = Wrapped(rt, list_entitlements=list_entitlements)
    await run_sync(client, tmp_path / "a.c1z", SyncOptions(concurrency=4))
    assert 1 < peak <= 4
    peak = 0
    await run_sync(client, tmp_path / "b.c1z", SyncOptions(concurrency=1))
    assert peak == 1
    assert grant_map(tmp_path / "a.c1z") == grant_map(tmp_path / "b.c1z")


async def test_sync_appends_to_existing_file_like_go(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    fx = build_go_c1z(out)
    report = await run_sync(runtime(), out, SyncOptions())
    with C1zReader(out) as r:
        assert [s.sync_id for s in r.syncs()] == [fx.sync_id, report.sync_id]
        assert r.view_sync_id == report.sync_id
        assert len(list(r.resources(sync_id=fx.sync_id))) == 8
    # a third full sync drops the oldest (2 full syncs are kept by default)
    third = await run_sync(runtime(), out, SyncOptions())
    with C1zReader(out) as r:
        assert [s.sync_id for s in r.syncs()] == [report.sync_id, third.sync_id]


async def test_cancel_while_opening_an_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    await run_sync(runtime(), out, SyncOptions())
    before = out.read_bytes()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for delay in (0, 0.0005):
        task = asyncio.create_task(run_sync(runtime(), out, SyncOptions(), temp_dir=scratch))
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert files(scratch) == []
        assert files(tmp_path) == ["scratch", "sync.c1z"]
        assert out.read_bytes() == before


async def test_interpreter_settings_are_held_while_syncs_run_and_restored(tmp_path: Path) -> None:
    # During a sync the GIL switch interval is short and what existed before it is frozen out of the
    # garbage collector's full passes (a ~50 ms loop stall each); afterwards both are as they were, also
    # after a failed sync, and a freeze the embedding application made is left alone.
    before = sys.getswitchinterval()
    assert gc.get_freeze_count() == 0
    seen: list[tuple[float, int]] = []

    def sample(_phase: str) -> None:
        seen.append((sys.getswitchinterval(), gc.get_freeze_count()))

    await run_sync(runtime(), tmp_path / "a.c1z", SyncOptions(), on_phase=sample)
    assert seen and all(interval <= tuning.SWITCH_INTERVAL_S and frozen > 0 for interval, frozen in seen)
    assert sys.getswitchinterval() == before
    assert gc.get_freeze_count() == 0

    org = Org()
    org.fail[("grants", "group:eng")] = lambda: ConnectorError(grpc.StatusCode.INTERNAL, "boom")
    with pytest.raises(SyncError):
        await run_sync(runtime(org), tmp_path / "b.c1z", SyncOptions())
    assert sys.getswitchinterval() == before
    assert gc.get_freeze_count() == 0

    # Two syncs at once: the first one ending leaves the settings to the one still running.
    first_done = asyncio.Event()
    second_running = asyncio.Event()
    inner = runtime()

    async def list_resources(request: Any) -> Any:
        second_running.set()
        await first_done.wait()
        return await inner.list_resources(request)

    second = asyncio.create_task(
        run_sync(Wrapped(inner, list_resources=list_resources), tmp_path / "d.c1z", SyncOptions())
    )
    await second_running.wait()
    await run_sync(runtime(), tmp_path / "c.c1z", SyncOptions())
    assert not second.done()
    assert gc.get_freeze_count() > 0 and sys.getswitchinterval() <= tuning.SWITCH_INTERVAL_S
    first_done.set()
    await second
    assert gc.get_freeze_count() == 0 and sys.getswitchinterval() == before

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        await run_sync(runtime(), tmp_path / "e.c1z", SyncOptions())
        # The application's freeze survives the sync (less what the sync's own teardown deallocated).
        assert gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()


async def test_a_large_page_of_resources_hands_the_loop_back_while_it_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connector answering with thousands of resources at once must not hold the event loop while the
    # engine checks and encodes them: the answers to the requests in flight would wait behind it.
    monkeypatch.setattr(sync_support, "PAGE", 10_000)
    monkeypatch.setattr(engine, "MAX_STEP_S", 0.0)
    org = Org(users=[f"u{i:04d}" for i in range(640)])
    ticks = 0
    loop_turns_during_big_page: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    original = engine._Syncer.store_resources

    async def store_resources(self: Any, items: Any) -> Any:
        before = ticks
        out = await original(self, items)
        if len(items) == 640:
            loop_turns_during_big_page.append(ticks - before)
        return out

    monkeypatch.setattr(engine._Syncer, "store_resources", store_resources)
    task = asyncio.create_task(ticker())
    try:
        report = await run_sync(runtime(org), tmp_path / "big.c1z", SyncOptions())
    finally:
        task.cancel()
    assert report.resources["user"] == 640
    # Every 64 resources once the 0 s budget is spent: at least 9 hand-backs for 640.
    assert loop_turns_during_big_page and loop_turns_during_big_page[0] >= 9


async def test_small_pages_and_statements_give_the_same_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Resource pages (read back with a prefetch) and multi-row statements (with power-of-two
    # remainders) cut at sizes far below the defaults: every resource is listed once, every row is kept.
    org = Org(users=[f"u{i}" for i in range(23)], groups={"eng": [f"user:u{i}" for i in range(19)]})
    await run_sync(runtime(org), tmp_path / "default.c1z", SyncOptions())
    default_calls = sorted(org.calls)
    org.calls.clear()
    monkeypatch.setattr(engine, "RESOURCE_PAGE", 4)
    monkeypatch.setattr(c1z_writer, "MAX_ROWS_PER_STATEMENT", 3)
    await run_sync(runtime(org), tmp_path / "small.c1z", SyncOptions(concurrency=3))
    assert sorted(org.calls) == default_calls
    assert sum(1 for c in org.calls if c.startswith("grants user:")) == 23
    assert grant_map(tmp_path / "small.c1z") == grant_map(tmp_path / "default.c1z")
    with C1zReader(tmp_path / "small.c1z") as small, C1zReader(tmp_path / "default.c1z") as default:
        assert small.stats() == default.stats()
        assert small.stats()["user"] == 23
        assert sorted(r.SerializeToString(deterministic=True) for r in small.resources()) == sorted(
            r.SerializeToString(deterministic=True) for r in default.resources()
        )
