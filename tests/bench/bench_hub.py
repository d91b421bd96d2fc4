"""Hub ingest: entries/s over HTTP and through store.ingest, and their ratios to raw inserts of the
same rows.

N realistic entries (4 gates; ~10% of tickets presented again at another gate, admitted offline,
so the hub raises double-admission alerts; a few denied attempts, exits and annulments) are
uploaded in batches of 500, the gates interleaved, into a fresh store: the full path with the
ingest rules, the durable commit and the alerts. In the same run, the floor: the same rows
inserted into a plain table with the same columns and indexes (SQLite: executemany, one
transaction per 500, WAL, synchronous=FULL; PostgreSQL: asyncpg executemany, one transaction per
500). Each figure is the median of ``--runs`` runs, each on a fresh database.

The HTTP figure (SQLite only, the main one): the real hub (``python -m agent hub``, its own
process, tests/hubproc.py) on 127.0.0.1 with a token per gate; each gate uploads its batches
one after the other as a gate's outbox does (the next after the ack), the 4 gates in parallel.
Bodies are encoded before the clock starts; the clock runs from the first request to the last ack.

    .venv/bin/python tests/bench/bench_hub.py [--entries 50000] [--runs 3] [--pg URL | --pg auto]

``--pg auto`` starts a temporary PostgreSQL cluster (tests/pg.py); with a URL, the benchmark
creates and drops databases ``bench_hub_*`` on that server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
import asyncpg

from agent import issuer
from agent.clock import uuid7
from agent.model import Reason, Verdict
from sync import hub_sql
from sync.hub_sql import ENTRY_COLUMNS
from sync.hub_store import HubPolicy
from sync.hub_stores import open_store
from sync.protocol import BatchUpload, EntryWire, encode
from tests.hubproc import HubProcess, add_token, write_hub_config

BATCH = 500
GATES = 4
T0 = 1_750_000_000.0
POLICY = HubPolicy("bench")
_PLAIN_SCHEMA = """
CREATE TABLE entries (
    cursor {pk}, gate_seq BIGINT NOT NULL, entry_id TEXT NOT NULL UNIQUE,
    gate_id TEXT NOT NULL, lane TEXT NOT NULL, ticket_ref TEXT NOT NULL, kind TEXT NOT NULL,
    verdict TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, flags TEXT NOT NULL,
    annuls TEXT, zone INTEGER, wall_time {real} NOT NULL, clock_synced BOOLEAN NOT NULL,
    mono_ns BIGINT NOT NULL, boot_id TEXT NOT NULL, hlc BIGINT NOT NULL,
    rev_version BIGINT NOT NULL, offline BOOLEAN NOT NULL, in_feed BOOLEAN NOT NULL,
    received_at {real} NOT NULL, short_id TEXT NOT NULL DEFAULT '', rev_key TEXT,
    UNIQUE (gate_id, gate_seq)
);
CREATE INDEX entries_ticket_gate ON entries (ticket_ref, (kind = 'attempt'), gate_id{ticket_cursor});
CREATE INDEX entries_short_id ON entries (short_id);
CREATE INDEX entries_gate_boot ON entries (gate_id, boot_id);
"""


class _Journal:
    def __init__(self, gate_id: str) -> None:
        self.gate_id = gate_id
        self.seq = 0
        self.mono = 0  # a gate's monotonic clock never runs back in a run (the hub refuses it)
        self.rows: list[EntryWire] = []

    def add(self, ref: str, kind: str, at: float, annuls: str | None = None) -> EntryWire:
        self.seq += 1
        self.mono = max(self.mono + 1, int(at * 1e9))
        admitted = kind in ("entry", "exit")
        row = EntryWire(
            gate_seq=self.seq, entry_id=str(uuid7(int(at * 1000))), gate_id=self.gate_id,
            lane="in", ticket_ref=ref, kind=kind,  # type: ignore[arg-type]
            verdict=Verdict.ADMIT if admitted else Verdict.DENY,
            reason=Reason.OK if admitted or kind == "annul" else Reason.ALREADY_USED,
            detail="" if admitted else "Already used at Gate 1", flags=("offline",),
            annuls=annuls, zone=1, wall_time=at, clock_synced=True, mono_ns=self.mono,
            boot_id="7f3c2a9e-boot", hlc=int(at * 1000) << 16, rev_version=12, offline=True,
        )  # fmt: skip
        self.rows.append(row)
        return row


def workload(n: int, seed: int = 7) -> list[tuple[str, list[EntryWire]]]:
    """About ``n`` entries of 4 gates as (gate_id, batch) uploads, the gates interleaved."""
    rng = random.Random(seed)
    gates = [_Journal(f"gate-{i + 1}") for i in range(GATES)]
    at = T0
    while sum(len(g.rows) for g in gates) < n:
        at += 0.05
        gate = rng.choice(gates)
        ref = f"tk1:{rng.getrandbits(96):024x}"
        entry = gate.add(ref, "entry", at)
        roll = rng.random()
        if roll < 0.10:  # presented again at another gate while offline: admitted twice
            rng.choice([g for g in gates if g is not gate]).add(ref, "entry", at + 30)
        elif roll < 0.14:
            gate.add(ref, "attempt", at + 5)
        elif roll < 0.16:
            gate.add(ref, "annul", at + 3, annuls=entry.entry_id)
        elif roll < 0.20:
            gate.add(ref, "exit", at + 3600)
    batches = [
        (g.gate_id, g.rows[i : i + BATCH]) for g in gates for i in range(0, len(g.rows), BATCH)
    ]
    # Interleave: the k-th batch of every gate before the (k+1)-th of any.
    return sorted(batches, key=lambda b: b[1][0].gate_seq)


async def store_run(url: str, batches: list[tuple[str, list[EntryWire]]]) -> tuple[float, int]:
    """Seconds to ingest every batch through the store, and the number of alerts raised."""
    store = await open_store(url, POLICY)
    try:
        start = time.perf_counter()
        for gate_id, batch in batches:
            await store.ingest(gate_id, batch, time.time())
        elapsed = time.perf_counter() - start
        alerts = len(await store.alerts(0, 1_000_000))
    finally:
        await store.close()
    return elapsed, alerts


async def _upload_all(
    url: str, token: str, uploads: list[tuple[bytes, int]], session: aiohttp.ClientSession
) -> None:
    """One gate's batches, each sent after the previous one's ack. The ack is checked only for
    its ``acked_through_seq``: the gate's own reading of it is not the hub's work, and the
    benchmark's client shares the machine with the hub."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for body, last_seq in uploads:
        async with session.post(url, data=body, headers=headers) as r:
            answer = await r.read()
            if r.status != 200:
                raise RuntimeError(f"upload answered {r.status}: {answer[:300]!r}")
        if json.loads(answer)["acked_through_seq"] != last_seq:
            raise RuntimeError(f"upload acked {answer[:300]!r}, not through {last_seq}")


async def http_run(dir: Path, keys: Path, batches: list[tuple[str, list[EntryWire]]]) -> float:
    """Seconds to upload every batch to a real hub process, the gates in parallel."""
    setup = write_hub_config(dir, keys=keys)
    gates = sorted({g for g, _ in batches})
    tokens = {g: add_token(setup, gate_id=g) for g in gates}
    uploads = {
        g: [(encode(BatchUpload(g, tuple(b))), b[-1].gate_seq) for gid, b in batches if gid == g]
        for g in gates
    }
    with HubProcess(setup):
        connector = aiohttp.TCPConnector(limit=len(gates))
        async with aiohttp.ClientSession(connector=connector) as session:
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    _upload_all(
                        f"{setup.url}/v1/gates/{g}/entries:batch", tokens[g], uploads[g], session
                    )
                    for g in gates
                )
            )
            return time.perf_counter() - start


def sqlite_raw_run(path: Path, batches: list[tuple[str, list[EntryWire]]]) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(_PLAIN_SCHEMA.format(pk="INTEGER PRIMARY KEY", real="REAL", ticket_cursor=""))
    sql = "INSERT INTO entries ({}) VALUES ({})".format(
        ", ".join(ENTRY_COLUMNS), ", ".join("?" * len(ENTRY_COLUMNS))
    )
    start = time.perf_counter()
    for _, batch in batches:
        db.execute("BEGIN")
        db.executemany(sql, [hub_sql.entry_params(e, time.time()) for e in batch])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


async def pg_raw_run(url: str, batches: list[tuple[str, list[EntryWire]]]) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            _PLAIN_SCHEMA.format(
                pk="BIGSERIAL PRIMARY KEY", real="FLOAT8", ticket_cursor=", cursor"
            )
        )
        sql = "INSERT INTO entries ({}) VALUES ({})".format(
            ", ".join(ENTRY_COLUMNS), ", ".join(f"${i + 1}" for i in range(len(ENTRY_COLUMNS)))
        )
        start = time.perf_counter()
        for _, batch in batches:
            async with conn.transaction():
                await conn.executemany(sql, [hub_sql.entry_params(e, time.time()) for e in batch])
        return time.perf_counter() - start
    finally:
        await conn.close()


class PgDatabases:
    """Fresh databases on a server: ``bench_hub_<n>``, dropped afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.count = 0
        self.made: list[str] = []

    def _url(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    async def fresh(self) -> str:
        self.count += 1
        name = f"bench_hub_{self.count}_{int(time.time())}"
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        self.made.append(name)
        return self._url(name)

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            for name in self.made:
                await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        finally:
            await conn.close()


@contextmanager
def pg_server(spec: str | None) -> Iterator[str | None]:
    """The server URL to benchmark on: none, the given one, or a temporary cluster's."""
    if spec is None:
        yield None
    elif spec == "auto":
        from tests.pg import temp_cluster

        with temp_cluster() as server:
            yield server.url()
    else:
        yield spec


Figures = dict[str, float]  # store_s, raw_s, alerts, and http_s for SQLite


async def _awaited(once: Callable[[], Awaitable[Figures]]) -> Figures:
    return await once()


def median_of(runs: int, once: Callable[[], Awaitable[Figures]]) -> Figures:
    results = [asyncio.run(_awaited(once)) for _ in range(runs)]
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pg", help="PostgreSQL server URL, or 'auto' for a temporary cluster")
    args = ap.parse_args()
    batches = workload(args.entries)
    n = sum(len(b) for _, b in batches)
    figures: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".bench-") as tmp:
        runs = iter(range(1_000_000))
        keys = Path(tmp) / "keys"
        issuer.keys_init(keys, events=[1])

        async def sqlite_once() -> Figures:
            k = next(runs)
            http_s = await http_run(Path(tmp) / f"hub{k}", keys, batches)
            store_s, alerts = await store_run(f"sqlite://{tmp}/store{k}.db", batches)
            raw_s = sqlite_raw_run(Path(tmp) / f"raw{k}.db", batches)
            return {"http_s": http_s, "store_s": store_s, "raw_s": raw_s, "alerts": alerts}

        figures["sqlite"] = median_of(args.runs, sqlite_once)
    with pg_server(args.pg) as url:
        if url is not None:
            dbs = PgDatabases(url)

            async def pg_once() -> Figures:
                store_s, alerts = await store_run(await dbs.fresh(), batches)
                raw_s = await pg_raw_run(await dbs.fresh(), batches)
                return {"store_s": store_s, "raw_s": raw_s, "alerts": alerts}

            try:
                figures["postgresql"] = median_of(args.runs, pg_once)
            finally:
                asyncio.run(dbs.drop_all())
    report(n, len(batches), args.runs, figures)


def report(n: int, n_batches: int, runs: int, figures: dict[str, Figures]) -> None:
    print(f"hub ingest: {n:,} entries from {GATES} gates in {n_batches} batches, median of {runs}")
    print(
        f"{'backend':<12}{'http e/s':>10}{'store e/s':>11}{'raw e/s':>10}"
        f"{'http/raw':>10}{'store/raw':>11}{'alerts':>8}"
    )
    out: dict[str, object] = {"bench": "hub_ingest", "entries": n, "runs": runs}
    for backend, f in figures.items():
        store_eps, raw_eps = n / f["store_s"], n / f["raw_s"]
        http_eps = n / f["http_s"] if "http_s" in f else math.nan
        print(
            f"{backend:<12}{http_eps:>10,.0f}{store_eps:>11,.0f}{raw_eps:>10,.0f}"
            f"{http_eps / raw_eps:>10.2f}{store_eps / raw_eps:>11.2f}{f['alerts']:>8.0f}"
        )
        row: dict[str, float] = {
            "store_eps": round(store_eps),
            "raw_eps": round(raw_eps),
            "store_ratio": round(store_eps / raw_eps, 3),
            "alerts": int(f["alerts"]),
        }
        if "http_s" in f:
            row |= {"http_eps": round(http_eps), "http_ratio": round(http_eps / raw_eps, 3)}
        out[backend] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
