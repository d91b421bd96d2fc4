"""Two units heartbeating as one gate (sync.hub_twins): what is an alert and what is not."""

from __future__ import annotations

import uuid

from sync.hub_twins import MAX_PAIRS, Twins


def _boot() -> str:
    return str(uuid.uuid4())


def test_a_gate_booting_again_is_no_alert_and_a_boot_id_coming_back_is() -> None:
    twins, first, second = Twins(), _boot(), _boot()
    # A unit booting again (or its daemon restarting without /proc: a new random id) never comes
    # back to the boot id it left; an older gate names none; a dual-stack gate changes address.
    for boot, address in ((first, "10.0.0.7"), (first, "fd00::7"), (second, "10.0.0.7"),
                          (second, "10.0.0.7"), ("", "10.0.0.8"), (_boot(), "10.0.0.7")):  # fmt: skip
        assert twins.heartbeat("gate-a", boot, address, 1.0) is None
    assert twins.heartbeat("gate-b", first, "10.0.0.9", 1.0) is None  # each gate on its own
    # The copy (another unit) and the gate take turns: one alert for the pair.
    a, b = _boot(), _boot()
    assert twins.heartbeat("gate-c", a, "10.0.0.7", 1.0) is None
    assert twins.heartbeat("gate-c", b, "192.0.2.5", 2.0) is None
    alert = twins.heartbeat("gate-c", a, "10.0.0.7", 3.0)
    assert alert is not None and alert.kind == "integrity" and alert.gate_ids == ("gate-c",)
    assert f"boot {a[:8]} from 10.0.0.7 and boot {b[:8]} from 192.0.2.5" in alert.detail
    assert [twins.heartbeat("gate-c", boot, "x", 4.0) for boot in (b, a, b)] == [None] * 3


def test_a_token_spinning_boot_ids_raises_a_bounded_number_of_alerts() -> None:
    twins, home = Twins(), _boot()
    alerts = []
    for _ in range(3 * MAX_PAIRS):
        twins.heartbeat("gate-a", _boot(), "192.0.2.5", 1.0)
        alerts.append(twins.heartbeat("gate-a", home, "10.0.0.7", 1.0))
    found = [a for a in alerts if a is not None]
    assert len(found) == MAX_PAIRS and len({a.dedupe_key for a in found}) == MAX_PAIRS
