"""Ids and names are those of the Go connector (spec B.0.1 and c1z-and-sync.md Appendix B), on every version.

The data set is the one Appendix B describes: 3 users, 3 groups, 2 spaces with 4 + 2 space permissions, for
which the Go connector writes 3 resource types, 8 resources, 31 entitlements and 12 grants. A customer who
switches connectors must see the same ids, or ConductorOne would see every account and grant change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.apps.confluence_datacenter.common import USER
from connector.apps.confluence_datacenter.groups import group_resource
from connector.apps.confluence_datacenter.users import user_resource
from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import annotation_trait_pb2, entitlement_pb2
from connector.sandbox.confluence.data import Group, SandboxData, Space, User
from connector.sandbox.confluence.server import SandboxConfig
from connector.sdk import model
from connector.sdk.encoded_grants import EncodedGrants, GrantEncoder
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncOptions, run_sync
from tests.test_confluence_support import VERSIONS, running

# The twelve grants the Go connector writes for this data set, spelled out (not derived from the code).
GO_CONNECTOR_GRANTS = {
    "group:confluence-administrators:member:user:alice",
    "group:confluence-users:member:user:alice",
    "group:confluence-users:member:user:bob",
    "group:confluence-users:member:user:carol",
    "group:devs:member:user:bob",
    "group:devs:member:user:carol",
    "space:ENG:view:group:confluence-users",
    "space:ENG:view:user:alice",
    "space:ENG:set-space-permissions:user:alice",
    "space:ENG:edit-space:group:devs",
    "space:HR:view:user:bob",
    "space:HR:add-comment:user:bob",
}
SLUGS = [
    "add-comment",
    "add-attachment",
    "edit-blog",
    "edit-space",
    "export-space",
    "remove-attachment",
    "remove-blog",
    "remove-comment",
    "remove-mail",
    "remove-own-content",
    "remove-page",
    "set-page-permissions",
    "set-space-permissions",
    "view",
]


def appendix_b() -> SandboxData:
    data = SandboxData()
    for username, key, name in (
        ("alice", "8a7f80a1000000000000000000000001", "Alice Adams"),
        ("bob", "8a7f80a1000000000000000000000002", "Bob Brown"),
        ("carol", "8a7f80a1000000000000000000000003", "Carol Clark"),
    ):
        data.add_user(User(username, key, name, f"{username}@example.com", password=username))
    data.tokens["alice-pat"] = "alice"
    data.groups["confluence-administrators"] = Group("confluence-administrators", ["alice"])
    data.groups["confluence-users"] = Group("confluence-users", ["alice", "bob", "carol"])
    data.groups["devs"] = Group("devs", ["bob", "carol"])
    data.spaces["ENG"] = Space(98017, "ENG", "Engineering")
    data.spaces["HR"] = Space(98034, "HR", "Human Resources")
    data.permissions["ENG"] = [
        ("VIEWSPACE", "group", "confluence-users"),
        ("VIEWSPACE", "user", "alice"),
        ("SETSPACEPERMISSIONS", "user", "alice"),
        ("EDITSPACE", "group", "devs"),
    ]
    data.permissions["HR"] = [("VIEWSPACE", "user", "bob"), ("COMMENT", "user", "bob")]
    return data


@pytest.mark.parametrize("version", VERSIONS)
async def test_appendix_b_data_set_gives_the_go_connectors_ids(version: str, tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    async with running(
        version, data=appendix_b(), config=SandboxConfig(version=version), token="alice-pat"
    ) as (
        _,
        connector,
    ):
        report = await run_sync(ConnectorRuntime(connector), out, SyncOptions())

    assert report.resources == {"user": 3, "group": 3, "space": 2}
    assert report.entitlements == 31  # 3 x member + 2 x 14
    assert report.grants_direct == 12
    with C1zReader(out) as reader:
        types = {rt.id: rt.display_name for rt in reader.resource_types()}
        assert types == {"user": "User", "group": "Group", "space": "Space"}
        resources = {(r.id.resource_type, r.id.resource): r.display_name for r in reader.resources()}
        assert resources == {
            ("user", "alice"): "Alice Adams",
            ("user", "bob"): "Bob Brown",
            ("user", "carol"): "Carol Clark",
            ("group", "confluence-administrators"): "confluence-administrators",
            ("group", "confluence-users"): "confluence-users",
            ("group", "devs"): "devs",
            ("space", "ENG"): "Engineering",
            ("space", "HR"): "Human Resources",
        }
        entitlements = {e.id: e for e in reader.entitlements()}
        assert set(entitlements) == {
            f"group:{g}:member" for g in ("confluence-administrators", "confluence-users", "devs")
        } | {f"space:{s}:{slug}" for s in ("ENG", "HR") for slug in SLUGS}
        assert entitlements["group:devs:member"].display_name == "devs Group Member"
        assert entitlements["space:ENG:view"].display_name == "Can view Engineering"
        assert entitlements["space:ENG:set-space-permissions"].display_name == (
            "Can set space permissions for Engineering"
        )
        assert entitlements["space:HR:edit-blog"].display_name == "Can edit an blog in Human Resources"
        assert entitlements["space:ENG:view"].purpose == entitlement_pb2.Entitlement.PURPOSE_VALUE_PERMISSION
        assert (
            entitlements["group:devs:member"].purpose == entitlement_pb2.Entitlement.PURPOSE_VALUE_ASSIGNMENT
        )

        grants = {g.id: g for g in reader.grants()}
        assert set(grants) >= GO_CONNECTOR_GRANTS
        # Beyond the Go connector: members of a group holding a space permission hold it too (derived).
        derived = set(grants) - GO_CONNECTOR_GRANTS
        assert derived == {
            "space:ENG:view:user:bob",
            "space:ENG:view:user:carol",
            "space:ENG:edit-space:user:bob",
            "space:ENG:edit-space:user:carol",
        }
        for grant_id in GO_CONNECTOR_GRANTS:
            g = grants[grant_id]
            assert f"{g.entitlement.id}:{g.principal.id.resource_type}:{g.principal.id.resource}" == grant_id

        alice = reader.get_resource("user", "alice")
        assert alice is not None
        trait = model.find_annotation(alice.annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None
        assert trait.login == "alice"
        # The Go connector's profile keys, with the user key as `id`.
        profile = trait.profile.fields
        assert profile["user_name"].string_value == "alice"
        assert profile["id"].string_value == "8a7f80a1000000000000000000000001"
        assert profile["account_type"].string_value == "known"


def test_fast_builders_match_the_sdk_builders_exactly() -> None:
    """Users and grants are built without the generic helpers (speed); the result must be the same."""
    person = {"type": "known", "username": "zoë.müller", "userKey": "8a7f80a1", "displayName": "Zoë Müller"}
    built = user_resource(person, status=model.UserStatus.STATUS_DISABLED, email="zoe@example.com")
    trait = model.user_trait(
        emails=["zoe@example.com"],
        status=model.UserStatus.STATUS_DISABLED,
        login="zoë.müller",
        profile={
            "user_name": "zoë.müller",
            "user_key": "8a7f80a1",
            "id": "8a7f80a1",
            "display_name": "Zoë Müller",
            "account_type": "known",
            "email": "zoe@example.com",
        },
    )
    assert built == model.user_resource("Zoë Müller", USER, "zoë.müller", trait)
    keyless = user_resource({"username": "ghost"}, status=model.UserStatus.STATUS_UNSPECIFIED)
    assert keyless == model.user_resource(
        "ghost",
        USER,
        "ghost",
        model.user_trait(
            status=model.UserStatus.STATUS_UNSPECIFIED,
            login="ghost",
            profile={"user_name": "ghost", "display_name": "ghost", "account_type": "known"},
        ),
    )

    group = group_resource({"name": "qa/automation", "type": "group"})
    members = EncodedGrants()
    GrantEncoder(group, "member").add_all(members, "user", ["bob"])
    assert list(members) == [model.new_grant(group, "member", model.resource_id("user", "bob"))]
    space = model.new_resource("Engineering", "space", "ENG")
    expand = [model.expandable(["group:qa/automation:member"])]
    holders = EncodedGrants()
    GrantEncoder(space, "view").add(holders, "group", "qa/automation", expand)
    assert list(holders) == [
        model.new_grant(space, "view", model.resource_id("group", "qa/automation"), annotations=expand)
    ]
