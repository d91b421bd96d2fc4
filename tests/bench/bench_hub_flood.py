"""A good client's /v1/health latency at the hub, quiet and under a half-request flood.

The hub is the real ``python -m agent hub`` as its own process, started from ``--checkout``
(default: this checkout; pass a ``git worktree`` of an older commit to measure that code) with
its soft RLIMIT_NOFILE set to ``--hub-nofile`` (1024, what a process gets by default; the hard
limit is left as it is, as under systemd).

The flood: a separate process keeps ``--flood`` connections from ``--flood-host`` (127.0.0.2;
Linux routes all of 127/8 to lo), each sending half a request head and then nothing. A
connection the hub closes (a 503, or a header timeout) is opened again after ``--retry-s``, as an
attacker would. The good client opens a new connection from 127.0.0.1 for every probe
(``GET /v1/health``, ``Connection: close``), one every ``--interval-ms``; a probe not answered
within ``--probe-timeout-s`` counts as failed. Per phase: median, p99 and max latency of the
answered probes and the failures; for the flood, how its connections ended. No assertions.

    .venv/bin/python tests/bench/bench_hub_flood.py [--checkout DIR] [--flood 1100]
        [--probes 100] [--interval-ms 50] [--probe-timeout-s 2] [--settle-s 5] [--hub-nofile 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent import issuer  # noqa: E402
from tests.bench.bench_decision import pct  # noqa: E402
from tests.hubproc import free_port, write_hub_config  # noqa: E402

HALF_HEAD = b"GET /v1/health HTTP/1.1\r\nHost: hub\r\nUser-Agent: slow"
PROBE = b"GET /v1/health HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n"


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: a flood of 1,100 sockets needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _slow_client(
    port: int, host: str, retry_s: float, stop: asyncio.Event, out: list[str]
) -> None:
    """One flood connection, opened again whenever the hub closes it."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        sock = socket.socket()
        sock.setblocking(False)
        outcome = "connect failed"
        try:
            sock.bind((host, 0))
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 5)
            await loop.sock_sendall(sock, HALF_HEAD)
            outcome = "open at the end"
            got = b""
            while not stop.is_set():
                try:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.5)
                except TimeoutError:
                    continue
                if not chunk:
                    outcome = "503" if got.startswith(b"HTTP/1.1 503") else "closed by the hub"
                    break
                got += chunk
        except ConnectionResetError:
            outcome = "reset by the hub"
        except (OSError, TimeoutError):
            pass
        finally:
            sock.close()
        out.append(outcome)
        if not stop.is_set():
            await asyncio.sleep(retry_s)


async def _flood(port: int, args: argparse.Namespace, conn: Connection) -> None:
    stop = asyncio.Event()
    out: list[str] = []
    tasks = [
        asyncio.create_task(_slow_client(port, args.flood_host, args.retry_s, stop, out))
        for _ in range(args.flood)
    ]
    conn.send("started")
    while not conn.poll():
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)
    conn.send(out)


def _flood_process(port: int, args: argparse.Namespace, conn: Connection) -> None:
    raise_nofile()
    asyncio.run(_flood(port, args, conn))


def probe(port: int, timeout_s: float) -> float | None:
    """One GET /v1/health on a new connection: milliseconds to the whole 200 answer, or None."""
    t = time.perf_counter()
    deadline = t + timeout_s
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(PROBE)
            got = b""
            while True:
                sock.settimeout(max(0.001, deadline - time.perf_counter()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
    except OSError:
        return None
    return (time.perf_counter() - t) * 1000 if got.startswith(b"HTTP/1.1 200") else None


def _phase(port: int, args: argparse.Namespace) -> dict[str, Any]:
    taken: list[float] = []
    failed = 0
    for _ in range(args.probes):
        started = time.perf_counter()
        ms = probe(port, args.probe_timeout_s)
        if ms is None:
            failed += 1
        else:
            taken.append(ms)
        time.sleep(max(0.0, args.interval_ms / 1000 - (time.perf_counter() - started)))
    nan = float("nan")
    return {
        "answered": len(taken),
        "failed": failed,
        "p50": statistics.median(taken) if taken else nan,
        "p99": pct(taken, 0.99) if taken else nan,
        "max": max(taken) if taken else nan,
    }


def _start_hub(dir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    setup = write_hub_config(dir, keys=dir / "keys", port=port)
    checkout = Path(args.checkout).resolve()
    env = dict(os.environ, PYTHONPATH=str(checkout))

    def limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.hub_nofile, hard))

    with (dir / "hub.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "hub", "--config", str(setup.config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            cwd=checkout, env=env, preexec_fn=limit, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while probe(port, 1) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the hub did not start; see {dir / 'hub.log'}")
        time.sleep(0.05)
    return proc, port


def one_run(dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One hub: a quiet phase, then the same probes while the flood holds its connections."""
    proc, port = _start_hub(dir, args)
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    load = ctx.Process(target=_flood_process, args=(port, args, theirs))
    try:
        _phase(port, argparse.Namespace(**{**vars(args), "probes": 20}))  # warm-up
        quiet = _phase(port, args)
        load.start()
        ours.recv()
        time.sleep(args.settle_s)
        flooded = _phase(port, args)
        ours.send("stop")
        outcomes: list[str] = ours.recv()
        load.join(60)
        alive = proc.poll() is None
    finally:
        if load.is_alive():
            load.terminate()
        proc.terminate()
        proc.wait(30)
    counts = {k: outcomes.count(k) for k in sorted(set(outcomes))}
    lines = tracebacks = 0
    with (dir / "hub.log").open("rb") as log:  # the old hub writes a traceback per refused accept
        for line in log:
            lines += 1
            tracebacks += line.startswith(b"Traceback")
    flooded |= {
        "flood": counts,
        "hub_alive": alive,
        "log_tracebacks": tracebacks,
        "log_lines": lines,
    }
    return {"quiet": quiet, "flooded": flooded}


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def med(phase: str, key: str) -> float:
        return float(statistics.median(r[phase][key] for r in runs))

    print(f"  checkout {args.checkout}, flood {args.flood} from {args.flood_host}")
    print(f"  {'(median of ' + str(len(runs)) + ' runs)':<30}{'quiet':>12}{'flooded':>12}")
    for key, fmt in (("answered", ".0f"), ("failed", ".0f"), ("p50", ".2f"), ("p99", ".2f")):
        print(f"  /v1/health {key:<19}{med('quiet', key):>12{fmt}}{med('flooded', key):>12{fmt}}")
    print(f"  /v1/health max{'':<15}{med('quiet', 'max'):>12.2f}{med('flooded', 'max'):>12.2f}")
    for i, r in enumerate(runs):
        f = r["flooded"]
        print(
            f"  run {i + 1}: flood connections ended {f['flood']}; hub alive {f['hub_alive']};"
            f" log {f['log_lines']} lines, {f['log_tracebacks']} tracebacks"
        )
    figures: dict[str, Any] = {"bench": "hub_flood", "flood": args.flood}
    for phase in ("quiet", "flooded"):
        for key in ("answered", "failed", "p50", "p99", "max"):
            figures[f"{phase}_{key}"] = round(med(phase, key), 2)
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--checkout", default=str(ROOT), help="run the hub from this directory")
    parser.add_argument("--flood", type=int, default=1100, help="half-request connections")
    parser.add_argument("--flood-host", default="127.0.0.2")
    parser.add_argument("--retry-s", type=float, default=1.0, help="a closed one reconnects")
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    parser.add_argument("--probe-timeout-s", type=float, default=2.0)
    parser.add_argument("--settle-s", type=float, default=5.0, help="flood before the probes")
    parser.add_argument("--hub-nofile", type=int, default=1024, help="the hub's soft fd limit")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    raise_nofile()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-hub-flood-") as tmp:
        issuer.keys_init(Path(tmp) / "keys", events=[1])
        for run in range(args.runs):
            dir = Path(tmp) / f"run-{run}"
            dir.mkdir()
            (dir / "keys").symlink_to(Path(tmp) / "keys")
            runs.append(one_run(dir, args))
    report(runs, args)


if __name__ == "__main__":
    main()
