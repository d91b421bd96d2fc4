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
}


def test_all_named_profiles_exist() -> None:
    assert {p.stem for p in PROFILES} == EXPECTED


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_profile_is_valid_documented_and_uses_stable_names(path: Path) -> None:
    conf = config.load(path)
    text = path.read_text()
    assert "# Wiring" in text
    devices: list[tuple[registry.Kind, str | None]] = [
        ("scanner", conf.devices.scanner),
        ("gate", conf.devices.gate),
        ("indicator", conf.devices.indicator),
    ]
    for kind, url in devices:
        if url is None:
            continue
        registry.create(kind, url)  # every URL parameter is accepted (raises otherwise)
        node = device_path(url)
        assert node is not None, url
        # Device names that change with the plug order have no place in a profile.
        assert str(node).startswith(("/dev/serial/by-id/", "/dev/v4l/by-id/", "/dev/gpiochip")), url
