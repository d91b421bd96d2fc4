"""Every hardware profile is a valid config whose device URLs their drivers accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
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
def test_profile_is_valid_and_documented(path: Path) -> None:
    conf = config.load(path)
    text = path.read_text()
    assert "Wiring" in text  # each profile says how to connect it
    devices: list[tuple[registry.Kind, str | None]] = [
        ("scanner", conf.devices.scanner),
        ("gate", conf.devices.gate),
        ("indicator", conf.devices.indicator),
    ]
    for kind, url in devices:
        if url is not None:
            driver = registry.create(kind, url)  # parses every URL parameter, opens nothing
            assert driver is not None
