"""Ids and names are those of the Go connectors, in both id schemes, on every version.

Default: the newest Go connector's (go-connectors-current.md B); `--legacy-ids`: the January 2025 one's
(spec B.0.1 and c1z-and-sync.md Appendix B). The data set is the one Appendix B describes: 3 users, 3
groups, 2 spaces with 4 + 2 space permissions, for which the Go connector writes 3 resource types, 8
resources, 31 entitlements and 12 grants. A customer who switches connectors must see the same ids, or
ConductorOne would see every account and grant change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.apps.confluence_datacenter.common import USER
from connector.apps.confluence_datacenter.groups import group_resource
from connector.apps.confluence_datacenter.ids import IdScheme
from connector.apps.confluence_datacenter.users import user_resource
from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import annotation_trait_pb2, entitlement_pb2, resource_pb2
from connector.sandbox.confluence.data import Group, SandboxData, Space, User
from connector.sandbox.confluence.server import SandboxConfig
from connector.sdk import model
from connector.sdk.encoded_grants import EncodedGrants, GrantEncoder
from connector.sdk.errors import ConnectorError, UpstreamError
from connector.sdk.runtime import ConnectorRuntime
from connector.sync.engine import SyncOptions, run_sync
from connector.sync.report import SyncReport
from tests.test_confluence_support import VERSIONS, running, sync_all

K_ALICE, K_BOB, K_CAROL = (f"8a7f80a100000000000000000000000{i}" for i in (1, 2, 3))

# The twelve grants each Go connector writes for this data set, spelled out (not derived from the code).
# The newest Go connector: users by user key, `<operationKey>-<targetType>` slugs.
GO_NEWEST_GRANTS = {
    f"group:confluence-administrators:member:user:{K_ALICE}",
    f"group:confluence-users:member:user:{K_ALICE}",
    f"group:confluence-users:member:user:{K_BOB}",
    f"group:confluence-users:member:user:{K_CAROL}",
    f"group:devs:member:user:{K_BOB}",
    f"group:devs:member:user:{K_CAROL}",
    "space:ENG:read-space:group:confluence-users",
    f"space:ENG:read-space:user:{K_ALICE}",
    f"space:ENG:administer-space:user:{K_ALICE}",
    "space:ENG:create-page:group:devs",
    f"space:HR:read-space:user:{K_BOB}",
    f"space:HR:create-comment:user:{K_BOB}",
}
# The January 2025 Go connector (--legacy-ids): users by username, the 14 legacy slugs.
GO_2025_GRANTS = {
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
# Beyond either Go connector: members of a group holding a space permission hold it too (derived).
DERIVED = {
    False: {
        f"space:ENG:read-space:user:{K_BOB}",
        f"space:ENG:read-space:user:{K_CAROL}",
        f"space:ENG:create-page:user:{K_BOB}",
        f"space:ENG:create-page:user:{K_CAROL}",
    },
    True: {
        "space:ENG:view:user:bob",
        "space:ENG:view:user:carol",
        "space:ENG:edit-space:user:bob",
        "space:ENG:edit-space:user:carol",
    },
}
LEGACY_SLUG_LIST = [
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
SLUG_LIST = [
    "read-space",
    "delete_own-space",
    "create-page",
    "delete-page",
    "create-blogpost",
    "delete-blogpost",
    "create-comment",
    "delete-comment",
    "create-attachment",
    "delete-attachment",
    "restrict-space",
    "delete_mail-space",
    "export-space",
    "administer-space",
]
SCHEMES = pytest.mark.parametrize("legacy", [False, True], ids=["default-ids", "legacy-ids"])


def appendix_b() -> SandboxData:
    data = SandboxData()
    for username, key, name in (
        ("alice", K_ALICE, "Alice Adams"),
        ("bob", K_BOB, "Bob Brown"),
        ("carol", K_CAROL, "Carol Clark"),
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


async def _sync(version: str, data: SandboxData, out: Path, legacy: bool) -> SyncReport:
    args = ["--legacy-ids"] if legacy else []
    config = SandboxConfig(version=version)
    async with running(version, data=data, config=config, token="alice-pat", args=args) as (_, connector):
        return await run_sync(ConnectorRuntime(connector), out, SyncOptions())


@SCHEMES
@pytest.mark.parametrize("version", VERSIONS)
async def test_appendix_b_data_set_gives_the_go_connectors_ids(
    version: str, legacy: bool, tmp_path: Path
) -> None:
    out = tmp_path / "sync.c1z"
    report = await _sync(version, appendix_b(), out, legacy)

    assert report.resources == {"user": 3, "group": 3, "space": 2}
    assert report.entitlements == 31  # 3 x member + 2 x 14
    assert report.grants_direct == 12
    go_grants = GO_2025_GRANTS if legacy else GO_NEWEST_GRANTS
    ids = {"alice": "alice", "bob": "bob", "carol": "carol"}
    if not legacy:
        ids = {"alice": K_ALICE, "bob": K_BOB, "carol": K_CAROL}
    with C1zReader(out) as reader:
        types = {rt.id: rt.display_name for rt in reader.resource_types()}
        assert types == {"user": "User", "group": "Group", "space": "Space"}
        resources = {(r.id.resource_type, r.id.resource): r.display_name for r in reader.resources()}
        assert resources == {
            ("user", ids["alice"]): "Alice Adams",
            ("user", ids["bob"]): "Bob Brown",
            ("user", ids["carol"]): "Carol Clark",
            ("group", "confluence-administrators"): "confluence-administrators",
            ("group", "confluence-users"): "confluence-users",
            ("group", "devs"): "devs",
            ("space", "ENG"): "Engineering",
            ("space", "HR"): "Human Resources",
        }
        # Every listed resource says so, as the Go SDK's syncer stamps it.
        assert {r.creation_source for r in reader.resources()} == {
            resource_pb2.Resource.CREATION_SOURCE_CONNECTOR_LIST_RESOURCES
        }
        entitlements = {e.id: e for e in reader.entitlements()}
        slugs = LEGACY_SLUG_LIST if legacy else SLUG_LIST
        assert set(entitlements) == {
            f"group:{g}:member" for g in ("confluence-administrators", "confluence-users", "devs")
        } | {f"space:{s}:{slug}" for s in ("ENG", "HR") for slug in slugs}
        assert entitlements["group:devs:member"].display_name == "devs Group Member"
        if legacy:
            assert entitlements["space:ENG:view"].display_name == "Can view Engineering"
            assert entitlements["space:ENG:set-space-permissions"].display_name == (
                "Can set space permissions for Engineering"
            )
            assert entitlements["space:HR:edit-blog"].display_name == "Can edit an blog in Human Resources"
        else:
            assert entitlements["space:ENG:read-space"].display_name == "Can read space on 'Engineering'"
            assert entitlements["space:HR:create-blogpost"].display_name == (
                "Can create blogpost on 'Human Resources'"
            )
        view = f"space:ENG:{slugs[0 if not legacy else -1]}"
        assert entitlements[view].purpose == entitlement_pb2.Entitlement.PURPOSE_VALUE_PERMISSION
        assert (
            entitlements["group:devs:member"].purpose == entitlement_pb2.Entitlement.PURPOSE_VALUE_ASSIGNMENT
        )

        grants = {g.id: g for g in reader.grants()}
        assert set(grants) == go_grants | DERIVED[legacy]
        for grant_id in go_grants:
            g = grants[grant_id]
            assert f"{g.entitlement.id}:{g.principal.id.resource_type}:{g.principal.id.resource}" == grant_id

        alice = reader.get_resource("user", ids["alice"])
        assert alice is not None
        trait = model.find_annotation(alice.annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None
        assert trait.login == "alice"
        # The Go connector's profile keys, with the user key as `id`.
        profile = trait.profile.fields
        assert profile["user_name"].string_value == "alice"
        assert profile["id"].string_value == K_ALICE
        assert profile["account_type"].string_value == "known"
        assert alice.status.status == resource_pb2.Status.RESOURCE_STATUS_ENABLED


@SCHEMES
@pytest.mark.parametrize("version", VERSIONS)
async def test_a_renamed_user_keeps_its_id_by_default_and_legacy_ids_follow_the_username(
    version: str, legacy: bool, tmp_path: Path
) -> None:
    data = appendix_b()
    await _sync(version, data, tmp_path / "before.c1z", legacy)
    data.rename_user("bob", "robert")
    await _sync(version, data, tmp_path / "after.c1z", legacy)

    def grant_ids(path: Path) -> set[str]:
        with C1zReader(path) as reader:
            return {g.id for g in reader.grants()}

    before, after = grant_ids(tmp_path / "before.c1z"), grant_ids(tmp_path / "after.c1z")
    with C1zReader(tmp_path / "after.c1z") as reader:
        users = {r.id.resource: r for r in reader.resources(resource_type="user")}
    if legacy:
        # The 2025 Go connector's ids are usernames: every id of the renamed user changes with it.
        assert set(users) == {"alice", "robert", "carol"}
        assert after == {g.replace(":user:bob", ":user:robert") for g in before}
        assert after != before
    else:
        assert set(users) == {K_ALICE, K_BOB, K_CAROL}
        assert after == before  # access reviews and requests bound to Bob's ids stay valid
        trait = model.find_annotation(users[K_BOB].annotations, annotation_trait_pb2.UserTrait)
        assert trait is not None and trait.login == "robert"  # the new name is shown


@pytest.mark.parametrize(
    ("version", "listing", "field"),
    [
        ("9.2", "user", "userKey"),
        ("8.5", "user", "username"),
        ("7.19", "user", "userKey"),  # users come from group memberships before 8.4
        ("9.2", "group", "name"),
        ("8.5", "space", "key"),
    ],
)
async def test_a_record_without_its_id_field_is_an_upstream_error_naming_the_field(
    version: str, listing: str, field: str
) -> None:
    config = SandboxConfig(version=version, malformed={listing: field})
    async with running(version, data=appendix_b(), config=config, token="alice-pat") as (_, connector):
        with pytest.raises(UpstreamError) as err:
            await sync_all(connector)
        assert f"no {field!r}" in str(err.value)
        assert listing in str(err.value)
        # Through the runtime (what the engine and a gRPC caller see): the same words, no KeyError.
        runtime = ConnectorRuntime(connector)
        with pytest.raises(ConnectorError) as coded:
            for rtype in ("user", "group", "space"):
                token = ""
                while True:
                    request = resource_pb2.ResourcesServiceListResourcesRequest(
                        resource_type_id=rtype, page_token=token
                    )
                    token = (await runtime.list_resources(request)).next_page_token
                    if not token:
                        break
            raise AssertionError("no listing failed")
        assert f"no {field!r}" in coded.value.message


def test_fast_builders_match_the_sdk_builders_exactly() -> None:
    """Users and grants are built without the generic helpers (speed); the result must be the same."""
    person = {"type": "known", "username": "zoë.müller", "userKey": "8a7f80a1", "displayName": "Zoë Müller"}
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
    for scheme, rid in ((IdScheme(), "8a7f80a1"), (IdScheme(legacy=True), "zoë.müller")):
        built = user_resource(
            person,
            scheme,
            status=model.UserStatus.STATUS_DISABLED,
            details="deactivated",
            email="zoe@example.com",
        )
        expected = model.user_resource("Zoë Müller", USER, rid, trait)
        expected.status.status = resource_pb2.Status.RESOURCE_STATUS_DISABLED
        expected.status.details = "deactivated"
        assert built == expected
    # An unknown state leaves Resource.status unset (not "enabled", not "unspecified" with details).
    unknown = user_resource(person, IdScheme(), status=model.UserStatus.STATUS_UNSPECIFIED)
    assert not unknown.HasField("status")

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
