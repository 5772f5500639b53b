"""Resource types, the space permission table and state shared by the Confluence syncers.

Ids, slugs and display names are an external contract: they match ConductorOne/baton-confluence-datacenter
(groups by name, spaces by key, `member` on groups; users and space slugs per id scheme, see ids.py), so a
customer can switch connectors without ConductorOne seeing every account and grant change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connector.ops.logging import get_logger
from connector.pb.c1.connector.v2 import resource_pb2
from connector.sdk import model
from connector.sdk.errors import UpstreamError

if TYPE_CHECKING:
    from connector.apps.confluence_datacenter.ids import IdScheme

log = get_logger(__name__)

USER = model.resource_type(
    "user",
    "User",
    [model.Trait.TRAIT_USER],
    description="A Confluence Data Center user account",
    annotations=[model.skip_entitlements_and_grants()],
)
GROUP = model.resource_type(
    "group", "Group", [model.Trait.TRAIT_GROUP], description="A Confluence Data Center group"
)
SPACE = model.resource_type("space", "Space", description="A Confluence Data Center space")

MEMBER = "member"


@dataclass(frozen=True)
class SpacePermission:
    key: str  # legacy key (JSON-RPC, UI)
    legacy_slug: str  # entitlement slug of the January 2025 Go connector (--legacy-ids)
    phrase: str  # "Can <phrase> <space name>" (legacy display name)
    rest: tuple[str, str]  # REST (targetType, operationKey), 9.1+

    @property
    def slug(self) -> str:
        """The newest Go connector's slug, `<operationKey>-<targetType>` (e.g. `read-space`)."""
        return f"{self.rest[1]}-{self.rest[0]}"


# Order and phrases follow the Go connector. The REST pairs are spec B.6; the three least certain ones
# (delete_own, restrict, delete_mail on `space`) are what public scripts send to the 9.1+ REST grant and
# set endpoints of real Data Center servers (Cloud's API spells them `delete`, `restrict_content`).
_P = SpacePermission
SPACE_PERMISSIONS: tuple[SpacePermission, ...] = (
    _P("COMMENT", "add-comment", "comment in", ("comment", "create")),
    _P("CREATEATTACHMENT", "add-attachment", "create an attachment in", ("attachment", "create")),
    _P("EDITBLOG", "edit-blog", "edit an blog in", ("blogpost", "create")),
    _P("EDITSPACE", "edit-space", "edit", ("page", "create")),
    _P("EXPORTSPACE", "export-space", "export", ("space", "export")),
    _P("REMOVEATTACHMENT", "remove-attachment", "remove an attachment from", ("attachment", "delete")),
    _P("REMOVEBLOG", "remove-blog", "remove a blog from", ("blogpost", "delete")),
    _P("REMOVECOMMENT", "remove-comment", "remove a comment from", ("comment", "delete")),
    _P("REMOVEMAIL", "remove-mail", "remove mail from", ("space", "delete_mail")),
    _P("REMOVEOWNCONTENT", "remove-own-content", "remove their own content from", ("space", "delete_own")),
    _P("REMOVEPAGE", "remove-page", "remove a page from", ("page", "delete")),
    _P("SETPAGEPERMISSIONS", "set-page-permissions", "set page permissions for", ("space", "restrict")),
    _P("SETSPACEPERMISSIONS", "set-space-permissions", "set space permissions for", ("space", "administer")),
    _P("VIEWSPACE", "view", "view", ("space", "read")),
)
BY_KEY = {p.key: p for p in SPACE_PERMISSIONS}
BY_REST = {p.rest: p for p in SPACE_PERMISSIONS}
# Keys servers return next to the real ones that are not permissions of their own.
ALIAS_KEYS = frozenset({"EXPORTPAGE"})


def group_member_entitlement_id(group_name: str) -> str:
    return model.entitlement_id(model.resource_id(GROUP.id, group_name), MEMBER)


def space_key_of(resource: resource_pb2.Resource) -> str:
    return resource.id.resource


def required(record: dict[str, Any], field_name: str, what: str, route: str) -> str:
    """`record[field_name]` as a non-empty string, or an UpstreamError naming the field: a record without
    its id would otherwise drop silently out of the sync (or fail as a bare KeyError)."""
    value = record.get(field_name)
    if isinstance(value, str) and value:
        return value
    present = ", ".join(sorted(str(k) for k in record)[:8]) or "none"
    raise UpstreamError(
        "confluence",
        "GET",
        route,
        200,
        f"malformed {what} in the answer: no {field_name!r} (fields present: {present})",
    )


@dataclass
class SyncState:
    """Counters for the sync report and caches shared by the syncers (per connector instance)."""

    ids: IdScheme  # which ids this connector writes (--legacy-ids)
    counters: Counter[str] = field(default_factory=Counter)
    key_to_username: dict[str, str] = field(default_factory=dict)
    username_to_key: dict[str, str] = field(default_factory=dict)
    on_capability_missing: Callable[[str], None] | None = None
    _missing_logged: set[str] = field(default_factory=set)

    def remember(self, username: str, key: str) -> None:
        """A user seen with both its names (a rename replaces the old username)."""
        old = self.key_to_username.get(key)
        if old is not None and old != username:
            self.username_to_key.pop(old, None)
        self.key_to_username[key] = username
        self.username_to_key[username] = key

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def capability_missing(self, capability: str, message: str) -> None:
        """One clear log line per capability (not per resource), a counter, and the metrics hook."""
        self.counters[f"capability_missing.{capability}"] += 1
        if capability not in self._missing_logged:
            self._missing_logged.add(capability)
            log.warning("confluence_capability_missing", capability=capability, detail=message)
        if self.on_capability_missing is not None:
            self.on_capability_missing(capability)

    def reset(self) -> None:
        self.counters.clear()
        self._missing_logged.clear()
