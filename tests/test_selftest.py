"""`gate-agent selftest`: what an integrator sees at the turnstile."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from agent import revocation_issuer
from agent.app.selftest import device_path, diagnose_path
from agent.issuer import Issuer
from drivers.camera_synth import code_image
from tests.gateconf import write_gate_config
from tests.lanesconf import write_lanes_config


def _config(tmp_path: Path, keys: Path, scanner: str, gate: str) -> Path:
    return write_gate_config(
        tmp_path / "gate.toml",
        keys=keys,
        gate={"id": "st"},
        devices={"scanner": scanner, "gate": gate},
        status=None,
    )


def _selftest(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "selftest", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sim_devices_pass_relay_pulses_and_scan_shows_verdict(
    tmp_path: Path, keys_dir: Path, iss: Issuer
) -> None:
    text = iss.ticket(event=1, zones=[2])
    (tmp_path / "scans.txt").write_text(text + "\n")
    conf = _config(
        tmp_path, keys_dir, "sim://file?path=scans.txt", "sim://gate?passage_ms=1&log=pulses.log"
    )
    r = _selftest("--config", conf, "--relay", "--scan")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK   scanner" in r.stdout and "OK   gate" in r.stdout and "OK   relay" in r.stdout
    assert "would deny (wrong_zone)" in r.stdout and "tk1 ticket" in r.stdout
    assert text not in r.stdout + r.stderr
    assert (tmp_path / "pulses.log").read_text().count("pulse") == 1


def test_missing_device_fails_with_a_fix(tmp_path: Path, keys_dir: Path) -> None:
    conf = _config(tmp_path, keys_dir, "sim://file?path=absent.txt", "sim://gate")
    r = _selftest("--config", conf)
    assert r.returncode == 1
    assert "FAIL scanner" in r.stdout and "absent.txt" in r.stdout
    assert "OK   gate" in r.stdout
    assert "fix:" in r.stdout


def test_unknown_scheme_is_a_config_error_naming_the_key(tmp_path: Path, keys_dir: Path) -> None:
    # Issue 12: device URLs are checked when the config loads (exit 78), not when opened.
    conf = _config(tmp_path, keys_dir, "sim://file?path=absent.txt", "nfc://reader")
    r = _selftest("--config", conf)
    assert r.returncode == 78 and r.stdout == ""
    assert "[devices] gate: no gate driver for 'nfc://reader'" in r.stderr
    assert "valid schemes" in r.stderr


def test_config_error_exits_78(tmp_path: Path) -> None:
    conf = tmp_path / "gate.toml"
    conf.write_text("[gate]\nid = 1\n")
    r = _selftest("--config", conf)
    assert r.returncode == 78 and "[gate] id" in r.stderr


def test_path_diagnosis() -> None:
    assert device_path("serial:///dev/serial/by-id/usb-X") == Path("/dev/serial/by-id/usb-X")
    assert device_path("gpio://gpiochip0?relay=GPIO17") == Path("/dev/gpiochip0")
    # As the drivers read them: a chip by its path, a path percent-encoded.
    assert device_path("gpio:///dev/gpiochip4?relay=GPIO17") == Path("/dev/gpiochip4")
    assert device_path("serial:///dev/serial/by-id/usb-My%20Scanner") == Path(
        "/dev/serial/by-id/usb-My Scanner"
    )
    assert device_path("camera:///dev/video2?width=640") == Path("/dev/video2")
    assert device_path("sim://gate") is None
    assert device_path("gpio://not a chip") is None  # the driver's own error says why
    fix = diagnose_path(Path("/dev/serial/by-id/no-such-scanner"), "serial")
    assert "does not exist" in fix and "udev" in fix
    assert diagnose_path(Path("/dev/null"), "camera") == ""  # exists and is readable


def test_absent_serial_scanner_fails_with_the_fix(tmp_path: Path, keys_dir: Path) -> None:
    conf = _config(
        tmp_path, keys_dir, "serial:///dev/serial/by-id/usb-no-such-scanner", "sim://gate"
    )
    r = _selftest("--config", conf)
    assert r.returncode == 1, r.stdout
    assert "FAIL scanner" in r.stdout and "does not exist" in r.stdout and "udev" in r.stdout
    assert "OK   gate" in r.stdout


def test_absent_gpio_chip_named_by_path_is_the_one_diagnosed(
    tmp_path: Path, keys_dir: Path
) -> None:
    """Found auditing: the selftest read gpio:///dev/gpiochip4 as gpiochip0 and diagnosed that."""
    conf = _config(tmp_path, keys_dir, "sim://stdin", "gpio:///dev/gpiochip97?relay=GPIO17")
    r = _selftest("--config", conf)
    assert r.returncode == 1, r.stdout
    assert "FAIL gate" in r.stdout and "/dev/gpiochip97 does not exist" in r.stdout, r.stdout
    assert "gpiochip0" not in r.stdout


def test_scan_verdict_uses_the_gates_lists(tmp_path: Path, keys_dir: Path, iss: Issuer) -> None:
    from agent import revocation_issuer, tickets

    text = iss.ticket(event=1, zones=[1])
    (tmp_path / "rev.json").write_bytes(
        revocation_issuer.issue_delta(
            iss.list_key, keys_dir / "st", revoke=[tickets.parse(text).revocation_key]
        )
    )
    (tmp_path / "scans.txt").write_text(text + "\n")
    conf = _config(tmp_path, keys_dir, "sim://file?path=scans.txt", "sim://gate")
    conf.write_text(
        conf.read_text().replace("[clock]", '[revocation]\nfiles = ["rev.json"]\n[clock]')
    )
    r = _selftest("--config", conf, "--scan")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "would deny (revoked)" in r.stdout


def test_a_refused_read_fails_the_scan_step_saying_why(tmp_path: Path, keys_dir: Path) -> None:
    """A review: a read the driver refuses (here a code over the sim reader's 4,096 cap) passed
    the scan step as "read 0 characters; would deny". It fails, with the reason and the fix."""
    (tmp_path / "scans.txt").write_text("Q" * 5000 + "\n")
    conf = _config(tmp_path, keys_dir, "sim://file?path=scans.txt", "sim://gate")
    r = _selftest("--config", conf, "--scan")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL scan" in r.stdout
    assert "read a code of 5,000 characters, over the reader's 4,096" in r.stdout
    assert "max_frame" in r.stdout and "Q" * 50 not in r.stdout + r.stderr


def test_selftest_checks_every_lane_and_opens_a_shared_turnstile_once(
    tmp_path: Path, keys_dir: Path, iss: Issuer
) -> None:
    (tmp_path / "in.txt").write_text(iss.ticket(event=1, zones=[1]) + "\n")
    (tmp_path / "out.txt").write_text(iss.ticket(event=1, zones=[1]) + "\n")
    shared = "sim://gate?passage_ms=1&log=pulses.log"
    conf = write_lanes_config(
        tmp_path / "gate.toml", keys=keys_dir, extra="", status=None,
        lanes=[
            {"name": "in", "direction": "entry", "scanner": "sim://file?path=in.txt",
             "gate": shared},
            {"name": "out", "direction": "exit", "scanner": "sim://file?path=out.txt",
             "gate": shared, "indicator": "sim://indicator"},
        ],
    )  # fmt: skip
    r = _selftest("--config", conf, "--relay", "--scan")
    assert r.returncode == 0, r.stdout + r.stderr
    for line in (
        "OK   in/scanner    sim://file?path=in.txt",
        "OK   in/gate       " + shared,
        "OK   in/relay      one entry release sent",
        "OK   out/gate      " + shared + " (shared, see above)",
        "OK   out/indicator sim://indicator",
        "OK   out/relay     one exit release sent",
    ):
        assert line in r.stdout, r.stdout
    assert r.stdout.count("would admit") == 2
    pulses = (tmp_path / "pulses.log").read_text().splitlines()
    assert [p.split()[2] for p in pulses] == ["entry", "exit"]  # one device, each lane's direction

    (tmp_path / "in.txt").unlink()  # a lane whose scanner fails is named
    r = _selftest("--config", conf)
    assert r.returncode == 1 and "FAIL in/scanner" in r.stdout and "OK   out/scanner" in r.stdout


def test_a_file_camera_source_gets_camera_advice_not_serial_advice(
    tmp_path: Path, keys_dir: Path
) -> None:
    """Found in a user trial: a camera's file source that played out with no code said "nothing
    read in 30 s" at once, with the fix "check the scanner's interface mode and terminator"; a
    code over the camera's cap was met with "the scanner's baud rate"."""
    frames = tmp_path / "frames"
    frames.mkdir()
    assert cv2.imwrite(str(frames / "blank.png"), np.full((120, 160), 255, np.uint8))
    conf = _config(tmp_path, keys_dir, "file://frames/?fps=0", "sim://gate")
    r = _selftest("--config", conf, "--scan")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL scan      the scanner's stream ended with nothing read" in r.stdout, r.stdout
    assert "fix: check the files hold a ticket's code (gate-agent check --image FILE)" in r.stdout
    assert "terminator" not in r.stdout and "30 s" not in r.stdout

    (frames / "blank.png").unlink()
    assert cv2.imwrite(str(frames / "long.png"), code_image("7" * 5000, module_px=2))
    r = _selftest("--config", conf, "--scan")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL scan      read a code of 5,000 characters" in r.stdout, r.stdout
    assert "fix: the file holds a code longer than any ticket: not a ticket" in r.stdout
    assert "baud" not in r.stdout


def test_a_gate_with_no_list_and_no_hub_is_told_it_starts_degraded(
    tmp_path: Path, keys_dir: Path, iss: Issuer
) -> None:
    """Found in a user trial: a profile's gate (revocation files = [], no hub) passed the
    install's check and then ran degraded, "revocation list stale", with nothing said why."""
    conf = _config(tmp_path, keys_dir, "sim://stdin", "sim://gate")
    r = _selftest("--config-only", "--config", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    warn = [line for line in r.stdout.splitlines() if line.startswith("WARN")]
    assert warn == [
        f"WARN config    {conf}: [revocation] files: no list, and no [hub] to fetch one from: the"
        " gate starts with no revocation list, health degraded (revocation list stale), every"
        " ticket admitted, flagged list_stale ([policy] stale_list); give it a signed list in"
        " [revocation] files (a first one: gate-agent revoke --keys DIR --out FILE"
        " 00000000000000000000000000000000)"
    ]
    (tmp_path / "rev.json").write_bytes(
        revocation_issuer.issue_delta(iss.list_key, keys_dir / "st", revoke=[bytes(16)])
    )
    conf.write_text(conf.read_text() + '\n[revocation]\nfiles = ["rev.json"]\n')
    r = _selftest("--config-only", "--config", conf)
    assert r.returncode == 0 and "WARN" not in r.stdout, r.stdout + r.stderr


def test_a_keyboard_wedge_scanner_gets_keyboard_advice(tmp_path: Path, keys_dir: Path) -> None:
    """A review: a hid:// scanner that read nothing was told to check its baud rate."""
    from agent.app import config as cfg
    from agent.app.selftest import _scan
    from drivers.sim import SimScanner

    (tmp_path / "empty.txt").write_text("")
    conf = cfg.load(_config(tmp_path, keys_dir, "sim://file?path=empty.txt", "sim://gate"))

    async def scan_once() -> tuple[bool, str, str | None]:
        scanner = SimScanner("file", path=tmp_path / "empty.txt")
        await scanner.open()
        try:
            check = await _scan(conf, scanner, "hid:///dev/input/by-id/usb-x-event-kbd", 5.0)
        finally:
            await scanner.close()
        return check.ok, check.detail, check.fix

    ok, detail, fix = asyncio.run(scan_once())
    assert (ok, detail) == (False, "the scanner's stream ended with nothing read")
    assert fix is not None and "USB keyboard (HID) mode" in fix and "baud" not in fix


def test_a_plain_http_hub_off_this_machine_is_warned_of(tmp_path: Path, keys_dir: Path) -> None:
    """Found in a user trial: a gate whose hub url was http:// passed the check with no word,
    though its token (a bearer credential: whoever holds it writes as the gate) crossed the
    network in clear."""
    for url, warned in (("http://hub.example:8470", True), ("http://127.0.0.1:8470", False),
                        ("https://hub.example:8470", False)):  # fmt: skip
        conf = write_gate_config(
            tmp_path / "gate.toml", keys=keys_dir, gate={"id": "st"}, status=None,
            devices={"scanner": "sim://stdin", "gate": "sim://gate"},
            hub={"url": url, "token": "not-a-real-token-but-long-enough"},
        )  # fmt: skip
        conf.chmod(0o600)  # its token written in it: readable by others, that is warned of too
        r = _selftest("--config-only", "--config", conf)
        assert r.returncode == 0, r.stdout + r.stderr
        warn = [line for line in r.stdout.splitlines() if line.startswith("WARN")]
        expected = [
            f"WARN config    {conf}: [hub] url: http://hub.example:8470: not https, so the gate's"
            " token and the venue's rows cross the network in clear, and anyone on it can copy"
            " the token and write as this gate: give the hub TLS (docs/first-venue.md) and an"
            " https:// url"
        ]
        assert warn == (expected if warned else []), url
        assert "not-a-real-token" not in r.stdout + r.stderr
