"""The lane's decision latency, quiet and while 200 concurrent clients hammer the status server.

The real daemon as its own process (like bench_footprint): ``--revoked`` revocations installed
(signed snapshot) and ``--rows`` journal rows (bench_decision.prepare), a socket scanner, the sim
turnstile passing at once (``passage_ms=0``: the gate is never busy, so no scan waits behind an
open gate) and the status server on a free port. Each run: a warm-up, then ``--scans`` distinct
fresh tickets one every ``--interval-ms`` (quiet), then the same again while a separate process
keeps ``--clients`` requests to /healthz, /metrics and /status in flight at all times (aiohttp,
keep-alive) and ``--sse`` staff displays follow /display/events.

Two figures per decision, both from the daemon's JSON log lines (JOURNAL_STREAM set):
``latency_ms`` as the lane logs it (the scanner's read to the committed decision), and send ->
logged, from just before the bench writes the line to the socket to the log record's time (1 ms
resolution), which also counts the time the line waited for the daemon's loop to read it. Also:
the decisions per second the lane kept up with (below the offered pace a backlog builds, and the
latency then grows with the phase's length), and the CPU of the daemon, of the status clients and
of everything else on the machine meanwhile (figures compare only when that last one is near 0).
Medians over ``--runs`` daemons. No assertions on time.

    .venv/bin/python tests/bench/bench_status.py [--revoked 100000] [--rows 10000] [--scans 500]
        [--interval-ms 20] [--clients 200] [--sse 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp

from agent import issuer, tickets
from tests.bench.bench_decision import pct, prepare
from tests.hubproc import free_port

PATHS = ("/healthz", "/metrics", "/status")
WARMUP = 50
DECISION = re.compile(r"^decision lane=\S+ .*ticket=(\S+) .*latency_ms=([0-9.]+)$")
Request = tuple[float, float, str, int]  # (finished, wall s; took, ms; path; HTTP status or 0)


def _cpu_s(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _busy_s() -> float:
    """CPU seconds spent by the whole machine (all cores, all processes) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def _configure(dir: Path, base: str, port: int) -> Path:
    conf = dir / "gate.toml"
    conf.write_text(
        base.replace('scanner = "sim://queue"', 'scanner = "sim://socket?path=scan.sock"')
        # the prepared rows are all unsynced: keep /healthz "ready" so any non-200 is a finding
        + f'\n[status]\nlisten = "127.0.0.1:{port}"\noutbox_backlog = 100000000\n'
    )
    return conf


def _start(conf: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """The daemon with JSON log lines on ``log``, once /healthz answers."""
    env = {k: v for k, v in os.environ.items() if k != "GATE_AGENT_LOG_FORMAT"}
    env["JOURNAL_STREAM"] = "bench"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(conf)],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=env,  # noqa: SIM115
    )  # fmt: skip
    start = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except urllib.error.HTTPError:  # 503 degraded: it answers
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() - start > 600:
                proc.kill()
                raise SystemExit("the gate did not start: " + log.read_text()[-2000:]) from None
            time.sleep(0.2)


def _scan(sock: socket.socket, texts: list[str], interval_s: float) -> dict[str, float]:
    """Send one ticket per interval (fixed schedule); short id -> wall time just before sending."""
    sent, start = {}, time.monotonic()
    for i, text in enumerate(texts):
        delay = start + i * interval_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[tickets.parse(text).short_id] = time.time()
        sock.sendall(text.encode() + b"\n")
    return sent


def _decisions(
    log: Path, sent: dict[str, float], wait_s: float = 120.0
) -> list[tuple[float, float, float]]:
    """(lane latency ms, send -> logged ms, logged at) per decision on a ticket in ``sent``."""
    deadline = time.monotonic() + wait_s
    while True:
        found: dict[str, tuple[float, float, float]] = {}
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            m = DECISION.match(entry.get("msg", ""))
            if m and m[1] in sent:
                found[m[1]] = (float(m[2]), (entry["ts"] - sent[m[1]]) * 1000, entry["ts"])
        if len(found) == len(sent) or time.monotonic() > deadline:
            return list(found.values())
        time.sleep(0.2)


async def _requester(
    http: aiohttp.ClientSession, base: str, k: int, stop: asyncio.Event, out: list[Request]
) -> None:
    while not stop.is_set():
        path = PATHS[k % len(PATHS)]
        k += 1
        t = time.perf_counter()
        try:
            async with http.get(base + path) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, OSError, TimeoutError):
            status = 0
        out.append((time.time(), (time.perf_counter() - t) * 1000, path, status))


async def _display(http: aiohttp.ClientSession, base: str, stop: asyncio.Event) -> int:
    """Follow /display/events like a staff screen; the number of decisions received."""
    events = 0
    try:
        async with http.get(base + "/display/events") as r:
            while not stop.is_set():
                try:  # wake up now and then to see whether the run is over
                    line = await asyncio.wait_for(r.content.readline(), 0.5)
                except TimeoutError:
                    continue
                if not line:
                    break
                # decisions only: not the greeting, state changes, passage results or heartbeats
                events += line.startswith(b'data: {"decision":')
    except (aiohttp.ClientError, OSError):
        pass
    return events


async def _hammer(base: str, clients: int, sse: int, conn: Connection) -> None:
    stop = asyncio.Event()
    out: list[Request] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = [asyncio.create_task(_requester(http, base, k, stop, out)) for k in range(clients)]
        displays = [asyncio.create_task(_display(http, base, stop)) for _ in range(sse)]
        conn.send("started")
        while not conn.poll():
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
        events = await asyncio.gather(*displays)
    conn.send((out, list(events)))


def _load_process(base: str, clients: int, sse: int, conn: Connection) -> None:
    asyncio.run(_hammer(base, clients, sse, conn))


def _phase(
    pids: list[int], log: Path, sock: socket.socket, texts: list[str], gap: float
) -> dict[str, Any]:
    """Scan ``texts``; CPU of ``pids`` (the daemon first) and of everything else meanwhile."""
    own0, busy0, cpu0, t0 = time.process_time(), _busy_s(), [_cpu_s(p) for p in pids], time.time()
    sent = _scan(sock, texts, gap)
    t1 = time.time()
    cpu = [(_cpu_s(p) - c) / (t1 - t0) for p, c in zip(pids, cpu0, strict=True)]
    own = (time.process_time() - own0) / (t1 - t0)
    others = (_busy_s() - busy0) / (t1 - t0) - sum(cpu) - own
    found = _decisions(log, sent)
    if not found:
        raise SystemExit("no decision logged: " + log.read_text()[-2000:])
    lane, e2e, at = [f[0] for f in found], [f[1] for f in found], [f[2] for f in found]
    return {
        "window": (t0, t1), "cpu": cpu[0], "crowd": sum(cpu[1:]), "others": max(0.0, others),
        "n": len(found),
        "rate": (len(at) - 1) / max(1e-3, max(at) - min(at)),
        "p50": statistics.median(lane), "p99": pct(lane, 0.99), "max": max(lane),
        "e2e_p50": statistics.median(e2e), "e2e_p99": pct(e2e, 0.99), "e2e_max": max(e2e),
    }  # fmt: skip


def _served(requests: list[Request], window: tuple[float, float]) -> dict[str, float]:
    """Status requests finished inside ``window``: rate, latency, answers other than 200."""
    inside = [r for r in requests if window[0] <= r[0] <= window[1]]
    took = [r[1] for r in inside]
    return {
        "s_rate": len(inside) / (window[1] - window[0]),
        "s_p50": statistics.median(took), "s_p99": pct(took, 0.99),
        "not_200": sum(1 for r in inside if r[3] != 200),
    }  # fmt: skip


def one_run(
    dir: Path, base: str, iss: issuer.Issuer, args: argparse.Namespace, run: int
) -> dict[str, Any]:
    """One daemon (``base``: the prepared gate.toml): warm-up, a quiet then a loaded phase."""
    port = free_port()
    conf, log = _configure(dir, base, port), dir / f"gate-{run}.log"
    gap, n = args.interval_ms / 1000, args.scans
    texts = [iss.ticket(event=1) for _ in range(WARMUP + 2 * n)]
    proc = _start(conf, port, log)
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    load = ctx.Process(
        target=_load_process, args=(f"http://127.0.0.1:{port}", args.clients, args.sse, theirs)
    )
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(dir / "scan.sock"))
            _phase([proc.pid], log, sock, texts[:WARMUP], gap)
            quiet = _phase([proc.pid], log, sock, texts[WARMUP : WARMUP + n], gap)
            load.start()
            ours.recv()
            time.sleep(4.0)  # let the crowd reach a steady state (connections are accepted 200/s)
            assert load.pid is not None
            loaded = _phase([proc.pid, load.pid], log, sock, texts[WARMUP + n :], gap)
            ours.send("stop")
            requests, events = ours.recv()
            load.join(30)
    finally:
        if load.is_alive():
            load.terminate()
        proc.terminate()
        proc.wait(30)
    loaded |= _served(requests, loaded["window"])
    loaded["sse_events"] = min(events) if events else 0
    return {"quiet": quiet, "loaded": loaded}


def median(runs: list[dict[str, Any]], phase: str, key: str) -> float:
    return float(statistics.median(r[phase][key] for r in runs))


def lane_table(runs: list[dict[str, Any]], interval_ms: float, phase: str, crowd: str) -> None:
    """The lane's figures, quiet vs ``phase`` (medians of the runs), with ratios."""

    def row(name: str, key: str, fmt: str, ratio: bool = False) -> None:
        q, ld = median(runs, "quiet", key), median(runs, phase, key)
        tail = f"{ld / q:>9.2f}x" if ratio and q else ""
        print(f"  {name:<32}{q:>12{fmt}}{ld:>12{fmt}}{tail}")

    print(f"  {'(median of ' + str(len(runs)) + ' runs)':<32}{'quiet':>12}{phase:>12}{'ratio':>10}")
    row("decisions logged", "n", ".0f")
    row("daemon CPU, % of a core", "cpu", ".0%")
    row(crowd, "crowd", ".0%")
    row("other processes' CPU", "others", ".0%")
    row("decisions/s (offered " + f"{1000 / interval_ms:g})", "rate", ".1f")
    for label, key in (("p50", "p50"), ("p99", "p99"), ("max", "max")):
        row(f"lane latency {label} ms", key, ".2f", ratio=True)
    for label, key in (("p50", "e2e_p50"), ("p99", "e2e_p99"), ("max", "e2e_max")):
        row(f"send -> logged {label} ms", key, ".1f", ratio=True)


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    lane_table(runs, args.interval_ms, "loaded", "status clients' CPU")
    loaded = {k: median(runs, "loaded", k) for k in ("s_rate", "s_p50", "s_p99", "not_200")}
    loaded["sse_events"] = median(runs, "loaded", "sse_events")
    print(
        f"  status under load: {loaded['s_rate']:.0f} requests/s answered, p50"
        f" {loaded['s_p50']:.1f} ms, p99 {loaded['s_p99']:.1f} ms, {loaded['not_200']:.0f} not 200;"
        f" each of {args.sse} displays got >= {loaded['sse_events']:.0f} events"
    )
    figures: dict[str, Any] = {"bench": "status", "revoked": args.revoked, "rows": args.rows}
    for phase in ("quiet", "loaded"):
        for key in ("rate", "p50", "p99", "max", "e2e_p50", "e2e_p99"):
            figures[f"{phase}_{key}"] = round(median(runs, phase, key), 2)
    figures["status_rate"] = round(loaded["s_rate"])
    figures["status_p99_ms"] = round(loaded["s_p99"], 1)
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revoked", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--scans", type=int, default=500)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--sse", type=int, default=5, help="staff displays following events")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        dir = Path(tmp)
        iss = asyncio.run(prepare(dir, args.revoked, args.rows))
        base = (dir / "gate.toml").read_text()
        for run in range(args.runs):
            runs.append(one_run(dir, base, iss, args, run))
            q, ld = runs[-1]["quiet"], runs[-1]["loaded"]
            print(
                f"run {run + 1}: lane p99 {q['p99']:.2f} -> {ld['p99']:.2f} ms, send -> logged"
                f" p99 {q['e2e_p99']:.1f} -> {ld['e2e_p99']:.1f} ms, status {ld['s_rate']:.0f}/s"
            )
    print(
        f"gate-agent run, {args.revoked:,} revocations, {args.rows:,} journal rows, {args.scans}"
        f" scans one per {args.interval_ms:g} ms, {args.clients} concurrent status clients,"
        f" {os.cpu_count()} CPUs, load average {load_before:.2f} before:"
    )
    report(runs, args)


if __name__ == "__main__":
    main()
