"""The venue under test: a hub process, three `gate-agent run` processes, a relay per gate.

Each gate has an entry lane ``in`` and an exit lane ``out``, each with a socket scanner the harness
writes to and a sim turnstile whose pulses go to ``pulses-<lane>.log``. A gate's state directory is
a small tmpfs when the harness may mount one (root), so a fault can fill it; its wall clock runs
under libfaketime when a fault steps it: the gate is stopped and started again with its wall clock
``FAKETIME`` seconds off (a timestamp file would step a running process, but libfaketime then
makes every thread hand-off of the journal slow enough to turn milliseconds into seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from agent import issuer
from tests.chaos.relay import Relay
from tests.faketime import FAKETIME
from tests.hubgate import HUB_TIMING
from tests.hubproc import ROOT, HubProcess, HubSetup, add_token, write_hub_config
from tests.lanesconf import write_lanes_config
from tests.polling import until

GATE_IDS = ("gate-1", "gate-2", "gate-3")
LANES = {"in": "entry", "out": "exit"}
STATE_MB = 16
START_TIMEOUT_S = 40.0
BACKOFF_CAP_S = 1.0  # the gates' retry cap: bounds how long a healed link stays unused


class VenueError(RuntimeError):
    """The venue could not do what a schedule asked (a process would not start, a tool missing)."""


class GateProc:
    """One gate: its config, files and process."""

    def __init__(self, gate_id: str, dir: Path, sock_dir: Path, relay: Relay) -> None:
        self.id, self.name, self.dir, self.relay = gate_id, f"Gate {gate_id[-1]}", dir, relay
        self.state = dir / "state"
        self.socks = {lane: sock_dir / f"{gate_id}-{lane}.sock" for lane in LANES}
        self.pulses = {lane: dir / f"pulses-{lane}.log" for lane in LANES}
        self.clock_offset_s = 0.0  # the wall clock's step (libfaketime) from the next start on
        self.config = dir / "gate.toml"
        self.log = dir / "gate.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.mounted = False
        self.filler = self.state / "filler"

    def write_config(self, keys: Path, token: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(exist_ok=True)
        lanes = [
            {
                "name": lane,
                "direction": direction,
                "scanner": f"sim://socket?path={self.socks[lane]}",
                "gate": f"sim://gate?passage_ms=0&log={self.pulses[lane]}",
            }
            for lane, direction in LANES.items()
        ]
        hub = {**HUB_TIMING, "url": f"http://127.0.0.1:{self.relay.port}", "token": token}
        hub["retry_max_s"] = BACKOFF_CAP_S
        write_lanes_config(
            self.config, keys=keys, lanes=lanes,
            gate={"id": self.id, "name": self.name, "venue": "venue-1", "state_dir": self.state},
            policy={"entry": "single"},
            lane={"repeat_window_ms": 0, "passage_timeout_s": 1.0},
            hub=hub, clock={"assume": "synced"},
        )  # fmt: skip

    def mount(self) -> bool:
        """A tmpfs of STATE_MB for the state directory; False when this user cannot mount."""
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={STATE_MB}m,mode=0700", "tmpfs", str(self.state)],
            capture_output=True, check=False,
        )  # fmt: skip
        self.mounted = done.returncode == 0
        return self.mounted

    def unmount(self) -> None:
        """Unmount the tmpfs, keeping a copy of its files in ``state.saved`` (for --keep)."""
        if self.mounted:
            self.free()
            with contextlib.suppress(OSError):
                shutil.copytree(self.state, self.dir / "state.saved", dirs_exist_ok=True)
            subprocess.run(["umount", "-l", str(self.state)], capture_output=True, check=False)
            self.mounted = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        env = {**os.environ}
        if self.clock_offset_s:
            env |= {
                "LD_PRELOAD": str(FAKETIME), "FAKETIME": f"{self.clock_offset_s:+.0f}",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            }  # fmt: skip
        self.proc = self._spawn(env)
        proc = self.proc

        def scanners_open() -> bool:
            if proc.poll() is not None:
                raise VenueError(f"{self.id} exited with {proc.returncode}: {self.tail()}")
            return all(_accepts(p) for p in self.socks.values())

        try:
            await until(scanners_open, START_TIMEOUT_S, every_s=0.05)
        except AssertionError:
            raise VenueError(f"{self.id} did not open its scanners: {self.tail()}") from None

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                cwd=ROOT, env=env, start_new_session=True,
            )  # fmt: skip

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 20)
        except subprocess.TimeoutExpired:
            self.kill9()

    def scan(self, lane: str, text: str) -> bool:
        """Present ``text`` at ``lane``'s scanner; False when the gate is not there to read it."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.socks[lane]))
                s.sendall((text + "\n").encode())
        except OSError:
            return False
        return True

    def fill(self) -> None:
        """Fill the state filesystem to the last byte."""
        with open(self.filler, "wb", buffering=0) as f:
            for size in (1 << 16, 1 << 12, 1 << 9, 1):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * size)

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _accepts(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(path))
    except OSError:
        return False
    return True


class Venue:
    """The hub (SQLite, or PostgreSQL at ``store``), three gates and their relays."""

    def __init__(self, dir: Path, store: str | None, small_disks: bool) -> None:
        self.dir, self.store = dir, store
        self.keys = dir / "keys"
        issuer.keys_init(self.keys, kid=7, events=[1, 2])
        self.iss = issuer.Issuer.load(self.keys)
        self.setup: HubSetup = write_hub_config(
            dir / "hub", keys=self.keys, store=store, extra="gate_offline_after_s = 2\n"
        )
        self.hub = HubProcess(self.setup)
        self.sock_dir = Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))
        self.relays = {g: Relay(self.setup.port) for g in GATE_IDS}
        self.gates = {
            g: GateProc(g, dir / g, self.sock_dir, self.relays[g]) for g in GATE_IDS
        }  # fmt: skip
        self.small_disks = small_disks

    async def start(self) -> None:
        await asyncio.to_thread(self.hub.start)
        for gate_id, gate in self.gates.items():
            await self.relays[gate_id].start()
            token = add_token(self.setup, gate_id=gate_id, name=gate.name)
            gate.write_config(self.keys, token)
            if self.small_disks:
                gate.mount()
        await asyncio.gather(*(g.start() for g in self.gates.values()))

    async def close(self) -> None:
        await asyncio.gather(*(g.stop() for g in self.gates.values()))
        for gate in self.gates.values():
            gate.kill9()
        await asyncio.to_thread(self.hub.stop)
        self.hub.kill9()
        for relay in self.relays.values():
            await relay.close()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def unmount(self) -> None:
        for gate in self.gates.values():
            gate.unmount()

    def kill_all(self) -> None:
        """The last resort (the harness interrupted): kill -9 every process, unmount."""
        for gate in self.gates.values():
            gate.kill9()
        self.hub.kill9()
        self.unmount()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
