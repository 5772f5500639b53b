"""Settings of baton-confluence-datacenter.

Flag and env names are the Go connector's (`--hostname`, `--access-token`, `--username`, `--password`,
BATON_*), so existing deployments keep their configuration; the TLS, concurrency and rate-limit options and
`--legacy-ids` are additions.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from connector.ops.settings import BatonSettings, SettingsError


def normalize_hostname(value: str) -> str:
    """`https://host[:port][/context]` without a trailing slash. The scheme is required: guessing https://
    for a server that speaks plain HTTP only fails later, with a TLS error that points elsewhere."""
    text = value.strip()
    if not text:
        raise ValueError("must be the URL of your Confluence server, e.g. https://confluence.example.com")
    if "://" not in text:
        raise ValueError(
            f"must start with https:// or http:// (e.g. https://{text.split('/')[0].rsplit('@')[-1]}, "
            "or http://... for a server without TLS)"
        )
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must start with http:// or https:// (got scheme {parts.scheme!r})")
    if "@" in parts.netloc:
        raise ValueError(
            "must not contain a user name or password: use --username / --password, "
            "or --access-token, instead"
        )
    if not parts.hostname:
        raise ValueError("must include a host name, e.g. https://confluence.example.com")
    if parts.query or parts.fragment:
        raise ValueError("must not contain a query string or fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class ConfluenceSettings(BatonSettings):
    hostname: str = Field(
        description="The hostname (URL) for your Confluence Data Center, with the context path if any "
        "(e.g. https://wiki.example.com or http://host:8090/confluence)"
    )
    access_token: SecretStr | None = Field(
        None, description="The personal access token for your Confluence Data Center account"
    )
    username: str = Field("", description="The username for your Confluence Data Center account")
    password: SecretStr | None = Field(
        None, description="The password for your Confluence Data Center account"
    )
    ca_file: str | None = Field(
        None, description="Extra PEM CA bundle trusted for the Confluence server (for a private CA)"
    )
    insecure_skip_verify: bool = Field(
        False, description="Do not verify the Confluence server's TLS certificate (insecure, logged loudly)"
    )
    request_concurrency: int = Field(
        8, ge=1, le=64, description="Maximum number of concurrent requests to Confluence"
    )
    legacy_ids: bool = Field(
        False,
        description="Write the ids of the January 2025 Go connector (users by username, space permissions "
        "view, add-comment, ...) instead of the newest Go connector's (users by user key, read-space, "
        "create-page, ...): for customers coming from the older connector",
    )
    rate_limit: float | None = Field(
        None,
        gt=0,
        description="Maximum requests per second to Confluence (default: follow the server's "
        "X-RateLimit headers when it has rate limiting enabled)",
    )

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return normalize_hostname(value)

    @model_validator(mode="after")
    def _credentials(self) -> ConfluenceSettings:
        token = self.access_token.get_secret_value() if self.access_token else ""
        password = self.password.get_secret_value() if self.password else ""
        if password and not self.username and not token:
            raise SettingsError(
                "missing --username / BATON_USERNAME: required with --password / BATON_PASSWORD"
            )
        if not token and not self.username:
            raise SettingsError(
                "missing credentials: set --access-token / BATON_ACCESS_TOKEN (a personal access token), "
                "or --username / BATON_USERNAME with --password / BATON_PASSWORD"
            )
        if self.username and not password and not token:
            raise SettingsError(
                "missing --password / BATON_PASSWORD: required with --username / BATON_USERNAME"
            )
        if self.ca_file and self.insecure_skip_verify:
            raise SettingsError(
                "conflicting --ca-file / BATON_CA_FILE and --insecure-skip-verify / "
                "BATON_INSECURE_SKIP_VERIFY: set only one of them"
            )
        return self

    @property
    def uses_token(self) -> bool:
        return bool(self.access_token and self.access_token.get_secret_value())
