"""The c1z container, KSUIDs, timestamps and atomic writes."""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
import zstandard

from connector.c1z import container, ksuid
from connector.c1z.container import C1zError
from connector.c1z.reader import C1zReader
from connector.c1z.timefmt import format_timestamp, parse_timestamp
from connector.c1z.writer import NEW_PAGE_SIZE, C1zWriter
from connector.sdk import model
from tests.test_sync_support import USER, build_go_c1z, user_res

KSUID_RE = re.compile(r"^[0-9A-Za-z]{27}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d*[1-9])?$")


# --- KSUID -------------------------------------------------------------------------------------------


def test_ksuid_is_27_base62_chars_with_time_prefix() -> None:
    now = time.time()
    sid = ksuid.new_ksuid()
    assert KSUID_RE.match(sid)
    assert abs(ksuid.timestamp(sid).timestamp() - now) <= 2
    raw = ksuid.decode(sid)
    assert len(raw) == 20
    assert int.from_bytes(raw[:4], "big") == int(ksuid.timestamp(sid).timestamp()) - ksuid.EPOCH


def test_ksuid_encoding_matches_segmentio_layout() -> None:
    # Zero payload at the KSUID epoch is the all-zero id; the maximum value is the documented max string.
    assert ksuid.encode(bytes(20)) == "0" * 27
    assert ksuid.encode(b"\xff" * 20) == "aWgEPTl1tmebfsQzFP4bxwgy80V"
    sid = ksuid.new_ksuid(now=ksuid.EPOCH + 1, payload=bytes(16))
    assert ksuid.decode(sid) == (1).to_bytes(4, "big") + bytes(16)
    # Later ids sort after earlier ones (second resolution).
    assert ksuid.new_ksuid(now=2_000_000_000) > ksuid.new_ksuid(now=1_900_000_000)


def test_ksuid_rejects_bad_strings() -> None:
    assert not ksuid.is_ksuid("short")
    assert not ksuid.is_ksuid("!" * 27)
    assert not ksuid.is_ksuid("z" * 27)  # above 2^160
    assert ksuid.is_ksuid(ksuid.new_ksuid())


# --- timestamps --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (dt.datetime(2026, 11, 22, 15, 42, 19, 875714, tzinfo=dt.UTC), "2026-11-22 15:42:19.875714"),
        (dt.datetime(2026, 11, 22, 15, 42, 19, 875000, tzinfo=dt.UTC), "2026-11-22 15:42:19.875"),
        (dt.datetime(2026, 11, 22, 15, 42, 19, 0, tzinfo=dt.UTC), "2026-11-22 15:42:19"),
        (dt.datetime(2026, 1, 2, 3, 4, 5, 100, tzinfo=dt.UTC), "2026-01-02 03:04:05.0001"),
    ],
)
def test_timestamp_uses_go_layout_without_trailing_zeros(value: dt.datetime, text: str) -> None:
    assert format_timestamp(value) == text
    assert parse_timestamp(text) == value


def test_timestamp_is_utc_and_parses_go_forms() -> None:
    eastern = dt.timezone(dt.timedelta(hours=-5))
    assert format_timestamp(dt.datetime(2026, 1, 1, 10, 0, tzinfo=eastern)) == "2026-01-01 15:00:00"
    assert TS_RE.match(format_timestamp())
    assert parse_timestamp("2026-11-22 15:40:33.820076957").microsecond == 820076
    assert parse_timestamp("2026-11-22T15:40:33Z") == dt.datetime(2026, 11, 22, 15, 40, 33, tzinfo=dt.UTC)
    assert parse_timestamp("2026-11-22 15:40:33.5+01:00").hour == 14
    assert parse_timestamp("2026-11-22") == dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


# --- container ---------------------------------------------------------------------------------------


def _write_small(path: Path) -> str:
    with C1zWriter(path) as w:
        sync_id = w.start_sync("full")
        w.put_resource_types([USER])
        w.put_resources([user_res("alice")])
        w.end_sync()
    return sync_id


def test_container_header_and_zstd_frame_parameters(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    _write_small(out)
    raw = out.read_bytes()
    assert raw[:5] == b"C1ZF\x00"
    assert raw[5:9] == b"\x28\xb5\x2f\xfd"
    params = zstandard.get_frame_parameters(raw[5:])
    assert params.has_checksum
    assert params.content_size > 0  # content size is written
    assert params.window_size <= 8 << 20
    db = zstandard.ZstdDecompressor().decompress(raw[5:])
    assert db.startswith(b"SQLite format 3\x00")
    assert len(db) == params.content_size


def test_large_database_uses_8mib_window_not_single_segment(tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    db.write_bytes(os.urandom(1 << 20) * 12)  # 12 MiB, larger than the window
    out = tmp_path / "big.c1z"
    with open(out, "wb") as f:
        container.compress_file(db, f)
    raw = out.read_bytes()
    fhd = raw[9]
    assert fhd & 0x20 == 0, "single-segment frames use the content size as window; the Go reader caps it"
    assert raw[10] == 0x68  # window descriptor: 8 MiB, as the Go writer emits
    assert zstandard.get_frame_parameters(raw[5:]).window_size == 8 << 20


def test_reader_rejects_bad_magic_and_v3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.c1z"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    with pytest.raises(C1zError, match=r"not a c1z file \(bad magic\)"):
        C1zReader(bad)
    v3 = tmp_path / "v3.c1z"
    v3.write_bytes(b"C1Z3\x00" + b"\x00" * 20)
    with pytest.raises(C1zError, match="v3"):
        C1zReader(v3)
    with pytest.raises(C1zError, match="no such file"):
        C1zReader(tmp_path / "missing.c1z")


def test_reader_rejects_corrupt_payloads(tmp_path: Path) -> None:
    junk = tmp_path / "junk.c1z"
    junk.write_bytes(b"C1ZF\x00" + b"not zstd at all")
    with pytest.raises(C1zError, match="corrupt c1z"):
        C1zReader(junk)
    not_sqlite = tmp_path / "nosql.c1z"
    not_sqlite.write_bytes(b"C1ZF\x00" + zstandard.ZstdCompressor().compress(b"hello world" * 1000))
    with pytest.raises(C1zError, match="not a SQLite database"):
        C1zReader(not_sqlite)


def test_reader_rejects_windows_above_128mib(tmp_path: Path) -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=28)
    cctx = zstandard.ZstdCompressor(compression_params=params)
    path = tmp_path / "wide.c1z"
    with open(path, "wb") as f:
        f.write(b"C1ZF\x00")
        with cctx.stream_writer(f, closefd=False) as w:
            w.write(b"x" * 1000)
    with pytest.raises(C1zError, match="window"):
        C1zReader(path)


def test_zero_byte_file_is_an_empty_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty.c1z"
    empty.touch()
    with C1zReader(empty) as r:
        assert r.syncs() == []
        assert list(r.resources()) == []
        assert "v1_grants" in r.table_names()
        with pytest.raises(C1zError, match="no finished sync"):
            r.stats()


def test_concatenated_frames_and_go_streaming_frames_read(tmp_path: Path) -> None:
    path = tmp_path / "go.c1z"
    build_go_c1z(path, frames=3)
    raw = path.read_bytes()
    assert raw[5:10] == b"\x28\xb5\x2f\xfd\x04"  # checksum, no content size: the Go frame header
    with C1zReader(path) as r:
        assert {x.id for x in r.resource_types()} == {"user", "group", "space"}


# --- atomic writes -----------------------------------------------------------------------------------


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    with pytest.raises(RuntimeError), C1zWriter(out) as w:
        w.start_sync("full")
        w.put_resources([user_res("alice")])
        raise RuntimeError("connector blew up")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    _write_small(out)
    before = out.read_bytes()
    with pytest.raises(RuntimeError), C1zWriter(out) as w:
        w.start_sync("full")
        raise RuntimeError("boom")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sync.c1z"]


def test_commit_replaces_target_atomically_and_cleans_temp(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    first = _write_small(out)
    second = _write_small(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sync.c1z"]
    with C1zReader(out) as r:
        ids = [s.sync_id for s in r.syncs()]
    assert ids == [first, second]  # previous syncs are kept, like the Go store


def test_temp_dir_option_is_used_and_emptied(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "out" / "sync.c1z"
    out.parent.mkdir()
    w = C1zWriter(out, temp_dir=scratch)
    assert w.work_dir.parent == scratch
    w.start_sync("full")
    w.end_sync()
    w.commit()
    assert list(scratch.iterdir()) == []
    assert out.exists()


def test_existing_output_that_is_not_a_c1z_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("my notes")
    with pytest.raises(C1zError, match=r"not usable.*bad magic"):
        C1zWriter(out)
    assert out.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_database_is_clean_after_commit(tmp_path: Path) -> None:
    out = tmp_path / "sync.c1z"
    _write_small(out)
    db = tmp_path / "x.db"
    db.write_bytes(zstandard.ZstdDecompressor().decompress(out.read_bytes()[5:]))
    conn = sqlite3.connect(db)
    # A new file uses the writer's larger pages (any SQLite reader reads them).
    assert conn.execute("pragma page_size").fetchone()[0] == NEW_PAGE_SIZE
    assert conn.execute("pragma journal_mode").fetchone()[0] == "delete"
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    # WAL mode would be recorded in the header (bytes 18-19 = 2); legacy rollback mode is 1.
    assert db.read_bytes()[18:20] == b"\x01\x01"
    conn.close()
    assert model.resource_id("user", "alice").resource == "alice"


def test_existing_file_keeps_its_page_size(tmp_path: Path) -> None:
    """A Go-written file (4 KiB pages) updated by a later sync stays a 4 KiB-page file, with both syncs."""
    out = tmp_path / "sync.c1z"
    build_go_c1z(out)
    with C1zWriter(out) as w:
        w.start_sync()
        w.put_resources([user_res("zed")])
        w.end_sync()
    db = tmp_path / "x.db"
    db.write_bytes(zstandard.ZstdDecompressor().decompress(out.read_bytes()[5:], max_output_size=1 << 30))
    conn = sqlite3.connect(db)
    assert conn.execute("pragma page_size").fetchone()[0] == 4096
    assert conn.execute("select count(*) from v1_sync_runs").fetchone()[0] == 2
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    conn.close()
