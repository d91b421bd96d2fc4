"""Run schedules: a venue per schedule, the workload and the faults at once, then the checks.

``python -m tests.chaos.runner --schedules N --seed S`` (or ``tests/chaos/run``) runs the
schedules of seeds S, S+1, ... S+N-1 and ends with ``chaos: N schedules, F faults, V invariant
violations`` (exit status 0 only when V is 0). A failing schedule prints its seed and the
command that replays it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests import pg
from tests.chaos.invariants import check, gather, max_latency
from tests.chaos.schedule import Injector, Schedule, Timeline, make_schedule
from tests.chaos.venue import Venue
from tests.chaos.workload import Workload
from tests.polling import until

DRAIN_TIMEOUT_S = 60.0
_live: list[Venue] = []  # venues not yet torn down: killed on the way out, whatever happens


@dataclass
class Result:
    schedule: Schedule
    faults: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    scans: int = 0
    rows: int = 0
    admissions: int = 0
    latency_s: float = 0.0
    log: list[str] = field(default_factory=list)


def _unsynced(venue: Venue) -> int:
    total = 0
    for gate in venue.gates.values():
        db = sqlite3.connect(f"file:{gate.state / 'journal.db'}?mode=ro", uri=True, timeout=5)
        try:
            (n,) = db.execute("SELECT COUNT(*) FROM entries WHERE synced_at IS NULL").fetchone()
        finally:
            db.close()
        total += int(n)
    return total


async def _drain(venue: Venue) -> int:
    """Wait until every gate has uploaded its journal; returns what is still unsynced."""
    with contextlib.suppress(AssertionError):  # the caller notes what is left
        await until(lambda: not _unsynced(venue), DRAIN_TIMEOUT_S, every_s=0.2)
    return _unsynced(venue)


def _pg_restarter(server: pg.PgServer) -> Callable[[float], Awaitable[None]]:
    options = (
        f"-k {server.root} -p {server.port} -c listen_addresses=127.0.0.1 -c fsync=on"
        " -c max_connections=200"
    )
    data, log = str(server.root / "data"), str(server.root / "server.log")

    async def restart(down_s: float) -> None:
        await asyncio.to_thread(server.run, "pg_ctl", "stop", "-D", data, "-m", "immediate", "-w")
        await asyncio.sleep(down_s)
        await asyncio.to_thread(
            server.run, "pg_ctl", "start", "-w", "-D", data, "-l", log, "-o", options
        )

    return restart


async def run_schedule(schedule: Schedule, dir: Path, server: pg.PgServer | None) -> Result:
    result = Result(schedule)
    store = None
    if schedule.store == "postgresql":
        assert server is not None
        store = server.create_database(f"chaos_{schedule.seed}_{int(time.time() * 1000)}")
    venue = Venue(dir, store, small_disks=True)
    _live.append(venue)
    timeline = Timeline()
    restart = _pg_restarter(server) if server is not None else None
    try:
        await venue.start()
        injector = Injector(venue, timeline, restart)
        workload = Workload(venue, timeline, random.Random(schedule.seed * 7919 + 1))
        timeline.t0 = time.monotonic()
        start = asyncio.get_running_loop().time()
        await asyncio.gather(workload.run(schedule.duration_s), injector.run(schedule, start))
        await injector.heal_all()
        left = await _drain(venue)
        if left:
            timeline.note(f"{left} rows still unsynced after {DRAIN_TIMEOUT_S:g} s")
        await venue.close()
        wall_minus_mono = time.time() - time.monotonic()
        facts = await gather(venue, wall_minus_mono)
        result.violations = check(facts, timeline, workload.revoked)
        result.scans = workload.scans
        result.rows = sum(len(rows) for rows in facts.journals.values())
        result.admissions = sum(1 for r in facts.hub_rows if r["verdict"] == "admit")
        result.latency_s = max_latency(facts)
    except Exception as exc:  # the harness reports a venue that fell over, with its logs
        result.violations.append(f"the run failed: {exc!r}")
    finally:
        with contextlib.suppress(Exception):
            await venue.close()
        venue.unmount()
        _live.remove(venue)
    result.faults = timeline.injected
    result.log = timeline.log
    return result


def print_result(result: Result, out: Callable[[str], None] = print) -> None:
    s = result.schedule
    out(
        f"schedule seed={s.seed} store={s.store} {s.duration_s:g}s: {len(s.faults)} faults,"
        f" {result.scans} scans, {result.rows} rows, {result.admissions} admissions,"
        f" longest admission to hub {result.latency_s:.2f}s, {len(result.violations)} violations"
    )
    for fault in s.faults:
        out(f"  fault {fault.describe()}")
    if result.violations:
        for line in result.log:
            out(f"  log {line}")
        for violation in result.violations:
            out(f"  VIOLATION {violation}")
        out(f"  replay: tests/chaos/run --seed {s.seed}")


@contextlib.contextmanager
def _cluster(needed: bool) -> Iterator[pg.PgServer | None]:
    if not needed:
        yield None
        return
    with pg.temp_cluster() as server:
        yield server


async def run_many(
    seed: int, count: int, dir: Path, duration_s: float | None = None
) -> list[Result]:
    schedules = [make_schedule(seed + i, duration_s=duration_s) for i in range(count)]
    results = []
    with _cluster(any(s.store == "postgresql" for s in schedules)) as server:
        for schedule in schedules:
            result = await run_schedule(schedule, dir / f"seed-{schedule.seed}", server)
            print_result(result)
            results.append(result)
            sys.stdout.flush()
    return results


def summary(results: list[Result]) -> list[str]:
    faults: Counter[str] = Counter()
    for r in results:
        faults.update(r.faults)
    violations = sum(len(r.violations) for r in results)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(faults.items())) or "none"
    latency = max((r.latency_s for r in results), default=0.0)
    return [
        f"faults by kind: {kinds}",
        f"longest time an admission took to reach the hub: {latency:.2f} s",
        f"chaos: {len(results)} schedules, {sum(faults.values())} faults,"
        f" {violations} invariant violations",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tests/chaos/run", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, help="the first schedule's seed (default: random)")
    p.add_argument("--schedules", type=int, default=1, help="how many schedules (default 1)")
    p.add_argument("--duration", type=float, help="seconds of workload per schedule")
    p.add_argument("--keep", action="store_true", help="keep the venues' files (logs, journals)")
    p.add_argument("--dir", type=Path, help="put the venues' files here, and keep them")
    args = p.parse_args(argv)
    if args.schedules < 1:
        p.error("--schedules must be at least 1")
    if args.duration is not None and not 6 <= args.duration <= 600:
        p.error("--duration must be 6-600 seconds")
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 31)
    dir = args.dir or Path(tempfile.mkdtemp(prefix="gate-agent-chaos-"))
    keep = args.keep or args.dir is not None
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: clean up as on ^C
    try:
        results = asyncio.run(run_many(seed, args.schedules, dir, args.duration))
    finally:
        for venue in _live:
            venue.kill_all()
        if not keep:
            shutil.rmtree(dir, ignore_errors=True)
    lines = summary(results)
    if keep:  # the summary stays the last line
        lines.insert(0, f"files kept in {dir}")
    for line in lines:
        print(line)
    return 0 if not any(r.violations for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
