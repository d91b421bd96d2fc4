"""A stolen gate against a real venue: a hub process (SQLite or PostgreSQL), two honest gates
(the full daemon stack: lanes, journals, sync clients) and a raw HTTP client holding a third
gate's token and its own journal, as a thief with the gate's Pi would. Each test is one attack of
issue 10; each asserts what the venue would see: the ticket still refused at the honest gates,
the alert raised and naming the thief's gate, nothing stored, the hub still answering.

Flooding the hub with connections and the status server with streams: test_hub_flood.py and
test_status_flood.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from agent import tickets
from agent.app import config, gate_commands
from agent.app.daemon import Gate, open_gate
from agent.app.status import StatusServer
from agent.clock import HLC, Clock, uuid7
from agent.issuer import Issuer
from agent.journal import Journal, PeerEntry, queries
from agent.lane import Outcome
from agent.model import Decision, Reason, Verdict
from agent.redact import run_id, run_shown, shared_ref, short_id
from sync import hub_sql, protocol
from sync.protocol import BatchUpload, EntryWire, FeedEntry, Heartbeat
from tests.browser import Browser
from tests.hubgate import feed_entries, get_bytes, get_json, post_json, scan, write_gate
from tests.hubproc import ROOT, HubProcess, HubSetup, add_token, hub_cli, write_hub_config
from tests.pg import pg_server, pg_url  # noqa: F401
from tests.polling import until, until_sync

POISON = (1 << 62) - 1  # the largest HLC a gate took from a peer before HLCs were bounded
NOBODY = Decision(Verdict.DENY, Reason.OK, "nobody passed")
ADMIT = Decision(Verdict.ADMIT, Reason.OK, "")
USED = Decision(Verdict.DENY, Reason.ALREADY_USED, "")  # an attempt: a row as gates write one


@dataclass
class Venue:
    setup: HubSetup
    keys: Path  # the issuing machine's `keys init` folder (gates take root.pub and trust.json)
    store: str | None  # None: SQLite in the hub's state dir; else a PostgreSQL URL
    conf_a: config.Config
    conf_b: config.Config
    thief_token: str
    console: str
    thief: Journal  # the stolen gate's own journal: what it uploads looks like a gate's

    def url(self, path: str) -> str:
        return self.setup.url + path

    async def upload(self, *rows: EntryWire, gate: str = "gate-x") -> tuple[int, dict[str, Any]]:
        body = protocol.encode(BatchUpload(gate, rows))
        return await asyncio.to_thread(
            post_json, self.url(f"/v1/gates/{gate}/entries:batch"), self.thief_token, body
        )

    async def thief_row(self, ref: str, kind: Any = "entry", **kw: Any) -> EntryWire:
        decision = {"annul": NOBODY, "attempt": USED}.get(kind, ADMIT)
        rec = await self.thief.record(
            ticket_ref=ref, kind=kind, decision=decision, lane="in", rev_version=0, **kw
        )
        return EntryWire.from_record(rec)

    async def alerts(self) -> list[dict[str, Any]]:
        page = await asyncio.to_thread(get_json, self.url("/v1/alerts?after=0"), self.console)
        alerts = page["alerts"]
        assert isinstance(alerts, list)
        return alerts

    async def feed(self) -> list[dict[str, object]]:
        return await asyncio.to_thread(
            feed_entries, self.setup.url, self.setup.venue, self.thief_token
        )

    @asynccontextmanager
    async def gates(self) -> AsyncIterator[tuple[Gate, Gate]]:
        """The hub process and both honest gates, online."""
        with HubProcess(self.setup):
            async with open_gate(self.conf_a) as a, open_gate(self.conf_b) as b:
                await until(lambda: _online(a) and _online(b), what="both gates online")
                yield a, b


def _online(gate: Gate) -> bool:
    return gate.hub is not None and gate.hub.online


def _gate_conf(tmp: Path, keys: Path, setup: HubSetup, gate_id: str, name: str) -> config.Config:
    token = add_token(setup, gate_id=gate_id, name=name)
    path = write_gate(tmp / gate_id, keys, gate_id=gate_id, name=name, url=setup.url, token=token)
    return config.load(path)


@pytest.fixture(params=["sqlite", "postgresql"])
async def venue(
    request: pytest.FixtureRequest, tmp_path: Path, keys_dir: Path
) -> AsyncIterator[Venue]:
    store = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, store=store)
    conf_a = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A")
    conf_b = _gate_conf(tmp_path, keys_dir, setup, "gate-b", "Gate B")
    thief_token = add_token(setup, gate_id="gate-x", name="Gate X")
    console = add_token(setup, console="security")
    clock = Clock(assume="synced")
    thief = await Journal.open(tmp_path / "x.db", gate_id="gate-x", gate_name="x", clock=clock)
    try:
        yield Venue(setup, keys_dir, store, conf_a, conf_b, thief_token, console, thief)
    finally:
        await thief.close()


async def _present(gate: Gate, text: str) -> Outcome:
    outcome = await gate.lane.present(scan(text))
    assert outcome is not None
    return outcome


async def _learnt(gate: Gate, ref: str, peer: str) -> None:
    async def known() -> bool:
        return any(h.gate_id == peer for h in await gate.journal.history(ref))

    await until(known, what=f"{gate.journal.gate_id} learns {peer}'s row")


def _integrity(alerts: list[dict[str, Any]], field_words: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["kind"] == "integrity" and field_words in str(a["detail"])]


# --- 1. annulments belong to their gate ----------------------------------------------------------


async def test_a_stolen_gate_cannot_annul_another_gates_entry(venue: Venue, iss: Issuer) -> None:
    text = iss.ticket(event=1, zones=[1])
    async with venue.gates() as (a, b):
        first = await _present(a, text)
        assert first.decision.admitted and first.record is not None
        ref, target = first.record.ticket_ref, first.record.entry_id
        await _learnt(b, ref, "gate-a")
        # The thief reads the venue feed with its token and annuls gate A's admission ...
        assert target in {e["entry_id"] for e in await venue.feed()}
        forged = await venue.thief_row(ref, "annul", annuls=target)
        status, body = await venue.upload(forged)
        assert status == 422 and body["error"] == "refused"
        assert "entries[0].annuls" in body["message"] and "another gate" in body["message"]
        # ... or an entry nobody recorded.
        unknown = await venue.thief_row(ref, "annul", annuls=str(uuid7(int(time.time() * 1000))))
        status, body = await venue.upload(unknown)
        assert status == 422 and "entries[0].annuls" in body["message"]
        assert "unknown" in body["message"]
        # Nothing of it is stored, and the security team sees who tried.
        assert all(e["kind"] != "annul" for e in await venue.feed())
        alerts = _integrity(await venue.alerts(), "annuls")
        assert len(alerts) == 2 and all(al["gates"] == ["Gate X"] for al in alerts)
        # The ticket stays used everywhere.
        assert (await _present(b, text)).decision.reason is Reason.ALREADY_USED
        assert (await _present(a, text)).decision.reason is Reason.ALREADY_USED
        # A hub that let it through would still reopen nothing: gates apply an annulment only
        # from the gate that recorded the entry.
        await b.journal.add_peer_entries([_peer(forged, "Gate X")])
        assert (await _present(b, text)).decision.reason is Reason.ALREADY_USED
        assert (await asyncio.to_thread(_health, venue)) == "ok"


async def test_a_stolen_unit_cannot_reopen_what_it_admitted_before_it_was_taken(
    venue: Venue, iss: Issuer
) -> None:
    # Gate X admitted a ticket and worked on for 40 minutes; then its unit was stolen. The thief
    # knows the admission's boot id and monotonic time from the journal, and dates an annulment
    # 5 s after it: every other gate would let the ticket in again.
    text = iss.ticket(event=1, zones=[1])
    ref = _ref_of(text)
    async with venue.gates() as (a, _):
        entry = await venue.thief_row(ref)
        later = await venue.thief_row(_ref_of(iss.ticket(event=1, zones=[1])))
        later = msgspec.structs.replace(later, mono_ns=entry.mono_ns + 2400 * 10**9)
        assert (await venue.upload(entry, later))[0] == 200
        await _learnt(a, ref, "gate-x")
        forged = await venue.thief_row(ref, "annul", annuls=entry.entry_id)
        forged = msgspec.structs.replace(forged, mono_ns=entry.mono_ns + 5 * 10**9)
        status, body = await venue.upload(forged)
        assert status == 422 and "entries[0].annuls" in body["message"], body
        assert "after rows the gate recorded later" in body["message"]
        assert all(e["kind"] != "annul" for e in await venue.feed())
        assert len(_integrity(await venue.alerts(), "annuls")) == 1
        assert (await _present(a, text)).decision.reason is Reason.ALREADY_USED


def _peer(row: EntryWire, name: str) -> PeerEntry:
    return FeedEntry(
        cursor=1, entry_id=row.entry_id, gate_id=row.gate_id, gate_name=name,
        gate_seq=row.gate_seq, ticket_ref=row.ticket_ref, kind=row.kind, annuls=row.annuls,
        wall_time=row.wall_time, hlc=row.hlc,
    ).to_peer()  # fmt: skip


def _health(venue: Venue) -> str:
    return "ok" if get_json(venue.url("/v1/health"), "none")["ok"] else "down"


# --- 2. time and HLC bounds ----------------------------------------------------------------------


async def test_rows_from_the_future_count_as_of_their_arrival_and_never_stop_learning(
    venue: Venue, iss: Issuer
) -> None:
    async with venue.gates() as (a, b):
        started = time.time()
        # The thief's rows with a poisoned HLC, or a wall time an hour ahead, are stored ...
        row = await venue.thief_row("tk1:" + "00" * 8)
        status, _ = await venue.upload(msgspec.structs.replace(row, hlc=POISON))
        assert status == 200
        later = await venue.thief_row("tk1:" + "01" * 8)
        status, _ = await venue.upload(msgspec.structs.replace(later, wall_time=time.time() + 3600))
        assert status == 200
        alerts = _integrity(await venue.alerts(), "clock runs")
        assert 1 <= len(alerts) <= _hours_since(started)  # one an hour
        assert all(alert["gates"] == ["Gate X"] for alert in alerts)
        # ... and every gate orders them as of their arrival at the hub, not in the future.
        planted = await venue.thief_row("tk1:" + "02" * 8)
        await _plant(venue, msgspec.structs.replace(planted, hlc=POISON))  # as an old hub took it
        for gate in (a, b):
            for ref in (row.ticket_ref, later.ticket_ref, planted.ticket_ref):
                await _learnt(gate, ref, "gate-x")
                (seen,) = await gate.journal.history(ref)
                assert _sane(seen.hlc) and seen.wall_time <= time.time() + 301
        # The gates keep their HLCs near the time and keep learning from each other.
        for first, second in ((a, b), (b, a)):
            text = iss.ticket(event=1, zones=[1])
            admitted = await _present(first, text)
            assert admitted.decision.admitted and admitted.record is not None
            assert _sane(admitted.record.hlc)
            await _learnt(second, admitted.record.ticket_ref, first.journal.gate_id)
            assert (await _present(second, text)).decision.reason is Reason.ALREADY_USED


async def test_a_gate_whose_clock_runs_an_hour_ahead_still_tells_the_venue(
    venue: Venue, iss: Issuer
) -> None:
    # Gate A's clock floor was left an hour ahead (a unit once told its wrong clock was synced):
    # everything it records carries a wall time and an HLC an hour in the future.
    floor = venue.conf_a.gate.state_dir / "clock.floor"
    floor.parent.mkdir(parents=True, exist_ok=True)
    floor.write_text(f"{time.time() + 3600:.6f}\n")
    texts = [iss.ticket(event=1, zones=[1]) for _ in range(3)]
    started = time.time()
    async with venue.gates() as (a, b):
        for text in texts[:2]:
            first = await _present(a, text)
            assert first.decision.admitted and first.record is not None
            assert first.record.wall_time > time.time() + 3500
            # The venue learns the admission: gate B refuses the ticket.
            await _learnt(b, first.record.ticket_ref, "gate-a")
            assert (await _present(b, text)).decision.reason is Reason.ALREADY_USED
            # B has A's row as of its arrival at the hub (+ the bound), not an hour ahead.
            (row,) = [h for h in await b.journal.history(first.record.ticket_ref) if h.peer]
            assert row.wall_time <= time.time() + 301 and _sane(row.hlc)
        # Gate A says so itself: its status is degraded, naming the lead.
        ready, reasons = await StatusServer(a).health()
        assert not ready and any(re.fullmatch(r"clock 3,[56]\d\d s ahead of the hub's", r)
                                 for r in reasons), reasons  # fmt: skip
        # Gate A, its clock still ahead, learns from the venue as before.
        later = await _present(b, texts[2])
        assert later.decision.admitted and later.record is not None
        await _learnt(a, later.record.ticket_ref, "gate-b")
        assert (await _present(a, texts[2])).decision.reason is Reason.ALREADY_USED
        # Security sees the gate and its lead once an hour, not once per row.
        alerts = _integrity(await venue.alerts(), "clock runs")
        assert 1 <= len(alerts) <= _hours_since(started)
        assert all(alert["gates"] == ["Gate A"] for alert in alerts)
        assert re.search(r"clock runs 3,[56]\d\d s ahead", alerts[0]["detail"]), alerts[0]


async def test_a_gate_whose_journal_holds_a_poisoned_hlc_recovers_at_start(
    venue: Venue, iss: Issuer
) -> None:
    # Before HLCs were bounded, gate B followed a poisoned peer row and recorded after it.
    old = iss.ticket(event=1, zones=[1])
    journal_path = venue.conf_b.gate.state_dir / "journal.db"
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    async with await Journal.open(
        journal_path, gate_id="gate-b", gate_name="Gate B", clock=Clock(assume="synced")
    ) as journal:
        poison = await venue.thief_row("tk1:" + "11" * 8)
        await journal.add_peer_entries(  # followed without a bound, as gates did before
            [_peer(msgspec.structs.replace(poison, hlc=POISON), "x")], hlc_ceiling_ms=POISON >> 16
        )
        ref = _ref_of(old)
        rec = await journal.record(ticket_ref=ref, kind="entry", decision=ADMIT, lane="in",
                                   rev_version=0)  # fmt: skip
        assert not _sane(rec.hlc)  # the poisoned journal this test starts from
    async with venue.gates() as (a, b):
        # Its poisoned row is taken by the hub (its HLC bounded by its wall time) ...
        await _learnt(a, ref, "gate-b")
        assert (await _present(a, old)).decision.reason is Reason.ALREADY_USED
        # ... and what it records now carries a sane HLC that peers follow.
        text = iss.ticket(event=1, zones=[1])
        fresh = await _present(b, text)
        assert fresh.decision.admitted and fresh.record is not None and _sane(fresh.record.hlc)
        await _learnt(a, fresh.record.ticket_ref, "gate-b")
        assert (await _present(a, text)).decision.reason is Reason.ALREADY_USED


def _hours_since(started: float) -> int:
    """How many hours of the hub's clock (its alert buckets) a test has touched."""
    return int(time.time() // 3600 - started // 3600) + 1


def _ref_of(text: str) -> str:
    return tickets.parse(text).ticket_ref


def _sane(hlc: int) -> bool:
    return HLC.physical_ms(hlc) / 1000 <= time.time() + 301


async def _plant(venue: Venue, *rows: EntryWire) -> None:
    """Store ``rows`` straight in the hub's database, as a hub without a check would have."""
    now = time.time()
    params = [hub_sql.entry_params(row, now) for row in rows]
    columns = ", ".join(hub_sql.ENTRY_COLUMNS)
    if venue.store is None:
        db = sqlite3.connect(venue.setup.dir / "state" / "hub.db", timeout=10)
        try:
            marks = ", ".join("?" * len(params[0]))
            db.executemany(f"INSERT INTO entries ({columns}) VALUES ({marks})", params)
            db.commit()
        finally:
            db.close()
        return
    conn = await asyncpg.connect(venue.store)
    try:
        marks = ", ".join(f"${i}" for i in range(1, len(params[0]) + 1))
        await conn.executemany(f"INSERT INTO entries ({columns}) VALUES ({marks})", params)
    finally:
        await conn.close()


# --- 2b. rows squatted under a gate's own next gate_seqs ------------------------------------------


async def test_rows_squatted_under_a_gates_next_seqs_are_set_apart_and_the_gate_is_heard_again(
    venue: Venue, iss: Issuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stolen = venue.conf_a.hub.token if venue.conf_a.hub else None  # copied off gate A's unit
    assert stolen
    first, late_text, *held_back = (iss.ticket(event=1, zones=[1]) for _ in range(4))
    copy = await Journal.open(
        tmp_path / "a-copy.db", gate_id="gate-a", gate_name="A", clock=Clock(assume="synced")
    )
    async with copy, _hub(venue.setup), open_gate(venue.conf_b) as b:
        async with open_gate(venue.conf_a) as a:
            await until(lambda: _online(a) and _online(b), what="both gates online")
            admitted = await _present(a, first)
            assert admitted.decision.admitted and admitted.record is not None
            await _learnt(b, admitted.record.ticket_ref, "gate-a")
            # The thief uploads rows as gate A under its next gate_seqs, 2 and 3 ...
            await _copied_row(copy, "tk1:" + "aa" * 8)  # gate_seq 1: A's own, not sent
            squat = [await _copied_row(copy, f"tk1:{i:016x}") for i in (2, 3)]
            assert [row.gate_seq for row in squat] == [2, 3]
            answer = await _upload_as(venue, "gate-a", stolen, *squat)
            assert answer == 200
            # ... so the real gate A's next admissions (its gate_seq 2 and 3) reach no one.
            held = [await _present(a, text) for text in held_back]
            assert [h.record.gate_seq for h in held if h.record] == [2, 3]
            await until(lambda: _upload(a) == "conflict", what="gate A's upload refused")
            # Meanwhile the hub keeps A's refused admissions as claims: gate B learns them, and
            # the tickets are used there too (before claims, B let them in again until the
            # quarantine below).
            for text, h in zip(held_back, held, strict=True):
                assert h.record is not None
                await _learnt(b, h.record.ticket_ref, "gate-a")
                assert (await _present(b, text)).decision.reason is Reason.ALREADY_USED
            # An admission after the first refusal goes up at once, not after the uploader's
            # backoff (found in a user trial: a minute of A's admissions were let in at B).
            late = await _present(a, late_text)
            assert late.decision.admitted and late.record is not None
            await _learnt(b, late.record.ticket_ref, "gate-a")
            assert (await _present(b, late_text)).decision.reason is Reason.ALREADY_USED
            assert _claimed(b, late.record.ticket_ref) == [True]  # `events --ticket` marks it
            # The security team sees the claim in the ticket's history, marked.
            claimed = await _hub_cli(venue, "ticket", short_id(late.record.ticket_ref))
            assert claimed.returncode == 0, claimed.stderr
            (a_row,) = [line for line in claimed.stdout.splitlines() if "(gate-a)" in line]
            assert "(gate-a)  lane -  entry" in a_row  # a claim has no lane (a user trial)
            assert a_row.endswith(
                "CLAIMED: an admission of a refused upload, shared with the gates"
            )

            async def flagged() -> bool:  # the console's gate list shows it: not just "online"
                gates = await asyncio.to_thread(get_json, venue.url("/v1/gates"), venue.console)
                (gate_a,) = [g for g in gates["gates"] if g["gate_id"] == "gate-a"]
                return "uploads_conflict" in gate_a["faults"]

            await until(flagged, what="gate A's uploads refused, in the venue's gate list")
            # And the gate's own health says what it is, not "hub offline" (a user trial).
            reasons = (await StatusServer(a).health())[1]
            # It names where the copy's rows begin: the --from-seq security needs, which the
            # hub's alert cannot tell (it names a refused row, the copy's when the copy lost).
            words = "hub refuses this gate's rows from gate_seq 2: their numbers hold other rows"
            assert any(words in r for r in reasons) and "hub offline" not in reasons, reasons
            # So does `gate-agent status`'s line for the hub (a security trial: it said
            # "hub OFFLINE" while the link, the feed and the heartbeats worked).
            text = gate_commands.summary(await StatusServer(a).status())
            (line,) = [ln for ln in text.splitlines() if ln.startswith("  hub ")]
            assert line.startswith(
                "  hub UPLOADS REFUSED (conflict from gate_seq 2: admissions shared as claims,"
                " exits and annulments held), run "
            ), line
            assert a.hub is not None and a.hub.status()["conflict_from_seq"] == 2
            assert _integrity(await venue.alerts(), "gate_seq 2 reused by another entry_id")
            # The operator: sees what would move, but moves nothing while the gate has a token
            # (the copy would squat again) ...
            dry = await _hub_cli(
                venue, "quarantine", "--gate", "gate-a", "--from-seq", "2", "--dry-run"
            )
            assert dry.returncode == 0, dry.stderr
            assert dry.stdout.splitlines()[-1] == (
                "2 rows of gate gate-a would be set apart (gate_seq 2..3; --dry-run: nothing was"
                " moved); the gate still has 1 token: revoke them first"
            )
            refused = await _hub_cli(venue, "quarantine", "--gate", "gate-a", "--from-seq", "2")
            assert refused.returncode == 1, refused.stderr
            assert "still has 1 token: revoke them first" in refused.stderr
            assert refused.stdout == ""
            revoked = await _hub_cli(venue, "token", "--revoke-gate", "gate-a")
            assert revoked.returncode == 0, revoked.stderr
            assert await _upload_as(venue, "gate-a", stolen, *squat) == 401

            async def told() -> bool:  # the gate still names the --from-seq (found in review)
                reasons = (await StatusServer(a).health())[1]
                return "hub refuses this gate's token (and its rows from gate_seq 2)" in reasons

            await until(told, what="gate A's health once its token is revoked")
            text = gate_commands.summary(await StatusServer(a).status())
            assert "  hub REFUSES THIS GATE'S TOKEN: admissions not shared, run " in text, text
            # ... then gate A's rows from gate_seq 2 on are set apart, and shown.
            done = await _hub_cli(venue, "quarantine", "--gate", "gate-a", "--from-seq", "2")
            assert done.returncode == 0, done.stderr
            *rows, summary = done.stdout.splitlines()
            assert [r.split()[:2] for r in rows] == [["gate_seq", "2"], ["gate_seq", "3"]]
            for row, line in zip(squat, rows, strict=True):
                assert short_id(row.ticket_ref) in line and row.entry_id in line
                assert line.endswith(f"boot {row.boot_id[:8]}")  # to hold against /status
            assert "2 rows of gate gate-a set apart (gate_seq 2..3)" in summary
            assert "quarantined_entries" in summary
            assert _integrity(await venue.alerts(), "set apart 2 rows of Gate A from gate_seq 2")
            again = await _hub_cli(venue, "quarantine", "--gate", "gate-a", "--from-seq", "2")
            assert again.returncode == 1 and "no rows from gate_seq 2" in again.stderr
            # The security team still finds them in the ticket's history, marked.
            shown = await _hub_cli(venue, "ticket", short_id(squat[0].ticket_ref))
            assert shown.returncode == 0, shown.stderr
            head, line = shown.stdout.splitlines()
            assert "1 row at 1 gate (Gate A); 1 of them set apart by a quarantine" in head
            assert line.endswith("SET APART by a quarantine (not in the feed)")
            listed = await _hub_cli(venue, "alerts")
            (moved,) = [line for line in listed.stdout.splitlines() if "set apart 2 rows" in line]
            assert moved.count("SET APART") == 2, moved
            assert all(f"ticket {short_id(r.ticket_ref)}, SET APART" in moved for r in squat)
            # Their revocation keys came from the copy: a short id only they carry revokes nothing.
            revoke = await _hub_cli(venue, "revoke", short_id(squat[0].ticket_ref))
            assert revoke.returncode == 2, revoke.stderr
            assert "only rows a quarantine set apart carry it" in revoke.stderr
            async with Browser(tmp_path / "browser", width=1280, height=900) as page:
                await page.goto(f"{venue.setup.url}/console#token={venue.console}")
                await page.wait_for("document.querySelector('#alerts .alert')")  # script ready
                await page.evaluate(
                    "(() => { document.getElementById('ticket-query').value ="
                    f" '{short_id(squat[0].ticket_ref)}';"
                    " document.querySelector('#ticket-form button').click(); })()"
                )
                await page.wait_for("!document.getElementById('ticket-history').hidden")
                shown_rows = await page.evaluate(
                    "[...document.querySelectorAll('#ticket-history tbody tr')].map(r =>"
                    " [r.classList.contains('set-apart'), r.querySelector('td.flags').textContent])"
                )
                assert shown_rows == [[True, "set apart by a quarantine"]]
                # A claim is marked too (the late admission: A is not heard yet).
                await page.evaluate(
                    "(() => { document.getElementById('ticket-query').value ="
                    f" '{short_id(late.record.ticket_ref)}';"
                    " document.querySelector('#ticket-form button').click(); })()"
                )
                await page.wait_for(
                    "[...document.querySelectorAll('#ticket-history td.flags')]"
                    ".some(td => td.textContent === 'claimed: an admission of a refused upload')"
                )
                # The quarantine's alert shows each row it moved, marked.
                await page.wait_for(
                    "document.querySelectorAll('#alerts .alert .set-apart-badge').length === 2"
                )
                chips = await page.evaluate(
                    "[...document.querySelectorAll('#alerts .alert .entry-ticket')]"
                    ".map(n => n.textContent)"
                )
                assert sorted(chips) == sorted(f"ticket {short_id(r.ticket_ref)}" for r in squat)
                assert page.console_errors == []
        # Gate A's unit back with a new token: its own gate_seq 2 and 3 reach the venue, after
        # the cursor gate B has read to (the moved rows' cursors are not given again).
        token = await asyncio.to_thread(add_token, venue.setup, gate_id="gate-a")
        path = write_gate(
            tmp_path / "gate-a", venue.keys, gate_id="gate-a", name="Gate A", url=venue.setup.url,
            token=token,
        )  # fmt: skip
        async with open_gate(config.load(path)) as a:
            for text, h in zip(held_back, held, strict=True):
                assert h.record is not None
                await _learnt(b, h.record.ticket_ref, "gate-a")
                assert (await _present(b, text)).decision.reason is Reason.ALREADY_USED
            await until(lambda: _upload(a) == "ok", what="gate A's uploads taken again")
            # The feed brings the claimed rows: gate B no longer marks them as claims.
            assert late.record is not None
            ref = late.record.ticket_ref
            await until(lambda: _claimed(b, ref) == [False], what="the claim's row from the feed")
    kept = await _stored(venue, "quarantined_entries")
    assert kept == [(row.gate_seq, row.entry_id, row.ticket_ref) for row in squat]
    assert "hub feed restarted" not in caplog.text  # no gate read the venue's feed again


async def test_the_console_marks_the_claim_in_a_double_admissions_alert(
    venue: Venue, tmp_path: Path
) -> None:
    """A batch refused as a conflict admitted a ticket another gate had admitted: the console's
    alert shows that entry marked as a claim (its badge was drawn by no test; sharing the
    set-apart badge's class once miscounted those, in CI)."""
    clock = Clock(assume="synced")
    other_token = await asyncio.to_thread(add_token, venue.setup, gate_id="gate-y")
    ref = "tk1:" + "5e" * 8
    async with (
        await Journal.open(tmp_path / "y.db", gate_id="gate-y", gate_name="Y", clock=clock) as y,
        await Journal.open(tmp_path / "x2.db", gate_id="gate-x", gate_name="X", clock=clock) as x,
        _hub(venue.setup),
    ):
        assert await _upload_as(venue, "gate-y", other_token, await _copied_row(y, ref)) == 200
        squat = await _copied_row(venue.thief, "tk1:" + "00" * 8)  # a copy's gate_seq 1
        assert await _upload_as(venue, "gate-x", venue.thief_token, squat) == 200
        claimed = await _copied_row(x, ref)  # the real gate's gate_seq 1: a conflict
        assert await _upload_as(venue, "gate-x", venue.thief_token, claimed) == 409
        async with Browser(tmp_path / "browser", width=1280, height=900) as page:
            await page.goto(f"{venue.setup.url}/console#token={venue.console}")
            await page.wait_for("document.querySelector('#alerts .alert .claimed-badge')")
            badges = await page.evaluate(
                "[...document.querySelectorAll('#alerts .alert')].map(a => [a.textContent"
                ".includes('double admission') || a.textContent.includes('admitted at'),"
                " [...a.querySelectorAll('.claimed-badge')].map(b => b.textContent),"
                " a.querySelectorAll('.set-apart-badge').length])"
            )
            assert [b for b in badges if b[0]] == [
                [True, ["claimed: an admission of a refused upload"], 0]
            ], badges
            assert page.console_errors == []


async def test_gates_forget_an_annulment_a_copied_token_wrote_once_it_is_set_apart(
    venue: Venue, iss: Issuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy of gate A's token annuls A's own admission (a gate may annul its own entries):
    gate B learns the annulment and would let the ticket in again. Found in the stolen-gate
    trial: the quarantine took the row out of the feed, but B kept it for good. B now forgets
    it, and the ticket is used at B again."""
    stolen = venue.conf_a.hub.token if venue.conf_a.hub else None
    assert stolen
    text = iss.ticket(event=1, zones=[1])
    copy = await Journal.open(
        tmp_path / "a-copy.db", gate_id="gate-a", gate_name="A", clock=Clock(assume="synced")
    )
    async with copy, venue.gates() as (a, b):
        admitted = await _present(a, text)
        assert admitted.decision.admitted and admitted.record is not None
        ref, target = admitted.record.ticket_ref, admitted.record.entry_id
        await _learnt(b, ref, "gate-a")
        await _copied_row(copy, "tk1:" + "aa" * 8)  # gate_seq 1: A's own, not sent
        forged = await copy.record(
            ticket_ref=ref, kind="annul", decision=NOBODY, lane="in", rev_version=0,
            annuls=target,
        )  # fmt: skip
        assert await _upload_as(venue, "gate-a", stolen, EntryWire.from_record(forged)) == 200

        async def annulled() -> bool:
            return any(h.kind == "annul" for h in await b.journal.history(ref))

        await until(annulled, what="gate B learns the copy's annulment")
        # The operator revokes A's tokens and sets the copy's rows apart. (Logs caught from
        # before the quarantine: gate B may forget the row while the command still runs.)
        with caplog.at_level(logging.WARNING, "sync.client"):
            assert (await _hub_cli(venue, "token", "--revoke-gate", "gate-a")).returncode == 0
            done = await _hub_cli(venue, "quarantine", "--gate", "gate-a", "--from-seq", "2")
            assert done.returncode == 0, done.stderr
            await until(lambda: _not(annulled), what="gate B forgets the set-apart annulment")
            assert (await _present(b, text)).decision.reason is Reason.ALREADY_USED
        assert (
            "hub: forgot 1 row learnt from other gates: exits or annulments a quarantine"
            in caplog.text
        )


async def _not(check: Callable[[], Awaitable[bool]]) -> bool:
    return not await check()


async def test_a_batch_trickling_in_while_its_token_is_revoked_stores_nothing(
    venue: Venue,
) -> None:
    """The token is checked as the request starts and again as the batch is stored: a thief who
    holds an upload open (its body arriving slowly) cannot land rows after the operator revoked
    the token and set apart what it had squatted."""
    row = await venue.thief_row("tk1:" + "bb" * 8)
    body = protocol.encode(BatchUpload("gate-x", (row,)))
    host, port = venue.setup.url.removeprefix("http://").split(":")
    with HubProcess(venue.setup) as hub:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                f"POST /v1/gates/gate-x/entries:batch HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {venue.thief_token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body[:-1]
            )
            await writer.drain()
            # The hub took the token (its log names the gate) and waits for the last byte.
            await until(lambda: "gate gate-x connected" in hub.log_tail(), what="token taken")
            revoked = await _hub_cli(venue, "token", "--revoke-gate", "gate-x")
            assert revoked.returncode == 0, revoked.stderr
            writer.write(body[-1:])
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            assert length is not None, head
            answer = json.loads(await reader.readexactly(int(length[1])))
        finally:
            writer.close()
    assert head.split()[1] == b"401", head
    assert "the token was revoked while the batch arrived" in answer["message"]
    assert await _stored(venue, "entries") == []


def _upload(gate: Gate) -> object:
    return None if gate.hub is None else gate.hub.status()["upload"]


@asynccontextmanager
async def _hub(setup: HubSetup) -> AsyncIterator[None]:
    with HubProcess(setup):
        yield


async def _copied_row(copy: Journal, ref: str) -> EntryWire:
    rec = await copy.record(ticket_ref=ref, kind="entry", decision=ADMIT, lane="in", rev_version=0)
    return EntryWire.from_record(rec)


async def _upload_as(venue: Venue, gate: str, token: str, *rows: EntryWire) -> int:
    body = protocol.encode(BatchUpload(gate, rows))
    url = venue.url(f"/v1/gates/{gate}/entries:batch")
    status, _ = await asyncio.to_thread(post_json, url, token, body)
    return status


def _claimed(gate: Gate, ref: str) -> list[bool]:
    """Whether each row of ``ref`` the gate learnt from others is marked a claim (as `events
    --ticket` reads them)."""
    db = queries.open_readonly(gate.journal.path, gate.journal.gate_id)
    try:
        return [bool(row[-1]) for row in queries.peer_rows(db, ref)]
    finally:
        db.close()


async def _hub_cli(venue: Venue, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(hub_cli, venue.setup, *args)


async def _stored(venue: Venue, table: str) -> list[tuple[int, str, str]]:
    """The hub's rows in ``table`` (entries, quarantined_entries): (gate_seq, entry_id,
    ticket_ref), by gate and gate_seq."""
    sql = f"SELECT gate_seq, entry_id, ticket_ref FROM {table} ORDER BY gate_id, gate_seq"
    if venue.store is None:
        db = sqlite3.connect(venue.setup.dir / "state" / "hub.db", timeout=10)
        try:
            return [tuple(row) for row in db.execute(sql)]
        finally:
            db.close()
    conn = await asyncpg.connect(venue.store)
    try:
        return [(row[0], row[1], row[2]) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


# --- 3. names come from the hub ------------------------------------------------------------------


async def test_a_copy_of_a_gates_token_heartbeating_beside_it_is_an_alert(venue: Venue) -> None:
    stolen = venue.conf_a.hub.token if venue.conf_a.hub else None  # copied off gate A's unit
    assert stolen
    copy_key = secrets.token_hex(16)  # the copy's own run: gate A's is never sent elsewhere
    words = "two units heartbeat as gate Gate A (gate-a)"

    async def alerted() -> list[dict[str, Any]]:
        return _integrity(await venue.alerts(), words)

    async def beat_and_look() -> list[dict[str, Any]]:  # a heartbeat of the copy, as gate A
        hb = Heartbeat(
            gate_id="gate-a", gate_name="A", version="x", outbox_depth=0,
            oldest_unsynced_age_s=None, revocation_version=0, revocation_age_s=None,
            trust_version=0, clock_synced=True, feed_cursor=0, run_key=copy_key,
        )  # fmt: skip
        url = venue.url("/v1/gates/gate-a/heartbeat")
        assert (await asyncio.to_thread(post_json, url, stolen, protocol.encode(hb)))[0] == 200
        return await alerted()

    async with venue.gates() as (a, _):
        await until(lambda: _online(a), what="gate A online")
        # The copy runs beside the gate: whichever run the hub heard first is heard again after
        # the other began (the gate's every 0.2 s, the copy's here).
        await until(beat_and_look, every_s=0.1, what="the two units' alert")
        (alert,) = await alerted()
        assert a.hub is not None
        real, copy = a.hub.status()["run"], run_shown(run_id(copy_key))  # as `status` shows it
        assert {f"run {real} from 127.0.0.1", f"run {copy} from 127.0.0.1"} <= set(
            re.findall(r"run \w+ from 127\.0\.0\.1", alert["detail"])
        ), alert["detail"]
        assert "a copy of its token?" in alert["detail"] and alert["gates"] == ["Gate A"]
        # The console's gate list says so too (the copy's heartbeats overwrite the gate's health).
        gates = await asyncio.to_thread(get_json, venue.url("/v1/gates"), venue.console)
        (gate_a,) = [g for g in gates["gates"] if g["gate_id"] == "gate-a"]
        assert gate_a["faults"][0] == "two units heartbeat (a copy of its token?)"
        # Once (an hour), however long the two take turns.
        for _ in range(5):
            await beat_and_look()
        assert len(await alerted()) == 1


async def test_a_gate_cannot_rename_itself_and_names_are_unique(venue: Venue, iss: Issuer) -> None:
    text = iss.ticket(event=1, zones=[1])
    async with venue.gates() as (_, b):
        beat = Heartbeat(
            gate_id="gate-x", gate_name="Gate A", version="x", outbox_depth=0,
            oldest_unsynced_age_s=None, revocation_version=0, revocation_age_s=None,
            trust_version=0, clock_synced=True, feed_cursor=0,
        )  # fmt: skip
        status, _ = await asyncio.to_thread(
            post_json, venue.url("/v1/gates/gate-x/heartbeat"), venue.thief_token,
            protocol.encode(beat),
        )  # fmt: skip
        assert status == 200
        gates = await asyncio.to_thread(get_json, venue.url("/v1/gates"), venue.console)
        names = {g["gate_id"]: g["gate_name"] for g in gates["gates"]}
        assert names["gate-x"] == "Gate X" and names["gate-a"] == "Gate A"
        # The thief admits a ticket: the honest gates name the thief's gate, not Gate A.
        ref = _ref_of(text)
        status, _ = await venue.upload(await venue.thief_row(ref))
        assert status == 200
        await _learnt(b, ref, "gate-x")
        refused = await _present(b, text)
        assert refused.decision.reason is Reason.ALREADY_USED
        assert refused.decision.detail.startswith("Gate X, ")
    # The operator cannot give a second gate a name the venue already uses.
    done = await asyncio.to_thread(hub_cli, venue.setup, "token", "--gate", "gate-y", "--name",
                                   "gate a")  # fmt: skip
    assert done.returncode != 0 and done.stdout == ""
    assert "already called" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# --- 4. alert budget -----------------------------------------------------------------------------


async def test_an_alert_flood_from_one_gate_collapses_and_hides_no_other_alert(
    venue: Venue, iss: Issuer
) -> None:
    text = iss.ticket(event=1, zones=[1])
    async with venue.gates() as (a, b):
        first = await _present(a, text)
        assert first.decision.admitted and first.record is not None
        template = await venue.thief_row("tk1:" + "22" * 8, "attempt")
        seq, sent = template.gate_seq, 0
        for batch in range(10):  # every row skips a gate_seq: 5,000 integrity alerts (the burst)
            rows = []
            for i in range(protocol.MAX_BATCH):
                seq += 2
                ms = int(time.time() * 1000)
                rows.append(msgspec.structs.replace(
                    template, gate_seq=seq, entry_id=str(uuid7(ms)),
                    ticket_ref=f"tk1:{batch:04x}{i:012x}",
                ))  # fmt: skip
            status, _ = await venue.upload(*rows)
            assert status == 200
            sent += len(rows)
        # An honest gate's alert after the flood: the used ticket tried three times at gate B.
        await _learnt(b, first.record.ticket_ref, "gate-a")
        for _ in range(3):
            assert (await _present(b, text)).decision.reason is Reason.ALREADY_USED

        async def raised() -> bool:
            return any(al["kind"] == "repeated_denials" for al in await venue.alerts())

        await until(raised, what="gate B's repeated-denials alert")
        page = await asyncio.to_thread(get_json, venue.url("/v1/alerts?limit=100"), venue.console)
        newest = page["alerts"]
        assert isinstance(newest, list) and len(newest) <= 100
        ids = [al["alert_id"] for al in newest]
        assert ids == sorted(ids, reverse=True)
        storms = [al for al in newest if al["kind"] == "alert_storm"]
        assert storms and all(al["gates"] == ["Gate X"] for al in storms)
        (honest,) = [al for al in newest if al["kind"] == "repeated_denials"]
        assert honest["gates"] == ["Gate B"] * 3
        every = await venue.alerts()
        from_x = [al for al in every if al["kind"] == "integrity"]
        held = sum(int(str(al["detail"]).rsplit("; ", 1)[1].split()[0]) for al in storms)
        assert len(from_x) + held >= sent  # each hole counted, stored or held
        assert len(from_x) <= 50 * len(storms)  # the default budget per window
        assert len(every) < 200
        # paging back reaches every alert, newest first, none twice
        older = await asyncio.to_thread(
            get_json, venue.url(f"/v1/alerts?before={page['next']}&limit=500"), venue.console
        )
        ids += [al["alert_id"] for al in older["alerts"]]
        assert ids == sorted((al["alert_id"] for al in every), reverse=True)
        assert (await asyncio.to_thread(_health, venue)) == "ok"


async def test_a_flood_of_rows_is_held_at_a_gates_rate_and_the_venue_goes_on(
    venue: Venue, iss: Issuer
) -> None:
    """Each stored row would reach every gate's SD card through the feed: past its burst, a
    stolen gate's new rows are answered 429 with Retry-After, one alert names it, and the honest
    gates still learn each other's admissions at once."""
    async with venue.gates() as (a, b):
        template = await venue.thief_row("tk1:" + "33" * 8)
        await _plant(venue, template)  # the gate was in service: the hub holds its rows
        seq = template.gate_seq + 1
        statuses = []
        for batch in range(11):  # the default burst is 5,000 rows: ten full batches
            rows = []
            for i in range(protocol.MAX_BATCH):
                rows.append(msgspec.structs.replace(
                    template, gate_seq=seq, entry_id=str(uuid7(int(time.time() * 1000))),
                    ticket_ref=f"tk1:{batch:04x}{i:012x}", detail="x" * 200,
                ))  # fmt: skip
                seq += 1
            status, body, retry = await asyncio.to_thread(_post, venue, rows)
            statuses.append(status)
            if status == 200:
                accepted = rows
        assert statuses == [200] * 10 + [429], statuses
        assert body["error"] == "over_quota" and "upload quota" in body["message"]
        assert retry is not None and 1 <= int(retry) <= 25  # 500 rows at 20 a second
        assert (await asyncio.to_thread(_post, venue, accepted))[0] == 200  # a repeat: taken
        assert len(_integrity(await venue.alerts(), "uploads more new rows than 20 a second")) == 1
        stored = [e for e in await venue.feed() if e["gate_id"] == "gate-x"]
        assert len(stored) == 1 + 5000
        text = iss.ticket(event=1, zones=[1])
        admitted = await _present(a, text)
        assert admitted.decision.admitted and admitted.record is not None
        await _learnt(b, admitted.record.ticket_ref, "gate-a")
        assert (await _present(b, text)).decision.reason is Reason.ALREADY_USED


async def test_rows_long_in_json_never_stall_the_feed(venue: Venue, iss: Issuer) -> None:
    """Found by a security trial: 500 rows whose ticket_ref was 512 emoji (1.2 MB uploaded as
    UTF-8, every field within its cap) made a feed page of 3.1 MB (12 bytes an emoji in JSON),
    which every gate refused (over 2 MiB) and asked for again: every feed stalled for good, and
    a ticket admitted at gate A was admitted again at gate B. The hub now refuses a non-ASCII
    ref (every ref a gate makes is ASCII), and rows a hub stored before are served in pages cut
    to fit, flagged ``more``."""
    rows = []
    for i in range(protocol.MAX_BATCH):
        row = await venue.thief_row("tk1:" + f"{i:016x}")
        rows.append(msgspec.structs.replace(row, ticket_ref=chr(0x1F600 + i % 64) * 512))
    async with venue.gates() as (a, b):
        status, body = await venue.upload(*rows[:2])
        assert status == 400 and "entries[0].ticket_ref: expected ASCII" in body["message"]
        await _plant(venue, *rows)  # as stored by a hub before that check
        raw = await asyncio.to_thread(
            get_bytes, venue.url(f"/v1/venues/{venue.setup.venue}/entries?after=0&limit=500&wait=0"),
            venue.thief_token,
        )  # fmt: skip
        page = json.loads(raw)
        assert len(raw) <= protocol.MAX_BODY_BYTES and page["more"] is True
        assert 0 < len(page["entries"]) < protocol.MAX_BATCH
        text = iss.ticket(event=1, zones=[1])
        admitted = await _present(a, text)
        assert admitted.decision.admitted and admitted.record is not None
        await _learnt(b, admitted.record.ticket_ref, "gate-a")
        assert (await _present(b, text)).decision.reason is Reason.ALREADY_USED
        assert len([e for e in await venue.feed() if e["gate_id"] == "gate-x"]) == len(rows)


def _post(venue: Venue, rows: list[EntryWire]) -> tuple[int, dict[str, Any], str | None]:
    """POST a batch as the thief: the status, the answer and its Retry-After (blocking)."""
    request = urllib.request.Request(
        venue.url("/v1/gates/gate-x/entries:batch"),
        data=protocol.encode(BatchUpload("gate-x", tuple(rows))), method="POST",
        headers={"Authorization": f"Bearer {venue.thief_token}",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read()), None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get("Retry-After")


# --- 11. no pretix secret at the hub -------------------------------------------------------------


async def test_pretix_secrets_travel_and_are_matched_as_digests(
    venue: Venue, tmp_path: Path
) -> None:
    secret_ref = "pretix:" + "s3cr3tsecret" * 3
    with HubProcess(venue.setup):
        # the hub refuses a secret in an upload, naming the field
        row = await venue.thief_row(secret_ref)
        assert row.ticket_ref == shared_ref(secret_ref) != secret_ref  # what a gate sends
        status, body = await venue.upload(msgspec.structs.replace(row, ticket_ref=secret_ref))
        assert status == 400 and "entries[0].ticket_ref" in body["message"]
        assert secret_ref[7:] not in str(body)
        status, _ = await venue.upload(row)
        assert status == 200
        feed = await venue.feed()
        assert [e["ticket_ref"] for e in feed] == [shared_ref(secret_ref)]
    # another gate learns the admission under the digest and finds it for the secret it scans
    clock = Clock(assume="synced")
    async with await Journal.open(
        tmp_path / "b.db", gate_id="gate-b", gate_name="Gate B", clock=clock
    ) as journal:
        entry = FeedEntry.from_json(feed[0]).to_peer()
        assert await journal.add_peer_entries([entry]) == 1
        (seen,) = await journal.history(secret_ref)
        assert (seen.gate_id, seen.kind, seen.peer) == ("gate-x", "entry", True)


# --- the same attack against a gate process ------------------------------------------------------


def _journal_rows(state: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of a running gate's journal, read-only (blocking)."""
    path = state / "journal.db"
    if not path.exists():
        return []
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


async def test_a_gate_process_keeps_a_ticket_used_when_a_hub_lets_a_forged_annulment_through(
    venue: Venue, iss: Issuer, tmp_path: Path
) -> None:
    assert venue.conf_b.hub is not None and venue.conf_b.hub.token is not None
    sock = tmp_path / "b-scan.sock"
    conf_b = write_gate(
        tmp_path / "gate-b-process", venue.keys,
        gate_id="gate-b", name="Gate B", url=venue.setup.url, token=venue.conf_b.hub.token,
        scanner=f"sim://socket?path={sock}",
    )  # fmt: skip
    state = conf_b.parent / "state"
    text = iss.ticket(event=1, zones=[1])
    with HubProcess(venue.setup), (tmp_path / "gate-b.log").open("w") as log:
        gate_b = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "run", "--config", str(conf_b),
            stderr=log, cwd=ROOT,
        )  # fmt: skip
        try:
            async with open_gate(venue.conf_a) as a:
                first = await _present(a, text)
                assert first.decision.admitted and first.record is not None
                ref, target = first.record.ticket_ref, first.record.entry_id

                def learnt(kind: str) -> bool:
                    sql = "SELECT entry_id FROM peer_entries WHERE ticket_ref = ? AND kind = ?"
                    return bool(_journal_rows(state, sql, ref, kind))

                await until(lambda: asyncio.to_thread(learnt, "entry"), 30, "B learns A")
                forged = await venue.thief_row(ref, "annul", annuls=target)
                status, _ = await venue.upload(forged)
                assert status == 422
                await _plant(venue, forged)  # a hub that lets it through anyway
                await until(lambda: asyncio.to_thread(learnt, "annul"), 30, "B gets it")
                await asyncio.to_thread(_scan_into, sock, text)

                def decided() -> list[tuple[Any, ...]]:
                    sql = "SELECT verdict, reason FROM entries WHERE ticket_ref = ?"
                    return _journal_rows(state, sql, ref)

                await until(lambda: asyncio.to_thread(lambda: bool(decided())), 30, "B decides")
                assert await asyncio.to_thread(decided) == [("deny", "already_used")]
        finally:
            gate_b.terminate()
            assert await asyncio.wait_for(gate_b.wait(), 30) == 0
    assert "Traceback" not in (tmp_path / "gate-b.log").read_text()


def _scan_into(sock: Path, text: str) -> None:
    """Present ``text`` to a gate process's socket scanner, once its socket is there."""
    until_sync(sock.exists, 30, "the gate's scanner socket appears")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall((text + "\n").encode())
