"""The lane's decision latency, quiet and while 1,500 clients try to follow /display/events.

Same daemon and scans as bench_status (its helpers; the real ``gate-agent run`` as its own process,
100,000 revocations, 10,000 journal rows, a socket scanner, the sim turnstile passing at once).
The flood: a separate process runs ``--streams`` clients, each opening /display/events and
reading it for as long as the daemon keeps it open. A client that is refused (503) or whose stream
ends opens it again after the answer's Retry-After (1 s without one): 1,500 attempts at once, and
again when told; or, with ``--retry-s``, after that long whatever it was told (``--retry-s 1``:
about a thousand attempts a second, as a careless or hostile client makes). The flood starts
``--settle-s`` before the scans so that it has reached its steady state (before streams were
capped, the pacer let 100 a second in until all were open).

Per run: lane latency (the daemon's ``latency_ms``) and send -> logged, quiet and flooded; how
many stream attempts were answered 200 or 503 and how fast the 503 came; the fewest decisions
received by a stream that was open during the whole flooded phase (every decision: ``--scans``).
Medians over ``--runs`` daemons. No assertions on time. The daemon is ``python -m agent``
from the current directory, so running this from another checkout measures that checkout.

    .venv/bin/python tests/bench/bench_status_flood.py [--revoked 100000] [--rows 10000]
        [--scans 500] [--interval-ms 20] [--streams 1500] [--retry-s S] [--settle-s 15] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp

from agent import issuer
from tests.bench.bench_decision import pct, prepare
from tests.bench.bench_status import WARMUP, _configure, _phase, _start, lane_table, median
from tests.hubproc import free_port

# One stream attempt: (asked, wall s; answered after, ms; HTTP status or 0; closed, wall s; events)
Attempt = tuple[float, float, int, float, int]


async def _follow(
    http: aiohttp.ClientSession,
    url: str,
    stop: asyncio.Event,
    retry_s: float | None,
    out: list[Attempt],
) -> None:
    """One client: follow the stream; open it again when refused or ended, after ``retry_s``
    (None: after what the answer's Retry-After says, else 1 s)."""
    while not stop.is_set():
        asked, t, status, events, took = time.time(), time.perf_counter(), 0, 0, 0.0
        wait_s = retry_s if retry_s is not None else 1.0
        try:
            async with http.get(url) as r:
                status, took = r.status, (time.perf_counter() - t) * 1000
                if retry_s is None and r.headers.get("Retry-After", "").isdigit():
                    wait_s = float(r.headers["Retry-After"])
                if status != 200:
                    await r.read()
                else:
                    while True:  # once the run is over, until what was sent is read
                        try:
                            line = await asyncio.wait_for(r.content.readline(), 0.5)
                        except TimeoutError:
                            if stop.is_set():
                                break
                            continue
                        if not line:
                            break
                        events += line.startswith(b"data:")
        except (aiohttp.ClientError, OSError, TimeoutError):
            took = took or (time.perf_counter() - t) * 1000
        out.append((asked, took, status, time.time(), max(0, events - 1)))  # less the greeting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)


async def _flood(url: str, streams: int, retry_s: float | None, conn: Connection) -> None:
    stop = asyncio.Event()
    out: list[Attempt] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = [
            asyncio.create_task(_follow(http, url, stop, retry_s, out)) for _ in range(streams)
        ]
        conn.send("started")
        while not conn.poll():
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
    conn.send(out)


def _flood_process(url: str, streams: int, retry_s: float | None, conn: Connection) -> None:
    asyncio.run(_flood(url, streams, retry_s, conn))


def _streams(attempts: list[Attempt], window: tuple[float, float], scans: int) -> dict[str, Any]:
    """What the flood got: answers by status, 503 latency, events on streams open throughout."""
    refused = [a[1] for a in attempts if a[2] == 503]
    # open: when the answer came (an attempt may wait long in the daemon's listen queue)
    through = [
        a[4]
        for a in attempts
        if a[2] == 200 and a[0] + a[1] / 1000 < window[0] and a[3] > window[1]
    ]
    return {
        "attempts": len(attempts),
        "ok": sum(1 for a in attempts if a[2] == 200),
        "503": len(refused),
        "failed": sum(1 for a in attempts if a[2] not in (200, 503)),
        "refuse_p50": statistics.median(refused) if refused else float("nan"),
        "refuse_p99": pct(refused, 0.99) if refused else float("nan"),
        "open_throughout": len(through),
        "min_events": min(through) if through else -1,
        "scans": scans,
    }


def one_run(
    dir: Path, base: str, iss: issuer.Issuer, args: argparse.Namespace, run: int
) -> dict[str, Any]:
    """One daemon: warm-up, a quiet phase, then the same scans during the stream flood."""
    port = free_port()
    conf, log = _configure(dir, base, port), dir / f"gate-{run}.log"
    gap, n = args.interval_ms / 1000, args.scans
    texts = [iss.ticket(event=1) for _ in range(WARMUP + 2 * n)]
    proc = _start(conf, port, log)
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    url = f"http://127.0.0.1:{port}/display/events"
    load = ctx.Process(target=_flood_process, args=(url, args.streams, args.retry_s, theirs))
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(dir / "scan.sock"))
            _phase([proc.pid], log, sock, texts[:WARMUP], gap)
            quiet = _phase([proc.pid], log, sock, texts[WARMUP : WARMUP + n], gap)
            load.start()
            ours.recv()
            time.sleep(args.settle_s)
            assert load.pid is not None
            flooded = _phase([proc.pid, load.pid], log, sock, texts[WARMUP + n :], gap)
            ours.send("stop")
            attempts = ours.recv()
            load.join(60)
    finally:
        if load.is_alive():
            load.terminate()
        proc.terminate()
        proc.wait(30)
    flooded |= _streams(attempts, flooded["window"], n)
    return {"quiet": quiet, "flooded": flooded}


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    lane_table(runs, args.interval_ms, "flooded", "flood clients' CPU")
    s = {
        k: median(runs, "flooded", k)
        for k in ("attempts", "ok", "503", "failed", "refuse_p50", "refuse_p99")
    }
    s |= {k: median(runs, "flooded", k) for k in ("open_throughout", "min_events")}
    print(
        f"  stream attempts: {s['attempts']:.0f} ({s['ok']:.0f} got 200, {s['503']:.0f} got 503 in"
        f" p50 {s['refuse_p50']:.1f} ms / p99 {s['refuse_p99']:.1f} ms, {s['failed']:.0f} failed);"
        f" {s['open_throughout']:.0f} streams open throughout got >= {s['min_events']:.0f} of"
        f" {args.scans} decisions"
    )
    figures: dict[str, Any] = {"bench": "status_flood", "streams": args.streams}
    for phase in ("quiet", "flooded"):
        for key in ("rate", "p50", "p99", "max", "e2e_p50", "e2e_p99"):
            figures[f"{phase}_{key}"] = round(median(runs, phase, key), 2)
    figures |= {f"streams_{k}": round(v, 1) for k, v in s.items()}
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revoked", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--scans", type=int, default=500)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=1500, help="clients following events")
    parser.add_argument(
        "--retry-s", type=float, default=None, help="retry after this, not after Retry-After"
    )
    parser.add_argument("--settle-s", type=float, default=15.0, help="flood before the scans")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-status-flood-") as tmp:
        dir = Path(tmp)
        iss = asyncio.run(prepare(dir, args.revoked, args.rows))
        base = (dir / "gate.toml").read_text()
        for run in range(args.runs):
            runs.append(one_run(dir, base, iss, args, run))
            q, fl = runs[-1]["quiet"], runs[-1]["flooded"]
            print(
                f"run {run + 1}: lane p50 {q['p50']:.2f} -> {fl['p50']:.2f} ms, p99"
                f" {q['p99']:.2f} -> {fl['p99']:.2f} ms, {fl['n']}/{args.scans} decided,"
                f" streams {fl['ok']} ok / {fl['503']} refused, open throughout"
                f" {fl['open_throughout']} (>= {fl['min_events']} events)",
                flush=True,
            )
    retry = "after Retry-After" if args.retry_s is None else f"{args.retry_s:g} s"
    print(
        f"gate-agent run, {args.revoked:,} revocations, {args.rows:,} journal rows, {args.scans}"
        f" scans one per {args.interval_ms:g} ms, {args.streams} clients following"
        f" /display/events (retry {retry}), {os.cpu_count()} CPUs, load average"
        f" {load_before:.2f} before:"
    )
    report(runs, args)


if __name__ == "__main__":
    main()
