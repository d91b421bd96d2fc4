"""A pretix gate as its operators see it: the revocation version, health words, offline flags.

Real gates (open_gate with sim devices, real journal and lists) against the recorded pretix
stand-in on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.app import config, gate_commands
from agent.app.daemon import open_gate
from agent.app.status import StatusServer
from agent.errors import ConfigError
from agent.issuer import Issuer
from agent.model import Flag, Reason
from agent.ports import Scan
from agent.revocation import ListState, RevocationStore, secret_key
from drivers.sim import SimGate, SimScanner
from tests.conftest import WriteConfig
from tests.gateconf import gate_toml
from tests.pretix_server import EVENT, INIT_TOKEN, ORG, PretixServer, load, recorded, recorded_page

CASES = {c["name"]: c for c in load("tickets.json")}


def pretix_section(url: str) -> str:
    return (
        f'\n[pretix]\nurl = "{url}"\norganizer = "{ORG}"\nevent = "{EVENT}"\n'
        f'checkin_list = 11\ninit_token = "{INIT_TOKEN}"\ninterval_s = 3600\ntimeout_s = 2\n'
    )


def _revocation_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO
        and (r.name.startswith("agent.revocation") or "secrets" in r.getMessage())
    ]


async def test_revocation_version_moves_only_when_the_lists_change(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with PretixServer() as server:
        conf = config.load(write_config(extra=pretix_section(server.url)))
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            up = gate.upstream
            assert up is not None and await up.sync_once()
            first = gate.revocations.meta
            assert first.version >= 1 and len(gate.revocations.index) == 4
            caplog.clear()
            for _ in range(3):  # the cursor rows come back each round: no change
                assert await up.sync_once()
            assert gate.revocations.meta.version == first.version
            assert _revocation_lines(caplog) == []
            assert len(server.state.calls_to("/revokedsecrets/")) >= 4  # the rounds did ask

            server.state.revoked = recorded_page("revoked_secrets.json", "revoked_full_2")
            assert await up.sync_once()
            assert gate.revocations.meta.version == first.version + 1
            assert len(_revocation_lines(caplog)) == 2  # the store's line and the adapter's
            caplog.clear()
            assert await up.sync_once()
            assert gate.revocations.meta.version == first.version + 1
            assert _revocation_lines(caplog) == []
            revoked = CASES["revoked_after_regenerate"]["secret"]
            outcome = await gate.lane.present(Scan(revoked, "s", time.monotonic_ns()))
            assert outcome is not None and outcome.decision.reason == "revoked"


async def test_store_counts_a_change_of_state_not_a_repeated_row(tmp_path: Path) -> None:
    secret = CASES["valid_standard_1"]["secret"]
    async with await RevocationStore.open(tmp_path / "rev.db") as store:
        first = await store.apply_secrets(revoke=[secret], cursor={}, issued_at=100)
        again = await store.apply_secrets(
            revoke=[secret], unblock=[secret], cursor={}, issued_at=200
        )
        assert (first.version, again.version, again.issued_at) == (1, 1, 200)  # fresher, same
        blocked = await store.apply_secrets(block=[secret], cursor={}, issued_at=300)
        freed = await store.apply_secrets(unrevoke=[secret], unblock=[secret], cursor={})
        assert (blocked.version, freed.version) == (2, 3)
        assert store.status(secret_key(secret)) is ListState.NONE
    async with await RevocationStore.open(tmp_path / "rev.db") as reopened:
        assert reopened.meta.version == 3 and len(reopened.index) == 0


async def _status(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/status"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_pretix_offline_is_named_and_flags_admissions(write_config: WriteConfig) -> None:
    server = PretixServer()
    await server.__aenter__()
    try:
        conf = config.load(write_config(extra=pretix_section(server.url)))
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            status = StatusServer(gate, port=0)
            await status.start()
            try:
                assert gate.upstream is not None and await gate.upstream.sync_once()
                first = await gate.lane.present(Scan(CASES["valid_standard_1"]["secret"], "s", 0))
                assert first is not None and first.decision.admitted
                assert Flag.OFFLINE not in first.decision.flags
                up = await status.snapshot()  # (a served /status is a render shared for 0.25 s)
                assert up["upstream"]["kind"] == "pretix" and up["upstream"]["online"] is True
                assert not [r for r in (await status.health())[1] if "offline" in r]

                await server.__aexit__(None, None, None)  # the stand-in stops
                assert not await gate.upstream.sync_once()
                second = await gate.lane.present(
                    Scan(CASES["valid_standard_2"]["secret"], "s", 10**10)
                )
                assert second is not None and second.decision.admitted
                assert Flag.OFFLINE in second.decision.flags
                assert status.port is not None
                down = await _status(status.port)
                ready, reasons = await status.health()
            finally:
                await status.close()
            rows = await gate.journal.unsynced()
    finally:
        await server.__aexit__(None, None, None)
    assert down["upstream"]["kind"] == "pretix" and down["upstream"]["online"] is False
    assert "pretix offline" in down["health"]["reasons"]
    assert not ready and "pretix offline" in reasons
    assert not [r for r in reasons + down["health"]["reasons"] if "hub" in r]
    assert first.record is not None and second.record is not None
    assert (first.record.offline, second.record.offline) == (False, True)  # as journalled
    assert second.record.entry_id in [r.entry_id for r in rows]  # still waiting for pretix


PRETIX_ONLY = gate_toml(gate={"id": "gate-p", "zone": None})  # no keys: no [trust]


async def test_pretix_only_gate_needs_no_trust_section(tmp_path: Path, iss: Issuer) -> None:
    """No [trust], no keys: the event's keys come from pretix; a TK1 ticket is unknown_key."""
    tk1_text = iss.ticket(event=1, zones=[1])  # a good ticket, for a gate that trusts its key
    async with PretixServer() as server:
        (tmp_path / "gate").mkdir()  # beside no keys directory
        path = tmp_path / "gate" / "gate.toml"
        path.write_text(PRETIX_ONLY + pretix_section(server.url))
        conf = config.load(path)
        assert conf.trust is None and [p.name for p in path.parent.iterdir()] == ["gate.toml"]
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            assert gate.upstream is not None and await gate.upstream.sync_once()
            assert gate.checker.trust.bundle is not None  # pretix's event keys
            valid = await gate.lane.present(Scan(CASES["valid_standard_1"]["secret"], "s", 0))
            revoked = await gate.lane.present(
                Scan(CASES["revoked_after_regenerate"]["secret"], "s", 10**10)
            )
            assert await gate.upstream.sync_once()
            tk1 = await gate.lane.present(Scan(tk1_text, "s", 2 * 10**10))
    assert valid is not None and valid.decision.admitted, valid
    assert revoked is not None and revoked.decision.reason == "revoked"
    assert tk1 is not None and tk1.decision.reason == "unknown_key"
    assert len(server.state.redeem_calls()) == 1


def test_gate_with_neither_trust_nor_pretix_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(PRETIX_ONLY)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: missing required section [trust]")
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].endswith(message), done.stderr


def test_pretix_gate_without_trust_refuses_signed_list_files(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    extra = pretix_section("http://127.0.0.1:9") + '\n[revocation]\nfiles = ["rev.json"]\n'
    path.write_text(PRETIX_ONLY + extra)
    with pytest.raises(ConfigError, match=r"\[revocation\] files: signed lists need \[trust\]"):
        config.load(path)


async def test_status_says_pretix_s_security_alerts_and_refusals(write_config: WriteConfig) -> None:
    """Found in an integrator's trial: pretix's "already redeemed" for an entry the gate let in
    was a SECURITY ALERT log line and a count in /status only; `gate-agent status` said
    nothing. It says how many alerts and rows pretix refused for good."""
    refusal = recorded("second_entry_new_nonce")["response"]
    secret = CASES["valid_standard_1"]["secret"]
    async with PretixServer() as server:
        server.state.redeem_answers[secret] = [(refusal["status"], refusal["body"])]
        conf = config.load(write_config(extra=pretix_section(server.url)))
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            status = StatusServer(gate, port=0)
            await status.start()
            try:
                assert gate.upstream is not None and await gate.upstream.sync_once()
                admitted = await gate.lane.present(Scan(secret, "s", 0))
                assert admitted is not None and admitted.decision.admitted
                await gate.upstream.sync_once()
                assert status.port is not None
                text = gate_commands.summary(await _status(status.port))  # as `status` gets it
                url = f"http://127.0.0.1:{status.port}/metrics"
                async with aiohttp.ClientSession() as session, session.get(url) as resp:
                    metrics = await resp.text()
            finally:
                await status.close()
    assert "  1 security alert (gate-agent events --alerts)\n" in text, text
    assert "\ngate_security_alerts 1.0\n" in metrics, metrics  # a trial: no counter to watch
    assert "  1 row refused by pretix for good\n" in text, text


async def test_a_pretix_ticket_before_the_event_s_keys_says_so(tmp_path: Path) -> None:
    """Found in an integrator's trial: before its first answer from pretix, a pretix-only gate
    denied a pretix ticket 'no trust bundle installed', which points at TK1 trust."""
    async with PretixServer() as server:
        path = tmp_path / "gate.toml"
        path.write_text(PRETIX_ONLY + pretix_section(server.url))
        conf = config.load(path)
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            denied = await gate.lane.present(Scan(CASES["valid_standard_1"]["secret"], "s", 0))
    assert denied is not None and denied.decision.reason is Reason.UNKNOWN_KEY
    assert denied.decision.detail == "the event's keys not yet from pretix"


async def test_a_gate_started_while_pretix_is_unreachable_decides_with_what_it_had(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in an integrator's trial: the event's keys and the list's settings lived in memory
    only, so a gate restarted during an outage (a power cut with the internet down) refused
    every ticket, "the event's keys not yet from pretix": the whole queue to the box office.
    They are kept (pretix_event.json) and used until pretix answers: offline admissions, and
    the list's product limit (the VIP lounge's list here) still applies."""
    path = tmp_path / "gate.toml"
    async with PretixServer() as server:
        path.write_text(PRETIX_ONLY + pretix_section(server.url).replace("= 11", "= 13"))
        conf = config.load(path)
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            assert gate.upstream is not None and await gate.upstream.sync_once()
            downloaded = gate.upstream.policy
    saved = conf.gate.state_dir / "pretix_event.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    # `check --config` explains a ticket with them too (it said "the event's keys not yet from
    # pretix" for tickets the gate admits)
    checked = [await asyncio.to_thread(_check, path, CASES[name]["secret"])
               for name in ("valid_vip_1", "valid_standard_1")]  # fmt: skip
    assert checked[0].returncode == 0, checked[0].stdout + checked[0].stderr
    assert checked[0].stdout.splitlines()[-1].startswith("verdict:   ADMIT")
    assert checked[1].returncode == 1 and "(wrong_product" in checked[1].stdout
    # pretix is gone (the stand-in stopped); the gate starts again
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
        assert gate.upstream is not None and not await gate.upstream.sync_once()
        assert gate.upstream.policy == downloaded and gate.lane.checker.policy == downloaded
        got = [
            await gate.lane.present(Scan(CASES[name]["secret"], "s", i * 10**11))
            for i, name in enumerate(("valid_vip_1", "valid_standard_1"))
        ]
    vip, standard = (o.decision for o in got if o is not None)
    assert vip.admitted and Flag.OFFLINE in vip.flags
    assert standard.reason is Reason.WRONG_PRODUCT

    # Keys that admit tickets, not root-signed: a file others may write is not used (a review).
    saved.chmod(0o664)
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
        denied = await gate.lane.present(Scan(CASES["valid_vip_1"]["secret"], "s", 3 * 10**11))
    assert denied is not None and denied.decision.reason is Reason.UNKNOWN_KEY
    # One kept for another list is not used, and says so; `check` explains without a kept file
    # it cannot read, as the daemon runs without it (a review: it stopped, exit 78).
    record = json.loads(saved.read_text())
    saved.write_text(json.dumps({**record, "scope": record["scope"] + "9"}))
    saved.chmod(0o600)
    with caplog.at_level(logging.WARNING, "sync.pretix_state"):
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)):
            pass
    assert "not this gate's" in caplog.text
    saved.write_text('{"scope": ')
    unreadable = await asyncio.to_thread(_check, path, CASES["valid_vip_1"]["secret"])
    assert unreadable.returncode == 1, unreadable.stderr
    assert "note: the pretix event's kept keys not used" in unreadable.stderr


def _check(config_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(config_path), text],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
