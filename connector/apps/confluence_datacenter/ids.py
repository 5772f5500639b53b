"""The two id schemes of the Confluence connector, and the one place that builds user ids and space slugs.

Default (`IdScheme(legacy=False)`): the newest Go connector's ids. Users by `userKey` (it survives a
rename), space permissions `<operationKey>-<targetType>` (`read-space`, `create-page`, `delete_own-space`).
`--legacy-ids`: the ids of the Go connector of January 2025, which this project used to write. Users by
username, the 14 slugs `view`, `add-comment`, ... A customer switching from either Go connector keeps every
id by picking the matching scheme; groups (by name) and spaces (by key) are the same in both.

The slug of a permission never depends on the API it was read from: JSON-RPC keys (before 9.1) map onto
the same REST pair, so upgrading Confluence past 9.1 changes no id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.apps.confluence_datacenter.common import SPACE_PERMISSIONS, SpacePermission

_BY_LEGACY_SLUG = {p.legacy_slug: p for p in SPACE_PERMISSIONS}
_BY_SLUG = {p.slug: p for p in SPACE_PERMISSIONS}


@dataclass(frozen=True)
class IdScheme:
    legacy: bool = False

    @property
    def name(self) -> str:
        return "legacy" if self.legacy else "default"

    @property
    def user_field(self) -> str:
        """The person field a user id is taken from."""
        return "username" if self.legacy else "userKey"

    def user_id(self, person: dict[str, Any]) -> str:
        return str(person[self.user_field])

    def slug(self, perm: SpacePermission) -> str:
        return perm.legacy_slug if self.legacy else perm.slug

    def permission(self, slug: str) -> SpacePermission | None:
        return (_BY_LEGACY_SLUG if self.legacy else _BY_SLUG).get(slug)

    def slugs(self) -> list[str]:
        return sorted(self.slug(p) for p in SPACE_PERMISSIONS)

    def names(self, perm: SpacePermission, space_name: str) -> tuple[str, str]:
        """(display name, description) of a space permission entitlement, as each Go connector wrote them."""
        if self.legacy:
            return (
                f"Can {perm.phrase} {space_name}",
                f"Has permission to {perm.phrase} the {space_name} space in Confluence Data Center",
            )
        target, op = perm.rest
        return (
            f"Can {op} {target} on '{space_name}'",
            f"Has permission to {op} the {space_name} space in Confluence Data Center",
        )
