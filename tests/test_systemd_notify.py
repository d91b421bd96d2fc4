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
import sys
import time
import urllib.request
from pathlib import Path

from agent import revocation_issuer
from agent.issuer import Issuer
from tests.conftest import WriteConfig
from tests.hubproc import free_port


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
    path = write_config()
    delta = revocation_issuer.issue_delta(iss.list_key, path.parent / "rev.state.json")
    (path.parent / "revocations-1.json").write_bytes(delta)
    port = free_port()
    path = write_config(
        revocations=["revocations-1.json"],
        scanner="sim://socket?path=scan.sock",
        extra=f'\n[status]\nlisten = "127.0.0.1:{port}"\n',
    )
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    env = os.environ | {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
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
