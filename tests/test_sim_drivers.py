"""The simulated drivers as a test or an integrator drives them: files, stdin, a Unix socket."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.errors import DriverError, DriverNotFound
from agent.issuer import Issuer
from drivers import registry
from drivers.sim import SimGate, SimScanner
from tests.gateconf import write_gate_config
from tests.polling import until_sync


async def _collect(scanner: SimScanner) -> list[str]:
    """Each scan's text; a line read but refused as ``refused: <why>``."""
    return [s.text if s.refused is None else f"refused: {s.refused}" async for s in scanner.scans()]


async def test_file_scanner_yields_lines_then_ends(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("one\r\n\ntwo\n" + "x" * 5000 + "\nthree")
    scanner = registry.create("scanner", "sim://file?path=s.txt", tmp_path)
    await scanner.open()
    assert await asyncio.wait_for(_collect(scanner), 5) == [
        "one",
        "two",
        "refused: a code of 5,000 characters, over the reader's 4,096",
        "three",
    ]
    await scanner.close()


async def test_file_scanner_passes_a_line_that_is_not_utf8_on(tmp_path: Path) -> None:
    """Found in a security trial: one line of bytes that are not UTF-8 in the scan file stopped
    the gate at start (exit 2), the valid tickets after it undecided. The line is a scan like
    any (its bad bytes replaced, as on stdin and the socket); the lane denies it."""
    (tmp_path / "s.txt").write_bytes(b"TK1:\xff\xfeBAD\nnext\n")
    scanner = registry.create("scanner", "sim://file?path=s.txt", tmp_path)
    await scanner.open()
    assert await asyncio.wait_for(_collect(scanner), 5) == ["TK1:\ufffd\ufffdBAD", "next"]
    await scanner.close()


async def test_socket_scanner_takes_lines_from_clients(tmp_path: Path) -> None:
    path = tmp_path / "scan.sock"
    scanner = SimScanner.from_url(f"sim://socket?path={path}")
    await scanner.open()
    _reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"alpha\nbeta\n")
    await writer.drain()
    writer.close()
    got = [await anext(aiter(scanner.scans())) for _ in range(2)]
    assert [s.text for s in got] == ["alpha", "beta"]
    await scanner.close()


async def test_gate_modes_and_pulse_log(tmp_path: Path) -> None:
    gate = registry.create("gate", "sim://gate?plan=pass,none&log=p.log&passage_ms=5", tmp_path)
    assert isinstance(gate, SimGate)
    await gate.open()
    await gate.grant("entry", "e1")
    assert await gate.wait_passage(1.0) is True
    await gate.grant("entry", "e2")
    assert await gate.wait_passage(0.05) is False
    await gate.grant("entry", "e3")  # plan used up: passage_ms applies
    assert await gate.wait_passage(1.0) is True
    await gate.close()
    assert [line.split()[3] for line in (tmp_path / "p.log").read_text().splitlines()] == [
        "e1",
        "e2",
        "e3",
    ]
    commanded = SimGate.from_url("sim://gate?passage=command")
    await commanded.grant("entry", "x")
    asyncio.get_running_loop().call_later(0.05, commanded.passage)
    assert await commanded.wait_passage(2.0) is True
    await commanded.grant("entry", "y")
    assert await commanded.wait_passage(0.05) is False


@pytest.mark.parametrize(
    ("kind", "url", "error", "words"),
    [
        ("scanner", "nfc://reader-1", DriverNotFound, "valid schemes: camera://"),
        (
            "gate",
            "sim://gate?passage=sometimes",
            DriverError,
            r"passage must be one of auto\|never\|command, not .sometimes.",
        ),
        ("gate", "sim://gate?plan=pass,maybe", DriverError, "pass/none"),
        ("scanner", "sim://file", DriverError, "missing path="),
        ("scanner", "sim://carrier-pigeon", DriverError, "unknown mode"),
        (
            "scanner",
            "sim://queue?speed=1",
            DriverError,
            r"unknown parameter speed \(valid: end, interval_ms, source\)$",
        ),
        ("gate", "sim://gate?passage_ms=soon", DriverError, "passage_ms must be an integer >= 0"),
        (
            "gate",
            "sim://stdin",
            DriverError,
            "sim://stdin is a scanner; a simulated gate is sim://gate",
        ),
        ("indicator", "sim://queue", DriverError, "a simulated indicator is sim://indicator"),
    ],
)
def test_bad_urls_fail_clearly(
    kind: registry.Kind, url: str, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        registry.create(kind, url)


@pytest.mark.parametrize(
    ("scanner", "gate", "words"),
    [
        ("sim://queue", "sim://gate?log=LOGDIR/missing/p.log", "sim gate: cannot open log= "),
        ("sim://queue", "sim://gate?log=LOGDIR", "sim gate: cannot open log= "),
        ("sim://socket?path=LOGDIR/missing/s.sock", "sim://gate", "sim scanner: cannot listen"),
        ("sim://socket?path=LOGDIR/" + "s" * 120, "sim://gate", "sim scanner: cannot listen"),
    ],
    ids=["log-in-missing-folder", "log-a-folder", "socket-in-missing-folder", "socket-too-long"],
)
def test_a_sim_device_on_a_path_it_cannot_use_is_one_line_not_a_traceback(
    keys_dir: Path, tmp_path: Path, scanner: str, gate: str, words: str
) -> None:
    """Found trying the product: the README's desk devices with a log= or socket path in a
    missing folder, a folder, or past the 107 bytes a Unix socket takes stopped `run` with
    "internal error" and a traceback."""
    devices = {"scanner": scanner.replace("LOGDIR", str(tmp_path)),
               "gate": gate.replace("LOGDIR", str(tmp_path))}  # fmt: skip
    conf = write_gate_config(tmp_path / "gate.toml", keys=keys_dir, devices=devices)
    r = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(conf)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def _gate_config(tmp_path: Path, keys_dir: Path, scanner: str) -> Path:
    """A minimal gate config: the given scanner, a sim turnstile logging its pulses."""
    return write_gate_config(
        tmp_path / "gate.toml",
        keys=keys_dir,
        gate={"id": "sim-gate", "zone": None},
        devices={"scanner": scanner, "gate": "sim://gate?passage_ms=1&log=pulses.log"},
    )


def test_daemon_reads_a_socket_and_stops_on_sigterm(
    iss: Issuer, keys_dir: Path, tmp_path: Path
) -> None:
    sock = tmp_path / "scan.sock"
    conf = _gate_config(tmp_path, keys_dir, f"sim://socket?path={sock}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(conf)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        until_sync(sock.exists, 20, "the gate's scanner socket appears")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall((iss.ticket(event=1) + "\n").encode())
        pulses = tmp_path / "pulses.log"
        until_sync(lambda: pulses.exists() and pulses.read_text(), 20, "a relay pulse logged")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "verdict=admit" in err and "stopping" in err
    assert len((tmp_path / "pulses.log").read_text().splitlines()) == 1


@pytest.mark.parametrize("tickets", [0, 1], ids=["dev-null", "file"])
def test_stdin_scanner_reads_a_file_or_dev_null_as_a_service_gives_it(
    iss: Issuer, keys_dir: Path, tmp_path: Path, tickets: int
) -> None:
    # systemd gives a service /dev/null as stdin, which epoll cannot watch: no traceback, and a
    # redirected file is read like a stream.
    feed = tmp_path / "in.txt"
    feed.write_text("".join(iss.ticket(event=1) + "\n" for _ in range(tickets)))
    conf = _gate_config(tmp_path, keys_dir, "sim://stdin")
    with open(feed if tickets else "/dev/null", "rb") as stdin:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(conf)],
            stdin=stdin, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    try:
        pulses = tmp_path / "pulses.log"
        until_sync(
            lambda: (
                (tickets and pulses.exists() and pulses.read_text())
                or (not tickets and (tmp_path / "state" / "journal.db").exists())
            ),
            20,
            "the gate runs (a pulse logged, or its journal made)",
        )
        time.sleep(0.5)  # the scenario: running a while on that stdin, time for a fault to show
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "ERROR" not in err, err
    assert err.count("verdict=admit") == tickets
