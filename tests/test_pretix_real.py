"""A gate (the daemon stack, in-process) with a real pretix server as its upstream.

The server (tests/pretix_real.py) has two organizers, so a device's database key (``device`` in
check-ins) differs from its per-organizer number (``device_id``, what device/initialize gives).
Every other scanner is created just before the gate it plays against, so its database key equals
the gate's number: mixing the two up shows both ways (the gate's own check-ins taken for
another's, another's taken for the gate's own).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientSession, web

from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.model import Reason
from agent.ports import Scan
from drivers.sim import SimGate, SimScanner
from sync import pretix_wire as wire
from tests.conftest import WriteConfig
from tests.polling import until
from tests.pretix_real import Device, PretixReal

pytestmark = pytest.mark.pretix
_mono = itertools.count(1)


def scan(secret: str) -> Scan:
    """A scan far enough after the previous one that it is never taken for a repeat."""
    return Scan(secret, "test", next(_mono) * 10**11)


@asynccontextmanager
async def real_gate(
    write_config: WriteConfig, pretix: PretixReal, device: Device, *, url: str | None = None,
    interval_s: float = 3600, gate_io: SimGate | None = None, event: str | None = None,
    list_id: int | None = None,
) -> AsyncIterator[Gate]:  # fmt: skip
    """A gate whose [pretix] section names the real server, ``device`` and by default the
    season event's list "all"."""
    extra = (
        f'\n[pretix]\nurl = "{url or pretix.url}"\norganizer = "{pretix.organizer}"\n'
        f'event = "{event or pretix.event}"\ncheckin_list = {list_id or pretix.lists["all"]}\n'
        f'init_token = "{device.init_token}"\ninterval_s = {interval_s}\n'
    )
    conf = config.load(write_config(extra=extra, passage_timeout_s=0.3))
    gate_io = gate_io or SimGate(passage_ms=1)
    async with open_gate(conf, scanner=SimScanner(), gate_io=gate_io) as gate:
        assert gate.upstream is not None and gate.upstream.initialized, gate.upstream
        device_file = conf.gate.state_dir / "pretix_device.json"
        pretix.register([json.loads(device_file.read_text())["api_token"]], "gate's pretix token")
        up = gate.upstream

        async def first_round_over() -> bool:  # the background round at start, then sync_once
            return up.status["last_sync"] is not None or up.status["last_error"] is not None

        await eventually(first_round_over, 30)
        yield gate


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float) -> float:
    """Poll ``check`` until it holds; returns the seconds it took, fails after ``within_s``."""
    began = time.monotonic()
    await until(check, within_s)
    return time.monotonic() - began


async def peers(gate: Gate, secret: str) -> list[tuple[str, str]]:
    """(kind, gate id) of what the gate learnt from other devices about ``secret``."""
    return [(h.kind, h.gate_id) for h in await gate.journal.history("pretix:" + secret) if h.peer]


async def test_real_round_installs_keys_and_uploads_as_the_gates_device(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    device = await pretix_real.new_device("turnstile round")
    secret = pretix_real.ticket()
    async with real_gate(write_config, pretix_real, device) as gate:
        assert gate.upstream is not None and gate.upstream.device_id == device.device_id
        assert await gate.upstream.sync_once(), gate.upstream.status
        admitted = await gate.lane.present(scan(secret))
        assert admitted is not None and admitted.decision.admitted, admitted
        assert await gate.upstream.sync_once(), gate.upstream.status
        assert gate.upstream.status["outbox"] == 0
        (ci,) = await pretix_real.checkins(secret)
        assert ci["successful"] and ci["device_id"] == device.device_id
        assert ci["device"] != ci["device_id"]  # the two numbers differ on this server
        assert await gate.upstream.sync_once()  # downloads its own check-in with the positions
        assert await peers(gate, secret) == []  # ... and does not take it for another's
        assert gate.upstream.alerts == []


async def test_a_one_product_list_admits_that_product_only(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    device = await pretix_real.new_device("turnstile VIP")
    vip_list = pretix_real.lists["vip"]
    async with real_gate(write_config, pretix_real, device, list_id=vip_list) as gate:
        vip = await gate.lane.present(scan(pretix_real.ticket("vip")))
        standard = await gate.lane.present(scan(pretix_real.ticket("standard")))
    assert vip is not None and vip.decision.admitted, vip
    assert standard is not None and standard.decision.reason is Reason.WRONG_PRODUCT, standard


async def test_a_series_date_list_admits_that_date_only(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    series = pretix_real.series
    device = await pretix_real.new_device("turnstile Berlin")
    async with real_gate(
        write_config, pretix_real, device, event=series["event"], list_id=series["list"]
    ) as gate:
        berlin = await gate.lane.present(scan(series["secrets"]["berlin"][0]))
        hamburg = await gate.lane.present(scan(series["secrets"]["hamburg"][0]))
    assert berlin is not None and berlin.decision.admitted, berlin
    assert hamburg is not None and hamburg.decision.reason is Reason.WRONG_PRODUCT, hamburg


async def test_redeemed_at_another_device_refused_within_two_sync_intervals(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    other = await pretix_real.new_device("scanner at the side door")
    device = await pretix_real.new_device("turnstile 2")
    other_token = await pretix_real.initialize(other)
    secret = pretix_real.ticket()
    interval = 2.0
    async with real_gate(write_config, pretix_real, device, interval_s=interval) as gate:
        up = gate.upstream
        assert up is not None
        assert up.status["last_sync"] is not None, up.status
        status, answer = await pretix_real.redeem(other_token, secret, str(uuid.uuid4()))
        assert status == 201 and answer["status"] == "ok", answer
        (ci,) = await pretix_real.checkins(secret)
        assert ci["device"] == device.device_id  # the other's database key is the gate's number

        async def learnt() -> bool:
            return await peers(gate, secret) == [("entry", f"pretix-device-{other.device_id}")]

        await eventually(learnt, 2 * interval)
        refused = await gate.lane.present(scan(secret))
        assert refused is not None and refused.decision.reason is Reason.ALREADY_USED, refused


async def test_own_annulled_admission_does_not_block_its_ticket_nor_alert(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    device = await pretix_real.new_device("turnstile 3")
    secret = pretix_real.ticket()
    nobody_then_pass = SimGate(passage_ms=None, plan=[False, True])
    async with real_gate(write_config, pretix_real, device, gate_io=nobody_then_pass) as gate:
        up = gate.upstream
        assert up is not None
        assert await up.sync_once(), up.status
        first = await gate.lane.present(scan(secret))
        assert first is not None and first.decision.admitted and first.passed is False, first
        assert await up.sync_once(), up.status  # uploads the entry and its annulment
        (ci,) = await pretix_real.checkins(secret)
        assert not ci["successful"] and ci["error_reason"] == "annulled", ci
        assert ci["device_id"] == device.device_id
        assert await up.sync_once(), up.status
        assert await peers(gate, secret) == []
        again = await gate.lane.present(scan(secret))
        assert again is not None and again.decision.admitted and again.passed, again
        assert await up.sync_once(), up.status
        assert up.status["outbox"] == 0
        assert up.alerts == []
        assert [c["successful"] for c in await pretix_real.checkins(secret)] == [False, True]


async def test_annulled_at_another_device_makes_the_ticket_usable_again(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    other = await pretix_real.new_device("scanner that annuls")
    device = await pretix_real.new_device("turnstile 4")
    other_token = await pretix_real.initialize(other)
    secret = pretix_real.ticket()
    nonce = str(uuid.uuid4())
    async with real_gate(write_config, pretix_real, device) as gate:
        up = gate.upstream
        assert up is not None
        status, answer = await pretix_real.redeem(other_token, secret, nonce)
        assert status == 201 and answer["status"] == "ok", answer
        assert await up.sync_once(), up.status
        refused = await gate.lane.present(scan(secret))
        assert refused is not None and refused.decision.reason is Reason.ALREADY_USED, refused
        status, answer = await pretix_real.annul(other_token, nonce)
        assert status == 200, answer
        assert await up.sync_once(), up.status
        other_gate = f"pretix-device-{other.device_id}"
        assert await peers(gate, secret) == [("entry", other_gate), ("annul", other_gate)]
        admitted = await gate.lane.present(scan(secret))
        assert admitted is not None and admitted.decision.admitted, admitted


async def test_annulled_elsewhere_while_the_gate_was_down_is_learnt_after_restart(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    other = await pretix_real.new_device("scanner, gate down")
    device = await pretix_real.new_device("turnstile 5")
    other_token = await pretix_real.initialize(other)
    secret = pretix_real.ticket()
    nonce = str(uuid.uuid4())
    assert (await pretix_real.redeem(other_token, secret, nonce))[0] == 201
    async with real_gate(write_config, pretix_real, device) as gate:
        assert gate.upstream is not None and await gate.upstream.sync_once()
        assert len(await peers(gate, secret)) == 1
    assert (await pretix_real.annul(other_token, nonce))[0] == 200
    async with real_gate(write_config, pretix_real, device) as gate:  # same state dir
        assert gate.upstream is not None and await gate.upstream.sync_once()
        assert [kind for kind, _ in await peers(gate, secret)] == ["entry", "annul"]
        admitted = await gate.lane.present(scan(secret))
        assert admitted is not None and admitted.decision.admitted, admitted


@asynccontextmanager
async def answer_lost_once(upstream: str) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback reverse proxy to ``upstream`` that forwards everything, but answers the first
    redeem with 502 after pretix has processed it (a lost answer); yields its URL and a log of
    the redeem answers it gave."""
    given: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            ClientSession() as session,
            session.request(
                request.method, upstream + request.path_qs, data=body, headers=headers
            ) as resp,
        ):
            payload, status = await resp.read(), resp.status
            content_type = resp.headers.get("Content-Type", "application/json")
        if request.path.endswith("/redeem/"):
            lost = not given
            given.append("502" if lost else str(status))
            if lost:
                return web.Response(status=502, text="bad gateway")
        return web.Response(body=payload, status=status, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", given
    finally:
        await runner.cleanup()


async def test_retry_after_a_lost_answer_is_no_duplicate_alert(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    device = await pretix_real.new_device("turnstile 6")
    secret = pretix_real.ticket()
    async with (
        answer_lost_once(pretix_real.url) as (url, given),
        real_gate(write_config, pretix_real, device, url=url) as gate,
    ):
        up = gate.upstream
        assert up is not None
        assert await up.sync_once(), up.status
        admitted = await gate.lane.present(scan(secret))
        assert admitted is not None and admitted.decision.admitted, admitted
        assert not await up.sync_once()  # pretix stored it; the answer was lost
        assert await up.sync_once(), up.status  # the retry, same nonce
        assert given == ["502", "201"] and up.status["outbox"] == 0
        assert up.alerts == []
    checkins: list[dict[str, Any]] = await pretix_real.checkins(secret)
    assert [c["device_id"] for c in checkins] == [device.device_id]  # stored once


async def test_real_pretix_answers_what_the_adapter_relies_on(pretix_real: PretixReal) -> None:
    """Facts of pretix 2026.8 the adapter is built on (issue 11), so an upgrade that changes
    them shows here first: check-ins carry both numbers, annulled ones leave the position's
    list, and a device may annul only its own check-ins."""
    one = await pretix_real.new_device("fact scanner 1")
    two = await pretix_real.new_device("fact scanner 2")
    t1, t2 = await pretix_real.initialize(one), await pretix_real.initialize(two)
    secret = pretix_real.ticket()
    nonce = str(uuid.uuid4())
    assert (await pretix_real.redeem(t1, secret, nonce))[0] == 201
    assert (await pretix_real.annul(t2, nonce))[0] == 404  # not its check-in
    status, answer = await pretix_real.redeem(t2, secret, str(uuid.uuid4()), force=True)
    assert status == 201
    (shown,) = answer["position"]["checkins"]  # the check-ins before this one
    assert shown["device_id"] == one.device_id and shown["device"] != one.device_id
    status, orders = await pretix_real.api(  # the newest change first: the redeems just made
        "GET", f"{pretix_real.event_path}/orders/?ordering=-last_modified", token=t2
    )
    assert status == 200
    (cursor,) = {o["last_modified"] for o in orders["results"] if _holds(o, secret)}
    assert (await pretix_real.annul(t1, nonce))[0] == 200
    path = f"{pretix_real.event_path}/checkinlists/{pretix_real.lists['all']}/positions/"
    status, page = await pretix_real.api("GET", f"{path}?secret={quote(secret)}", token=t2)
    assert status == 200
    listed = [ci["device_id"] for row in page["results"] for ci in row["checkins"]]
    assert listed == [two.device_id]
    # orders honour modified_since, and an annulment touches its order (the gate's cursor)
    later = quote(wire.iso(wire.parse_iso(cursor) + 0.001))
    status, orders = await pretix_real.api(
        "GET", f"{pretix_real.event_path}/orders/?modified_since={later}&include=positions.secret"
        "&include=positions.checkins", token=t2,
    )  # fmt: skip
    assert status == 200 and orders["count"] == 1, orders["count"]
    (position,) = orders["results"][0]["positions"]
    assert position["secret"] == secret
    assert [ci["device_id"] for ci in position["checkins"]] == [two.device_id]
    # ... where a check-in list's positions ignore it (any value, even garbage: all of them)
    status, page = await pretix_real.api("GET", f"{path}?modified_since=garbage", token=t2)
    assert status == 200 and page["count"] > 1


def _holds(order: dict[str, Any], secret: str) -> bool:
    return any(p["secret"] == secret for p in order["positions"])
