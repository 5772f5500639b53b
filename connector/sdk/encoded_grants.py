"""Grants built straight into their wire bytes: the fast path for listings of many grants.

Most grants of a sync are "principal P holds entitlement E" for one E at a time (a group's members, a
space's permission holders), and every one of them embeds the same entitlement (with its full resource).
Building each as a protobuf object costs a deep copy of that entitlement, then the runtime copies the list
into a response, and the sync engine serializes it again to store it. A `GrantEncoder` serializes the
entitlement once and then produces each grant's deterministic wire bytes by concatenation, together with
the denormalized `v1_grants` columns, so the in-process engine stores them without touching protobuf.

    enc = GrantEncoder(group, "member")
    grants = EncodedGrants()
    for account in members:
        enc.add(grants, "user", account)
    return Page(grants, next_token)

`EncodedGrants` is a `Sequence[Grant]` (items parse lazily), so code that reads `page.items` keeps working,
and the runtime turns it into a normal `ListGrants` response for gRPC callers. The bytes are exactly
`model.new_grant(resource, slug, resource_id(type, id)).SerializeToString(deterministic=True)` (tests pin
this against protobuf for ASCII, non-ASCII and long values).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from google.protobuf.message import Message

from connector.pb.c1.connector.v2 import entitlement_pb2, grant_pb2, resource_pb2
from connector.sdk import model

# (entitlement resource type, entitlement resource id, entitlement id, principal type, principal id,
#  grant id, grant bytes): the `v1_grants` columns the engine stores, in its column order.
GrantRecord = tuple[str, str, str, str, str, str, bytes]

_ONE_BYTE = [bytes((n,)) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


class EncodedGrants(Sequence[grant_pb2.Grant]):
    """One page of grants as wire bytes plus columns (see the module docstring).

    `records` holds the storable grants. Grants whose principal has no type or id cannot be stored (the
    engine drops such grants with a warning, as it does for protobuf pages); they are kept apart in
    `problems` so that the drop is reported rather than silent. `annotated` is set when any grant carries
    annotations (the engine then looks for GrantExpandable, which it stores in its own column).
    """

    __slots__ = ("annotated", "problems", "records")

    def __init__(self) -> None:
        self.records: list[GrantRecord] = []
        self.problems: list[grant_pb2.Grant] = []
        self.annotated = False

    def __len__(self) -> int:
        return len(self.records) + len(self.problems)

    @overload
    def __getitem__(self, index: int) -> grant_pb2.Grant: ...

    @overload
    def __getitem__(self, index: slice) -> list[grant_pb2.Grant]: ...

    def __getitem__(self, index: int | slice) -> grant_pb2.Grant | list[grant_pb2.Grant]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self.records)
        if index < 0:
            index += len(self)
        if 0 <= index < n:
            return grant_pb2.Grant.FromString(self.records[index][6])
        if n <= index < len(self):
            copy = grant_pb2.Grant()
            copy.CopyFrom(self.problems[index - n])
            return copy
        raise IndexError("grant index out of range")

    def __iter__(self) -> Iterator[grant_pb2.Grant]:
        for i in range(len(self)):
            yield self[i]

    def wire(self) -> bytes:
        """The grants as the `list` field (1) of a ListGrants response: a response parsed from these bytes
        holds exactly these grants, in order."""
        parts = [_field(b"\x0a", r[6]) for r in self.records]
        parts.extend(_field(b"\x0a", g.SerializeToString(deterministic=True)) for g in self.problems)
        return b"".join(parts)


class GrantEncoder:
    """Grants of one entitlement `<resource>:<slug>`, built as `model.new_grant` would build them."""

    __slots__ = ("_ent_columns", "_head", "_id_prefix", "_resource", "_slug", "entitlement_id")

    def __init__(self, resource: resource_pb2.Resource, slug: str) -> None:
        rid = resource.id
        self.entitlement_id = f"{rid.resource_type}:{rid.resource}:{slug}"
        entitlement = entitlement_pb2.Entitlement(id=self.entitlement_id)
        entitlement.resource.CopyFrom(resource)
        self._head = _field(b"\x0a", entitlement.SerializeToString(deterministic=True))
        self._ent_columns = (rid.resource_type, rid.resource, self.entitlement_id)
        self._id_prefix = self.entitlement_id + ":"
        self._resource = resource
        self._slug = slug

    def add(
        self,
        into: EncodedGrants,
        principal_type: str,
        principal: str,
        annotations: Sequence[Message] = (),
    ) -> None:
        """Append the grant of this entitlement to principal `{principal_type, principal}`."""
        if not principal_type or not principal:
            into.problems.append(
                model.new_grant(
                    self._resource,
                    self._slug,
                    model.resource_id(principal_type, principal),
                    annotations=annotations,
                )
            )
            return
        ptype = principal_type.encode()
        pid = principal.encode()
        # Resource{id: ResourceId{resource_type: 1, resource: 2}} as field 2, then the id as field 3.
        rid = b"\x0a" + _varint(len(ptype)) + ptype + b"\x12" + _varint(len(pid)) + pid
        res = b"\x0a" + _varint(len(rid)) + rid
        grant_id = f"{self._id_prefix}{principal_type}:{principal}"
        gid = grant_id.encode()
        data = self._head + b"\x12" + _varint(len(res)) + res + b"\x1a" + _varint(len(gid)) + gid
        if annotations:
            # Field 4 follows the id in deterministic output; each annotation is one packed Any.
            data += b"".join(
                _field(b"\x22", model.pack(a).SerializeToString(deterministic=True)) for a in annotations
            )
            into.annotated = True
        cols = self._ent_columns
        into.records.append((cols[0], cols[1], cols[2], principal_type, principal, grant_id, data))

    def add_all(self, into: EncodedGrants, principal_type: str, principals: Iterable[str]) -> None:
        """`add` for many principals of one type without annotations (a group's members): the same bytes,
        with the per-type parts built once and one-byte lengths written inline."""
        ptype = principal_type.encode()
        if not ptype or len(ptype) > 60:
            for principal in principals:
                self.add(into, principal_type, principal)
            return
        one = _ONE_BYTE
        head, prefix = self._head, f"{self._id_prefix}{principal_type}:"
        c0, c1, c2 = self._ent_columns
        # ResourceId up to the principal's length: field 1 (type), then the tag of field 2.
        type_part = b"\x0a" + one[len(ptype)] + ptype + b"\x12"
        rid_base = len(type_part) + 1
        append, join, add = into.records.append, b"".join, self.add
        for principal in principals:
            pid = principal.encode()
            n = len(pid)
            grant_id = prefix + principal
            gid = grant_id.encode()
            rid_len = rid_base + n
            if not n or rid_len + 2 >= 128 or len(gid) >= 128:
                add(into, principal_type, principal)  # empty or long: the general path
                continue
            append(
                (
                    c0,
                    c1,
                    c2,
                    principal_type,
                    principal,
                    grant_id,
                    join(
                        (
                            *(head, b"\x12", one[rid_len + 2], b"\x0a", one[rid_len]),
                            *(type_part, one[n], pid, b"\x1a", one[len(gid)], gid),
                        )
                    ),
                )
            )

    def grant(
        self, principal_type: str, principal: str, annotations: Sequence[Message] = ()
    ) -> grant_pb2.Grant:
        """The same grant as a protobuf message (for provisioning results and tests)."""
        return model.new_grant(
            self._resource, self._slug, model.resource_id(principal_type, principal), annotations=annotations
        )
