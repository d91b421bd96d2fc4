"""Every lane's devices, built from their URLs and opened: one scanner per lane, one device per
distinct gate URL (lanes naming the identical URL share it through :mod:`agent.mechanism`), one per
distinct indicator URL. Used by :func:`agent.app.daemon.open_gate`."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from agent.app import config as cfg
from agent.mechanism import Mechanism
from agent.model import Decision
from agent.ports import GateIO, Indicator, Scan, Scanner
from drivers import registry

log = logging.getLogger(__name__)


class Indicators:
    """Several indicators shown together (GPIO lamps and the scanner's own beep, say)."""

    def __init__(self, parts: list[Indicator]) -> None:
        self.parts = parts

    async def open(self) -> None:
        return None  # the parts are opened and closed as devices of their own

    async def close(self) -> None:
        return None

    async def show(self, decision: Decision, message: str, read: Scan | None = None) -> None:
        for part in self.parts:
            try:
                await part.show(decision, message, read)
            except Exception:  # one broken lamp must not hide the others
                log.exception("indicator %s failed", type(part).__name__)


@dataclass
class LaneDevices:
    scanner: Scanner
    gate_io: GateIO
    indicator: Indicator | None


async def open_lane_devices(
    config: cfg.Config,
    stack: contextlib.AsyncExitStack,
    scanner: Scanner | None,
    gate_io: GateIO | None,
) -> list[LaneDevices]:
    """Every lane's devices, opened (closed by ``stack``). Lanes whose gate URL is the identical
    string share one mechanism (opened once, closed once); an indicator URL named by several lanes
    is one device too. ``scanner`` and ``gate_io`` replace the main lane's configured devices."""
    base = config.path.parent
    users: dict[str, list[str]] = {}
    for spec in config.lanes:
        users.setdefault(spec.devices.gate, []).append(spec.name)
    mechanisms: dict[str, Mechanism] = {}
    indicators: dict[str, Indicator] = {}
    built: list[tuple[Scanner, GateIO, Indicator | None]] = []
    for i, spec in enumerate(config.lanes):
        d = spec.devices
        lane_gate: GateIO
        if i == 0 and gate_io is not None:
            lane_gate = gate_io
        elif len(users[d.gate]) > 1:
            if d.gate not in mechanisms:
                mechanisms[d.gate] = Mechanism(
                    registry.create("gate", d.gate, base), "+".join(users[d.gate])
                )
            lane_gate = mechanisms[d.gate].view(spec.name)
        else:
            lane_gate = registry.create("gate", d.gate, base)
        lane_scanner = scanner if i == 0 and scanner is not None else None
        lane_scanner = lane_scanner or registry.create("scanner", d.scanner, base)
        indicator = None
        if d.indicator:
            if d.indicator not in indicators:
                indicators[d.indicator] = registry.create("indicator", d.indicator, base)
            indicator = indicators[d.indicator]
        built.append((lane_scanner, lane_gate, indicator))
    # Gates first, then indicators, then scanners (no scan before the gate can open).
    opened: set[int] = set()
    for group in ([b[1] for b in built], [b[2] for b in built], [b[0] for b in built]):
        for driver in group:
            if driver is None or id(driver) in opened:
                continue
            opened.add(id(driver))
            await driver.open()
            stack.push_async_callback(driver.close)
    lanes = []
    for lane_scanner, lane_gate, indicator in built:
        # A scanner that can beep/flash (vendor feedback) is an indicator too.
        shown = [d for d in (indicator, lane_scanner) if isinstance(d, Indicator)]
        shown_by = shown[0] if len(shown) == 1 else Indicators(shown) if shown else None
        lanes.append(LaneDevices(lane_scanner, lane_gate, shown_by))
    return lanes
