"""`gate-agent run` under a systemd-like supervisor: READY, STATUS and WATCHDOG on NOTIFY_SOCKET.

The test binds the datagram socket systemd would, starts the real daemon as a process with
NOTIFY_SOCKET and WATCHDOG_USEC set, and reads what it sends; the status server answers on the
configured port meanwhile.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from agent.app.cli import EX_CONFIG
from agent.issuer import Issuer
from tests.conftest import WriteConfig
from tests.hubproc import EXE, free_port, fresh_list, gate_run


def _messages(sock: socket.socket, until: float) -> list[dict[str, str]]:
    found = []
    sock.settimeout(0.2)
    while time.monotonic() < until:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        found.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        if sum("WATCHDOG" in m for m in found) >= 3:
            break
    return found


def test_run_notifies_ready_then_pings_the_watchdog(
    write_config: WriteConfig, iss: Issuer, tmp_path: Path
) -> None:
    port = free_port()
    path = write_config(
        revocations=[fresh_list(iss, write_config().parent)],
        scanner="sim://socket?path=scan.sock",
        status={"listen": f"127.0.0.1:{port}"},
    )
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    env = os.environ | {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(
        gate_run(path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        messages = _messages(sock, time.monotonic() + 20)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            health = json.loads(reply.read())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        sock.close()
    assert messages, err.decode()[-2000:]
    first = messages[0]
    assert first["READY"] == "1" and first["STATUS"] == "ready"
    assert first["MAINPID"] == str(proc.pid)
    assert sum(m.get("WATCHDOG") == "1" for m in messages) >= 3
    assert health == {"status": "ready", "reasons": []}
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("zone = 1", "zone = 99"), "[gate] zone: expected a zone number 1-16, got 99"),
        (("[trust]", "[trust"), "not valid TOML"),
        (("[clock]", "[clock]\nbogus = 1"), "bogus"),
        (("root.pub", "missing.pub"), "missing.pub"),
    ],
    ids=["out-of-range", "toml-syntax", "unknown-key", "missing-key-file"],
)
def test_a_config_error_is_one_journal_line_and_a_no_restart_exit(
    write_config: WriteConfig, change: tuple[str, str], says: str
) -> None:
    path = write_config()
    text = path.read_text()
    assert change[0] in text
    path.write_text(text.replace(change[0], change[1], 1))
    env = os.environ | {"JOURNAL_STREAM": "8:1234"}  # as systemd starts the unit
    proc = subprocess.run(gate_run(path), env=env, capture_output=True, text=True, timeout=60)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"gate-agent: error: {path}") and says in lines[0]
    assert proc.returncode == EX_CONFIG
    # ... which both units name, so systemd does not restart into the same error.
    for unit in ("gate-agent.service", "gate-hub.service"):
        text = (Path(__file__).parents[1] / "systemd" / unit).read_text()
        assert f"\nRestartPreventExitStatus={EX_CONFIG}\n" in text
        assert "\nStartLimitIntervalSec=0\n" in text  # other failures: retried, never given up


def test_a_hub_config_error_exits_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[hub]\nlisten = "127.0.0.1:notaport"\n')
    proc = subprocess.run(
        [*EXE, "hub", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and str(path) in proc.stderr
