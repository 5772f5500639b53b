"""What the syncers share: the API client and the state of the sync in progress."""

from __future__ import annotations

from connector.apps.atlassian.client import AtlassianClient
from connector.apps.atlassian.state import SyncState
from connector.ops.logging import get_logger

log = get_logger("connector.apps.atlassian")


class Shared:
    def __init__(self, client: AtlassianClient) -> None:
        self.client = client
        self.state = SyncState(client)
        # Counters of the last finished sync: the engine reads them after Cleanup has reset the state.
        self.last_counters: dict[str, int] = {}

    async def reset(self) -> None:
        """End of a sync: drop caches and background work so the next sync reads fresh data."""
        old, self.state = self.state, SyncState(self.client)
        self.last_counters = old.snapshot()
        await old.close()
