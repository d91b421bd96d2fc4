"""`gate-agent selftest --hub` against a real hub process with TLS and client certificates.

Each wrong setting an integrator can make (CA, client certificate, token, venue, address) gives a
FAIL line naming it, with the fix, and exit 1; a right one gives five OK lines and exit 0.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hubgate import write_gate
from tests.hubproc import (
    HubProcess,
    HubSetup,
    TlsFiles,
    add_token,
    free_port,
    make_tls,
    write_hub_config,
)
from tests.polling import until_sync

EXE = (sys.executable, "-m", "agent")


@dataclass(frozen=True)
class Venue:
    setup: HubSetup
    tls: TlsFiles
    keys: Path
    tokens: dict[str, str]
    proc: HubProcess


@pytest.fixture
def venue(tmp_path: Path, keys_dir: Path) -> Iterator[Venue]:
    tls = make_tls(tmp_path / "tls", client_cns=("gate-a", "gate-b"))
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, tls=tls)
    tokens = {gate: add_token(setup, gate_id=gate) for gate in ("gate-a", "gate-b")}
    with HubProcess(setup) as proc:
        yield Venue(setup, tls, keys_dir, tokens, proc)


def _gate(
    v: Venue,
    dir: Path,
    *,
    token: str | None = None,
    cert: str | None = "gate-a",
    ca: Path | None = None,
    url: str | None = None,
    venue: str = "venue-1",
) -> Path:
    tls = f'ca = "{ca or v.tls.ca}"\n'
    if cert is not None:
        tls += f'cert = "{v.tls.ca.parent / cert}.crt"\nkey = "{v.tls.ca.parent / cert}.key"\n'
    return write_gate(
        dir, v.keys, gate_id="gate-a", name="Gate A", url=url or v.setup.url,
        token=token or v.tokens["gate-a"], venue=venue, hub_extra=tls,
    )  # fmt: skip


def _selftest(config: Path) -> tuple[int, list[str], str]:
    done = subprocess.run(
        [*EXE, "selftest", "--hub", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout.splitlines(), done.stdout + done.stderr


def _marks(lines: list[str]) -> list[str]:
    """``"OK url"``, ``"FAIL cert"``...: the verdict and step of each line, fixes left out."""
    return [" ".join(line.split()[:2]) for line in lines if not line.startswith("     fix:")]


def test_a_right_setup_passes_every_step(venue: Venue, tmp_path: Path) -> None:
    code, lines, everything = _selftest(_gate(venue, tmp_path / "g"))
    assert code == 0, everything
    assert _marks(lines) == ["OK url", "OK ca", "OK cert", "OK token", "OK venue"]
    assert venue.tokens["gate-a"] not in everything
    assert "the hub serves venue 'venue-1'" in everything
    # No false alarm in the hub's log (found trying the product: every run left "TLS handshake
    # from 127.0.0.1 refused ... check its [hub] ca"). A refusal from 127.0.0.2 afterwards
    # shows that the hub logs them, and that the selftest's connections were all handled.
    with socket.create_connection(("127.0.0.1", venue.setup.port), 5, ("127.0.0.2", 0)):
        pass  # closed before any handshake
    until_sync(lambda: "TLS handshake from 127.0.0.2" in venue.proc.log_tail(20_000), 10)
    assert "TLS handshake from 127.0.0.1" not in venue.proc.log_tail(20_000)


def test_each_wrong_setting_is_named_with_its_fix(
    venue: Venue, tmp_path: Path, keys_dir: Path
) -> None:
    other_ca = make_tls(tmp_path / "other-tls").ca
    cases = {
        "wrong CA": (
            _gate(venue, tmp_path / "1", ca=other_ca),
            ["OK url", "FAIL ca", "SKIP cert", "SKIP token", "SKIP venue"],
            "set [hub] ca to the CA certificate that signed the hub's [tls] cert",
        ),
        "no client certificate": (
            _gate(venue, tmp_path / "2", cert=None),
            ["OK url", "OK ca", "OK cert", "OK token", "FAIL cert", "SKIP venue"],
            "set [hub] cert and key to a certificate with CN = gate-a",
        ),
        "another gate's certificate": (
            _gate(venue, tmp_path / "3", cert="gate-b"),
            ["OK url", "OK ca", "OK cert", "OK token", "FAIL cert", "SKIP venue"],
            "CN = gate-a",
        ),
        "another gate's token": (
            _gate(venue, tmp_path / "4", token=venue.tokens["gate-b"]),
            ["OK url", "OK ca", "OK cert", "FAIL token", "SKIP venue"],
            "the token is not gate gate-a's: make one on the hub: gate-agent hub token",
        ),
        "unknown token": (
            _gate(venue, tmp_path / "5", token="x" * 43),
            ["OK url", "OK ca", "OK cert", "FAIL token", "SKIP venue"],
            "make a token for gate gate-a on the hub",
        ),
        "another venue": (
            _gate(venue, tmp_path / "6", venue="venue-2"),
            ["OK url", "OK ca", "OK cert", "OK token", "FAIL venue"],
            "set [gate] venue = 'venue-1'",
        ),
        "nothing at the address": (
            _gate(venue, tmp_path / "7", url=f"https://127.0.0.1:{free_port()}"),
            ["FAIL url", "SKIP ca", "SKIP cert", "SKIP token", "SKIP venue"],
            "is the hub running",
        ),
    }
    for what, (config, marks, fix) in cases.items():
        code, lines, everything = _selftest(config)
        assert code == 1, (what, everything)
        assert _marks(lines) == marks, (what, everything)
        assert fix in everything, (what, everything)
        assert "Traceback" not in everything
        assert all(token not in everything for token in venue.tokens.values())


def test_a_gate_without_a_hub_section_is_a_config_error(
    venue: Venue, tmp_path: Path, keys_dir: Path
) -> None:
    config = write_gate(tmp_path / "g", keys_dir, gate_id="gate-a", name="Gate A", url=None)
    code, lines, everything = _selftest(config)
    assert code == 78 and lines == []
    assert f"{config}: no [hub] section" in everything
