"""An honest gate's upload latency at the hub while a stolen gate floods one ticket.

The stolen gate's token first gives a made-up ticket ``--rows`` rows (stored straight into the
hub's SQLite store), then keeps ``--parallel`` one-row uploads about that ticket in flight over
HTTP; an honest gate uploads one row of another ticket every 50 ms, quiet and under the flood.
The hub is the real application (``sync.hub.make_app``) on 127.0.0.1, its quota and alert budget
raised so that nothing is refused. Before the hub read a ticket's last rows only
(``sync.hub_rules.MAX_TICKET_HISTORY``) and took one upload per gate at a time, each of the thief's
batches read every row of the ticket on the store's one thread. No assertions.

    .venv/bin/python tests/bench/bench_hub_hot.py [--rows 5000] [--parallel 20] [--probes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent import issuer
from agent.model import Reason, Verdict
from sync import hub_admin, hub_config, protocol
from sync.hub import make_app
from sync.protocol import BatchUpload, EntryWire
from tests.hubproc import write_hub_config

OPEN = "upload_burst = 1000000\nupload_rows_per_s = 1000000\nalert_budget = 100000\n"


def row(gate: str, seq: int, ref: str, at: float) -> EntryWire:
    return EntryWire(
        gate_seq=seq, entry_id=str(uuid.uuid4()), gate_id=gate, lane="in", ticket_ref=ref,
        kind="entry", verdict=Verdict.ADMIT, reason=Reason.OK, detail="", flags=(), annuls=None,
        zone=None, wall_time=at, clock_synced=True, mono_ns=1, boot_id="b",
        hlc=int(at * 1000) << 16, rev_version=0, offline=False,
    )  # fmt: skip


async def run(dir: Path, args: argparse.Namespace) -> dict[str, float]:
    issuer.keys_init(dir / "keys", kid=7, events=[1])
    config = hub_config.load(write_hub_config(dir / "hub", keys=dir / "keys", extra=OPEN).config)
    tokens = {g: await hub_admin.add_gate_token(config, g) for g in ("thief", "honest")}
    seqs = {"thief": 0, "honest": 0}
    async with hub_admin.opened_store(config) as store:
        start = time.time() - 3600
        for first in range(0, args.rows, 500):
            seqs_now = range(first + 1, min(first + 500, args.rows) + 1)
            rows = [row("thief", seq, "tk1:hot", start + seq) for seq in seqs_now]
            await store.ingest("thief", rows, time.time())
        seqs["thief"] = args.rows
        runner = web.AppRunner(make_app(config, store))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:

            async def upload(gate: str, ref: str) -> None:
                seqs[gate] += 1
                body = protocol.encode(
                    BatchUpload(gate, (row(gate, seqs[gate], ref, time.time()),))
                )
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/gates/{gate}/entries:batch",
                    data=body,
                    headers={"Authorization": f"Bearer {tokens[gate]}"},
                ) as reply:
                    await reply.read()
                    assert reply.status == 200, reply.status

            async def thief() -> None:
                while True:
                    await upload("thief", "tk1:hot")

            async def probes() -> list[float]:
                out = []
                for _ in range(args.probes):
                    t = time.perf_counter()
                    await upload("honest", f"tk1:{uuid.uuid4().hex}")
                    out.append((time.perf_counter() - t) * 1000)
                    await asyncio.sleep(0.05)
                return out

            quiet = await probes()
            flood = [asyncio.create_task(thief()) for _ in range(args.parallel)]
            await asyncio.sleep(1.0)
            flooded = await probes()
            for task in flood:
                task.cancel()
            await asyncio.gather(*flood, return_exceptions=True)
        await runner.cleanup()
    return {
        "quiet_p50_ms": statistics.median(quiet),
        "flooded_p50_ms": statistics.median(flooded),
        "flooded_max_ms": max(flooded),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--parallel", type=int, default=20)
    ap.add_argument("--probes", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hub-hot-") as tmp:
        figures = asyncio.run(run(Path(tmp), args))
    print(f"hub with one ticket of {args.rows:,} rows, {args.parallel} parallel uploads about it")
    print(f"  honest 1-row upload: quiet p50 {figures['quiet_p50_ms']:.1f} ms, flooded p50"
          f" {figures['flooded_p50_ms']:.1f} ms, max {figures['flooded_max_ms']:.1f} ms")  # fmt: skip
    print(json.dumps({"bench": "hub_hot", "rows": args.rows, **figures}))


if __name__ == "__main__":
    main()
