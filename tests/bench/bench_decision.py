"""Decision path benchmark: scanned text in -> decision committed, with a sim gate.

Set-up as the issue asks: 1M revocations installed through a signed snapshot, 100k rows already in
the journal. Then N presentations of fresh tickets (admitted) and re-presentations (denied
already_used) through the real lane; with ``--rotating`` the tickets are rotating ones (TK2, a
second signature to verify: the holder device's P-256 code) and a re-presented code is denied
code_expired. In the same run, the floor: one Ed25519 verify plus one
fsync'd SQLite commit (WAL, synchronous=FULL) of a row like a journal row (the same 20 columns,
in a plain table: the journal's indexes and triggers count as its own cost), and the ratio
admit p50 / floor p50. Beside it, the journal floor: the same verify plus the journal's own
INSERT statement into a copy of the same journal (its schema, indexes, triggers and 100k rows),
on the calling thread with no decision around it: what the journal's schema costs (journal floor
/ floor) apart from what the decision and the thread hand-over cost (admit / journal floor).
One floor sample (the two floors in turn) is taken after each presentation, so all see the same
machine (on a shared machine, measuring them one after the other skewed the ratio either way);
the journal's thread then idles about half a millisecond before each decision, as at a gate where
scans come seconds apart. ``--back-to-back`` runs the decisions one after another instead (the
thread never idles) and the floor in its own loop afterwards: the figure before 2026-12.

    .venv/bin/python tests/bench/bench_decision.py [--revocations 1000000] [--rows 100000] [--scans 2000]
        [--rotating] [--back-to-back]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent import issuer, keys, revocation, revocation_issuer, signed, tickets
from agent.app import config
from agent.app.daemon import freeze_startup_heap, open_gate
from agent.clock import Clock, uuid7
from agent.journal import EntryRecord, Journal, schema
from agent.journal.records import entry_params
from agent.model import Reason, Verdict
from agent.ports import Scan
from drivers.sim import SimGate, SimScanner
from tests.gateconf import gate_toml

CONFIG = gate_toml(
    keys="keys",
    gate={"id": "bench", "zone": None},
    policy={"entry": "single"},
    lane={"repeat_window_ms": 0, "passage_timeout_s": 1.0},
    devices={"gate": "sim://gate?passage_ms=0"},
    status=None,
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def prepare(dir: Path, n_revoked: int, n_rows: int) -> issuer.Issuer:
    issuer.keys_init(dir / "keys", events=[1])
    iss = issuer.Issuer.load(dir / "keys")
    (dir / "gate.toml").write_text(CONFIG)
    state = dir / "state"
    state.mkdir()
    now = int(time.time())
    snapshot = revocation_issuer.make_snapshot(
        version=1,
        issued_at=now,
        expires=now + 86400,
        revoke=[os.urandom(16) for _ in range(n_revoked)],
    )
    store = await revocation.RevocationStore.open(state / "revocations.db")
    await store.apply(
        signed.sign_document("revocations", snapshot, iss.list_key), [iss.list_key.public_key()]
    )
    await store.close()
    journal = await Journal.open(
        state / "journal.db", gate_id="bench", gate_name="bench", clock=Clock(None, assume="synced")
    )
    await journal.close()
    db = sqlite3.connect(state / "journal.db")
    t0 = time.time() - n_rows
    db.executemany(
        "INSERT INTO entries (gate_seq, entry_id, gate_id, lane, ticket_ref, kind, verdict, reason,"
        " wall_time, clock_synced, mono_ns, boot_id, hlc, rev_version) VALUES"
        " (?, ?, 'bench', 'in', ?, 'entry', 'admit', 'ok', ?, 1, 0, 'b', ?, 1)",
        (
            (i, str(uuid.uuid4()), f"tk1:{os.urandom(8).hex()}", t0 + i, int((t0 + i) * 1000) << 16)
            for i in range(1, n_rows + 1)
        ),
    )
    db.commit()
    db.close()
    shutil.copyfile(state / "journal.db", dir / "journal-floor.db")
    return iss


def rotating_codes(iss: issuer.Issuer, n: int) -> list[str]:
    """``n`` rotating tickets (TK2), each bound to its own holder device, as codes made now."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from agent.tickets import tk2

    out = []
    for _ in range(n):
        device = ec.generate_private_key(ec.SECP256R1())
        static = iss.rotating_ticket(tk2.compressed(device.public_key()), event=1)
        out.append(tk2.make_code(static, device, int(time.time())))
    return out


async def decisions(
    dir: Path, iss: issuer.Issuer, n: int, rotating: bool = False, back_to_back: bool = False
) -> dict[str, list[float]]:
    fresh = rotating_codes(iss, n) if rotating else [iss.ticket(event=1) for _ in range(n)]
    conf = config.load(dir / "gate.toml")
    out: dict[str, list[float]] = {"admit": [], REPLAY: [], FLOOR: [], JOURNAL_FLOOR: [], OVER: []}
    floor = Floor(dir, iss)
    journal_floor = JournalFloor(dir, iss)
    try:
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=0)) as gate:
            freeze_startup_heap()  # as the daemon does once its gate is open
            for i, text in enumerate(fresh + fresh[: n // 4]):
                outcome = await gate.lane.present(Scan(text, "bench", time.monotonic_ns()))
                assert outcome is not None
                reason = outcome.decision.reason
                key = (
                    "admit"
                    if outcome.decision.admitted
                    else REPLAY
                    if reason in (Reason.ALREADY_USED, Reason.CODE_EXPIRED)
                    else str(reason)
                )
                if back_to_back:
                    if i >= 50:
                        out.setdefault(key, []).append(outcome.latency_ns / 1e6)
                    continue
                plain = i % 2 == 0
                floor_ms = floor.step(i) if plain else journal_floor.step()
                if i >= 50:  # warm-up
                    out.setdefault(key, []).append(outcome.latency_ns / 1e6)
                    out[FLOOR if plain else JOURNAL_FLOOR].append(floor_ms)
                    if key == "admit" and plain:  # paired: the same moment's disk and load
                        out[OVER].append(outcome.latency_ns / 1e6 - floor_ms)
        if back_to_back:  # the floors in their own loops afterwards, one sample after another
            out[FLOOR] = [floor.step(i) for i in range(n + n // 4)][50:]
            out[JOURNAL_FLOOR] = [journal_floor.step() for _ in range(n + n // 4)][50:]
            del out[OVER]
    finally:
        floor.close()
        journal_floor.close()
    return out


REPLAY = "deny re-presented (history read)"
FLOOR = "floor (verify + fsync'd commit)"
JOURNAL_FLOOR = "journal floor (verify + its INSERT)"
OVER = "admit minus its floor sample"


class Floor:
    """One Ed25519 verify + one fsync'd single-row SQLite commit, as the lane needs at least."""

    def __init__(self, dir: Path, iss: issuer.Issuer) -> None:
        self.ticket = tickets.parse(iss.ticket(event=1))
        self.public = iss.issuer_key.public_key()
        self.db = sqlite3.connect(dir / "floor.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE t (seq INTEGER PRIMARY KEY, entry_id TEXT, gate_id TEXT, lane TEXT,"
            " ticket_ref TEXT, kind TEXT, verdict TEXT, reason TEXT, detail TEXT, flags TEXT,"
            " annuls TEXT, zone INTEGER, wall_time REAL, clock_synced INTEGER, mono_ns INTEGER,"
            " boot_id TEXT, hlc INTEGER, rev_version INTEGER, offline INTEGER, synced_at REAL)"
        )

    def step(self, i: int) -> float:
        """One floor sample, in ms."""
        t = time.perf_counter_ns()
        assert keys.verify(self.public, self.ticket.signature, self.ticket.signed_data)
        now = time.time()
        self.db.execute(
            "INSERT INTO t VALUES (?, ?, 'bench', 'lane-1', ?, 'entry', 'admit', 'ok', '', '',"
            " NULL, NULL, ?, 1, ?, ?, ?, 1, 1, NULL)",
            (
                i, str(uuid.uuid4()), self.ticket.ticket_ref, now, time.monotonic_ns(),
                "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", int(now * 1000) << 16,
            ),
        )  # fmt: skip
        return (time.perf_counter_ns() - t) / 1e6

    def close(self) -> None:
        self.db.close()


class JournalFloor:
    """One Ed25519 verify + the journal's own INSERT (autocommit, fsync'd) into a copy of the
    bench's journal: its schema, indexes, triggers and rows, but no decision and no thread."""

    def __init__(self, dir: Path, iss: issuer.Issuer) -> None:
        self.ticket = tickets.parse(iss.ticket(event=1))
        self.public = iss.issuer_key.public_key()
        self.db = sqlite3.connect(dir / "journal-floor.db", isolation_level=None)
        schema.configure(self.db)
        (self.seq,) = self.db.execute("SELECT MAX(gate_seq) FROM entries").fetchone()

    def step(self) -> float:
        """One sample, in ms."""
        t = time.perf_counter_ns()
        assert keys.verify(self.public, self.ticket.signature, self.ticket.signed_data)
        self.seq += 1
        now = time.time()
        ms = int(now * 1000)
        rec = EntryRecord(
            gate_seq=self.seq, entry_id=str(uuid7(ms)), gate_id="bench", lane="in",
            ticket_ref=f"tk1:{os.urandom(8).hex()}", kind="entry", verdict=Verdict.ADMIT,
            reason=Reason.OK, detail="", flags=frozenset(), annuls=None, zone=None,
            wall_time=now, clock_synced=True, mono_ns=time.monotonic_ns(), boot_id="b",
            hlc=ms << 16, rev_version=1, offline=True, synced_at=None, code_time=None,
            rev_key=None,
        )  # fmt: skip
        self.db.execute(schema.INSERT_ENTRY, entry_params(rec))
        return (time.perf_counter_ns() - t) / 1e6

    def close(self) -> None:
        self.db.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--revocations", type=int, default=1_000_000)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--scans", type=int, default=2000)
    ap.add_argument(
        "--rotating",
        action="store_true",
        help="rotating tickets (TK2: a second, P-256 verify of the holder device's code)",
    )
    ap.add_argument(
        "--back-to-back",
        action="store_true",
        help="decisions one after another, the floor in its own loop afterwards (the journal's"
        " thread never idles; by default a floor sample follows each decision, as a paced gate"
        " leaves the thread idle between scans)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".bench-") as tmp:  # cwd: which disk
        dir = Path(tmp)
        t = time.perf_counter()
        iss = asyncio.run(prepare(dir, args.revocations, args.rows))
        setup_s = time.perf_counter() - t
        lat = asyncio.run(decisions(dir, iss, args.scans, args.rotating, args.back_to_back))
    fl50 = statistics.median(lat[FLOOR])
    rows = []
    for name, values in lat.items():
        rows.append((name, len(values), statistics.median(values), pct(values, 0.99)))
    print(
        f"decision path{' (rotating tickets)' if args.rotating else ''}: "
        f"{args.revocations:,} revocations, {args.rows:,} journal rows "
        f"(set-up {setup_s:.1f} s)"
    )
    print(f"{'case':<34}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}")
    for name, n, p50, p99 in rows:
        print(f"{name:<34}{n:>6}{p50:>10.3f}{p99:>10.3f}")
    admit50 = statistics.median(lat["admit"])
    jfl50 = statistics.median(lat[JOURNAL_FLOOR])
    print(f"ratio admit p50 / floor p50: {admit50 / fl50:.2f}")
    print(
        f"of which the journal's schema (journal floor / floor): {jfl50 / fl50:.2f}; the decision"
        f" and its thread hand-over (admit / journal floor): {admit50 / jfl50:.2f}"
    )
    print(
        json.dumps(
            {
                "bench": "decision",
                "revocations": args.revocations,
                "rows": args.rows,
                "admit_p50_ms": round(admit50, 3),
                "admit_p99_ms": round(pct(lat["admit"], 0.99), 3),
                "format": "tk2" if args.rotating else "tk1",
                "replay_p50_ms": round(statistics.median(lat[REPLAY]), 3),
                "floor_p50_ms": round(fl50, 3),
                "floor_p99_ms": round(pct(lat[FLOOR], 0.99), 3),
                "journal_floor_p50_ms": round(jfl50, 3),
                "overhead_p50_ms": round(statistics.median(lat[OVER]), 3) if OVER in lat else None,
                "back_to_back": args.back_to_back,
                "ratio": round(admit50 / fl50, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
