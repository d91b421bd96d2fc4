"""Several lanes in one `gate-agent run` process: an entry and an exit lane over one journal.

Re-entry after exit works offline on one unit (both lanes read the same history), with no hub at
all and with a hub configured but down; `events`, `status` and /metrics show every lane.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.issuer import Issuer
from tests.hubproc import free_port
from tests.lanesconf import write_lanes_config
from tests.polling import until_sync

EXE = (sys.executable, "-m", "agent")


def ga(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def _lane(name: str, direction: str) -> dict[str, object]:
    return {
        "name": name,
        "direction": direction,
        "scanner": f"sim://socket?path={name}.sock",
        "gate": f"sim://gate?passage_ms=1&log={name}.pulses",
    }


def _start(
    path: Path, port: int, sockets: tuple[str, ...] = ("in", "out")
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*EXE, "run", "--config", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"JOURNAL_STREAM": ""},
    )  # fmt: skip
    until_sync(
        lambda: (
            proc.poll() is not None
            or (
                all((path.parent / f"{n}.sock").exists() for n in sockets)
                and ga("status", "--config", path).returncode != 2
            )
        ),
        within_s=20,
        what="the gate's scanners and its status server",
    )
    assert proc.poll() is None, "gate did not start"
    return proc


def _events(path: Path) -> list[dict[str, Any]]:
    done = ga("events", "--config", path, "--json", "--last", "100")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _scan(path: Path, lane: str, text: str) -> dict[str, Any]:
    """Present ``text`` at ``lane``'s scanner and return the decision recorded for it."""
    before = len(_events(path))
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path.parent / f"{lane}.sock"))
        s.sendall(text.encode() + b"\n")
    until_sync(lambda: len(_events(path)) > before, what=f"a decision at lane {lane}")
    event = _events(path)[before]
    assert event["lane"] == lane
    return event


@pytest.mark.parametrize("hub", ["none", "down"])
def test_reentry_after_exit_on_one_unit_offline(keys_dir: Path, iss: Issuer, hub: str) -> None:
    port = free_port()
    hub_section = (
        {"url": f"http://127.0.0.1:{free_port()}", "token": "gate-token", "heartbeat_s": 1.0,
         "offline_after_s": 2.0, "retry_max_s": 1.0}
        if hub == "down"
        else None
    )  # fmt: skip
    path = write_lanes_config(
        keys_dir.parent / "gate.toml",
        keys="keys",
        lanes=[_lane("in", "entry"), _lane("out", "exit")],
        gate={"id": "unit-7", "name": "Unit 7"},
        policy={"entry": "reentry"},
        lane={"repeat_window_ms": 0},
        status={"listen": f"127.0.0.1:{port}"},
        hub=hub_section,
    )
    proc = _start(path, port)
    try:
        text = iss.ticket(event=1, zones=[1])
        first = _scan(path, "in", text)
        assert (first["kind"], first["verdict"]) == ("entry", "admit")
        again = _scan(path, "in", text)
        assert again["verdict"] == "deny"  # inside already: no second entry without an exit
        out = _scan(path, "out", text)
        assert (out["kind"], out["verdict"]) == ("exit", "admit")
        back = _scan(path, "in", text)
        assert (back["kind"], back["verdict"], back["ticket"]) == (
            "entry",
            "admit",
            first["ticket"],
        )
        if hub == "down":
            assert back["offline"] and "offline" in back["flags"]
        folder = path.parent
        assert (folder / "in.pulses").read_text().count(" entry ") == 2
        assert (folder / "out.pulses").read_text().count(" exit ") == 1

        status = json.loads(ga("status", "--config", path, "--json").stdout)
        assert [(ln["name"], ln["direction"]) for ln in status["lanes"]] == [
            ("in", "entry"), ("out", "exit"),
        ]  # fmt: skip
        summary = ga("status", "--config", path).stdout
        assert "lane in (entry): scanner online" in summary
        assert "lane out (exit): scanner online" in summary
        # Four rows; with a hub (down) they wait for upload, with none there is nothing to upload.
        upload = (
            "  journal 4 rows, 4 waiting for upload\n" if hub == "down" else "  journal 4 rows\n"
        )
        assert upload in summary
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        assert 'gate_scans_total{lane="in",reason="ok",verdict="admit"} 2.0' in metrics
        assert 'gate_scans_total{lane="out",reason="ok",verdict="admit"} 1.0' in metrics
        assert 'gate_device_up{device="out/relay"} 1.0' in metrics
        lines = ga("events", "--config", path).stdout.splitlines()
        assert len(lines) == 4 and " out " in lines[2] and " exit " in lines[2]
        assert text not in summary + "".join(lines)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "lanes in (entry), out (exit)" in err


def test_two_lanes_on_one_turnstile_in_one_process(keys_dir: Path, iss: Issuer) -> None:
    port = free_port()
    shared = "sim://gate?passage_ms=1&log=pulses.log"
    path = write_lanes_config(
        keys_dir.parent / "gate.toml", keys="keys", extra="",
        lanes=[_lane("in", "entry") | {"gate": shared}, _lane("out", "exit") | {"gate": shared}],
        policy={"entry": "reentry"}, status={"listen": f"127.0.0.1:{port}"},
        # The third scan is the first one's text at the same reader: within the default 2 s
        # it would be one presentation (the repeat window), not the re-entry this test is about.
        lane={"repeat_window_ms": 0},
    )  # fmt: skip
    proc = _start(path, port)
    try:
        text = iss.ticket(event=1, zones=[1])
        assert _scan(path, "in", text)["verdict"] == "admit"
        assert _scan(path, "out", text)["verdict"] == "admit"
        assert _scan(path, "in", text)["verdict"] == "admit"
        pulses = (path.parent / "pulses.log").read_text().splitlines()
        assert [line.split()[2] for line in pulses] == ["entry", "exit", "entry"]
        summary = ga("status", "--config", path).stdout
        assert "lane in (entry): scanner online, turnstile shared with out" in summary
        assert "lane out (exit): scanner online, turnstile shared with in" in summary
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def test_a_lane_whose_camera_file_played_out_shows_its_scanner_offline(
    keys_dir: Path, iss: Issuer
) -> None:
    """Found in a user trial: a camera lane reading a folder of images (loop=0) ended with the
    folder, and status and the display went on saying "scanner online" for it."""
    port = free_port()
    frames = keys_dir.parent / "frames"
    frames.mkdir()
    assert cv2.imwrite(str(frames / "blank.png"), np.full((120, 160), 255, np.uint8))
    camera = {"name": "cam", "direction": "entry", "scanner": "file://frames/?fps=0",
              "gate": "sim://gate?passage_ms=1&log=cam.pulses"}  # fmt: skip
    path = write_lanes_config(
        keys_dir.parent / "gate.toml", keys="keys", lanes=[_lane("in", "entry"), camera],
        status={"listen": f"127.0.0.1:{port}"}, lane={"repeat_window_ms": 0},
    )  # fmt: skip
    proc = _start(path, port, sockets=("in",))
    try:
        until_sync(
            lambda: "scanner offline (cam)" in _health(path)["reasons"],
            what="the camera lane's scanner reported offline",
        )
        health = _health(path)
        assert health["status"] == "degraded" and "scanner offline (in)" not in health["reasons"]
        summary = ga("status", "--config", path).stdout
        assert "lane cam (entry): scanner OFFLINE" in summary
        assert "lane in (entry): scanner online" in summary
        # The other lane goes on deciding.
        assert _scan(path, "in", iss.ticket(event=1, zones=[1]))["verdict"] == "admit"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "lane cam: the scanner's stream ended: no more scans" in err


def _health(path: Path) -> dict[str, Any]:
    done = ga("status", "--config", path, "--json")
    health: dict[str, Any] = json.loads(done.stdout)["health"]
    return health
