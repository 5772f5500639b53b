"""Resource types, the space permission table and state shared by the Confluence syncers.

Ids, slugs and display names are an external contract: they match ConductorOne/baton-confluence-datacenter
(users by username, groups by name, spaces by key; `member` on groups; 14 permission slugs on spaces), so a
customer can switch connectors without ConductorOne seeing every account and grant change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from connector.ops.logging import get_logger
from connector.pb.c1.connector.v2 import resource_pb2
from connector.sdk import model

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
    slug: str  # entitlement slug (the Go connector's)
    phrase: str  # "Can <phrase> <space name>"
    rest: tuple[str, str]  # REST (targetType, operationKey), 9.1+


# Order and phrases follow the Go connector; the REST pairs are spec B.6.
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
BY_SLUG = {p.slug: p for p in SPACE_PERMISSIONS}
BY_REST = {p.rest: p for p in SPACE_PERMISSIONS}
# Keys servers return next to the real ones that are not permissions of their own.
ALIAS_KEYS = frozenset({"EXPORTPAGE"})


def group_member_entitlement_id(group_name: str) -> str:
    return model.entitlement_id(model.resource_id(GROUP.id, group_name), MEMBER)


def space_key_of(resource: resource_pb2.Resource) -> str:
    return resource.id.resource


@dataclass
class SyncState:
    """Counters for the sync report and caches shared by the syncers (per connector instance)."""

    counters: Counter[str] = field(default_factory=Counter)
    key_to_username: dict[str, str] = field(default_factory=dict)
    on_capability_missing: Callable[[str], None] | None = None
    _missing_logged: set[str] = field(default_factory=set)

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
