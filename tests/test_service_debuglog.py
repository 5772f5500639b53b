"""`Task.debug` (spec §4.9): the task's logs at debug level as JSON in <tempDir>/debug.log, uploaded by a sync
as a second UploadAsset stream after the c1z, and removed afterwards only by a debug task."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.ops.logging import configure_logging
from connector.pb.c1.connectorapi.baton.v1 import baton_pb2
from connector.service.testing_app import ToyState, user_res
from tests import service_support
from tests.service_support import Starter, code_of, member_ent

new_tenant = service_support.new_tenant  # fixtures
start = service_support.start

Task = baton_pb2.Task


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The process log output, configured at info level as a daemon would be."""
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    yield buf


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_a_debug_sync_uploads_its_debug_log_after_the_c1z_then_deletes_it(
    start: Starter, tmp_path: Path, log_output: io.StringIO
) -> None:
    run = await start(state=ToyState(list_delay=0.3))
    other = run.tenant.enqueue_grant(member_ent("eng"), user_res("dave", "Dave"))  # runs alongside
    tid = run.tenant.enqueue_sync(debug=True)
    rec = await run.tenant.wait_finished(tid)
    assert rec.outcome == "success", rec.status_message
    await run.tenant.wait_finished(other)
    c1z, debug = [u for u in run.tenant.uploads if u.task_id == tid]
    assert c1z.kind == "c1z-v1" and debug.kind == "other"  # the c1z first, then the log
    records = lines(debug.path.read_text())
    assert records and all(r["task_id"] == tid and r["task_type"] == "sync_full" for r in records)
    events = [r["event"] for r in records]
    assert "task_started" in events and "heartbeat_ok" in events
    assert any(r["level"] == "debug" for r in records)  # debug level although the process logs at info
    text = debug.path.read_text()
    assert run.tenant.client_secret not in text
    assert not any(tok in text for tok in run.tenant.tenant.tokens)
    # The regular output kept its level, and the concurrent grant's lines stayed out of the file.
    assert not any(r["level"] == "debug" for r in lines(log_output.getvalue()))
    assert other not in text
    assert await run.stopped() == 0
    assert not (tmp_path / "debug.log").exists()


async def test_a_leftover_debug_log_is_uploaded_by_the_next_sync_and_kept(
    start: Starter, tmp_path: Path, log_output: io.StringIO
) -> None:
    run = await start()
    task = Task(
        debug=True,
        grant=Task.GrantTask(entitlement=member_ent("eng"), principal=user_res("dave", "Dave")),
    )
    gid = run.tenant.enqueue(task)
    assert (await run.tenant.wait_finished(gid)).outcome == "success"
    leftover = tmp_path / "debug.log"
    records = lines(leftover.read_text())  # a non-sync debug task writes the file and leaves it
    assert records and {r["task_id"] for r in records} == {gid}
    assert oct(leftover.stat().st_mode & 0o777) == "0o600"

    sid = run.tenant.enqueue_sync()  # not a debug task
    assert (await run.tenant.wait_finished(sid)).outcome == "success"
    uploads = [u for u in run.tenant.uploads if u.task_id == sid]
    assert [u.kind for u in uploads] == ["c1z-v1", "other"]
    assert {r["task_id"] for r in lines(uploads[1].path.read_text())} == {gid}
    assert leftover.exists()  # only a debug task deletes it


async def test_a_failed_debug_log_upload_fails_the_sync_retryably(
    start: Starter, tmp_path: Path, log_output: io.StringIO
) -> None:
    run = await start()
    run.tenant.tenant.break_uploads(3, kind="other")
    tid = run.tenant.enqueue_sync(debug=True)
    rec = await run.tenant.wait_finished(tid)
    assert (rec.outcome, code_of(rec), rec.non_retryable) == ("error", "UNAVAILABLE", False)
    assert "uploading debug log" in rec.status_message and "after 3 attempts" in rec.status_message
    assert [u.kind for u in run.tenant.uploads] == ["c1z-v1"]
    assert await run.stopped() == 0
    assert not (tmp_path / "debug.log").exists()


async def test_the_debug_log_is_capped_with_a_last_line_saying_so(
    start: Starter, log_output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.service import debuglog

    monkeypatch.setattr(debuglog, "DEBUG_LOG_MAX_BYTES", 4096)
    users = {f"user{i:03d}": f"User {i}" for i in range(200)}
    run = await start(state=ToyState(users=users, list_delay=0.2))
    tid = run.tenant.enqueue_sync(debug=True)
    rec = await run.tenant.wait_finished(tid)
    assert rec.outcome == "success", rec.status_message
    _, debug = [u for u in run.tenant.uploads if u.task_id == tid]
    data = debug.path.read_bytes()
    records = lines(data.decode())
    marker = records[-1]
    assert marker == {"event": "debug_log_truncated", "level": "warning", "max_bytes": 4096}
    assert len(data) - len(json.dumps(marker)) - 1 <= 4096
    assert len(records) > 3 and all(r["task_id"] == tid for r in records[:-1])
    # The regular output still has the lines the file did not take.
    assert "sync_finished" in {r["event"] for r in lines(log_output.getvalue())}
    assert await run.stopped() == 0
