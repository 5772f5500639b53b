"""Grants built as bytes by the SDK's GrantEncoder: identical to protobuf-built grants everywhere they go."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from connector.c1z import rows
from connector.c1z.reader import C1zReader
from connector.pb.c1.connector.v2 import annotation_grant_pb2, grant_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.client import GrpcConnectorClient
from connector.sdk.encoded_grants import EncodedGrants, GrantEncoder
from connector.sdk.runtime import ConnectorRuntime
from connector.sdk.server import serve
from connector.sync.engine import SyncOptions, run_sync
from tests.test_sync_support import GROUP, Nest, Org, OrgConnector, content

SPACE = model.resource_type("space", "Space", [])


def _resources() -> list[resource_pb2.Resource]:
    full = model.group_resource("Engineering", GROUP, "eng", profile={"name": "eng", "count": 3})
    return [
        full,
        resource_pb2.Resource(id=full.id),  # slim, as the Atlassian connector embeds it
        model.new_resource("Späce ☃", SPACE, "SPÄCE-" + "k" * 150, description="d" * 300),
        model.group_resource("x", GROUP, "x", annotations=[model.child_resource_type("user")]),
    ]


PRINCIPALS = [
    ("user", "alice"),
    ("user", "jürgen.ß@example.com"),
    ("user", "u" * 127),  # lengths around the one-byte varint limit
    ("user", "u" * 128),
    ("group", "g" * 300),
    ("service-account-with-a-long-type-name-" + "t" * 40, "svc"),
    ("user", "名前"),
]


@pytest.mark.parametrize("resource", _resources(), ids=["full", "slim", "long-unicode", "annotated"])
def test_bytes_and_columns_match_protobuf(resource: resource_pb2.Resource) -> None:
    enc = GrantEncoder(resource, "member")
    one_by_one, batched = EncodedGrants(), EncodedGrants()
    for ptype, pid in PRINCIPALS:
        enc.add(one_by_one, ptype, pid)
        enc.add_all(batched, ptype, [pid])
    assert one_by_one.records == batched.records
    assert not one_by_one.annotated and not one_by_one.problems
    for (ptype, pid), record in zip(PRINCIPALS, one_by_one.records, strict=True):
        expected = model.new_grant(resource, "member", model.resource_id(ptype, pid))
        assert record[6] == expected.SerializeToString(deterministic=True)
        assert record[:6] == rows.grant_columns(expected)


def test_annotations_are_encoded_as_protobuf_would() -> None:
    resource = _resources()[0]
    annotations: list[Message] = [
        model.expandable(["group:ops:member"], shallow=True, resource_type_ids=["user"]),
        annotation_grant_pb2.GrantImmutable(),
    ]
    enc = GrantEncoder(resource, "member")
    page = EncodedGrants()
    enc.add(page, "group", "ops", annotations)
    expected = model.new_grant(resource, "member", model.resource_id("group", "ops"), annotations=annotations)
    assert page.annotated
    assert page.records[0][6] == expected.SerializeToString(deterministic=True)
    assert enc.grant("group", "ops", annotations) == expected


def test_encoded_page_reads_like_a_list_of_grants() -> None:
    resource = _resources()[0]
    enc = GrantEncoder(resource, "member")
    page = EncodedGrants()
    enc.add_all(page, "user", ["a", "b", "", "c"])  # the empty id cannot be stored
    assert len(page.records) == 3 and len(page.problems) == 1 and len(page) == 4
    expected = [model.new_grant(resource, "member", model.resource_id("user", u)) for u in ("a", "b", "c")]
    assert list(page)[:3] == expected
    assert page[-1].id == "group:eng:member:user:"
    assert page[0:2] == expected[:2]
    with pytest.raises(IndexError):
        page[4]
    response = grant_pb2.GrantsServiceListGrantsResponse.FromString(page.wire())
    assert list(response.list) == list(page)


async def test_runtime_and_grpc_listings_match_protobuf_pages() -> None:
    """ListGrants answers the same, in process and over gRPC, whichever way the syncer built its page."""
    plain_rt = ConnectorRuntime(OrgConnector(Org()))
    encoded_rt = ConnectorRuntime(OrgConnector(Org(encoded=True)))
    group = model.group_resource("ALL", GROUP, "all", profile={"name": "all"})
    request = grant_pb2.GrantsServiceListGrantsRequest(resource=group)
    expected = await plain_rt.list_grants(request)
    assert len(expected.list) == 2 and expected.next_page_token == "2"
    assert await encoded_rt.list_grants(request) == expected

    server = await serve(encoded_rt, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        assert await GrpcConnectorClient(channel).list_grants(request) == expected
    finally:
        await channel.close()
        await server.stop(None)


def _org(encoded: bool) -> Org:
    org = Org(bots=["b1"], encoded=encoded)
    org.groups["eng"] += ["bot:b1", "user:" + "x" * 200]
    org.nested["ops"] = [Nest("eng", shallow=True, resource_type_ids=("user",))]
    return org


async def test_sync_content_is_identical_with_encoded_grants(tmp_path: Path) -> None:
    """Same rows (bytes, columns, expansion state) and the same expanded grants either way."""
    plain, encoded = tmp_path / "plain.c1z", tmp_path / "encoded.c1z"
    plain_report = await run_sync(ConnectorRuntime(OrgConnector(_org(False))), plain, SyncOptions())
    encoded_report = await run_sync(ConnectorRuntime(OrgConnector(_org(True))), encoded, SyncOptions())
    assert content(plain) == content(encoded)
    assert encoded_report.grants_expanded == plain_report.grants_expanded > 0
    assert encoded_report.grants_direct == plain_report.grants_direct
    with C1zReader(encoded) as r:
        columns = {
            rec.grant.id: (rec.expansion is not None, rec.needs_expansion) for rec in r.grant_records()
        }
    assert columns["group:all:member:group:eng"] == (True, True)
    assert columns["group:eng:member:user:alice"] == (False, False)


async def test_grant_without_principal_id_is_dropped_with_a_warning(tmp_path: Path) -> None:
    org = Org(encoded=True)
    org.groups["eng"].append("user:")
    report = await run_sync(ConnectorRuntime(OrgConnector(org)), tmp_path / "sync.c1z", SyncOptions())
    assert report.dropped_records == 1
    assert any("group:eng:member:user: has no principal id; dropped" in w for w in report.warnings)


async def test_insert_resource_grants_works_with_encoded_pages(tmp_path: Path) -> None:
    plain, encoded = tmp_path / "plain.c1z", tmp_path / "encoded.c1z"
    for path, flag in ((plain, False), (encoded, True)):
        org = Org(encoded=flag, insert_resource_grants=True)
        await run_sync(ConnectorRuntime(OrgConnector(org)), path, SyncOptions())
    assert content(plain) == content(encoded)
