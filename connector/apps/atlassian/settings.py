"""Configuration of baton-atlassian: the organization API key and ID, plus optional SCIM credentials.

Both spellings in use are accepted: those of ConductorOne's current Go connector (BATON_ACCESS_TOKEN,
BATON_ORGANIZATION_ID, BATON_BASE_URL) and those of its set-up guide (BATON_API_TOKEN, BATON_ORG), each secret
also as `_FILE`; `--organization` / BATON_ORGANIZATION (the 2025 Go connector's name) too. Two spellings of
one setting that disagree are a configuration error naming both.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from connector.ops.settings import BatonSettings, SettingsError

DEFAULT_API_BASE_URL = "https://api.atlassian.com"


def _check_url(value: str, flag: str) -> str:
    text = value.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL such as {DEFAULT_API_BASE_URL} (for {flag})")
    if parts.query or parts.fragment:
        raise ValueError(f"must not carry a query or fragment (for {flag})")
    if "@" in parts.netloc:
        raise ValueError(f"must not contain a user name or password (for {flag}): use --api-token")
    return text


class AtlassianSettings(BatonSettings):
    api_token: SecretStr = Field(
        validation_alias=AliasChoices("api_token", "access_token"),
        description=(
            "Atlassian organization API key (admin.atlassian.com > Settings > API keys, "
            "'API key without scopes'; created by an Org admin)"
        ),
    )
    org: str = Field(
        validation_alias=AliasChoices("org", "organization_id", "organization"),
        description="Atlassian organization ID (the id after /o/ in admin.atlassian.com URLs)",
    )
    api_base_url: str = Field(
        DEFAULT_API_BASE_URL,
        validation_alias=AliasChoices("api_base_url", "base_url"),
        description="Base URL of the Atlassian API; /admin/... and /users/... are appended "
        "(change only for a proxy or the sandbox)",
    )
    scim_token: SecretStr | None = Field(
        None,
        description="SCIM API key of an identity-provider directory (Security > Identity providers); "
        "with --scim-base-url, accounts are created through SCIM instead of invitations",
    )
    scim_base_url: str | None = Field(
        None,
        description="SCIM base URL of that directory, e.g. https://api.atlassian.com/scim/directory/<id>",
    )
    api_concurrency: int = Field(
        8, ge=1, le=64, description="Maximum concurrent requests to the Atlassian API"
    )
    api_rate_limit: float | None = Field(
        None,
        gt=0,
        description="Client-side cap on requests per second to the Atlassian API (unset = only obey 429s)",
    )

    verify_direct_roles: bool = Field(
        True,
        description="Check, with one request per account, whether members of a group that holds a "
        "workspace role also hold it directly, so that such direct assignments are synced as direct "
        "grants; false skips the check (they then show only the group's derived grant)",
    )

    @field_validator("org")
    @classmethod
    def _org_not_blank(cls, value: str) -> str:
        text = value.strip()
        if not text:
            raise ValueError("must not be empty")
        if "/" in text or " " in text:
            raise ValueError("must be the organization ID only (no URL, no spaces)")
        return text

    @field_validator("api_base_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return _check_url(value, "--api-base-url")

    @field_validator("scim_base_url")
    @classmethod
    def _scim_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _check_url(value, "--scim-base-url")

    @model_validator(mode="after")
    def _scim_pair(self) -> AtlassianSettings:
        has_token = self.scim_token is not None and bool(self.scim_token.get_secret_value())
        if has_token != (self.scim_base_url is not None):
            raise SettingsError(
                "--scim-token / BATON_SCIM_TOKEN and --scim-base-url / BATON_SCIM_BASE_URL "
                "must be set together (or neither, to create accounts by invitation)"
            )
        return self

    @property
    def scim_enabled(self) -> bool:
        return self.scim_base_url is not None
