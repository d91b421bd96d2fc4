"""The gate's hub client end to end: real hub subprocesses, real gates with sim drivers.

Each gate has its own state directory and config; the hub is `gate-agent hub` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path

import msgspec
import pytest

from agent import issuer
from agent.app import config, gate_commands
from agent.app.daemon import Gate, open_gate
from agent.app.status import StatusServer
from agent.errors import ConfigError
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.model import Decision, Flag, Reason, Verdict
from agent.revocation import KIND
from agent.revocation_issuer import make_delta
from agent.signed import sign_document
from sync import hub_admin, hub_config, protocol
from sync.client import HubClient
from sync.hub_rules import KEEP_DELTAS
from sync.protocol import EntryWire
from tests.hubgate import get_json, post_json, scan, write_gate
from tests.hubproc import HubProcess, HubSetup, add_token, hub_cli, make_tls, write_hub_config
from tests.polling import until


def _client(gate: Gate) -> HubClient:
    assert gate.hub is not None
    return gate.hub


async def _present(gate: Gate, text: str) -> Outcome:
    outcome = await gate.lane.present(scan(text))
    assert outcome is not None and outcome.record is not None
    return outcome


def _gate_conf(
    tmp: Path, keys: Path, setup: HubSetup, gate_id: str, name: str, *, hub: str = ""
) -> config.Config:
    token = add_token(setup, gate_id=gate_id, name=name)
    path = write_gate(tmp / gate_id, keys, gate_id=gate_id, name=name, url=setup.url, token=token,
                      hub_extra=hub)  # fmt: skip
    return config.load(path)


async def test_admission_at_gate_a_is_refused_at_gate_b(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    conf_a = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A")
    conf_b = _gate_conf(tmp_path, keys_dir, setup, "gate-b", "Gate B")
    text = iss.ticket(event=1, zones=[1])
    with HubProcess(setup):
        async with open_gate(conf_a) as gate_a, open_gate(conf_b) as gate_b:
            hub_a, hub_b = _client(gate_a), _client(gate_b)
            await until(lambda: hub_a.online and hub_b.online, what="both gates online")
            first = await _present(gate_a, text)
            assert first.decision.admitted and Flag.OFFLINE not in first.decision.flags
            assert first.record is not None and not first.record.offline
            ref = first.record.ticket_ref

            async def learnt() -> bool:
                return any(h.peer for h in await gate_b.journal.history(ref))

            await until(learnt, what="gate B learns the admission at gate A")
            second = await _present(gate_b, text)
            assert second.decision.reason is Reason.ALREADY_USED
            assert "Gate A" in second.decision.detail

            async def all_synced() -> bool:
                return not await gate_a.journal.unsynced() and not await gate_b.journal.unsynced()

            await until(all_synced, what="both journals acknowledged")
            assert hub_a.status()["upload"] == "ok" and hub_a.status()["outbox_depth"] == 0
        cursor = (conf_b.gate.state_dir / "hub_sync.json").read_text()
        assert '"feed_cursor": 1' in cursor  # B's feed position survives a restart


async def test_offline_flag_follows_the_hub(keys_dir: Path, iss: Issuer, tmp_path: Path) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    conf = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A")
    texts = [iss.ticket(event=1, zones=[1]) for _ in range(3)]
    hub = HubProcess(setup)
    try:
        async with open_gate(conf) as gate:
            link = _client(gate)
            down = await _present(gate, texts[0])
            assert down.decision.admitted and Flag.OFFLINE in down.decision.flags
            assert down.record is not None and down.record.offline
            await asyncio.to_thread(hub.start)
            await until(lambda: link.online, what="online after the hub starts")
            up = await _present(gate, texts[1])
            assert up.decision.admitted and Flag.OFFLINE not in up.decision.flags
            assert up.record is not None and not up.record.offline
            await asyncio.to_thread(hub.kill9)
            await until(lambda: not link.online, what="offline after kill -9 of the hub")
            again = await _present(gate, texts[2])
            assert again.decision.admitted and Flag.OFFLINE in again.decision.flags
            await asyncio.to_thread(hub.start)

            async def drained() -> bool:
                return not await gate.journal.unsynced()

            await until(drained, what="the offline rows uploaded after the restart")
            rows = await gate.journal.tail(10)
        assert [r.offline for r in rows] == [True, False, True]
        assert [Flag.OFFLINE in r.flags for r in rows] == [True, False, True]
    finally:
        hub.kill9()


@pytest.mark.slow
async def test_after_an_outage_gates_are_online_only_with_a_live_feed_and_rejoin_at_once(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    """Found trying the product: after the hub was down a minute, both gates said online (their
    heartbeat got through) while their feeds still waited out a backoff of up to retry_max_s,
    so one ticket was admitted at both, unflagged. Online now needs a live feed, and a task
    backing off from an unreachable hub tries again as soon as any request is answered."""
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    slow_retries = "retry_max_s = 120\n"
    conf_a = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A", hub=slow_retries)
    conf_b = _gate_conf(tmp_path, keys_dir, setup, "gate-b", "Gate B", hub=slow_retries)
    text = iss.ticket(event=1, zones=[1])
    hub = HubProcess(setup)
    try:
        await asyncio.to_thread(hub.start)
        async with open_gate(conf_a) as gate_a, open_gate(conf_b) as gate_b:
            links = _client(gate_a), _client(gate_b)
            await until(lambda: all(link.online for link in links), what="both gates online")
            await asyncio.to_thread(hub.kill9)
            await until(lambda: not any(link.online for link in links), what="both offline")
            await asyncio.sleep(20)  # the outage itself: each task's backoff grows toward 120 s
            back = time.monotonic()
            await asyncio.to_thread(hub.start)
            await until(lambda: all(link.online for link in links), 30, "both online again")
            for link in links:
                lag = link.status()["feed_lag_s"]
                assert lag is not None and lag <= time.monotonic() - back, "online, feed not live"
            first = await _present(gate_a, text)
            assert first.decision.admitted and Flag.OFFLINE not in first.decision.flags
            ref = first.record.ticket_ref if first.record is not None else ""

            async def learnt() -> bool:
                return any(h.peer for h in await gate_b.journal.history(ref))

            await until(learnt, 5, "gate B learns it at once, not after a backoff")
            assert (await _present(gate_b, text)).decision.reason is Reason.ALREADY_USED
    finally:
        hub.kill9()


async def test_the_feed_is_read_again_after_the_hub_lost_its_store(
    keys_dir: Path, iss: Issuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    conf_a = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A")
    with HubProcess(setup):
        async with open_gate(conf_a) as gate_a, open_gate(_reconf(tmp_path, setup)) as gate_b:
            for _ in range(3):
                await _present(gate_a, iss.ticket(event=1, zones=[1]))
            await until(lambda: _client(gate_b).status()["feed_cursor"] == 3, what="B reads 3")
            saved = tmp_path / "gate-b/state/hub_sync.json"  # written on a worker thread
            await until(
                lambda: saved.exists() and '"feed_cursor": 3' in saved.read_text(),
                what="B saves cursor 3",
            )
    for db in (setup.dir / "state").glob("hub.db*"):  # a new, empty store
        db.unlink()
    text = iss.ticket(event=1, zones=[1])
    with HubProcess(setup):
        conf_c = _gate_conf(tmp_path, keys_dir, setup, "gate-c", "Gate C")
        async with open_gate(_reconf(tmp_path, setup)) as gate_b, open_gate(conf_c) as gate_c:
            admitted = (await _present(gate_c, text)).record
            assert admitted is not None
            ref = admitted.ticket_ref

            async def learnt() -> bool:
                return any(h.peer for h in await gate_b.journal.history(ref))

            await until(learnt, what="gate B learns gate C's admission at the new hub")
            assert (await _present(gate_b, text)).decision.reason is Reason.ALREADY_USED
    assert any("hub feed restarted" in r.getMessage() for r in caplog.records)


async def _offline_rows(conf: config.Config, iss: Issuer, n: int) -> EntryWire:
    """Admit ``n`` tickets with the hub down (the rows stay in the outbox); returns the first
    row with another body, as a copy of the gate's token would upload it."""
    async with open_gate(conf) as gate:
        for _ in range(n):
            await _present(gate, iss.ticket(event=1, zones=[1]))
        first = (await gate.journal.unsynced())[0]
    return msgspec.structs.replace(EntryWire.from_record(first), detail="not what the gate wrote")


async def _squat(setup: HubSetup, conf: config.Config, forged: EntryWire) -> None:
    """Upload ``forged`` with the gate's token: its own upload of that row is then a 409."""
    token = conf.hub.token if conf.hub is not None else ""
    status, _ = await asyncio.to_thread(
        post_json, f"{setup.url}/v1/gates/gate-a/entries:batch", str(token),
        protocol.encode(protocol.BatchUpload("gate-a", (forged,))),
    )  # fmt: skip
    assert status == 200


def _reconf(tmp: Path, setup: HubSetup) -> config.Config:
    """Gate B with a new token, its state (and feed cursor) kept."""
    path = write_gate(tmp / "gate-b", setup.keys, gate_id="gate-b", name="Gate B", url=setup.url,
                      token=add_token(setup, gate_id="gate-b"))  # fmt: skip
    return config.load(path)


async def test_heartbeat_tells_the_hub_the_gates_outbox_list_and_clock(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    console = add_token(setup, console="ops")
    conf = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A", hub="retry_max_s = 0.5\n")
    forged = await _offline_rows(conf, iss, 3)
    with HubProcess(setup):
        # The hub already holds another body under the first row's id: it refuses the batch
        # (409), so the outbox stays at 3 for as long as the test looks.
        await _squat(setup, conf, forged)
        async with open_gate(conf) as gate:
            link = _client(gate)
            await until(lambda: link.status()["upload"] == "conflict", what="409")
            await until(lambda: gate.revocations.meta.version >= 1, what="the hub's list")

            async def reported() -> bool:
                view = await asyncio.to_thread(get_json, f"{setup.url}/v1/gates", console)
                rows = [g for g in view["gates"] if g["gate_id"] == "gate-a"]
                return bool(rows) and rows[0]["revocation_version"] == gate.revocations.meta.version

            await until(reported, what="a heartbeat with the installed list")
            view = await asyncio.to_thread(get_json, f"{setup.url}/v1/gates", console)
    (row,) = view["gates"]
    assert row["gate_name"] == "Gate A" and row["online"] is True
    assert row["outbox_depth"] == 3 and row["clock_synced"] is True
    assert row["revocation_version"] >= 1


async def test_a_conflict_stays_on_the_gates_health_while_the_link_is_down(
    keys_dir: Path, iss: Issuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A security trial: a gate in conflict whose link was then cut showed only "hub offline"
    (its upload went to "unavailable"), hiding the "tell security" line until the link healed.
    The conflict holds until an upload goes through: both lines show while the link is down."""
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    conf = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A", hub="retry_max_s = 0.5\n")
    forged = await _offline_rows(conf, iss, 2)
    security = "hub refuses this gate's rows from gate_seq 1: their numbers hold other rows"
    async with open_gate(conf) as gate:
        link = _client(gate)
        with HubProcess(setup):
            await _squat(setup, conf, forged)
            await until(lambda: link.status()["upload"] == "conflict", what="409")
            reasons = (await StatusServer(gate).health())[1]
            assert any(security in r for r in reasons) and "hub offline" not in reasons, reasons
            assert link.status()["reachable"] is True
            caplog.set_level(logging.DEBUG, logger="sync.client")  # a retry's failure is quiet
            seen = len(caplog.records)

        async def cut() -> bool:
            return "hub offline" in (await StatusServer(gate).health())[1]

        await until(cut, what="the link's loss on the gate's health")

        def upload_failed() -> bool:  # its retry, which once turned "conflict" to "unavailable"
            return any(r.getMessage().startswith("hub upload: ") for r in caplog.records[seen:])

        await until(upload_failed, what="the uploader's retry failed too")
        reasons = (await StatusServer(gate).health())[1]
        assert any(security in r for r in reasons), reasons
        assert link.status()["upload"] == "conflict" and link.status()["conflict_from_seq"] == 1
        text = gate_commands.summary(await StatusServer(gate).status())
        (line,) = [ln for ln in text.splitlines() if ln.startswith("  hub ")]
        assert line.startswith(
            "  hub UPLOADS REFUSED (conflict from gate_seq 1: admissions shared as claims, exits"
            " and annulments held), and OFFLINE"
        ), line


async def test_a_long_or_odd_detail_does_not_block_the_outbox(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    conf = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A")
    with HubProcess(setup):
        async with open_gate(conf) as gate:
            await until(lambda: _client(gate).online, what="online")
            odd = Decision(Verdict.DENY, Reason.INVALID_FORMAT, "x" * 300 + "\tend\n")
            rec = await gate.journal.record(ticket_ref="raw:0123", kind="attempt", decision=odd,
                                            lane=conf.lane.name, rev_version=0, offline=False)  # fmt: skip
            await _present(gate, iss.ticket(event=1, zones=[1]))

            async def drained() -> bool:
                return not await gate.journal.unsynced()

            await until(drained, what="both rows acknowledged")
            assert _client(gate).status()["upload"] == "ok"
    wire = EntryWire.from_record(rec)
    assert len(wire.detail) == protocol.MAX_DETAIL and wire.detail.isprintable()
    assert wire == EntryWire.from_record(rec)  # a retried batch carries the same body


async def test_gate_without_hub_keeps_offline_rows_without_the_flag(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    conf = config.load(write_gate(tmp_path / "g", keys_dir, gate_id="g", name="G", url=None))
    async with open_gate(conf) as gate:
        assert gate.hub is None
        outcome = await _present(gate, iss.ticket(event=1, zones=[1]))
    assert outcome.decision.admitted and Flag.OFFLINE not in outcome.decision.flags
    assert outcome.record is not None and outcome.record.offline


async def test_revocation_issued_at_the_hub_reaches_the_gate(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    conf = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A")
    text, other = iss.ticket(event=1, zones=[1]), iss.ticket(event=1, zones=[1])
    with HubProcess(setup):
        async with open_gate(conf) as gate:
            await until(lambda: _client(gate).online, what="online")
            done = await asyncio.to_thread(hub_cli, setup, "revoke", text)
            assert done.returncode == 0, done.stderr
            issued = re.search(r"revocation list version (\d+)", done.stdout)
            assert issued is not None, done.stdout
            version = int(issued[1])
            await until(lambda: gate.revocations.meta.version == version, what="delta installed")
            revoked = await _present(gate, text)
            assert revoked.decision.reason is Reason.REVOKED
            assert (await _present(gate, other)).decision.admitted
            assert _client(gate).status()["revocation_version"] == version


async def test_pruned_deltas_lead_to_the_signed_snapshot(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    hub_conf = hub_config.load(setup.config)
    list_key = hub_admin.load_list_key(hub_conf)
    keys = [os.urandom(16) for _ in range(KEEP_DELTAS + 1)]
    now = int(time.time())
    async with hub_admin.opened_store(hub_conf, create=True) as store:
        state = await store.revocation_state()
        for key in keys:  # one key per delta: the first delta is pruned
            content = make_delta(from_version=state.version, version=state.version + 1,
                                 issued_at=now, expires=now + 3600, revoke=[key])  # fmt: skip
            state = hub_admin.next_state(state, "revoke", frozenset([key]))
            await store.add_revocation_delta(state.version, sign_document(KIND, content, list_key),
                                             state)  # fmt: skip
        assert await store.revocation_deltas(0) is None
    conf = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A")
    with HubProcess(setup):
        async with open_gate(conf) as gate:
            await until(lambda: gate.revocations.meta.version >= len(keys), what="snapshot")
            first = await _present(gate, iss.ticket(event=1, zones=[1], token_id=keys[0]))
            last = await _present(gate, iss.ticket(event=1, zones=[1], token_id=keys[-1]))
    assert first.decision.reason is Reason.REVOKED and last.decision.reason is Reason.REVOKED


async def test_newer_trust_bundle_from_the_hub_is_installed(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    issuer.keys_init(tmp_path / "k2", kid=8, events=[1])
    second = Issuer.load(tmp_path / "k2")
    bundle = tmp_path / "trust-v2.json"
    bundle.write_bytes(
        iss.trust_bundle(version=2, issuers=[iss.trust_entry(), second.trust_entry()])
    )
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, extra=f'trust_bundle = "{bundle}"\n')
    conf = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A")
    text = second.ticket(event=1, zones=[1])
    async with open_gate(conf) as gate:
        before = await _present(gate, text)
        assert before.decision.reason is Reason.UNKNOWN_KEY
        with HubProcess(setup):
            await until(lambda: gate.trust.version == 2, what="trust v2 installed")
            after = await _present(gate, iss.ticket(event=1, zones=[1]))
            new_key = await _present(gate, text)
    assert after.decision.admitted and new_key.decision.admitted
    assert (conf.gate.state_dir / "trust.json").read_bytes() == bundle.read_bytes()


@pytest.mark.parametrize("cn", ["gate-a", "gate-b", None])
async def test_mtls_needs_the_gates_own_certificate(
    cn: str | None, keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path / "tls", client_cns=("gate-a", "gate-b"))
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, tls=tls)
    token = add_token(setup, gate_id="gate-a")
    hub = f'ca = "{tls.ca}"\n'
    if cn is not None:
        hub += f'cert = "{tmp_path / "tls" / cn}.crt"\nkey = "{tmp_path / "tls" / cn}.key"\n'
    path = write_gate(tmp_path / "gate-a", keys_dir, gate_id="gate-a", name="Gate A",
                      url=setup.url, token=token, hub_extra=hub + "retry_max_s = 0.5\n")  # fmt: skip
    with HubProcess(setup):
        async with open_gate(config.load(path)) as gate:
            link = _client(gate)
            await _present(gate, iss.ticket(event=1, zones=[1]))
            if cn == "gate-a":
                await until(lambda: link.status()["upload"] == "ok", what="uploaded over mTLS")
                assert link.online
            else:
                await until(lambda: link.status()["upload"] == "unauthorized", what="refused")
                assert "403" in str(link.status()["last_error"]) and not link.online
                assert len(await gate.journal.unsynced()) == 1


async def test_a_revoked_token_takes_the_gate_offline_at_once_and_says_why(
    keys_dir: Path, tmp_path: Path
) -> None:
    """Found trying the product: with its token revoked the gate stayed online for
    offline_after_s (every request got 401), then said "hub offline", not why."""
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    slow = "offline_after_s = 120\nretry_max_s = 0.5\n"  # online would outlast the test
    conf = _gate_conf(tmp_path, keys_dir, setup, "gate-a", "Gate A", hub=slow)
    with HubProcess(setup):
        async with open_gate(conf) as gate:
            link = _client(gate)
            await until(lambda: link.online, what="online")
            assert link.status()["refused"] is None
            done = await asyncio.to_thread(hub_cli, setup, "token", "--revoke-gate", "gate-a")
            assert done.returncode == 0, done.stderr
            await until(lambda: link.status()["refused"] == "token", what="the refusal seen")
            assert not link.online and "401" in str(link.status()["last_error"])
            status = StatusServer(gate, port=0)
            ready, reasons = await status.health()
            assert not ready and "hub refuses this gate's token" in reasons, reasons
            assert "hub offline" not in reasons


# --- [hub] config -------------------------------------------------------------------------------


def _hub_conf(tmp_path: Path, keys: Path, hub: str, *, extra: str = "") -> Path:
    path = write_gate(tmp_path, keys, gate_id="gate-a", name="Gate A", url=None, extra=extra)
    path.write_text(path.read_text() + "\n[hub]\n" + hub)
    return path


@pytest.mark.parametrize(
    ("hub", "expected"),
    [
        (
            'url = "http://h"\ntoken = "t"\ntoken_file = "tok"\n',
            "exactly one of token and token_file",
        ),
        ('url = "http://h"\n', "exactly one of token and token_file"),
        ('url = "ftp://h"\ntoken = "t"\n', "[hub] url: expected http(s)://host[:port][/prefix]"),
        ('url = "http://h/?a=1"\ntoken = "t"\n', "[hub] url"),
        ('url = "http://h"\ntoken = "t"\nca = "ca.pem"\n', "need an https:// url"),
        ('url = "https://h"\ntoken = "t"\ncert = "gate.toml"\n', "cert and key"),
        ('url = "https://h"\ntoken = "t"\nca = "missing.pem"\n', "[hub] ca"),
        ('url = "http://h"\ntoken = "t"\nbatch_size = 501\n', "[hub] batch_size: expected 1-500"),
        ('url = "http://h"\ntoken = "t"\nwait_s = 31\n', "[hub] wait_s"),
        ('url = "http://h"\ntoken = "t"\nheartbeat_s = 40\n', "offline_after_s: expected more"),
        ('url = "http://h"\ntoken = "t"\ncolour = "red"\n', "[hub] unknown key 'colour'"),
        ('url = "http://h"\ntoken = "two words"\n', "[hub] token: expected 1-512 printable"),
    ],
)
def test_hub_config_errors_name_the_key(
    tmp_path: Path, keys_dir: Path, hub: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(_hub_conf(tmp_path, keys_dir, hub))
    assert expected in str(err.value) and str(tmp_path) in str(err.value)
    assert "two words" not in str(err.value)


def test_hub_and_pretix_together_is_an_error(tmp_path: Path, keys_dir: Path) -> None:
    pretix = '\n[pretix]\nurl = "http://p"\norganizer = "o"\nevent = "e"\ncheckin_list = 1\n'
    path = _hub_conf(tmp_path, keys_dir, 'url = "http://h"\ntoken = "t"\n' + pretix)
    with pytest.raises(ConfigError, match=r"\[hub\] and \[pretix\]"):
        config.load(path)


def test_hub_needs_url_safe_gate_and_venue_ids(tmp_path: Path, keys_dir: Path) -> None:
    path = _hub_conf(tmp_path, keys_dir, 'url = "http://h"\ntoken = "t"\n')
    path.write_text(path.read_text().replace('venue = "venue-1"', 'venue = "venue one"'))
    with pytest.raises(ConfigError, match=r"\[gate\] venue"):
        config.load(path)


def test_token_file_is_read_and_must_be_private(tmp_path: Path, keys_dir: Path) -> None:
    secret = "s3cr3t-token-value"
    (tmp_path / "hub.token").write_text(secret + "\n")
    path = _hub_conf(tmp_path, keys_dir, 'url = "https://h"\ntoken_file = "hub.token"\n')
    os.chmod(tmp_path / "hub.token", 0o640)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        config.load(path)
    assert secret not in str(err.value)
    os.chmod(tmp_path / "hub.token", 0o600)
    conf = config.load(path)
    assert conf.hub is not None and conf.hub.token == secret
    assert secret not in repr(conf)


def test_a_token_of_the_wrong_type_is_not_echoed(tmp_path: Path, keys_dir: Path) -> None:
    with pytest.raises(ConfigError, match="got a value of type int") as err:
        config.load(_hub_conf(tmp_path, keys_dir, 'url = "http://h"\ntoken = 987654321\n'))
    assert "987654321" not in str(err.value)
