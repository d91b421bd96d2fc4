"""Power cut: kill -9 the running gate at random moments; nothing recorded is lost.

Every relay pulse the sim gate logged (fsync'd before the pulse counts) must have its admission in
the journal, the journal must open cleanly, and gate_seq must have no holes.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.clock import Clock
from agent.issuer import Issuer
from agent.journal import Journal
from tests.gateconf import write_gate_config

ROUNDS = 20
SCANS = 1000


def _config(dir: Path, keys: Path) -> Path:
    return write_gate_config(
        dir / "gate.toml",
        keys=keys,
        gate={"id": "pc-gate", "zone": None},
        policy={"entry": "unlimited"},
        lane={"repeat_window_ms": 0, "passage_timeout_s": 0.5},
        devices={
            "scanner": "sim://file?path=scans.txt",
            "gate": "sim://gate?passage_ms=0&log=pulses.log",
        },
    )


@pytest.mark.slow
def test_kill_9_twenty_times_loses_nothing(iss: Issuer, keys_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(20261123)
    texts = [iss.ticket(event=1) for _ in range(50)]
    lines = [rng.choice(texts) if rng.random() < 0.9 else "garbage-" + str(i) for i in range(SCANS)]
    (tmp_path / "scans.txt").write_text("\n".join(lines) + "\n")
    conf = _config(tmp_path, keys_dir)
    killed = 0
    for _ in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.4, 2.0))  # the scenario: the power goes at a random moment
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()
    assert killed >= ROUNDS // 2  # the kills really landed mid-run

    pulses = [line.split() for line in (tmp_path / "pulses.log").read_text().splitlines()]
    assert pulses, "no relay pulse was ever logged"
    db = sqlite3.connect(tmp_path / "state" / "journal.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    seqs = [r[0] for r in db.execute("SELECT gate_seq FROM entries ORDER BY gate_seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    admitted = {r[0] for r in db.execute("SELECT entry_id FROM entries WHERE kind = 'entry'")}
    db.close()
    missing = [p[3] for p in pulses if p[3] not in admitted]
    assert missing == [], f"{len(missing)} pulses without a journalled admission"

    async def reopen() -> list[str]:
        journal = await Journal.open(
            tmp_path / "state" / "journal.db",
            gate_id="pc-gate",
            gate_name="pc-gate",
            clock=Clock(None, assume="synced"),
        )
        try:
            return await journal.check()
        finally:
            await journal.close()

    assert asyncio.run(reopen()) == []
