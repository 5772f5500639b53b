"""Protobuf objects -> v1 table rows, with the denormalized columns taken from the blob they describe.

Row tuples carry neither `sync_id` nor `discovered_at`: the writer adds both (one value per batch), which
keeps per-row work down. Blobs are serialized deterministically (map entries sorted), as the Go store
does.

Grants are the bulk of every sync, so `GrantRows` reads the denormalized columns from the serialized
bytes it has to produce anyway (field order is fixed for deterministic output) and reuses the entitlement
columns across grants sharing the same embedded entitlement; any grant whose bytes do not have the
expected shape takes the plain attribute path. Both paths give the same columns (tests check this).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from connector.c1z.schema import extract_expansion
from connector.pb.c1.connector.v2 import entitlement_pb2, grant_pb2, resource_pb2

ResourceTypeRow = tuple[str, bytes]
ResourceRow = tuple[str, str, str | None, str | None, bytes]
EntitlementRow = tuple[str, str, str, bytes]
# (resource_type_id, resource_id, entitlement_id, principal_type, principal_id, external_id, data)
PlainGrantRow = tuple[str, str, str, str, str, str, bytes]
# the same plus the serialized GrantExpandable (needs_expansion = 1)
ExpandableGrantRow = tuple[str, str, str, str, str, str, bytes, bytes]

_EXPANDABLE_MARK = b"GrantExpandable"


def resource_external_id(resource_type: str, resource: str) -> str:
    """`v1_resources.external_id`: `<type>:<id>` (lookups pair it with `resource_type_id`)."""
    return f"{resource_type}:{resource}"


def resource_type_row(rt: resource_pb2.ResourceType) -> ResourceTypeRow:
    return (rt.id, rt.SerializeToString(deterministic=True))


def resource_row(r: resource_pb2.Resource) -> ResourceRow:
    rid = r.id
    if r.HasField("parent_resource_id"):
        parent = r.parent_resource_id
        ptype: str | None = parent.resource_type
        pid: str | None = parent.resource
    else:
        ptype = pid = None
    return (
        rid.resource_type,
        f"{rid.resource_type}:{rid.resource}",
        ptype,
        pid,
        r.SerializeToString(deterministic=True),
    )


def entitlement_row(e: entitlement_pb2.Entitlement) -> EntitlementRow:
    rid = e.resource.id
    return (rid.resource_type, rid.resource, e.id, e.SerializeToString(deterministic=True))


def grant_columns(g: grant_pb2.Grant) -> tuple[str, str, str, str, str, str]:
    """The denormalized grant columns, read from the message attributes."""
    ent = g.entitlement
    rid = ent.resource.id
    pid = g.principal.id
    return (rid.resource_type, rid.resource, ent.id, pid.resource_type, pid.resource, g.id)


def grant_identity_problem(g: grant_pb2.Grant) -> str:
    """Why a grant cannot be stored ('' if it can): readers need its id, entitlement and principal ids."""
    if not g.id:
        return "has no id"
    if not g.entitlement.id:
        return "has no entitlement id"
    if not g.entitlement.resource.id.resource_type or not g.entitlement.resource.id.resource:
        return "has no entitlement resource id"
    if not g.principal.id.resource_type or not g.principal.id.resource:
        return "has no principal id"
    return ""


class _Shape(Exception):
    """The serialized grant is not laid out as the fast path expects."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = data[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return result, pos
        shift += 7


def _fast_columns(
    data: bytes, g: grant_pb2.Grant | None, cache: dict[bytes, tuple[str, str, str]]
) -> tuple[tuple[str, str, str, str, str, str], int]:
    """Columns from the deterministic wire bytes: 1 entitlement, 2 principal{1 id{1 type, 2 id}}, 3 id.

    Also returns the offset just past the grant id (where annotations, field 4, would start). Lengths
    below 128 (one-byte varints, the normal case) are decoded inline; this runs once per grant.
    """
    if data[0] != 0x0A:
        raise _Shape
    n = data[1]
    p = 2
    if n >= 0x80:
        n, p = _varint(data, 1)
    end = p + n
    key = data[p:end]
    info = cache.get(key)
    if info is None:
        ent = g.entitlement if g is not None else entitlement_pb2.Entitlement.FromString(key)
        rid = ent.resource.id
        info = (rid.resource_type, rid.resource, ent.id)
        cache[key] = info
    if data[end] != 0x12:
        raise _Shape
    n = data[end + 1]
    p = end + 2
    if n >= 0x80:
        n, p = _varint(data, end + 1)
    principal_end = p + n
    if data[p] != 0x0A:
        raise _Shape
    n = data[p + 1]
    q = p + 2
    if n >= 0x80:
        n, q = _varint(data, p + 1)
    id_end = q + n
    if q >= id_end or data[q] != 0x0A:
        raise _Shape
    n = data[q + 1]
    q += 2
    if n >= 0x80:
        n, q = _varint(data, q - 1)
    ptype = data[q : q + n].decode()
    q += n
    if q >= id_end or data[q] != 0x12:
        raise _Shape
    n = data[q + 1]
    q += 2
    if n >= 0x80:
        n, q = _varint(data, q - 1)
    pid = data[q : q + n].decode()
    if principal_end >= len(data) or data[principal_end] != 0x1A:
        raise _Shape
    n = data[principal_end + 1]
    q = principal_end + 2
    if n >= 0x80:
        n, q = _varint(data, principal_end + 1)
    return (info[0], info[1], info[2], ptype, pid, data[q : q + n].decode()), q + n


class GrantRows:
    """Builds grant rows for one batch. Grants missing identity fields are set aside in `problems`."""

    def __init__(self) -> None:
        self.plain: list[PlainGrantRow] = []
        self.expandable: list[ExpandableGrantRow] = []
        # For each expandable row, how many plain rows came before it: the listing order, which decides
        # which write of a grant listed twice in one batch is the last (see C1zWriter.write_grant_rows).
        self.expandable_after: list[int] = []
        self.problems: list[tuple[grant_pb2.Grant, str]] = []
        # Set by the sync engine when the batch is handed over: every resource with a smaller row id has
        # had its grants listed (see connector/sync/early_expansion.py); None when not known.
        self.watermark: int | None = None
        # Row ids of resources above the watermark whose grant listings have ended (early expansion).
        self.ended: list[int] = []
        self._cache: dict[bytes, tuple[str, str, str]] = {}

    def __len__(self) -> int:
        return len(self.plain) + len(self.expandable)

    def add_all(self, grants: Iterable[grant_pb2.Grant]) -> None:
        """Add connector grants. GrantExpandable is stripped from each grant (in place) into `expansion`."""
        for g in grants:
            self._add(g.SerializeToString(deterministic=True), g)
        self._trim_cache()

    def add_response(self, response: grant_pb2.GrantsServiceListGrantsResponse) -> None:
        """Add the grants of a ListGrants response (unchanged; stripped copies are stored).

        The response is serialized once and cut into its grants (field 1, length-delimited): a grant's
        bytes inside the response are exactly its own deterministic serialization, and one C call is much
        cheaper than a serialization (and a Python wrapper object) per grant.
        """
        data = response.SerializeToString(deterministic=True)
        spans: list[tuple[int, int]] = []
        pos, size = 0, len(data)
        try:
            while pos < size:
                tag = data[pos]
                n = data[pos + 1]
                start = pos + 2
                if n >= 0x80:
                    n, start = _varint(data, pos + 1)
                if tag & 0x07 != 2 or tag >= 0x80:  # not a (small) length-delimited field: unusual
                    raise _Shape
                end = start + n
                if tag == 0x0A:
                    spans.append((start, end))
                pos = end
        except (_Shape, IndexError):
            # e.g. unknown fields from a newer connector: take the plain per-message path
            self.add_all(grant_pb2.Grant.FromString(g.SerializeToString()) for g in response.list)
            return
        add = self._add
        for start, end in spans:
            add(data[start:end], None)
        self._trim_cache()

    def add_records(self, records: Sequence[PlainGrantRow], annotated: bool) -> None:
        """Add grants that come with their columns (an SDK `EncodedGrants` page). Annotated grants go
        through the byte path, which moves a GrantExpandable into `expansion`."""
        if annotated:
            for record in records:
                self._add(record[6], None)
            self._trim_cache()
        else:
            self.plain.extend(records)

    def _add(self, data: bytes, g: grant_pb2.Grant | None) -> None:
        try:
            cols, tail = _fast_columns(data, g, self._cache)
            # Annotations (field 4, tag 0x22) follow the id; only then can there be a GrantExpandable.
            may_expand = tail < len(data) and data[tail] == 0x22 and _EXPANDABLE_MARK in data
        except (_Shape, IndexError, UnicodeDecodeError):
            if g is None:
                g = grant_pb2.Grant.FromString(data)
            cols = grant_columns(g)
            may_expand = _EXPANDABLE_MARK in data
        expansion: bytes | None = None
        if may_expand:
            if g is None:
                g = grant_pb2.Grant.FromString(data)
            expansion, removed = extract_expansion(g)
            if removed:
                data = g.SerializeToString(deterministic=True)
        if not (cols[0] and cols[1] and cols[2] and cols[3] and cols[4] and cols[5]):
            if g is None:
                g = grant_pb2.Grant.FromString(data)
            self.problems.append((g, grant_identity_problem(g) or "has an empty identity field"))
            return
        if expansion is None:
            self.plain.append((*cols, data))
        else:
            self.expandable.append((*cols, data, expansion))
            self.expandable_after.append(len(self.plain))

    def _trim_cache(self) -> None:
        if len(self._cache) > 1024:
            self._cache.clear()
