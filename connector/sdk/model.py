"""Builders for resources, entitlements and grants with the baton id conventions.

The id formats are an external contract with ConductorOne (and with the Go connectors a customer may be
migrating from): entitlement `<type>:<resource>:<slug>`, grant
`<entitlement id>:<principal type>:<principal>`.
The joins are deliberately lossy (`:` is not escaped), exactly as the Go SDK does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf import any_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from connector.pb.c1.connector.v2 import (
    annotation_grant_pb2,
    annotation_resource_tree_pb2,
    annotation_trait_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)

M = TypeVar("M", bound=Message)

Trait = resource_pb2.ResourceType.Trait
UserStatus = annotation_trait_pb2.UserTrait.Status
AccountType = annotation_trait_pb2.UserTrait.AccountType
Purpose = entitlement_pb2.Entitlement.PurposeValue


# --- annotations -----------------------------------------------------------------------------------


# Builders run once per user, group and grant of a sync (hundreds of thousands of messages), so they fill
# messages in place instead of building parts and copying them in: with upb every keyword argument that is
# a message is a deep copy. The output is byte-for-byte what the plain construction gives
# (tests/test_model.py pins it).

_TYPE_URLS: dict[type[Message], str] = {}


def _type_url(msg: Message) -> str:
    # What Any.Pack writes, computed once per message class.
    kind = type(msg)
    url = _TYPE_URLS.get(kind)
    if url is None:
        url = _TYPE_URLS[kind] = "type.googleapis.com/" + msg.DESCRIPTOR.full_name
    return url


def pack(msg: Message) -> any_pb2.Any:
    return any_pb2.Any(type_url=_type_url(msg), value=msg.SerializeToString())


def pack_all(msgs: Iterable[Message]) -> list[any_pb2.Any]:
    return [m if isinstance(m, any_pb2.Any) else pack(m) for m in msgs]


def _add_annotations(target: Any, msgs: Iterable[Message]) -> None:
    """Append packed `msgs` to the repeated Any field `target` (as `pack_all` would build them)."""
    for m in msgs:
        if isinstance(m, any_pb2.Any):
            target.append(m)
        else:
            target.add(type_url=_type_url(m), value=m.SerializeToString())


def _is(annotation: any_pb2.Any, kind: type[Message]) -> bool:
    # Matched by the full name after the last "/", as the Go SDK does, so any type URL prefix works.
    return annotation.type_url.rsplit("/", 1)[-1] == kind.DESCRIPTOR.full_name


def find_annotation(annotations: Iterable[any_pb2.Any], kind: type[M]) -> M | None:
    for a in annotations:
        if _is(a, kind):
            msg = kind()
            a.Unpack(msg)
            return msg
    return None


def find_annotations(annotations: Iterable[any_pb2.Any], kind: type[M]) -> list[M]:
    out: list[M] = []
    for a in annotations:
        if _is(a, kind):
            msg = kind()
            a.Unpack(msg)
            out.append(msg)
    return out


def has_annotation(annotations: Iterable[any_pb2.Any], kind: type[Message]) -> bool:
    return any(_is(a, kind) for a in annotations)


_EMPTY_STRUCT = struct_pb2.Struct()  # only ever copied from


def to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    """Struct from plain values; None values are dropped, datetimes become RFC 3339 strings."""
    s = struct_pb2.Struct()
    _fill_struct(s, values)
    return s


def _fill_struct(s: struct_pb2.Struct, values: Mapping[str, Any]) -> None:
    # Struct.update, minus its per-value dispatch for the flat str/bool/number profiles we build (three
    # times faster); anything else (nested dicts and lists, bad types) goes through Struct itself.
    fields = s.fields
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, str):
            fields[k].string_value = v
        elif isinstance(v, bool):  # before the number case: bool is an int
            fields[k].bool_value = v
        elif isinstance(v, int | float):
            fields[k].number_value = v
        elif isinstance(v, dt.datetime):
            fields[k].string_value = v.isoformat()
        else:
            s[k] = v


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    _set_timestamp(ts, value)
    return ts


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _set_timestamp(ts: timestamp_pb2.Timestamp, value: dt.datetime) -> None:
    # Timestamp.FromDatetime's arithmetic (naive means UTC; nanos always >= 0) without its time tuple,
    # which cost more than the rest of a user's trait.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    ts.seconds = delta.days * 86400 + delta.seconds
    ts.nanos = delta.microseconds * 1000
    ts.SetInParent()  # present even at the epoch, as when copied in


def child_resource_type(resource_type_id: str) -> annotation_resource_tree_pb2.ChildResourceType:
    return annotation_resource_tree_pb2.ChildResourceType(resource_type_id=resource_type_id)


def skip_entitlements_and_grants() -> annotation_resource_tree_pb2.SkipEntitlementsAndGrants:
    return annotation_resource_tree_pb2.SkipEntitlementsAndGrants()


def skip_entitlements() -> annotation_resource_tree_pb2.SkipEntitlements:
    return annotation_resource_tree_pb2.SkipEntitlements()


def skip_grants() -> annotation_resource_tree_pb2.SkipGrants:
    return annotation_resource_tree_pb2.SkipGrants()


def expandable(
    entitlement_ids: Sequence[str], *, shallow: bool = False, resource_type_ids: Sequence[str] = ()
) -> annotation_grant_pb2.GrantExpandable:
    """Every principal holding one of `entitlement_ids` also holds the annotated grant's entitlement."""
    return annotation_grant_pb2.GrantExpandable(
        entitlement_ids=list(entitlement_ids), shallow=shallow, resource_type_ids=list(resource_type_ids)
    )


# --- resource types and resources ------------------------------------------------------------------


def resource_type(
    type_id: str,
    display_name: str,
    traits: Sequence[resource_pb2.ResourceType.Trait.ValueType] = (),
    *,
    description: str = "",
    annotations: Sequence[Message] = (),
) -> resource_pb2.ResourceType:
    return resource_pb2.ResourceType(
        id=type_id,
        display_name=display_name,
        traits=list(traits),
        description=description,
        annotations=pack_all(annotations),
    )


def resource_id(type_id: str, object_id: str) -> resource_pb2.ResourceId:
    return resource_pb2.ResourceId(resource_type=type_id, resource=object_id)


def _type_id(rtype: resource_pb2.ResourceType | str) -> str:
    return rtype if isinstance(rtype, str) else rtype.id


def new_resource(
    display_name: str,
    rtype: resource_pb2.ResourceType | str,
    object_id: str,
    *,
    parent: resource_pb2.ResourceId | None = None,
    description: str = "",
    annotations: Sequence[Message] = (),
) -> resource_pb2.Resource:
    res = resource_pb2.Resource(display_name=display_name, description=description)
    rid = res.id
    rid.resource_type = _type_id(rtype)  # assigning marks the id present, even when empty
    rid.resource = object_id
    _add_annotations(res.annotations, annotations)
    if parent is not None:
        res.parent_resource_id.CopyFrom(parent)
    return res


def user_trait(
    *,
    emails: Sequence[str | tuple[str, bool]] = (),
    status: annotation_trait_pb2.UserTrait.Status.Status.ValueType = UserStatus.STATUS_ENABLED,
    status_details: str = "",
    login: str = "",
    login_aliases: Sequence[str] = (),
    profile: Mapping[str, Any] | None = None,
    account_type: annotation_trait_pb2.UserTrait.AccountType.ValueType = AccountType.ACCOUNT_TYPE_HUMAN,
    mfa_enabled: bool | None = None,
    sso_enabled: bool | None = None,
    created_at: dt.datetime | None = None,
    last_login: dt.datetime | None = None,
    given_name: str = "",
    family_name: str = "",
    employee_ids: Sequence[str] = (),
) -> annotation_trait_pb2.UserTrait:
    """A UserTrait; the profile is always present (the baton CLI's CSV export needs it)."""
    # The profile is built apart and copied in, as before the builders were tuned: upb lays out a copied
    # map differently from one filled in place, and packed (non-deterministic) bytes follow that layout.
    trait = annotation_trait_pb2.UserTrait(
        profile=to_struct(profile) if profile else _EMPTY_STRUCT,
        account_type=account_type,
        login=login,
        login_aliases=login_aliases,
        employee_ids=employee_ids,
    )
    trait_status = trait.status  # always present, like the profile
    trait_status.status = status
    trait_status.details = status_details
    first = True
    for e in emails:
        address, primary = (e, first) if isinstance(e, str) else e
        if address:
            trait.emails.add(address=address, is_primary=primary)
            first = False
    if mfa_enabled is not None:
        trait.mfa_status.mfa_enabled = mfa_enabled
    if sso_enabled is not None:
        trait.sso_status.sso_enabled = sso_enabled
    if created_at is not None:
        _set_timestamp(trait.created_at, created_at)
    if last_login is not None:
        _set_timestamp(trait.last_login, last_login)
    if given_name or family_name:
        trait.structured_name.given_name = given_name
        trait.structured_name.family_name = family_name
    return trait


def user_resource(
    display_name: str,
    rtype: resource_pb2.ResourceType | str,
    object_id: str,
    trait: annotation_trait_pb2.UserTrait,
    *,
    parent: resource_pb2.ResourceId | None = None,
    description: str = "",
    annotations: Sequence[Message] = (),
) -> resource_pb2.Resource:
    return new_resource(
        display_name,
        rtype,
        object_id,
        parent=parent,
        description=description,
        annotations=[trait, *annotations],
    )


def group_resource(
    display_name: str,
    rtype: resource_pb2.ResourceType | str,
    object_id: str,
    *,
    profile: Mapping[str, Any] | None = None,
    parent: resource_pb2.ResourceId | None = None,
    description: str = "",
    annotations: Sequence[Message] = (),
) -> resource_pb2.Resource:
    trait = annotation_trait_pb2.GroupTrait(profile=to_struct(profile or {}))
    return new_resource(
        display_name,
        rtype,
        object_id,
        parent=parent,
        description=description,
        annotations=[trait, *annotations],
    )


def role_resource(
    display_name: str,
    rtype: resource_pb2.ResourceType | str,
    object_id: str,
    *,
    profile: Mapping[str, Any] | None = None,
    parent: resource_pb2.ResourceId | None = None,
    description: str = "",
    annotations: Sequence[Message] = (),
) -> resource_pb2.Resource:
    trait = annotation_trait_pb2.RoleTrait(profile=to_struct(profile or {}))
    return new_resource(
        display_name,
        rtype,
        object_id,
        parent=parent,
        description=description,
        annotations=[trait, *annotations],
    )


def app_resource(
    display_name: str,
    rtype: resource_pb2.ResourceType | str,
    object_id: str,
    *,
    profile: Mapping[str, Any] | None = None,
    help_url: str = "",
    parent: resource_pb2.ResourceId | None = None,
    description: str = "",
    annotations: Sequence[Message] = (),
) -> resource_pb2.Resource:
    trait = annotation_trait_pb2.AppTrait(profile=to_struct(profile or {}), help_url=help_url)
    return new_resource(
        display_name,
        rtype,
        object_id,
        parent=parent,
        description=description,
        annotations=[trait, *annotations],
    )


def secret_resource(
    display_name: str,
    rtype: resource_pb2.ResourceType | str,
    object_id: str,
    *,
    profile: Mapping[str, Any] | None = None,
    created_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    last_used_at: dt.datetime | None = None,
    created_by: resource_pb2.ResourceId | None = None,
    identity: resource_pb2.ResourceId | None = None,
    parent: resource_pb2.ResourceId | None = None,
    description: str = "",
    annotations: Sequence[Message] = (),
) -> resource_pb2.Resource:
    trait = annotation_trait_pb2.SecretTrait(profile=to_struct(profile or {}))
    if created_at is not None:
        trait.created_at.CopyFrom(timestamp(created_at))
    if expires_at is not None:
        trait.expires_at.CopyFrom(timestamp(expires_at))
    if last_used_at is not None:
        trait.last_used_at.CopyFrom(timestamp(last_used_at))
    if created_by is not None:
        trait.created_by_id.CopyFrom(created_by)
    if identity is not None:
        trait.identity_id.CopyFrom(identity)
    return new_resource(
        display_name,
        rtype,
        object_id,
        parent=parent,
        description=description,
        annotations=[trait, *annotations],
    )


# --- entitlements ----------------------------------------------------------------------------------


def entitlement_id(resource: resource_pb2.Resource | resource_pb2.ResourceId, slug: str) -> str:
    rid = resource if isinstance(resource, resource_pb2.ResourceId) else resource.id
    return f"{rid.resource_type}:{rid.resource}:{slug}"


def _entitlement(
    resource: resource_pb2.Resource,
    slug: str,
    purpose: entitlement_pb2.Entitlement.PurposeValue.ValueType,
    grantable_to: Sequence[resource_pb2.ResourceType],
    display_name: str | None,
    description: str,
    annotations: Sequence[Message],
) -> entitlement_pb2.Entitlement:
    return entitlement_pb2.Entitlement(
        resource=resource,
        id=entitlement_id(resource, slug),
        display_name=display_name if display_name is not None else slug,
        description=description,
        grantable_to=list(grantable_to),
        annotations=pack_all(annotations),
        purpose=purpose,
        slug=slug,
    )


def assignment_entitlement(
    resource: resource_pb2.Resource,
    slug: str,
    *,
    grantable_to: Sequence[resource_pb2.ResourceType] = (),
    display_name: str | None = None,
    description: str = "",
    annotations: Sequence[Message] = (),
) -> entitlement_pb2.Entitlement:
    """A membership-style entitlement (e.g. `group:eng:member`)."""
    return _entitlement(
        resource, slug, Purpose.PURPOSE_VALUE_ASSIGNMENT, grantable_to, display_name, description, annotations
    )


def permission_entitlement(
    resource: resource_pb2.Resource,
    slug: str,
    *,
    grantable_to: Sequence[resource_pb2.ResourceType] = (),
    display_name: str | None = None,
    description: str = "",
    annotations: Sequence[Message] = (),
) -> entitlement_pb2.Entitlement:
    """A permission-style entitlement (e.g. `space:ENG:view`)."""
    return _entitlement(
        resource, slug, Purpose.PURPOSE_VALUE_PERMISSION, grantable_to, display_name, description, annotations
    )


# --- grants ----------------------------------------------------------------------------------------


def grant_id(entitlement_id_: str, principal: resource_pb2.ResourceId) -> str:
    return f"{entitlement_id_}:{principal.resource_type}:{principal.resource}"


def new_grant(
    resource: resource_pb2.Resource,
    slug: str,
    principal: resource_pb2.Resource | resource_pb2.ResourceId,
    *,
    annotations: Sequence[Message] = (),
) -> grant_pb2.Grant:
    """A grant of `<resource>:<slug>` to `principal`, embedding the entitlement as {id, resource}.

    Pass `expandable([...])` in annotations for grants to groups whose members inherit the access.
    """
    rid = resource.id
    ent_id = f"{rid.resource_type}:{rid.resource}:{slug}"
    if isinstance(principal, resource_pb2.Resource):
        pid = principal.id
        grant = grant_pb2.Grant(id=f"{ent_id}:{pid.resource_type}:{pid.resource}")
        grant.principal.CopyFrom(principal)
    else:
        grant = grant_pb2.Grant(id=f"{ent_id}:{principal.resource_type}:{principal.resource}")
        grant.principal.id.CopyFrom(principal)
    entitlement = grant.entitlement
    entitlement.id = ent_id
    entitlement.resource.CopyFrom(resource)
    if annotations:
        _add_annotations(grant.annotations, annotations)
    return grant
