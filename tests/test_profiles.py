"""Every hardware profile is a valid config whose device URLs their drivers accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.app import config
from agent.app.selftest import device_path
from drivers import registry

PROFILES = sorted((Path(__file__).resolve().parents[1] / "config" / "profiles").glob("*.toml"))
EXPECTED = {
    "generic-serial-qr",
    "honeywell",
    "zebra",
    "newland",
    "usb-camera",
    "rpi-relay-hat",
    "lcus-relay",
    "rpi-bidirectional",
    "lcus-four-lanes",
}


def test_all_named_profiles_exist() -> None:
    assert {p.stem for p in PROFILES} == EXPECTED


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_profile_is_valid_documented_and_uses_stable_names(path: Path) -> None:
    conf = config.load(path)
    text = path.read_text()
    assert "# Wiring" in text
    devices: list[tuple[registry.Kind, str | None]] = [
        (kind, getattr(spec.devices, kind))
        for spec in conf.lanes
        for kind in ("scanner", "gate", "indicator")
    ]
    for kind, url in devices:
        if url is None:
            continue
        registry.create(kind, url)  # every URL parameter is accepted (raises otherwise)
        node = device_path(url)
        assert node is not None, url
        # Device names that change with the plug order have no place in a profile.
        assert str(node).startswith(("/dev/serial/by-id/", "/dev/v4l/by-id/", "/dev/gpiochip")), url


def test_bidirectional_turnstile_is_two_lanes_on_one_controller() -> None:
    conf = config.load(PROFILES[0].with_name("rpi-bidirectional.toml"))
    entry, exit_ = conf.lanes
    assert (entry.direction, exit_.direction) == ("entry", "exit")
    assert entry.devices.gate == exit_.devices.gate  # the identical URL: one shared device
    assert "relay_entry=" in entry.devices.gate and "relay_exit=" in entry.devices.gate
    assert "passage_entry=" in entry.devices.gate and "passage_exit=" in entry.devices.gate
    assert entry.devices.scanner != exit_.devices.scanner
    assert conf.policy.entry == "reentry"


def test_four_lane_row_is_four_channels_of_one_board() -> None:
    conf = config.load(PROFILES[0].with_name("lcus-four-lanes.toml"))
    assert [s.direction for s in conf.lanes] == ["entry", "entry", "exit", "exit"]
    gates = [s.devices.gate for s in conf.lanes]
    assert len(set(gates)) == 4  # each lane its own turnstile: they never wait on each other
    assert {device_path(g) for g in gates} == {device_path(gates[0])}  # one board
    assert [f"channel={n}&" in g for n, g in enumerate(gates, 1)] == [True] * 4
    assert len({s.devices.scanner for s in conf.lanes}) == 4
