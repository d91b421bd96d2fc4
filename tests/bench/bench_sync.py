"""Sync over real HTTP: hub ingest, a peer gate learning an admission, a 100k offline backlog.

Everything runs against a hub started as its own process (`gate-agent hub`, SQLite store; with
``--pg auto`` or ``--pg URL`` also PostgreSQL) on 127.0.0.1:

* ingest: the bench_hub workload (4 gates, ~10% double admissions) POSTed in batches of 500, one
  batch in flight per gate, the 4 gates in parallel: entries/s, median of ``--runs``; beside it,
  raw SQLite inserts of the same rows in the same run (bench_hub.sqlite_raw_run) and the ratio;
* peer learning: two real gates (journal, lane, hub client) of one venue; Gate A admits a ticket,
  the time until it is in Gate B's journal (history query), ``--peer`` samples, p50/p99;
* backlog: a gate journal with ``--backlog`` unsynced admissions (recorded while no hub was
  configured), then the hub client starts: time until the outbox is empty, and the hub's rows
  counted: lost and duplicated entries must both be 0.

    .venv/bin/python tests/bench/bench_sync.py [--entries 50000] [--runs 3] [--peer 200]
        [--backlog 100000] [--pg auto|URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp

from agent import issuer
from agent.app import config as cfg
from agent.app.daemon import open_gate
from agent.app.demo_hub import GATE_TOML
from agent.clock import Clock
from agent.journal import Journal
from agent.model import Decision, Reason, Verdict
from agent.ports import Scan
from drivers.sim import SimGate, SimScanner
from sync.protocol import BatchUpload, EntryWire, encode
from tests.bench.bench_decision import pct
from tests.bench.bench_hub import pg_server, sqlite_raw_run, workload
from tests.hubproc import HubProcess, add_token, write_hub_config

VENUE = "demo"  # the gate template's venue


async def _post_all(
    url: str, tokens: dict[str, str], batches: list[tuple[str, list[EntryWire]]]
) -> None:
    by_gate: dict[str, list[list[EntryWire]]] = {}
    for gate_id, batch in batches:
        by_gate.setdefault(gate_id, []).append(batch)
    async with aiohttp.ClientSession() as http:

        async def gate(gate_id: str, mine: list[list[EntryWire]]) -> None:
            headers = {"Authorization": f"Bearer {tokens[gate_id]}"}
            for batch in mine:  # one batch in flight per gate
                body = encode(BatchUpload(gate_id, tuple(batch)))
                endpoint = f"{url}/v1/gates/{gate_id}/entries:batch"
                async with http.post(endpoint, data=body, headers=headers) as reply:
                    if reply.status != 200:
                        raise SystemExit(f"upload failed: {reply.status} {await reply.text()}")

        await asyncio.gather(*(gate(g, mine) for g, mine in by_gate.items()))


def ingest_once(
    dir: Path, keys: Path, store: str | None, batches: list[tuple[str, list[EntryWire]]]
) -> float:
    setup = write_hub_config(dir, keys=keys, venue=VENUE, store=store)
    gates = sorted({g for g, _ in batches})
    tokens = {g: add_token(setup, g) for g in gates}
    with HubProcess(setup):
        start = time.perf_counter()
        asyncio.run(_post_all(setup.url, tokens, batches))
        return time.perf_counter() - start


def _gate_config(dir: Path, gate_id: str, name: str, port: int, token: str) -> cfg.Config:
    token_file = dir / f"{gate_id}.token"
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    path = dir / f"{gate_id}.toml"
    path.write_text(GATE_TOML.format(id=gate_id, name=name, port=port))
    return cfg.load(path)


async def _peer_samples(dir: Path, port: int, tokens: dict[str, str], n: int) -> list[float]:
    iss = issuer.Issuer.load(dir / "keys")
    conf_a = _gate_config(dir, "gate-a", "Gate A", port, tokens["gate-a"])
    conf_b = _gate_config(dir, "gate-b", "Gate B", port, tokens["gate-b"])
    samples = []
    async with (
        open_gate(conf_a, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as a,
        open_gate(conf_b, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as b,
    ):
        while not (a.hub and a.hub.online and b.hub and b.hub.online):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # both long-polls are waiting
        for _ in range(n):
            text = iss.ticket(event=1, zones=[1])
            outcome = await a.lane.present(Scan(text, "s", time.monotonic_ns()))
            assert outcome is not None and outcome.record is not None and outcome.ticket
            ref = outcome.ticket.ticket_ref
            while not await b.journal.history(ref):
                await asyncio.sleep(0.0005)
            samples.append((time.time() - outcome.record.wall_time) * 1000)
    return samples


def peer_once(dir: Path, n: int) -> list[float]:
    setup = write_hub_config(dir / "hub", keys=dir / "keys", venue=VENUE)
    tokens = {g: add_token(setup, g) for g in ("gate-a", "gate-b")}
    with HubProcess(setup):
        return asyncio.run(_peer_samples(dir, setup.port, tokens, n))


async def _fill(conf: cfg.Config, n: int) -> None:
    conf.gate.state_dir.mkdir(parents=True, exist_ok=True)
    clock = Clock(conf.gate.state_dir / "clock.floor", assume="synced")
    admit = Decision(Verdict.ADMIT, Reason.OK)
    async with await Journal.open(
        conf.gate.state_dir / "journal.db",
        gate_id=conf.gate.id,
        gate_name=conf.gate.name,
        clock=clock,
    ) as journal:
        for i in range(n):
            await journal.record(
                ticket_ref=f"bench:{i}", kind="entry", decision=admit, lane="in", rev_version=0
            )


async def _drain(conf: cfg.Config) -> float:
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate()) as gate:
        start = time.perf_counter()
        while (await gate.journal.outbox())[0]:
            await asyncio.sleep(0.05)
        return time.perf_counter() - start


def backlog_once(dir: Path, n: int) -> tuple[float, int, int]:
    setup = write_hub_config(dir / "hub-backlog", keys=dir / "keys", venue=VENUE)
    token = add_token(setup, "gate-c")
    conf = _gate_config(dir, "gate-c", "Gate C", setup.port, token)
    asyncio.run(_fill(conf, n))
    with HubProcess(setup):
        took = asyncio.run(_drain(conf))
    db = sqlite3.connect(setup.dir / "state" / "hub.db")
    rows, distinct = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT entry_id) FROM entries WHERE gate_id = 'gate-c'"
    ).fetchone()
    db.close()
    return took, n - distinct, rows - distinct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peer", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--pg", default=None, help="PostgreSQL URL, or 'auto' for a temp cluster")
    args = parser.parse_args()
    batches = workload(args.entries)
    n = sum(len(b) for _, b in batches)
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        root = Path(tmp)
        issuer.keys_init(root / "keys", events=[1])
        print(f"hub ingest over HTTP: {n} entries, {len(batches)} batches of <= 500, 4 gates")
        rows = []
        for run in range(args.runs):
            http_s = ingest_once(root / f"ingest-{run}", root / "keys", None, batches)
            raw_s = sqlite_raw_run(root / f"raw-{run}.db", batches)
            rows.append((n / http_s, n / raw_s))
        http_eps = statistics.median(r[0] for r in rows)
        raw_eps = statistics.median(r[1] for r in rows)
        print(
            f"  SQLite: {http_eps:,.0f} entries/s through the hub; raw inserts {raw_eps:,.0f}/s;"
            f" ratio {http_eps / raw_eps:.2f} (goal >= 5,000/s)"
        )
        with pg_server(args.pg) as pg:
            if pg is not None:
                from tests.bench.bench_hub import PgDatabases

                dbs = PgDatabases(pg)
                try:
                    pg_rows = []
                    for run in range(args.runs):
                        url = asyncio.run(dbs.fresh())
                        pg_rows.append(
                            n / ingest_once(root / f"pg-{run}", root / "keys", url, batches)
                        )
                finally:
                    asyncio.run(dbs.drop_all())
                print(f"  PostgreSQL: {statistics.median(pg_rows):,.0f} entries/s through the hub")
        samples = peer_once(root, args.peer)
        print(
            f"peer learns an admission ({len(samples)} samples): p50 {pct(samples, 0.50):.1f} ms,"
            f" p99 {pct(samples, 0.99):.1f} ms, max {max(samples):.1f} ms (goal p99 <= 100 ms)"
        )
        took, lost, dup = backlog_once(root, args.backlog)
        print(
            f"offline backlog of {args.backlog:,} entries drained in {took:.1f} s"
            f" ({args.backlog / took:,.0f} entries/s); lost {lost}, duplicated {dup}"
        )


if __name__ == "__main__":
    main()
