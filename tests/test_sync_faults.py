"""Faults between gate and the real hub: kill -9 of either side, backlogs, replays and refused
tokens; the hub ends with exactly the journal's rows and no alert. A malicious hub: see
test_sync_evil_hub.py."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.issuer import Issuer
from agent.model import Flag
from sync import protocol
from sync.client import HubClient
from tests.hubgate import feed_entries, get_json, post_json, scan, write_gate
from tests.hubproc import ROOT, HubProcess, HubSetup, add_token, write_hub_config
from tests.polling import until, until_sync

FAST_RETRY = "retry_max_s = 0.5\n"


def _link(gate: Gate) -> HubClient:
    assert gate.hub is not None
    return gate.hub


async def _drained(gate: Gate) -> bool:
    return not await gate.journal.unsynced()


async def _admit_all(gate: Gate, texts: list[str]) -> None:
    for text in texts:
        outcome = await gate.lane.present(scan(text))
        assert outcome is not None and outcome.decision.admitted, outcome


@dataclass(frozen=True)
class Readers:
    """A gate token that reads the feed and a console token that reads the alerts."""

    gate: str
    console: str


@dataclass(frozen=True)
class HubView:
    ids: list[str]  # the gate's entries in the hub's feed, in feed order
    alerts: list[dict[str, object]]


@pytest.fixture
def readers(hub_setup: HubSetup) -> Readers:
    return Readers(add_token(hub_setup, gate_id="reader"), add_token(hub_setup, console="ops"))


def _hub_view(setup: HubSetup, readers: Readers, gate_id: str) -> HubView:
    """What the running hub holds of ``gate_id``, and every alert it raised (blocking)."""
    ids = [
        str(e["entry_id"])
        for e in feed_entries(setup.url, setup.venue, readers.gate)
        if e["gate_id"] == gate_id
    ]
    alerts = get_json(f"{setup.url}/v1/alerts?after=0", readers.console)["alerts"]
    assert isinstance(alerts, list)
    return HubView(ids, alerts)


def _journal_ids(state: Path) -> tuple[list[str], int]:
    """(entry ids, unsynced count) of a gate's journal, read-only (the gate may be running)."""
    db = sqlite3.connect(f"{(state / 'journal.db').as_uri()}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in db.execute("SELECT entry_id FROM entries ORDER BY gate_seq")]
        (unsynced,) = db.execute("SELECT COUNT(*) FROM entries WHERE synced_at IS NULL").fetchone()
    finally:
        db.close()
    return ids, int(unsynced)


def _assert_same(hub: HubView, journal_ids: list[str]) -> None:
    """The hub holds exactly the journal's rows, and saw nothing odd (no gate_seq hole, no
    conflict, no double admission) while they came in."""
    assert [(a["kind"], a["detail"]) for a in hub.alerts] == []
    assert len(hub.ids) == len(journal_ids)
    assert set(hub.ids) == set(journal_ids)


@pytest.fixture
def hub_setup(tmp_path: Path, keys_dir: Path) -> HubSetup:
    return write_hub_config(tmp_path / "hub", keys=keys_dir)


def _gate_config(tmp: Path, keys: Path, setup: HubSetup, token: str, *, hub: str = "",
                 extra: str = "", name: str = "gate-a", entry: str = "single") -> config.Config:  # fmt: skip
    path = write_gate(tmp / name, keys, gate_id=name, name=name.upper(), url=setup.url,
                      token=token, hub_extra=FAST_RETRY + hub, extra=extra, entry=entry)  # fmt: skip
    return config.load(path)


# --- store and forward ----------------------------------------------------------------------------


async def test_hub_down_while_1000_admissions_then_all_uploaded(
    hub_setup: HubSetup, readers: Readers, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    conf = _gate_config(tmp_path, keys_dir, hub_setup, add_token(hub_setup, gate_id="gate-a"))
    texts = [iss.ticket(event=1, zones=[1]) for _ in range(1000)]
    hub = HubProcess(hub_setup)
    try:
        async with open_gate(conf) as gate:
            await _admit_all(gate, texts)
            rows = await gate.journal.tail(1000)
            assert all(r.offline and Flag.OFFLINE in r.flags for r in rows)
            assert len(await gate.journal.unsynced(2000)) == 1000
            await asyncio.to_thread(hub.start)
            await until(lambda: _drained(gate), what="1000 offline rows uploaded")
        held = await asyncio.to_thread(_hub_view, hub_setup, readers, "gate-a")
    finally:
        hub.kill9()
    _assert_same(held, [r.entry_id for r in rows])


async def test_kill_9_of_the_hub_mid_upload_loses_and_repeats_nothing(
    hub_setup: HubSetup, readers: Readers, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    token = add_token(hub_setup, gate_id="gate-a")
    conf = _gate_config(tmp_path, keys_dir, hub_setup, token, hub="batch_size = 3\n")
    texts = [iss.ticket(event=1, zones=[1]) for _ in range(400)]
    hub = HubProcess(hub_setup)
    try:
        async with open_gate(conf) as gate:
            await _admit_all(gate, texts)
            kills = 0
            for left in (350, 250, 150):  # kill -9 three times at different points of the drain

                async def progressed(left: int = left) -> bool:
                    return (await gate.journal.outbox())[0] <= left

                await asyncio.to_thread(hub.start)
                await until(progressed, what=f"outbox down to {left}")
                await asyncio.to_thread(hub.kill9)
                kills += (await gate.journal.outbox())[0] > 0
            assert kills == 3, "every kill landed while rows were still unsynced"
            await asyncio.to_thread(hub.start)
            await until(lambda: _drained(gate), within_s=30, what="all rows after the restarts")
            journal = [r.entry_id for r in await gate.journal.tail(1000)]
        held = await asyncio.to_thread(_hub_view, hub_setup, readers, "gate-a")
    finally:
        hub.kill9()
    assert len(journal) == 400
    _assert_same(held, journal)


async def test_replaying_the_whole_history_inserts_nothing(
    hub_setup: HubSetup, readers: Readers, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    token = add_token(hub_setup, gate_id="gate-a")
    conf = _gate_config(tmp_path, keys_dir, hub_setup, token, hub="batch_size = 7\n")
    with HubProcess(hub_setup):
        async with open_gate(conf) as gate:
            await _admit_all(gate, [iss.ticket(event=1, zones=[1]) for _ in range(40)])
            await until(lambda: _drained(gate), what="first upload")
            history = await gate.journal.tail(100)
        # The journal restored from a backup taken before the upload: every row unsynced again.
        db = sqlite3.connect(conf.gate.state_dir / "journal.db")
        with db:
            db.execute("UPDATE entries SET synced_at = NULL")
        db.close()
        body = protocol.encode(
            protocol.BatchUpload(
                "gate-a", tuple(protocol.EntryWire.from_record(r) for r in history)
            )
        )
        url = f"{hub_setup.url}/v1/gates/gate-a/entries:batch"
        status, ack = await asyncio.to_thread(post_json, url, token, body)
        assert status == 200 and {r["status"] for r in ack["results"]} == {"duplicate"}
        async with open_gate(conf) as gate:
            await until(lambda: _drained(gate), what="the replayed history acknowledged")
        held = await asyncio.to_thread(_hub_view, hub_setup, readers, "gate-a")
    _assert_same(held, [r.entry_id for r in history])
    assert len(held.ids) == 40


async def test_gate_stopped_between_post_and_mark_loses_and_repeats_nothing(
    hub_setup: HubSetup, readers: Readers, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    token = add_token(hub_setup, gate_id="gate-a")
    conf = _gate_config(tmp_path, keys_dir, hub_setup, token)
    async with open_gate(conf) as gate:  # hub down: everything stays in the outbox
        await _admit_all(gate, [iss.ticket(event=1, zones=[1]) for _ in range(30)])
        pending = await gate.journal.unsynced()
    with HubProcess(hub_setup):
        # Exactly what the uploader sends; the gate "dies" before it marks the rows.
        upload = protocol.BatchUpload(
            "gate-a", tuple(protocol.EntryWire.from_record(r) for r in pending)
        )
        url = f"{hub_setup.url}/v1/gates/gate-a/entries:batch"
        status, ack = await asyncio.to_thread(post_json, url, token, protocol.encode(upload))
        assert status == 200 and ack["acked_through_seq"] == 30
        assert _journal_ids(conf.gate.state_dir)[1] == 30
        async with open_gate(conf) as gate:
            await until(lambda: _drained(gate), what="the resent batch acknowledged")
        held = await asyncio.to_thread(_hub_view, hub_setup, readers, "gate-a")
    _assert_same(held, [r.entry_id for r in pending])


def test_gate_process_killed_mid_batch_loses_and_repeats_nothing(
    hub_setup: HubSetup, readers: Readers, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    token = add_token(hub_setup, gate_id="gate-a")
    gate_dir = tmp_path / "gate-a"
    texts = [iss.ticket(event=1, zones=[1]) for _ in range(300)]
    # Every restart scans the file from its start again: the venue's policy allows it.
    hub_setup.config.write_text(hub_setup.config.read_text() + 'entry_policy = "unlimited"\n')
    gate_dir.mkdir()
    (gate_dir / "scans.txt").write_text("\n".join(texts) + "\n")
    (gate_dir / "none.txt").write_text("")

    def gate_config(scans: str) -> Path:
        path = write_gate(gate_dir, keys_dir, gate_id="gate-a", name="Gate A", url=hub_setup.url,
                          token=token, entry="unlimited", hub_extra=FAST_RETRY + "batch_size = 2\n",
                          scanner=f"sim://file?path={scans}&end=wait&interval_ms=5")  # fmt: skip
        return path.rename(gate_dir / f"{scans}.toml")

    busy, idle = gate_config("scans.txt"), gate_config("none.txt")
    rng = random.Random(4)
    mid_stream = 0
    with HubProcess(hub_setup):
        for _ in range(4):
            state = gate_dir / "state"
            before = _rows(state)
            proc = _run_gate(busy)
            _wait_for_rows(state, before + 1, proc)  # the gate is up and recording
            time.sleep(rng.uniform(0.0, 1.0))  # the scenario: a kill at a random moment
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
            assert b"Traceback" not in err, err.decode()
            recorded = _rows(state) - before
            mid_stream += 0 < recorded < len(texts)  # killed while scanning and uploading
        assert mid_stream >= 2, "the kills should land while the gate records and uploads"
        proc = _run_gate(idle)
        try:
            until_sync(lambda: not _journal_ids(gate_dir / "state")[1], 30, "every row uploaded")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        journal, unsynced = _journal_ids(gate_dir / "state")
        held = _hub_view(hub_setup, readers, "gate-a")
    assert unsynced == 0, err.decode()[-2000:]
    _assert_same(held, journal)


def _rows(state: Path) -> int:
    """Rows in the journal; 0 while the gate has not created it yet."""
    try:
        return len(_journal_ids(state)[0])
    except sqlite3.OperationalError:  # no file, or no schema yet
        return 0


def _wait_for_rows(state: Path, rows: int, proc: subprocess.Popen[bytes]) -> None:
    def recorded() -> bool:
        assert proc.poll() is None, "the gate exited"
        return _rows(state) >= rows

    until_sync(recorded, 30, f"{rows} rows in the gate's journal")


def _run_gate(conf: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip


# --- refusals by the real hub ---------------------------------------------------------------------


@pytest.mark.parametrize("who", ["wrong token", "another gate's token"])
async def test_refused_token_keeps_rows_and_says_so(
    who: str, hub_setup: HubSetup, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    other = add_token(hub_setup, gate_id="gate-b")
    token = "x" * 43 if who == "wrong token" else other
    conf = _gate_config(tmp_path, keys_dir, hub_setup, token)
    with HubProcess(hub_setup):
        async with open_gate(conf) as gate:
            await _admit_all(gate, [iss.ticket(event=1, zones=[1]) for _ in range(3)])
            await until(lambda: _link(gate).status()["upload"] == "unauthorized", what="status")
            outcome = await gate.lane.present(scan(iss.ticket(event=1, zones=[1])))
            assert outcome is not None and outcome.decision.admitted  # the gate keeps deciding
            assert len(await gate.journal.unsynced()) == 4
            status = _link(gate).status()
        stored = await asyncio.to_thread(feed_entries, hub_setup.url, hub_setup.venue, other)
    assert stored == [] and not status["online"]
    assert "HTTP 40" in str(status["last_error"]) and token not in str(status["last_error"])


async def test_conflict_keeps_rows_and_is_logged_once(
    hub_setup: HubSetup, keys_dir: Path, iss: Issuer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    token = add_token(hub_setup, gate_id="gate-a")
    conf = _gate_config(tmp_path, keys_dir, hub_setup, token)
    async with open_gate(conf) as gate:
        await _admit_all(gate, [iss.ticket(event=1, zones=[1])])
        (row,) = await gate.journal.unsynced()
    # Something else already used this entry id at the hub, with another body.
    forged = msgspec.structs.replace(
        protocol.EntryWire.from_record(row), detail="not what the gate recorded"
    )
    with HubProcess(hub_setup):
        url = f"{hub_setup.url}/v1/gates/gate-a/entries:batch"
        body = protocol.encode(protocol.BatchUpload("gate-a", (forged,)))
        assert (await asyncio.to_thread(post_json, url, token, body))[0] == 200
        caplog.set_level(logging.ERROR, logger="sync.client")
        async with open_gate(conf) as gate:
            link = _link(gate)
            await until(lambda: link.status()["upload"] == "conflict", what="conflict status")
            await asyncio.sleep(1.5)  # the scenario: several retries at the (test's) 0.5 s cap
            assert link.status()["conflicts"] == [row.entry_id]
            assert link.status()["conflict_from_seq"] == row.gate_seq
            assert [r.entry_id for r in await gate.journal.unsynced()] == [row.entry_id]
    logged = [r for r in caplog.records if row.entry_id in r.getMessage()]
    assert len(logged) == 1
    assert f"from gate_seq {row.gate_seq} (a quarantine's --from-seq)" in logged[0].getMessage()


async def test_a_conflict_names_its_lowest_refused_row_not_the_batchs_first(
    hub_setup: HubSetup, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    token = add_token(hub_setup, gate_id="gate-a")
    conf = _gate_config(tmp_path, keys_dir, hub_setup, token)
    async with open_gate(conf) as gate:
        await _admit_all(gate, [iss.ticket(event=1, zones=[1]) for _ in range(3)])
        first, second, third = await gate.journal.unsynced()
    # A copy of the token stored a row of its own under gate_seq 2 only (gate_seq 1 a hole).
    squat = msgspec.structs.replace(
        protocol.EntryWire.from_record(second), entry_id=str(uuid.uuid4())
    )
    with HubProcess(hub_setup):
        url = f"{hub_setup.url}/v1/gates/gate-a/entries:batch"
        body = protocol.encode(protocol.BatchUpload("gate-a", (squat,)))
        assert (await asyncio.to_thread(post_json, url, token, body))[0] == 200
        async with open_gate(conf) as gate:
            link = _link(gate)
            await until(lambda: link.status()["upload"] == "conflict", what="conflict status")
            assert link.status()["conflicts"] == [second.entry_id]
            assert link.status()["conflict_from_seq"] == second.gate_seq == 2
            assert first.gate_seq == 1 and third.gate_seq == 3  # sent in the same batch
