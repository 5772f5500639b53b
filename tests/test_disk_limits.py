"""Running out of disk while a sync writes its c1z: a clear, retryable failure that leaves nothing behind,
and the next sync works once there is room."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.c1z import container
from connector.c1z.writer import C1zWriter, DiskFullError
from connector.service.testing_app import ToyState
from tests import service_support
from tests.service_support import Starter, code_of, eventually

new_tenant = service_support.new_tenant  # fixtures
start = service_support.start

NO_SPACE = "no space left on the device holding"


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path` (root only; the test is skipped where mounting is not allowed)."""
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, timeout=30)


def users(n: int) -> dict[str, str]:
    return {f"user{i:05d}": f"User {i} " + "x" * 300 for i in range(n)}


# 512k: full while creating the working database; 1m: full while writing rows (in the writer's process).
@pytest.mark.parametrize("size", ["512k", "1m"])
async def test_a_full_disk_fails_the_sync_retryably_and_the_next_one_works(
    start: Starter, tmp_path: Path, size: str
) -> None:
    with small_filesystem(tmp_path / "small", size) as small:
        # The toy connector's 3,000 users need a few MB of working database: more than the disk holds.
        run = await start(env={"BATON_C1Z_TEMP_DIR": str(small)}, state=ToyState(users=users(3000)))
        first = run.tenant.enqueue_sync()
        rec = await run.tenant.wait_finished(first, within=60)
        assert code_of(rec) == "UNKNOWN" and rec.non_retryable is False
        assert NO_SPACE in rec.status_message and str(small) in rec.status_message
        assert "BATON_C1Z_TEMP_DIR" in rec.status_message
        assert not run.tenant.uploads
        # Nothing left behind: no working database, no partial c1z, no task directory.
        await eventually(lambda: not any(small.iterdir()), within=30)
        assert os.statvfs(small).f_bfree == os.statvfs(small).f_blocks

        resize(small, "64m")
        second = run.tenant.enqueue_sync()
        rec = await run.tenant.wait_finished(second, within=60)
        assert rec.outcome == "success", rec.status_message
        (upload,) = run.tenant.uploads
        assert upload.task_id == second
        await run.stopped(within=30)


def test_enospc_while_compressing_is_a_disk_full_error_and_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected: the disk fills up as the container is written (the last step, after the database)."""
    target = tmp_path / "out" / "sync.c1z"
    target.parent.mkdir()
    writer = C1zWriter(target, temp_dir=tmp_path)
    writer.start_sync("full")
    writer.end_sync()

    def full(*_args: object, **_kwargs: object) -> int:
        (target.parent / "sync.c1z.tmp").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(container, "compress_file", full)
    with pytest.raises(DiskFullError) as err:
        writer.commit()
    assert str(err.value).startswith(f"{NO_SPACE} {target.parent} while writing the c1z")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out"]


def test_enospc_creating_the_working_database_is_a_disk_full_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connector.c1z.writer as writer_module

    def full(*_args: object, **_kwargs: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module, "open_database", full)
    with pytest.raises(DiskFullError, match=NO_SPACE):
        C1zWriter(tmp_path / "sync.c1z", temp_dir=tmp_path)
    assert not list(tmp_path.iterdir())
