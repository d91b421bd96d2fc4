"""Durable small files (agent.fsutil): every byte written or none kept, whatever os.write does."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from agent.fsutil import sqlite_live, sqlite_readonly, write_atomic, write_new

DATA = b'{"type": "delta", "version": 7}\n' * 100


@pytest.fixture
def short_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """os.write as on a nearly full disk or USB stick: at most 100 bytes a call."""
    real = os.write
    calls: list[int] = []

    def write(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        return real(fd, bytes(data[:100]))

    monkeypatch.setattr(os, "write", write)
    return calls


@pytest.mark.parametrize("writer", [write_new, write_atomic])
def test_a_short_write_is_written_on_to_the_end(
    short_writes: list[int], tmp_path: Path, writer: object
) -> None:
    """Found in review: a short write was taken for the whole, so a revocation delta could be
    recorded as issued while its file held only its first part (every gate would refuse it
    and every delta after it)."""
    path = tmp_path / "rev-7.json"
    writer(path, DATA)  # type: ignore[operator]
    assert path.read_bytes() == DATA and len(short_writes) == len(DATA) // 100


def test_a_write_that_writes_nothing_fails_and_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    path = tmp_path / "rev-7.json"
    with pytest.raises(OSError, match="nothing more could be written"):
        write_new(path, DATA)
    assert not path.exists()
    (tmp_path / "kept").write_bytes(b"old")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "kept", DATA)
    assert (tmp_path / "kept").read_bytes() == b"old"


def test_write_new_never_replaces_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rev-1.json"
    path.write_bytes(b"published")
    with pytest.raises(FileExistsError):
        write_new(path, DATA)
    assert path.read_bytes() == b"published"


def test_a_database_behind_a_link_is_read_as_its_writer_leaves_it(tmp_path: Path) -> None:
    """A review: the -wal file was looked for beside the link, but SQLite keeps it beside the
    file the link points to: with its writer at work, a reader opened it immutable and saw an
    empty database."""
    real = tmp_path / "data" / "journal.db"
    real.parent.mkdir()
    link = tmp_path / "journal.db"
    link.symlink_to(real)
    with contextlib.closing(sqlite3.connect(real)) as writer:
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("CREATE TABLE t (x)")
        writer.execute("INSERT INTO t VALUES (1)")
        writer.commit()
        assert sqlite_live(link) and sqlite_readonly(link).endswith("?mode=ro")
        with contextlib.closing(sqlite3.connect(sqlite_readonly(link), uri=True)) as reader:
            assert reader.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert not sqlite_live(link) and sqlite_readonly(link).endswith("?immutable=1")
