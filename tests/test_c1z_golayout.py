"""Reading c1z files laid out the way the Go SDK writes them (spec §1.4.1, Appendix B)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.c1z.container import C1zError
from connector.c1z.reader import C1zReader
from connector.sdk import model
from tests.test_sync_support import GO_SYNC_TOKEN, build_go_c1z


def test_old_sdk_schema_reads_with_create_and_migrate(tmp_path: Path) -> None:
    path = tmp_path / "go.c1z"
    fx = build_go_c1z(path)
    before = path.read_bytes()
    with C1zReader(path) as r:
        assert r.view_sync_id == fx.sync_id
        [run] = r.syncs()
        # the 5-column sync run gets the migration defaults
        assert (run.sync_type, run.parent_sync_id, run.linked_sync_id, run.supports_diff) == (
            "full",
            "",
            "",
            False,
        )
        assert run.sync_token == GO_SYNC_TOKEN
        assert run.ended_at is not None and len(run.ended_at.rsplit(".", 1)[1]) == 9  # nanoseconds, as stored
        assert "v1_connector_sessions" in r.table_names()
        assert r.stats() == {
            "resource_types": 3,
            "group": 3,
            "space": 2,
            "user": 3,
            "entitlements": 5,
            "grants": 7,
        }
        assert [x.id.resource for x in r.resources(resource_type="space")] == ["ENG", "HR"]
        assert {e.id for e in r.entitlements(resource_type="group")} == {
            "group:confluence-administrators:member",
            "group:confluence-users:member",
            "group:devs:member",
        }
        access = {g.entitlement.id for g in r.grants(principal=model.resource_id("user", "alice"))}
        assert access == {
            "group:confluence-administrators:member",
            "group:confluence-users:member",
            "space:ENG:view",
        }
    assert path.read_bytes() == before, "reading never modifies the input"


def test_grant_expandable_inside_data_is_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "go.c1z"
    build_go_c1z(path)
    with C1zReader(path) as r:
        recs = {rec.grant.id: rec for rec in r.grant_records()}
    nested = recs["group:confluence-users:member:group:devs"]
    assert nested.expansion == model.expandable(["group:devs:member"]).SerializeToString()
    assert nested.needs_expansion
    assert list(nested.grant.annotations) == []
    others = [rec for gid, rec in recs.items() if gid != nested.grant.id]
    assert all(rec.expansion is None and not rec.needs_expansion for rec in others)


def test_new_schema_with_supports_diff_keeps_annotation_where_it_is(tmp_path: Path) -> None:
    # Spec §1.5: with supports_diff = 1 the reader trusts the expansion column and leaves data alone.
    path = tmp_path / "go.c1z"
    build_go_c1z(path, old_schema=False, supports_diff=1)
    with C1zReader(path) as r:
        rec = next(x for x in r.grant_records() if x.grant.id == "group:confluence-users:member:group:devs")
    assert rec.expansion is None
    assert [a.type_url.rsplit(".", 1)[-1] for a in rec.grant.annotations] == ["GrantExpandable"]


def test_unfinished_go_sync_is_listed_but_has_no_stats(tmp_path: Path) -> None:
    path = tmp_path / "go.c1z"
    fx = build_go_c1z(path, finished=False)
    with C1zReader(path) as r:
        assert r.view_sync_id == fx.sync_id
        assert len(list(r.resources())) == 8
        with pytest.raises(C1zError, match="no finished sync"):
            r.stats()


def test_sync_id_selection_and_unknown_sync(tmp_path: Path) -> None:
    path = tmp_path / "go.c1z"
    fx = build_go_c1z(path)
    with C1zReader(path, sync_id=fx.sync_id) as r:
        assert len(list(r.grants())) == 7
    with pytest.raises(C1zError, match="no sync with id 'nope'"):
        C1zReader(path, sync_id="nope")
