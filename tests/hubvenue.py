"""A venue for the console tests: a real hub process, a console token named "security", and two
gates' real journals whose rows the tests upload (:class:`tests.hubproc.Gate`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agent.clock import Clock
from agent.journal import Journal, Kind
from agent.model import Decision, Reason, Verdict
from sync.protocol import EntryWire
from tests.hubproc import Api, Gate, HubProcess, HubSetup, add_token, write_hub_config

ADMIT = Decision(Verdict.ADMIT, Reason.OK)
DENIED = Decision(Verdict.DENY, Reason.ALREADY_USED, "already used")


async def json_line(proc: asyncio.subprocess.Process) -> dict[str, object]:
    """The next line of ``hub alerts --follow --json`` (its process ``proc``), as an object."""
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert raw, "hub alerts --follow ended"
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


@dataclass
class Venue:
    setup: HubSetup
    console: str  # a console token named "security"
    api: Api
    a: Gate
    b: Gate


@contextlib.asynccontextmanager
async def open_venue(
    tmp_path: Path,
    keys_dir: Path,
    *,
    store: str | None = None,
    names: tuple[str, str] = ("North A", "South B"),
) -> AsyncIterator[Venue]:
    """The hub running (SQLite, or ``store``'s URL) with gates ``gate-a`` and ``gate-b`` named
    ``names``; their journals are closed and the hub stopped on exit."""
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, store=store)
    console = add_token(setup, console="security")
    gates: list[Gate] = []
    try:
        for gate_id, name in zip(("gate-a", "gate-b"), names, strict=True):
            journal = await Journal.open(
                tmp_path / f"{gate_id}.db", gate_id=gate_id, gate_name=name,
                clock=Clock(assume="synced"),
            )  # fmt: skip
            gates.append(Gate(gate_id, name, add_token(setup, gate_id=gate_id, name=name), journal))
        with HubProcess(setup):
            async with aiohttp.ClientSession() as session:
                yield Venue(setup, console, Api(session, setup.url), gates[0], gates[1])
    finally:
        for gate in gates:
            await gate.journal.close()


async def row(
    gate: Gate, ref: str, *, lane: str, offline: bool, kind: Kind = "entry",
    decision: Decision = ADMIT, annuls: str | None = None,
) -> EntryWire:  # fmt: skip
    """A row recorded in ``gate``'s journal, as uploaded."""
    rec = await gate.journal.record(
        ticket_ref=ref, kind=kind, decision=decision, lane=lane, rev_version=0, offline=offline,
        annuls=annuls,
    )  # fmt: skip
    return EntryWire.from_record(rec)


async def upload(
    gate: Gate, api: Api, ref: str, *, lane: str, offline: bool, decision: Decision = ADMIT
) -> None:
    """Record a decision (an entry when admitted, else an attempt) and upload it."""
    kind: Kind = "entry" if decision.admitted else "attempt"
    entry = await row(gate, ref, lane=lane, offline=offline, kind=kind, decision=decision)
    assert (await gate.upload(api, entry)).status == 200
