"""Disk full on the state directory: the gate keeps deciding, says so, and loses nothing.

The state directory is a real 4 MiB tmpfs (mounted by the test: CI runs as root), the gate the
real `gate-agent run` process with a socket scanner, the sim turnstile and the status server. The
test fills the filesystem to the last byte while the gate runs, scans, frees the space and scans
again, then reads the journal file the gate left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import revocation_issuer
from agent.issuer import Issuer
from tests.conftest import WriteConfig
from tests.hubproc import free_port
from tests.needs import need
from tests.polling import until_sync


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    need(done.returncode == 0, "a tmpfs mount (root)", done.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses another byte."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    with pytest.raises(OSError) as full, open(directory / "probe", "wb", buffering=0) as f:
        f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Gate:
    def __init__(self, conf: Path, port: int, pulses: Path, log: Path) -> None:
        self.port, self.pulses = port, pulses
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(conf)],
            stdin=subprocess.DEVNULL, stderr=open(log, "w"),  # noqa: SIM115
        )  # fmt: skip
        self.log = log
        proc = self.proc

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                _get(port, "/healthz")
            except OSError:
                return False
            return True

        until_sync(up, 30, "the gate's status server answers")
        self.sock = conf.parent / "scan.sock"
        self.scans = 0

    def scan(self, text: str) -> dict[str, Any]:
        """Present ``text``; returns what /status shows for it once it is decided."""
        self.scans += 1
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            s.sendall((text + "\n").encode())
        last: list[dict[str, Any]] = []

        def decided() -> bool:
            _, status = _get(self.port, "/status")
            last[:] = status["last"][:1]
            return bool(sum(status["last_hour"].values()) >= self.scans)

        try:
            until_sync(decided, 15, f"scan {self.scans} decided")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.log.read_text()[-2000:]}") from None
        return dict(last[0])

    def opened(self) -> int:
        return len(self.pulses.read_text().splitlines()) if self.pulses.exists() else 0


@pytest.mark.parametrize("policy", ["deny", "admit"])
def test_disk_full_keeps_deciding_reports_it_and_loses_nothing(
    write_config: WriteConfig, iss: Issuer, small_disk: Path, tmp_path: Path, policy: str
) -> None:
    port = free_port()
    pulses = tmp_path / "pulses.log"
    first = write_config()
    delta = revocation_issuer.issue_delta(iss.list_key, first.parent / "rev.state.json")
    (first.parent / "revocations-1.json").write_bytes(delta)  # a fresh list: health can be ready
    conf = write_config(
        revocations=["revocations-1.json"],
        scanner="sim://socket?path=scan.sock",
        gate=f"sim://gate?passage_ms=10&log={pulses}",
        status={"listen": f"127.0.0.1:{port}", "disk_free_min_mb": 1},
        state_dir=small_disk,
        lane={"on_journal_failure": policy},
    )
    gate = Gate(conf, port, pulses, tmp_path / "gate.log")
    try:
        before = [iss.ticket(event=1) for _ in range(3)]
        for ticket in before:
            assert gate.scan(ticket)["admitted"] is True
        assert gate.opened() == 3
        assert _get(port, "/healthz") == (200, {"status": "ready", "reasons": []})

        filler = _fill(small_disk)
        valid = iss.ticket(event=1)
        shown = gate.scan(valid)
        used = gate.scan(before[0])  # already used: the journal can still be read
        code, health = _get(port, "/healthz")
        assert code == 503 and "journal write failed (in)" in health["reasons"]
        assert any(r.startswith("disk space low (0 MB") for r in health["reasons"])
        if policy == "deny":
            assert (shown["admitted"], shown["reason"]) == (False, "error")
            assert gate.opened() == 3
        else:
            assert shown["admitted"] is True  # through, unrecorded, as configured
            assert gate.opened() == 4
        assert (used["admitted"], used["reason"]) == (False, "already_used")

        filler.unlink()
        after = iss.ticket(event=1)
        assert gate.scan(after)["admitted"] is True
        assert _get(port, "/healthz") == (200, {"status": "ready", "reasons": []})
    finally:
        gate.proc.terminate()
        gate.proc.wait(30)
    log = gate.log.read_text()
    assert gate.proc.returncode == 0, log
    assert "Traceback" not in log, log
    what = "admission NOT recorded, admitted by policy" if policy == "admit" else "gate stays shut"
    assert what in log

    with sqlite3.connect(f"file:{small_disk / 'journal.db'}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT gate_seq, kind, verdict FROM entries ORDER BY gate_seq"
        ).fetchall()
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # Everything recorded before the disk filled is there, gap-free, and so is the first scan
    # after it had room again; the decisions made while it was full are in the log only.
    assert rows == [
        (1, "entry", "admit"), (2, "entry", "admit"), (3, "entry", "admit"), (4, "entry", "admit")
    ]  # fmt: skip
