"""Shared fixtures: a real keys directory, tickets, and gate configs written as TOML files."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import issuer
from tests.serial_pty import PtyPair

GATE_TOML = """\
[gate]
id = "gate-3"
name = "Gate 3"
events = [1]
zone = 1
state_dir = "state"

[policy]
entry = "{entry}"
stale_list = "{stale_list}"

[lane]
name = "in"
repeat_window_ms = {repeat_window_ms}
passage_timeout_s = {passage_timeout_s}

[trust]
root_key = "keys/root.pub"
bundle = "keys/trust.json"

[revocation]
files = [{revocations}]

[clock]
assume = "synced"

[devices]
scanner = "{scanner}"
gate = "{gate}"
"""


@pytest.fixture(scope="session")
def _session_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys") / "keys"
    issuer.keys_init(d, kid=7, events=[1, 2])
    return d


@pytest.fixture
def keys_dir(_session_keys: Path, tmp_path: Path) -> Path:
    """A private copy of one session-wide keys directory (key generation is not free)."""
    d = tmp_path / "keys"
    shutil.copytree(_session_keys, d)
    return d


@pytest.fixture
def iss(keys_dir: Path) -> issuer.Issuer:
    return issuer.Issuer.load(keys_dir)


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(keys_dir: Path) -> WriteConfig:
    """Write a gate config beside ``keys_dir`` and return its path."""

    def write(
        *,
        entry: str = "single",
        stale_list: str = "admit",
        repeat_window_ms: int = 2000,
        passage_timeout_s: float = 1.0,
        revocations: list[str] | None = None,
        scanner: str = "sim://queue",
        gate: str = "sim://gate?passage_ms=10",
        extra: str = "",
    ) -> Path:
        text = GATE_TOML.format(
            entry=entry,
            stale_list=stale_list,
            repeat_window_ms=repeat_window_ms,
            passage_timeout_s=passage_timeout_s,
            scanner=scanner,
            gate=gate,
            revocations=", ".join(f'"{r}"' for r in revocations or []),
        )
        path = keys_dir.parent / "gate.toml"
        path.write_text(text + extra)
        return path

    return write


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `hardware` run only where GATE_AGENT_HARDWARE=1 says real devices are wired."""
    import os

    if os.environ.get("GATE_AGENT_HARDWARE") == "1":
        return
    skip = pytest.mark.skip(reason="needs real hardware (set GATE_AGENT_HARDWARE=1)")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPair]:
    """A socat pty pair (scanner side and host side), killed after the test."""
    pair = PtyPair(tmp_path)
    pair.start()
    try:
        yield pair
    finally:
        pair.kill()
