"""Several lanes in one process: per-lane decision latency and the process's CPU share.

Set-up as bench_decision.py (its helpers): 1M revocations installed through a signed snapshot,
100k rows already in the journal. A row of ``--lanes`` entry lanes in one gate unit (``[[lanes]]``
config, ``sim://queue`` scanners, sim gates with a passage of a few ms), each lane scanning
steadily: a presentation every 50-100 ms (uniform), of a fresh ticket or, with probability
``--again``, a ticket already admitted on any lane (denied already_used). Per lane: decision
latency p50/p99 (``Outcome.latency_ns``: scan in -> decision committed, fsync'd). Over the steady
phase (the first second left out): the process's CPU time (user + system, every thread) per
second of wall time, as a share of one core. In the same run a one-lane gate with the same load
per lane gives the baseline, alternating with the many-lane phase ``--runs`` times.

The machine's share in the figures: a probe in the same loop sleeps 100 ms at a time and records
how late it wakes (on a shared, loaded machine the process waits for a core: that lateness is in
every decision too), and the 1-minute load average is printed per phase. Each run also takes the
paced floor: bench_decision's floor (one Ed25519 verify + one fsync'd commit of a journal-like
row) on a worker thread at the same pace, timed from the loop as a decision is (a commit after
an idle gap costs more than one in a back-to-back loop).

    .venv/bin/python tests/bench/bench_lanes.py [--lanes 4] [--seconds 20] [--runs 3]
        [--revocations 1000000] [--rows 100000] [--again 0.15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent import issuer
from agent.app import config
from agent.app.daemon import freeze_startup_heap, open_gate
from agent.lane import Outcome
from drivers.sim import SimScanner
from tests.bench.bench_decision import Floor, pct, prepare
from tests.gateconf import gate_toml
from tests.lanesconf import lanes_toml

WARMUP_S = 1.0


def lanes_config(n: int) -> str:
    """A unit with ``n`` entry lanes, each with its own sim turnstile.

    Lanes naming the identical gate URL share one mechanism (and a reader serves one lane), so
    each lane's passage_ms differs by a millisecond and each reader has its own source name: a
    row of separate turnstiles, not one shared.
    """
    lanes = [
        {
            "name": f"lane-{i + 1}",
            "direction": "entry",
            "scanner": f"sim://queue?source=reader-{i + 1}",
            "gate": f"sim://gate?passage_ms={5 + i}",
        }
        for i in range(n)
    ]
    return gate_toml(
        keys="keys",
        gate={"id": "bench", "zone": None},
        policy={"entry": "single"},
        lane={"repeat_window_ms": 0, "passage_timeout_s": 1.0},
        devices=None,
        status=None,
        extra="\n" + lanes_toml(lanes),
    )


@dataclass
class Phase:
    """What one phase measured."""

    lanes: int
    latency_ms: dict[str, list[float]] = field(default_factory=dict)  # per lane, after warm-up
    denied: int = 0
    cpu_share: float = 0.0
    late_ms: list[float] = field(default_factory=list)  # the probe's wake-up lateness
    load: float = 0.0

    def pooled(self) -> list[float]:
        return [v for values in self.latency_ms.values() for v in values]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def phase(
    dir: Path, n_lanes: int, fresh: list[str], seconds: float, again: float, rng: random.Random
) -> Phase:
    path = dir / f"lanes-{n_lanes}.toml"
    path.write_text(lanes_config(n_lanes))
    conf = config.load(path)
    result = Phase(n_lanes)
    admitted: list[str] = []
    start = time.monotonic()

    def observe(outcome: Outcome) -> None:
        if outcome.scan.mono_ns / 1e9 < start + WARMUP_S:
            return
        result.latency_ms.setdefault(outcome.lane, []).append(outcome.latency_ns / 1e6)
        if not outcome.decision.admitted:
            result.denied += 1

    async def feed(scanner: SimScanner, end: float) -> None:
        while time.monotonic() < end:
            await asyncio.sleep(rng.uniform(0.05, 0.10))
            if admitted and rng.random() < again:
                scanner.feed(rng.choice(admitted))
            else:
                text = fresh.pop()
                admitted.append(text)  # admitted by the time anyone presents it again
                scanner.feed(text)
        scanner.finish()

    async def probe(end: float) -> None:
        while (now := time.monotonic()) < end:
            await asyncio.sleep(0.1)
            if now >= start + WARMUP_S:
                result.late_ms.append((time.monotonic() - now - 0.1) * 1000)

    async with open_gate(conf, observe) as gate:
        assert len(gate.lanes) == n_lanes, f"{len(gate.lanes)} lanes built, not {n_lanes}"
        freeze_startup_heap()  # as the daemon does once its gate is open
        runs = [asyncio.create_task(lane.run()) for lane in gate.lanes]
        start = time.monotonic()
        end = start + WARMUP_S + seconds
        feeders = []
        for lane in gate.lanes:
            assert isinstance(lane.scanner, SimScanner)
            feeders.append(asyncio.create_task(feed(lane.scanner, end)))
        feeders.append(asyncio.create_task(probe(end)))
        await asyncio.sleep(WARMUP_S)
        cpu0, wall0 = cpu_s(), time.monotonic()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        result.cpu_share = (cpu_s() - cpu0) / (time.monotonic() - wall0)
        result.load = os.getloadavg()[0]
        await asyncio.gather(*feeders)
        await asyncio.gather(*runs)
    return result


async def paced_floor(dir: Path, iss: issuer.Issuer, seconds: float, rng: random.Random) -> Phase:
    """The floor at the lanes' pace: a sample every 50-100 ms on one worker thread."""
    result = Phase(0)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="floor") as pool:
        floor = await loop.run_in_executor(pool, Floor, dir, iss)  # sqlite: one thread
        start = time.monotonic()
        i = 0
        while time.monotonic() < start + WARMUP_S + seconds:
            await asyncio.sleep(rng.uniform(0.05, 0.10))
            t = time.monotonic_ns()
            await loop.run_in_executor(pool, floor.step, i)
            if time.monotonic() >= start + WARMUP_S:
                result.latency_ms.setdefault("floor", []).append((time.monotonic_ns() - t) / 1e6)
            i += 1
        await loop.run_in_executor(pool, floor.close)
    return result


def summary(p: Phase) -> dict[str, float]:
    per_lane_p99 = [pct(v, 0.99) for v in p.latency_ms.values()]
    pooled = p.pooled()
    return {
        "p50_ms": statistics.median(pooled),
        "p99_ms": pct(pooled, 0.99),
        "worst_lane_p99_ms": max(per_lane_p99),
        "cpu_share": p.cpu_share,
        "late_p50_ms": statistics.median(p.late_ms),
        "late_p99_ms": pct(p.late_ms, 0.99),
        "load": p.load,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--revocations", type=int, default=1_000_000)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--again", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    per_phase = int((args.seconds + WARMUP_S) / 0.05) + 10  # at most one scan per 50 ms per lane
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".bench-") as tmp:  # cwd: which disk
        dir = Path(tmp)
        t = time.perf_counter()
        iss: issuer.Issuer = asyncio.run(prepare(dir, args.revocations, args.rows))
        need = per_phase * (args.lanes + 1) * args.runs
        fresh = [iss.ticket(event=1) for _ in range(need)]
        setup_s = time.perf_counter() - t
        results: dict[int, list[Phase]] = {1: [], args.lanes: []}
        floors: list[list[float]] = []
        for run in range(args.runs):
            (dir / f"floor-{run + 1}").mkdir()
            fp = asyncio.run(paced_floor(dir / f"floor-{run + 1}", iss, args.seconds, rng))
            floors.append(fp.pooled())
            print(
                f"run {run + 1} paced floor: p50 {statistics.median(floors[-1]):.2f} ms,"
                f" p99 {pct(floors[-1], 0.99):.2f} ms, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            for n in (1, args.lanes):
                p = asyncio.run(phase(dir, n, fresh, args.seconds, args.again, rng))
                results[n].append(p)
                s = summary(p)
                lanes = " ".join(
                    f"{name} {statistics.median(v):.2f}/{pct(v, 0.99):.2f}"
                    for name, v in sorted(p.latency_ms.items())
                )
                print(
                    f"run {run + 1} lanes={n}: p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms,"
                    f" cpu {s['cpu_share']:.3f} core, {len(p.pooled())} decisions"
                    f" ({p.denied} denied); per lane p50/p99 ms: {lanes}; probe late p50/p99"
                    f" {s['late_p50_ms']:.2f}/{s['late_p99_ms']:.2f} ms, load {p.load:.1f}",
                    flush=True,
                )
    out: dict[str, object] = {"bench": "lanes", "lanes": args.lanes, "runs": args.runs}
    print(
        f"\n{args.lanes} lanes vs 1, {args.revocations:,} revocations, {args.rows:,} journal rows,"
        f" {args.seconds:g} s steady per phase, medians of {args.runs} runs (set-up {setup_s:.0f} s)"
    )
    print(
        f"{'lanes':<7}{'p50 ms':>9}{'p99 ms':>9}{'worst lane p99':>16}{'cpu share':>11}"
        f"{'probe late p99':>16}{'load':>6}"
    )
    med: dict[int, dict[str, float]] = {}
    for n, phases in results.items():
        sums = [summary(p) for p in phases]
        med[n] = {k: statistics.median(s[k] for s in sums) for k in sums[0]}
        m = med[n]
        print(
            f"{n:<7}{m['p50_ms']:>9.2f}{m['p99_ms']:>9.2f}{m['worst_lane_p99_ms']:>16.2f}"
            f"{m['cpu_share']:>11.3f}{m['late_p99_ms']:>16.2f}{m['load']:>6.1f}"
        )
        out[f"lanes{n}"] = {k: round(v, 3) for k, v in m.items()}
    floor50 = statistics.median(statistics.median(f) for f in floors)
    floor99 = statistics.median(pct(f, 0.99) for f in floors)
    print(f"{'floor':<7}{floor50:>9.2f}{floor99:>9.2f}   (verify + fsync'd commit, same pace)")
    out["paced_floor"] = {"p50_ms": round(floor50, 3), "p99_ms": round(floor99, 3)}
    many, one = med[args.lanes], med[1]
    ratios = {
        "p50": many["p50_ms"] / one["p50_ms"],
        "p99": many["p99_ms"] / one["p99_ms"],
        "cpu": many["cpu_share"] / one["cpu_share"],
    }
    print(
        f"ratio {args.lanes} lanes / 1 lane: p50 {ratios['p50']:.2f}, p99 {ratios['p99']:.2f},"
        f" cpu {ratios['cpu']:.2f}; goal per-lane p99 <= 5 ms:"
        f" {'met' if many['worst_lane_p99_ms'] <= 5 else 'NOT met'}"
    )
    out["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
