"""`gate-agent hub ticket ID` and `gate-agent hub alerts [--follow] [--json]` against a real hub
(its store, written by a running hub process from real gate journals' uploads), `hub revoke` given
a short id, and one ticket id everywhere: the hub's alert, `hub ticket`, the gate's `events`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import tickets
from agent.app import config as cfg
from agent.app.daemon import open_gate
from agent.issuer import Issuer
from agent.ports import Scan
from agent.redact import short_id
from drivers.sim import SimGate, SimScanner
from sync.protocol import EntryWire
from tests.conftest import WriteConfig
from tests.hubproc import EXE, ROOT, Gate, hub_cli
from tests.hubvenue import ADMIT, DENIED, Venue, json_line, open_venue, upload


@pytest.fixture
async def venue(tmp_path: Path, keys_dir: Path) -> AsyncIterator[Venue]:
    async with open_venue(tmp_path, keys_dir) as v:
        yield v


async def test_hub_ticket_and_hub_alerts_show_one_id_for_a_ticket(
    venue: Venue, iss: Issuer
) -> None:
    v = venue
    text = iss.ticket(event=1)
    ref = tickets.parse(text).ticket_ref
    sid = short_id(ref)
    assert sid == tickets.parse(text).short_id  # the gate's own id for it
    none = hub_cli(v.setup, "alerts")  # said, not an empty screen (found trying the product)
    assert (none.returncode, none.stdout) == (0, "no alerts at this venue\n")
    assert hub_cli(v.setup, "alerts", "--json").stdout == ""  # JSON lines: none
    await upload(v.a, v.api, ref, lane="north-1", offline=False)
    one = hub_cli(v.setup, "ticket", sid).stdout.splitlines()[0]
    assert one == f"ticket {sid}: 1 row at 1 gate (North A)"  # not "1 rows at 1 gates"
    await upload(v.b, v.api, ref, lane="south-2", offline=True)
    (alert,) = (await v.api.get("/v1/alerts?limit=5", v.console)).json["alerts"]
    assert alert["ticket"] == sid  # the hub's alert names it by the same id
    assert (await v.api.post(f"/v1/alerts/{alert['alert_id']}/ack", b"", v.console)).status == 200

    by_text = hub_cli(v.setup, "ticket", text)
    assert by_text.returncode == 0, by_text.stderr
    lines = by_text.stdout.splitlines()
    assert lines[0] == f"ticket {sid}: 2 rows at 2 gates (North A, South B)"
    assert "North A (gate-a)  lane north-1  entry   ADMIT ok" in lines[1]
    assert "South B (gate-b)  lane south-2  entry   ADMIT ok  decided offline" in lines[2]
    assert text not in by_text.stdout + by_text.stderr
    by_id = hub_cli(v.setup, "ticket", sid.upper())
    assert (by_id.returncode, by_id.stdout) == (0, by_text.stdout)

    unseen = hub_cli(v.setup, "ticket", "00000000")
    assert unseen.returncode == 1 and "nothing recorded" in unseen.stdout
    bad = hub_cli(v.setup, "ticket", "not-a-ticket")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "8-hex ticket short id" in bad.stderr and "Traceback" not in bad.stderr

    as_json = hub_cli(v.setup, "alerts", "--json")
    assert as_json.returncode == 0, as_json.stderr
    (line,) = as_json.stdout.splitlines()
    got = json.loads(line)
    assert got["ticket"] == sid and got["workflow"]["acked_by"] == "security"
    assert [(c["gate"], c["lane"], c["offline"]) for c in got["context"]] == [
        ("North A", "north-1", False),
        ("South B", "south-2", True),
    ]
    plain = hub_cli(v.setup, "alerts")
    assert plain.returncode == 0 and f"double_admission  ticket {sid}" in plain.stdout
    assert "acknowledged by security" in plain.stdout and "offline" in plain.stdout


async def test_hub_revoke_takes_a_short_id_with_one_key_and_lists_several(
    venue: Venue, iss: Issuer
) -> None:
    v = venue
    unknown = hub_cli(v.setup, "revoke", "0badc0de")
    assert unknown.returncode == 2 and "no ticket with this id was seen" in unknown.stderr

    # Rows without a revocation key (gates of an earlier version): the hub says what to give.
    old_gate = iss.ticket(event=1)
    old_ref = tickets.parse(old_gate).ticket_ref
    await upload(v.a, v.api, old_ref, lane="north-1", offline=False)
    keyless = hub_cli(v.setup, "revoke", short_id(old_ref))
    assert keyless.returncode == 2 and "uploaded no revocation key" in keyless.stderr
    assert "token id" in keyless.stderr and len(keyless.stderr.strip().splitlines()) == 1
    assert "version" not in keyless.stdout  # nothing was issued

    # A ticket scanned at both gates: both upload its one key; the short id revokes it.
    async def decide(gate: Gate, text: str) -> None:
        parsed = tickets.parse(text)
        _, rec = await gate.journal.decide_and_record(
            parsed.ticket_ref, lambda _: ADMIT, admit_as="entry", lane="in", rev_version=0,
            rev_key=parsed.revocation_key.hex(),
        )  # fmt: skip
        assert rec.rev_key == parsed.revocation_key.hex()
        assert (await gate.upload(v.api, EntryWire.from_record(rec))).status == 200

    plain = iss.ticket(event=1)
    for gate in (v.a, v.b):
        await decide(gate, plain)
    sid = short_id(tickets.parse(plain).ticket_ref)
    done = hub_cli(v.setup, "revoke", sid.upper())
    assert done.returncode == 0, done.stderr
    key = tickets.parse(plain).revocation_key.hex()
    assert f"revocation key {key} (uploaded by gate-a, gate-b)" in done.stdout
    assert "1 key revoked (list: 1 revoked" in done.stdout

    # Several keys for one ticket (a transfer's old and new tokens; or keys a stolen gate made
    # up): the hub does not pick, it lists them with their gates and revokes nothing.
    ticket_id = bytes.fromhex("00112233445566ff")
    first, second = (iss.ticket(event=1, ticket_id=ticket_id) for _ in range(2))
    await decide(v.a, first)
    await decide(v.b, second)
    sid = short_id(tickets.parse(first).ticket_ref)
    refused = hub_cli(v.setup, "revoke", sid)
    assert refused.returncode == 2 and "2 different revocation keys" in refused.stderr
    for text, gate_id in ((first, "gate-a"), (second, "gate-b")):
        assert f"{tickets.parse(text).revocation_key.hex()} from {gate_id}" in refused.stderr
    assert "version" not in refused.stdout and len(refused.stderr.strip().splitlines()) == 1
    keys = [tickets.parse(t).revocation_key.hex() for t in (first, second)]
    both = hub_cli(v.setup, "revoke", *keys)
    assert both.returncode == 0 and "(list: 3 revoked" in both.stdout, both.stdout

    # `hub ticket` takes the ids `hub revoke` and `check` show: the 32-hex token id (found by
    # the rows uploaded with it) and TK1's 16-hex ticket id (found in a user trial: refused).
    by_plain = hub_cli(v.setup, "ticket", short_id(tickets.parse(plain).ticket_ref)).stdout
    assert hub_cli(v.setup, "ticket", key.upper()).stdout == by_plain
    by_transfer = hub_cli(v.setup, "ticket", sid).stdout
    assert by_transfer.startswith(f"ticket {sid}: 2 rows at 2 gates")
    for token in keys:  # each token of the transferred ticket
        assert hub_cli(v.setup, "ticket", token).stdout == by_transfer
    assert hub_cli(v.setup, "ticket", ticket_id.hex()).stdout == by_transfer
    # A gate that uploads another ticket's row with this key: the hub does not pick.
    liar = tickets.parse(iss.ticket(event=1)).ticket_ref
    _, rec = await v.b.journal.decide_and_record(
        liar, lambda _: ADMIT, admit_as="entry", lane="in", rev_version=0, rev_key=key
    )
    assert (await v.b.upload(v.api, EntryWire.from_record(rec))).status == 200
    both_ids = ", ".join(sorted((short_id(liar), short_id(tickets.parse(plain).ticket_ref))))
    shared = hub_cli(v.setup, "ticket", key)
    assert shared.returncode == 2 and shared.stdout == "", shared.stdout
    assert shared.stderr.strip().endswith(
        f"token id {key}: rows of 2 tickets carry it ({both_ids}); give one of these short ids"
    )
    unseen = hub_cli(v.setup, "ticket", "ef" * 16)
    assert (unseen.returncode, unseen.stdout) == (
        1, f"ticket with token id {'ef' * 16}: nothing recorded at this venue\n",
    )  # fmt: skip


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
async def test_hub_alerts_follow_prints_new_alerts_until_signalled(
    venue: Venue, stop: signal.Signals
) -> None:
    v = venue
    await upload(v.a, v.api, "T-first", lane="north-1", offline=False)
    await upload(v.b, v.api, "T-first", lane="south-1", offline=False)
    proc = await asyncio.create_subprocess_exec(
        *EXE, "hub", "alerts", "--config", str(v.setup.config), "--follow", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        first = await json_line(proc)
        assert first["ticket"] == short_id("T-first")
        for _ in range(3):
            await upload(v.a, v.api, "T-later", lane="north-2", offline=True, decision=DENIED)
        later = await json_line(proc)
        assert (later["kind"], later["ticket"]) == ("repeated_denials", short_id("T-later"))
        proc.send_signal(stop)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert proc.stderr is not None
        assert b"Traceback" not in await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_events_ticket_takes_the_short_id_as_the_console_shows_it(
    write_config: WriteConfig, iss: Issuer
) -> None:
    path = write_config()
    text = iss.ticket(event=1, zones=[1])
    async with open_gate(
        cfg.load(path), scanner=SimScanner(), gate_io=SimGate(passage_ms=5)
    ) as gate:
        await gate.lane.present(Scan(text, "a", time.monotonic_ns()))
        await gate.lane.present(Scan(text, "b", time.monotonic_ns()))
    sid = tickets.parse(text).short_id
    for given in (sid, sid.upper(), text):
        done = events_json(path, given)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert [r["ticket"] for r in rows] == [sid, sid], given
        assert text not in done.stdout


def events_json(path: Path, ticket: str) -> subprocess.CompletedProcess[str]:
    """`gate-agent events --config PATH --ticket TICKET --json`, as run."""
    return subprocess.run(
        [*EXE, "events", "--config", str(path), "--ticket", ticket, "--json"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
    )  # fmt: skip
