"""Resource types of the Atlassian connector and the builders that turn admin-API JSON into resources.

Ids are the upstream's own: `user` = accountId, `group` = group id, `workspace` = the workspace id exactly as
the workspaces API returns it (an ARI such as `ari:cloud:jira-software::site/<cloudId>`), `api_token` = token
id. Entitlement slugs of workspaces are Atlassian role ids (`atlassian/user`), so an entitlement id reads
`workspace:<ARI>:atlassian/user` (colons are not escaped, as in every baton connector).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from connector.pb.c1.connector.v2 import annotation_trait_pb2, resource_pb2
from connector.sdk import model

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
API_TOKEN = model.resource_type(
    "api_token",
    "API Token",
    [Trait.TRAIT_SECRET],
    description="User API tokens of managed accounts",
    annotations=[model.skip_entitlements_and_grants()],
)

MEMBER = "member"

# Roles each product offers, as Atlassian spells them (spec A.4.5). The workspaces API does not list the
# roles of a workspace: this table gives the roles a workspace offers even when nobody holds them yet
# (unknown products get the two every product has); roles.py adds any other role found in the data.
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
}

# Composite v2 status -> baton status (the mapping; not_invited = no directory membership).
_STATUS: dict[str, int] = {
    "active": UserStatus.STATUS_ENABLED,
    "suspended": UserStatus.STATUS_DISABLED,
    "deactivated": UserStatus.STATUS_DISABLED,
    "not_invited": UserStatus.STATUS_DISABLED,
    "for_deletion": UserStatus.STATUS_DELETED,
}


def roles_for(type_key: str) -> tuple[str, ...]:
    return PRODUCT_ROLES.get(type_key, DEFAULT_ROLES)


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


def user_resource(user: Json) -> resource_pb2.Resource:
    account_id = _str(user.get("accountId"))
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
    return model.user_resource(display, USER, account_id, trait)


def group_read_only(group: Json) -> bool:
    """IdP-synced groups (or any group Atlassian says is not modifiable) cannot change membership here."""
    access = group.get("managementAccess")
    modifiable = access.get("modifiable") if isinstance(access, dict) else None
    return bool(group.get("externalSynced")) or modifiable is False or group.get("managedBy") == "external"


def group_resource(group: Json) -> resource_pb2.Resource:
    group_id = _str(group.get("id"))
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


def workspace_resource(ws: Json) -> resource_pb2.Resource:
    ws_id = _str(ws.get("id"))
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
