"""Two lanes of one `gate-agent run`, each with a real serial scanner (socat ptys): each reader
decides at its own lane, and when one reader is pulled, health names that lane."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from agent.issuer import Issuer
from tests import needs
from tests.hubproc import free_port
from tests.lanesconf import write_lanes_config
from tests.polling import until_sync
from tests.serial_pty import SOCAT, PtyPair

pytestmark = needs.mark(SOCAT, "socat (the serial tests run on ptys)")
EXE = (sys.executable, "-m", "agent")


def ga(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def _status(path: Path) -> dict[str, Any]:
    done = ga("status", "--config", path, "--json")
    return json.loads(done.stdout) if done.stdout else {}


def _online(path: Path) -> list[bool]:
    return [ln["scanner_online"] for ln in _status(path).get("lanes", [])]


def _events(path: Path) -> list[dict[str, Any]]:
    done = ga("events", "--config", path, "--json", "--last", "100")
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_each_reader_decides_at_its_lane_and_a_pulled_one_is_named(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    pairs = {}
    for name in ("in", "out"):
        (tmp_path / name).mkdir()
        pairs[name] = PtyPair(tmp_path / name)
        pairs[name].start()
    port = free_port()
    path = write_lanes_config(
        keys_dir.parent / "gate.toml", keys="keys", extra="",
        lanes=[
            {"name": name, "direction": direction, "scanner": pairs[name].url(),
             "gate": f"sim://gate-{name}?passage_ms=1"}
            for name, direction in (("in", "entry"), ("out", "exit"))
        ],
        policy={"entry": "reentry"}, status={"listen": f"127.0.0.1:{port}"},
    )  # fmt: skip
    proc = subprocess.Popen(
        [*EXE, "run", "--config", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        until_sync(
            lambda: proc.poll() is not None or _online(path) == [True, True],
            within_s=20,
            what="both serial scanners online",
        )
        assert proc.poll() is None
        text = iss.ticket(event=1, zones=[1])
        pairs["in"].write(text.encode() + b"\r\n")
        until_sync(lambda: len(_events(path)) == 1, what="the entry at lane in")
        pairs["out"].write(text.encode() + b"\r\n")
        until_sync(lambda: len(_events(path)) == 2, what="the exit at lane out")
        assert [(e["lane"], e["kind"], e["verdict"]) for e in _events(path)] == [
            ("in", "entry", "admit"), ("out", "exit", "admit"),
        ]  # fmt: skip

        pairs["out"].kill()  # the exit reader's cable pulled
        until_sync(
            lambda: "scanner offline (out)" in _status(path).get("health", {}).get("reasons", []),
            what="health naming lane out",
        )
        assert "scanner offline (in)" not in _status(path)["health"]["reasons"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        assert 'gate_device_up{device="out/scanner"} 0.0' in metrics
        assert 'gate_device_up{device="in/scanner"} 1.0' in metrics
        summary = ga("status", "--config", path).stdout
        assert "lane out (exit): scanner OFFLINE" in summary
        assert "lane in (entry): scanner online" in summary
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        for pair in pairs.values():
            pair.kill()
    assert proc.returncode == 0, err
    assert text not in err
