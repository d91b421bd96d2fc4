"""The pretix adapter's sync at scale, against a real pretix (tests/pretix_real.py) with a big event.

Creates ``--tickets`` more paid orders in bulk (tests/pretix_fixtures.py, timed), starts the real
server, and puts a counting loopback proxy between it and a gate (the daemon stack, in-process,
a pretix-only config, a full-access device). Measures through the proxy:

* the first round (the whole event is downloaded once);
* a round when nothing changed (``--rounds`` of them), requests and bytes (bodies and headers);
* for comparison, what a round cost before issue 11 part 4: the event, the check-in list, the
  revoked and blocked secrets and every page of the list's positions (pretix ignores
  ``modified_since`` there, so each round downloaded them all);
* the time from a redeem at another device to the gate knowing the ticket is used (it then
  refuses it: checked with a scan for each sample), ``--samples`` times, with the gate's
  background rounds every ``--interval`` seconds and the redeems at random phases;
* draining: ``--drain`` admissions queued, then uploaded in one round (rows per second).

    .venv/bin/python tests/bench/bench_pretix_sync.py [--tickets 50000] [--samples 50]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.model import Reason
from agent.ports import Scan
from drivers.sim import SimGate, SimScanner
from tests.gateconf import write_gate_config
from tests.pretix_real import Server, missing

_mono = itertools.count(1)


@dataclass
class Counter:
    requests: int = 0
    bytes_in: int = 0  # response status line, headers and body, as the gate receives them
    bytes_out: int = 0  # request line, headers and body

    def snapshot(self) -> tuple[int, int, int]:
        return self.requests, self.bytes_in, self.bytes_out


def _header_bytes(headers: Any) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.items())


@asynccontextmanager
async def counting_proxy(upstream: str, counter: Counter) -> AsyncIterator[str]:
    """A loopback reverse proxy to ``upstream`` that counts requests and bytes. pretix writes
    its own URL into ``next`` links: the proxy puts its URL there (as a site's proxy would)."""
    session = aiohttp.ClientSession(auto_decompress=False)
    own: list[bytes] = []

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        counter.requests += 1
        counter.bytes_out += len(request.method) + len(request.path_qs) + 12
        counter.bytes_out += _header_bytes(request.headers) + len(body)
        async with session.request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            payload, status = await resp.read(), resp.status
            out = {k: v for k, v in resp.headers.items()
                   if k.lower() in ("content-type", "date", "retry-after", "content-encoding")}  # fmt: skip
            counter.bytes_in += 17 + _header_bytes(resp.headers) + len(payload)
        return web.Response(body=payload.replace(upstream.encode(), own[0]), status=status,
                            headers=out)  # fmt: skip

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    own.append(f"http://127.0.0.1:{runner.addresses[0][1]}".encode())
    try:
        yield own[0].decode()
    finally:
        await runner.cleanup()
        await session.close()


def gate_config(folder: Path, url: str, data: dict[str, Any], auth: str, interval: float) -> Path:
    """The bench gate's config; ``auth`` is TOML for the [pretix] table (or "")."""
    pretix = {"url": url, "organizer": data["organizer"], "event": data["event"],
              "checkin_list": data["lists"]["all"], **tomllib.loads(auth),
              "interval_s": interval, "timeout_s": 60}  # fmt: skip
    return write_gate_config(
        folder / "gate.toml",
        gate={"id": "bench-gate", "zone": None, "state_dir": folder / "state"},
        lane={"passage_timeout_s": 0.3},
        pretix=pretix,
    )


async def api(url: str, auth: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One call; ``auth`` is the Authorization header ("Token ..." or "Device ...")."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.request(method, url + path, json=body, headers={"Authorization": auth}) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def new_device(url: str, data: dict[str, Any], name: str) -> tuple[int, str]:
    """A full-access device; returns its device_id and its one-time initialisation token."""
    status, body = await api(url, f"Token {data['admin_token']}", "POST",
                             f"/api/v1/organizers/{data['organizer']}/devices/",
                             {"name": name, "all_events": True, "limit_events": []})  # fmt: skip
    assert status == 201, status
    return body["device_id"], body["initialization_token"]


async def device_token(url: str, init_token: str) -> str:
    status, body = await api(url, "", "POST", "/api/v1/device/initialize", {
        "token": init_token, "hardware_brand": "bench", "hardware_model": "bench",
        "os_name": "Linux", "os_version": "1", "software_brand": "bench", "software_version": "1",
    })  # fmt: skip
    assert status == 200, status
    token: str = body["api_token"]
    return token


async def round_before(url: str, token: str, data: dict[str, Any]) -> None:
    """What one round requested before issue 11 part 4 (the list's positions, every page)."""
    event = f"/api/v1/organizers/{data['organizer']}/events/{data['event']}"
    lid = data["lists"]["all"]
    paths: list[str | None] = [f"{event}/", f"{event}/checkinlists/{lid}/"]
    paths += [
        f"{event}/revokedsecrets/?ordering=created",
        f"{event}/blockedsecrets/?ordering=updated",
    ]
    for path in paths:
        assert path is not None
        status, _ = await api(url, f"Device {token}", "GET", path)
        assert status == 200, (path, status)
    page: str | None = f"{event}/checkinlists/{lid}/positions/"
    while page is not None:
        status, body = await api(url, f"Device {token}", "GET", page)
        assert status == 200, status
        page = body["next"].removeprefix(url) if body["next"] else None


def figures(before: tuple[int, int, int], after: tuple[int, int, int]) -> tuple[int, int, int]:
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


async def measure_rounds(
    args: argparse.Namespace, url: str, counter: Counter, data: dict[str, Any], folder: Path
) -> None:
    """The first round, rounds with nothing changed, and a round as it was before."""
    _, init = await new_device(url, data, "bench turnstile")
    conf = config.load(gate_config(folder, url, data, f'init_token = "{init}"', 3600))
    began, start = time.monotonic(), counter.snapshot()
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
        up = gate.upstream
        assert up is not None
        while up.status["last_sync"] is None:  # the first round, in the background
            assert up.status["last_error"] is None, up.status["last_error"]
            assert time.monotonic() - began < 1800, "first round took over 30 min"
            await asyncio.sleep(0.1)
        n, b_in, b_out = figures(start, counter.snapshot())
        print(f"first round (whole event): {n} requests, {b_in / 1e6:.1f} MB in,"
              f" {b_out / 1e3:.0f} kB out, {time.monotonic() - began:.1f} s (incl. device init)")  # fmt: skip
        rows = []
        for _ in range(args.rounds):
            t, start = time.monotonic(), counter.snapshot()
            assert await up.sync_once(), up.status
            rows.append((*figures(start, counter.snapshot()), time.monotonic() - t))
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(f"round, nothing changed (after, median of {args.rounds}): {med[0]:.0f} requests,"
          f" {med[1] / 1e3:.1f} kB in, {med[2] / 1e3:.1f} kB out, {med[3] * 1000:.0f} ms")  # fmt: skip
    token = json.loads((folder / "state" / "pretix_device.json").read_text())["api_token"]
    t, start = time.monotonic(), counter.snapshot()
    await round_before(url, token, data)
    n, b_in, b_out = figures(start, counter.snapshot())
    print(f"round, nothing changed (before): {n} requests, {b_in / 1e6:.1f} MB in,"
          f" {b_out / 1e3:.0f} kB out, {time.monotonic() - t:.1f} s")  # fmt: skip


async def measure_latency(
    args: argparse.Namespace, url: str, data: dict[str, Any], folder: Path
) -> None:
    """Redeem at another device, time until the gate knows (the gate's state from before)."""
    _, other_init = await new_device(url, data, "bench side door")
    other = await device_token(url, other_init)
    event = f"/api/v1/organizers/{data['organizer']}/events/{data['event']}"
    lid = data["lists"]["all"]
    conf = config.load(gate_config(folder, url, data, "", args.interval))
    secrets = data["bulk"][: args.samples]
    samples: list[float] = []
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
        up = gate.upstream
        assert up is not None
        while up.status["last_sync"] is None:
            await asyncio.sleep(0.05)
        for secret in secrets:
            await asyncio.sleep(random.uniform(0, args.interval))  # a random phase, not a sync
            path = f"{event}/checkinlists/{lid}/positions/{quote(secret, safe='')}/redeem/"
            status, answer = await api(url, f"Device {other}", "POST", path,
                                       {"nonce": str(uuid.uuid4()), "type": "entry"})  # fmt: skip
            assert status == 201 and answer["status"] == "ok", answer
            redeemed = time.monotonic()
            while not await used(gate, secret):
                assert time.monotonic() - redeemed < 10 * args.interval + 60, "never learnt"
                await asyncio.sleep(0.01)
            samples.append(time.monotonic() - redeemed)
            refused = await gate.lane.present(Scan(secret, "bench", next(_mono) * 10**11))
            assert refused is not None and refused.decision.reason is Reason.ALREADY_USED
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    print(f"redeem elsewhere -> refused here ({len(samples)} samples, rounds every"
          f" {args.interval:g} s): p50 {statistics.median(samples):.2f} s, p99 {p99:.2f} s,"
          f" max {ordered[-1]:.2f} s")  # fmt: skip


async def measure_drain(
    args: argparse.Namespace, url: str, data: dict[str, Any], folder: Path
) -> None:
    """``--drain`` admissions queued (no round in between), then one round uploads them all."""
    conf = config.load(gate_config(folder, url, data, "", 3600))
    secrets = data["bulk"][args.samples : args.samples + args.drain]
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
        up = gate.upstream
        assert up is not None
        while up.status["last_sync"] is None:
            await asyncio.sleep(0.05)
        for secret in secrets:
            outcome = await gate.lane.present(Scan(secret, "bench", next(_mono) * 10**11))
            assert outcome is not None and outcome.passed, outcome
        began = time.monotonic()
        assert await up.sync_once(), up.status
        took = time.monotonic() - began
        assert up.status["outbox"] == 0, up.status
    print(f"drain: {len(secrets)} queued admissions uploaded in one round in {took:.1f} s"
          f" ({len(secrets) / took:.0f} rows/s)")  # fmt: skip


async def used(gate: Gate, secret: str) -> bool:
    return any(h.peer for h in await gate.journal.history("pretix:" + secret))


async def main(args: argparse.Namespace) -> None:
    reason = missing()
    if reason is not None:
        sys.exit(reason)
    server = Server()
    counter = Counter()
    try:
        base, data = await asyncio.to_thread(server.start, args.tickets)
        print(f"pretix with {args.tickets} more orders: created in {server.fixtures_s:.1f} s"
              f" (whole start {server.started_in_s:.1f} s)")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="bench-pretix-sync-") as tmp:
            async with counting_proxy(base, counter) as url:
                await measure_rounds(args, url, counter, data, Path(tmp))
                await measure_latency(args, url, data, Path(tmp))
                if args.drain:
                    await measure_drain(args, url, data, Path(tmp))
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--drain", type=int, default=1000, help="admissions queued, then uploaded")
    asyncio.run(main(parser.parse_args()))
