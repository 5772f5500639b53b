"""Provisioning failures the admin API documents, turned into errors a ConductorOne admin can act on.

The answers below are not transient and not the caller's fault: the organization (or Atlassian) has to
change something first, so they become FAILED_PRECONDITION with the Atlassian code and title quoted and a
hint naming who can fix it. Everything else keeps the status-based mapping of `client.admin_error`.
"""

from __future__ import annotations

import grpc

from connector.apps.atlassian.client import AdminApiError
from connector.sdk.errors import ConnectorError

SUPPORT = "ask Atlassian Support (support.atlassian.com) for help"

# What C1's set-up guide calls the endpoints Support must enable per organization.
ENDPOINT_NAMES = {
    "assign": "Grant User Access (POST /v1/orgs/{orgId}/users/{userId}/roles/assign)",
    "revoke": "Revoke User Access (POST /v1/orgs/{orgId}/users/{userId}/roles/revoke)",
    "invite": "Invite User to Org (POST /v2/orgs/{orgId}/users/invite)",
}


def precondition(err: AdminApiError, hint: str) -> ConnectorError:
    return ConnectorError(grpc.StatusCode.FAILED_PRECONDITION, f"{err.message}. {hint}", err.details)


def provisioning_error(
    err: AdminApiError, *, endpoint: str = "", resource_id: str = "", role: str = ""
) -> ConnectorError:
    """Map a failed write. `endpoint` is "assign", "revoke" or "invite" for the Support-gated calls."""
    code = err.api_code
    if err.http_status == 403 and endpoint in ENDPOINT_NAMES and code != "ADMIN-403-5":
        return precondition(
            err,
            f"This endpoint is not enabled for the organization: {ENDPOINT_NAMES[endpoint]} must be enabled "
            f"by Atlassian; {SUPPORT} and ask them to enable it",
        )
    if code in ("ADMIN-UAM-400-5", "ADMIN-400-4"):
        if ":jira-admin:" in resource_id:
            return precondition(
                err,
                f"Atlassian's role-assignment API rejects the jira-admin workspace id {resource_id} that its "
                "own workspaces API returns (known Atlassian issue ID-8887); assign the role in "
                f"admin.atlassian.com or {SUPPORT}",
            )
        return precondition(
            err, f"Atlassian does not accept workspace {resource_id} for role assignment; {SUPPORT}"
        )
    if code == "ADMIN-UAM-400-3":
        return precondition(
            err,
            f"Role {role} is not available on workspace {resource_id} (available roles differ by product "
            f"and plan); pick another role or {SUPPORT}",
        )
    if code == "ADMIN-UAM-400-2":
        return precondition(err, "The account is not active; restore it first, or " + SUPPORT)
    if code == "ADMIN-UAM-400-4":
        return precondition(err, "The product is not licensed for this organization; " + SUPPORT)
    if code in ("ADMIN-UAM-409-3", "ADMIN-409-3"):
        return precondition(
            err, "The product's user limit is reached; free a seat or raise the limit, or " + SUPPORT
        )
    if code == "ADMIN-UAM-402-1" or err.http_status == 402:
        return precondition(
            err,
            "Inviting users needs at least one paid Atlassian subscription in the organization; " + SUPPORT,
        )
    if code == "ADMIN-403-5":
        return precondition(
            err,
            "Atlassian does not allow this group to be managed with the API (groups synced from an identity "
            "provider are read-only); change it in the identity provider, or " + SUPPORT,
        )
    return err
