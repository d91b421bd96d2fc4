"""A gate stopped (SIGTERM) while a lane is deciding: the admission it journalled is carried out.

Found by the chaos harness (tests/chaos/, a clock step restarts a gate with SIGTERM): the stop
cancelled the lane between the journal's commit and the relay, leaving an admission on file (at the
hub, counted, the ticket used up) whose turnstile never opened and which nothing annulled.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from agent.app import config
from agent.app.daemon import open_gate
from agent.issuer import Issuer
from drivers.sim import SimGate, SimScanner
from tests.conftest import WriteConfig


async def test_a_stop_mid_decision_still_opens_the_gate_it_journalled(
    write_config: WriteConfig, iss: Issuer
) -> None:
    conf = config.load(write_config())
    async with open_gate(conf) as gate:
        lane = gate.lane
        scanner, sim = lane.scanner, lane.gate
        assert isinstance(scanner, SimScanner) and isinstance(sim, SimGate)
        run = asyncio.create_task(lane.run())
        # Another writer holds the journal: the lane's insert waits for it (busy_timeout)...
        other = sqlite3.connect(conf.gate.state_dir / "journal.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            scanner.feed(iss.ticket(event=1, zones=[1]))
            for _ in range(50):  # the scan reaches the lane, the lane its journal job
                await asyncio.sleep(0)
            run.cancel()  # ...and the stop lands while the decision is being committed
        finally:
            other.execute("ROLLBACK")
            other.close()
        with pytest.raises(asyncio.CancelledError):
            await run
        rows = await gate.journal.tail(5)
    assert [(r.kind, r.verdict.value) for r in rows] == [("entry", "admit")]
    assert sim.pulses == [rows[0].entry_id]


async def test_a_second_stop_does_not_cut_the_presentation_either(
    write_config: WriteConfig, iss: Issuer
) -> None:
    conf = config.load(write_config())
    async with open_gate(conf) as gate:
        lane = gate.lane
        scanner, sim = lane.scanner, lane.gate
        assert isinstance(scanner, SimScanner) and isinstance(sim, SimGate)
        run = asyncio.create_task(lane.run())
        other = sqlite3.connect(conf.gate.state_dir / "journal.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            scanner.feed(iss.ticket(event=1, zones=[1]))
            for _ in range(50):
                await asyncio.sleep(0)
            run.cancel()  # SIGTERM...
            for _ in range(5):
                await asyncio.sleep(0)
            run.cancel()  # ...and SIGTERM again, while the lane waits for the presentation
        finally:
            other.execute("ROLLBACK")
            other.close()
        with pytest.raises(asyncio.CancelledError):
            await run
        rows = await gate.journal.tail(5)
    assert [(r.kind, r.verdict.value) for r in rows] == [("entry", "admit")]
    assert sim.pulses == [rows[0].entry_id]
