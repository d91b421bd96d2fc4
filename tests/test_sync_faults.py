"""Faults between gate and hub: kill -9 of either side, backlogs, replays, refused tokens, and a
malicious hub serving forged, truncated or rolled-back signed documents."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from agent import config, issuer, keys, revocation_issuer
from agent.daemon import Gate, open_gate
from agent.issuer import Issuer
from agent.model import Flag, Reason
from agent.revocation import KIND
from agent.signed import sign_document
from sync import protocol
from sync.client import HubClient
from tests.hubgate import feed_entries, post_json, scan, until, write_gate
from tests.hubproc import ROOT, HubProcess, HubSetup, add_token, write_hub_config

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


def _hub_ids(setup: HubSetup, reader: str, gate_id: str) -> list[str]:
    return [
        str(e["entry_id"])
        for e in feed_entries(setup.url, setup.venue, reader)
        if e["gate_id"] == gate_id
    ]


def _journal_ids(state: Path) -> tuple[list[str], int]:
    """(entry ids, unsynced count) of a gate's journal, read-only (the gate may be running)."""
    db = sqlite3.connect(f"{(state / 'journal.db').as_uri()}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in db.execute("SELECT entry_id FROM entries ORDER BY gate_seq")]
        (unsynced,) = db.execute("SELECT COUNT(*) FROM entries WHERE synced_at IS NULL").fetchone()
    finally:
        db.close()
    return ids, int(unsynced)


def _assert_same(hub_ids: list[str], journal_ids: list[str]) -> None:
    duplicates = [i for i, n in Counter(hub_ids).items() if n > 1]
    assert duplicates == [], f"{len(duplicates)} entries twice at the hub"
    assert set(hub_ids) == set(journal_ids), (len(hub_ids), len(journal_ids))


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
    hub_setup: HubSetup, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    conf = _gate_config(tmp_path, keys_dir, hub_setup, add_token(hub_setup, gate_id="gate-a"))
    reader = add_token(hub_setup, gate_id="reader")
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
        ids = await asyncio.to_thread(_hub_ids, hub_setup, reader, "gate-a")
    finally:
        hub.kill9()
    _assert_same(ids, [r.entry_id for r in rows])


async def test_kill_9_of_the_hub_mid_upload_loses_and_repeats_nothing(
    hub_setup: HubSetup, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    token = add_token(hub_setup, gate_id="gate-a")
    reader = add_token(hub_setup, gate_id="reader")
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
        ids = await asyncio.to_thread(_hub_ids, hub_setup, reader, "gate-a")
    finally:
        hub.kill9()
    assert len(journal) == 400
    _assert_same(ids, journal)


async def test_replaying_the_whole_history_inserts_nothing(
    hub_setup: HubSetup, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    token = add_token(hub_setup, gate_id="gate-a")
    reader = add_token(hub_setup, gate_id="reader")
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
        assert status == 200 and {r["status"] for r in ack["results"]} == {"duplicate"}  # type: ignore[union-attr]
        async with open_gate(conf) as gate:
            await until(lambda: _drained(gate), what="the replayed history acknowledged")
        ids = await asyncio.to_thread(_hub_ids, hub_setup, reader, "gate-a")
    _assert_same(ids, [r.entry_id for r in history])
    assert len(ids) == 40


async def test_gate_stopped_between_post_and_mark_loses_and_repeats_nothing(
    hub_setup: HubSetup, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    token = add_token(hub_setup, gate_id="gate-a")
    reader = add_token(hub_setup, gate_id="reader")
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
        ids = await asyncio.to_thread(_hub_ids, hub_setup, reader, "gate-a")
    _assert_same(ids, [r.entry_id for r in pending])


def test_gate_process_killed_mid_batch_loses_and_repeats_nothing(
    hub_setup: HubSetup, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    token = add_token(hub_setup, gate_id="gate-a")
    reader = add_token(hub_setup, gate_id="reader")
    gate_dir = tmp_path / "gate-a"
    texts = [iss.ticket(event=1, zones=[1]) for _ in range(300)]
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
            time.sleep(rng.uniform(0.0, 1.0))
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
            assert b"Traceback" not in err, err.decode()
            recorded = _rows(state) - before
            mid_stream += 0 < recorded < len(texts)  # killed while scanning and uploading
        assert mid_stream >= 2, "the kills should land while the gate records and uploads"
        proc = _run_gate(idle)
        try:
            deadline = time.monotonic() + 30
            while _journal_ids(gate_dir / "state")[1] and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        journal, unsynced = _journal_ids(gate_dir / "state")
        ids = _hub_ids(hub_setup, reader, "gate-a")
    assert unsynced == 0, err.decode()[-2000:]
    _assert_same(ids, journal)


def _rows(state: Path) -> int:
    """Rows in the journal; 0 while the gate has not created it yet."""
    try:
        return len(_journal_ids(state)[0])
    except sqlite3.OperationalError:  # no file, or no schema yet
        return 0


def _wait_for_rows(state: Path, rows: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while _rows(state) < rows:
        assert proc.poll() is None and time.monotonic() < deadline, "the gate records nothing"
        time.sleep(0.02)


def _run_gate(conf: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(conf)],
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
    forged = protocol.EntryWire.from_record(row)
    forged = protocol.EntryWire(**{**{f: getattr(forged, f) for f in forged.__slots__},
                                   "detail": "not what the gate recorded"})  # fmt: skip
    with HubProcess(hub_setup):
        url = f"{hub_setup.url}/v1/gates/gate-a/entries:batch"
        body = protocol.encode(protocol.BatchUpload("gate-a", (forged,)))
        assert (await asyncio.to_thread(post_json, url, token, body))[0] == 200
        caplog.set_level(logging.ERROR, logger="sync.client")
        async with open_gate(conf) as gate:
            link = _link(gate)
            await until(lambda: link.status()["upload"] == "conflict", what="conflict status")
            await asyncio.sleep(1.5)  # several retries at the (test's) 0.5 s cap
            assert link.status()["conflicts"] == [row.entry_id]
            assert [r.entry_id for r in await gate.journal.unsynced()] == [row.entry_id]
    logged = [r for r in caplog.records if row.entry_id in r.getMessage()]
    assert len(logged) == 1


# --- a malicious hub ------------------------------------------------------------------------------


@dataclass
class EvilHub:
    """Serves whatever the test puts in ``revocations``/``snapshot``/``trust``; counts requests."""

    revocations: tuple[int, bytes] = (200, b"")
    snapshot: bytes = b""
    trust: bytes = b""
    hits: Counter[str] = field(default_factory=Counter)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/gates/{gate}/heartbeat", self._heartbeat)
        app.router.add_post("/v1/gates/{gate}/entries:batch", self._upload)
        app.router.add_get("/v1/venues/{venue}/entries", self._feed)
        app.router.add_get("/v1/revocations", self._revocations)
        app.router.add_get("/v1/revocations/snapshot", self._snapshot)
        app.router.add_get("/v1/trust", self._trust)
        return app

    def _json(self, body: dict[str, object], status: int = 200) -> web.Response:
        return web.json_response({"v": 1, "hub_time": time.time(), **body}, status=status)

    async def _heartbeat(self, request: web.Request) -> web.Response:
        return self._json({})

    async def _upload(self, request: web.Request) -> web.Response:
        batch = protocol.parse(await request.read(), protocol.BatchUpload)
        results = [{"entry_id": e.entry_id, "status": "inserted"} for e in batch.entries]
        return self._json({"results": results, "acked_through_seq": batch.entries[-1].gate_seq})

    async def _feed(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return self._json({"entries": [], "next": int(request.query["after"])})

    async def _revocations(self, request: web.Request) -> web.Response:
        self.hits["revocations"] += 1
        status, body = self.revocations
        return web.Response(status=status, body=body, content_type="application/json")

    async def _snapshot(self, request: web.Request) -> web.Response:
        self.hits["snapshot"] += 1
        return web.Response(body=self.snapshot, content_type="application/json")

    async def _trust(self, request: web.Request) -> web.Response:
        self.hits["trust"] += 1
        return web.Response(body=self.trust, content_type="application/json")


@pytest.fixture
async def evil() -> AsyncIterator[tuple[EvilHub, str]]:
    hub = EvilHub()
    runner = web.AppRunner(hub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield hub, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _page(version: int, *deltas: bytes) -> tuple[int, bytes]:
    body = {"v": 1, "version": version, "deltas": [d.decode() for d in deltas]}
    return 200, json.dumps(body).encode()


async def _served(hub: EvilHub, what: str) -> None:
    """Wait until the gate asked twice more: it has then handled the first answer."""
    target = hub.hits[what] + 2
    await until(lambda: hub.hits[what] >= target, what=f"two more {what} requests")


def _evil_gate(
    tmp: Path, keys: Path, url: str, *, extra: str = "", bundle: Path | None = None
) -> config.Config:
    path = write_gate(tmp / "gate", keys, gate_id="gate-a", name="Gate A", url=url, token="t",
                      hub_extra=FAST_RETRY, extra=extra, bundle=bundle)  # fmt: skip
    return config.load(path)


async def test_forged_truncated_and_rolled_back_revocations_are_refused(
    evil: tuple[EvilHub, str], keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    hub, url = evil
    revoked = iss.ticket(event=1, zones=[1])
    key = await asyncio.to_thread(_revocation_key, revoked)
    state = tmp_path / "issuer-state.json"
    v1 = revocation_issuer.issue_delta(iss.list_key, state, revoke=[key])
    (tmp_path / "v1.json").write_bytes(v1)
    unrevoke_v2 = revocation_issuer.issue_delta(iss.list_key, state, unrevoke=[key])
    attacker = keys.generate("ed25519")
    now = int(time.time())
    forged = sign_document(
        KIND,
        revocation_issuer.make_delta(
            from_version=1, version=2, issued_at=now, expires=now + 3600, unrevoke=[key]
        ),
        attacker,
    )
    older = revocation_issuer.make_delta(
        from_version=0, version=1, issued_at=now, expires=now + 3600, unrevoke=[key]
    )
    rolled_back = sign_document(KIND, older, iss.list_key)
    empty_v1 = sign_document(KIND, revocation_issuer.make_snapshot(
        version=1, issued_at=now, expires=now + 3600), iss.list_key)  # fmt: skip
    forged_snapshot = sign_document(KIND, revocation_issuer.make_snapshot(
        version=9, issued_at=now, expires=now + 3600), attacker)  # fmt: skip
    bad_pages = {  # name: (answer to /v1/revocations, snapshot)
        "forged": (_page(2, forged), b""),
        "truncated": (_page(2, unrevoke_v2[: len(unrevoke_v2) // 2]), b""),
        "rolled back": (_page(1, rolled_back), b""),
        "not JSON": ((200, b'{"v": 1, "version": 2, "deltas": [tr'), b""),
        "gone, older snapshot": ((410, b"{}"), empty_v1),
        "gone, forged snapshot": ((410, b"{}"), forged_snapshot),
    }
    conf = _evil_gate(
        tmp_path, keys_dir, url, extra=f'\n[revocation]\nfiles = ["{tmp_path / "v1.json"}"]\n'
    )
    async with open_gate(conf) as gate:
        assert gate.revocations.meta.version == 1
        for name, (answer, snapshot) in bad_pages.items():
            hub.revocations, hub.snapshot = answer, snapshot
            await _served(hub, "revocations")
            assert gate.revocations.meta.version == 1, name
            denied = await gate.lane.present(scan(revoked))
            assert denied is not None and denied.decision.reason is Reason.REVOKED, name
            fine = await gate.lane.present(scan(iss.ticket(event=1, zones=[1])))
            assert fine is not None and fine.decision.admitted, name
        assert hub.hits["snapshot"] >= 2
        hub.revocations = _page(2, unrevoke_v2)  # the genuine delta does get through
        await until(lambda: gate.revocations.meta.version == 2, what="genuine delta")
        admitted = await gate.lane.present(scan(revoked))
    assert admitted is not None and admitted.decision.admitted


def _revocation_key(text: str) -> bytes:
    from agent import tickets

    return tickets.parse(text).revocation_key


async def test_forged_truncated_and_rolled_back_trust_bundles_are_refused(
    evil: tuple[EvilHub, str], keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    hub, url = evil
    issuer.keys_init(tmp_path / "attacker", kid=66, events=[1])
    attacker = Issuer.load(tmp_path / "attacker")
    v2 = tmp_path / "trust-v2.json"
    v2.write_bytes(iss.trust_bundle(version=2))
    genuine_v3 = iss.trust_bundle(version=3, issuers=[iss.trust_entry(), attacker.trust_entry()])
    bad = {  # the attacker's key in a bundle signed by the attacker's root, cut, or an older one
        "forged": attacker.trust_bundle(
            version=3, issuers=[iss.trust_entry(), attacker.trust_entry()]
        ),
        "truncated": genuine_v3[:-40],
        "rolled back": (keys_dir / "trust.json").read_bytes(),
    }
    hub.trust = bad["rolled back"]
    conf = _evil_gate(tmp_path, keys_dir, url, bundle=v2)
    installed = conf.gate.state_dir / "trust.json"
    forged_ticket = attacker.ticket(event=1, zones=[1])
    async with open_gate(conf) as gate:
        assert gate.trust.version == 2
        for name, bundle in bad.items():
            hub.trust = bundle
            await _served(hub, "trust")
            assert gate.trust.version == 2 and installed.read_bytes() == v2.read_bytes(), name
            refused = await gate.lane.present(scan(forged_ticket))
            assert refused is not None and refused.decision.reason is Reason.UNKNOWN_KEY, name
            fine = await gate.lane.present(scan(iss.ticket(event=1, zones=[1])))
            assert fine is not None and fine.decision.admitted, name
        hub.trust = genuine_v3  # the root-signed one is installed
        await until(lambda: gate.trust.version == 3, what="genuine bundle")
