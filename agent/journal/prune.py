"""Journal retention: drop entries the hub already holds once they are old enough.

Entries are immutable facts and the journal refuses deletes (a trigger). Pruning is the one way
out, and only for rows that are both *synced* (acknowledged upstream, so the venue still has
them) and older than the cutoff by their wall time and by the time they were synced. It removes
a prefix of ``gate_seq`` and never the newest row, so the counter continues and the rows that
remain are still gap-free from ``meta.pruned_through + 1``; :meth:`Journal.check` reads that.
Learnt peer entries older than the cutoff go too (the hub has them; the feed cursor is kept).

Each batch is its own short ``BEGIN IMMEDIATE`` transaction that lifts the delete trigger, deletes,
records the new ``pruned_through`` and puts the trigger back: a crash leaves either all of that or
none of it, and a running gate's next write waits at most one batch. SQLite reuses the freed pages,
so a journal pruned on a schedule stops growing; the file does not shrink (VACUUM would hold the
write lock for as long as it takes to copy the file, which a gate deciding scans cannot afford).

A pruned ticket's admission no longer counts against it at this gate: keep more than the longest
time a ticket stays valid (an event's days, a season pass's season).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import agent.journal.schema as schema
from agent.errors import JournalError
from agent.journal.queries import pruned_through

BATCH = 2000  # rows per transaction: a few ms of write lock on an SD card


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one prune did and what it left."""

    entries: int  # own entries deleted
    peer_entries: int
    pruned_through: int  # every gate_seq up to this one is gone (0: none ever)
    kept: int  # own entries left
    kept_unsynced: int  # of those, not yet acknowledged upstream (never pruned)
    free_pages: int  # pages SQLite will reuse before the file grows again
    page_size: int


def prune(
    path: Path,
    older_than_s: float,
    *,
    now: float | None = None,
    batch: int = BATCH,
    stop: threading.Event | None = None,
    gate_id: str | None = None,
) -> Pruned:
    """Prune the journal at ``path`` (see the module doc); raises JournalError.

    ``stop`` set (the gate shutting down) ends the work after the current batch. ``gate_id``: the
    journal must be that gate's (another gate's journal copied here is refused).
    """
    stopping = stop.is_set if stop is not None else lambda: False
    if not path.exists():
        raise JournalError(f"{path}: no journal here (is [gate] state_dir right?)")
    cutoff = (time.time() if now is None else now) - older_than_s
    try:
        db = sqlite3.connect(path, timeout=10, isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path}: {exc}") from exc
    try:
        schema.require_journal(db, path, gate_id)
        db.execute("PRAGMA busy_timeout = 10000")
        entries = peers = 0
        while not stopping() and (done := _prune_batch(db, cutoff, batch)):
            entries += done
        while not stopping() and (done := _prune_peers(db, cutoff, batch)):
            peers += done
        return _summary(db, entries, peers)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot prune journal {path}: {exc}") from exc
    finally:
        db.close()


def _prune_batch(db: sqlite3.Connection, cutoff: float, batch: int) -> int:
    """Delete the next run of prunable rows (at most ``batch``); returns how many."""
    db.execute("BEGIN IMMEDIATE")
    try:
        low, high = db.execute("SELECT MIN(gate_seq), MAX(gate_seq) FROM entries").fetchone()
        if low is None:
            db.execute("ROLLBACK")
            return 0
        # The first row that must stay bounds the prefix (looked for in this batch's range only,
        # so each batch costs O(batch) under the write lock); the newest row always stays.
        end = low + batch - 1
        (stop,) = db.execute(
            "SELECT IFNULL(MIN(gate_seq), ?) FROM entries WHERE gate_seq BETWEEN ? AND ?"
            " AND (synced_at IS NULL OR synced_at >= ? OR wall_time >= ? OR wall_time IS NULL)",
            (end + 1, low, end, cutoff, cutoff),
        ).fetchone()
        upto = min(stop - 1, high - 1, end)
        if upto < low:
            db.execute("ROLLBACK")
            return 0
        with schema.without_delete_guard(db):
            deleted = db.execute("DELETE FROM entries WHERE gate_seq <= ?", (upto,)).rowcount
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('pruned_through', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(upto),),
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return int(deleted)


def _prune_peers(db: sqlite3.Connection, cutoff: float, batch: int) -> int:
    cur = db.execute(
        "DELETE FROM peer_entries WHERE rowid IN (SELECT rowid FROM peer_entries"
        " WHERE wall_time < ? AND received_at < ? LIMIT ?)",
        (cutoff, cutoff, batch),
    )
    return int(cur.rowcount)


def _summary(db: sqlite3.Connection, entries: int, peers: int) -> Pruned:
    kept, unsynced = db.execute(
        "SELECT COUNT(*), COUNT(*) - COUNT(synced_at) FROM entries"
    ).fetchone()
    (free,) = db.execute("PRAGMA freelist_count").fetchone()
    (page,) = db.execute("PRAGMA page_size").fetchone()
    return Pruned(entries, peers, pruned_through(db), kept, unsynced, free, page)
