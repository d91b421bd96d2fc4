"""How the venue is filling: the hub's tallies (``GET /v1/venue``), its Prometheus ``/metrics`` and
the Grafana dashboard that queries them.

The end-to-end test runs real gates (an entry gate and an exit gate in zone 1, an entry gate in
zone 2 whose turnstile never turns, so its admission is annulled) against a real hub process and
checks what a control room sees: occupancy per zone, admissions per minute, denial reasons, list
versions, the /metrics text (parsed with prometheus_client's parser) and the console's Venue
section in headless Chromium. The store method the tallies follow is checked on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.clock import uuid7
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.model import Reason, Verdict
from agent.version import installed
from sync.hub_metrics import version_label
from sync.hub_store import HubPolicy, HubStore
from sync.hub_stores import open_store
from sync.hub_venue import MINUTES, Venue, VenueTally
from sync.hub_venue_sql import VenueRow
from sync.protocol import EntryWire
from tests.browser import Browser
from tests.gateconf import write_gate_config
from tests.hubgate import HUB_TIMING, get_json, scan
from tests.hubproc import Api, HubProcess, HubSetup, add_token, heartbeat, write_hub_config
from tests.pg import pg_server, pg_url  # noqa: F401
from tests.polling import until

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "config" / "grafana-hub.json"
T0 = 1_750_000_000.0


# --- the store method, both backends -------------------------------------------------------------


class GateRows:
    """A gate's rows as its journal uploads them: gap-free gate_seq, UUIDv7 ids, rising HLC."""

    def __init__(self, gate_id: str, zone: int | None) -> None:
        self.gate_id, self.zone, self.seq, self.hlc = gate_id, zone, 0, 0

    def row(
        self, ref: str, kind: str, at: float, *, admit: bool = True, annuls: str | None = None
    ) -> EntryWire:
        self.seq += 1
        self.hlc = max(self.hlc + 1, int(at * 1000) << 16)
        denied = not admit and kind == "attempt"
        return EntryWire(
            gate_seq=self.seq, entry_id=str(uuid7(int(at * 1000))), gate_id=self.gate_id,
            lane="in", ticket_ref=ref, kind=kind,  # type: ignore[arg-type]
            verdict=Verdict.ADMIT if admit else Verdict.DENY,
            reason=Reason.ALREADY_USED if denied else Reason.OK, detail="", flags=(),
            annuls=annuls, zone=self.zone, wall_time=at, clock_synced=True, mono_ns=1,
            boot_id="boot-1", hlc=self.hlc, rev_version=1, offline=False,
        )  # fmt: skip


@pytest.fixture
async def store(hub_store_url: str) -> AsyncIterator[HubStore]:
    opened = await open_store(hub_store_url, HubPolicy("arena"))
    try:
        yield opened
    finally:
        await opened.close()


async def test_venue_rows_page_every_row_and_join_an_annulment_to_its_entry(
    store: HubStore,
) -> None:
    a, x = GateRows("gate-a", 1), GateRows("gate-x", None)
    entries = [a.row(f"T{i}", "entry", T0 + i) for i in range(5)]
    denied = a.row("T0", "attempt", T0 + 10, admit=False)
    annul = a.row("T4", "annul", T0 + 11, admit=False, annuls=entries[4].entry_id)
    await store.ingest("gate-a", [*entries, denied, annul], T0 + 20)
    await store.ingest("gate-x", [x.row("T0", "exit", T0 + 12)], T0 + 20)

    rows: list[VenueRow] = []
    while page := await store.venue_rows(rows[-1].cursor if rows else 0, 3):
        assert len(page) <= 3
        rows += page
    assert [r.kind for r in rows] == ["entry"] * 5 + ["attempt", "annul", "exit"]
    assert [r.cursor for r in rows] == sorted({r.cursor for r in rows})
    assert rows[5].reason == "already_used" and not rows[5].admitted
    assert rows[0].zone == 1 and rows[7].zone is None and rows[7].gate_id == "gate-x"
    target = rows[6].annulled
    assert target is not None and target == rows[4]  # the annulled entry, as stored
    assert all(r.annulled is None for r in rows if r.kind != "annul")
    assert await store.venue_rows(rows[-1].cursor, 100) == []

    tally = VenueTally()
    for row in rows:
        tally.add(row)
    tally.prune(T0 + 20)
    assert tally.zones == {1: [4, 0], None: [0, 1]}
    assert tally.gates["gate-a"].entries == 4 and tally.gates["gate-a"].annulled == 1
    assert tally.gates["gate-a"].denied == {"already_used": 1}
    assert tally.decisions[("gate-a", "entry", "admit", "ok")] == 5  # as uploaded
    assert tally.annulments == {("gate-a", "entry"): 1}


async def test_rows_a_quarantine_sets_apart_leave_the_running_tallies(store: HubStore) -> None:
    """The tallies count each row once as it comes; a quarantine (in the hub: another process,
    the CLI) takes rows away behind them, so the venue counts what is stored again from the
    start, but for the Prometheus counters (decisions as uploaded), which never fall."""
    a = GateRows("gate-a", 1)
    venue = Venue(store, clock=lambda: T0 + 20)
    own = [a.row("T0", "entry", T0), a.row("T1", "entry", T0 + 1), a.row("T2", "entry", T0 + 2)]
    nobody = a.row("T2", "annul", T0 + 3, admit=False, annuls=own[2].entry_id)  # gate_seq 4
    await store.ingest("gate-a", [*own, nobody], T0)
    squat = [a.row(f"S{i}", "entry", T0 + 4 + i) for i in range(3)]  # gate_seq 5-7
    await store.ingest("gate-a", squat, T0 + 5)
    tally = await venue.follow()
    assert tally.zones == {1: [5, 0]} and tally.gates["gate-a"].entries == 5
    assert tally.annulments == {("gate-a", "entry"): 1}
    moved = await store.quarantine("gate-a", 5, T0 + 10)
    assert moved.moved and len(moved.rows) == 3
    tally = await venue.follow()
    assert tally.zones == {1: [2, 0]} and tally.gates["gate-a"].entries == 2
    assert tally.gates["gate-a"].annulled == 1
    assert sum(tally.decisions.values()) == 6 and tally.annulments == {("gate-a", "entry"): 1}
    a.seq = 4  # the gate's own gate_seq 5, taken again
    await store.ingest("gate-a", [a.row("T3", "entry", T0 + 11)], T0 + 12)
    tally = await venue.follow()  # and on from there, row by row
    assert tally.zones == {1: [3, 0]} and sum(tally.decisions.values()) == 7


async def test_a_row_from_a_clock_ahead_counts_in_the_minute_it_arrived(store: HubStore) -> None:
    """A review: rows far ahead of the hub (stored since the hub keeps them) were counted in
    their claimed future minute, a dict key each that pruning keeps until that minute passes:
    a stolen gate could add 20 a second, and an honest gate an hour ahead vanished from the
    chart. A row counts no later than its arrival."""
    a = GateRows("gate-a", 1)
    await store.ingest(
        "gate-a", [a.row(f"T{i}", "entry", T0 + 3600 * (i + 1)) for i in range(3)], T0
    )
    rows = await store.venue_rows(0, 100)
    assert [r.wall_time for r in rows] == [T0] * 3
    tally = VenueTally()
    for row in rows:
        tally.add(row)
    tally.prune(T0)
    assert tally.per_minute("gate-a", T0)[-1] == 3
    assert list(tally.gates["gate-a"].minutes) == [int(T0 // 60)]


def test_a_second_annulment_of_the_same_entry_changes_nothing() -> None:
    tally = VenueTally()
    entry = VenueRow(1, "gate-a", "entry", True, "ok", 3, T0)
    tally.add(entry)
    for cursor in (2, 3):  # a gate may upload two annulments naming one entry: one counts
        tally.add(VenueRow(cursor, "gate-a", "annul", False, "ok", 3, T0 + 1, annulled=entry))
    assert tally.zones[3] == [0, 0] and tally.gates["gate-a"].annulled == 1
    assert tally.per_minute("gate-a", T0 + 5) == [0] * MINUTES


def test_per_minute_counts_keep_the_last_hour_by_wall_time() -> None:
    tally = VenueTally()
    now = 60 * (T0 // 60) + 30  # half past a minute
    for cursor, age_min in enumerate((0, 0, 1, 59, 60, 300), 1):  # the last two left the hour
        tally.add(VenueRow(cursor, "gate-a", "entry", True, "ok", 1, now - 60 * age_min))
    tally.prune(now)
    minutes = tally.per_minute("gate-a", now)
    assert len(minutes) == MINUTES and minutes[-1] == 2 and minutes[-2] == 1 and minutes[0] == 1
    assert sum(minutes) == 4 and tally.zones[1] == [6, 0]  # occupancy keeps them all


# --- real gates, a real hub ----------------------------------------------------------------------


def _gate(
    tmp: Path, keys: Path, setup: HubSetup, gate_id: str, *, zone: int, direction: str,
    passage: str = "passage_ms=0",
) -> config.Config:  # fmt: skip
    token = add_token(setup, gate_id=gate_id, name=f"Gate {gate_id[-1].upper()}")
    path = write_gate_config(
        tmp / gate_id / "gate.toml",
        keys=keys,
        gate={"id": gate_id, "name": gate_id, "venue": setup.venue, "zone": zone,
              "direction": direction},
        lane={"name": "in", "repeat_window_ms": 0, "passage_timeout_s": 1.0},
        devices={"scanner": "sim://queue", "gate": f"sim://gate?{passage}"},
        hub={"url": setup.url, "token": token, **HUB_TIMING},
    )  # fmt: skip
    return config.load(path)


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's queries use."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in board["templating"]["list"] if isinstance(v.get("query"), str)]
    return {name for e in exprs for name in re.findall(r"\bhub_[a-z0-9_]+", e)}


async def test_the_venue_figures_follow_real_gates(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    console = add_token(setup, console="control-room")
    conf_a = _gate(tmp_path, keys_dir, setup, "gate-a", zone=1, direction="entry")
    conf_b = _gate(tmp_path, keys_dir, setup, "gate-b", zone=1, direction="exit")
    conf_c = _gate(
        tmp_path, keys_dir, setup, "gate-c", zone=2, direction="entry", passage="passage=never"
    )
    tickets = [iss.ticket(event=1, zones=[1, 2]) for _ in range(5)]
    with HubProcess(setup):
        async with open_gate(conf_a) as a, open_gate(conf_b) as b, open_gate(conf_c) as c:
            for gate in (a, b, c):
                await until(partial(_online, gate), what=f"{gate.config.gate.id} online")
            for text in tickets[:4]:
                assert (await _present(a, text)).decision.admitted
            for text, reason in (
                (tickets[0], Reason.ALREADY_USED),
                (iss.ticket(event=2, zones=[1]), Reason.WRONG_EVENT),
                ("not a ticket", Reason.INVALID_FORMAT),
            ):
                assert (await _present(a, text)).decision.reason is reason
            for text in tickets[:2]:
                assert (await _present(b, text)).decision.admitted
            nobody = await _present(c, tickets[4])
            assert nobody.decision.admitted and nobody.passed is False and nobody.annul

            async def uploaded() -> bool:
                return all([not await g.journal.unsynced() for g in (a, b, c)])

            await until(uploaded, what="every row acknowledged by the hub")
            venue = await _venue(setup, console, lambda v: len(v["gates"]) == 3)
            venue = await _venue(
                setup, console, lambda v: all(g["list_version"] for g in v["gates"])
            )
            assert venue["occupancy"] == 2 and venue["alerts_open"] == 0
            assert venue["zones"] == [
                {"zone": 1, "occupancy": 2, "entries": 4, "exits": 2},
                {"zone": 2, "occupancy": 0, "entries": 0, "exits": 0},
            ]
            gates = {g["gate_id"]: g for g in venue["gates"]}
            ga, gb, gc = gates["gate-a"], gates["gate-b"], gates["gate-c"]
            assert (ga["entries"], ga["exits"], gb["exits"], gc["entries"]) == (4, 0, 2, 0)
            assert gc["annulled"] == 1 and ga["annulled"] == 0
            assert [len(g["per_minute"]) for g in (ga, gb, gc)] == [MINUTES] * 3
            assert (sum(ga["per_minute"]), sum(gb["per_minute"]), sum(gc["per_minute"])) == (
                4,
                2,
                0,
            )
            assert sorted((d["reason"], d["count"]) for d in ga["denied"]) == [
                ("already_used", 1), ("invalid_format", 1), ("wrong_event", 1),
            ]  # fmt: skip
            assert gb["denied"] == [] and ga["gate_name"] == "Gate A" and ga["online"]
            assert all(g["list_age_s"] is not None and g["list_age_s"] >= 0 for g in gates.values())
            assert "not a ticket" not in json.dumps(venue)

            await _metrics_match(setup, console)
            await _console_shows_it(setup, console, tmp_path)


def _online(gate: Gate) -> bool:
    return gate.hub is not None and gate.hub.online


async def _present(gate: Gate, text: str) -> Outcome:
    outcome = await gate.lane.present(scan(text))
    assert outcome is not None
    return outcome


async def _venue(
    setup: HubSetup, token: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        body = await asyncio.to_thread(get_json, f"{setup.url}/v1/venue", token)
        found.append(body)
        return ready(body)

    await until(check, what="the venue figures")
    return found[-1]


async def _metrics_match(setup: HubSetup, console: str) -> None:
    status, text = await asyncio.to_thread(_get, f"{setup.url}/metrics")
    assert status == 401  # metrics_auth = "token" by default
    status, text = await asyncio.to_thread(_get, f"{setup.url}/metrics", console)
    assert status == 200
    samples = _samples(text)

    def value(metric: str, **labels: str) -> float:
        return samples[(metric, tuple(sorted(labels.items())))]

    entry = {"kind": "entry", "verdict": "admit", "reason": "ok"}
    assert value("hub_entries_total", gate="gate-a", **entry) == 4
    assert value("hub_entries_total", gate="gate-c", **entry) == 1  # as uploaded
    assert value("hub_annulments_total", gate="gate-c", kind="entry") == 1
    assert (
        value(
            "hub_entries_total", gate="gate-a", kind="attempt", verdict="deny", reason="wrong_event"
        )
        == 1
    )
    assert value("hub_entries_total", gate="gate-b", kind="exit", verdict="admit", reason="ok") == 2
    assert value("hub_occupancy", zone="1") == 2 and value("hub_occupancy", zone="2") == 0
    assert value("hub_alerts_open") == 0
    assert value("hub_gates") == 3 and value("hub_gates_online") == 3
    assert value("hub_gate_online", gate="gate-b") == 1
    # Which version runs where (after an upgrade: was each unit restarted?)
    assert value("hub_gate_info", gate="gate-b", name="Gate B", version=installed()) == 1
    assert value("hub_build_info", version=installed()) == 1
    assert value("hub_gate_list_version", gate="gate-a") >= 1
    assert value("hub_ingest_seconds_count") >= 3  # one upload at least per gate
    assert 0 < value("hub_ingest_seconds_sum") < value("hub_ingest_seconds_count") * 5
    assert "ticket" not in {k for (_, labels) in samples for k, _ in labels}

    # The dashboard queries only what the hub serves, and every figure the hub serves is on it.
    served = {n for n, _ in samples} | {f.name for f in text_string_to_metric_families(text)}
    queried = dashboard_metrics()
    assert queried and queried <= served, queried - served
    families = {f.name for f in text_string_to_metric_families(text)}
    figures = {f for f in families if f.startswith("hub_") and not f.endswith("_created")}
    assert figures <= {re.sub(r"_(total|bucket|sum|count)$", "", q) for q in queried}


async def _console_shows_it(setup: HubSetup, console: str, tmp_path: Path) -> None:
    async with Browser(tmp_path / "browser", width=1280, height=900) as page:
        await page.goto(f"{setup.url}/console#token={console}")
        row = "#venue-gates tr[data-gate='gate-a']"
        await page.wait_for(f'document.querySelector("{row} td.last-hour") !== null')
        assert await page.evaluate("location.hash") == ""  # console.js still removes it
        assert await page.text(f"{row} td.last-hour") == "4"
        assert await page.text(f"{row} td.entries") == "4"
        denied = await page.text(f"{row} td.denied")
        assert denied.startswith("3: ") and "already used 1" in denied
        assert await page.text("#venue-gates tr[data-gate='gate-c'] td.annulled") == "1"
        assert await page.text("#venue-zones tr[data-zone='1'] td.occupancy") == "2"
        assert await page.text("#venue-occupancy") == "(2 inside)"
        assert await page.text("#venue-alerts-open") == "0"
        chart = f'document.querySelector("{row} svg")'
        bars = int(await page.evaluate(f"{chart}.dataset.bars"))
        assert 1 <= bars <= 2  # four admissions within a minute or two
        label = await page.evaluate(f"{chart}.getAttribute('aria-label')")
        assert label.startswith("4 admissions in the last hour, most at ")
        assert (await page.text("#venue-gates tr[data-gate='gate-a'] td.list")).startswith("v")
        await page.goto(f"{setup.url}/console")  # a reload: the token is in this tab's storage
        await page.wait_for(f'document.querySelector("{row} td.entries") !== null')
        assert await page.text(f"{row} td.entries") == "4"
        assert page.console_errors == []


async def test_metrics_can_be_open_to_a_scraper_without_a_token(
    keys_dir: Path, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, extra='metrics_auth = "open"\n')
    gate_token = add_token(setup, gate_id="gate-a", name="Gate A")
    with HubProcess(setup):
        status, text = await asyncio.to_thread(_get, f"{setup.url}/metrics")
        assert status == 200
        samples = _samples(text)
        assert samples[("hub_gates", ())] == 1 and samples[("hub_gates_online", ())] == 0
        # A version label is what a gate (a stolen one too) says: version-shaped, or "invalid".
        async with aiohttp.ClientSession() as session:
            beat = dataclasses.replace(heartbeat("gate-a", "x"), version='0.1" {evil}')
            reply = await Api(session, setup.url).post(
                "/v1/gates/gate-a/heartbeat", beat, gate_token
            )
            assert reply.status == 200, reply.body
        _, text = await asyncio.to_thread(_get, f"{setup.url}/metrics")
        labels = dict(next(k for k in _samples(text) if k[0] == "hub_gate_info")[1])
        assert labels["version"] == "invalid"
        status, _ = await asyncio.to_thread(_get, f"{setup.url}/v1/venue")
        assert status == 401  # the venue view stays a console's
        status, _ = await asyncio.to_thread(_get, f"{setup.url}/v1/venue", gate_token)
        assert status == 403


def test_a_builds_version_is_its_own_label_however_long() -> None:
    """A review: 32 characters were allowed, and a build's version (0.1.devN+gHASH.dDATE) is
    31 and grows with the commits and the hash: honest gates were labelled "invalid"."""
    built = "0.1.dev12345+g4fc84069bed7.d20261205"
    assert version_label(built) == built and version_label("0+unknown") == "0+unknown"
    assert version_label("9" * 65) == "invalid"  # past what a heartbeat may say


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 30
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"] and panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert all(t["expr"].strip() for t in panel["targets"])
    assert {
        "hub_entries_total", "hub_occupancy", "hub_alerts_open", "hub_gates_online",
        "hub_ingest_seconds_bucket", "hub_gate_list_age_seconds",
    } <= dashboard_metrics()  # fmt: skip
