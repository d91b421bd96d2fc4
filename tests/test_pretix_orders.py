"""A pretix gate refuses the tickets of orders that do not admit, as pretix's own check-in does:
not paid (pending, e.g. after a chargeback; waiting for approval), cancelled or expired, or the
position cancelled; and admits them again once the order is paid.

Found in a review: the orders' status was never downloaded, so a ticket whose order went back to
pending after its payment was charged back was admitted offline, and its check-in then forced
into pretix. Real gates (open_gate, sim devices, real journal and lists) against the recorded
pretix stand-in on 127.0.0.1; tests/test_pretix_real_ops.py plays the same against a real pretix.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent import issuer
from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.clock import Assume, Clock
from agent.issuer import Issuer
from agent.journal import Journal
from agent.model import Decision, Reason, Verdict
from agent.ports import Scan
from agent.redact import pretix_short_id
from agent.revocation import KIND, ListState, RevocationStore, order_key
from agent.revocation_issuer import make_snapshot
from agent.rules import STAFF_TEXT
from agent.signed import sign_document
from drivers.sim import SimGate, SimScanner
from sync import pretix_wire as wire
from tests.conftest import WriteConfig
from tests.pretix_server import API_TOKEN, EVENT, INIT_TOKEN, ORG, FakePretix, PretixServer, load
from tests.test_pretix_sync import T0, Wall, checkin, make_upstream

CASES = {c["name"]: c for c in load("tickets.json")}
_mono = itertools.count(1)
LATER = 4e9  # an order modified after every cursor


def secret(name: str) -> str:
    value: str = CASES[name]["secret"]
    return value


def position(pid: int, name: str, **fields: Any) -> dict[str, Any]:
    return {"id": pid, "secret": secret(name), "checkins": [], **fields}


def ms(t: float) -> float:
    """``t`` as pretix's ISO form carries it (milliseconds)."""
    return wire.parse_iso(wire.iso(t))


async def reason(gate: Gate, name: str) -> Reason:
    """The reason the gate gives for ``name``'s ticket (scans far apart: never a repeat)."""
    outcome = await gate.lane.present(Scan(secret(name), "s", next(_mono) * 10**11))
    assert outcome is not None
    return outcome.decision.reason


def pretix_section(url: str) -> str:
    return (
        f'\n[pretix]\nurl = "{url}"\norganizer = "{ORG}"\nevent = "{EVENT}"\n'
        f'checkin_list = 11\ninit_token = "{INIT_TOKEN}"\ninterval_s = 3600\n'
    )


async def test_tickets_of_orders_not_paid_or_cancelled_are_refused_until_paid(
    write_config: WriteConfig,
) -> None:
    fake = FakePretix()
    fake.positions = [
        (0, position(1, "valid_standard_1")),  # paid
        (0, position(2, "valid_standard_2")),  # pending after a chargeback
        (0, position(3, "valid_standard_3")),  # expired (never paid)
        (0, position(4, "valid_variation_1")),  # the order cancelled
        (0, position(5, "valid_variation_2", canceled=True)),  # one position of it cancelled
        (0, position(6, "valid_vip_1")),  # pending, but valid while pending
        (0, position(7, "valid_vip_2")),  # pending, valid while pending, waiting for approval
    ]
    fake.orders = {
        secret("valid_standard_2"): {"status": "n"},
        secret("valid_standard_3"): {"status": "e"},
        secret("valid_variation_1"): {"status": "c"},
        secret("valid_vip_1"): {"status": "n", "valid_if_pending": True},
        secret("valid_vip_2"): {"status": "n", "valid_if_pending": True, "require_approval": True},
    }
    async with PretixServer(fake) as server:
        conf = config.load(write_config(extra=pretix_section(server.url)))
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            assert gate.upstream is not None and await gate.upstream.sync_once()
            (orders,) = fake.calls_to("/orders/")
            assert orders.query["include_canceled_positions"] == "true"
            got = {
                name: await reason(gate, name)
                for name in ("valid_standard_1", "valid_standard_2", "valid_standard_3",
                             "valid_variation_1", "valid_variation_2", "valid_vip_1",
                             "valid_vip_2")
            }  # fmt: skip
            assert got == {
                "valid_standard_1": Reason.OK,
                "valid_standard_2": Reason.UNPAID,
                "valid_standard_3": Reason.CANCELED,
                "valid_variation_1": Reason.CANCELED,
                "valid_variation_2": Reason.CANCELED,
                "valid_vip_1": Reason.OK,
                "valid_vip_2": Reason.UNAPPROVED,
            }
            # Paid after all (the chargeback disputed), and the paid one charged back: the next
            # round turns both round.
            fake.orders[secret("valid_standard_2")] = {"status": "p"}
            fake.orders[secret("valid_standard_1")] = {"status": "n"}
            fake.positions[:2] = [(LATER, p) for _, p in fake.positions[:2]]
            assert await gate.upstream.sync_once()
            assert await reason(gate, "valid_standard_2") is Reason.OK
            assert await reason(gate, "valid_standard_1") is Reason.UNPAID
            assert await gate.upstream.sync_once()  # uploads the attempts
    # Refusals reach pretix as its own failed check-in reasons.
    failed = {
        c.body["raw_barcode"]: c.body["error_reason"] for c in fake.calls_to("/failed_checkins/")
    }
    assert failed == {
        secret("valid_standard_2"): "unpaid",
        secret("valid_standard_3"): "canceled",
        secret("valid_variation_1"): "canceled",
        secret("valid_variation_2"): "canceled",
        secret("valid_vip_2"): "unapproved",
        secret("valid_standard_1"): "unpaid",
    }
    assert STAFF_TEXT[Reason.UNPAID] == "Order not paid - send to the box office"
    assert STAFF_TEXT[Reason.CANCELED] == "Order cancelled - send to the box office"


async def test_an_admission_whose_order_no_longer_admits_is_an_alert_once_learnt(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in an integrator's trial: a gate admitted a ticket whose order had been cancelled
    meanwhile (offline, or between two rounds), pretix took the forced check-in, and nothing
    said so. Once the order's state is learnt, each entry of this gate still standing for it is
    an alert, unless pretix dates the cancellation clearly after the entry (the holder came in,
    then the order was refunded). pretix dates a revocation and a cancellation only; a date that
    no server shows, or after pretix listed it (a review: year 1 broke the round, year 2199 hid
    the alert), is no date."""
    names = ("valid_standard_1", "valid_standard_2", "valid_standard_3", "valid_variation_1",
             "valid_variation_2", "valid_vip_1", "valid_same_order_1", "valid_same_order_2",
             "regenerated_new_secret")  # fmt: skip
    fake = FakePretix()
    fake.positions = [(0, position(pid, name)) for pid, name in enumerate(names, 1)]
    elsewhere = checkin(71, 2, wire.iso(time.time() - 60))  # admitted by another device only
    fake.positions.append((0, position(7, "valid_vip_2", checkins=[elsewhere])))
    async with PretixServer(fake) as server:
        conf = config.load(write_config(extra=pretix_section(server.url), passage_timeout_s=0.2))
        sim = SimGate(passage_ms=1, plan=[True, True, True, False, *[True] * 5])
        async with open_gate(conf, scanner=SimScanner(), gate_io=sim) as gate:
            assert gate.upstream is not None and await gate.upstream.sync_once()
            seen = await gate.journal.history(wire.PRETIX_REF + secret("valid_vip_2"))
            assert [(h.kind, h.peer) for h in seen] == [("entry", True)]
            before = time.time()
            assert [await reason(gate, name) for name in names] == [Reason.OK] * len(names)
            after = time.time()
            early, late = ms(before - 600), ms(after + 30)
            cancelled = {
                "valid_standard_1": early,  # before the entries: an alert
                "valid_standard_2": ms(after + 3600),  # an hour after: the holder was inside
                "valid_variation_1": early,  # admitted, nobody passed: annulled
                "valid_vip_1": late,  # within the two clocks' margin: an alert
            }
            fake.orders = {
                secret(name): {"status": "c", "cancellation_date": wire.iso(at)}
                for name, at in cancelled.items()
            }
            # Revoked (pretix revokes the printed secret as it cancels an order or issues the
            # ticket anew): dated by the revocation.
            fake.revoked["results"].append(
                {"id": 9001, "secret": secret("valid_same_order_1"), "created": wire.iso(early)}
            )
            fake.orders[secret("valid_same_order_2")] = {  # hostile: a year no clock shows
                "status": "c", "cancellation_date": "0001-01-01T00:00:00+01:00"}  # fmt: skip
            fake.orders[secret("regenerated_new_secret")] = {  # after pretix listed it: no such time
                "status": "c", "cancellation_date": wire.iso(after + 7300)}  # fmt: skip
            fake.now = after + 7200  # the round comes two hours after the entries
            fake.orders[secret("valid_standard_3")] = {"status": "n"}  # charged back: undated
            fake.orders[secret("valid_vip_2")] = {"status": "n"}  # not this gate's entry
            fake.positions = [
                (LATER, {**p, "canceled": p["secret"] == secret("valid_variation_2")})
                for _, p in fake.positions
            ]  # one position of a paid order cancelled: undated
            assert await gate.upstream.sync_once()
            alerts = {(a.ticket, a.kind, a.other, a.other_at) for a in gate.upstream.alerts}
            assert alerts == {
                (pretix_short_id(secret("valid_standard_1")), "order_not_valid", "pretix", early),
                (pretix_short_id(secret("valid_standard_3")), "order_not_valid", "pretix", None),
                (pretix_short_id(secret("valid_variation_2")), "order_not_valid", "pretix", None),
                (pretix_short_id(secret("valid_vip_1")), "order_not_valid", "pretix", late),
                (pretix_short_id(secret("valid_same_order_1")), "order_not_valid", "pretix",
                 early),
                (pretix_short_id(secret("valid_same_order_2")), "order_not_valid", "pretix", None),
                (pretix_short_id(secret("regenerated_new_secret")), "order_not_valid", "pretix", None),
            }  # fmt: skip
            # pretix lists the orders again each round (every check-in touches them): once only.
            assert await gate.upstream.sync_once()
            assert len(gate.upstream.alerts) == 7 and gate.upstream.status["alerts"] == 7
    said = [r.getMessage() for r in caplog.records if "SECURITY ALERT order_not_valid" in r.message]
    assert len(said) == 7 and any("not dated" in line for line in said)


async def test_an_alert_is_kept_once_and_listed_by_events_after_restarts(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in an integrator's trial: alerts were de-duplicated in memory only, so a ticket
    whose order changed again after a restart (charged back, then expired) was named again,
    every alert came back once the revocation store was lost, and `gate-agent events` showed
    none of them. The journal keeps each, once per entry and finding: `status` counts them
    across restarts and `events --alerts` (or `--ticket`) lists them."""
    fake = FakePretix()
    fake.positions = [(0, position(1, "valid_standard_1"))]
    short = pretix_short_id(secret("valid_standard_1"))
    async with PretixServer(fake) as server:
        path = write_config(extra=pretix_section(server.url))
        conf = config.load(path)
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            assert gate.upstream is not None and await gate.upstream.sync_once()
            assert await reason(gate, "valid_standard_1") is Reason.OK
            fake.orders = {secret("valid_standard_1"): {"status": "n"}}  # charged back
            fake.positions = [(LATER, p) for _, p in fake.positions]
            assert await gate.upstream.sync_once() and gate.upstream.status["alerts"] == 1
        for status in ("e", "c"):  # expired, then cancelled; the store lost before the second
            if status == "c":
                (conf.gate.state_dir / "revocations.db").unlink()
            fake.orders = {secret("valid_standard_1"): {"status": status}}
            async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
                assert gate.upstream is not None and await gate.upstream.sync_once()
                assert await reason(gate, "valid_standard_1") is Reason.CANCELED  # learnt anew
                assert gate.upstream.status["alerts"] == 1
                assert [(a.ticket, a.kind) for a in gate.upstream.alerts] == [
                    (short, "order_not_valid")
                ]
    said = [r for r in caplog.records if "SECURITY ALERT" in r.message]
    assert len(said) == 1, said
    listed = _events(path, "--alerts", "--json")
    assert [(a["kind"], a["ticket"], a["other"], a["other_time"]) for a in listed] == [
        ("order_not_valid", short, "pretix", None)
    ]
    assert "not paid" in listed[0]["detail"] and "not dated" in listed[0]["detail"]
    text = _events(path, "--ticket", short)
    assert f"ALERT order_not_valid  ticket {short}" in text[-1], text
    assert [line.split()[3] for line in text[:-1]] == ["#1", "#2", "#3"]  # its decisions first
    assert all(line.split()[2] == "UTC" for line in text)  # the zone its times are in
    assert _events(path, "--alerts", "--ticket", "00000000") == [
        f"(no alerts for ticket 00000000 in {config.load(path).gate.state_dir / 'journal.db'})"
    ]
    refused = _run_events(path, "--alerts", "--denied")
    assert refused.returncode == 2 and "--alerts lists alerts" in refused.stderr


def _run_events(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "events", "--config", str(path), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _events(path: Path, *args: str) -> list[Any]:
    """`gate-agent events` as staff run it: JSON lines read, text lines as they are."""
    done = _run_events(path, *args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return [json.loads(line) for line in lines] if "--json" in args else lines


async def test_an_admission_on_a_clock_not_trusted_is_named_whatever_pretix_dates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An integrator's trial: a gate whose clock ran 10 minutes behind (a Pi without a clock
    source after a power cut: exactly when it decides offline) admitted a ticket a second after
    pretix cancelled it, and no alert came: by its clock the cancellation was "after". An entry
    decided on a clock the gate did not trust is named, with why."""
    fake = FakePretix(tokens={API_TOKEN})
    fake.positions = [(0, position(1, "valid_standard_1")), (0, position(2, "valid_standard_2"))]
    runs: tuple[tuple[str, Assume], ...] = (
        ("valid_standard_1", "unsynced"), ("valid_standard_2", "synced"),
    )  # fmt: skip
    for name, assume in runs:
        journal = await Journal.open(tmp_path / "j.db", gate_id="g", gate_name="G",
                                     clock=Clock(assume=assume, wall=Wall(T0)))  # fmt: skip
        await journal.record(
            ticket_ref=wire.PRETIX_REF + secret(name), kind="entry",
            decision=Decision(Verdict.ADMIT, Reason.OK), lane="in", rev_version=0,
        )  # fmt: skip
        await journal.close()
    cancelled = {"status": "c", "cancellation_date": wire.iso(T0 + 3600)}  # "an hour after"
    fake.orders = {secret("valid_standard_1"): cancelled, secret("valid_standard_2"): cancelled}
    fake.now = T0 + 7200
    async with PretixServer(fake) as server:
        ok, store, journal = await Sole(tmp_path, server.url, Wall(T0)).round(device_id=1)
        await closed(store, journal)
    said = [r.getMessage() for r in caplog.records if "SECURITY ALERT order_not_valid" in r.message]
    assert ok and len(said) == 1, said
    assert pretix_short_id(secret("valid_standard_1")) in said[0]
    assert "clock was not trusted" in said[0]


class Sole:
    """One upstream (the stand-in's device 1) over a journal and revocation store in ``folder``,
    opened and closed as a gate restarting would."""

    def __init__(self, folder: Path, url: str, wall: Wall) -> None:
        self.folder, self.url, self.wall = folder, url, wall

    async def round(self, **kw: Any) -> tuple[bool, RevocationStore, Journal]:
        """One round of a freshly started upstream; returns its outcome and the (still open)
        store and journal, for the test to read and close."""
        journal = await Journal.open(self.folder / "j.db", gate_id="g", gate_name="G",
                                     clock=Clock(wall=self.wall))  # fmt: skip
        store = await RevocationStore.open(self.folder / "rev.db")
        up = make_upstream(self.folder / "state", self.url, journal, store, self.wall, [], [],
                           device_token=API_TOKEN, **kw)  # fmt: skip
        try:
            return await up.sync_once(), store, journal
        finally:
            await up.close()


async def closed(store: RevocationStore, journal: Journal) -> None:
    await store.close()
    await journal.close()


@pytest.mark.parametrize(
    "answer",
    [
        {"status": "x"},  # no status pretix has
        {"status": "p", "require_approval": "no"},  # a flag that is not a boolean
        {"status": "p", "valid_if_pending": 1},
        {"positions": "all"},
    ],
    ids=["status", "require_approval", "valid_if_pending", "positions"],
)
async def test_an_order_state_not_well_formed_leaves_the_ticket_as_it_was(
    tmp_path: Path, answer: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """pretix's answers are hostile input: an order whose state cannot be read is skipped
    (counted), and its ticket keeps the state it had (unpaid here), never paid by default."""
    fake = FakePretix(tokens={API_TOKEN})
    unpaid = secret("valid_standard_1")
    fake.positions = [(0, position(1, "valid_standard_1"))]
    fake.orders = {unpaid: {"status": "n"}}
    async with PretixServer(fake) as server:
        gate = Sole(tmp_path, server.url, Wall(T0))
        ok, store, journal = await gate.round(device_id=1)
        before, version = store.index.order_status(order_key(unpaid)), store.meta.version
        await closed(store, journal)
        assert ok and before is ListState.UNPAID
        fake.orders[unpaid] = answer
        fake.positions = [(LATER, position(1, "valid_standard_1"))]
        caplog.set_level(logging.INFO, "sync")
        ok, store, journal = await gate.round(device_id=1)
        after, same = store.index.order_status(order_key(unpaid)), store.meta.version == version
        await closed(store, journal)
    assert ok and after is ListState.UNPAID and same
    assert "0 annulled there, 1 skipped" in caplog.text


async def test_order_states_are_learnt_without_the_own_device_id(tmp_path: Path) -> None:
    """A gate given its device token but not its device id learns no check-ins (its own could
    not be told from others'), but still which tickets' orders do not admit."""
    fake = FakePretix(tokens={API_TOKEN})
    canceled = secret("valid_standard_3")
    fake.positions = [(0, position(1, "valid_standard_3"))]
    fake.orders = {canceled: {"status": "c"}}
    async with PretixServer(fake) as server:
        ok, store, journal = await Sole(tmp_path, server.url, Wall(T0)).round()
        state = store.index.order_status(order_key(canceled))
        await closed(store, journal)
    assert ok and state is ListState.CANCELED


async def test_a_gate_updated_from_before_reads_every_order_once_again(
    write_config: WriteConfig,
) -> None:
    """A gate's orders cursor from before the order states were read has passed orders that
    are not paid now: the updated gate reads the event's orders from the start, once."""
    fake = FakePretix()
    fake.positions = [(0, position(1, "valid_standard_2"))]
    fake.orders = {secret("valid_standard_2"): {"status": "n"}}
    async with PretixServer(fake) as server:
        conf = config.load(write_config(extra=pretix_section(server.url)))
        conf.gate.state_dir.mkdir(parents=True, exist_ok=True)
        old = {"orders_modified_since": wire.iso(LATER)}
        (conf.gate.state_dir / "pretix_sync.json").write_text(json.dumps(old))
        async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=1)) as gate:
            assert gate.upstream is not None and await gate.upstream.sync_once()
            assert await reason(gate, "valid_standard_2") is Reason.UNPAID
            assert await gate.upstream.sync_once()
    first, *_, last = fake.calls_to("/orders/")
    assert "modified_since" not in first.query and "modified_since" in last.query


async def test_a_gate_given_its_device_id_later_learns_the_check_ins_it_passed(
    tmp_path: Path,
) -> None:
    """A review: a round without the device id read the orders (for their states) and moved the
    orders' cursor on, so check-ins made elsewhere before it were never learnt once the id was
    set: that ticket would have been admitted again."""
    fake = FakePretix(tokens={API_TOKEN})
    used = secret("valid_standard_1")
    elsewhere = {"id": 41, "datetime": "2026-11-23T02:50:00Z", "list": 11, "device": 2,
                 "device_id": 2, "type": "entry"}  # fmt: skip
    fake.positions = [(0, position(1, "valid_standard_1", checkins=[elsewhere]))]
    async with PretixServer(fake) as server:
        gate = Sole(tmp_path, server.url, Wall(T0))
        ok, store, journal = await gate.round()
        await closed(store, journal)
        assert ok
        ok, store, journal = await gate.round(device_id=1)
        history = await journal.history("pretix:" + used)
        await closed(store, journal)
    assert ok and [(h.kind, h.gate_id) for h in history] == [("entry", "pretix-device-2")]


async def test_order_states_lost_with_the_revocation_store_are_read_again(
    tmp_path: Path,
) -> None:
    """A review: the orders' cursor outlived the states it had led to, so a revocation store
    replaced by a signed snapshot (a gate with [revocation] files), or deleted, forgot which
    tickets' orders are unpaid for good. Both now have the orders read from the start."""
    fake = FakePretix(tokens={API_TOKEN})
    unpaid = secret("valid_standard_2")
    fake.positions = [(0, position(1, "valid_standard_2"))]
    fake.orders = {unpaid: {"status": "n"}}
    keys_dir = tmp_path / "keys"
    issuer.keys_init(keys_dir)
    iss = Issuer.load(keys_dir)
    snapshot = sign_document(KIND, make_snapshot(version=50, issued_at=int(T0),
                                                 expires=int(T0) + 3600), iss.list_key)  # fmt: skip
    async with PretixServer(fake) as server:
        gate = Sole(tmp_path, server.url, Wall(T0))
        ok, store, journal = await gate.round(device_id=1)
        assert ok and store.index.order_status(order_key(unpaid)) is ListState.UNPAID
        await store.apply(snapshot, [iss.list_key.public_key()])
        assert store.index.order_status(order_key(unpaid)) is ListState.NONE
        await closed(store, journal)
        ok, store, journal = await gate.round(device_id=1)
        assert ok and store.index.order_status(order_key(unpaid)) is ListState.UNPAID
        await closed(store, journal)
        (tmp_path / "rev.db").unlink()
        ok, store, journal = await gate.round(device_id=1)
        assert ok and store.index.order_status(order_key(unpaid)) is ListState.UNPAID
        await closed(store, journal)
    first_of_each_round = [c for c in fake.calls_to("/orders/") if "page" not in c.query]
    assert ["modified_since" in c.query for c in first_of_each_round] == [False, False, False]


async def test_the_list_is_fresh_only_once_the_orders_are_read_too(tmp_path: Path) -> None:
    """A review: the revoked and blocked secrets stamped the list fresh before the orders were
    read, so a gate whose orders kept failing never said its order states were stale."""
    fake = FakePretix(tokens={API_TOKEN}, fault="5xx", fault_on="/orders/")
    fake.positions = [(0, position(1, "valid_standard_2"))]
    async with PretixServer(fake) as server:
        gate = Sole(tmp_path, server.url, Wall(T0))
        ok, store, journal = await gate.round(device_id=1)
        stamped = store.meta.issued_at
        await closed(store, journal)
        assert not ok and stamped is None
        fake.fault = None
        ok, store, journal = await gate.round(device_id=1)
        stamped = store.meta.issued_at
        await closed(store, journal)
    assert ok and stamped == int(T0)


async def test_a_round_cut_short_keeps_the_states_of_the_pages_it_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The states of each page are kept as it is read: the next round goes on after the pages
    read (created_since), so a state kept only at a round's end would be lost for good; and so
    is the alert for an entry of this gate whose order a page turned, and for one another
    device's entry learnt on a page stood before (a review: told only at the round's end, each
    was never told, the next round finding it already kept)."""
    fake = FakePretix(tokens={API_TOKEN}, page_size=2, fault_on="/orders/")
    fake.positions = [(0, position(i, name)) for i, name in enumerate(
        ("valid_standard_1", "valid_standard_2", "valid_standard_3", "valid_vip_1"), start=1)]  # fmt: skip
    elsewhere = checkin(21, 2, wire.iso(T0 - 60))  # another device, a minute before ours
    fake.positions[1] = (0, position(2, "valid_standard_2", checkins=[elsewhere]))
    fake.orders = {secret("valid_standard_1"): {"status": "n"}}

    def fail_after_first(page: int) -> None:
        fake.fault = "5xx" if page == 1 else fake.fault

    fake.after_orders_page = fail_after_first
    journal = await Journal.open(tmp_path / "j.db", gate_id="g", gate_name="G",
                                 clock=Clock(wall=Wall(T0)))  # fmt: skip
    for name in ("valid_standard_1", "valid_standard_2"):
        await journal.record(
            ticket_ref=wire.PRETIX_REF + secret(name), kind="entry",
            decision=Decision(Verdict.ADMIT, Reason.OK), lane="in", rev_version=0,
        )  # fmt: skip
    await journal.close()
    async with PretixServer(fake) as server:
        gate = Sole(tmp_path, server.url, Wall(T0))
        ok, store, journal = await gate.round(device_id=1)
        await closed(store, journal)
        assert not ok
        fake.fault, fake.after_orders_page = None, None
        ok, store, journal = await gate.round(device_id=1)
        state = store.index.order_status(order_key(secret("valid_standard_1")))
        await closed(store, journal)
    resumed = [c for c in fake.calls_to("/orders/") if "created_since" in c.query]
    assert ok and resumed and state is ListState.UNPAID
    said = [r.getMessage() for r in caplog.records if "SECURITY ALERT order_not_valid" in r.message]
    assert len(said) == 1 and pretix_short_id(secret("valid_standard_1")) in said[0]
    said = [r.getMessage() for r in caplog.records if "SECURITY ALERT duplicate_entry" in r.message]
    assert len(said) == 1 and pretix_short_id(secret("valid_standard_2")) in said[0]
    assert "(learnt later)" in said[0]


async def test_hostile_secrets_in_answers_are_skipped_or_refused_never_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A review: a secret with a lone surrogate (valid JSON: "\\ud800") could not be encoded
    and ended every round before its uploads. In orders it is skipped (counted); on a revoked
    secrets page the page is a malformed answer, named in the status; uploads go on."""
    fake = FakePretix(tokens={API_TOKEN})
    fake.positions = [(0, {"id": 1, "secret": "\ud800" + secret("valid_standard_1"),
                           "checkins": []})]  # fmt: skip
    caplog.set_level(logging.INFO, "sync")
    async with PretixServer(fake) as server:
        gate = Sole(tmp_path, server.url, Wall(T0))
        ok, store, journal = await gate.round(device_id=1)
        admitted = Decision(Verdict.ADMIT, Reason.OK)
        await journal.record(ticket_ref="pretix:" + secret("valid_standard_1"), kind="entry",
                             decision=admitted, lane="in", rev_version=0)  # fmt: skip
        await closed(store, journal)
        assert ok and "0 annulled there, 1 skipped" in caplog.text
        spaced = {"id": 9, "secret": "a b", "created": "2026-11-23T02:51:15Z"}  # after the cursor
        fake.revoked = {"count": 1, "next": None, "previous": None, "results": [spaced]}
        ok, store, journal = await gate.round(device_id=1)
        await closed(store, journal)
    assert not ok
    assert "'secret' must be printable ASCII without spaces" in caplog.text
    assert len(fake.redeem_calls()) == 1  # the entry went up meanwhile


async def test_a_gate_initialised_again_as_a_new_device_reads_on_from_its_cursor(
    tmp_path: Path,
) -> None:
    """A gate initialised again (a new device id) goes on from its orders' cursor: read from
    the start, every check-in it made as its old device would come back as another device's."""
    fake = FakePretix(tokens={API_TOKEN})
    fake.positions = [(0, position(1, "valid_standard_1"))]
    async with PretixServer(fake) as server:
        gate = Sole(tmp_path, server.url, Wall(T0))
        for device in (1, 2):
            ok, store, journal = await gate.round(device_id=device)
            await closed(store, journal)
            assert ok
    first, second = fake.calls_to("/orders/")
    assert "modified_since" not in first.query and "modified_since" in second.query
