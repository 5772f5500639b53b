"""The c1z writer in a child process: same file as in process, and nothing left behind when it or the
parent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from connector.c1z.container import C1zError
from connector.sdk.runtime import ConnectorRuntime
from connector.sync import engine as engine_module
from connector.sync import store as store_module
from connector.sync.engine import SyncError, SyncOptions, run_sync
from tests.test_sync_support import Nest, Org, OrgConnector, content, files


def _org() -> Org:
    org = Org(bots=["b1"])
    org.groups["eng"].append("bot:b1")
    org.nested["ops"] = [Nest("eng", shallow=True, resource_type_ids=("user",))]
    return org


async def test_child_process_and_thread_writers_produce_the_same_file(tmp_path: Path) -> None:
    child, local = tmp_path / "child.c1z", tmp_path / "local.c1z"
    a = await run_sync(ConnectorRuntime(OrgConnector(_org())), child, SyncOptions(writer_process=True))
    b = await run_sync(ConnectorRuntime(OrgConnector(_org())), local, SyncOptions(writer_process=False))
    assert content(child) == content(local)
    assert (a.grants_direct, a.grants_expanded, a.resources) == (
        b.grants_direct,
        b.grants_expanded,
        b.resources,
    )
    assert a.writer_peak_rss_kib > 0 and b.writer_peak_rss_kib == 0


async def test_a_second_sync_into_the_same_file_keeps_the_first(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    first = await run_sync(ConnectorRuntime(OrgConnector(_org())), out, SyncOptions())
    second = await run_sync(ConnectorRuntime(OrgConnector(_org())), out, SyncOptions())
    assert first.sync_id != second.sync_id
    assert content(out)["v1_grants"]  # the latest sync reads back
    assert files(tmp_path) == ["sync.c1z"]


async def test_writer_killed_mid_sync_fails_clearly_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores: list[Any] = []
    real = store_module.ProcessStore

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.killed = False
            stores.append(self)

    monkeypatch.setattr(store_module, "ProcessStore", Recording)
    org = _org()

    def kill_writer() -> Exception | None:
        if not stores[0].killed:
            stores[0].killed = True
            os.kill(stores[0].pid, signal.SIGKILL)
            time.sleep(0.2)
        return None

    org.fail[("grants", "group:eng")] = kill_writer
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(
        (SyncError, C1zError), match=r"c1z writer process exited unexpectedly \(exit code -9\)"
    ):
        await run_sync(
            ConnectorRuntime(OrgConnector(org)), tmp_path / "sync.c1z", SyncOptions(), temp_dir=scratch
        )
    assert files(tmp_path) == ["scratch"]
    assert files(scratch) == []


def test_writer_exits_and_cleans_up_when_the_parent_dies(tmp_path: Path) -> None:
    """A daemon killed with SIGKILL mid-sync: its writer notices, removes its temp database and exits."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from connector.sdk.runtime import ConnectorRuntime
        from connector.sync.engine import SyncOptions, run_sync
        from tests.test_sync_support import Org, OrgConnector

        org = Org()

        def stall():
            print("STALLED", flush=True)
            import time
            time.sleep(60)

        org.fail[("grants", "group:eng")] = stall
        asyncio.run(run_sync(ConnectorRuntime(OrgConnector(org)), Path({str(tmp_path / "sync.c1z")!r}),
                             SyncOptions(), temp_dir=Path({str(scratch)!r})))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # log lines, then the marker
            if line.strip() == "STALLED":
                break
        assert len(list(scratch.iterdir())) == 1  # the writer's temp dir
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while list(scratch.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratch"]


async def test_unusable_existing_file_is_reported_from_the_child(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    out.write_text("not a c1z")
    with pytest.raises(C1zError, match=r"existing file .* is not usable: not a c1z file"):
        await run_sync(ConnectorRuntime(OrgConnector(_org())), out, SyncOptions())
    assert out.read_text() == "not a c1z"


def test_a_script_without_a_main_guard_syncs_and_runs_once(tmp_path: Path) -> None:
    """The writer child does not re-import the caller's main module (multiprocessing would by default)."""
    marker = tmp_path / "ran.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from pathlib import Path
            from connector.sdk.runtime import ConnectorRuntime
            from connector.sync.engine import SyncOptions, run_sync
            from tests.test_sync_support import OrgConnector

            with open({str(marker)!r}, "a") as f:
                f.write("ran\\n")
            report = asyncio.run(run_sync(ConnectorRuntime(OrgConnector()), Path({str(tmp_path / "s.c1z")!r}),
                                          SyncOptions()))
            print("grants", report.grants_direct)
            """
        )
    )
    root = Path(__file__).parent.parent
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "grants 9" in out.stdout
    assert marker.read_text() == "ran\n"


async def test_sync_falls_back_to_an_in_process_writer_when_no_child_can_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No fork allowed (or no /dev/shm for the shared cancel flag): the sync still completes, in process."""

    def no_processes(*args: Any, **kwargs: Any) -> Any:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(store_module, "ProcessStore", no_processes)
    report = await run_sync(ConnectorRuntime(OrgConnector(_org())), tmp_path / "a.c1z", SyncOptions())
    assert report.grants_direct > 0 and report.writer_peak_rss_kib == 0

    monkeypatch.setattr(store_module, "_context", no_processes)
    report = await run_sync(ConnectorRuntime(OrgConnector(_org())), tmp_path / "b.c1z", SyncOptions())
    assert report.grants_direct > 0 and report.writer_peak_rss_kib == 0
    assert content(tmp_path / "a.c1z") == content(tmp_path / "b.c1z")


async def test_the_connector_is_validated_while_the_store_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's start (a child process) overlaps the first connector calls instead of preceding them."""
    events: list[str] = []
    real_open = engine_module.open_store

    def slow_open(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        events.append("store open")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(engine_module, "open_store", slow_open)
    connector = OrgConnector(_org())
    real_validate = connector.validate

    async def validate() -> Any:
        events.append("validated")
        return await real_validate()

    monkeypatch.setattr(connector, "validate", validate)
    out = tmp_path / "sync.c1z"
    report = await run_sync(ConnectorRuntime(connector), out, SyncOptions())
    assert events == ["validated", "store open"]
    assert report.grants_direct > 0 and content(out)["v1_grants"]


def _process_store(tmp_path: Path, **kwargs: Any) -> store_module.ProcessStore:
    return store_module.ProcessStore(
        tmp_path / "sync.c1z",
        temp_dir=tmp_path,
        keep_sync_count=2,
        cancel=store_module.new_cancel_event(False),
        **kwargs,
    )


def test_a_stuck_writer_is_killed_after_the_grace_period_and_leaves_nothing(tmp_path: Path) -> None:
    store = _process_store(tmp_path, stall_grace=1.0)
    work_dir = store._work_dir
    assert work_dir is not None and work_dir.is_dir() and store.pid is not None
    os.kill(store.pid, signal.SIGSTOP)  # alive, but making no progress
    started = time.monotonic()
    with pytest.raises(C1zError, match="made no progress for 1 s"):
        store.start_sync()
    assert time.monotonic() - started < 30
    store.abort()
    assert not store._proc.is_alive()
    assert not work_dir.exists()
    assert files(tmp_path) == []


def test_a_reply_into_a_broken_pipe_still_removes_the_temp_database(tmp_path: Path) -> None:
    store = _process_store(tmp_path)
    work_dir = store._work_dir
    assert work_dir is not None and work_dir.is_dir() and store.pid is not None
    # The parent asks, then goes away before the answer (as during a shutdown): the child's reply meets
    # a closed pipe.
    os.kill(store.pid, signal.SIGSTOP)
    store._send("start_sync", ("full", "", None))
    store._conn.close()
    os.kill(store.pid, signal.SIGCONT)
    store._proc.join(30)
    assert store._proc.exitcode is not None
    assert not work_dir.exists()
