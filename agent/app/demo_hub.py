"""The demo's second part: a hub and two gates of one venue, online, then partitioned.

Runs a real hub (SQLite store, the real HTTP app on 127.0.0.1) and two real gates (journal, lists,
hub client; simulated scanners and turnstiles). Each gate reaches the hub through a loopback relay
(:class:`agent.app.demo_net.Relay`) that the demo cuts to make a network partition:

1. online, a ticket admitted at Gate A is learnt by Gate B and refused there;
2. partitioned, another ticket is admitted at both gates (each decides offline, as it must);
3. healed, both gates upload, and the hub raises one double-admission alert naming both gates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

from aiohttp import web

from agent.app import config as cfg
from agent.app.daemon import Gate, open_gate
from agent.app.demo_net import Relay
from agent.issuer import export_hub
from agent.lane import Outcome
from agent.ports import Scan
from drivers.sim import SimGate, SimScanner
from sync import hub_config
from sync.hub import make_app
from sync.hub_admin import hash_token, new_token, opened_store
from sync.hub_store import HubStore
from sync.protocol import Alert

HUB_TOML = """\
# Written by `gate-agent demo`: the demo's hub, its alerts kept in hub/hub.db. Serve it again with
#   gate-agent hub --config {dir}/hub.toml
# and open the security console at the URL in {dir}/console.url (it holds a console token).
[hub]
venue = "demo"
state_dir = "hub"
keys = "hub-keys"
listen = "{listen}"
entry_policy = "single"
# The demo's gates beat every second; a venue's gates beat every 10 s (heartbeat_s): keep the
# default 30 there, or they show offline between two beats.
gate_offline_after_s = 5
"""

GATE_TOML = """\
[gate]
id = "{id}"
name = "{name}"
venue = "demo"
events = [1]
zone = 1
state_dir = "state-{id}"

[policy]
entry = "single"
stale_list = "admit"

[lane]
name = "in"
passage_timeout_s = 1.0

[trust]
root_key = "keys/root.pub"
bundle = "keys/trust.json"

[clock]
assume = "synced"

[devices]
scanner = "sim://queue"
gate = "sim://gate?passage_ms=100"

[hub]
url = "http://127.0.0.1:{port}"
token_file = "{id}.token"
heartbeat_s = 1
wait_s = 5
revocation_interval_s = 5
offline_after_s = 1.5
retry_max_s = 0.5
timeout_s = 2
"""

Say = Callable[[str], None]


async def _until(what: Callable[[], Awaitable[bool]], timeout_s: float) -> float | None:
    """Seconds until ``what()`` was true, or None when it was not within ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if await what():
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    return None


@contextlib.asynccontextmanager
async def _hub(dir: Path) -> AsyncIterator[tuple[HubStore, int]]:
    # The hub gets only list.key, trust.json and root.pub; the demo's keys are new each run.
    export_hub(dir / "keys", dir / "hub-keys", force=True)
    path = dir / "hub.toml"
    path.write_text(HUB_TOML.format(dir=dir, listen="127.0.0.1:0"))
    conf = hub_config.load(path)
    async with opened_store(conf, create=True) as store:
        runner = web.AppRunner(make_app(conf, store), access_log=None)
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = int(runner.addresses[0][1])
            # The port this hub got is free once the demo ends: `gate-agent hub` serves it there.
            path.write_text(HUB_TOML.format(dir=dir, listen=f"127.0.0.1:{port}"))
            await _console_url(dir, store, port)
            yield store, port
        finally:
            await runner.cleanup()


async def _console_url(dir: Path, store: HubStore, port: int) -> None:
    """Store a console token and write the console's URL, token in its fragment, to console.url.

    The file is 0600 and the token is never printed: it opens the venue's alerts and gate health.
    """
    token = new_token()
    await store.add_token(hash_token(token), "console", None, "demo")
    url_file = dir / "console.url"
    url_file.unlink(missing_ok=True)
    url_file.touch(mode=0o600)
    url_file.write_text(f"http://127.0.0.1:{port}/console#token={token}\n")


async def _gate_config(dir: Path, store: HubStore, gate_id: str, name: str, port: int) -> Path:
    token = new_token()
    await store.set_gate_name(gate_id, name)  # the venue's name for it, not the gate's own word
    await store.add_token(hash_token(token), "gate", gate_id, name)
    token_file = dir / f"{gate_id}.token"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    path = dir / f"{gate_id}.toml"
    path.write_text(GATE_TOML.format(id=gate_id, name=name, port=port))
    return path


@contextlib.asynccontextmanager
async def _gates(
    dir: Path, store: HubStore, hub_port: int
) -> AsyncIterator[list[tuple[Gate, Relay]]]:
    async with contextlib.AsyncExitStack() as stack:
        gates = []
        for gate_id, name in (("gate-a", "Gate A"), ("gate-b", "Gate B")):
            relay = Relay("127.0.0.1", hub_port)
            port = await relay.start()
            stack.push_async_callback(relay.close)
            conf = cfg.load(await _gate_config(dir, store, gate_id, name, port))
            gate = await stack.enter_async_context(
                open_gate(conf, scanner=SimScanner(source=gate_id), gate_io=SimGate(passage_ms=100))
            )
            gates.append((gate, relay))
        yield gates


async def _present(gate: Gate, text: str) -> Outcome:
    outcome = await gate.lane.present(Scan(text, gate.config.gate.id, time.monotonic_ns()))
    assert outcome is not None  # a new text is never a repeat
    return outcome


def _online(gates: list[Gate]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return all(g.hub is not None and g.hub.online for g in gates)

    return check


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S")


def _alert_line(alert: Alert) -> str:
    seen = ", ".join(f"{g} {_clock(t)}" for g, t in zip(alert.gates, alert.times, strict=False))
    return f"ALERT {alert.kind.replace('_', ' ')}: ticket {alert.ticket} at {seen}"


async def play(dir: Path, tickets: list[str], line: Callable[[Outcome], str], say: Say) -> int:
    """Run the scenario with two fresh tickets; returns 0, or 1 when a step did not happen."""
    first, second = tickets
    # The partition makes the hub clients log every failed request; the demo tells it instead
    # (and gives the level back: a process may go on, as the tests do, and miss warnings).
    sync_log = logging.getLogger("sync")
    level = sync_log.level
    sync_log.setLevel(logging.ERROR)
    try:
        return await _scenario(dir, first, second, line, say)
    finally:
        sync_log.setLevel(level)


async def _scenario(
    dir: Path, first: str, second: str, line: Callable[[Outcome], str], say: Say
) -> int:
    async with _hub(dir) as (store, port), _gates(dir, store, port) as links:
        (a, relay_a), (b, relay_b) = links
        # A kept folder may hold alerts from an earlier run: only this run's count.
        since = max((x.alert_id for x in await store.recent_alerts(None, 1)), default=0)
        say(f"hub for venue 'demo' on 127.0.0.1:{port} (SQLite), Gate A and Gate B connected")
        if await _until(_online([a, b]), 10) is None:
            say("  the gates did not come online")
            return 1
        say("\n 1. Online: a ticket admitted at Gate A ...")
        admitted = await _present(a, first)
        say(line(admitted))
        ref = admitted.ticket.ticket_ref if admitted.ticket else ""

        async def learnt() -> bool:
            return bool(await b.journal.history(ref))

        if await _until(learnt, 10) is None:
            say("    Gate B did not learn it")
            return 1
        assert admitted.record is not None
        within = (time.time() - admitted.record.wall_time) * 1000
        say(f"    Gate B learnt it from the hub within {within:.0f} ms of Gate A's decision")
        say("    ... is refused at Gate B:")
        say(line(await _present(b, first)))

        say("\n 2. Partition: both gates lose the hub and decide offline")
        relay_a.cut()
        relay_b.cut()

        async def offline() -> bool:
            return not any(g.hub is not None and g.hub.online for g in (a, b))

        await _until(offline, 10)
        say("    the same new ticket is shown at both gates:")
        say(line(await _present(a, second)))
        say(line(await _present(b, second)))

        say("\n 3. The partition heals: both gates upload, the hub compares")
        relay_a.heal()
        relay_b.heal()

        async def alerted() -> bool:
            return any(x.kind == "double_admission" for x in await store.alerts(since, 100))

        took = await _until(alerted, 20)
        for alert in await store.alerts(since, 100):
            say(f"    {_alert_line(alert)}")
        if took is None:
            say("    no alert arrived")
            return 1
        say(
            f"    (raised {took:.1f} s after the partition healed; security sees it in the"
            " hub's console: with --dir, `gate-agent hub --config DIR/hub.toml` and the URL in"
            " DIR/console.url)"
        )
    return 0
