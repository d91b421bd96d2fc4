"""The journal on real SQLite files: ordering, durability rules, immutability, peers, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.clock import HLC, Clock, plausible_hlc, uuid7
from agent.errors import JournalError
from agent.journal import (
    AlertRecord,
    DecisionNotRecorded,
    EntryRecord,
    HistoryEntry,
    Journal,
    PeerEntry,
    checkpoint,
    queries,
    read_history,
    schema,
)
from agent.journal.records import HUB_TIME
from agent.model import Decision, Flag, Reason, Verdict
from agent.redact import shared_ref, short_id
from sync.protocol import EntryWire
from tests.polling import until

ADMIT = Decision(Verdict.ADMIT, Reason.OK)
ADMIT_STALE = Decision(Verdict.ADMIT, Reason.OK, flags=frozenset({Flag.OFFLINE, Flag.LIST_STALE}))
DENY_USED = Decision(Verdict.DENY, Reason.ALREADY_USED, detail="Already used at Gate 3")
T0 = 1_750_000_000.0


class FakeWall:
    """A settable wall clock."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def wall() -> FakeWall:
    return FakeWall(T0)


@pytest.fixture
def clock(wall: FakeWall) -> Clock:
    return Clock(assume="synced", wall=wall)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
async def journal(path: Path, clock: Clock) -> AsyncIterator[Journal]:
    j = await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock)
    yield j
    await j.close()


async def admit(j: Journal, ticket_ref: str, lane: str = "L1") -> EntryRecord:
    return await j.record(
        ticket_ref=ticket_ref, kind="entry", decision=ADMIT, lane=lane, rev_version=3
    )


def peer(ticket_ref: str, hlc: int, *, gate: str = "g7", kind: str = "entry") -> PeerEntry:
    return PeerEntry(
        entry_id=str(uuid7(HLC.physical_ms(hlc))),
        gate_id=gate,
        gate_name=f"Gate {gate[1:]}",
        gate_seq=1,
        ticket_ref=ticket_ref,
        kind=kind,
        annuls=None,
        wall_time=HLC.physical_ms(hlc) / 1000,
        hlc=hlc,
    )


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- recording and history ----------------------------------------------------------------------


async def test_record_returns_the_stored_row_with_all_fields(journal: Journal, path: Path) -> None:
    rec = await journal.record(
        ticket_ref="tk1:aa", kind="entry", decision=ADMIT_STALE, lane="L2", rev_version=9, zone=3,
        offline=False,
    )  # fmt: skip
    assert rec.gate_seq == 1
    assert uuid.UUID(rec.entry_id).version == 7
    assert (rec.gate_id, rec.lane, rec.kind) == ("g1", "L2", "entry")
    assert (rec.zone, rec.rev_version) == (3, 9)
    assert (rec.verdict, rec.reason, rec.flags) == (Verdict.ADMIT, Reason.OK, ADMIT_STALE.flags)
    assert rec.wall_time == T0 and rec.clock_synced is True and rec.offline is False
    assert rec.synced_at is None
    assert await journal.tail(1) == [rec]
    # Committed when record() returns: another connection sees it at once.
    with raw(path) as other:
        stored = other.execute("SELECT flags, verdict FROM entries WHERE gate_seq = 1").fetchone()
    assert stored == ("list_stale,offline", "admit")


async def test_history_merges_own_and_peer_rows_in_hlc_order(
    journal: Journal, wall: FakeWall
) -> None:
    first = await admit(journal, "tk1:aa")
    wall.t += 1
    await journal.record(
        ticket_ref="tk1:aa", kind="attempt", decision=DENY_USED, lane="L1", rev_version=3
    )
    wall.t += 1
    annul = await journal.record(
        ticket_ref="tk1:aa", kind="annul", decision=ADMIT, lane="L1", rev_version=3,
        annuls=first.entry_id,
    )  # fmt: skip
    await admit(journal, "tk1:bb")
    later = peer("tk1:aa", (int((T0 + 60) * 1000) << 16))
    earlier = peer("tk1:aa", first.hlc - 1, gate="g3")
    assert await journal.add_peer_entries([later, earlier]) == 2

    history = await journal.history("tk1:aa")

    assert [(h.kind, h.gate_id, h.peer) for h in history] == [
        ("entry", "g3", True),
        ("entry", "g1", False),
        ("annul", "g1", False),
        ("entry", "g7", True),
    ]
    own = history[1]
    assert (own.gate_name, own.lane, own.entry_id, own.wall_time) == (
        "Gate 1", "L1", first.entry_id, T0,
    )  # fmt: skip
    assert history[2].annuls == first.entry_id and history[2].entry_id == annul.entry_id
    assert history[3].gate_name == "Gate 7" and history[3].lane == ""


async def test_attempts_are_recorded_but_never_in_history(journal: Journal) -> None:
    await journal.record(
        ticket_ref="raw:0011", kind="attempt", decision=DENY_USED, lane="L1", rev_version=1
    )
    assert await journal.count() == 1
    assert await journal.history("raw:0011") == []
    assert (await journal.tail(1))[0].detail == "Already used at Gate 3"


async def test_annul_requires_the_annulled_entry_and_only_annul_takes_one(journal: Journal) -> None:
    with pytest.raises(ValueError):
        await journal.record(
            ticket_ref="tk1:aa", kind="annul", decision=ADMIT, lane="L1", rev_version=1
        )
    with pytest.raises(ValueError):
        await journal.record(
            ticket_ref="tk1:aa", kind="entry", decision=ADMIT, lane="L1", rev_version=1, annuls="x"
        )
    assert await journal.count() == 0


async def test_read_history_reads_a_live_journal_without_writing(
    journal: Journal, path: Path
) -> None:
    await admit(journal, "tk1:aa")
    await journal.add_peer_entries([peer("tk1:aa", 1 << 61)])
    expected = await journal.history("tk1:aa")

    assert read_history(path, "tk1:aa", "Gate 1") == expected
    assert read_history(path.with_name("absent.db"), "tk1:aa", "Gate 1") == []

    await journal.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert read_history(path, "tk1:aa", "Gate 1") == expected
    assert sorted(p.name for p in path.parent.iterdir()) == files  # left no -wal/-shm behind


# --- gate_seq -----------------------------------------------------------------------------------


async def test_gate_seq_is_gap_free_across_close_and_reopen(path: Path, clock: Clock) -> None:
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        for i in range(3):
            await admit(j, f"tk1:{i}")
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        for i in range(2):
            await admit(j, f"tk1:{i + 3}")
        assert [r.gate_seq for r in await j.tail(10)] == [1, 2, 3, 4, 5]
        assert await j.count() == 5
        assert await j.check() == []


async def test_a_new_journal_has_small_pages_and_an_old_one_keeps_its_own(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 KiB pages (a commit writes a page per b-tree it touches); a journal made with SQLite's
    default 4 KiB pages before stays as it is, rows and all, and goes on recording."""
    new, old = tmp_path / "new.db", tmp_path / "old.db"
    async with await Journal.open(new, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        await admit(j, "tk1:a")
    with monkeypatch.context() as m:
        m.setattr(schema, "PAGE_SIZE", 4096)  # as journals were made before
        async with await Journal.open(old, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
            await admit(j, "tk1:a")
    async with await Journal.open(old, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        await admit(j, "tk1:b")
        assert [r.ticket_ref for r in await j.tail(10)] == ["tk1:a", "tk1:b"]
        assert await j.check() == []
    sizes = [raw(p).execute("PRAGMA page_size").fetchone()[0] for p in (new, old)]
    assert sizes == [1024, 4096]


async def test_failed_insert_consumes_no_gate_seq(journal: Journal, path: Path) -> None:
    await admit(journal, "tk1:a")
    with raw(path) as other:
        other.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON entries WHEN NEW.ticket_ref = 'tk1:poison' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    with pytest.raises(JournalError, match="disk says no"):
        await admit(journal, "tk1:poison")
    after = await admit(journal, "tk1:b")
    assert after.gate_seq == 2
    assert await journal.check() == []


async def test_cancelled_record_leaves_no_hole_and_no_duplicate(journal: Journal) -> None:
    task = asyncio.create_task(admit(journal, "tk1:a"))
    await asyncio.sleep(0)  # the scenario: cancelled once the insert is queued on its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await admit(journal, "tk1:b")
    assert after.gate_seq == await journal.count()
    assert await journal.check() == []


async def test_concurrent_records_get_distinct_consecutive_seqs(journal: Journal) -> None:
    records = await asyncio.gather(*(admit(journal, f"tk1:{i}") for i in range(50)))
    assert sorted(r.gate_seq for r in records) == list(range(1, 51))
    hlcs = [r.hlc for r in sorted(records, key=lambda r: r.gate_seq)]
    assert hlcs == sorted(set(hlcs))


async def test_check_reports_holes(journal: Journal, path: Path) -> None:
    for i in range(5):
        await admit(journal, f"tk1:{i}")
    with raw(path) as other:  # simulate tampering: drop the guard, then delete a fact
        other.execute("DROP TRIGGER entries_no_delete")
        other.execute("DELETE FROM entries WHERE gate_seq = 3")
    problems = await journal.check()
    assert len(problems) == 1
    assert "holes" in problems[0] and "end at 3" in problems[0]


# --- immutability -------------------------------------------------------------------------------


async def test_entries_are_immutable_except_synced_at_and_order(
    journal: Journal, path: Path
) -> None:
    rec = await admit(journal, "tk1:aa")
    with raw(path) as other:
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            other.execute("UPDATE entries SET verdict = 'deny' WHERE gate_seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            other.execute("DELETE FROM entries")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            other.execute(
                "INSERT OR REPLACE INTO entries SELECT 2, entry_id, gate_id, lane, 'tk1:zz', kind, "
                "verdict, reason, detail, flags, annuls, zone, wall_time, clock_synced, mono_ns, "
                "boot_id, hlc, rev_version, offline, synced_at, code_time, rev_key, order_hlc FROM entries"
                " WHERE gate_seq = 1"
            )
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            other.execute(
                "INSERT INTO entries SELECT 7, 'other-id', gate_id, lane, ticket_ref, kind, "
                "verdict, reason, detail, flags, annuls, zone, wall_time, clock_synced, mono_ns, "
                "boot_id, hlc, rev_version, offline, synced_at, code_time, rev_key, order_hlc FROM entries"
                " WHERE gate_seq = 1"
            )
        other.execute("UPDATE entries SET synced_at = 1.0 WHERE gate_seq = 1")
        other.execute("UPDATE entries SET order_hlc = 1 WHERE gate_seq = 1")  # the venue's order
    assert await journal.tail(5) == [dataclasses.replace(rec, synced_at=1.0)]


# --- outbox -------------------------------------------------------------------------------------


async def test_unsynced_and_mark_synced(journal: Journal) -> None:
    for i in range(5):
        await admit(journal, f"tk1:{i}")
    assert [r.gate_seq for r in await journal.unsynced()] == [1, 2, 3, 4, 5]
    assert [r.gate_seq for r in await journal.unsynced(limit=2)] == [1, 2]

    await journal.mark_synced(3, at=T0 + 10)
    await journal.mark_synced(4, at=T0 + 20)
    assert [r.gate_seq for r in await journal.unsynced()] == [5]
    # The first acknowledgement time is kept.
    assert [r.synced_at for r in await journal.tail(5)] == [T0 + 10] * 3 + [T0 + 20, None]


# --- peers --------------------------------------------------------------------------------------


async def test_peer_entries_are_idempotent_and_skip_own_and_malformed(journal: Journal) -> None:
    batch = [peer("tk1:aa", 1 << 40), peer("tk1:bb", 2 << 40)]
    assert await journal.add_peer_entries(batch) == 2
    assert await journal.add_peer_entries(batch) == 0
    assert await journal.add_peer_entries([]) == 0
    junk = [peer("tk1:aa", 3 << 40, gate="g1"), peer("tk1:aa", 4 << 40, kind="teleport"),
            peer("tk1:aa", 1 << 63)]  # fmt: skip
    assert await journal.add_peer_entries(junk) == 0
    assert [h.entry_id for h in await journal.history("tk1:aa")] == [batch[0].entry_id]


async def test_peer_entries_too_far_ahead_are_said_once_not_each_time_they_come_again(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """An integrator's trial: pretix lists the same check-ins each round, and a gate behind
    its peers logged "N peer entries carry an HLC too far ahead" for them every round."""
    ahead = [peer("t1", (int(T0 * 1000) + 3_600_000) << 16)]  # an hour past the gate's time
    for _ in range(3):
        await journal.add_peer_entries(ahead)
    said = [r for r in caplog.records if "too far ahead" in r.getMessage()]
    assert len(said) == 1


async def test_record_while_peers_are_stored_is_committed_on_return(
    journal: Journal, path: Path
) -> None:
    batch = [peer(f"tk1:{i}", (1 << 40) + i) for i in range(2_500)]
    storing = asyncio.create_task(journal.add_peer_entries(batch))
    await asyncio.sleep(0)  # the scenario: the big batch is queued first, the admission after it
    rec = await admit(journal, "tk1:mine")
    with raw(path) as other:
        visible = other.execute("SELECT COUNT(*) FROM entries WHERE gate_seq = ?", (rec.gate_seq,))
        assert visible.fetchone() == (1,)
    assert await storing == 2_500
    assert await journal.add_peer_entries(batch) == 0


async def test_peer_hlc_pushes_own_hlc_forward(journal: Journal) -> None:
    remote = (int(T0 * 1000) + 60_000) << 16
    await journal.add_peer_entries([peer("tk1:aa", remote)])
    rec = await admit(journal, "tk1:aa")
    assert rec.hlc > remote
    assert [h.peer for h in await journal.history("tk1:aa")] == [True, False]


# --- opening and recovery -----------------------------------------------------------------------


async def test_hlc_and_clock_floor_continue_across_reopen(path: Path, wall: FakeWall) -> None:
    async with await Journal.open(
        path, gate_id="g1", gate_name="Gate 1", clock=Clock(assume="synced", wall=wall)
    ) as j:
        last = await admit(j, "tk1:aa")
        await j.add_peer_entries([peer("tk1:aa", last.hlc + 1_000)])
    wall.t = 1_000.0  # rebooted without RTC: the wall clock is in 1970
    clock = Clock(wall=wall)
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        assert clock.now() == T0
        rec = await admit(j, "tk1:aa")
    assert rec.hlc > last.hlc + 1_000
    assert rec.wall_time == T0 and rec.clock_synced is False


async def test_a_gate_behind_its_peers_keeps_their_order_across_reopen(
    path: Path, wall: FakeWall
) -> None:
    # No NTP, the clock an hour behind; the hub's time let the gate follow its peers' HLCs.
    wall.t = T0 - 3600
    clock = Clock(assume="unsynced", wall=wall)
    remote = int(T0 * 1000) << 16
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        ceiling = int((T0 + 300) * 1000)  # the hub's time + the bound, as the sync client says
        await j.add_peer_entries([peer("tk1:aa", remote)], hlc_ceiling_ms=ceiling)
        before = await admit(j, "tk1:bb")
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        after = await admit(j, "tk1:cc")
    assert remote < before.hlc < after.hlc  # what it knew stays before what it records
    assert EntryWire.from_record(after).hlc == after.hlc  # and travels as it is


async def test_peer_rows_of_one_hlc_keep_their_gates_order(journal: Journal) -> None:
    """The hub gives rows far ahead of its clock their arrival as their time, so one gate's
    entry and exit can share an HLC: the history keeps the gate's order (gate_seq), not the
    entry_ids' (a review found an exit put before its entry, the ticket then outside)."""
    hlc = int(T0 * 1000) << 16
    ids = sorted((str(uuid7(int(T0 * 1000))) for _ in range(2)), reverse=True)
    entry = dataclasses.replace(peer("tk1:aa", hlc), entry_id=ids[0], gate_seq=7)
    exit_ = dataclasses.replace(peer("tk1:aa", hlc, kind="exit"), entry_id=ids[1], gate_seq=8)
    await journal.add_peer_entries([exit_, entry])
    assert [h.kind for h in await journal.history("tk1:aa")] == ["entry", "exit"]


async def test_an_echo_from_the_venue_places_a_row_recorded_ahead(journal: Journal) -> None:
    """A review: a gate whose clock ran an hour ahead saw its own exit after an entry that came
    later at another gate (the venue orders its row as of arrival at the hub), so under reentry
    it let a second person in. The hub's echo of the row now places it in this gate's history;
    an echo never moves a row later, and other gates' rows are not touched."""
    exit_ = await journal.record(
        ticket_ref="tk1:aa", kind="exit", decision=ADMIT, lane="out", rev_version=0
    )
    later = peer("tk1:aa", exit_.hlc - (1 << 16), gate="g2")  # B's entry, 1 ms earlier here ...
    await journal.add_peer_entries([later])
    assert [h.kind for h in await journal.history("tk1:aa")] == ["entry", "exit"]
    # ... but the venue put this gate's exit 2 ms before it: the echo says so.
    echo = dataclasses.replace(
        peer("tk1:aa", exit_.hlc - (3 << 16), gate="g1", kind="exit"), entry_id=exit_.entry_id
    )
    assert await journal.add_peer_entries([echo]) == 0  # not stored as a peer row
    assert [h.kind for h in await journal.history("tk1:aa")] == ["exit", "entry"]
    # An echo never moves a row later: not past its own HLC, nor past an earlier echo.
    for hlc in (exit_.hlc + (9 << 16), exit_.hlc - (2 << 16)):
        await journal.add_peer_entries([dataclasses.replace(echo, hlc=hlc)])
    history = await journal.history("tk1:aa")
    assert [h.kind for h in history] == ["exit", "entry"] and history[0].hlc == echo.hlc
    row = (await journal.tail(1))[0]
    assert row.hlc == exit_.hlc  # the row itself (and what it uploads) is unchanged


async def test_a_tool_reads_the_history_of_a_journal_not_yet_upgraded(
    journal: Journal, path: Path
) -> None:
    """A review: `check --config` reads the journal read-only; after an update and before the
    daemon's restart the file is still schema 2, without order_hlc."""
    await admit(journal, "tk1:aa")
    await journal.close()
    with raw(path) as other:
        other.execute("ALTER TABLE entries DROP COLUMN order_hlc")
        other.execute("ALTER TABLE peer_entries DROP COLUMN claimed")
        other.execute("PRAGMA user_version = 2")
    (seen,) = read_history(path, "tk1:aa", "Gate 1")
    assert seen.kind == "entry" and not seen.peer


def alert(entry: EntryRecord, finding: str = "order", kind: str = "order_not_valid") -> AlertRecord:
    return AlertRecord(kind, finding, entry.entry_id, entry.ticket_ref, "pretix", entry.wall_time,
                       None, "its order not paid")  # fmt: skip


async def test_an_alert_is_kept_once_per_entry_and_finding_across_restarts(
    journal: Journal, path: Path, clock: Clock
) -> None:
    """Found in an integrator's trial: pretix alerts were de-duplicated in memory, so a restart
    (or a list learnt anew) raised them all again, and `events` showed none of them. The
    journal keeps them, one per entry and finding, the ticket as its shared ref (a pretix
    secret never goes into the alerts, which retention does not prune)."""
    first = await admit(journal, "pretix:SECRETSECRET")
    second = await admit(journal, "pretix:SECRETSECRET")
    assert await journal.record_alert(alert(first))
    assert not await journal.record_alert(alert(first))  # charged back, then expired: one
    assert await journal.record_alert(alert(first, "entry", "duplicate_entry"))
    assert await journal.record_alert(alert(second))
    # Only the same finding again is passed over: an alert the table refuses is an error (a
    # review: OR IGNORE took a NOT NULL violation for an alert kept before, and said nothing).
    with pytest.raises(JournalError, match=r"cannot record alert.*NOT NULL"):
        await journal.record_alert(dataclasses.replace(alert(second, "entry"), at=None))  # type: ignore[arg-type]
    await journal.close()
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as again:
        assert not await again.record_alert(alert(first))
        count, kept = await again.alerts(2)
    assert count == 3 and [(a.entry_id, a.finding) for a in kept] == [
        (first.entry_id, "entry"),
        (second.entry_id, "order"),
    ]
    assert [a.alert_id for a in kept] == [2, 3] and kept[0].raised_at == clock.now()
    with raw(path) as db:
        refs = {r for (r,) in db.execute("SELECT ticket_ref FROM alerts")}
    assert refs == {shared_ref("pretix:SECRETSECRET")}
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert len(queries.alerts(db, short=short_id("pretix:SECRETSECRET"))) == 3
        assert len(queries.alerts(db, ticket_ref="pretix:SECRETSECRET")) == 3
        assert queries.alerts(db, short=short_id("pretix:OTHER")) == []


async def test_a_schema_3_journal_gets_its_alerts_table(
    journal: Journal, path: Path, clock: Clock
) -> None:
    """An updated gate's journal of schema 3 is upgraded at start; a tool reading it before
    (`events --alerts` between the update and the daemon's restart) finds no alerts."""
    entry = await admit(journal, "tk1:aa")
    await journal.close()
    with raw(path) as other:
        other.execute("DROP TABLE alerts")
        other.execute("ALTER TABLE peer_entries DROP COLUMN claimed")
        other.execute("PRAGMA user_version = 3")
    with contextlib.closing(queries.open_readonly(path, "g1")) as tool:
        assert queries.alerts(tool) == [] and queries.alert_count(tool) == 0
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as again:
        assert await again.record_alert(alert(entry))
        assert (await again.alerts(10))[0] == 1
    with raw(path) as other:
        assert other.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)


async def test_a_synced_pretix_row_keeps_its_secret_as_its_digest(
    journal: Journal, path: Path
) -> None:
    """Found in a security lead's trial: a pretix ticket's ref is its secret (its check-in is
    uploaded with it), and the journal kept it for good, so every copy of the file, or a stolen
    unit's disk, handed out the secrets of the tickets the gate had let in (a re-entry venue's
    holders outside). Once a row is synced its ref is the secret's digest: its history reads on,
    the file holds no copy, and no other change of a ref is taken."""
    ref = "pretix:" + "S3CR3TS3CR3T" * 3
    first = await admit(journal, ref)
    other = await admit(journal, "tk1:aa")
    await admit(journal, ref)  # not yet uploaded: the uploader needs the secret
    await journal.mark_synced(other.gate_seq, T0)
    with raw(path) as db:
        refs = [r for (r,) in db.execute("SELECT ticket_ref FROM entries ORDER BY gate_seq")]
        assert refs == [shared_ref(ref), "tk1:aa", ref]
        with pytest.raises(sqlite3.OperationalError, match="no such function: shared_ref"):
            db.execute("UPDATE entries SET ticket_ref = 'x' WHERE gate_seq = 2")  # fails closed
        db.create_function("shared_ref", 1, shared_ref, deterministic=True)  # as the writer has it
        digest = shared_ref("pretix:another")
        # Another ticket's digest (a review: the shape alone was checked), a digest of a row not
        # synced, of a synced row's digest, of a ref that is no secret: all refused.
        for seq, value, synced in ((3, digest, T0), (3, shared_ref(ref), None),
                                   (1, digest, T0), (1, "pretix:other", T0), (2, digest, T0)):  # fmt: skip
            with pytest.raises(sqlite3.IntegrityError, match="immutable"):
                db.execute(
                    "UPDATE entries SET ticket_ref = ?, synced_at = ? WHERE gate_seq = ?",
                    (value, synced, seq),
                )
    seen = await journal.history(ref)
    assert len(seen) == 2 and seen[0].entry_id == first.entry_id
    assert len(await journal.history("tk1:aa")) == 1
    assert [r.ticket_ref for r in await journal.unsynced()] == [ref]
    await journal.mark_synced(3, T0, only=True)
    assert await journal.checkpoint()
    secret = ref.removeprefix("pretix:").encode()
    for file in path.parent.glob(path.name + "*"):
        assert secret not in file.read_bytes(), file


async def test_a_schema_4_journal_keeps_its_synced_pretix_secrets_as_digests(
    journal: Journal, path: Path, clock: Clock
) -> None:
    """An updated gate's journal of schema 4 holds the secrets of its synced pretix rows: the
    upgrade keeps them as their digests (none left in the file as the gate runs on), and from
    then on a ref takes no other change. Also a journal taken back to schema 4 as the README
    says, which keeps schema 5's ref trigger (a trial: it refused the upgrade for good)."""
    ref = "pretix:" + "0LDS3CR3T" * 4
    await admit(journal, ref)
    await admit(journal, ref)
    await journal.mark_synced(1, T0, only=True)
    # Learnt before 2026-12-02, another device's check-in was kept under its secret too.
    peer_ref = "pretix:" + "P33RS3CR3T" * 4
    await journal.add_peer_entries([peer(peer_ref, int(T0 * 1000) << 16)])
    await journal.close()
    with raw(path) as other:  # back to schema 4: the secrets kept, the ref under the old trigger
        other.executescript(
            "DROP TRIGGER entries_ref_digest_only; DROP TRIGGER entries_no_update;"
            f"UPDATE entries SET ticket_ref = '{ref}';"
            f"UPDATE peer_entries SET ticket_ref = '{peer_ref}';"
            f"{schema._NO_UPDATE_TRIGGER_2}; {schema._REF_TRIGGER};"
            "ALTER TABLE peer_entries DROP COLUMN claimed; PRAGMA user_version = 4;"
        )
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as again:
        assert len(await again.history(ref)) == 2 and len(await again.history(peer_ref)) == 1
        assert [r.ticket_ref for r in await again.unsynced()] == [ref]
        for file in (path, path.with_name(path.name + "-wal")):  # checkpointed at once
            assert b"P33RS3CR3T" not in file.read_bytes(), file
    with raw(path) as other:
        refs = [r for (r,) in other.execute("SELECT ticket_ref FROM entries ORDER BY gate_seq")]
        assert refs == [shared_ref(ref), ref]
        assert other.execute("SELECT ticket_ref FROM peer_entries").fetchall() == [
            (shared_ref(peer_ref),)
        ]
        assert other.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            other.execute("UPDATE entries SET lane = 'x'")


async def test_an_upgrade_is_all_or_nothing_and_never_of_another_gate_s_journal(
    journal: Journal, path: Path, clock: Clock
) -> None:
    """Found in an integrator's trial: each step of an upgrade was its own transaction, and the
    journal's owner was checked after them: another gate's journal, or a full disk half way,
    was left at a schema the version before refuses (no going back in the middle of an
    event). The owner is checked first and the steps are one transaction."""
    await admit(journal, "pretix:" + "S3CR3T" * 5)
    await journal.add_peer_entries([peer("pretix:" + "P33R" * 8, int(T0 * 1000) << 16)])
    await journal.close()
    with raw(path) as other:  # a schema 3 journal, whose step to 5 fails on the way
        other.executescript(
            "DROP TABLE alerts; DROP TRIGGER entries_ref_digest_only;"
            "ALTER TABLE peer_entries DROP COLUMN claimed; PRAGMA user_version = 3;"
            f"UPDATE peer_entries SET ticket_ref = 'pretix:{'P33R' * 8}';"  # as learnt then
            "CREATE TRIGGER boom BEFORE UPDATE ON peer_entries"
            " BEGIN SELECT RAISE(ABORT, 'disk full, say'); END;"
        )
    with pytest.raises(JournalError, match="belongs to gate 'g1', not 'g2'"):
        await Journal.open(path, gate_id="g2", gate_name="Gate 2", clock=clock)
    with pytest.raises(JournalError, match=r"cannot create or upgrade the journal.*disk full"):
        await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock)
    with raw(path) as other:
        assert other.execute("PRAGMA user_version").fetchone() == (3,)
        tables = {n for (n,) in other.execute("SELECT name FROM sqlite_schema")}
        assert "alerts" not in tables and "entries_ref_digest_only" not in tables
        other.execute("DROP TRIGGER boom")
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock):
        pass
    with raw(path) as other:
        assert other.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)


async def test_peer_hlcs_past_the_ceiling_are_stored_but_not_followed(
    journal: Journal, wall: FakeWall
) -> None:
    bogus = (1 << 62) - 1
    await journal.add_peer_entries([peer("tk1:aa", bogus), peer("tk1:bb", int(T0 * 1000) << 16)])
    rec = await admit(journal, "tk1:cc")
    assert HLC.physical_ms(rec.hlc) <= int(T0 * 1000) + 1  # the honest peer only
    assert [h.peer for h in await journal.history("tk1:aa")] == [True]  # still counts
    assert plausible_hlc(bogus, T0) == int(T0 * 1000) << 16
    assert plausible_hlc(rec.hlc + (3600_000 << 16), T0) == rec.hlc + (3600_000 << 16)


async def test_unsynced_readings_do_not_raise_the_floor(path: Path, wall: FakeWall) -> None:
    clock = Clock(assume="unsynced", wall=wall)
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        await admit(j, "tk1:aa")
    assert clock.floor == 0.0


async def test_rows_decided_on_the_hubs_time_do_not_raise_the_floor(
    path: Path, wall: FakeWall
) -> None:
    clock = Clock(assume="unsynced", wall=wall)
    clock.set_reference(T0 + 3600)  # a hub an hour ahead: trusted, used, not written down
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        rec = await admit(j, "tk1:aa")
    assert rec.clock_synced and rec.wall_time >= T0 + 3600
    assert clock.floor == 0.0
    # Nor at the next start, when the journal sets the floor from its rows; the row still reads
    # back (and uploads) as decided on a trusted time.
    restarted = Clock(assume="unsynced", wall=wall)
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=restarted) as j:
        assert await j.tail(1) == [rec]
        assert EntryWire.from_record(rec).clock_synced is True
    assert restarted.floor == 0.0
    with raw(path) as db:
        assert db.execute("SELECT clock_synced FROM entries").fetchall() == [(HUB_TIME,)]


async def test_journal_of_another_gate_is_refused(path: Path, clock: Clock) -> None:
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock):
        pass
    with pytest.raises(JournalError, match="belongs to gate 'g1'") as info:
        await Journal.open(path, gate_id="g2", gate_name="Gate 2", clock=clock)
    assert str(path) in str(info.value)


async def test_gate_may_be_renamed(path: Path, clock: Clock) -> None:
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        await admit(j, "tk1:aa")
    async with await Journal.open(path, gate_id="g1", gate_name="North 1", clock=clock) as j:
        assert [h.gate_name for h in await j.history("tk1:aa")] == ["North 1"]


@pytest.fixture
def garbage_path(path: Path) -> Path:
    path.write_bytes(b"this is not a database, just some bytes " * 200)
    return path


async def test_non_sqlite_file_is_refused(garbage_path: Path, clock: Clock) -> None:
    path = garbage_path
    with pytest.raises(JournalError) as info:
        await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock)
    assert str(path) in str(info.value)


async def test_foreign_sqlite_database_is_refused(path: Path, clock: Clock) -> None:
    with raw(path) as other:
        other.execute("CREATE TABLE customers (name TEXT)")
    with pytest.raises(JournalError, match="not a gate-agent journal"):
        await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock)
    with raw(path) as other:
        other.execute("PRAGMA application_id = 1234")
    with pytest.raises(JournalError, match="not a gate-agent journal"):
        await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock)


async def test_newer_schema_version_is_refused(path: Path, clock: Clock) -> None:
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock):
        pass
    with raw(path) as other:
        other.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError, match=f"schema version {schema.SCHEMA_VERSION + 1}"):
        await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock)


async def test_missing_directory_is_a_journal_error(tmp_path: Path, clock: Clock) -> None:
    with pytest.raises(JournalError):
        await Journal.open(tmp_path / "no" / "j.db", gate_id="g1", gate_name="Gate 1", clock=clock)


async def test_pragmas_wal_and_full_sync(journal: Journal, path: Path) -> None:
    with raw(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert other.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)


async def test_expect_write_wakes_the_writer_and_jobs_run_in_order(journal: Journal) -> None:
    # The lane announces every decision's write before its signature check; announcements
    # (even many in a row) are not jobs: the rows that follow keep their order and seqs.
    for _ in range(3):
        journal.expect_write()
    first = await admit(journal, "tk1:aa")
    journal.expect_write()
    second = await admit(journal, "tk1:bb")
    assert (first.gate_seq, second.gate_seq) == (1, 2)
    assert [r.ticket_ref for r in await journal.unsynced()] == ["tk1:aa", "tk1:bb"]


def _size(path: Path) -> int:
    return path.stat().st_size


@pytest.mark.slow
async def test_decisions_never_checkpoint_the_wal_a_worker_does_within_seconds(
    journal: Journal, path: Path
) -> None:
    # The database file grows only when the WAL is copied into it (a checkpoint). 400 rows are
    # well past SQLite's own 1,000-page mark, which would have made one of these commits copy
    # the log; here none does, and the background checkpoint (every 5 s while written) does.
    size = _size(path)
    started = time.monotonic()
    for i in range(400):
        await admit(journal, f"tk1:{i:04x}")
    frames = _size(path.with_name(path.name + "-wal")) // (24 + schema.PAGE_SIZE)  # WAL frames
    assert frames > 1000  # ~2,200 pages here
    if time.monotonic() - started < checkpoint.EVERY_S:  # no background checkpoint due yet
        assert _size(path) == size
    n = 400

    async def written_and_copied() -> bool:
        nonlocal n
        n += 1
        await admit(journal, f"tk1:{n:04x}")  # writes keep coming, as at a gate in use
        return _size(path) > size

    await until(written_and_copied, within_s=checkpoint.EVERY_S + 10, what="a checkpoint")
    with raw(path) as db:  # everything the decisions wrote is in the database file itself
        assert db.execute("SELECT COUNT(*) FROM entries").fetchone() == (n,)


async def test_a_checkpoint_that_cannot_start_never_fails_the_write_after_it(
    journal: Journal, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No worker thread to be had (here: the loop's executor refuses work): the checkpoint is
    # one warning, and the write it followed stands (an admission must not become an error).
    loop = asyncio.get_running_loop()
    refusing = ThreadPoolExecutor(max_workers=1)
    refusing.shutdown()
    loop.set_default_executor(refusing)
    later = checkpoint.Checkpointer(path, every_s=0.0)
    try:
        later.wrote()
    finally:
        loop.set_default_executor(ThreadPoolExecutor())
    assert "background WAL checkpoint not started" in caplog.text
    assert (await admit(journal, "tk1:aa")).gate_seq == 1
    await later.close()
    later.wrote()  # closed: starts nothing, says nothing more
    assert caplog.text.count("not started") == 1


async def test_closed_journal_raises_and_close_is_idempotent(journal: Journal) -> None:
    await journal.close()
    await journal.close()
    journal.expect_write()  # harmless once closed: the write itself then says so
    with pytest.raises(JournalError, match="closed"):
        await admit(journal, "tk1:aa")
    with pytest.raises(JournalError, match="closed"):
        await journal.history("tk1:aa")


# --- indexing -----------------------------------------------------------------------------------


def _bulk_fill(path: Path, rows: int) -> None:
    """Append ``rows`` entries (and as many peer rows) directly, respecting the triggers."""
    with raw(path) as db:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO entries (gate_seq, entry_id, gate_id, lane, ticket_ref, kind, verdict, "
            "reason, wall_time, clock_synced, mono_ns, boot_id, hlc, rev_version) "
            "VALUES (?, ?, 'g1', 'L1', ?, 'entry', 'admit', 'ok', ?, 1, 0, 'b', ?, 1)",
            ((i, f"e{i}", f"tk1:{i:08x}", T0, i) for i in range(1, rows + 1)),
        )
        db.executemany(
            "INSERT INTO peer_entries VALUES (?, 'g7', 'Gate 7', ?, ?, 'entry', NULL, ?, ?, ?, 0)",
            ((f"p{i}", i, f"tk1:{i:08x}", T0, i, T0) for i in range(1, rows + 1)),
        )
        db.execute("COMMIT")


async def test_history_lookup_uses_the_ticket_indexes_at_100k_rows(
    journal: Journal, path: Path
) -> None:
    _bulk_fill(path, 100_000)
    with raw(path) as db:
        plan = " | ".join(
            row[3]
            for row in db.execute(
                "EXPLAIN QUERY PLAN " + queries.HISTORY, ("g1", "Gate 1", "x", "x", "x", "x")
            )
        )
        unsynced_plan = " | ".join(
            row[3]
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM entries WHERE synced_at IS NULL "
                "ORDER BY gate_seq LIMIT 500"
            )
        )
    assert "USING INDEX entries_ticket_ref" in plan
    assert "USING INDEX peer_entries_ticket_ref" in plan
    assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", "")
    assert "entries_unsynced" in unsynced_plan
    # The rows were written behind the open journal's back; a journal (re)opened sees them.
    reopened = await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=journal._clock)
    try:
        history = await reopened.history("tk1:00000042")
        assert await reopened.history("tk1:never-seen") == []
    finally:
        await reopened.close()
    assert [(h.entry_id, h.peer) for h in history] == [("e66", False), ("p66", True)]


async def test_history_of_a_cancelled_record_is_never_lost(journal: Journal) -> None:
    """The in-memory set of tickets with history learns a ref before its insert is attempted."""
    task = asyncio.create_task(admit(journal, "tk1:cancelled"))
    await asyncio.sleep(0)  # the scenario: cancelled right after it started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    rows = await journal.tail(5)
    history = await journal.history("tk1:cancelled")
    assert len(history) == sum(1 for r in rows if r.ticket_ref == "tk1:cancelled")


# --- crash safety -------------------------------------------------------------------------------

_WRITER = """
import asyncio, sys
from pathlib import Path
from agent.clock import Clock
from agent.journal import Journal
from agent.model import Decision, Reason, Verdict

async def main() -> None:
    clock = Clock(assume="synced")
    j = await Journal.open(Path(sys.argv[1]), gate_id="g1", gate_name="Gate 1", clock=clock)
    decision = Decision(Verdict.ADMIT, Reason.OK)
    while True:
        rec = await j.record(ticket_ref="tk1:crash", kind="entry", decision=decision, lane="L1",
                             rev_version=1)
        print(rec.gate_seq, flush=True)  # the point where the gate would be told to open

asyncio.run(main())
"""


async def test_kill_9_never_loses_an_acknowledged_entry_or_leaves_a_hole(
    path: Path, clock: Clock
) -> None:
    rng = random.Random(7)
    for _ in range(5):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITER, str(path), stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        acknowledged = 0
        deadline = asyncio.get_running_loop().time() + rng.uniform(0.6, 1.2)
        while asyncio.get_running_loop().time() < deadline:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
            if line:
                acknowledged = int(line)
        proc.kill()
        await proc.wait()
        async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
            assert await j.check() == []
            assert await j.count() >= acknowledged > 0


async def test_checkpoint_truncates_the_wal_while_a_reader_held_it(
    journal: Journal, path: Path
) -> None:
    """A reader's snapshot keeps SQLite from resetting the WAL; the daemon's checkpoint does."""
    reader = raw(path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM entries").fetchone()  # holds a snapshot
    for i in range(300):
        await admit(journal, f"tk1:wal{i}")
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 100_000
    reader.execute("COMMIT")
    reader.close()
    assert await journal.checkpoint() is True
    assert wal.stat().st_size == 0
    assert await journal.count() == 300


# --- decide and record in one job ---------------------------------------------------------------


async def test_decide_and_record_decides_on_the_history_and_records_durably(
    journal: Journal, path: Path
) -> None:
    first = await admit(journal, "tk1:a")
    await journal.add_peer_entries([peer("tk1:b", (int(T0 * 1000) - 5_000) << 16)])
    seen: dict[str, list[str]] = {}

    def deciding(ref: str) -> Callable[[Sequence[HistoryEntry]], Decision]:
        def decide(history: Sequence[HistoryEntry]) -> Decision:
            seen[ref] = [h.entry_id for h in history]
            return DENY_USED if history else ADMIT

        return decide

    results = [
        await journal.decide_and_record(ref, deciding(ref), admit_as="entry", lane="L1",
                                        rev_version=3)
        for ref in ("tk1:a", "tk1:b", "tk1:c")
    ]  # fmt: skip
    assert seen["tk1:a"] == [first.entry_id] and seen["tk1:c"] == []
    assert len(seen["tk1:b"]) == 1
    assert [(d, r.kind, r.reason, r.gate_seq) for d, r in results] == [
        (DENY_USED, "attempt", Reason.ALREADY_USED, 2),
        (DENY_USED, "attempt", Reason.ALREADY_USED, 3),
        (ADMIT, "entry", Reason.OK, 4),
    ]
    with raw(path) as other:  # committed when the call returned
        assert other.execute("SELECT MAX(gate_seq) FROM entries").fetchone() == (4,)
    assert await journal.history("tk1:c") == [
        HistoryEntry("entry", "g1", "Gate 1", "L1", T0, results[2][1].entry_id, None,
                     results[2][1].hlc, False, gate_seq=results[2][1].gate_seq)
    ]  # fmt: skip


async def test_decide_and_record_failure_carries_the_decision_and_no_seq(
    journal: Journal, path: Path
) -> None:
    with raw(path) as other:
        other.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON entries WHEN NEW.ticket_ref = 'tk1:poison' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    with pytest.raises(DecisionNotRecorded, match="disk says no") as info:
        await journal.decide_and_record(
            "tk1:poison", lambda _: ADMIT, admit_as="exit", lane="L1", rev_version=3
        )
    assert info.value.decision == ADMIT
    assert (await admit(journal, "tk1:b")).gate_seq == 1
    assert await journal.check() == []
