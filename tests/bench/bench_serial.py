"""Serial frame arrival -> relay call, through a real lane (real journal, sim relay).

A socat pty pair stands in for the scanner. For each of N fresh tickets the bytes of one frame
(``]Q1`` + ticket + CR) are written to the device side of the pty; the time from just before that
write to the moment the lane calls ``grant()`` on a SimGate is the latency. It is split into the
driver's part (write -> ``Scan.mono_ns``, i.e. pty, pyserial-asyncio-fast and framing) and the
lane's part (``Scan.mono_ns`` -> relay call: decode, verify, decide, fsync'd journal commit,
indicator). Goal: p99 <= 10 ms.

    .venv/bin/python tests/bench/bench_serial.py [--frames 500] [--feedback none|honeywell|zebra]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent import issuer
from agent.app import config
from agent.app.daemon import open_gate
from agent.lane import Outcome
from drivers.serial_scanner import SerialScanner
from drivers.sim import SimGate
from tests.bench.bench_decision import CONFIG, pct  # same gate as the decision bench
from tests.serial_pty import PtyPair

WARM_UP = 20


class TimedGate(SimGate):
    """A SimGate that notes when each relay call happens."""

    def __init__(self) -> None:
        super().__init__(passage_ms=0)
        self.granted_ns: list[int] = []
        self.event = asyncio.Event()

    async def grant(self, direction: str, ref: str) -> None:
        self.granted_ns.append(time.monotonic_ns())
        self.event.set()
        await super().grant(direction, ref)


async def run(dir: Path, frames: int, feedback: str) -> dict[str, list[float]]:
    issuer.keys_init(dir / "keys", events=[1])
    iss = issuer.Issuer.load(dir / "keys")
    (dir / "gate.toml").write_text(CONFIG)
    texts = [iss.ticket(event=1) for _ in range(frames)]
    pty = PtyPair(dir)
    pty.start()
    scanner = SerialScanner.from_url(pty.url(f"feedback={feedback}&aim=Q"))
    gate_io = TimedGate()
    outcomes: list[Outcome] = []
    out: dict[str, list[float]] = {"total": [], "driver": [], "lane": []}
    try:
        conf = config.load(dir / "gate.toml")
        async with open_gate(conf, outcomes.append, scanner=scanner, gate_io=gate_io) as gate:
            if feedback != "none":
                gate.lane.indicator = scanner  # the scanner's own beep is on the path too
            lane = asyncio.create_task(gate.lane.run())
            for i, text in enumerate(texts):
                gate_io.event.clear()
                written = time.monotonic_ns()
                pty.write(f"]Q1{text}\r".encode())
                await asyncio.wait_for(gate_io.event.wait(), 5)
                granted = gate_io.granted_ns[-1]
                await asyncio.sleep(0.002)  # the lane finishes the passage; the line goes quiet
                if feedback != "none":
                    pty.read_for(0.001)  # the scanner "hears" its beep
                if i < WARM_UP:
                    continue
                arrived = outcomes[-1].scan.mono_ns
                out["total"].append((granted - written) / 1e6)
                out["driver"].append((arrived - written) / 1e6)
                out["lane"].append((granted - arrived) / 1e6)
            lane.cancel()
        assert len(gate_io.pulses) == frames, "every fresh ticket opens the gate once"
    finally:
        pty.kill()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--feedback", default="none", choices=["none", "honeywell", "zebra", "newland"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".bench-") as tmp:
        lat = asyncio.run(run(Path(tmp), args.frames + WARM_UP, args.feedback))
    print(f"serial frame -> relay call, {args.frames} frames, feedback={args.feedback}")
    print(f"{'part':<44}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    names = {
        "driver": "write to pty -> Scan (pty, serial, framing)",
        "lane": "Scan -> relay call (decide, journal)",
        "total": "write to pty -> relay call",
    }
    for key in ("driver", "lane", "total"):
        values = lat[key]
        p50, p99 = statistics.median(values), pct(values, 0.99)
        print(f"{names[key]:<44}{p50:>10.3f}{p99:>10.3f}{max(values):>10.3f}")
    total = lat["total"]
    print(
        json.dumps(
            {
                "bench": "serial",
                "frames": len(total),
                "feedback": args.feedback,
                "total_p50_ms": round(statistics.median(total), 3),
                "total_p99_ms": round(pct(total, 0.99), 3),
                "driver_p99_ms": round(pct(lat["driver"], 0.99), 3),
                "goal_p99_ms": 10,
            }
        )
    )


if __name__ == "__main__":
    main()
