"""The gate transaction on the lane's run loop: busy policy and emergency free passage."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Literal

from agent.app import config
from agent.app.daemon import open_gate
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.ports import Scan
from drivers.sim import SimGate, SimIndicator, SimScanner
from tests.conftest import WriteConfig
from tests.polling import until


async def _run_lane(
    write_config: WriteConfig, busy: Literal["wait", "refuse"], iss: Issuer
) -> tuple[list[Outcome], SimIndicator, SimGate, int]:
    conf = config.load(write_config(passage_timeout_s=5))
    conf = dataclasses.replace(conf, lane=dataclasses.replace(conf.lane, busy=busy))
    outcomes: list[Outcome] = []
    scanner, gate_io, indicator = SimScanner(), SimGate(passage_ms=None), SimIndicator()
    a, b = iss.ticket(event=1, zones=[1]), iss.ticket(event=1, zones=[1])
    async with open_gate(conf, outcomes.append, scanner=scanner, gate_io=gate_io) as gate:
        gate.lane.indicator = indicator
        task = asyncio.create_task(gate.lane.run())
        scanner.feed(a)
        await until(lambda: len(gate_io.pulses) == 1, 5)
        scanner.feed(a)  # the visitor's code read again while walking through
        scanner.feed(b)  # the next visitor is too quick
        await until(lambda: scanner._queue.empty(), 5, "the lane has read both scans while open")
        if busy == "refuse":
            await until(
                lambda: indicator.shown[-1][1] == "Wait - gate still open", 5, "the refusal"
            )
        gate_io.passage()
        if busy == "wait":
            await until(lambda: len(gate_io.pulses) == 2, 5)
            gate_io.passage()
        await until(lambda: len(outcomes) == (2 if busy == "wait" else 1), 5)
        scanner.finish()
        await task
        rows = await gate.journal.count()
    return outcomes, indicator, gate_io, rows


async def test_scan_while_open_waits(write_config: WriteConfig, iss: Issuer) -> None:
    outcomes, _, gate_io, rows = await _run_lane(write_config, "wait", iss)
    assert [o.decision.admitted for o in outcomes] == [True, True]
    assert [o.passed for o in outcomes] == [True, True]
    assert len(gate_io.pulses) == 2 and rows == 2


async def test_scan_while_open_is_refused(write_config: WriteConfig, iss: Issuer) -> None:
    outcomes, indicator, gate_io, rows = await _run_lane(write_config, "refuse", iss)
    assert len(outcomes) == 1 and outcomes[0].passed
    assert len(gate_io.pulses) == 1 and rows == 1  # the refused ticket is not consumed
    assert [m for _, m in indicator.shown].count("Wait - gate still open") == 1


async def test_emergency_free_passage_consumes_nothing(
    write_config: WriteConfig, iss: Issuer
) -> None:
    conf = config.load(write_config())
    scanner, gate_io, indicator = SimScanner(), SimGate(passage_ms=1), SimIndicator()
    outcomes: list[Outcome] = []
    text = iss.ticket(event=1, zones=[1])
    async with open_gate(conf, outcomes.append, scanner=scanner, gate_io=gate_io) as gate:
        gate.lane.indicator = indicator
        task = asyncio.create_task(gate.lane.run())
        gate_io.set_input("emergency", True)
        await until(lambda: gate_io.emergency, 5)
        await until(lambda: len(indicator.shown) == 1, 5)  # the mode change is shown at once
        scanner.feed(text)
        await until(lambda: len(indicator.shown) == 2, 5)  # and again to whoever scans
        assert [m for _, m in indicator.shown] == ["Emergency - free passage"] * 2
        gate_io.set_input("emergency", False)

        async def emergency_over() -> bool:
            return ("emergency", "off") in [(k, v) for k, v, _, _ in await gate.journal.events()]

        await until(emergency_over, 5, "the end of the emergency journalled")
        scanner.feed(iss.ticket(event=1, zones=[1]))
        await until(lambda: len(outcomes) == 1, 5)
        scanner.finish()
        await task
        events = await gate.journal.events()
        rows = await gate.journal.count()
    assert [(k, v) for k, v, _, _ in events] == [("emergency", "on"), ("emergency", "off")]
    assert rows == 1 and len(gate_io.pulses) == 1  # only the scan after the emergency


async def test_relay_error_leaves_output_inactive_and_lane_reports_it(
    write_config: WriteConfig, iss: Issuer
) -> None:
    import errno

    from tests.test_gpio import make_gate

    gpio, chip = make_gate()
    text = iss.ticket(event=1, zones=[1])
    async with open_gate(config.load(write_config()), scanner=SimScanner(), gate_io=gpio) as gate:
        chip.requests[0].fail_set = [OSError(errno.EIO, "Input/output error")]
        outcome = await gate.lane.present(Scan(text, "s", 0))
        assert outcome is not None and outcome.annul is not None  # the ticket is not burnt
        assert gate.lane.fault is not None and "relay" in gate.lane.fault
        assert chip.pulses("GPIO17") == [] and not gpio.relay_active
        again = await gate.lane.present(Scan(text, "s", 10**10))
        assert again is not None and again.decision.admitted
        assert gate.lane.fault is None and len(chip.pulses("GPIO17")) == 1


async def test_relay_stuck_after_pulse_keeps_the_entry(
    write_config: WriteConfig, iss: Issuer
) -> None:
    import errno

    from tests.test_gpio import make_gate

    gpio, chip = make_gate()
    indicator = SimIndicator()
    text = iss.ticket(event=1, zones=[1])
    async with open_gate(config.load(write_config()), scanner=SimScanner(), gate_io=gpio) as gate:
        gate.lane.indicator = indicator
        chip.requests[0].fail_set = [None, OSError(errno.EIO, "I/O"), OSError(errno.EIO, "I/O")]
        outcome = await gate.lane.present(Scan(text, "s", 0))
        assert outcome is not None and outcome.annul is None  # the gate opened: entry stands
        assert gate.lane.fault is not None and "MAY STILL BE ENERGISED" in gate.lane.fault
        assert [d.reason for d, _ in indicator.shown][-1] == "error"
        again = await gate.lane.present(Scan(text, "s", 10**10))
        assert again is not None and again.decision.reason == "already_used"
