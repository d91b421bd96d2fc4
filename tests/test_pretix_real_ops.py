"""A gate against the real pretix (tests/pretix_real.py) in what operations meet: device security
profiles, pretix's 15-minute annulment limit, an exit lane, pretix stopped and started again
mid-scan, a revoked device token (issue 11 parts 5 and 10)."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from agent.app.daemon import Gate
from agent.clock import Clock
from agent.model import Flag, Reason
from agent.redact import pretix_short_id
from drivers.sim import SimGate, SimScanner
from sync import pretix_wire as wire
from tests.conftest import WriteConfig
from tests.pretix_real import PretixReal
from tests.test_pretix_real import peers, real_gate, scan

pytestmark = pytest.mark.pretix
NEEDED = "'pretixSCAN' (pretixscan) or 'Full device access' (full)"


def gate_token(gate: Gate) -> str:
    record = json.loads((gate.config.gate.state_dir / "pretix_device.json").read_text())
    token: str = record["api_token"]
    return token


async def test_a_pretixscan_device_syncs_learns_uploads_and_annuls(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    other = await pretix_real.new_device("side door (pretixSCAN)", "pretixscan")
    device = await pretix_real.new_device("turnstile (pretixSCAN)", "pretixscan")
    other_token = await pretix_real.initialize(other)
    taken, passed, not_passed = (pretix_real.ticket() for _ in range(3))
    turnstile = SimGate(passage_ms=None, plan=[True, False])
    async with real_gate(write_config, pretix_real, device, gate_io=turnstile) as gate:
        up = gate.upstream
        assert up is not None
        assert up.status["last_error"] is None, up.status
        assert (await pretix_real.redeem(other_token, taken, str(uuid.uuid4())))[0] == 201
        assert await up.sync_once(), up.status  # learns the other's check-in from the orders
        assert await peers(gate, taken) == [("entry", f"pretix-device-{other.device_id}")]
        refused = await gate.lane.present(scan(taken))
        assert refused is not None and refused.decision.reason is Reason.ALREADY_USED, refused
        first = await gate.lane.present(scan(passed))
        second = await gate.lane.present(scan(not_passed))
        assert first is not None and first.passed, first
        assert second is not None and second.passed is False, second
        assert await up.sync_once(), up.status  # redeem, failed check-in, annul
        assert up.status["outbox"] == 0 and up.status["rejected"] == 0, up.status
    ours = [(c["successful"], c["device_id"]) for c in await pretix_real.checkins(passed)]
    assert ours == [(True, device.device_id)]
    (annulled,) = await pretix_real.checkins(not_passed)
    assert annulled["error_reason"] == "annulled" and annulled["device_id"] == device.device_id
    failed = [c for c in await pretix_real.checkins(taken) if not c["successful"]]
    assert [(c["error_reason"], c["device_id"]) for c in failed] == [
        ("already_redeemed", device.device_id)
    ]


async def test_a_narrower_profile_is_named_with_the_endpoint_and_the_profile_needed(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    device = await pretix_real.new_device("turnstile (kiosk)", "pretixscan_online_kiosk")
    secret = pretix_real.ticket()
    async with real_gate(write_config, pretix_real, device) as gate:
        up = gate.upstream
        assert up is not None
        admitted = await gate.lane.present(scan(secret))  # offline decisions go on
        assert admitted is not None and admitted.decision.admitted, admitted
        assert not await up.sync_once()
        error = up.status["last_error"]
        assert error == (
            f"GET {pretix_real.event_path}/orders/: HTTP 403: the device may not use this"
            f" endpoint; give it the security profile {NEEDED} and access to the event"
        )
        # The profile may redeem: the gate's own entry still goes up (the round fails anyway).
        assert up.status["outbox"] == 0 and not up.status["token_revoked"]
    ours = [(c["successful"], c["device_id"]) for c in await pretix_real.checkins(secret)]
    assert ours == [(True, device.device_id)]


class _ClockMover(SimGate):
    """A turnstile nobody passes; each grant moves the gate's clock ``by_s`` ahead (its floor),
    so the annulment that follows is recorded that much after its entry."""

    def __init__(self, by_s: float) -> None:
        super().__init__(passage_ms=None)
        self.by_s = by_s
        self.clock: Clock | None = None

    async def grant(self, direction: str, ref: str) -> None:
        await super().grant(direction, ref)
        assert self.clock is not None
        self.clock.raise_floor(self.clock.now() + self.by_s)


async def test_annulment_later_than_15_minutes_is_not_sent_and_pretix_refuses_it(
    write_config: WriteConfig, pretix_real: PretixReal, caplog: pytest.LogCaptureFixture
) -> None:
    # pretix compares the annulment's datetime (sent by the device) with the check-in's
    # datetime and answers 400 beyond 15 minutes: the gate does not send such an annulment.
    other = await pretix_real.new_device("scanner, late annul")
    token = await pretix_real.initialize(other)
    probe = pretix_real.ticket()
    at = time.time()
    for minutes, expected in ((16, 400), (14, 200)):
        nonce = str(uuid.uuid4())
        status, _ = await pretix_real.redeem(token, probe, nonce, datetime=wire.iso(at),
                                             force=True)  # fmt: skip
        assert status == 201
        status, answer = await pretix_real.api(
            "POST", f"/api/v1/organizers/{pretix_real.organizer}/checkinrpc/annul/", token=token,
            body={"lists": [pretix_real.lists["all"]], "nonce": nonce,
                  "datetime": wire.iso(at + minutes * 60)},
        )  # fmt: skip
        assert status == expected, (minutes, answer)

    device = await pretix_real.new_device("turnstile, late annul")
    secret = pretix_real.ticket()
    turnstile = _ClockMover(16 * 60)
    async with real_gate(write_config, pretix_real, device, gate_io=turnstile) as gate:
        turnstile.clock = gate.clock
        up = gate.upstream
        assert up is not None
        outcome = await gate.lane.present(scan(secret))
        assert outcome is not None and outcome.passed is False, outcome
        with caplog.at_level(logging.WARNING, logger="sync.pretix_upload"):
            assert await up.sync_once(), up.status
        assert up.status["outbox"] == 0 and up.status["rejected"] == 0, up.status
    assert "comes more than 15 min after its entry" in caplog.text
    (ci,) = await pretix_real.checkins(secret)  # the entry stays counted upstream
    assert ci["successful"] and ci["device_id"] == device.device_id


async def test_an_exit_lane_uploads_exit_checkins(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    device = await pretix_real.new_device("turnstile in/out")
    secret = pretix_real.ticket()
    async with real_gate(write_config, pretix_real, device) as gate:
        way_out = gate.add_lane("out", "exit", SimScanner(), SimGate(passage_ms=1))
        entered = await gate.lane.present(scan(secret))
        left = await way_out.present(scan(secret))
        assert entered is not None and entered.passed, entered
        assert left is not None and left.passed and left.record is not None, left
        assert left.record.kind == "exit"
        assert gate.upstream is not None and await gate.upstream.sync_once()
        assert gate.upstream.status["outbox"] == 0, gate.upstream.status
    # By time; the two may share a millisecond (passage_ms=1), then pretix answered the exit
    # first once in CI: the entry first among equals, as the gate recorded them.
    checkins = sorted(
        await pretix_real.checkins(secret), key=lambda c: (c["datetime"], c["type"] == "exit")
    )
    assert [(c["type"], c["successful"], c["device_id"]) for c in checkins] == [
        ("entry", True, device.device_id), ("exit", True, device.device_id),
    ]  # fmt: skip
    assert wire.parse_iso(checkins[1]["datetime"]) == pytest.approx(left.record.wall_time, abs=1e-3)


@pytest.mark.slow
async def test_pretix_stopped_mid_scan_every_decision_arrives_once(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    device = await pretix_real.new_device("turnstile, pretix restarts")
    before, during = pretix_real.ticket(), pretix_real.ticket()
    async with real_gate(write_config, pretix_real, device) as gate:
        up = gate.upstream
        assert up is not None and await up.sync_once()
        online = await gate.lane.present(scan(before))  # decided online, not uploaded yet
        pretix_real.halt()
        try:
            assert not await up.sync_once()
            assert up.status["online"] is False
            offline = await gate.lane.present(scan(during))
            again = await gate.lane.present(scan(before))
        finally:
            pretix_real.launch()
        assert online is not None and online.record is not None and online.passed
        assert offline is not None and offline.record is not None and offline.passed
        assert Flag.OFFLINE in offline.decision.flags and offline.record.offline
        assert again is not None and again.decision.reason is Reason.ALREADY_USED, again
        assert await up.sync_once(), up.status
        assert up.status["outbox"] == 0 and up.status["rejected"] == 0, up.status
        assert await up.sync_once(), up.status  # a second round sends nothing again
        token = gate_token(gate)
    for outcome, secret in ((online, before), (offline, during)):
        assert outcome.record is not None
        successful = [c for c in await pretix_real.checkins(secret) if c["successful"]]
        assert len(successful) == 1, successful
        assert wire.parse_iso(successful[0]["datetime"]) == pytest.approx(
            outcome.record.wall_time, abs=0.001
        )
        # pretix does not show nonces; annulling by the entry's id proves it is the nonce
        status, _ = await pretix_real.annul(token, outcome.record.entry_id)
        assert status == 200
    failed = [c for c in await pretix_real.checkins(before) if not c["successful"]]
    assert [c["error_reason"] for c in failed] == ["annulled", "already_redeemed"]


async def test_a_revoked_device_token_is_said_and_keeps_the_rows(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    device = await pretix_real.new_device("turnstile, token revoked")
    first, second = pretix_real.ticket(), pretix_real.ticket()
    async with real_gate(write_config, pretix_real, device) as gate:
        up = gate.upstream
        assert up is not None and await up.sync_once()
        await pretix_real.revoke(gate_token(gate))
        for secret in (first, second):
            outcome = await gate.lane.present(scan(secret))
            assert outcome is not None and outcome.passed, outcome
        assert not await up.sync_once()
        assert up.status["token_revoked"] is True and up.status["online"] is False
        assert "HTTP 401: device token refused (revoked?)" in up.status["last_error"]
        assert not await up.sync_once()  # stays so; nothing is dropped
        assert up.status["outbox"] == 2
        assert len(await gate.journal.unsynced()) == 2
    assert await pretix_real.checkins(first) == [] and await pretix_real.checkins(second) == []


async def test_tickets_of_orders_charged_back_expired_or_cancelled_are_refused(
    write_config: WriteConfig, pretix_real: PretixReal
) -> None:
    """A pretixSCAN device reads the orders' states: a paid order marked pending again (a
    chargeback) is refused as unpaid until paid again, or admitted once the organiser marks it
    valid while pending; expired, refused as cancelled. A cancelled order's printed secret is
    replaced and listed as revoked by pretix: refused as revoked."""
    device = await pretix_real.new_device("turnstile (orders)", "pretixscan")
    repaid, expired, cancelled, trusted = (pretix_real.ticket() for _ in range(4))
    async with real_gate(write_config, pretix_real, device) as gate:
        up = gate.upstream
        assert up is not None

        async def reasons(*secrets: str) -> list[Reason]:
            assert up is not None and await up.sync_once(), up.status
            got = [await gate.lane.present(scan(s)) for s in secrets]
            return [o.decision.reason for o in got if o is not None]

        for secret, action, status in (
            (repaid, "mark_pending", "n"),
            (expired, "mark_pending", "n"),
            (cancelled, "mark_canceled", "c"),
            (trusted, "mark_pending", "n"),
        ):
            assert (await pretix_real.order_action(secret, action))["status"] == status
        assert await reasons(repaid, expired, cancelled) == [
            Reason.UNPAID, Reason.UNPAID, Reason.REVOKED,
        ]  # fmt: skip
        assert (await pretix_real.order_action(repaid, "mark_paid"))["status"] == "p"
        assert (await pretix_real.order_action(expired, "mark_expired"))["status"] == "e"
        code = (await pretix_real.order_action(trusted, ""))["code"]
        patched, _ = await pretix_real.api("PATCH", f"{pretix_real.event_path}/orders/{code}/",
                                           body={"valid_if_pending": True})  # fmt: skip
        assert patched == 200
        assert await reasons(repaid, expired, trusted) == [Reason.OK, Reason.CANCELED, Reason.OK]
        assert await up.sync_once() and up.alerts == []
        # The refusal reached pretix as a failed check-in with pretix's own reason, then the
        # entry.
        checkins = await pretix_real.checkins(repaid)
        assert [(ci["successful"], ci["error_reason"]) for ci in checkins] == [
            (False, "unpaid"), (True, None),
        ]  # fmt: skip
        # Admitted, then charged back again or cancelled: each admission still standing is an
        # alert. pretix revokes a cancelled order's printed secret and dates that (here moments
        # after the admission: within the clocks' margin, named too).
        assert (await pretix_real.order_action(repaid, "mark_pending"))["status"] == "n"
        assert (await pretix_real.order_action(trusted, "mark_canceled"))["status"] == "c"
        assert await up.sync_once()
        named = {a.ticket: (a.kind, a.other_at is not None) for a in up.alerts}
        assert named == {
            pretix_short_id(repaid): ("order_not_valid", False),
            pretix_short_id(trusted): ("order_not_valid", True),
        }
