"""A gate stopped (SIGTERM) while a lane is deciding: the admission it journalled is carried out.

Found by the chaos harness (tests/chaos/, a clock step restarts a gate with SIGTERM): the stop
cancelled the lane between the journal's commit and the relay, leaving an admission on file (at the
hub, counted, the ticket used up) whose turnstile never opened and which nothing annulled.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from agent.app import config
from agent.app.daemon import open_gate
from agent.issuer import Issuer
from drivers.sim import SimGate, SimScanner
from tests.conftest import WriteConfig
from tests.hubproc import ROOT
from tests.lanesconf import write_lanes_config
from tests.polling import until_sync


@pytest.mark.parametrize("stops", [1, 2], ids=["one stop", "a second stop meanwhile"])
async def test_a_stop_mid_decision_still_opens_the_gate_it_journalled(
    write_config: WriteConfig, iss: Issuer, stops: int
) -> None:
    conf = config.load(write_config())
    async with open_gate(conf) as gate:
        lane = gate.lane
        scanner, sim = lane.scanner, lane.gate
        assert isinstance(scanner, SimScanner) and isinstance(sim, SimGate)
        journal = gate.journal
        submitted = asyncio.Event()
        decide_and_record = journal.decide_and_record

        async def observed(*args: Any, **kwargs: Any) -> Any:
            submitted.set()  # the job is on the journal's thread before this task runs again
            return await decide_and_record(*args, **kwargs)

        journal.decide_and_record = observed  # type: ignore[method-assign]
        run = asyncio.create_task(lane.run())
        # Another writer holds the journal: the lane's insert waits for it (busy_timeout)...
        other = sqlite3.connect(conf.gate.state_dir / "journal.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            scanner.feed(iss.ticket(event=1, zones=[1]))
            await asyncio.wait_for(submitted.wait(), 10)  # the lane's journal job waits
            for _ in range(stops):  # ...and the stop (SIGTERM, maybe twice) lands meanwhile
                run.cancel()
                for _ in range(5):  # the scenario: the next stop a few loop turns later
                    await asyncio.sleep(0)
        finally:
            other.execute("ROLLBACK")
            other.close()
        with pytest.raises(asyncio.CancelledError):
            await run
        rows = await gate.journal.tail(5)
    assert [(r.kind, r.verdict.value) for r in rows] == [("entry", "admit")]
    assert sim.pulses == [rows[0].entry_id]


def test_a_stop_mid_decision_in_a_two_lane_gate_agent_run_still_pulses(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    """The real daemon with an entry and an exit lane: SIGTERM while the entry lane's decision waits
    for the journal. The idle exit lane stopped at once and used to end the run, closing the
    turnstile under the busy lane (its pulse never reached the relay)."""
    lanes = [
        {
            "name": lane, "direction": direction,
            "scanner": f"sim://socket?path={tmp_path / lane}.sock",
            "gate": f"sim://gate?passage_ms=0&log={tmp_path / lane}-pulses.log",
        }
        for lane, direction in (("in", "entry"), ("out", "exit"))
    ]  # fmt: skip
    conf = write_lanes_config(
        tmp_path / "gate.toml", keys=keys_dir, lanes=lanes, lane={"repeat_window_ms": 0},
        extra='\n[log]\nlevel = "DEBUG"\n',
    )  # fmt: skip
    log = tmp_path / "gate.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
        )  # fmt: skip
    try:
        until_sync(lambda: " ready: " in log.read_text(), 30, "the gate is ready")
        # which version runs, for whoever upgraded it (an integrator's review)
        assert f"gate-agent {metadata.version('gate-agent')}, pid {proc.pid}" in log.read_text()
        other = sqlite3.connect(tmp_path / "state" / "journal.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the entry lane's journal job waits for this writer
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(tmp_path / "in.sock"))
                s.sendall((iss.ticket(event=1, zones=[1]) + "\n").encode())
            until_sync(lambda: "sim scanner: line" in log.read_text(), 10, "the scan was read")
            proc.send_signal(signal.SIGTERM)
            until_sync(lambda: " stopping" in log.read_text(), 10, "the gate is stopping")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert proc.wait(30) == 0, log.read_text()
    finally:
        proc.kill()
    db = sqlite3.connect(tmp_path / "state" / "journal.db")
    rows = db.execute("SELECT entry_id FROM entries WHERE verdict = 'admit'").fetchall()
    db.close()
    pulses = (tmp_path / "in-pulses.log").read_text().split()
    assert len(rows) == 1, log.read_text()
    assert rows[0][0] in pulses, log.read_text()[-3000:]
