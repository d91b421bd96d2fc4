"""Files private whatever the umask (issue 10, part 9).

`gate-agent run`, `gate-agent hub` and `gate-agent hub token` run as real processes started from a
shell whose umask is 000 (nothing masked); every file and folder they create in their state
folders, the SQLite -wal/-shm files included, gives group and others nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from agent.fsutil import write_atomic
from agent.issuer import Issuer
from tests.hubgate import write_gate
from tests.hubproc import ROOT, write_hub_config
from tests.polling import until_sync

EXE = (sys.executable, "-m", "agent")
OPEN_UMASK = ("sh", "-c", 'umask 000 && exec "$0" "$@"')
DEADLINE_S = 20.0


def _cli(*args: str | Path) -> list[str]:
    """The command line of `gate-agent ARGS` started under umask 000."""
    return [*OPEN_UMASK, *EXE, *map(str, args)]


def _modes(folder: Path) -> dict[str, int]:
    """Path (relative to ``folder``) -> permission bits of everything below it."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            with contextlib.suppress(FileNotFoundError):  # a temporary file renamed meanwhile
                found[str(path.relative_to(folder))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def _open_to_others(modes: dict[str, int]) -> dict[str, str]:
    return {name: f"{mode:04o}" for name, mode in modes.items() if mode & 0o077}


def _wait_for(names: set[str], *folders: Path, proc: subprocess.Popen[bytes]) -> None:
    def created() -> bool:
        assert proc.poll() is None, f"{proc.args!r} exited with {proc.returncode}"
        return names <= {name for f in folders for name in _modes(f)}

    until_sync(created, DEADLINE_S, f"{sorted(names)} created")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


@contextlib.contextmanager
def _started(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process running ``command`` (stderr to ``log``), stopped with SIGTERM on exit."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT
        )
    try:
        yield proc
    finally:
        _stop(proc)


def test_gate_and_hub_state_is_private_under_umask_000(
    tmp_path: Path, keys_dir: Path, iss: Issuer
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    # A newer bundle at the hub, so the gate installs its own copy (state/trust.json).
    (setup.keys / "trust.json").write_bytes(iss.trust_bundle(version=2))
    made = subprocess.run(
        _cli("hub", "token", "--config", setup.config, "--gate", "gate-a", "--name", "Gate A"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    gate_dir = tmp_path / "gate"
    config = write_gate(
        gate_dir, keys_dir, gate_id="gate-a", name="Gate A", url=setup.url, token=token,
        scanner="sim://socket?path=scan.sock",
    )  # fmt: skip
    config.chmod(0o644)  # as an editor may leave it: others can read its token
    hub_state, gate_state = setup.dir / "state", gate_dir / "state"
    with contextlib.ExitStack() as running_procs:
        hub_proc = running_procs.enter_context(
            _started(_cli("hub", "--config", setup.config), setup.dir / "hub.log")
        )
        gate_proc = running_procs.enter_context(
            _started(_cli("run", "--config", config), gate_dir / "gate.log")
        )
        _wait_for({"scan.sock"}, gate_dir, proc=gate_proc)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(gate_dir / "scan.sock"))
            s.sendall(f"{iss.ticket(event=1, zones=[1])}\n".encode())
        _wait_for({"hub.db", "hub.db-wal", "hub.db-shm"}, hub_state, proc=hub_proc)
        gate_files = {
            "journal.db", "journal.db-wal", "journal.db-shm", "revocations.db",
            "revocations.db-wal", "revocations.db-shm", "hub_sync.json", "trust.json",
        }  # fmt: skip
        _wait_for(gate_files, gate_state, proc=gate_proc)
        running = {**_modes(hub_state), **{f"gate/{k}": v for k, v in _modes(gate_state).items()}}
    stopped = {**_modes(hub_state), **{f"gate/{k}": v for k, v in _modes(gate_state).items()}}
    assert _open_to_others(running) == {}, running
    assert _open_to_others(stopped) == {}, stopped
    assert gate_proc.returncode == 0 and hub_proc.returncode == 0
    assert "gate/clock.floor" in stopped  # written at shutdown
    with contextlib.closing(sqlite3.connect(gate_state / "journal.db")) as db:
        assert db.execute("SELECT kind, reason FROM entries").fetchall() == [("entry", "ok")]
    # Its hub token is written in its gate.toml (mode 0644 above): run says so at start (as
    # selftest does), without the token.
    said = (gate_dir / "gate.log").read_text()
    assert f"{config}: [hub] token: written in this file, which group or others can read" in said
    assert token not in said


def test_write_atomic_never_keeps_a_wider_mode(tmp_path: Path) -> None:
    """A replaced file, or a temp file a crash left behind, passes on none of its own mode."""
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    path.chmod(0o666)
    stale = tmp_path / ".state.json.tmp"
    stale.write_bytes(b"half")
    stale.chmod(0o666)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and not stale.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
