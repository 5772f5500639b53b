"""Account lifecycle: the `disable_user` / `enable_user` actions and user deletion.

The actions are global (no resource type) with the Go connector's names, argument (`user_id`) and result
(`success`), so automations written against it keep working. They call the v2 directory `suspend` /
`restore` endpoints (the v1 `suspend-access` / `restore-access` the Go connector calls stop after
2026-06-30) in every directory the account belongs to. Deleting a user is the user-management API's
lifecycle delete; an account Atlassian no longer knows counts as deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf.message import Message

from connector.apps.atlassian.client import AdminApiError, AtlassianClient
from connector.pb.c1.config.v1 import config_pb2
from connector.pb.c1.connector.v2 import action_pb2
from connector.sdk.errors import ConnectorError
from connector.sdk.interface import Action, ActionFailed

ORG_ADMIN_HINT = (
    "Atlassian refuses to suspend or restore organization admins; remove the account's org admin role "
    "in admin.atlassian.com first"
)
MANAGED_HINT = (
    "Atlassian deletes only managed accounts (on a domain this organization has verified) whose "
    "organization the API key belongs to"
)


def _schema(
    name: str, display: str, description: str, verb: str, kind: action_pb2.ActionType.ValueType
) -> action_pb2.BatonActionSchema:
    return action_pb2.BatonActionSchema(
        name=name,
        display_name=display,
        description=description,
        arguments=[
            config_pb2.Field(
                name="user_id",
                display_name="User ID",
                description=f"The Atlassian account ID to {verb}",
                is_required=True,
                string_field=config_pb2.StringField(),
            )
        ],
        return_types=[
            config_pb2.Field(name="success", display_name="Success", bool_field=config_pb2.BoolField())
        ],
        action_type=[action_pb2.ACTION_TYPE_ACCOUNT, kind],
    )


DISABLE_USER = _schema(
    "disable_user",
    "Disable User",
    "Suspend an Atlassian user's access to the organization",
    "disable",
    action_pb2.ACTION_TYPE_ACCOUNT_DISABLE,
)
ENABLE_USER = _schema(
    "enable_user",
    "Enable User",
    "Restore an Atlassian user's access to the organization",
    "enable",
    action_pb2.ACTION_TYPE_ACCOUNT_ENABLE,
)


class UserLifecycle:
    def __init__(self, client: AtlassianClient) -> None:
        self.client = client

    def actions(self) -> list[Action]:
        return [Action(DISABLE_USER, self._disable), Action(ENABLE_USER, self._enable)]

    async def _disable(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        return await self._set_suspended(str(args["user_id"]), suspended=True)

    async def _enable(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        return await self._set_suspended(str(args["user_id"]), suspended=False)

    async def _set_suspended(self, account_id: str, *, suspended: bool) -> Mapping[str, Any]:
        verb = "disable" if suspended else "enable"
        try:
            directories = await self.client.user_directory_ids(account_id)
            if not directories:
                await self._no_directory(account_id, verb)
            for directory in directories:
                await self.client.set_user_suspended(directory, account_id, suspended=suspended)
        except AdminApiError as err:
            coded: ConnectorError = err
            if err.http_status == 400:
                coded = ConnectorError(
                    grpc.StatusCode.FAILED_PRECONDITION, f"{err.message}. {ORG_ADMIN_HINT}", err.details
                )
            raise ActionFailed.wrap(coded, {"success": False}) from err
        except ConnectorError as err:
            raise ActionFailed.wrap(err, {"success": False}) from err
        return {"success": True}

    async def _no_directory(self, account_id: str, verb: str) -> None:
        """Not in any directory: unknown (NOT_FOUND from the lookup) or never joined (not_invited)."""
        user = await self.client.get_user(account_id)
        status = user.get("status") or "unknown"
        raise ConnectorError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"cannot {verb} user {account_id}: the account is not a member of any directory of the "
            f"organization (status {status}); there is no access to suspend or restore",
        )

    async def delete(self, account_id: str) -> list[Message]:
        if not account_id:
            raise ConnectorError(grpc.StatusCode.INVALID_ARGUMENT, "delete user needs an account id")
        try:
            await self.client.delete_account(account_id)
        except AdminApiError as err:
            if err.http_status == 404 and err.api_code == "accountNotFound":
                return []  # already deleted (or never existed): the wanted end state
            if err.http_status == 403:
                raise ConnectorError(err.code, f"{err.message}. {MANAGED_HINT}", err.details) from err
            raise
        return []
