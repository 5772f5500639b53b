"""Resource types of the Atlassian connector and the builders that turn admin-API JSON into resources.

Ids are the upstream's own and equal to those of ConductorOne's current Go connector: `user` = accountId,
`group` = group id, `workspace` = the workspace id exactly as the workspaces API returns it (an ARI such as
`ari:cloud:jira-software::site/<cloudId>`), `organization` = the organization id, `api_token` = token id.
Role entitlements have the slug `role:<Atlassian role id>`, so ids read `workspace:<ARI>:role:atlassian/user`
and `organization:<orgId>:role:atlassian/org-admin` (colons are not escaped, as in every baton connector).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from connector.pb.c1.connector.v2 import annotation_trait_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import UpstreamError

Json = dict[str, Any]
Trait = resource_pb2.ResourceType.Trait
UserStatus = annotation_trait_pb2.UserTrait.Status
AccountType = annotation_trait_pb2.UserTrait.AccountType

USER = model.resource_type(
    "user",
    "User",
    [Trait.TRAIT_USER],
    description="Atlassian accounts in the organization's directory (and managed accounts)",
    # Accounts hold no entitlements of their own: skipping the per-account calls saves two calls per user.
    annotations=[model.skip_entitlements_and_grants()],
)
GROUP = model.resource_type("group", "Group", [Trait.TRAIT_GROUP], description="Directory groups")
WORKSPACE = model.resource_type(
    "workspace",
    "Workspace",
    [Trait.TRAIT_APP],
    description="Product instances (Jira, Confluence, ...); entitlements are product roles",
)
ORGANIZATION = model.resource_type(
    "organization",
    "Organization",
    description="The Atlassian organization; entitlements are the organization-level (platform) roles",
)
API_TOKEN = model.resource_type(
    "api_token",
    "API Token",
    [Trait.TRAIT_SECRET],
    description="User API tokens of managed accounts",
    annotations=[model.skip_entitlements_and_grants()],
)

MEMBER = "member"
ROLE_PREFIX = "role:"

# Every workspace offers these roles, in this order, as ConductorOne's Go connector does: ids of
# entitlements that nobody holds yet must exist too, so that they can be requested.
FIXED_ROLES: tuple[str, ...] = tuple(
    f"atlassian/{r}"
    for r in (
        "user",
        "user-access-admin",
        "admin",
        "guest",
        "contributor",
        "customer",
        "basic",
        "stakeholder",
        "site-admin",
        "org-admin",
    )
)
# Organization-level roles (role assignments owned by `platform`).
ORG_ROLES: tuple[str, ...] = (
    "atlassian/org-admin",
    "atlassian/site-admin",
    "atlassian/user-access-admin",
    "atlassian/ai-access",
)

# Roles each product is known to offer, as Atlassian spells them (spec A.4.5). The workspaces API does not
# list the roles of a workspace: this table says which roles are worth asking about (roles.py searches the
# holders of these at once and checks with one count whether anyone holds the other FIXED_ROLES).
PRODUCT_ROLES: dict[str, tuple[str, ...]] = {
    "jira-software": ("atlassian/user", "atlassian/admin", "atlassian/user-access-admin", "atlassian/guest"),
    "jira-core": ("atlassian/user", "atlassian/admin", "atlassian/user-access-admin"),
    "jira-work-management": ("atlassian/user", "atlassian/admin", "atlassian/user-access-admin"),
    "jira-servicedesk": (
        "atlassian/user",
        "atlassian/admin",
        "atlassian/user-access-admin",
        "atlassian/customer",
        "atlassian/stakeholder",
    ),
    "jira-product-discovery": ("atlassian/user", "atlassian/admin", "atlassian/contributor"),
    "jira-admin": ("atlassian/admin",),
    "confluence": ("atlassian/user", "atlassian/admin", "atlassian/user-access-admin", "atlassian/guest"),
    "loom": ("atlassian/user", "atlassian/admin", "atlassian/basic"),
    "trello": ("atlassian/user", "atlassian/admin"),
}
DEFAULT_ROLES: tuple[str, ...] = ("atlassian/user", "atlassian/admin")

ROLE_LABELS: dict[str, str] = {
    "atlassian/user": "User",
    "atlassian/admin": "Product admin",
    "atlassian/user-access-admin": "User access admin",
    "atlassian/guest": "Guest",
    "atlassian/customer": "Customer",
    "atlassian/stakeholder": "Stakeholder",
    "atlassian/contributor": "Contributor",
    "atlassian/basic": "Basic",
    "atlassian/viewer": "Viewer",
    "atlassian/site-admin": "Site admin",
    "atlassian/org-admin": "Organization admin",
    "atlassian/ai-access": "AI access",
}

ResourceStatus = resource_pb2.Status.ResourceStatus

# Composite v2 status -> baton status, as the Go connector maps it: an account marked for deletion is
# still restorable during Atlassian's 14-day grace period, so it is disabled, not deleted.
_DISABLED = ("suspended", "deactivated", "not_invited", "for_deletion")
_STATUS: dict[str, int] = {
    "active": UserStatus.STATUS_ENABLED,
    **dict.fromkeys(_DISABLED, UserStatus.STATUS_DISABLED),
}
_RESOURCE_STATUS: dict[str, int] = {
    "active": ResourceStatus.RESOURCE_STATUS_ENABLED,
    **dict.fromkeys(_DISABLED, ResourceStatus.RESOURCE_STATUS_DISABLED),
}


def roles_for(type_key: str) -> tuple[str, ...]:
    """The roles a product is known to offer (a subset of FIXED_ROLES for every product in the table)."""
    return PRODUCT_ROLES.get(type_key, DEFAULT_ROLES)


def role_slug(role: str) -> str:
    return ROLE_PREFIX + role


def role_of_slug(slug: str) -> str:
    """The Atlassian role of a `role:<role>` slug; a bare role id (ids before 2026-12) is taken as is."""
    return slug[len(ROLE_PREFIX) :] if slug.startswith(ROLE_PREFIX) else slug


def missing_field(route: str, what: str, field: str, method: str = "POST") -> UpstreamError:
    """A record the API sent without the field that names it: the answer is malformed, not our data."""
    return UpstreamError(
        "atlassian", method, route, 200, f"malformed answer: {what} without its {field!r} field"
    )


def role_label(role: str) -> str:
    return ROLE_LABELS.get(role, role.rpartition("/")[2].replace("-", " ").capitalize())


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def user_status(user: Json) -> str:
    """The composite status, derived from account/membership status when `status` is missing."""
    status = _str(user.get("status"))
    if status:
        return status
    if user.get("forDeletion"):
        return "for_deletion"
    if _str(user.get("accountStatus")) in ("inactive", "closed"):
        return "deactivated"
    membership = _str(user.get("membershipStatus"))
    if membership == "no_membership":
        return "not_invited"
    if membership == "suspended":
        return "suspended"
    return "active"


def last_active(user: Json) -> dt.datetime | None:
    """The latest product activity (productAccess[].lastActiveTimestamp), if the API reported any."""
    latest: dt.datetime | None = None
    for access in user.get("productAccess") or []:
        if isinstance(access, dict):
            when = parse_time(access.get("lastActiveTimestamp"))
            if when is not None and (latest is None or when > latest):
                latest = when
    return latest


def user_resource(user: Json, route: str = "") -> resource_pb2.Resource:
    account_id = _str(user.get("accountId"))
    if not account_id:
        raise missing_field(route or "users", "an account", "accountId")
    email = _str(user.get("email"))
    status = user_status(user)
    account_type = _str(user.get("accountType"))
    seen = last_active(user)
    platform_roles = [r for r in user.get("platformRoles") or [] if isinstance(r, str)]
    profile: dict[str, Any] = {
        "account_id": account_id,
        "account_type": account_type,
        "status": status,
        "account_status": user.get("accountStatus"),
        "membership_status": user.get("membershipStatus"),
        "email": email or None,
        "email_verified": user.get("emailVerified"),
        "name": user.get("name"),
        "username": user.get("name"),  # the Go connector's key for the same value
        "nickname": user.get("nickname"),
        "claim_status": user.get("claimStatus"),
        "management_source": user.get("managementSource"),
        "mfa_enabled": user.get("mfaEnabled"),
        "job_title": user.get("jobTitle"),
        "department": user.get("department"),
        "organization": user.get("organization"),
        "location": user.get("location"),
        "time_zone": user.get("timeZone"),
        "added_to_org": user.get("addedToOrg"),
        "deactivated_on": user.get("deactivatedOn"),
        "platform_roles": ",".join(platform_roles) if platform_roles else None,
        "last_active": seen.isoformat() if seen else None,
    }
    trait = model.user_trait(
        emails=[email] if email else [],
        status=_STATUS.get(status, UserStatus.STATUS_UNSPECIFIED),  # type: ignore[arg-type]
        status_details=status,
        login=email,
        profile=profile,
        account_type=(
            AccountType.ACCOUNT_TYPE_SERVICE if account_type == "app" else AccountType.ACCOUNT_TYPE_HUMAN
        ),
        mfa_enabled=user.get("mfaEnabled") if isinstance(user.get("mfaEnabled"), bool) else None,
        last_login=seen,
    )
    display = _str(user.get("name")) or _str(user.get("nickname")) or email or account_id
    res = model.user_resource(display, USER, account_id, trait)
    res.status.status = _RESOURCE_STATUS.get(status, ResourceStatus.RESOURCE_STATUS_UNSPECIFIED)  # type: ignore[assignment]
    res.status.details = status
    return res


def group_read_only(group: Json) -> bool:
    """IdP-synced groups (or any group Atlassian says is not modifiable) cannot change membership here."""
    access = group.get("managementAccess")
    modifiable = access.get("modifiable") if isinstance(access, dict) else None
    return bool(group.get("externalSynced")) or modifiable is False or group.get("managedBy") == "external"


def group_resource(group: Json, route: str = "") -> resource_pb2.Resource:
    group_id = _str(group.get("id"))
    if not group_id:
        raise missing_field(route or "groups", "a group", "id")
    counts = group.get("counts") if isinstance(group.get("counts"), dict) else {}
    read_only = group_read_only(group)
    profile = {
        "group_id": group_id,
        "name": group.get("name"),
        "description": group.get("description"),
        "directory_id": group.get("directoryId"),
        "managed_by": group.get("managedBy"),
        "external_synced": bool(group.get("externalSynced")),
        "read_only": read_only,
        "user_count": counts.get("users") if counts else None,
    }
    description = _str(group.get("description"))
    if read_only:
        note = "Synced from an identity provider: read-only in Atlassian"
        description = f"{description} ({note})" if description else note
    return model.group_resource(
        _str(group.get("name")) or group_id, GROUP, group_id, profile=profile, description=description
    )


def cloud_id(ari: str) -> str:
    _, sep, tail = ari.rpartition("/")
    return tail if sep else ""


def workspace_resource(ws: Json, route: str = "") -> resource_pb2.Resource:
    ws_id = _str(ws.get("id"))
    if not ws_id:
        raise missing_field(route or "workspaces", "a workspace", "id")
    attrs = ws.get("attributes") if isinstance(ws.get("attributes"), dict) else {}
    assert isinstance(attrs, dict)
    type_key = _str(attrs.get("typeKey")) or _str(attrs.get("type"))
    host = _str(attrs.get("hostUrl"))
    status = _str(attrs.get("status"))
    profile = {
        "workspace_id": ws_id,
        "name": attrs.get("name"),
        "type_key": type_key,
        "status": status,
        "host_url": host or None,
        "cloud_id": cloud_id(ws_id) or None,
        "sandbox": isinstance(attrs.get("sandbox"), dict),
        "usage": attrs.get("usage"),
        "capacity": attrs.get("capacity"),
        "created_at": attrs.get("createdAt"),
    }
    description = " ".join(p for p in (type_key, f"on {host}" if host else "", f"({status})") if p)
    return model.app_resource(
        _str(attrs.get("name")) or ws_id,
        WORKSPACE,
        ws_id,
        profile=profile,
        help_url=host,
        description=description,
    )


def organization_resource(org: Json, org_id: str) -> resource_pb2.Resource:
    """The organization from `GET v1/orgs/{org}`; its id is the configured one the grants name."""
    attrs = org.get("attributes") if isinstance(org.get("attributes"), dict) else {}
    assert isinstance(attrs, dict)
    name = _str(attrs.get("name"))
    return model.new_resource(name or org_id, ORGANIZATION, org_id, description="Atlassian organization")


def profile_of(resource: resource_pb2.Resource, kind: type[Any]) -> dict[str, Any]:
    """The profile Struct of a resource's trait annotation as a dict ({} when absent)."""
    trait = model.find_annotation(resource.annotations, kind)
    if trait is None:
        return {}
    from google.protobuf import json_format

    return dict(json_format.MessageToDict(trait.profile))


def token_resource(token: Json) -> resource_pb2.Resource:
    token_id = _str(token.get("id"))
    user = token.get("user") if isinstance(token.get("user"), dict) else {}
    assert isinstance(user, dict)
    owner_id = _str(user.get("id"))
    owner = model.resource_id(USER.id, owner_id) if owner_id else None
    label = _str(token.get("label")) or token_id
    who = _str(user.get("name")) or _str(user.get("email")) or owner_id
    profile = {
        "token_id": token_id,
        "label": label,
        "status": token.get("status"),
        "account_id": owner_id or None,
        "user_name": user.get("name"),
        "user_email": user.get("email"),
    }
    return model.secret_resource(
        f"{label} ({who})" if who else label,
        API_TOKEN,
        token_id,
        profile=profile,
        created_at=parse_time(token.get("createdAt")),
        expires_at=parse_time(token.get("expiresAt")),
        last_used_at=parse_time(token.get("lastActiveAt")),
        created_by=owner,
        identity=owner,
        description=f"status {token.get('status')}" if token.get("status") else "",
    )


def ids(items: Iterable[Json], key: str) -> list[str]:
    return [v for v in (i.get(key) for i in items) if isinstance(v, str) and v]
