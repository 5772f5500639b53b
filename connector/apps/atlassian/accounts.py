"""Account creation: invitation by email (v2 invite), or SCIM when a SCIM directory is configured.

Atlassian accounts never get a password from us (people sign in with their Atlassian account or SSO),
so the only credential option is "no password".

The schema carries the fields of ConductorOne's Go connector (`userName`, `email`, `givenName`,
`familyName`, `displayName`), so that account requests built for it work unchanged, and this connector's
own optional fields (`display_name`, and for invitations `workspace`, `role`, `groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format

from connector.apps.atlassian.client import R_USERS_SEARCH, AdminApiError, Json
from connector.apps.atlassian.errors import provisioning_error
from connector.apps.atlassian.resources import USER, missing_field, user_resource
from connector.apps.atlassian.shared import Shared, log
from connector.pb.c1.connector.v2 import connector_pb2, resource_pb2
from connector.sdk.errors import invalid_argument
from connector.sdk.interface import AccountCredentials, AccountManager, CreateAccountResult

Schema = connector_pb2.ConnectorAccountCreationSchema
CredOpt = connector_pb2.CapabilityDetailCredentialOption
SCIM_USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
DEFAULT_ROLE = "atlassian/user"


def _string(profile: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = profile.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _strings(profile: dict[str, Any], key: str) -> list[str]:
    value = profile.get(key)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return []


def _scim_account_id(body: Any) -> str:
    """The Atlassian account id from a SCIM user's Atlassian extension
    (`urn:scim:schemas:extension:atlassian-external:1.0`; any version of it), when present."""
    if not isinstance(body, dict):
        return ""
    for key, value in body.items():
        if "atlassian-external" in key and isinstance(value, dict):
            found = value.get("atlassianAccountId")
            if isinstance(found, str):
                return found
    return ""


def _account_id(user: Json) -> str:
    """The accountId of a user found by a search; a record without one is a malformed answer."""
    account_id = user.get("accountId")
    if not isinstance(account_id, str) or not account_id:
        raise missing_field(R_USERS_SEARCH, "an account", "accountId")
    return account_id


def _text_field(
    order: int,
    name: str,
    description: str,
    *,
    required: bool = False,
    placeholder: str = "",
    default: str = "",
) -> Schema.Field:
    return Schema.Field(
        display_name=name,
        required=required,
        description=description,
        placeholder=placeholder,
        order=order,
        string_field=Schema.StringField(default_value=default) if default else Schema.StringField(),
    )


class AtlassianAccountManager(AccountManager):
    resource_type_id = USER.id

    def __init__(self, shared: Shared, *, use_scim: bool) -> None:
        self.shared = shared
        self.use_scim = use_scim

    def credential_options(self) -> Sequence[connector_pb2.CapabilityDetailCredentialOption.ValueType]:
        return [CredOpt.CAPABILITY_DETAIL_CREDENTIAL_OPTION_NO_PASSWORD]

    def account_creation_schema(self) -> connector_pb2.ConnectorAccountCreationSchema:
        schema = Schema()
        fields = schema.field_map
        fields["userName"].CopyFrom(
            _text_field(
                1,
                "Username",
                "Username of the new account: its email address (SCIM userName; defaults to the email)",
                required=True,
                placeholder="user@example.com",
            )
        )
        fields["email"].CopyFrom(
            _text_field(
                2,
                "Email",
                "Email address of the new account",
                required=True,
                placeholder="jane.doe@example.com",
            )
        )
        fields["givenName"].CopyFrom(_text_field(3, "Given name", "First name (SCIM)", placeholder="Jane"))
        fields["familyName"].CopyFrom(_text_field(4, "Family name", "Last name (SCIM)", placeholder="Doe"))
        fields["displayName"].CopyFrom(
            _text_field(
                5,
                "Display name",
                "Full name (used by SCIM; invitations take the name from the Atlassian account)",
                placeholder="Jane Doe",
            )
        )
        fields["display_name"].CopyFrom(
            _text_field(6, "Display name (alternative)", "Same as displayName", placeholder="Jane Doe")
        )
        if not self.use_scim:
            fields["workspace"].CopyFrom(
                _text_field(
                    7,
                    "Initial workspace",
                    "Workspace id (ARI) to give the invited user a role on",
                    placeholder="ari:cloud:jira-software::site/<cloudId>",
                )
            )
            fields["role"].CopyFrom(
                _text_field(
                    8,
                    "Initial role",
                    "Role on the initial workspace",
                    placeholder=DEFAULT_ROLE,
                    default=DEFAULT_ROLE,
                )
            )
            fields["groups"].CopyFrom(
                Schema.Field(
                    display_name="Groups",
                    required=False,
                    description="Group ids to add the invited user to",
                    order=9,
                    string_list_field=Schema.StringListField(),
                )
            )
        return schema

    async def create_account(
        self, info: resource_pb2.AccountInfo, credentials: AccountCredentials
    ) -> CreateAccountResult:
        profile = json_format.MessageToDict(info.profile)
        email = (
            _string(profile, "email") or next((e.address for e in info.emails if e.address), "") or info.login
        )
        email = (email or _string(profile, "userName")).strip()
        if "@" not in email or email.startswith("@") or email.endswith("@"):
            raise invalid_argument(f"create account needs an email address in 'email' (got {email!r})")
        if self.use_scim:
            return await self._scim(email, profile)
        return await self._invite(email, profile)

    async def _find(self, email: str) -> Json | None:
        found = await self.shared.client.search_users({"emails": [email], "limit": 1})
        wanted = email.lower()
        for user in found:
            if str(user.get("email", "")).lower() == wanted:
                return user
        return None

    async def _resource(self, account_id: str, email: str) -> resource_pb2.Resource:
        try:
            user = await self.shared.client.get_user(account_id)
        except AdminApiError as err:
            if err.http_status != 404:
                raise
            user = {}
        if not user.get("accountId"):
            # Not readable yet: describe what we know rather than fail a creation that happened.
            user = {"accountId": account_id, "email": email, "status": "active", "accountType": "atlassian"}
        return user_resource(user)

    async def _invite(self, email: str, profile: dict[str, Any]) -> CreateAccountResult:
        existing = await self._find(email)
        if existing is not None:
            return CreateAccountResult("already_exists", resource=user_resource(existing))
        rules: list[Json] = []
        workspace = _string(profile, "workspace")
        if workspace:
            rules.append({"resource": workspace, "role": _string(profile, "role") or DEFAULT_ROLE})
        groups = _strings(profile, "groups")
        try:
            answer = await self.shared.client.invite(email, rules, groups)
        except AdminApiError as err:
            raise provisioning_error(err, endpoint="invite") from err
        data = answer.get("data")
        item: Json = next((d for d in data if isinstance(d, dict)), {}) if isinstance(data, list) else {}
        account_id = item.get("id")
        if not isinstance(account_id, str) or not account_id:
            found = await self._find(email)
            if found is None:
                return CreateAccountResult(
                    "in_progress", message="invitation sent; the account is not visible yet"
                )
            account_id = _account_id(found)
        problems = []
        results = item.get("results")
        for result in results if isinstance(results, list) else []:
            if not isinstance(result, dict):
                continue
            for part in ("roleAssignmentResult", "groupAssignmentResult"):
                for r in result.get(part) or []:
                    if isinstance(r, dict) and r.get("status") == "ERROR":
                        target = r.get("resource") or r.get("group")
                        problems.append(f"{target}: {r.get('statusReason', 'error')}")
        if problems:
            # The account exists; a role or group that failed is reported, and C1 can grant it later.
            log.warning("invite_partial", account_id=account_id, problems="; ".join(problems))
        return CreateAccountResult("success", resource=await self._resource(account_id, email))

    async def _scim(self, email: str, profile: dict[str, Any]) -> CreateAccountResult:
        user_name = _string(profile, "userName") or email
        given = _string(profile, "givenName", "given_name")
        family = _string(profile, "familyName", "family_name")
        display = _string(profile, "displayName", "display_name", "name")
        if not (given or family) and display:
            given, _, family = display.partition(" ")
        body: Json = {
            "schemas": [SCIM_USER_SCHEMA],
            "userName": user_name,
            "emails": [{"value": email, "type": "work", "primary": True}],
            "displayName": display or " ".join(p for p in (given, family) if p) or email,
            "active": True,
        }
        if given or family:
            body["name"] = {k: v for k, v in (("givenName", given), ("familyName", family)) if v}
        status, answer = await self.shared.client.scim_create_user(body)
        account_id = _scim_account_id(answer) if status != 409 else ""
        user: Json | None = None
        if not account_id:
            user = await self._find(email)
            account_id = _account_id(user) if user else ""
        if not account_id and status != 409 and isinstance(answer, dict):
            # As the Go connector: without the Atlassian extension the SCIM id is all there is.
            scim_id = answer.get("id")
            account_id = scim_id if isinstance(scim_id, str) else ""
        if not account_id:
            return CreateAccountResult(
                "in_progress", message="SCIM accepted the user; the Atlassian account is not visible yet"
            )
        resource = user_resource(user) if user else await self._resource(account_id, email)
        # 409: the directory already has this user; an existing account is linked, not duplicated.
        return CreateAccountResult("already_exists" if status == 409 else "success", resource=resource)
