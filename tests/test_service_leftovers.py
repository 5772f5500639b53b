"""A daemon killed mid-sync leaves its work dir (temp database, partial c1z); the next start removes it,
and leaves alone what a live process still owns."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tests.service_support import Starter, eventually, new_tenant, start

__all__ = ["new_tenant", "start"]


async def test_start_up_removes_a_killed_syncs_leftovers_only(start: Starter, tmp_path: Path) -> None:
    dead = tmp_path / "baton-sync-upload-dead1"
    (dead / "c1zq1w2e3r").mkdir(parents=True)
    (dead / "c1zq1w2e3r" / "db").write_bytes(b"SQLite format 3\0" + b"\0" * 4096)
    (dead / "sync.c1z.tmp").write_bytes(b"partial")
    (dead / ".owner").touch()  # its owner's lock died with it
    live = tmp_path / "baton-sync-upload-live1"
    live.mkdir()
    fd = os.open(live / ".owner", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another daemon's sync, running
    just_made = tmp_path / "baton-sync-upload-new1"  # created a moment ago, owner file not there yet
    just_made.mkdir()
    other = tmp_path / "not-ours"
    other.mkdir()
    try:
        run = await start()
        assert not dead.exists()
        assert live.is_dir() and just_made.is_dir() and other.is_dir()
        # Syncs still work, and remove their own work dir.
        rec = await run.tenant.wait_finished(run.tenant.enqueue_sync())
        assert rec.outcome == "success"

        def work_dirs() -> list[str]:
            return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("baton-sync-upload-"))

        # (the task removes its dir just after its FinishTask)
        await eventually(lambda: work_dirs() == ["baton-sync-upload-live1", "baton-sync-upload-new1"])
    finally:
        os.close(fd)
