"""No pretix secret or token in an exception, a log line or ``/status`` after a failed upload.

pretix's redeem URL carries the ticket secret. Each fault below makes the upload of one admission
fail (the downloads before it still work), through a real gate with its status server, or the
request layer alone for faults that strike before any answer (refused, connect timeout). The
secrets are pretix vector secrets, which the session-wide log scan (tests/logscan.py) knows too.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import traceback
from collections.abc import Iterator
from urllib.parse import quote

import aiohttp
import pytest

from agent.app import config
from agent.app.daemon import open_gate
from agent.app.status import StatusServer
from agent.errors import UpstreamError
from agent.ports import Scan
from drivers.sim import SimGate, SimScanner
from sync import pretix_wire as wire
from sync.pretix_http import PretixHTTP, ticket_label
from tests import logscan
from tests.conftest import WriteConfig
from tests.ports import free_port
from tests.pretix_server import (
    API_TOKEN,
    EVENT,
    INIT_TOKEN,
    ORG,
    VECTORS,
    PretixServer,
    load,
    recorded,
)

CASES = {c["name"]: c for c in load("tickets.json")}
SECRET = CASES["valid_standard_1"]["secret"]  # has "+", "/" and "=": percent-encoded in a URL
KNOWN = {**logscan.vector_secrets(VECTORS), API_TOKEN: "device token", INIT_TOKEN: "init token"}


def leaks(*texts: str) -> list[str]:
    """What the session log scan would report in ``texts``, plus the secret in any encoding."""
    found = logscan.find_leaks([("test", t) for t in texts], KNOWN)
    encoded = [t for t in texts if quote(SECRET, safe="") in t or quote(SECRET) in t]
    return found + [f"percent-encoded secret in {t[:40]!r}" for t in encoded]


def test_the_log_scan_knows_the_secret() -> None:
    assert SECRET in KNOWN and logscan.find_leaks([("t", f"x {SECRET} y")], KNOWN)


def test_the_init_token_is_not_in_the_configs_repr(write_config: WriteConfig) -> None:
    conf = _gate_config(write_config, "https://pretix.example.org")
    assert conf.pretix is not None and conf.pretix.init_token == INIT_TOKEN
    assert INIT_TOKEN not in repr(conf)


def _gate_config(write_config: WriteConfig, url: str) -> config.Config:
    pretix = {"url": url, "organizer": ORG, "event": EVENT, "checkin_list": 11,
              "init_token": INIT_TOKEN, "interval_s": 3600, "timeout_s": 1}  # fmt: skip
    return config.load(write_config(pretix=pretix))


def _records(caplog: pytest.LogCaptureFixture) -> Iterator[str]:
    formatter = logging.Formatter(logscan.FORMAT)
    for record in caplog.records:
        if not logscan.excluded(record):  # aiosqlite's SQL trace, left out as in the session scan
            yield formatter.format(record)


@pytest.mark.parametrize("fault", ["5xx", "slow", "malformed", "garbage", "401"])
async def test_failed_upload_leaks_no_secret(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with PretixServer() as server:
        server.state.fault, server.state.fault_on = fault, "/redeem/"  # downloads still work
        server.state.slow_s = 3.0  # past the 1 s timeout
        conf = _gate_config(write_config, server.url)
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            status = StatusServer(gate, port=0)
            await status.start()
            try:
                assert gate.upstream is not None and await gate.upstream.sync_once()
                admitted = await gate.lane.present(Scan(SECRET, "s", time.monotonic_ns()))
                assert admitted is not None and admitted.decision.admitted, admitted
                assert not await gate.upstream.sync_once()
                error = gate.upstream.status["last_error"]
                assert status.port is not None
                body = await _status_json(status.port)
            finally:
                await status.close()
    assert server.state.redeem_calls(), "the upload was tried"
    assert ticket_label(SECRET) in error, error  # the endpoint is named, by the ticket's id
    assert json.loads(body)["upstream"]["last_error"] == error
    assert leaks(error, body, *_records(caplog)) == []


@pytest.mark.parametrize("answer", ["already_redeemed", "404 without reason"])
async def test_refused_upload_leaks_no_secret(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with PretixServer() as server:
        conf = _gate_config(write_config, server.url)
        step = recorded("same_nonce_repeated")["response"]  # echoes the position's secret
        reply = (step["status"], step["body"]) if answer == "already_redeemed" else (404, {})
        server.state.redeem_answers[SECRET] = [reply]
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            assert gate.upstream is not None and await gate.upstream.sync_once()
            admitted = await gate.lane.present(Scan(SECRET, "s", time.monotonic_ns()))
            assert admitted is not None and admitted.decision.admitted
            await gate.upstream.sync_once()
            shown = repr(gate.upstream.status) + repr(gate.upstream.alerts)
    assert server.state.redeem_calls()
    assert leaks(shown, *_records(caplog)) == []


async def test_a_hostile_refusal_cannot_forge_or_flood_log_lines(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """pretix's answer goes into the gate's log: a reason that is not one of pretix's words is
    not echoed, and the answer's keys are named cut short, printable and at most 8. Such an
    answer is not pretix's: the check-in stays queued (a trial's foreign 400 dropped it)."""
    caplog.set_level(logging.DEBUG)
    forged = "\n2026-12-03 12:00:00 ERROR agent.lane: FORGED ALERT " + "A" * 5000
    keys = {f"k{i}\nFORGED KEY {'B' * 300}": i for i in range(20)}
    async with PretixServer() as server:
        conf = _gate_config(write_config, server.url)
        server.state.redeem_answers[SECRET] = [(400, {"reason": forged, **keys})]
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            assert gate.upstream is not None and await gate.upstream.sync_once()
            admitted = await gate.lane.present(Scan(SECRET, "s", time.monotonic_ns()))
            assert admitted is not None and admitted.decision.admitted
            assert not await gate.upstream.sync_once()
            assert len(await gate.journal.unsynced()) == 1  # kept, to be sent again
    assert server.state.redeem_calls()
    done = [r.getMessage() for r in caplog.records if "not pretix's answer" in r.getMessage()]
    assert done, [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if "for good" in r.getMessage()]
    assert "FORGED ALERT" not in done[0] and "\n" not in done[0], done[0]
    assert len(done[0]) < 600 and "+13 more" in done[0] and "k0?FORGED KEY" in done[0], done[0]


async def _status_json(port: int) -> str:
    url = f"http://127.0.0.1:{port}/status"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


async def _failed_request(url: str, timeout_s: float = 5.0) -> UpstreamError:
    http = PretixHTTP(url, timeout_s=timeout_s, user_agent="test")
    http.token = API_TOKEN
    try:
        with pytest.raises(UpstreamError) as caught:
            await http.request(
                "POST", wire.redeem_path(ORG, EVENT, 11, SECRET), json_body={}, secret=SECRET
            )
    finally:
        await http.close()
    return caught.value


def _texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


async def test_connection_refused_names_the_ticket_not_the_secret() -> None:
    port = free_port()  # closed again: nothing listens there
    exc = await _failed_request(f"http://127.0.0.1:{port}")
    assert "Connect" in str(exc) and ticket_label(SECRET) in str(exc)
    assert leaks(*_texts(exc)) == []


async def test_connect_timeout_names_the_ticket_not_the_secret() -> None:
    # A listener that never accepts, its one-slot queue full: the next SYN is dropped, so the
    # connection attempt times out (aiohttp's text for that holds the whole URL).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            exc = await _failed_request(f"http://127.0.0.1:{port}", timeout_s=0.5)
        finally:
            for filler in fillers:
                filler.close()
    assert "Timeout" in str(exc) and ticket_label(SECRET) in str(exc), str(exc)
    assert leaks(*_texts(exc)) == []


@pytest.mark.parametrize("fault", ["5xx", "malformed", "garbage", "401", "slow"])
async def test_request_layer_exception_names_the_ticket_not_the_secret(fault: str) -> None:
    async with PretixServer() as server:
        server.state.fault, server.state.slow_s = fault, 3.0
        server.state.tokens.add(API_TOKEN)
        exc = await _failed_request(server.url, timeout_s=1.0)
    assert ticket_label(SECRET) in str(exc), str(exc)
    assert leaks(*_texts(exc)) == []
