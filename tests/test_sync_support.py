"""Shared helpers for the c1z / sync / inspect tests (no tests of its own).

`OrgConnector` is an in-memory connector whose organisation is described by an `Org`: users, groups with
members (users, bots, nested groups carrying GrantExpandable), projects with child-only repos
(ChildResourceType), and hooks to make listings fail. It pages by 2 so pagination is always exercised.
`build_go_c1z` writes c1z files the way the Go SDK lays them out (including the v0.2.18 schema).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import zstandard
from google.protobuf.message import Message

from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    connector_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)
from connector.sdk import model
from connector.sdk.encoded_grants import EncodedGrants, GrantEncoder
from connector.sdk.errors import ConnectorError
from connector.sdk.interface import Connector, Page, ResourceGetter, ResourceSyncer

USER = model.resource_type("user", "User", [model.Trait.TRAIT_USER])
GROUP = model.resource_type("group", "Group", [model.Trait.TRAIT_GROUP])
BOT = model.resource_type("bot", "Bot")
PROJECT = model.resource_type("project", "Project")
REPO = model.resource_type("repo", "Repository")
PAGE = 2


@dataclass
class Nest:
    """Group `child` is a member of the parent group; its members inherit (GrantExpandable)."""

    child: str
    shallow: bool = False
    resource_type_ids: tuple[str, ...] = ()
    entitlement_ids: tuple[str, ...] | None = None  # default: the child's member entitlement


@dataclass
class Org:
    users: list[str] = field(default_factory=lambda: ["alice", "bob", "carol", "dave", "erin"])
    bots: list[str] = field(default_factory=list)
    # group -> direct members as "type:id" (user:alice, bot:b1)
    groups: dict[str, list[str]] = field(
        default_factory=lambda: {
            "eng": ["user:alice", "user:bob"],
            "ops": ["user:carol"],
            "all": ["user:erin"],
        }
    )
    nested: dict[str, list[Nest]] = field(default_factory=lambda: {"all": [Nest("eng"), Nest("ops")]})
    projects: dict[str, list[str]] = field(
        default_factory=lambda: {"apollo": ["web", "api"], "zeus": ["infra"]}
    )
    repo_admins: dict[str, list[str]] = field(
        default_factory=lambda: {"web": ["alice"], "api": ["bob", "carol"], "infra": []}
    )
    # hooks: (phase, "type:id") -> exception factory (called per call; return None to succeed)
    fail: dict[tuple[str, str], Callable[[], Exception | None]] = field(default_factory=dict)
    user_annotations: list[Message] = field(default_factory=list)
    group_annotations_for: dict[str, list[Message]] = field(default_factory=dict)
    insert_resource_grants: bool = False
    # group grants built with the SDK's GrantEncoder (bytes and columns) instead of protobuf messages
    encoded: bool = False
    missing_trait_for: str | None = None
    calls: list[str] = field(default_factory=list)


def _page(items: Sequence[Any], token: str) -> tuple[list[Any], str]:
    start = int(token or 0)
    end = start + PAGE
    return list(items[start:end]), (str(end) if end < len(items) else "")


def _maybe_fail(org: Org, phase: str, key: str) -> None:
    factory = org.fail.get((phase, key))
    if factory is not None:
        exc = factory()
        if exc is not None:
            raise exc


def user_res(uid: str, org: Org | None = None) -> resource_pb2.Resource:
    if org is not None and org.missing_trait_for == uid:
        return model.new_resource(uid.title(), USER, uid)
    return model.user_resource(
        uid.title(),
        USER,
        uid,
        model.user_trait(emails=[f"{uid}@example.com"], login=uid, profile={"login": uid}),
    )


def group_res(gid: str, org: Org) -> resource_pb2.Resource:
    return model.group_resource(
        gid.upper(), GROUP, gid, profile={"name": gid}, annotations=org.group_annotations_for.get(gid, [])
    )


def project_res(pid: str) -> resource_pb2.Resource:
    return model.new_resource(pid.title(), PROJECT, pid, annotations=[model.child_resource_type("repo")])


def repo_res(rid: str, project: str) -> resource_pb2.Resource:
    return model.new_resource(rid, REPO, rid, parent=model.resource_id("project", project))


class Users(ResourceSyncer, ResourceGetter):
    resource_type = USER

    def __init__(self, org: Org) -> None:
        self.org = org

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        self.org.calls.append(f"list user {page_token}")
        ids, nxt = _page(self.org.users, page_token)
        return Page([user_res(u, self.org) for u in ids], nxt)

    async def entitlements(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        self.org.calls.append(f"entitlements user:{resource.id.resource}")
        return Page()

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        self.org.calls.append(f"grants user:{resource.id.resource}")
        return Page()

    async def get(self, resource_id: resource_pb2.ResourceId, parent: resource_pb2.ResourceId | None) -> Any:
        if resource_id.resource not in self.org.users:
            raise ConnectorError(grpc.StatusCode.NOT_FOUND, f"user {resource_id.resource} not found")
        return user_res(resource_id.resource, self.org)


class Bots(ResourceSyncer):
    resource_type = BOT

    def __init__(self, org: Org) -> None:
        self.org = org

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        ids, nxt = _page(self.org.bots, page_token)
        return Page([model.new_resource(b, BOT, b) for b in ids], nxt)

    async def entitlements(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        return Page()

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        return Page()


def _expandable(nest: Nest) -> Message:
    return model.expandable(
        list(nest.entitlement_ids or [f"group:{nest.child}:member"]),
        shallow=nest.shallow,
        resource_type_ids=nest.resource_type_ids,
    )


class Groups(ResourceSyncer, ResourceGetter):
    resource_type = GROUP

    def __init__(self, org: Org) -> None:
        self.org = org

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        ids, nxt = _page(sorted(self.org.groups), page_token)
        return Page([group_res(g, self.org) for g in ids], nxt)

    async def entitlements(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        _maybe_fail(self.org, "entitlements", f"group:{resource.id.resource}")
        return Page([model.assignment_entitlement(resource, "member", grantable_to=[USER, GROUP, BOT])])

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        gid = resource.id.resource
        self.org.calls.append(f"grants group:{gid} {page_token}")
        _maybe_fail(self.org, "grants", f"group:{gid}")
        items: list[tuple[str, str, Nest | None]] = []
        for member in self.org.groups.get(gid, []):
            ptype, pid = member.split(":", 1)
            items.append((ptype, pid, None))
        for nest in self.org.nested.get(gid, []):
            items.append(("group", nest.child, nest))
        chunk, nxt = _page(items, page_token)
        page_annotations: list[Message] = []
        if self.org.insert_resource_grants:
            page_annotations.append(annotation_grant_pb2.InsertResourceGrants())
        if self.org.encoded:
            enc = GrantEncoder(resource, "member")
            encoded = EncodedGrants()
            for ptype, pid, nest in chunk:
                if nest is None:
                    enc.add_all(encoded, ptype, [pid])
                else:
                    enc.add(encoded, ptype, pid, [_expandable(nest)])
            return Page(encoded, nxt, page_annotations)
        out = []
        for ptype, pid, nest in chunk:
            annotations = [_expandable(nest)] if nest is not None else []
            out.append(
                model.new_grant(resource, "member", model.resource_id(ptype, pid), annotations=annotations)
            )
        return Page(out, nxt, page_annotations)

    async def get(self, resource_id: resource_pb2.ResourceId, parent: resource_pb2.ResourceId | None) -> Any:
        if resource_id.resource not in self.org.groups:
            raise ConnectorError(grpc.StatusCode.NOT_FOUND, f"group {resource_id.resource} not found")
        return group_res(resource_id.resource, self.org)


class Projects(ResourceSyncer):
    resource_type = PROJECT

    def __init__(self, org: Org) -> None:
        self.org = org

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        ids, nxt = _page(sorted(self.org.projects), page_token)
        return Page([project_res(p) for p in ids], nxt)

    async def entitlements(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        return Page()

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        return Page()


class Repos(ResourceSyncer):
    resource_type = REPO

    def __init__(self, org: Org) -> None:
        self.org = org

    async def list(
        self, parent: resource_pb2.ResourceId | None, page_token: str
    ) -> Page[resource_pb2.Resource]:
        if parent is None:
            return Page()  # child-only type
        self.org.calls.append(f"list repo under {parent.resource}")
        ids, nxt = _page(self.org.projects.get(parent.resource, []), page_token)
        return Page([repo_res(r, parent.resource) for r in ids], nxt)

    async def entitlements(self, resource: resource_pb2.Resource, page_token: str) -> Page[Any]:
        return Page([model.permission_entitlement(resource, "admin", grantable_to=[USER])])

    async def grants(self, resource: resource_pb2.Resource, page_token: str) -> Page[grant_pb2.Grant]:
        _maybe_fail(self.org, "grants", f"repo:{resource.id.resource}")
        admins, nxt = _page(self.org.repo_admins.get(resource.id.resource, []), page_token)
        return Page([model.new_grant(resource, "admin", model.resource_id("user", u)) for u in admins], nxt)


class OrgConnector(Connector):
    def __init__(self, org: Org | None = None) -> None:
        self.org = org or Org()
        self.cleaned = 0
        self.validate_error: Exception | None = None

    def metadata(self) -> connector_pb2.ConnectorMetadata:
        return connector_pb2.ConnectorMetadata(display_name="Org", description="test organisation")

    async def validate(self) -> list[Message]:
        if self.validate_error is not None:
            raise self.validate_error
        return []

    def syncers(self) -> Sequence[ResourceSyncer]:
        users = Users(self.org)
        if self.org.user_annotations:
            users.resource_type = model.resource_type(
                "user", "User", [model.Trait.TRAIT_USER], annotations=self.org.user_annotations
            )
        out: list[ResourceSyncer] = [users, Groups(self.org), Projects(self.org), Repos(self.org)]
        if self.org.bots:
            out.append(Bots(self.org))
        return out

    async def cleanup(self) -> None:
        self.cleaned += 1

    def upstream_request_count(self) -> int:
        return len(self.org.calls)

    def sync_counters(self) -> dict[str, int]:
        return {"bots_seen": len(self.org.bots)}


class Wrapped:
    """A ConnectorClient delegating to another, with some methods replaced (e.g. static entitlements)."""

    def __init__(self, inner: Any, **overrides: Callable[..., Any]) -> None:
        self._inner = inner
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._inner, name)


# --- reading results ---------------------------------------------------------------------------------


def files(directory: Path) -> list[str]:
    """Names in a directory (sync helper, so async tests do not block on pathlib themselves)."""
    return sorted(p.name for p in directory.iterdir())


def table_rows(reader: C1zReader, table: str, columns: str = "*") -> list[tuple[Any, ...]]:
    assert reader.conn is not None
    return list(reader.conn.execute(f"select {columns} from {table} order by id"))


def content(path: Path) -> dict[str, set[tuple[Any, ...]]]:
    """Order-independent content of the latest sync: (external_id, data[, expansion, needs_expansion])."""
    with C1zReader(path) as r:
        sync = r.view_sync_id
        assert r.conn is not None
        out: dict[str, set[tuple[Any, ...]]] = {}
        for table in ("v1_resource_types", "v1_resources", "v1_entitlements"):
            out[table] = set(
                r.conn.execute(f"select external_id, data from {table} where sync_id = ?", (sync,))
            )
        out["v1_grants"] = set(
            r.conn.execute(
                "select external_id, data, expansion, needs_expansion from v1_grants where sync_id = ?",
                (sync,),
            )
        )
        return out


def grant_ids(path: Path) -> set[str]:
    with C1zReader(path) as r:
        return {g.id for g in r.grants()}


def grant_map(path: Path) -> dict[str, grant_pb2.Grant]:
    with C1zReader(path) as r:
        return {g.id: g for g in r.grants()}


# --- Go-layout files --------------------------------------------------------------------------------

GO_V0218_DDL = [
    "create table v1_resource_types (id integer primary key, external_id text not null, data blob not null, "
    "sync_id text not null, discovered_at datetime not null)",
    "create unique index idx_resource_types_external_sync_v1 on v1_resource_types (external_id, sync_id)",
    "create table v1_resources (id integer primary key, resource_type_id text not null, external_id text "
    "not null, "
    "parent_resource_type_id text, parent_resource_id text, data blob not null, sync_id text not null, "
    "discovered_at datetime not null)",
    "create index idx_resources_resource_type_id_v1 on v1_resources (resource_type_id)",
    "create index idx_resources_external_sync_v1 on v1_resources (parent_resource_type_id, "
    "parent_resource_id)",
    "create unique index idx_resources_parent_resource_id_v1 on v1_resources (external_id, sync_id)",
    "create table v1_entitlements (id integer primary key, resource_type_id text not null, resource_id "
    "text not null, "
    "external_id text not null, data blob not null, sync_id text not null, discovered_at datetime not null)",
    "create index idx_entitlements_resource_id_v1 on v1_entitlements (resource_type_id, resource_id)",
    "create unique index idx_entitlements_external_sync_v1 on v1_entitlements (external_id, sync_id)",
    "create table v1_sync_runs (id integer primary key, sync_id text not null, started_at datetime not null, "
    "ended_at datetime, sync_token text not null)",
    "create unique index idx_sync_runs_sync_id_v1 on v1_sync_runs (sync_id)",
    "create table v1_grants (id integer primary key, resource_type_id text not null, resource_id text not "
    "null, "
    "entitlement_id text not null, principal_resource_type_id text not null, principal_resource_id text "
    "not null, "
    "external_id text not null, data blob not null, sync_id text not null, discovered_at datetime not null)",
    "create index idx_grants_entitlement_id_v1 on v1_grants (entitlement_id)",
    "create index idx_grants_principal_id_v1 on v1_grants (principal_resource_type_id, "
    "principal_resource_id)",
    "create unique index idx_grants_external_sync_v1 on v1_grants (external_id, sync_id)",
    "create table v1_assets (id integer primary key, external_id text not null, content_type text not null, "
    "data blob not null, sync_id text not null, discovered_at datetime not null)",
    "create unique index idx_assets_external_sync_v1 on v1_assets (external_id, sync_id)",
]

GO_SYNC_TOKEN = (
    '{"actions":[],"current_action":{"operation":"grant-expansion"},"needs_expansion":false,'
    '"entitlement_graph":null}'
)


@dataclass
class GoFixture:
    sync_id: str
    users: list[resource_pb2.Resource]
    groups: list[resource_pb2.Resource]
    spaces: list[resource_pb2.Resource]
    entitlements: list[entitlement_pb2.Entitlement]
    grants: list[grant_pb2.Grant]


def go_fixture(sync_id: str = "2QbJ4cLHnDVcHaXjUY7v0Tc6N3x") -> GoFixture:
    """The Appendix B organisation: 3 users, 3 groups (devs nested into confluence-users), 2 spaces."""
    users = [user_res(u) for u in ("alice", "bob", "carol")]
    groups = [
        model.group_resource(g, GROUP, g, profile={"name": g})
        for g in ("confluence-administrators", "confluence-users", "devs")
    ]
    space_t = model.resource_type("space", "Space")
    spaces = [
        model.new_resource("Engineering", space_t, "ENG"),
        model.new_resource("Human Resources", space_t, "HR"),
    ]
    ents = [model.assignment_entitlement(g, "member") for g in groups]
    ents += [
        model.permission_entitlement(s, "view", display_name=f"Can view {s.display_name}") for s in spaces
    ]
    by = {g.id.resource: g for g in groups}
    grants = [
        model.new_grant(by["confluence-administrators"], "member", model.resource_id("user", "alice")),
        model.new_grant(by["confluence-users"], "member", model.resource_id("user", "alice")),
        model.new_grant(by["devs"], "member", model.resource_id("user", "bob")),
        model.new_grant(by["devs"], "member", model.resource_id("user", "carol")),
        # the nested-group grant, GrantExpandable left inside `data` as old SDKs wrote it
        model.new_grant(
            by["confluence-users"],
            "member",
            model.resource_id("group", "devs"),
            annotations=[model.expandable(["group:devs:member"])],
        ),
        model.new_grant(spaces[0], "view", model.resource_id("group", "confluence-users")),
        model.new_grant(spaces[0], "view", model.resource_id("user", "alice")),
    ]
    return GoFixture(sync_id, users, groups, spaces, ents, grants)


def build_go_c1z(
    path: Path,
    fixture: GoFixture | None = None,
    *,
    old_schema: bool = True,
    finished: bool = True,
    frames: int = 1,
    supports_diff: int | None = None,
) -> GoFixture:
    """Write a c1z the way a Go connector on SDK v0.2.18 does: old schema (no expansion columns, 5-column
    sync runs, no connector sessions), GrantExpandable inside grant data, nanosecond local timestamps,
    a streaming zstd frame without content size (header `28 b5 2f fd 04 ...`)."""
    fx = fixture or go_fixture()
    db = path.with_suffix(".db")
    db.unlink(missing_ok=True)
    conn = sqlite3.connect(db)
    if old_schema:
        for ddl in GO_V0218_DDL:
            conn.execute(ddl)
    else:
        from connector.c1z import schema

        schema.create_schema(conn)
    # local wall-clock time with nanoseconds, as Go's time.Now() formats it
    ts = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f") + "957"
    space_t = model.resource_type("space", "Space")
    for rt in (USER, GROUP, space_t):
        conn.execute(
            "insert into v1_resource_types (external_id, data, sync_id, discovered_at) values (?, ?, ?, ?)",
            (rt.id, rt.SerializeToString(), fx.sync_id, ts),
        )
    for r in fx.users + fx.groups + fx.spaces:
        conn.execute(
            "insert into v1_resources (resource_type_id, external_id, parent_resource_type_id, "
            "parent_resource_id, "
            "data, sync_id, discovered_at) values (?, ?, null, null, ?, ?, ?)",
            (
                r.id.resource_type,
                f"{r.id.resource_type}:{r.id.resource}",
                r.SerializeToString(),
                fx.sync_id,
                ts,
            ),
        )
    for e in fx.entitlements:
        conn.execute(
            "insert into v1_entitlements (resource_type_id, resource_id, external_id, data, sync_id, "
            "discovered_at) "
            "values (?, ?, ?, ?, ?, ?)",
            (
                e.resource.id.resource_type,
                e.resource.id.resource,
                e.id,
                e.SerializeToString(),
                fx.sync_id,
                ts,
            ),
        )
    for g in fx.grants:
        conn.execute(
            "insert into v1_grants (resource_type_id, resource_id, entitlement_id, "
            "principal_resource_type_id, "
            "principal_resource_id, external_id, data, sync_id, discovered_at) values (?, ?, ?, ?, ?, ?, "
            "?, ?, ?)",
            (
                g.entitlement.resource.id.resource_type,
                g.entitlement.resource.id.resource,
                g.entitlement.id,
                g.principal.id.resource_type,
                g.principal.id.resource,
                g.id,
                g.SerializeToString(),
                fx.sync_id,
                ts,
            ),
        )
    conn.execute(
        "insert into v1_sync_runs (sync_id, started_at, ended_at, sync_token) values (?, ?, ?, ?)",
        (fx.sync_id, ts, ts if finished else None, GO_SYNC_TOKEN),
    )
    if supports_diff is not None:
        conn.execute("update v1_sync_runs set supports_diff = ?", (supports_diff,))
    conn.commit()
    conn.close()
    raw = db.read_bytes()
    db.unlink()
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=23, write_checksum=True)
    cctx = zstandard.ZstdCompressor(compression_params=params)
    with open(path, "wb") as out:
        out.write(b"C1ZF\x00")
        step = -(-len(raw) // frames)
        for i in range(frames):
            # streaming writer without a size: no Frame_Content_Size, like the Go encoder
            with cctx.stream_writer(out, closefd=False) as w:
                w.write(raw[i * step : (i + 1) * step])
    return fx
