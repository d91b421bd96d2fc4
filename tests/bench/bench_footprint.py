"""The running gate's footprint: resident memory and idle CPU of `gate-agent run`.

The real daemon as its own process, with 5,000,000 revocations installed (signed snapshot) and
100,000 journal rows (bench_decision.prepare), the status server on, a socket scanner and the sim
turnstile (no camera). Resident memory (VmRSS, VmHWM) once it is ready and after a few scans;
idle CPU from /proc/PID/stat over ``--idle`` seconds with nothing scanned. Goals: <= 150 MB
resident, < 2% of a core idle.

    .venv/bin/python tests/bench/bench_footprint.py [--revoked 5000000] [--rows 100000] [--idle 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_decision import prepare
from tests.hubproc import free_port


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _cpu_s(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revoked", type=int, default=5_000_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        dir = Path(tmp)
        iss = asyncio.run(prepare(dir, args.revoked, args.rows))
        port = free_port()
        conf = dir / "gate.toml"
        conf.write_text(
            conf.read_text().replace(
                'scanner = "sim://queue"', 'scanner = "sim://socket?path=scan.sock"'
            )
            + f'\n[status]\nlisten = "127.0.0.1:{port}"\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(conf)],
            stdout=subprocess.DEVNULL, stderr=open(dir / "gate.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
        try:
            start = time.monotonic()
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                        break
                except urllib.error.HTTPError:  # 503 degraded (the outbox backlog): it answers
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() - start > 600:
                        raise SystemExit(
                            "the gate did not start: " + (dir / "gate.log").read_text()[-2000:]
                        ) from None
                    time.sleep(0.2)
            ready_s = time.monotonic() - start
            ready = _status(proc.pid)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(dir / "scan.sock"))
                s.sendall("".join(iss.ticket(event=1) + "\n" for _ in range(50)).encode())
            time.sleep(3)
            busy = _status(proc.pid)
            cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
            time.sleep(args.idle)
            idle = (_cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)
        finally:
            proc.terminate()
            proc.wait(30)
    mb = 1024 * 1024
    print(f"gate-agent run with {args.revoked:,} revocations and {args.rows:,} journal rows:")
    print(f"  ready (status server answering) after {ready_s:.1f} s")
    print(
        f"  resident: {ready['VmRSS'] / mb:.0f} MB when ready, {busy['VmRSS'] / mb:.0f} MB after"
        f" 50 scans, peak {busy['VmHWM'] / mb:.0f} MB (goal <= 150 MB)"
    )
    print(f"  idle CPU over {args.idle:.0f} s: {idle * 100:.2f}% of a core (goal < 2%)")


if __name__ == "__main__":
    main()
