"""Benchmark: revocation index start-up, resident memory per entry and lookup latency.

Run as a script (not collected by pytest)::

    .venv/bin/python tests/bench/bench_revocation.py [--sizes 1000000,5000000] [--lookups 200000]

For each size it builds a SQLite store directly (sorted inserts, one transaction), then measures in
a fresh subprocess so nothing from the build inflates the numbers: the time from
``RevocationStore.open()`` to ready, RSS before and after (``/proc/self/statm``) and the peak
(``VmHWM``), and the latency of ``status()`` over a shuffled mix of hits and misses. It prints a
table and one JSON line per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PAGE = os.sysconf("SC_PAGE_SIZE")
BLOCKED_SHARE = 0.1  # a tenth of the entries on the blocked list, the rest revoked


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a child would report the
    # parent's peak from building the database.
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def build(path: Path, n: int, seed: int) -> None:
    """A store with n random keys (90% revoked, 10% blocked) at version 1."""
    rng = random.Random(seed)
    raw = rng.randbytes(16 * n)
    keys = sorted({raw[i : i + 16] for i in range(0, len(raw), 16)})
    step = round(1 / BLOCKED_SHARE)
    blocked = set(keys[::step])
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE revocation(list INTEGER NOT NULL, key BLOB NOT NULL,"
        " PRIMARY KEY(list, key)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE revocation_meta(id INTEGER PRIMARY KEY CHECK(id=1),"
        " version INTEGER NOT NULL, issued_at INTEGER, expires INTEGER)"
    )
    with db:
        db.executemany("INSERT INTO revocation VALUES (2, ?)", ((k,) for k in keys[::step]))
        db.executemany(
            "INSERT INTO revocation VALUES (1, ?)", ((k,) for k in keys if k not in blocked)
        )
        now = int(time.time())
        db.execute("INSERT INTO revocation_meta VALUES (1, 1, ?, ?)", (now, now + 86400))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


async def measure(path: Path, lookups: int, seed: int) -> dict[str, Any]:
    """Runs in the fresh subprocess: open, memory, latency."""
    import numpy as np

    from agent.revocation import ListState, RevocationStore

    rss0 = rss_bytes()
    t0 = time.perf_counter()
    store = await RevocationStore.open(path)
    ready_s = time.perf_counter() - t0
    rss1 = rss_bytes()
    peak = peak_rss_bytes()
    index = store.index
    n = len(index)
    db = sqlite3.connect(path)
    hits = [
        row[0]
        for row in db.execute(
            "SELECT key FROM revocation ORDER BY random() LIMIT ?", (lookups // 2,)
        )
    ]
    db.close()
    rng = random.Random(seed + 1)
    probes = hits + [rng.randbytes(16) for _ in range(lookups - len(hits))]
    rng.shuffle(probes)
    clock = time.perf_counter_ns
    lat = np.empty(len(probes), dtype=np.int64)
    found = 0
    for i, key in enumerate(probes):
        t = clock()
        state = index.status(key)
        lat[i] = clock() - t
        found += state is not ListState.NONE
    await store.close()
    assert found == len(hits), f"lookups found {found} of {len(hits)} stored keys"
    return {
        "entries": n,
        "ready_s": round(ready_s, 3),
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "rss_delta_bytes": rss1 - rss0,
        "peak_rss_mb": round(peak / 2**20, 1),
        "resident_b_per_entry": round((rss1 - rss0) / n, 2),
        "index_b_per_entry": round(index.nbytes() / n, 2),
        "lookups": len(probes),
        "lookup_p50_ns": int(np.percentile(lat, 50)),
        "lookup_p99_ns": int(np.percentile(lat, 99)),
        "lookup_max_ns": int(lat.max()),
    }


def run_child(path: Path, lookups: int, seed: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(path),
            "--lookups",
            str(lookups),
            "--seed",
            str(seed),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000")
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child, args.lookups, args.seed))))
        return
    header = "  entries  ready s  RSS MB  B/entry  peak MB  p50 ns  p99 ns"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"rev{size}.db"
            t0 = time.perf_counter()
            build(path, size, args.seed)
            build_s = time.perf_counter() - t0
            runs = [run_child(path, args.lookups, args.seed + r) for r in range(args.repeats)]
            summary = {
                key: statistics.median(run[key] for run in runs)
                for key in runs[0]
                if isinstance(runs[0][key], int | float)
            }
            summary |= {
                "build_s": round(build_s, 1),
                "repeats": len(runs),
                "db_mb": round(path.stat().st_size / 2**20, 1),
            }
            rows.append(summary)
    print(header)
    for r in rows:
        print(
            f"{r['entries']:>9} {r['ready_s']:>8.3f} {r['rss_delta_bytes'] / 2**20:>7.1f}"
            f" {r['resident_b_per_entry']:>8.2f} {r['peak_rss_mb']:>8.1f}"
            f" {r['lookup_p50_ns']:>7.0f} {r['lookup_p99_ns']:>7.0f}"
        )
    report: dict[str, Any] = {"bench": "revocation", "results": rows}
    if len(rows) >= 2:
        # Fixed costs (SQLite, the worker thread, code pages) cancel out in the slope.
        small, big = rows[0], rows[-1]
        grown = big["rss_delta_bytes"] - small["rss_delta_bytes"]
        marginal = grown / (big["entries"] - small["entries"])
        report["marginal_b_per_entry"] = round(marginal, 2)
        span = f"{small['entries']}->{big['entries']}"
        print(f"marginal resident bytes per entry, {span}: {marginal:.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
