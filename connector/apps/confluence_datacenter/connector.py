"""The Confluence Data Center connector: metadata, validation, syncers, account creation."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import httpx
from google.protobuf.message import Message

from connector.apps.confluence_datacenter.accounts import ConfluenceAccountManager
from connector.apps.confluence_datacenter.client import (
    AnonymousAnswer,
    ConfluenceClient,
    PasswordAuth,
    PatAuth,
)
from connector.apps.confluence_datacenter.common import USER, SyncState
from connector.apps.confluence_datacenter.groups import GroupMembers, GroupSyncer
from connector.apps.confluence_datacenter.ids import IdScheme
from connector.apps.confluence_datacenter.prefetch import Prefetcher
from connector.apps.confluence_datacenter.settings import ConfluenceSettings
from connector.apps.confluence_datacenter.spaces import SpaceSyncer
from connector.apps.confluence_datacenter.users import UserSyncer
from connector.ops.logging import get_logger, register_secret
from connector.ops.secrets import SecretSource
from connector.ops.settings import SettingsError
from connector.pb.c1.connector.v2 import annotation_external_link_pb2, connector_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import ConnectorError, UpstreamError
from connector.sdk.http import UpstreamClient, make_ssl_context
from connector.sdk.interface import AccountManager, Connector, ResourceSyncer

log = get_logger(__name__)

DISPLAY_NAME = "Confluence Data Center"
# Grant requests read ahead per connection slot: enough to keep the slots busy through the user listing,
# few enough that a sync that never asks for grants wastes little.
PREFETCH_PER_SLOT = 32
_INVALID_TOKEN = (
    "the personal access token (--access-token / BATON_ACCESS_TOKEN) is invalid, expired or revoked: "
    "Confluence answered as the anonymous user"
)


def _tls_failure(err: UpstreamError) -> bool:
    """A TLS problem a CA bundle could fix (not TLS spoken to a plain-HTTP port: its message says so)."""
    text = err.detail.lower()
    if "plain http" in text:
        return False
    return "certificate" in text or "ssl" in text or "tls" in text


class ConfluenceConnector(Connector):
    def __init__(
        self,
        settings: ConfluenceSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        page_limit: int = 1000,
    ) -> None:
        self.settings = settings
        token = (
            settings.access_token.get_secret_value()
            if settings.uses_token and settings.access_token
            else None
        )
        password = settings.password.get_secret_value() if settings.password else None
        for secret in (token, password):
            if secret:
                register_secret(secret)
        if token and settings.username:
            log.info("confluence_auth", mode="token", note="--access-token wins over --username/--password")
        try:
            verify: ssl.SSLContext | bool = make_ssl_context(settings.ca_file, settings.insecure_skip_verify)
        except ValueError as exc:
            raise SettingsError(f"invalid --ca-file / BATON_CA_FILE: {exc}") from None
        if settings.insecure_skip_verify:
            log.warning(
                "confluence_tls_verification_disabled",
                hostname=settings.hostname,
                detail="--insecure-skip-verify is set: the Confluence server's certificate is NOT checked",
            )
        # Secrets given as files are re-read when Kubernetes rotates them (ops.secrets); a token is also
        # re-read at once when Confluence stops accepting it (it answers as anonymous, not 401).
        token_auth = PatAuth(SecretSource(settings, "access_token")) if token else None
        basic_auth = (
            PasswordAuth(settings.username, SecretSource(settings, "password"))
            if not token and settings.username and password
            else None
        )
        self.client = ConfluenceClient(
            settings.hostname,
            access_token=token_auth,
            username=settings.username or None,
            password=basic_auth,
            verify=verify,
            concurrency=settings.request_concurrency,
            rate_limit=settings.rate_limit,
            timeout=float(settings.http_timeout_seconds),
            page_limit=page_limit,
            transport=transport,
        )
        self.state = SyncState(IdScheme(legacy=settings.legacy_ids))
        self.members = GroupMembers(self.client)
        # Grants read ahead while resources are listed (see prefetch.py); pointless, and wasted requests,
        # when the operator skips entitlements or grants.
        self.prefetch = Prefetcher(
            limit=PREFETCH_PER_SLOT * settings.request_concurrency, in_flight=settings.request_concurrency
        )
        self.prefetch.enabled = not (settings.skip_entitlements_and_grants or settings.skip_grants)
        self._syncers: list[ResourceSyncer] = [
            UserSyncer(self.client, self.state, self.members),
            GroupSyncer(self.client, self.state, self.members, self.prefetch),
            SpaceSyncer(self.client, self.state, self.prefetch),
        ]
        self._accounts = ConfluenceAccountManager(self.client, self.state)

    # --- Connector ------------------------------------------------------------------------------

    def metadata(self) -> connector_pb2.ConnectorMetadata:
        return connector_pb2.ConnectorMetadata(
            display_name=DISPLAY_NAME,
            description="Syncs Confluence Data Center users, groups and space permissions; provisions group "
            "membership, space permissions and accounts",
            annotations=model.pack_all(
                [annotation_external_link_pb2.ExternalLink(url=self.settings.hostname)]
            ),
        )

    def syncers(self) -> Sequence[ResourceSyncer]:
        return self._syncers

    def account_manager(self) -> AccountManager | None:
        return self._accounts

    def on_capability_missing(self, hook: Callable[[str], None]) -> None:
        self.state.on_capability_missing = hook

    async def delete_resource(
        self, resource_id: resource_pb2.ResourceId, parent: resource_pb2.ResourceId | None
    ) -> list[Message]:
        if resource_id.resource_type == USER.id:
            raise ConnectorError(
                grpc.StatusCode.UNIMPLEMENTED,
                "account deprovisioning is not supported: Confluence Data Center accounts must be "
                "deprovisioned in Confluence (deactivate or delete the user there)",
            )
        raise ConnectorError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"deleting {resource_id.resource_type} resources is not supported by the Confluence Data Center "
            "connector",
        )

    def upstream_clients(self) -> Sequence[UpstreamClient]:
        return [self.client.http]

    def sync_counters(self) -> Mapping[str, int]:
        return dict(self.state.counters)

    async def cleanup(self) -> None:
        self.members.invalidate()
        self.prefetch.reset()
        self.client.cancel_read_ahead()

    async def close(self) -> None:
        self.members.invalidate()
        self.prefetch.reset()
        await self.client.aclose()

    # --- validation -------------------------------------------------------------------------------

    async def validate(self) -> list[Message]:
        # Every sync starts with Validate (and reads sync_counters() after Cleanup): a fresh report, and
        # nothing read ahead for an earlier sync.
        self.state.reset()
        self.prefetch.reset()
        host = self.settings.hostname
        # Who we are and what the server is, in one round trip.
        outcomes: tuple[Any, ...] = await asyncio.gather(
            self.client.current_user(), self.client.capabilities(), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, AnonymousAnswer):
                raise ConnectorError(grpc.StatusCode.UNAUTHENTICATED, _INVALID_TOKEN) from outcome
            if isinstance(outcome, UpstreamError):
                raise self._validation_error(outcome) from outcome
            if isinstance(outcome, BaseException):
                raise outcome
        me = outcomes[0]
        if not isinstance(me, dict):
            raise ConnectorError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{host}/rest/api/user/current did not answer with a Confluence user: check --hostname "
                "(including the context path, e.g. https://host/confluence)",
            )
        if me.get("type") == "anonymous" or not me.get("userKey"):
            if self.client.auth_mode == "token":
                message = _INVALID_TOKEN
            else:
                message = "Confluence answered as the anonymous user: the credentials were not accepted"
            raise ConnectorError(grpc.StatusCode.UNAUTHENTICATED, message)
        username = str(me.get("username") or "")
        caps = await self.client.capabilities()
        # The sync needs the admin listings; probing them is the honest admin check (admin rights can come
        # from any group holding the global permission, so group names prove nothing).
        probes = ["/rest/api/group"]
        if caps.list_users_rest:
            probes.append("/rest/api/user/list")
        probed = await asyncio.gather(
            *(self.client.get_json(route, params={"limit": 1}) for route in probes), return_exceptions=True
        )
        for route, outcome in zip(probes, probed, strict=True):
            if isinstance(outcome, AnonymousAnswer):
                raise ConnectorError(grpc.StatusCode.UNAUTHENTICATED, _INVALID_TOKEN) from outcome
            if isinstance(outcome, UpstreamError):
                if outcome.status in (401, 403):
                    raise ConnectorError(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"the Confluence user {username!r} lacks administrator rights: listing {route} "
                        f"answered HTTP {outcome.status}. The connector needs the 'Confluence Administrator' "
                        "(or System Administrator) global permission",
                    ) from outcome
                raise self._validation_error(outcome) from outcome
            if isinstance(outcome, BaseException):
                raise outcome
        if not caps.space_permissions_rest and not caps.rpc:
            log.warning(
                "confluence_space_permissions_unavailable",
                version=caps.version_text,
                detail="space permissions need the JSON-RPC remote API before 9.1; they will not be synced",
            )
        log.info(
            "confluence_validated",
            user=username,
            version=caps.version_text,
            version_source=caps.source,
            ids=self.state.ids.name,
        )
        return []

    def _validation_error(self, err: UpstreamError) -> ConnectorError:
        host = self.settings.hostname
        if err.status is None:
            if _tls_failure(err):
                return ConnectorError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"TLS handshake with {host} failed ({err.detail}). If the server uses a private CA, pass "
                    "its PEM bundle with --ca-file / BATON_CA_FILE (or, insecurely, --insecure-skip-verify)",
                )
            return ConnectorError(
                grpc.StatusCode.UNAVAILABLE, f"cannot reach Confluence at {host}: {err.detail}"
            )
        if err.status == 401:
            if self.client.auth_mode == "basic":
                return ConnectorError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "Confluence rejected the username/password (--username / --password, HTTP 401 "
                    "AUTHENTICATION_DENIED). If they are right, Confluence may demand a CAPTCHA after failed "
                    "logins: log in once in the browser",
                )
            return ConnectorError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"Confluence rejected the credentials (HTTP 401): {err.detail}",
            )
        if err.status == 404:
            return ConnectorError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no Confluence REST API at {host} (HTTP 404): check --hostname, including the context path "
                "(e.g. https://host/confluence)",
            )
        if err.status == 429:
            return ConnectorError(
                grpc.StatusCode.UNAVAILABLE, f"Confluence is rate limiting the connector: {err.detail}"
            )
        return ConnectorError(
            grpc.StatusCode.FAILED_PRECONDITION if err.status < 500 else grpc.StatusCode.UNAVAILABLE,
            f"validating against {host} failed: {err}",
        )


def build_connector(settings: ConfluenceSettings) -> ConfluenceConnector:
    return ConfluenceConnector(settings)
