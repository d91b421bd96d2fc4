"""Two lanes on one turnstile (the identical gate URL): one opened device, one direction released
at a time (the other lane waits or refuses, per its busy setting), the emergency input frees both;
lanes with different gate URLs never wait on each other. Real daemon wiring, sim devices."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.app.status_display import lane_health
from agent.issuer import Issuer
from agent.lane import Lane
from agent.mechanism import MechanismView
from drivers.sim import SimGate, SimIndicator, SimScanner
from tests.lanesconf import write_lanes_config
from tests.polling import until

SHARED = "sim://gate?passage=command&log=pulses.log"


def _lanes(gate_in: str, gate_out: str, busy_out: str = "wait") -> list[dict[str, object]]:
    return [
        {"name": "in", "direction": "entry", "scanner": "sim://queue?source=in",
         "gate": gate_in, "indicator": "sim://indicator-in"},
        {"name": "out", "direction": "exit", "scanner": "sim://queue?source=out",
         "gate": gate_out, "indicator": "sim://indicator-out", "busy": busy_out},
    ]  # fmt: skip


@asynccontextmanager
async def _running(keys_dir: Path, lanes: list[dict[str, object]]) -> AsyncIterator[Gate]:
    path = write_lanes_config(
        keys_dir.parent / "gate.toml", keys="keys", lanes=lanes, extra="",
        policy={"entry": "reentry"}, lane={"passage_timeout_s": 30.0, "repeat_window_ms": 0},
    )  # fmt: skip
    async with open_gate(config.load(path)) as gate:
        tasks = [asyncio.create_task(lane.run()) for lane in gate.lanes]
        try:
            yield gate
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _feed(lane: Lane, text: str) -> None:
    assert isinstance(lane.scanner, SimScanner)
    lane.scanner.feed(text)


def _shown(lane: Lane) -> list[str]:
    assert isinstance(lane.indicator, SimIndicator)
    return [message for _, message in lane.indicator.shown]


def _device(lane: Lane) -> SimGate:
    assert isinstance(lane.gate, MechanismView)
    device = lane.gate.mechanism.device
    assert isinstance(device, SimGate)
    return device


async def test_a_shared_turnstile_is_opened_once_and_serves_one_direction_at_a_time(
    keys_dir: Path, iss: Issuer
) -> None:
    async with _running(keys_dir, _lanes(SHARED, SHARED)) as gate:
        lane_in, lane_out = gate.lanes
        device = _device(lane_in)
        assert _device(lane_out) is device and device._fd is not None  # one device, opened
        assert lane_health(lane_in)["turnstile_shared_with"] == ["out"]
        assert lane_health(lane_out)["turnstile_shared_with"] == ["in"]
        assert isinstance(lane_in.gate, MechanismView)
        mechanism = lane_in.gate.mechanism
        first, second = iss.ticket(event=1), iss.ticket(event=1)
        _feed(lane_in, first)
        await until(lambda: mechanism.holder == "in", what="the entry release")
        _feed(lane_out, second)  # busy = "wait": decided once the entry is done
        await until(lambda: mechanism.waiting == 1, what="the exit lane waiting")
        assert len(device.pulses) == 1 and await gate.journal.count() == 1
        device.passage()  # the person entering passes
        await until(lambda: len(device.pulses) == 2, what="the exit release")
        assert mechanism.holder == "out"
        device.passage()
        await until(lambda: mechanism.holder is None)
        log = (gate.config.path.parent / "pulses.log").read_text().splitlines()
        assert [line.split()[2] for line in log] == ["entry", "exit"]
        assert await gate.journal.count() == 2
    assert device._fd is None and mechanism._opened == 0  # closed once, by the last lane


async def test_refuse_while_the_other_direction_is_released(keys_dir: Path, iss: Issuer) -> None:
    async with _running(keys_dir, _lanes(SHARED, SHARED, busy_out="refuse")) as gate:
        lane_in, lane_out = gate.lanes
        device = _device(lane_in)
        _feed(lane_in, iss.ticket(event=1))
        await until(lambda: len(device.pulses) == 1, what="the entry release")
        _feed(lane_out, iss.ticket(event=1))
        await until(lambda: "Wait - gate still open" in _shown(lane_out), what="the refusal")
        assert len(device.pulses) == 1 and await gate.journal.count() == 1
        device.passage()
        await until(lambda: lane_in.gate.mechanism.holder is None)  # type: ignore[attr-defined]


async def test_the_emergency_input_frees_both_directions(keys_dir: Path, iss: Issuer) -> None:
    async with _running(keys_dir, _lanes(SHARED, SHARED)) as gate:
        lane_in, lane_out = gate.lanes
        device = _device(lane_in)
        device.set_input("emergency", True)
        for lane in gate.lanes:
            await until(lambda lane=lane: "Emergency - free passage" in _shown(lane))  # type: ignore[misc]
            assert lane_health(lane)["emergency"] is True
        await until(lambda: _gate_events(gate) == 2, what="one emergency row per lane")
        _feed(lane_out, iss.ticket(event=1))
        await until(lambda: _shown(lane_out).count("Emergency - free passage") == 2)
        assert device.pulses == [] and await gate.journal.count() == 0
        events = await gate.journal.events()
        assert sorted((kind, value, lane) for kind, value, lane, _ in events) == [
            ("emergency", "on", "in"), ("emergency", "on", "out"),
        ]  # fmt: skip


def _gate_events(gate: Gate) -> int:
    db = gate.config.gate.state_dir / "journal.db"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM gate_events").fetchone()[0])


async def test_lanes_with_their_own_turnstiles_never_wait(keys_dir: Path, iss: Issuer) -> None:
    lanes = _lanes("sim://gate-a?passage=command", "sim://gate-b?passage=command")
    async with _running(keys_dir, lanes) as gate:
        lane_in, lane_out = gate.lanes
        assert isinstance(lane_in.gate, SimGate) and isinstance(lane_out.gate, SimGate)
        assert lane_health(lane_in)["turnstile_shared_with"] == []
        _feed(lane_in, iss.ticket(event=1))
        await until(lambda: len(lane_in.gate.pulses) == 1)  # type: ignore[attr-defined]
        _feed(lane_out, iss.ticket(event=1))  # the entry is still open: no matter
        await until(lambda: len(lane_out.gate.pulses) == 1)  # type: ignore[attr-defined]
        lane_in.gate.passage()
        lane_out.gate.passage()
        # Stopped only once both passages are done (3.11's wait_for may swallow a cancel that
        # arrives with the passage).
        await until(lambda: lane_in._busy_with is None and lane_out._busy_with is None)


async def test_a_decision_in_progress_holds_the_turnstile_for_its_lane(
    keys_dir: Path, iss: Issuer
) -> None:
    """Lane in is deciding (its journal write waits for another writer): lane out, set to refuse,
    is refused at once instead of deciding and then waiting behind in's passage."""
    async with _running(keys_dir, _lanes(SHARED, SHARED, busy_out="refuse")) as gate:
        lane_in, lane_out = gate.lanes
        assert isinstance(lane_in.gate, MechanismView)
        mechanism = lane_in.gate.mechanism
        with closing(
            sqlite3.connect(gate.config.gate.state_dir / "journal.db", isolation_level=None)
        ) as other:
            other.execute("BEGIN IMMEDIATE")
            _feed(lane_in, iss.ticket(event=1))
            await until(lambda: mechanism.holder == "in", what="in holds it while deciding")
            _feed(lane_out, iss.ticket(event=1))
            await until(lambda: "Wait - gate still open" in _shown(lane_out), what="out refused")
            other.execute("ROLLBACK")
        device = _device(lane_in)
        await until(lambda: len(device.pulses) == 1, what="in's admission carried out")
        device.passage()
        await until(lambda: mechanism.holder is None, what="the turnstile free again")
