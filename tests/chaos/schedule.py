"""Seeded schedules of faults, their injection, and the harness's log of what was down when.

A schedule is a pure function of its seed: the store, the workload's length and the faults (kind,
target, start, length, size). :class:`Timeline` records when each thing was really down, cut or
slow (monotonic seconds, the clock the gates' journal rows carry in ``mono_ns``), which is what
:mod:`tests.chaos.invariants` uses to decide whether two gates could have known of each other.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.venue import GATE_IDS, Venue, VenueError
from tests.faketime import FAKETIME

KINDS = (
    "kill_gate", "kill_hub", "hub_restart", "pg_restart", "partition", "slow_link",
    "clock_step", "disk_full",
)  # fmt: skip


@dataclass(frozen=True)
class Fault:
    kind: str
    targets: tuple[str, ...]  # gate ids; () for the hub and PostgreSQL
    at_s: float  # after the workload starts
    length_s: float
    size: float = 0.0  # slow_link: delay in s; clock_step: offset in s

    def describe(self) -> str:
        who = ",".join(self.targets) or ("postgresql" if self.kind == "pg_restart" else "hub")
        extra = f" size={self.size:+g}" if self.size else ""
        return f"{self.kind} {who} at {self.at_s:.1f}s for {self.length_s:.1f}s{extra}"


@dataclass(frozen=True)
class Schedule:
    seed: int
    store: str  # "sqlite" or "postgresql"
    duration_s: float
    faults: tuple[Fault, ...]


def make_schedule(seed: int, *, duration_s: float | None = None) -> Schedule:
    """The schedule of ``seed`` (the same seed, the same schedule)."""
    rng = random.Random(seed)
    store = "postgresql" if rng.random() < 1 / 3 else "sqlite"
    duration = rng.uniform(20, 30)  # drawn either way: --duration changes no other draw
    duration = duration_s if duration_s is not None else duration
    kinds = [k for k in KINDS if (k != "pg_restart" or store == "postgresql")]
    faults = []
    for _ in range(rng.randint(3, 6)):
        kind = rng.choice(kinds)
        at, length = rng.uniform(1.0, max(2.0, duration - 5)), rng.uniform(0.5, 5.0)
        targets: tuple[str, ...] = ()
        size = 0.0
        if kind in ("kill_gate", "clock_step", "disk_full"):
            targets = (rng.choice(GATE_IDS),)
        elif kind in ("partition", "slow_link"):
            targets = tuple(sorted(rng.sample(GATE_IDS, rng.randint(1, 3))))
        if kind == "slow_link":
            size = round(rng.uniform(0.05, 0.8), 2)
        if kind == "clock_step":
            size = float(rng.choice((-1, 1)) * rng.randint(5, 200))
        faults.append(Fault(kind, targets, round(at, 2), round(length, 2), size))
    return Schedule(seed, store, round(duration, 1), tuple(sorted(faults, key=lambda f: f.at_s)))


@dataclass
class Window:
    what: str  # "gate:ID" (process down), "link:ID" (cut), "hub", "pg", "slow:ID", "kill:ID"
    start: float
    end: float = float("inf")
    size: float = 0.0


@dataclass
class Timeline:
    """What was really down, cut or slow, and when (time.monotonic seconds)."""

    windows: list[Window] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def open(self, what: str, size: float = 0.0) -> Window:
        window = Window(what, time.monotonic(), size=size)
        self.windows.append(window)
        return window

    def close(self, window: Window) -> None:
        window.end = time.monotonic()

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:7.2f}s {text}")


class Injector:
    """Runs a schedule's faults against a venue, one task per fault."""

    def __init__(self, venue: Venue, timeline: Timeline, pg_restart: object = None) -> None:
        self.venue, self.timeline = venue, timeline
        self.pg_restart = pg_restart  # async callable () -> None (stop, start) for pg_restart
        self.locks = {what: asyncio.Lock() for what in (*GATE_IDS, "hub", "pg")}
        self.cuts: Counter[str] = Counter()

    async def run(self, schedule: Schedule, start: float) -> None:
        await asyncio.gather(*(self._one(f, start) for f in schedule.faults))

    async def _one(self, fault: Fault, start: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start + fault.at_s - loop.time()))
        self.timeline.note(f"inject {fault.describe()}")
        self.timeline.injected[fault.kind] += 1
        await getattr(self, "_" + fault.kind)(fault)
        self.timeline.note(f"healed {fault.describe()}")

    async def _kill_gate(self, fault: Fault) -> None:
        gate = self.venue.gates[fault.targets[0]]
        async with self.locks[gate.id]:
            down = self.timeline.open(f"gate:{gate.id}")
            self.timeline.open(f"kill:{gate.id}").end = down.start
            gate.kill9()
            await asyncio.sleep(fault.length_s)
            await gate.start()
            self.timeline.close(down)

    async def _hub_down(self, fault: Fault, kill: bool) -> None:
        hub = self.venue.hub
        async with self.locks["hub"]:
            down = self.timeline.open("hub")
            await asyncio.to_thread(hub.kill9 if kill else hub.stop)
            await asyncio.sleep(fault.length_s)
            await asyncio.to_thread(hub.start)
            self.timeline.close(down)

    async def _kill_hub(self, fault: Fault) -> None:
        await self._hub_down(fault, kill=True)

    async def _hub_restart(self, fault: Fault) -> None:
        await self._hub_down(fault, kill=False)

    async def _pg_restart(self, fault: Fault) -> None:
        async with self.locks["pg"]:
            down = self.timeline.open("pg")
            assert callable(self.pg_restart)
            await self.pg_restart(fault.length_s)
            self.timeline.close(down)

    async def _partition(self, fault: Fault) -> None:
        windows = []
        for g in fault.targets:
            self.cuts[g] += 1
            self.venue.relays[g].set_cut(True)
            windows.append(self.timeline.open(f"link:{g}"))
        await asyncio.sleep(fault.length_s)
        for g, window in zip(fault.targets, windows, strict=True):
            self.cuts[g] -= 1
            if not self.cuts[g]:
                self.venue.relays[g].set_cut(False)
            self.timeline.close(window)

    async def _slow_link(self, fault: Fault) -> None:
        windows = []
        for g in fault.targets:
            self.venue.relays[g].delay_s = max(self.venue.relays[g].delay_s, fault.size)
            windows.append(self.timeline.open(f"slow:{g}", fault.size))
        await asyncio.sleep(fault.length_s)
        for g, window in zip(fault.targets, windows, strict=True):
            self.venue.relays[g].delay_s = 0.0
            self.timeline.close(window)

    async def _clock_step(self, fault: Fault) -> None:
        """The gate's wall clock stepped by ``size`` s (a restart under libfaketime), and back."""
        gate = self.venue.gates[fault.targets[0]]
        if not FAKETIME.exists():
            raise VenueError(f"clock_step needs libfaketime ({FAKETIME}): apt package faketime")
        async with self.locks[gate.id]:
            for offset, hold in ((fault.size, fault.length_s), (0.0, 0.0)):
                down = self.timeline.open(f"gate:{gate.id}")
                await gate.stop()
                gate.clock_offset_s = offset
                await gate.start()
                self.timeline.close(down)
                await asyncio.sleep(hold)

    async def _disk_full(self, fault: Fault) -> None:
        gate = self.venue.gates[fault.targets[0]]
        if not gate.mounted:
            raise VenueError("disk_full needs a tmpfs per gate: run as root (mount)")
        async with self.locks[gate.id]:
            await asyncio.to_thread(gate.fill)
            await asyncio.sleep(fault.length_s)
            gate.free()

    async def heal_all(self) -> None:
        """Everything back: links, clocks, disks, processes (after the faults' tasks ended)."""
        for g, relay in self.venue.relays.items():
            relay.delay_s = 0.0
            self.cuts[g] = 0
            relay.set_cut(False)
        for gate in self.venue.gates.values():
            gate.free()
            if gate.clock_offset_s:
                await gate.stop()
                gate.clock_offset_s = 0.0
            if not gate.alive:
                await gate.start()
        if not self.venue.hub.healthy():
            await asyncio.to_thread(self.venue.hub.start)
