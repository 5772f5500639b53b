"""The SDK builders' output is a contract: ids with the baton conventions, and messages that the sync
writes into .c1z files and ConductorOne compares across syncs. The builders are tuned for speed; these
tests pin their exact output (captured from the straightforward implementation) so a faster path can
never change a byte of what reaches ConductorOne.

Packed annotations (Any) hold bytes serialized in upb's per-process map order, so the comparison
re-serializes every Any's content deterministically before comparing bytes.
"""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import any_pb2, struct_pb2, symbol_database, timestamp_pb2
from google.protobuf.message import Message

from connector.pb.c1.connector.v2 import annotation_trait_pb2, resource_pb2
from connector.sdk import model

USER_T = model.resource_type("user", "User", [model.Trait.TRAIT_USER])
GROUP_T = model.resource_type("group", "Group", [model.Trait.TRAIT_GROUP])
WHEN = dt.datetime(2024, 3, 5, 7, 8, 9, 123456, tzinfo=dt.UTC)
NAIVE = dt.datetime(2023, 1, 2, 3, 4, 5)


def canon(msg: Message) -> bytes:
    copy = type(msg)()
    copy.CopyFrom(msg)
    _normalize(copy)
    return copy.SerializeToString(deterministic=True)


def _normalize(msg: Message) -> None:
    if isinstance(msg, any_pb2.Any):
        inner = symbol_database.Default().GetSymbol(msg.type_url.rsplit("/", 1)[-1])()
        assert msg.Unpack(inner)
        msg.value = canon(inner)
        return
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for v in value.values():
                    _normalize(v)
        elif field.is_repeated:
            for v in value:
                _normalize(v)
        else:
            _normalize(value)


def build_cases() -> dict[str, Message]:
    out: dict[str, Message] = {}
    t1 = model.user_trait(
        emails=["a@example.com", ("b@example.com", False), ""],
        status=model.UserStatus.STATUS_DISABLED,
        status_details="inactive",
        login="alice",
        login_aliases=["al"],
        profile={
            "name": "Alice",
            "n": 3,
            "f": 1.5,
            "yes": True,
            "none": None,
            "when": WHEN,
            "nested": {"k": "v"},
            "list": ["x", 2],
        },
        account_type=model.AccountType.ACCOUNT_TYPE_SERVICE,
        mfa_enabled=False,
        sso_enabled=True,
        created_at=NAIVE,
        last_login=WHEN,
        given_name="Al",
        family_name="Ice",
        employee_ids=["e1"],
    )
    out["user_trait_full"] = t1
    out["user_trait_min"] = model.user_trait()
    out["user_resource_full"] = model.user_resource(
        "Alice",
        USER_T,
        "u:1/é",
        t1,
        parent=model.resource_id("org", "o1"),
        description="d",
        annotations=[model.skip_entitlements_and_grants()],
    )
    out["user_resource_atl"] = model.user_resource(
        "Bob",
        "user",
        "acc-2",
        model.user_trait(
            emails=["bob@x.io"],
            login="bob@x.io",
            profile={"account_id": "acc-2", "email": "bob@x.io", "last_active": None, "status": "active"},
            mfa_enabled=True,
            last_login=WHEN,
        ),
    )
    out["group_resource_min"] = model.group_resource("Eng", GROUP_T, "g1")
    out["group_resource_full"] = model.group_resource(
        "Eng",
        "group",
        "g 2",
        profile={"id": "g 2", "members": 12, "managed": False},
        parent=model.resource_id("site", "s"),
        description="Engineering",
        annotations=[model.child_resource_type("user")],
    )
    grp = out["group_resource_full"]
    out["assignment_entitlement"] = model.assignment_entitlement(
        grp,
        "member",
        grantable_to=[USER_T, GROUP_T],
        description="members",
        annotations=[model.expandable(["group:x:member"])],
    )
    out["assignment_entitlement_min"] = model.assignment_entitlement(out["group_resource_min"], "member")
    out["permission_entitlement"] = model.permission_entitlement(
        grp, "view", grantable_to=[USER_T], display_name="View", description="can view"
    )
    slim = resource_pb2.Resource(id=grp.id)
    out["grant_slim_id"] = model.new_grant(slim, "member", model.resource_id("user", "acc-1"))
    out["grant_full_res"] = model.new_grant(
        grp,
        "admin",
        out["user_resource_atl"],
        annotations=[model.expandable(["group:g1:member"], shallow=True, resource_type_ids=["user"])],
    )
    out["grant_expandable"] = model.new_grant(
        slim,
        "role:x",
        model.resource_id("group", "g:1"),
        annotations=[model.expandable(["group:g:1:member"])],
    )
    return out


EXPECTED = {
    "user_trait_full": (
        "0a110a0d61406578616d706c652e636f6d10010a0f0a0d62406578616d706c652e636f6d120c08021208696e61637469"
        "76651a9c010a0e0a0166120911000000000000f83f0a1a0a046c697374121232100a031a01780a091100000000000000"
        "400a0f0a046e616d6512071a05416c6963650a160a066e6573746564120c2a0a0a080a016b12031a01760a0e0a016e12"
        "091100000000000008400a2a0a047768656e12221a20323032342d30332d30355430373a30383a30392e313233343536"
        "2b30303a30300a090a037965731202200128023205616c6963653a02616c420608a593c99d064a0b08d9899baf061080"
        "94ef3a52005a02080162090a02416c12034963656a026531"
    ),
    "user_trait_min": ("120208011a002801"),
    "user_resource_full": (
        "0a0e0a04757365721206753a312fc3a912090a036f726712026f311a05416c69636522ba020a2d747970652e676f6f67"
        "6c65617069732e636f6d2f63312e636f6e6e6563746f722e76322e5573657254726169741288020a110a0d6140657861"
        "6d706c652e636f6d10010a0f0a0d62406578616d706c652e636f6d120c08021208696e6163746976651a9c010a0e0a01"
        "66120911000000000000f83f0a1a0a046c697374121232100a031a01780a091100000000000000400a0f0a046e616d65"
        "12071a05416c6963650a160a066e6573746564120c2a0a0a080a016b12031a01760a0e0a016e12091100000000000008"
        "400a2a0a047768656e12221a20323032342d30332d30355430373a30383a30392e3132333435362b30303a30300a090a"
        "037965731202200128023205616c6963653a02616c420608a593c99d064a0b08d9899baf06108094ef3a52005a020801"
        "62090a02416c12034963656a026531223f0a3d747970652e676f6f676c65617069732e636f6d2f63312e636f6e6e6563"
        "746f722e76322e536b6970456e7469746c656d656e7473416e644772616e74732a0164"
    ),
    "user_resource_atl": (
        "0a0d0a047573657212056163632d321a03426f6222a2010a2d747970652e676f6f676c65617069732e636f6d2f63312e"
        "636f6e6e6563746f722e76322e55736572547261697412710a0c0a08626f6240782e696f1001120208011a400a150a0a"
        "6163636f756e745f696412071a056163632d320a130a05656d61696c120a1a08626f6240782e696f0a120a0673746174"
        "757312081a0661637469766528013208626f6240782e696f4a0b08d9899baf06108094ef3a52020801"
    ),
    "group_resource_min": (
        "0a0b0a0567726f7570120267311a03456e6722340a2e747970652e676f6f676c65617069732e636f6d2f63312e636f6e"
        "6e6563746f722e76322e47726f7570547261697412021200"
    ),
    "group_resource_full": (
        "0a0c0a0567726f7570120367203212090a04736974651201731a03456e6722660a2e747970652e676f6f676c65617069"
        "732e636f6d2f63312e636f6e6e6563746f722e76322e47726f75705472616974123412320a0b0a02696412051a036720"
        "320a0d0a076d616e61676564120220000a140a076d656d626572731209110000000000002840223f0a35747970652e67"
        "6f6f676c65617069732e636f6d2f63312e636f6e6e6563746f722e76322e4368696c645265736f757263655479706512"
        "060a04757365722a0b456e67696e656572696e67"
    ),
    "assignment_entitlement": (
        "0ad4010a0c0a0567726f7570120367203212090a04736974651201731a03456e6722660a2e747970652e676f6f676c65"
        "617069732e636f6d2f63312e636f6e6e6563746f722e76322e47726f75705472616974123412320a0b0a02696412051a"
        "036720320a0d0a076d616e61676564120220000a140a076d656d626572731209110000000000002840223f0a35747970"
        "652e676f6f676c65617069732e636f6d2f63312e636f6e6e6563746f722e76322e4368696c645265736f757263655479"
        "706512060a04757365722a0b456e67696e656572696e67121067726f75703a6720323a6d656d6265721a066d656d6265"
        "7222076d656d626572732a0f0a04757365721204557365721a01012a110a0567726f7570120547726f75701a01023247"
        "0a33747970652e676f6f676c65617069732e636f6d2f63312e636f6e6e6563746f722e76322e4772616e74457870616e"
        "6461626c6512100a0e67726f75703a783a6d656d626572380142066d656d626572"
    ),
    "assignment_entitlement_min": (
        "0a480a0b0a0567726f7570120267311a03456e6722340a2e747970652e676f6f676c65617069732e636f6d2f63312e63"
        "6f6e6e6563746f722e76322e47726f7570547261697412021200120f67726f75703a67313a6d656d6265721a066d656d"
        "626572380142066d656d626572"
    ),
    "permission_entitlement": (
        "0ad4010a0c0a0567726f7570120367203212090a04736974651201731a03456e6722660a2e747970652e676f6f676c65"
        "617069732e636f6d2f63312e636f6e6e6563746f722e76322e47726f75705472616974123412320a0b0a02696412051a"
        "036720320a0d0a076d616e61676564120220000a140a076d656d626572731209110000000000002840223f0a35747970"
        "652e676f6f676c65617069732e636f6d2f63312e636f6e6e6563746f722e76322e4368696c645265736f757263655479"
        "706512060a04757365722a0b456e67696e656572696e67120e67726f75703a6720323a766965771a0456696577220863"
        "616e20766965772a0f0a04757365721204557365721a01013802420476696577"
    ),
    "grant_slim_id": (
        "0a220a0e0a0c0a0567726f75701203672032121067726f75703a6720323a6d656d626572120f0a0d0a04757365721205"
        "6163632d311a1b67726f75703a6720323a6d656d6265723a757365723a6163632d31"
    ),
    "grant_full_res": (
        "0ae8010ad4010a0c0a0567726f7570120367203212090a04736974651201731a03456e6722660a2e747970652e676f6f"
        "676c65617069732e636f6d2f63312e636f6e6e6563746f722e76322e47726f75705472616974123412320a0b0a026964"
        "12051a036720320a0d0a076d616e61676564120220000a140a076d656d626572731209110000000000002840223f0a35"
        "747970652e676f6f676c65617069732e636f6d2f63312e636f6e6e6563746f722e76322e4368696c645265736f757263"
        "655479706512060a04757365722a0b456e67696e656572696e67120f67726f75703a6720323a61646d696e12b9010a0d"
        "0a047573657212056163632d321a03426f6222a2010a2d747970652e676f6f676c65617069732e636f6d2f63312e636f"
        "6e6e6563746f722e76322e55736572547261697412710a0c0a08626f6240782e696f1001120208011a400a150a0a6163"
        "636f756e745f696412071a056163632d320a130a05656d61696c120a1a08626f6240782e696f0a120a06737461747573"
        "12081a0661637469766528013208626f6240782e696f4a0b08d9899baf06108094ef3a520208011a1a67726f75703a67"
        "20323a61646d696e3a757365723a6163632d3222500a33747970652e676f6f676c65617069732e636f6d2f63312e636f"
        "6e6e6563746f722e76322e4772616e74457870616e6461626c6512190a0f67726f75703a67313a6d656d62657210011a"
        "0475736572"
    ),
    "grant_expandable": (
        "0a220a0e0a0c0a0567726f75701203672032121067726f75703a6720323a726f6c653a78120e0a0c0a0567726f757012"
        "03673a311a1a67726f75703a6720323a726f6c653a783a67726f75703a673a3122490a33747970652e676f6f676c6561"
        "7069732e636f6d2f63312e636f6e6e6563746f722e76322e4772616e74457870616e6461626c6512120a1067726f7570"
        "3a673a313a6d656d626572"
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builder_output_is_byte_identical(name: str) -> None:
    built = build_cases()
    assert set(built) == set(EXPECTED)
    assert canon(built[name]).hex() == EXPECTED[name]


def test_id_conventions() -> None:
    group = model.group_resource("Eng", "group", "g:1")
    assert model.entitlement_id(group, "member") == "group:g:1:member"
    assert model.entitlement_id(group.id, "member") == "group:g:1:member"
    ent = model.assignment_entitlement(group, "member")
    assert (ent.id, ent.slug, ent.display_name) == ("group:g:1:member", "member", "member")
    perm = model.permission_entitlement(model.new_resource("Space", "space", "ENG"), "view")
    assert perm.id == "space:ENG:view"
    assert perm.purpose == model.Purpose.PURPOSE_VALUE_PERMISSION
    grant = model.new_grant(group, "member", model.resource_id("user", "u:2"))
    # Lossy joins, exactly as the Go SDK: ':' inside ids is not escaped.
    assert grant.id == "group:g:1:member:user:u:2"
    assert grant.entitlement.id == "group:g:1:member"
    assert grant.entitlement.resource == group
    assert grant.principal.id == model.resource_id("user", "u:2")


def test_profile_values_round_trip() -> None:
    trait = model.user_trait(profile={"s": "x", "b": False, "i": 7, "f": 0.25, "none": None, "when": WHEN})
    assert dict(trait.profile) == {"s": "x", "b": False, "i": 7.0, "f": 0.25, "when": WHEN.isoformat()}
    res = model.user_resource("A", "user", "a", trait)
    found = model.find_annotation(res.annotations, annotation_trait_pb2.UserTrait)
    assert found == trait


def test_builders_do_not_share_state() -> None:
    # Cached or reused parts must never leak a change from one built message into another.
    a = model.group_resource("A", "group", "a", profile={"k": "v"})
    b = model.group_resource("B", "group", "b", profile={"k": "v"})
    a.annotations[0].value = b""
    assert b.annotations[0].value != b""
    res = model.group_resource("G", "group", "g")
    g1 = model.new_grant(res, "member", model.resource_id("user", "1"))
    g1.entitlement.resource.display_name = "changed"
    g2 = model.new_grant(res, "member", model.resource_id("user", "2"))
    assert res.display_name == "G"
    assert g2.entitlement.resource.display_name == "G"
    profile = struct_pb2.Struct()
    profile.update({"x": 1})
    t = model.user_trait(profile={"x": 1})
    t.profile.fields["x"].number_value = 2
    assert model.user_trait(profile={"x": 1}).profile == profile


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2024, 2, 29, 23, 30, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=-9, minutes=-30))),
        dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=dt.timezone(dt.timedelta(hours=14))),
    ],
)
def test_timestamps_match_protobuf_conversion(when: dt.datetime) -> None:
    # Naive datetimes are UTC; the epoch itself is still a present (set) timestamp.
    reference = timestamp_pb2.Timestamp()
    reference.FromDatetime((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC))
    assert model.timestamp(when) == reference
    trait = model.user_trait(created_at=when, last_login=when)
    assert trait.HasField("created_at") and trait.HasField("last_login")
    assert trait.created_at == reference and trait.last_login == reference


def test_packed_bytes_match_the_plain_construction_in_process() -> None:
    # Packed annotations hold non-deterministic bytes that follow upb's map layout; code that compares
    # resources built by different paths (e.g. an app's own fast builder) needs the builders to lay out
    # profiles as copying a Struct.update-built Struct does.
    profile = {
        "user_name": "zoë",
        "user_key": "8a7f",
        "id": "8a7f",
        "display_name": "Zoë",
        "n": 2,
        "ok": True,
    }
    struct = struct_pb2.Struct()
    struct.update(profile)
    plain = annotation_trait_pb2.UserTrait(
        status=annotation_trait_pb2.UserTrait.Status(status=model.UserStatus.STATUS_ENABLED),
        profile=struct,
        account_type=model.AccountType.ACCOUNT_TYPE_HUMAN,
        login="zoë",
    )
    built = model.user_trait(login="zoë", profile=profile)
    assert built.SerializeToString() == plain.SerializeToString()
    assert model.user_resource("Zoë", "user", "zoë", built) == resource_pb2.Resource(
        id=resource_pb2.ResourceId(resource_type="user", resource="zoë"),
        display_name="Zoë",
        annotations=[model.pack(plain)],
    )
