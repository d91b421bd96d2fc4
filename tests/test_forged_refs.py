"""Forged copies do not frame a real ticket (issue 10, part 7).

A text whose signature was not verified against a trusted key is journalled (and so uploaded, and
counted by the hub's repeated-denial alerts) under a digest of the text itself, never under the
ticket reference it claims. Real lane, real journal file, `gate-agent events` as a real process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from agent import keys, tickets
from agent.app import config
from agent.app.daemon import open_gate
from agent.issuer import Issuer
from agent.model import Reason
from agent.ports import Scan
from agent.redact import short_id, text_digest
from agent.tickets import base45
from tests.conftest import WriteConfig

EXE = (sys.executable, "-m", "agent")


def _flip(text: str, index: int) -> str:
    """``text`` with one bit of body byte ``index`` flipped (negative: counted from the end)."""
    body = bytearray(base45.decode(text[len("TK1:") :]))
    body[index] ^= 0x01
    return "TK1:" + base45.encode(bytes(body))


def _events(path: Path, *args: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [*EXE, "events", "--config", str(path), "--json", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def test_forged_copies_are_journalled_under_their_own_digest(
    write_config: WriteConfig, iss: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    real = iss.ticket(event=1, zones=[1])
    real_ref = tickets.parse(real).ticket_ref
    ticket_id = bytes.fromhex(real_ref.removeprefix("tk1:"))
    forged_a, forged_b = _flip(real, -1), _flip(real, -64)  # last and first signature byte
    unknown = iss.ticket(event=1, zones=[1], ticket_id=ticket_id, kid=8, key=keys.generate())
    assert {tickets.parse(t).ticket_ref for t in (forged_a, forged_b, unknown)} == {real_ref}
    presented = [forged_a, forged_a, forged_a, forged_b, unknown]
    path = write_config()
    conf = config.load(path)
    caplog.set_level(logging.DEBUG)
    async with open_gate(conf) as gate:
        outcomes = []
        for n, text in enumerate(presented):
            outcome = await gate.lane.present(Scan(text, "s1", n * 10_000_000_000))
            assert outcome is not None
            outcomes.append(outcome)
        assert [o.decision.reason for o in outcomes] == [Reason.BAD_SIGNATURE] * 4 + [
            Reason.UNKNOWN_KEY
        ]
        assert all(o.ticket is None for o in outcomes)  # what a forgery claims is not shown
        rows = await gate.journal.tail(10)
        assert [r.ticket_ref for r in rows] == ["raw:" + text_digest(t) for t in presented]
        assert len({r.ticket_ref for r in rows}) == 3  # one ref per distinct text
        assert await gate.journal.history(real_ref) == []
        admitted = await gate.lane.present(Scan(real, "s1", 60_000_000_000))
        assert admitted is not None and admitted.decision.admitted and admitted.passed
        assert admitted.record is not None and admitted.record.ticket_ref == real_ref
        assert [h.kind for h in await gate.journal.history(real_ref)] == ["entry"]

    # Security staff see the forgeries under their own short ids, the real ticket's own history
    # holds only its admission.
    everything = _events(path)
    assert [e["reason"] for e in everything] == ["bad_signature"] * 4 + ["unknown_key", "ok"]
    assert [e["ticket"] for e in everything] == [
        short_id("raw:" + text_digest(t)) for t in presented
    ] + [short_id(real_ref)]
    assert short_id(real_ref) not in [e["ticket"] for e in everything[:-1]]
    assert [e["gate_seq"] for e in _events(path, "--ticket", real)] == [6]
    by_forged_id = _events(path, "--ticket", str(everything[0]["ticket"]))
    assert [e["gate_seq"] for e in by_forged_id] == [1, 2, 3]

    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in presented:
        assert text not in logged and text[4:40] not in logged
        assert f"ticket={short_id('raw:' + text_digest(text))}" in logged  # as `events` shows it
    assert f"ticket={tickets.parse(real).short_id}" in logged  # the real one, once admitted
    assert logged.count(f"ticket={tickets.parse(real).short_id}") == 1
    raw = (conf.gate.state_dir / "journal.db").read_bytes()
    assert not any(text.encode() in raw for text in presented)
