"""What the syncers share: the API client and the state of the sync in progress."""

from __future__ import annotations

from connector.apps.atlassian.client import AtlassianClient
from connector.apps.atlassian.state import SyncState
from connector.ops.logging import get_logger

log = get_logger("connector.apps.atlassian")


class Shared:
    def __init__(
        self,
        client: AtlassianClient,
        *,
        verify_direct_roles: bool = True,
        grants_wanted: bool = True,
        entitlements_wanted: bool = True,
    ) -> None:
        self.client = client
        self.verify_direct_roles = verify_direct_roles
        # Whether syncs list grants: false when configured to skip them (one-shot --skip-grants). A daemon
        # gets its options per task, which a connector does not see, so it goes by the previous sync.
        self.grants_wanted = grants_wanted
        self.expect_grants = grants_wanted
        self.entitlements_wanted = entitlements_wanted
        # Workspace roles a sync found only after listing entitlements; the next syncs offer them (daemon).
        self.remembered_roles: dict[str, set[str]] = {}
        self.state = self._new_state()
        # Counters of the last finished sync: the engine reads them after Cleanup has reset the state.
        self.last_counters: dict[str, int] = {}

    def _new_state(self) -> SyncState:
        return SyncState(
            self.client,
            verify_direct_roles=self.verify_direct_roles,
            remembered_roles=self.remembered_roles,
            expect_grants=self.expect_grants,
            expect_entitlements=self.entitlements_wanted,
        )

    async def reset(self) -> None:
        """End of a sync: drop caches and background work so the next sync reads fresh data."""
        self.last_counters = self.state.snapshot()
        # The next sync is expected to list grants if this one did (or listed nothing: a failed start).
        if self.state.active:
            self.expect_grants = self.grants_wanted and self.last_counters.get("grant_listings", 0) > 0
        old, self.state = self.state, self._new_state()
        await old.close()
