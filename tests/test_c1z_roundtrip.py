"""Writing and reading back c1z files: rows, upserts, GrantExpandable handling, retention, sync views."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from connector.c1z import rows
from connector.c1z.container import C1zError
from connector.c1z.reader import C1zReader
from connector.c1z.writer import C1zWriter
from connector.pb.c1.connector.v2 import annotation_grant_pb2, entitlement_pb2, grant_pb2, resource_pb2
from connector.sdk import model
from tests.test_sync_support import (
    GROUP,
    PROJECT,
    REPO,
    USER,
    Org,
    group_res,
    project_res,
    repo_res,
    user_res,
)


def _grant(
    ent_res: resource_pb2.Resource, slug: str, ptype: str, pid: str, *annotations: object
) -> grant_pb2.Grant:
    return model.new_grant(ent_res, slug, model.resource_id(ptype, pid), annotations=list(annotations))  # type: ignore[arg-type]


def test_round_trip_of_every_object_kind(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    org = Org()
    alice, bob = user_res("alice"), user_res("bob")
    eng = group_res("eng", org)
    apollo = project_res("apollo")
    web = repo_res("web", "apollo")
    member = model.assignment_entitlement(eng, "member", grantable_to=[USER])
    admin = model.permission_entitlement(web, "admin")
    grants = [_grant(eng, "member", "user", "alice"), _grant(web, "admin", "user", "bob")]
    with C1zWriter(out) as w:
        sync_id = w.start_sync("full")
        w.put_resource_types([USER, GROUP, PROJECT, REPO])
        w.put_resources([alice, bob, eng, apollo, web])
        w.put_entitlements([member, admin])
        assert w.put_grants(grants) == []
        w.end_sync()
    with C1zReader(out) as r:
        assert r.view_sync_id == sync_id
        assert list(r.resource_types()) == [USER, GROUP, PROJECT, REPO]
        assert list(r.resources()) == [alice, bob, eng, apollo, web]
        assert list(r.resources(resource_type="user")) == [alice, bob]
        assert list(r.resources(parent=apollo.id)) == [web]
        assert r.get_resource("repo", "web") == web
        assert list(r.entitlements()) == [member, admin]
        assert list(r.entitlements(resource=web.id)) == [admin]
        assert r.get_entitlement("group:eng:member") == member
        assert list(r.grants()) == grants
        assert list(r.grants(principal=model.resource_id("user", "bob"))) == [grants[1]]
        assert list(r.grants(entitlement_id="group:eng:member")) == [grants[0]]
        assert list(r.grants(resource_type="repo")) == [grants[1]]
        [run] = r.syncs()
        assert run.sync_type == "full" and run.finished and run.supports_diff
        assert run.sync_token == "" and run.parent_sync_id == ""
        assert r.stats() == {
            "resource_types": 4,
            "group": 1,
            "project": 1,
            "repo": 1,
            "user": 2,
            "entitlements": 2,
            "grants": 2,
        }


def test_denormalized_columns_agree_with_blobs(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    org = Org()
    eng = group_res("eng", org)
    web = repo_res("web", "apollo")
    with C1zWriter(out) as w:
        w.start_sync("full")
        w.put_resources([eng, web, user_res("alice")])
        w.put_entitlements([model.assignment_entitlement(eng, "member")])
        w.put_grants([_grant(eng, "member", "user", "alice"), _grant(web, "admin", "group", "eng")])
        w.end_sync()
    with C1zReader(out) as r:
        assert r.conn is not None
        for rtype, ext, ptype, pid, data in r.conn.execute(
            "select resource_type_id, external_id, parent_resource_type_id, parent_resource_id, data from "
            "v1_resources"
        ):
            res = resource_pb2.Resource.FromString(data)
            assert (rtype, ext) == (res.id.resource_type, f"{res.id.resource_type}:{res.id.resource}")
            if res.HasField("parent_resource_id"):
                assert (ptype, pid) == (res.parent_resource_id.resource_type, res.parent_resource_id.resource)
            else:
                assert ptype is None and pid is None
        for rtype, rid, ext, data in r.conn.execute(
            "select resource_type_id, resource_id, external_id, data from v1_entitlements"
        ):
            e = entitlement_pb2.Entitlement.FromString(data)
            assert (rtype, rid, ext) == (e.resource.id.resource_type, e.resource.id.resource, e.id)
        for row in r.conn.execute(
            "select resource_type_id, resource_id, entitlement_id, principal_resource_type_id, "
            "principal_resource_id, external_id, data from v1_grants"
        ):
            g = grant_pb2.Grant.FromString(row[6])
            assert row[:6] == rows.grant_columns(g)


def test_upsert_last_write_wins_and_keeps_first_position(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    v1 = model.new_resource("Alice v1", USER, "alice")
    v2 = model.new_resource("Alice v2", USER, "alice")
    v3 = model.new_resource("Alice v3", USER, "alice")
    bob = model.new_resource("Bob", USER, "bob")
    with C1zWriter(out) as w:
        w.start_sync("full")
        w.put_resources([v1, bob])
        w.put_resources([v2])
        w.put_resources([v3, v3])  # duplicates inside one statement too
        w.end_sync()
    with C1zReader(out) as r:
        assert [x.display_name for x in r.resources()] == ["Alice v3", "Bob"]
        assert r.conn is not None
        assert r.conn.execute("select id from v1_resources where external_id = 'user:alice'").fetchall() == [
            (1,)
        ]


def test_grant_expandable_moves_into_expansion_column(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    org = Org()
    eng, all_ = group_res("eng", org), group_res("all", org)
    metadata = annotation_grant_pb2.GrantMetadata()
    metadata.metadata.update({"k": "v"})
    nested = _grant(
        all_, "member", "group", "eng", model.expandable(["group:eng:member"], shallow=True), metadata
    )
    blank = _grant(all_, "member", "group", "ops", model.expandable(["  "]))
    plain = _grant(eng, "member", "user", "alice")
    with C1zWriter(out) as w:
        w.start_sync("full")
        w.put_grants([nested, blank, plain])
        w.end_sync()
    with C1zReader(out) as r:
        recs = {rec.grant.id: rec for rec in r.grant_records()}
    rec = recs["group:all:member:group:eng"]
    assert rec.needs_expansion
    assert rec.expansion == model.expandable(["group:eng:member"], shallow=True).SerializeToString()
    assert [a.type_url for a in rec.grant.annotations] == [
        "type.googleapis.com/c1.connector.v2.GrantMetadata"
    ]
    # an annotation naming no entitlement is stripped but gives no expansion
    assert recs["group:all:member:group:ops"].expansion is None
    assert not recs["group:all:member:group:ops"].needs_expansion
    assert list(recs["group:all:member:group:ops"].grant.annotations) == []
    assert recs["group:eng:member:user:alice"].expansion is None
    # the caller's message is not modified by put_grants
    assert len(nested.annotations) == 2


def test_grant_upsert_needs_expansion_rules(tmp_path: Path) -> None:
    org = Org()
    all_ = group_res("all", org)

    def nested(*ids: str) -> grant_pb2.Grant:
        annotations = [model.expandable(list(ids))] if ids else []
        return _grant(all_, "member", "group", "eng", *annotations)

    out = tmp_path / "sync.c1z"
    w = C1zWriter(out)
    w.start_sync("full")
    # The upsert rules apply once the grant indexes exist (a fresh file's bulk load appends, see below).
    w.ensure_indexes()
    w.put_grants([nested("group:eng:member")])

    def state() -> tuple[bytes | None, int]:
        row = w.conn.execute("select expansion, needs_expansion from v1_grants").fetchone()
        return (bytes(row[0]) if row[0] is not None else None, row[1])

    w.conn.execute("update v1_grants set needs_expansion = 0")
    w.put_grants([nested("group:eng:member")])
    assert state()[1] == 0, "an unchanged expansion keeps needs_expansion"
    w.put_grants([nested("group:eng:member", "group:ops:member")])
    assert state() == (model.expandable(["group:eng:member", "group:ops:member"]).SerializeToString(), 1)
    w.put_grants([nested()])
    assert state() == (None, 0), "a grant written without the annotation clears its expansion"
    # expander-style writes preserve the expansion state
    w.put_grants([nested("group:eng:member")])
    w.put_grants([nested()], preserve_expansion=True)
    assert state()[1] == 1
    w.abort()


@pytest.mark.parametrize("bulk_load_after", [0, 100_000], ids=["bulk-load", "indexed"])
def test_a_grant_listed_twice_in_one_batch_keeps_its_last_listing(
    tmp_path: Path, bulk_load_after: int
) -> None:
    """Rows with and without a GrantExpandable are stored by separate statements; the listing order still
    decides which of two listings of one grant is kept, however the grants were batched."""
    org = Org()
    all_ = group_res("all", org)
    eng = _grant(all_, "member", "group", "eng", model.expandable(["group:eng:member"]))
    ops = _grant(all_, "member", "group", "ops", model.expandable(["group:ops:member"]))
    with C1zWriter(tmp_path / "sync.c1z", bulk_load_after=bulk_load_after) as w:
        w.start_sync("full")
        w.put_grants(
            [
                eng,
                _grant(all_, "member", "user", "alice"),
                _grant(all_, "member", "group", "eng"),  # eng again, now without the expansion: kept
                _grant(all_, "member", "group", "ops"),
                ops,  # ops again, now with it: kept
            ]
        )
        w.ensure_indexes()
        stored = w.conn.execute(
            "select external_id, expansion is not null, needs_expansion from v1_grants order by external_id"
        ).fetchall()
        w.end_sync()
    assert stored == [
        ("group:all:member:group:eng", 0, 0),
        ("group:all:member:group:ops", 1, 1),
        ("group:all:member:user:alice", 0, 0),
    ]


def test_bulk_load_keeps_the_last_write_of_a_repeated_grant(tmp_path: Path) -> None:
    """A new file bulk-loads grants without indexes (here from the first one); a grant listed twice ends up
    stored once, as written last (what the upserts of an indexed load leave), and the unique index holds."""
    org = Org()
    all_ = group_res("all", org)
    out = tmp_path / "sync.c1z"
    with C1zWriter(out, bulk_load_after=0) as w:
        w.start_sync("full")
        w.put_grants([_grant(all_, "member", "group", "eng", model.expandable(["group:eng:member"]))])
        w.put_grants([_grant(all_, "member", "user", "alice")])
        w.put_grants([_grant(all_, "member", "group", "eng")])  # the same grant again, now plain
        w.put_grants([_grant(all_, "member", "user", "alice", model.expandable(["group:x:member"]))])
        w.ensure_indexes()
        rows = w.conn.execute(
            "select external_id, expansion is not null, needs_expansion from v1_grants order by external_id"
        ).fetchall()
        assert rows == [("group:all:member:group:eng", 0, 0), ("group:all:member:user:alice", 1, 1)]
        with pytest.raises(sqlite3.IntegrityError):
            w.conn.execute(
                "insert into v1_grants (resource_type_id, resource_id, entitlement_id, "
                "principal_resource_type_id, principal_resource_id, external_id, data, sync_id, "
                "discovered_at) select resource_type_id, resource_id, entitlement_id, "
                "principal_resource_type_id, principal_resource_id, external_id, data, sync_id, "
                "discovered_at from v1_grants limit 1"
            )
        w.end_sync()
    with C1zReader(out) as r:
        assert sorted(g.id for g in r.grants()) == [
            "group:all:member:group:eng",
            "group:all:member:user:alice",
        ]


def test_bulk_load_starts_past_the_threshold_and_keeps_upsert_semantics(tmp_path: Path) -> None:
    """Below the threshold grants are upserted into an indexed table; past it the grant indexes are dropped
    and rows appended; either way the file ends with one row per grant id and every index."""
    org = Org()
    all_ = group_res("all", org)
    out = tmp_path / "sync.c1z"

    def grant_indexes(w: C1zWriter) -> set[str]:
        return {
            str(r[0])
            for r in w.conn.execute(
                "select name from sqlite_master where type = 'index' and tbl_name = 'v1_grants'"
            )
        }

    with C1zWriter(out, bulk_load_after=3) as w:
        w.start_sync("full")
        full = grant_indexes(w)
        assert "idx_grants_external_sync_v1" in full and len(full) == 6
        w.put_grants([_grant(all_, "member", "user", u) for u in ("a", "b")])
        w.put_grants([_grant(all_, "member", "user", "a")])  # an upsert: still indexed
        assert grant_indexes(w) == full
        assert w.conn.execute("select count(*) from v1_grants").fetchone()[0] == 2
        w.put_grants([_grant(all_, "member", "user", u) for u in ("b", "c")])  # past 3 written: bulk
        assert grant_indexes(w) == set()
        w.ensure_indexes()
        assert grant_indexes(w) == full
        assert sorted(r[0] for r in w.conn.execute("select external_id from v1_grants")) == [
            "group:all:member:user:a",
            "group:all:member:user:b",
            "group:all:member:user:c",
        ]
        w.put_grants([_grant(all_, "member", "user", u) for u in ("d", "e", "f", "g")])
        assert grant_indexes(w) == full, "indexes stay once they are final"
        w.end_sync()


def test_serialization_is_deterministic(tmp_path: Path) -> None:
    org = Org()
    a = _grant(group_res("all", org), "member", "user", "alice")
    b = grant_pb2.Grant()
    b.CopyFrom(a)
    for key in ("group:z:member", "group:a:member", "group:m:member"):
        a.sources.sources[key].is_direct = True
    for key in ("group:m:member", "group:z:member", "group:a:member"):
        b.sources.sources[key].is_direct = True
    batch_a, batch_b = rows.GrantRows(), rows.GrantRows()
    batch_a.add_all([a])
    batch_b.add_all([b])
    assert batch_a.plain[0][6] == batch_b.plain[0][6]


@pytest.mark.parametrize(
    "grant",
    [
        model.new_grant(
            model.new_resource("x" * 300, "group", "g" * 200), "member", model.resource_id("user", "u" * 150)
        ),
        model.new_grant(
            model.new_resource("Ünïcødé", "group", "grüppe"), "member", model.resource_id("user", "ßob")
        ),
        model.new_grant(
            model.new_resource("G", "group", "g"),
            "member",
            resource_pb2.Resource(
                id=resource_pb2.ResourceId(resource_type="user", resource="u", baton_resource=True),
                display_name="U",
                annotations=[model.pack(model.user_trait())],
            ),
            annotations=[annotation_grant_pb2.GrantImmutable(source_id="s")],
        ),
    ],
)
def test_fast_grant_columns_match_attribute_columns(grant: grant_pb2.Grant) -> None:
    batch = rows.GrantRows()
    batch.add_all([grant])
    assert batch.plain[0][:6] == rows.grant_columns(grant)


@pytest.mark.parametrize(
    ("grant", "problem"),
    [
        (
            grant_pb2.Grant(entitlement=entitlement_pb2.Entitlement(id="e"), principal=user_res("a")),
            "has no id",
        ),
        (
            grant_pb2.Grant(
                id="g", entitlement=entitlement_pb2.Entitlement(id="group:g:member"), principal=user_res("a")
            ),
            "has no entitlement resource id",
        ),
        (
            grant_pb2.Grant(
                id="g",
                entitlement=model.assignment_entitlement(model.new_resource("G", "group", "g"), "member"),
            ),
            "has no principal id",
        ),
    ],
)
def test_grants_without_identity_are_rejected(grant: grant_pb2.Grant, problem: str, tmp_path: Path) -> None:
    w = C1zWriter(tmp_path / "sync.c1z")
    w.start_sync("full")
    assert w.put_grants([grant]) == [f"grant {grant.id or '(no id)'} {problem}"]
    assert w.count("v1_grants") == 0
    w.abort()


def _full_sync(out: Path, name: str, keep: int = 2, sync_type: str = "full") -> str:
    w = C1zWriter(out, keep_sync_count=keep)
    sync_id = w.start_sync(sync_type, w.latest_finished_sync("full") if sync_type == "partial" else "")
    w.put_resources([model.new_resource(name, USER, name)])
    w.end_sync()
    w.cleanup_old_syncs()
    w.commit()
    return sync_id


def test_retention_keeps_the_newest_full_syncs(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    first = _full_sync(out, "one")
    partial = _full_sync(out, "p", sync_type="partial")
    second = _full_sync(out, "two")
    third = _full_sync(out, "three")
    with C1zReader(out) as r:
        assert [s.sync_id for s in r.syncs()] == [second, third]
        assert [x.id.resource for x in r.resources(sync_id=second)] == ["two"]
        assert r.conn is not None
        assert (
            r.conn.execute(
                "select count(*) from v1_resources where sync_id in (?, ?)", (first, partial)
            ).fetchone()[0]
            == 0
        )
    _full_sync(out, "four", keep=1)
    with C1zReader(out) as r:
        assert [x.id.resource for x in r.resources()] == ["four"]
        assert len(r.syncs()) == 1


def test_partial_sync_records_its_parent_full_sync(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    full = _full_sync(out, "one")
    partial = _full_sync(out, "p", sync_type="partial")
    with C1zReader(out) as r:
        run = r.get_sync(partial)
        assert run is not None and run.parent_sync_id == full and run.sync_type == "partial"
        # listings default to the latest finished full sync
        assert r.view_sync_id == full


def test_view_falls_back_to_unfinished_then_to_all_rows(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    w = C1zWriter(out)
    w.start_sync("partial")
    w.put_resources([model.new_resource("A", USER, "a")])
    w.end_sync()
    w.start_sync("partial")
    w.put_resources([model.new_resource("B", USER, "b")])
    w.end_sync()
    w.commit()
    with C1zReader(out) as r:
        assert r.view_sync_id is None
        assert sorted(x.id.resource for x in r.resources()) == ["a", "b"]
        with pytest.raises(C1zError, match="no sync with id"):
            r.stats(sync_id="nope")
    w = C1zWriter(out)
    unfinished = w.start_sync("full")
    w.put_resources([model.new_resource("C", USER, "c")])
    w.commit()
    with C1zReader(out) as r:
        assert r.view_sync_id == unfinished
        assert [x.id.resource for x in r.resources()] == ["c"]


def test_reader_never_modifies_the_input(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    _full_sync(out, "one")
    before = out.read_bytes()
    mtime = out.stat().st_mtime_ns
    with C1zReader(out) as r:
        list(r.resources())
        r.stats()
    assert out.read_bytes() == before
    assert out.stat().st_mtime_ns == mtime


def test_reader_temp_copy_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    _full_sync(out, "one")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    r = C1zReader(out, temp_dir=scratch)
    assert len(list(scratch.iterdir())) == 1
    r.close()
    assert list(scratch.iterdir()) == []
    with pytest.raises(C1zError, match="closed"):
        r.syncs()


def _response_grants() -> list[grant_pb2.Grant]:
    org = Org()
    eng, all_ = group_res("eng", org), group_res("all", org)
    return [
        _grant(eng, "member", "user", "alice"),
        _grant(all_, "member", "group", "eng", model.expandable(["group:eng:member"])),
        _grant(eng, "member", "user", "b" * 200),
        grant_pb2.Grant(id="broken", entitlement=entitlement_pb2.Entitlement(id="x")),
        _grant(all_, "member", "user", "bob", annotation_grant_pb2.GrantImmutable()),
    ]


def test_grant_rows_from_a_response_equal_per_message_rows() -> None:
    resp = grant_pb2.GrantsServiceListGrantsResponse(
        list=_response_grants(),
        next_page_token="next",
        annotations=[model.pack(annotation_grant_pb2.InsertResourceGrants())],
    )
    before = resp.SerializeToString()
    by_response, by_message = rows.GrantRows(), rows.GrantRows()
    by_response.add_response(resp)
    by_message.add_all(_response_grants())
    assert resp.SerializeToString() == before, "the response is not modified"
    assert by_response.plain == by_message.plain and len(by_response.plain) == 3
    assert by_response.expandable == by_message.expandable and len(by_response.expandable) == 1
    assert (
        [p for _, p in by_response.problems]
        == [p for _, p in by_message.problems]
        == ["has no entitlement resource id"]
    )


def test_grant_rows_fall_back_on_unexpected_response_encoding() -> None:
    resp = grant_pb2.GrantsServiceListGrantsResponse(list=_response_grants())
    # an unknown varint field (number 9), as a newer connector might send
    odd = grant_pb2.GrantsServiceListGrantsResponse.FromString(resp.SerializeToString() + b"\x48\x01")
    by_response, by_message = rows.GrantRows(), rows.GrantRows()
    by_response.add_response(odd)
    by_message.add_all(_response_grants())
    assert by_response.plain == by_message.plain
    assert by_response.expandable == by_message.expandable
