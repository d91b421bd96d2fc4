"""The lane end to end on sim drivers, a real journal and a real revocation store."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import revocation_issuer, tickets
from agent.app import config
from agent.app.daemon import open_gate
from agent.clock import uuid7
from agent.errors import DriverError
from agent.issuer import Issuer
from agent.journal import PeerEntry
from agent.lane import Outcome
from agent.model import Reason, Verdict
from agent.ports import Scan
from agent.redact import text_digest
from drivers.sim import SimGate, SimScanner
from tests.conftest import WriteConfig


def _scan(text: str, at_ms: int, source: str = "s1") -> Scan:
    return Scan(text, source, at_ms * 1_000_000)


async def test_admit_then_duplicate_with_one_pulse(write_config: WriteConfig, iss: Issuer) -> None:
    text = iss.ticket(event=1, zones=[1])
    async with open_gate(config.load(write_config())) as gate:
        first = await gate.lane.present(_scan(text, 0))
        second = await gate.lane.present(_scan(text, 10_000))
        assert first is not None and second is not None
        assert first.decision.admitted and first.passed
        assert second.decision.reason is Reason.ALREADY_USED
        assert second.decision.detail.startswith("Gate 3, ")
        sim = gate.lane.gate
        assert isinstance(sim, SimGate) and sim.pulses == [first.record.entry_id]  # type: ignore[union-attr]
        rows = await gate.journal.tail(10)
    assert [(r.kind, r.reason) for r in rows] == [("entry", "ok"), ("attempt", "already_used")]


async def test_repeat_window_makes_one_presentation(write_config: WriteConfig, iss: Issuer) -> None:
    text = iss.ticket(event=1, zones=[1])
    async with open_gate(config.load(write_config(repeat_window_ms=2000))) as gate:
        outcomes = [await gate.lane.present(_scan(text, t)) for t in (0, 500, 1900, 3800)]
        other_reader = await gate.lane.present(_scan(text, 3900, source="s2"))
        later = await gate.lane.present(_scan(text, 6000))
        assert [o is None for o in outcomes] == [False, True, True, True]  # sliding window
        assert other_reader is not None and other_reader.decision.reason is Reason.ALREADY_USED
        assert later is not None and later.decision.reason is Reason.ALREADY_USED
        assert await gate.journal.count() == 3


def _refused(at_ms: int, source: str = "s1") -> Scan:
    return Scan("", source, at_ms * 1_000_000, refused="a code of 5,000 characters, over 4,096")


async def test_a_refused_read_joins_the_presentation_it_comes_with(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """A review: a paper ticket's second code (refused by the reader's AIM allow-list) read
    between two reads of the ticket broke the debounce: admit, "not a ticket", "already used"
    for the holder's own ticket. A refused read within the window of a read from that reader
    is part of it; on its own it is one denial per presentation, each under its own ref."""
    text = iss.ticket(event=1, zones=[1])
    async with open_gate(config.load(write_config(repeat_window_ms=2000))) as gate:
        lane = gate.lane
        scans = [_scan(text, 0), _refused(500), _scan(text, 1000), _refused(1500)]
        outcomes = [await lane.present(s) for s in scans]
        assert [o is None for o in outcomes] == [False, True, True, True]
        assert outcomes[0] is not None and outcomes[0].decision.admitted
        alone = [await lane.present(_refused(t)) for t in (10_000, 11_000, 20_000)]
        assert [o is None for o in alone] == [False, True, False]
        denials = [o for o in alone if o is not None]
        assert all(o.decision.reason is Reason.INVALID_FORMAT for o in denials)
        assert denials[0].decision.detail == "a code of 5,000 characters, over 4,096"
        rows = await gate.journal.tail(10)
    assert [(r.kind, r.reason) for r in rows] == [
        ("entry", "ok"),
        ("attempt", "invalid_format"),
        ("attempt", "invalid_format"),
    ]
    assert rows[1].ticket_ref != rows[2].ticket_ref  # two reads, not one ticket twice


async def test_a_code_of_no_ticket_format_joins_the_presentation_it_comes_with(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found in a user trial: a camera read a ticket and the URL code printed beside it; the
    ticket was admitted, the URL decided 0.3 s later as "not a ticket" and the display turned
    to STOP as the holder walked through. Within the window of a read from that reader, a code
    of no ticket format is part of it; on its own, or a ticket-shaped text, it is decided."""
    text = iss.ticket(event=1, zones=[1])
    url = "https://example.org/terms"
    async with open_gate(config.load(write_config(repeat_window_ms=2000))) as gate:
        lane = gate.lane
        first = await lane.present(_scan(text, 0))
        assert first is not None and first.decision.admitted
        assert await lane.present(_scan(url, 300)) is None
        forged = await lane.present(_scan(text[:-4] + "AAAA", 600))  # a ticket's shape: decided
        assert forged is not None and not forged.decision.admitted
        alone = await lane.present(_scan(url, 10_000))
        assert alone is not None and alone.decision.reason is Reason.INVALID_FORMAT
        other = await lane.present(_scan(url, 10_100, source="s2"))  # another reader's read
        assert other is not None and other.decision.reason is Reason.INVALID_FORMAT
        rows = await gate.journal.tail(10)
    # the admission, the forged text, the URL alone and at the other reader: the URL beside
    # the ticket decided nothing
    assert (rows[0].kind, rows[0].reason, len(rows)) == ("entry", "ok", 4)


async def test_codes_beside_a_ticket_do_not_keep_its_window_open(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found in a security trial: a junk code shown every 250 ms kept an admitted ticket's
    window open, so the ticket handed back and shown again 4 s later was ignored: no row, no
    verdict, a passback attempt no one saw. A code beside the ticket is part of its presentation
    but does not prolong it; held in view itself, the junk code is one presentation."""
    text = iss.ticket(event=1, zones=[1])
    url = "https://example.org/"
    async with open_gate(config.load(write_config(repeat_window_ms=2000))) as gate:
        lane = gate.lane
        first = await lane.present(_scan(text, 0))
        assert first is not None and first.decision.admitted
        junk = [await lane.present(_scan(url, t)) for t in range(250, 4001, 250)]
        # Within the ticket's 2 s: part of it; then one presentation of its own, held in view.
        assert [o is None for o in junk] == [t < 2000 or t > 2000 for t in range(250, 4001, 250)]
        again = await lane.present(_scan(text, 4250))
        assert again is not None and again.decision.reason is Reason.ALREADY_USED
        rows = await gate.journal.tail(10)
    assert [(r.kind, r.reason) for r in rows] == [
        ("entry", "ok"),
        ("attempt", "invalid_format"),
        ("attempt", "already_used"),
    ]


async def test_nobody_passed_annuls_and_ticket_works_again(
    write_config: WriteConfig, iss: Issuer
) -> None:
    text = iss.ticket(event=1, zones=[1])
    conf = config.load(write_config(gate="sim://gate?plan=none,pass", passage_timeout_s=0.2))
    async with open_gate(conf) as gate:
        first = await gate.lane.present(_scan(text, 0))
        assert first is not None and first.decision.admitted
        assert first.passed is False and first.annul is not None
        assert first.annul.annuls == first.record.entry_id  # type: ignore[union-attr]
        again = await gate.lane.present(_scan(text, 10_000))
        assert again is not None and again.decision.admitted and again.passed
        kinds = [r.kind for r in await gate.journal.tail(10)]
    assert kinds == ["entry", "annul", "entry"]


async def test_decision_is_durable_before_the_relay_moves(
    write_config: WriteConfig, iss: Issuer
) -> None:
    conf = config.load(write_config())
    seen: list[int] = []

    class CheckingGate(SimGate):
        async def grant(self, direction: str, ref: str) -> None:
            # A separate connection sees the committed row at the moment the relay is told.
            with sqlite3.connect(conf.gate.state_dir / "journal.db") as db:
                row = db.execute(
                    "SELECT gate_seq FROM entries WHERE entry_id = ?", (ref,)
                ).fetchone()
            seen.append(row[0] if row else -1)
            await super().grant(direction, ref)

    async with open_gate(conf, gate_io=CheckingGate(passage_ms=1)) as gate:
        for n in range(3):
            await gate.lane.present(_scan(iss.ticket(event=1, zones=[1]), n * 10_000))
    assert seen == [1, 2, 3]


async def test_revoked_forged_and_garbage_are_recorded_not_raised(
    write_config: WriteConfig, iss: Issuer, keys_dir: Path
) -> None:
    revoked = iss.ticket(event=1, zones=[1])
    delta = revocation_issuer.issue_delta(
        iss.list_key, keys_dir / "rev.state", revoke=[tickets.parse(revoked).revocation_key]
    )
    (keys_dir.parent / "rev-1.json").write_bytes(delta)
    conf = config.load(write_config(revocations=["rev-1.json"]))
    garbage = "TK1:" + "\x00\x07" * 50
    async with open_gate(conf) as gate:
        results: list[Outcome] = []
        for n, text in enumerate(
            [
                revoked,
                garbage,
                "x" * 5000,
                iss.ticket(event=1, zones=[2]),
                iss.ticket(event=2, zones=[1]),
            ]
        ):
            outcome = await gate.lane.present(_scan(text, n * 10_000))
            assert outcome is not None
            results.append(outcome)
        assert [o.decision.reason for o in results] == [
            Reason.REVOKED,
            Reason.INVALID_FORMAT,
            Reason.INVALID_FORMAT,
            Reason.WRONG_ZONE,
            Reason.WRONG_EVENT,
        ]
        rows = await gate.journal.tail(10)
        assert all(r.kind == "attempt" and r.verdict == "deny" for r in rows)
        assert rows[1].ticket_ref == "raw:" + text_digest(garbage)
        assert gate.lane.gate.pulses == []  # type: ignore[attr-defined]
    raw = (conf.gate.state_dir / "journal.db").read_bytes()
    assert revoked.encode() not in raw and b"x" * 100 not in raw


async def test_exit_nobody_used_is_annulled_so_no_second_entry(
    write_config: WriteConfig, iss: Issuer
) -> None:
    text = iss.ticket(event=1, zones=[1])
    conf = config.load(write_config(entry="reentry", passage_timeout_s=0.1))
    async with open_gate(conf, gate_io=SimGate(plan=[True, False])) as gate:
        entered = await gate.lane.present(_scan(text, 0))
        exit_lane = gate.add_lane("out", "exit", SimScanner(), SimGate(plan=[False]))
        fake_exit = await exit_lane.present(_scan(text, 10_000))  # scans out, stays inside
        second = await gate.lane.present(_scan(text, 20_000))  # hands the ticket to a friend
    assert entered is not None and entered.decision.admitted
    assert fake_exit is not None and fake_exit.decision.admitted and fake_exit.annul is not None
    assert second is not None and second.decision.reason is Reason.ALREADY_USED


async def test_gate_fault_annuls_and_lane_goes_on(write_config: WriteConfig, iss: Issuer) -> None:
    class BrokenGate(SimGate):
        async def grant(self, direction: str, ref: str) -> None:
            raise DriverError("relay board unplugged")

    text = iss.ticket(event=1, zones=[1])
    async with open_gate(config.load(write_config()), gate_io=BrokenGate()) as gate:
        first = await gate.lane.present(_scan(text, 0))
        gate.lane.gate = SimGate(passage_ms=1)
        again = await gate.lane.present(_scan(text, 10_000))
    assert first is not None and first.annul is not None and first.annul.detail == "gate fault"
    assert again is not None and again.decision.admitted and again.passed


async def test_journal_failure_keeps_the_gate_shut(write_config: WriteConfig, iss: Issuer) -> None:
    async with open_gate(config.load(write_config())) as gate:
        await gate.journal.close()  # the journal can no longer be written
        outcome = await gate.lane.present(_scan(iss.ticket(event=1, zones=[1]), 0))
        assert outcome is not None
        assert (outcome.decision.verdict, outcome.decision.reason) == (Verdict.DENY, Reason.ERROR)
        assert gate.lane.gate.pulses == []  # type: ignore[attr-defined]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_mutated_tickets_are_never_admitted(
    write_config: WriteConfig, iss: Issuer, data: st.DataObject
) -> None:
    """Bit flips, truncations and garbage through the whole checker: deny, never raise."""
    text = iss.ticket(event=1, zones=[1])
    conf = config.load(write_config())
    async with open_gate(conf) as gate:
        for _ in range(5):
            choice = data.draw(st.integers(0, 3))
            if choice == 0:
                i = data.draw(st.integers(0, len(text) - 1))
                mutated = (
                    text[:i] + data.draw(st.characters(max_codepoint=0x10FFFF)) + text[i + 1 :]
                )
            elif choice == 1:
                mutated = text[: data.draw(st.integers(0, len(text) - 1))]
            elif choice == 2:
                mutated = data.draw(st.text(max_size=400))
            else:
                mutated = text + data.draw(st.text(min_size=1, max_size=20))
            if mutated == text:
                continue
            ev = await gate.checker.evaluate(mutated, gate.journal.history, gate.clock.reading())
            assert not ev.decision.admitted, ev.decision


async def test_each_scan_is_one_journal_job_and_peers_count(
    write_config: WriteConfig, iss: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """History read, decision and insert go to the journal's thread together, once per scan."""
    text, elsewhere = iss.ticket(event=1, zones=[1]), iss.ticket(event=1, zones=[1])
    jobs: list[str] = []
    async with open_gate(config.load(write_config())) as gate:
        stamp = int(gate.clock.now() * 1000) << 16
        peer = PeerEntry(
            entry_id=str(uuid7(stamp >> 16)), gate_id="g7", gate_name="Gate 7", gate_seq=1,
            ticket_ref=tickets.parse(elsewhere).ticket_ref, kind="entry", annuls=None,
            wall_time=gate.clock.now(), hlc=stamp,
        )  # fmt: skip
        assert await gate.journal.add_peer_entries([peer]) == 1
        writer = gate.journal._writer
        assert writer is not None
        run = writer.run

        async def counting(job: Callable[[sqlite3.Connection], Any]) -> Any:
            jobs.append(getattr(job, "__name__", repr(job)))
            return await run(job)

        monkeypatch.setattr(writer, "run", counting)
        outcomes = []
        for n, scanned in enumerate([text, text, elsewhere]):
            outcomes.append(await gate.lane.present(_scan(scanned, n * 10_000)))
            assert len(jobs) == n + 1, jobs
        rows = await gate.journal.tail(3)
    first, again, peer_used = outcomes
    assert first is not None and first.decision.admitted and first.passed
    assert again is not None and again.decision.reason is Reason.ALREADY_USED
    assert peer_used is not None and peer_used.decision.reason is Reason.ALREADY_USED
    assert peer_used.decision.detail.startswith("Gate 7, ")
    assert [(r.kind, r.reason, r.gate_seq) for r in rows] == [
        ("entry", "ok", 1), ("attempt", "already_used", 2), ("attempt", "already_used", 3),
    ]  # fmt: skip
    assert [o.record for o in outcomes if o is not None] == rows
