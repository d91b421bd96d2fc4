"""The security console in headless Chromium, against a real hub process.

Two gates admit the same ticket (rows from their real journals, uploaded over HTTP, with
heartbeats): the page shows the double admission with both gate names and times, both gates
online, a gate never heard from as offline, and stays free of console errors.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import pytest

from agent.clock import Clock, uuid7
from agent.journal import Journal
from agent.model import Decision, Reason, Verdict
from agent.redact import short_id
from sync.protocol import EntryWire
from tests.browser import Browser
from tests.hubproc import Api, Gate, HubProcess, HubSetup, add_token, write_hub_config

DENIED = Decision(Verdict.DENY, Reason.ALREADY_USED, "already used")
NOBODY = Decision(Verdict.DENY, Reason.OK, "nobody passed")  # an annulment's


@dataclass
class Console:
    setup: HubSetup
    token: str
    api: Api
    gates: dict[str, Gate]


@pytest.fixture
async def console(tmp_path: Path, keys_dir: Path) -> AsyncIterator[Console]:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, extra="gate_offline_after_s = 30\n")
    token = add_token(setup, console="security")
    names = {"gate-a": "North A", "gate-b": "<b>South B</b>"}  # a name is text, never markup
    gates: dict[str, Gate] = {}
    for gate_id, name in names.items():
        journal = await Journal.open(
            tmp_path / f"{gate_id}.db",
            gate_id=gate_id,
            gate_name=name,
            clock=Clock(assume="synced"),
        )
        gates[gate_id] = Gate(gate_id, name, add_token(setup, gate_id=gate_id, name=name), journal)
    add_token(setup, gate_id="gate-c")  # has a token, never heard from
    try:
        with HubProcess(setup):
            async with aiohttp.ClientSession() as session:
                yield Console(setup, token, Api(session, setup.url), gates)
    finally:
        for gate in gates.values():
            await gate.journal.close()


async def test_console_shows_a_double_admission_and_gate_health(
    console: Console, tmp_path: Path
) -> None:
    a, b = console.gates["gate-a"], console.gates["gate-b"]
    page_headers = (await console.api.get("/console")).headers
    assert "default-src 'self'" in page_headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page_headers["Content-Security-Policy"]
    assert page_headers["X-Content-Type-Options"] == "nosniff"

    async with Browser(tmp_path / "browser", width=1280, height=800) as page:
        await page.goto(f"{console.setup.url}/console#token={console.token}")
        await page.wait_for("document.querySelector('#status').textContent.startsWith('live')")
        assert await page.evaluate("location.hash") == ""  # not kept in the address bar
        assert await page.text("#no-alerts") == "No alerts."

        for gate in (a, b):
            beat = await console.api.post(
                f"/v1/gates/{gate.gate_id}/heartbeat", gate.heartbeat(), gate.token
            )
            assert beat.status == 200
        first, second = await a.row("T-console"), await b.row("T-console")
        assert (await a.upload(console.api, first)).status == 200
        assert (await b.upload(console.api, second)).status == 200

        alert = "#alerts .alert[data-kind='double_admission']"
        await page.wait_for(f'document.querySelector("{alert}") !== null')
        text = await page.text(alert)
        assert "Double admission" in text and short_id("T-console") in text
        assert "T-console" not in await page.text("body")
        names = await page.evaluate(
            f'[...document.querySelectorAll("{alert} .gate-name")].map(n => n.textContent)'
        )
        # Earlier entry first, as the hub orders a ticket's history (sync.hub_plan's order): by
        # HLC, ties by gate then gate_seq; both rows can share a millisecond (a CI run failed
        # when this test broke ties by entry_id).
        by_order = sorted(
            (
                (first.hlc, first.gate_id, first.gate_seq, "North A"),
                (second.hlc, second.gate_id, second.gate_seq, "<b>South B</b>"),
            )
        )
        assert names == [name for *_, name in by_order]
        assert await page.evaluate(f'document.querySelectorAll("{alert} time").length') == 3
        # Gate B annuls its entry (nobody passed): the alert's entry shows it, in place.
        annul = await b.journal.record(
            ticket_ref="T-console", kind="annul", decision=NOBODY, lane="in", rev_version=0,
            annuls=second.entry_id, offline=False,
        )  # fmt: skip
        assert (await b.upload(console.api, EntryWire.from_record(annul))).status == 200
        badge = f"{alert} .alert-gate:has(.annulled-badge) .gate-name"
        marked = await page.wait_for(f'document.querySelector("{badge}")?.textContent', 25)
        assert marked == "<b>South B</b>", marked  # the gate's name as text, not markup

        await page.wait_for("document.querySelectorAll('#gates tbody tr').length === 3")
        # The table may first show a poll from before the heartbeats (seen under load): wait for
        # the one after them.
        states = (("gate-a", "online"), ("gate-b", "online"), ("gate-c", "offline"))
        await page.wait_for(
            " && ".join(
                f"document.querySelector(\"#gates tr[data-gate='{gate_id}'] td.online\")"
                f"?.textContent === '{state}'"
                for gate_id, state in states
            )
        )
        assert await page.text("#gates tr[data-gate='gate-a'] td.clock") == "yes"
        assert await page.text("#gates tr[data-gate='gate-c'] td.last-seen") == "never"
        assert await page.text("#gates tr[data-gate='gate-c'] td.clock") == "\u2014"
        assert await page.evaluate("document.querySelector('#gates b, #alerts b')") is None

        for _ in range(3):  # the threshold's third denial raises the next alert
            denied = await a.row("T-denied", kind="attempt", decision=DENIED)
            assert (await a.upload(console.api, denied)).status == 200
        await page.wait_for(
            "document.querySelector(\"#alerts .alert[data-kind='repeated_denials']\") !== null"
        )
        kinds = await page.evaluate(
            "[...document.querySelectorAll('#alerts .alert .kind')].map(n => n.textContent)"
        )
        assert kinds == ["Repeated denied attempts", "Double admission"]  # newest first

        shot = await page.screenshot(tmp_path / "console.png")
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
        assert page.console_errors == []


async def test_console_without_a_token_says_how_to_open_it(
    console: Console, tmp_path: Path
) -> None:
    async with Browser(tmp_path / "browser") as page:
        await page.goto(f"{console.setup.url}/console")
        await page.wait_for("!document.querySelector('#token-help').hidden")
        assert await page.text("#status") == "no console token"
        assert "venue venue-1" in await page.text("#venue")

        await page.goto("about:blank")  # a new document: a changed fragment alone would not load
        await page.goto(f"{console.setup.url}/console#token=not-a-token")
        await page.wait_for(
            "document.querySelector('#status').textContent.startsWith('not authorised')"
        )
        assert "unknown token" in await page.text("#status")
        # a refused token never reads as an empty venue
        refused = await page.text("#no-alerts")
        assert refused.startswith("Not authorised") and "No alerts" not in refused
        assert await page.evaluate("document.querySelector('#token-help').hidden") is False
        assert await page.evaluate("sessionStorage.length") == 0  # the refused token is dropped
        # ...by the Venue section too, which stops asking with it
        await page.wait_for(
            "document.querySelector('#venue-status').textContent.startsWith('Not authorised')"
        )
        # the 401s of the refused token show up as failed loads, not as script errors
        assert not any("Uncaught" in e for e in page.console_errors)


async def test_console_pages_an_alert_flood_and_shows_the_storm(
    tmp_path: Path, keys_dir: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, extra="alert_budget = 120\n")
    token = add_token(setup, console="security")
    journal = await Journal.open(
        tmp_path / "x.db", gate_id="gate-x", gate_name="x", clock=Clock(assume="synced")
    )
    gate = Gate("gate-x", "Gate X", add_token(setup, gate_id="gate-x", name="Gate X"), journal)
    try:
        with HubProcess(setup):
            async with aiohttp.ClientSession() as session:
                api = Api(session, setup.url)
                template = await gate.row("T-flood", kind="attempt", decision=DENIED)
                rows = [  # every row skips a gate_seq: one integrity alert each
                    msgspec.structs.replace(
                        template,
                        gate_seq=2 * i + 2,
                        ticket_ref=f"T-flood-{i}",
                        entry_id=str(uuid7(int(time.time() * 1000))),
                    )
                    for i in range(200)
                ]
                assert (await gate.upload(api, *rows)).status == 200
                async with Browser(tmp_path / "browser", width=1280, height=800) as page:
                    await page.goto(f"{setup.url}/console#token={token}")
                    count = "document.querySelectorAll('#alerts .alert').length"
                    await page.wait_for(f"{count} === 100")  # the newest page only
                    top = await page.text("#alerts .alert")
                    assert "Alert storm" in top and "Gate X" in top
                    assert "80 alerts held back" in top
                    assert await page.evaluate("document.querySelector('#older').hidden") is False
                    await page.evaluate("document.querySelector('#older').click()")
                    await page.wait_for(f"{count} === 121")  # 120 within the budget + the storm
                    await page.wait_for("document.querySelector('#older').hidden")
                    ids = await page.evaluate(
                        "[...document.querySelectorAll('#alerts .alert')]"
                        ".map(n => Number(n.dataset.alertId))"
                    )
                    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 121
                    assert page.console_errors == []
    finally:
        await journal.close()
