"""The gate's status server: health with reasons, Prometheus metrics, status JSON, staff display.

A real gate (open_gate with sim devices, real journal and lists) and a real server on 127.0.0.1;
the display is checked in headless Chromium, and its screenshot is kept as a test artifact.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path

import aiohttp
import pytest

from agent import revocation_issuer
from agent.app import config as cfg
from agent.app.daemon import Gate, open_gate
from agent.app.status import StatusLimits, StatusServer
from agent.app.status_bounds import Pacer
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.model import Decision, Reason, Verdict
from agent.ports import Scan
from agent.version import installed
from drivers.sim import SimGate, SimScanner
from sync.log_throttle import RequestErrors, request_log
from tests.browser import Browser
from tests.conftest import WriteConfig
from tests.hubproc import free_port

ARTIFACTS = Path(os.environ.get("GATE_AGENT_ARTIFACTS", "test-artifacts"))


async def _started(gate: Gate, **kwargs: object) -> StatusServer:
    server = StatusServer(gate, port=0, **kwargs)  # type: ignore[arg-type]
    await server.start()
    return server


def _listed_config(write_config: WriteConfig, iss: Issuer) -> cfg.Config:
    """A gate config with a fresh signed revocation list (no list at all is "stale")."""
    path = write_config()
    delta = revocation_issuer.issue_delta(iss.list_key, path.parent / "rev.state.json")
    (path.parent / "revocations-1.json").write_bytes(delta)
    return cfg.load(write_config(revocations=["revocations-1.json"]))


@asynccontextmanager
async def _serving(
    conf: cfg.Config, **limits: object
) -> AsyncIterator[tuple[Gate, StatusServer, str]]:
    """A gate (sim scanner and turnstile) with its status server, told of every outcome."""
    hooks: list[StatusServer] = []

    def on_outcome(outcome: Outcome) -> None:
        for server in hooks:
            server.observe(outcome)

    async with open_gate(
        conf, on_outcome, scanner=SimScanner(source="s"), gate_io=SimGate(passage_ms=10)
    ) as gate:
        server = await _started(gate, **limits)
        hooks.append(server)
        try:
            yield gate, server, f"http://127.0.0.1:{server.port}"
        finally:
            await server.close()


@pytest.fixture
async def served(
    write_config: WriteConfig, iss: Issuer
) -> AsyncIterator[tuple[Gate, StatusServer, str]]:
    async with _serving(_listed_config(write_config, iss)) as served:
        yield served


async def _present(gate: Gate, text: str, source: str = "s") -> Outcome:
    outcome = await gate.lane.present(Scan(text, source, time.monotonic_ns()))
    assert outcome is not None
    return outcome


async def test_healthz_ready_then_degraded_with_reasons(
    served: tuple[Gate, StatusServer, str],
) -> None:
    gate, _, url = served
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/healthz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ready", "reasons": []})
        gate.lane.fault = "relay fault: lcus:// port gone"
        async with http.get(url + "/healthz") as r:
            body = await r.json()
        assert r.status == 503
        assert body == {"status": "degraded", "reasons": ["relay fault (in)"]}


async def test_a_clock_behind_its_floor_is_untrusted_and_says_why(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found in a user trial: a floor a year ahead (a clock that ran ahead set it) held the
    gate's time there, trusted, with health "ready" (the config assumes a synchronised clock)."""
    conf = _listed_config(write_config, iss)
    assert conf.clock.assume == "synced"
    ahead = time.time() + 365 * 86400
    conf.gate.state_dir.mkdir(parents=True, exist_ok=True)
    (conf.gate.state_dir / "clock.floor").write_text(f"{ahead:.6f}\n")
    async with _serving(conf) as (_, server, url):
        ready, reasons = await server.health()
        assert not ready and reasons[0] == "clock untrusted", reasons
        assert len(reasons) == 2 and reasons[1].startswith("clock 31,5"), reasons
        assert reasons[1].endswith(" s behind its floor")
        async with aiohttp.ClientSession() as http, http.get(url + "/status") as r:
            clock = (await r.json())["clock"]
        assert clock["synced"] is False and clock["now"] == pytest.approx(ahead)
        assert clock["behind_floor_s"] == pytest.approx(365 * 86400, abs=60)


async def test_requests_it_cannot_read_are_one_scrubbed_line_a_minute(
    served: tuple[Gate, StatusServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Found after the hub's fix: the status server (which a venue may open to its LAN for the
    staff displays) logged an ERROR with a traceback quoting the line for every request with a
    header past 8 kB, so anyone on that network could fill the unit's SD card with its log."""
    _, server, _ = served
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        long = "X-Junk: secret-looking " + "x" * 9000
        writer.write(f"GET /status HTTP/1.1\r\nHost: gate\r\n{long}\r\n\r\n".encode())
        await writer.drain()
        assert (await reader.readline()).split()[1] == b"400"
        writer.close()
    lines = [r for r in caplog.records if r.name.startswith(("aiohttp", "agent.app.status"))]
    assert [r.getMessage() for r in lines] == [
        "request from 127.0.0.1 not handled: LineTooLong 400"
    ]
    assert lines[0].levelname == "WARNING" and lines[0].exc_info is None


def test_a_request_whose_client_has_gone_is_logged_without_none() -> None:
    """Found in a user trial: a display that reset its connection mid-request left the line
    "request from None not handled" (aiohttp names a gone client's address None)."""
    (scrub,) = request_log("tests.status.gone").filters
    assert isinstance(scrub, RequestErrors)
    exc = aiohttp.http_exceptions.BadHttpMessage("bad")
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s", (None,),
        (type(exc), exc, None),
    )  # fmt: skip
    assert scrub.filter(record)
    assert (
        record.getMessage() == "request from a client already gone not handled: BadHttpMessage 400"
    )


@pytest.mark.parametrize("upstream", ["hub", "none"])
async def test_health_reports_disk_space_and_backlog(
    write_config: WriteConfig, upstream: str
) -> None:
    # A backlog is rows waiting for upload: a gate with no hub or pretix uploads nothing, so
    # its journal's rows are never a backlog (it stayed degraded after 1,000 decisions).
    hub = {"url": f"http://127.0.0.1:{free_port()}", "token": "status-test-token"}
    conf = cfg.load(write_config(hub=hub if upstream == "hub" else None))
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate()) as gate:
        free = shutil.disk_usage(conf.gate.state_dir).free
        limits = StatusLimits(outbox_backlog=0, disk_free_min_bytes=free * 2)
        server = StatusServer(gate, port=0, limits=limits)
        denied = Decision(Verdict.DENY, Reason.INVALID_FORMAT)
        await gate.journal.record(
            ticket_ref="raw:x", kind="attempt", decision=denied, lane="in", rev_version=0
        )
        ready, reasons = await server.health()
        assert not ready
        assert ("outbox backlog (1 entries)" in reasons) == (upstream == "hub")
        assert any(r.startswith("disk space low") for r in reasons)


async def test_metrics_count_decisions_by_verdict_and_reason(
    served: tuple[Gate, StatusServer, str], iss: Issuer
) -> None:
    gate, _, url = served
    ticket = iss.ticket(event=1, zones=[1])
    await _present(gate, ticket)
    await _present(gate, ticket, "s2")  # already used (another reader: not a repeat)
    await _present(gate, "NOT-A-TICKET", "s3")  # a third reader: its own presentation
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        text = await r.text()
    assert r.headers["Content-Type"].startswith("text/plain")
    assert 'gate_scans_total{lane="in",reason="ok",verdict="admit"} 1.0' in text
    assert 'gate_scans_total{lane="in",reason="already_used",verdict="deny"} 1.0' in text
    assert 'gate_scans_total{lane="in",reason="invalid_format",verdict="deny"} 1.0' in text
    assert 'gate_decision_latency_seconds_count{lane="in"} 3.0' in text
    assert "gate_outbox_depth 3.0" in text
    assert 'gate_device_up{device="in/scanner"} 1.0' in text
    assert f'gate_build_info{{version="{installed()}"}} 1.0' in text
    assert ticket not in text


async def test_status_json_has_what_a_technician_needs(
    served: tuple[Gate, StatusServer, str], iss: Issuer
) -> None:
    gate, _, url = served
    ticket = iss.ticket(event=1, zones=[1])
    outcome = await _present(gate, ticket)
    async with aiohttp.ClientSession() as http, http.get(url + "/status") as r:
        body = await r.json()
    # the version running, to confirm an upgrade took (an integrator's review)
    assert body["gate"] == {
        "id": "gate-3",
        "name": "Gate 3",
        "version": metadata.version("gate-agent"),
        # the unit's boot id, as its rows carry it: which unit is the real one when the hub
        # says two units heartbeat as this gate (a copy of its token)
        "boot_id": outcome.record.boot_id,  # type: ignore[union-attr]
    }
    assert body["health"]["status"] == "ready"
    assert body["journal"]["rows"] == 1
    assert body["last_hour"] == {"admitted": 1, "denied": 0}
    assert body["last"][0]["ticket"] == outcome.ticket.short_id  # type: ignore[union-attr]
    assert ticket not in str(body)


async def test_last_hour_goes_on_from_the_journal_after_a_restart(
    write_config: WriteConfig, iss: Issuer
) -> None:
    # Before the restart: two admissions (one of them not used, so annulled), one denial, all
    # within the hour; and one more decision from two hours ago.
    conf = _listed_config(write_config, iss)
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=0)) as gate:
        j = gate.journal
        admit, deny = Decision(Verdict.ADMIT, Reason.OK), Decision(Verdict.DENY, Reason.REVOKED)
        await j.record(ticket_ref="tk1:a", kind="entry", decision=admit, lane="in", rev_version=1)
        unused = await j.record(
            ticket_ref="tk1:b", kind="entry", decision=admit, lane="in", rev_version=1
        )
        await j.record(
            ticket_ref="tk1:b", kind="annul", decision=admit, lane="in", rev_version=1,
            annuls=unused.entry_id,
        )  # fmt: skip
        await j.record(ticket_ref="tk1:c", kind="attempt", decision=deny, lane="in", rev_version=1)
    with sqlite3.connect(conf.gate.state_dir / "journal.db") as db:  # a denial 2 h back
        db.execute(
            "INSERT INTO entries SELECT gate_seq + 1, entry_id || 'x', gate_id, lane, 'tk1:d',"
            " kind, verdict, reason, detail, flags, annuls, zone, wall_time - 7200, clock_synced,"
            " mono_ns, boot_id, hlc + 1, rev_version, offline, synced_at, code_time, rev_key,"
            " order_hlc FROM entries ORDER BY gate_seq DESC LIMIT 1"
        )
    async with (  # the restart
        _serving(conf) as (_, _, url),
        aiohttp.ClientSession() as http,
        http.get(url + "/status") as r,
    ):
        body = await r.json()
    assert body["journal"]["rows"] == 5
    assert body["last_hour"] == {"admitted": 1, "denied": 1}


async def test_status_answers_200_concurrent_requests_while_scans_are_decided(
    served: tuple[Gate, StatusServer, str], iss: Issuer
) -> None:
    gate, _, url = served
    tickets = [iss.ticket(event=1, zones=[1]) for _ in range(20)]

    async def scans() -> list[Outcome]:
        return [await _present(gate, t) for t in tickets]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(path: str) -> int:
            async with http.get(url + path) as r:
                await r.read()
                return r.status

        paths = ["/healthz", "/metrics", "/status"] * 67
        results, outcomes = await asyncio.gather(
            asyncio.gather(*(one(p) for p in paths[:200])), scans()
        )
    assert sorted(set(results)) == [200]
    assert [o.decision.admitted for o in outcomes] == [True] * 20


async def test_staff_display_turns_green_and_red_with_the_reason(
    served: tuple[Gate, StatusServer, str], iss: Issuer, tmp_path: Path
) -> None:
    gate, _, url = served
    ticket = iss.ticket(event=1, zones=[1])
    async with Browser(tmp_path) as page:
        await page.goto(url + "/display")
        await page.wait_for("document.getElementById('link').className === 'up'")
        await _present(gate, ticket)
        await page.wait_for("document.getElementById('panel').dataset.state === 'admit'")
        assert await page.text("#message") == "Welcome"
        await _present(gate, ticket, "s2")
        await page.wait_for("document.getElementById('panel').dataset.reason === 'already_used'")
        assert await page.text("#verdict") == "STOP"
        assert (await page.text("#message")).startswith("Already used at Gate 3, ")
        assert await page.text("#denied") == "1"
        assert await page.text("#admitted") == "1"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, test only
        shot = await page.screenshot(ARTIFACTS / "staff-display.png")
        assert shot.stat().st_size > 1000
        assert page.console_errors == []


async def test_pacer_lets_a_burst_through_then_spaces_the_rest() -> None:
    # What keeps a crowd of status clients from taking the lane's loop: 40 callers at once
    # against 100/s with a burst of 20 -> 20 start at once, the next 20 one every 10 ms.
    pacer = Pacer(rate=100.0, burst=20)
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def start() -> float:
        assert await pacer.turn()
        return loop.time() - t0

    starts = sorted(await asyncio.gather(*(start() for _ in range(40))))
    assert starts[19] < 0.05  # the burst does not wait (0.01 would be the next slot)
    for i in range(20, 40):
        assert starts[i] >= (i - 19) * 0.01 - 0.001  # never earlier than its slot
    # A turn further off than max_wait_s is refused at once and takes no slot.
    slow = Pacer(rate=10.0, burst=1)
    assert await slow.turn() is True  # the burst
    assert await slow.turn(max_wait_s=0.05) is False  # the next slot is 0.1 s away
    assert await slow.turn(max_wait_s=0.15) is True  # still 0.1 s: the refusal took no slot


async def test_a_refused_display_comes_back_once_a_stream_is_free(
    write_config: WriteConfig, iss: Issuer, tmp_path: Path
) -> None:
    async with _serving(_listed_config(write_config, iss), max_streams=1) as (gate, _, base):
        url = base + "/display"
        up = "document.getElementById('link').className === 'up'"
        async with Browser(tmp_path / "second") as second:
            async with Browser(tmp_path / "first") as first:
                await first.goto(url)
                await first.wait_for(up)
                await second.goto(url)  # the one stream is taken: 503
                await second.wait_for("document.getElementById('link').className === 'down'")
            # the first display is gone: the second gets its stream by itself and shows the
            # next decision
            await second.wait_for(up, timeout=20)
            await _present(gate, iss.ticket(event=1, zones=[1]))
            await second.wait_for("document.getElementById('panel').dataset.state === 'admit'")
