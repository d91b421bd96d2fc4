"""Start-up with refused trust bundles and revocation files, and `check --config` against a gate."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent import revocation_issuer, tickets
from agent.app import config
from agent.app.daemon import open_gate
from agent.clock import Clock
from agent.errors import ConfigError, JournalError
from agent.issuer import Issuer
from agent.journal import SCHEMA_VERSION, Journal, read_history
from agent.model import Reason
from agent.ports import Scan
from tests.conftest import WriteConfig
from tests.gateconf import write_gate_config
from tests.hubgate import write_gate


def _check(*args: str | Path) -> tuple[int, dict[str, object]]:
    r = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--json", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


async def test_forged_bundle_and_list_at_start_keep_previous_state(
    write_config: WriteConfig, iss: Issuer, keys_dir: Path
) -> None:
    revoked = iss.ticket(event=1, zones=[1])
    key = tickets.parse(revoked).revocation_key
    (keys_dir.parent / "rev-1.json").write_bytes(
        revocation_issuer.issue_delta(iss.list_key, keys_dir / "st", revoke=[key])
    )
    conf = config.load(write_config(revocations=["rev-1.json"]))
    async with open_gate(conf) as gate:
        assert (gate.trust.version, gate.revocations.meta.version) == (1, 1)

    # Now the configured files are replaced by a forged bundle (v2) and a forged list (v2).
    bundle = json.loads((keys_dir / "trust.json").read_bytes())
    bundle["signature"] = bundle["signature"][::-1]
    (keys_dir / "trust.json").write_text(json.dumps(bundle))
    delta = json.loads(revocation_issuer.issue_delta(iss.list_key, keys_dir / "st", unrevoke=[key]))
    delta["signature"] = delta["signature"][::-1]
    (keys_dir.parent / "rev-1.json").write_text(json.dumps(delta))
    async with open_gate(conf) as gate:
        assert (gate.trust.version, gate.revocations.meta.version) == (1, 1)
        outcome = await gate.lane.present(Scan(revoked, "s", 0))
        assert outcome is not None and outcome.decision.reason is Reason.REVOKED


def _selftest_config_only(conf_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "selftest", "--config", str(conf_path), "--config-only"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_selftest_config_only_passes_what_run_starts_with_and_warns(
    write_config: WriteConfig, iss: Issuer, keys_dir: Path
) -> None:
    """Found trying the product: `selftest --config-only` (what the installer runs before
    enabling the unit) failed on a missing revocation file and on a refused bundle beside an
    installed one, both of which `run` starts with (logging an error). It now agrees with
    `run`, and says what it found on a WARN line."""
    conf_path = write_config(revocations=["rev-missing.json"])
    conf = config.load(conf_path)
    async with open_gate(conf) as gate:  # run starts, with the installed bundle (v1), no list
        assert (gate.trust.version, gate.revocations.meta.version) == (1, 0)
    r = _selftest_config_only(conf_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("OK   config") and "trust v1" in lines[0]
    assert lines[1] == (
        f"WARN config    {conf_path}: [revocation] files: {keys_dir.parent / 'rev-missing.json'}:"
        " no such file (the gate starts with the list it has installed; with none, every ticket"
        " is admitted, flagged list_stale: [policy] stale_list)"
    )
    # A forged bundle beside the installed one: run keeps v1, and so does the check.
    bundle = json.loads((keys_dir / "trust.json").read_bytes())
    bundle["signature"] = bundle["signature"][::-1]
    (keys_dir / "trust.json").write_text(json.dumps(bundle))
    async with open_gate(conf) as gate:
        assert gate.trust.version == 1
    r = _selftest_config_only(conf_path)
    assert r.returncode == 0, r.stderr
    assert "trust v1" in r.stdout and "WARN config" in r.stdout
    assert "trust bundle refused, keeping version 1" in r.stdout
    # With nothing installed, neither starts.
    for name in ("trust.json",):
        (conf.gate.state_dir / name).unlink()
    r = _selftest_config_only(conf_path)
    assert r.returncode == 78 and "[trust] bundle refused" in r.stderr and r.stdout == ""


def test_a_hub_token_written_in_a_config_others_can_read_is_warned_of(
    tmp_path: Path, keys_dir: Path
) -> None:
    """A security lead's trial: a gate.toml of mode 0644 holding its hub token passed
    `selftest --config-only` (a token_file so readable is refused). It is warned of, by
    selftest and at start, without the token."""
    conf = write_gate(
        tmp_path / "g", keys_dir, gate_id="g1", name="G1", url="https://127.0.0.1:9",
        token="t" * 40,
    )  # fmt: skip
    conf.chmod(0o644)
    r = _selftest_config_only(conf)
    assert r.returncode == 0, r.stderr
    assert (
        f"WARN config    {conf}: [hub] token: written in this file, which group or others can"
        f" read (mode 644): chmod 600 {conf}, or put the token in a token_file of mode 0600"
    ) in r.stdout.splitlines(), r.stdout
    assert "t" * 40 not in r.stdout + r.stderr
    conf.chmod(0o600)
    r = _selftest_config_only(conf)
    assert r.returncode == 0 and "[hub] token" not in r.stdout, r.stdout


async def test_selftest_config_only_tries_lists_tls_files_pretix_and_state_as_run_does(
    iss: Issuer, keys_dir: Path, tmp_path: Path
) -> None:
    """Found trying the product as an integrator: `selftest --config-only` said OK with no WARN
    for a corrupt revocation file, one signed by another key or out of sequence (run refuses
    them), for [hub] TLS files that were not PEM (run then exits 78, its message a Python
    tuple), for [pretix] without any device token (run syncs nothing), and for a journal that
    is not a database (run exits 2)."""
    key = tickets.parse(iss.ticket(event=1, zones=[1])).revocation_key
    (tmp_path / "rev-1.json").write_bytes(
        revocation_issuer.issue_delta(iss.list_key, tmp_path / "st", revoke=[key])
    )
    revocation_issuer.issue_delta(iss.list_key, tmp_path / "st", revoke=[key])  # never published
    (tmp_path / "rev-3.json").write_bytes(  # so this one follows a gap
        revocation_issuer.issue_delta(iss.list_key, tmp_path / "st", revoke=[key])
    )
    (tmp_path / "bad.json").write_bytes(b"\xff")
    files = ["rev-1.json", "bad.json", str(keys_dir / "trust.json"), "rev-3.json"]
    path = write_gate_config(tmp_path / "gate.toml", keys=keys_dir, revocation={"files": files})
    async with open_gate(config.load(path)) as gate:  # run starts, with rev-1 alone
        assert gate.revocations.meta.version == 1
    r = _selftest_config_only(path)
    assert r.returncode == 0, r.stderr
    refused = [line for line in r.stdout.splitlines() if "refused (" in line]
    assert [line.split(": refused (")[0].split("files: ")[1] for line in refused] == [
        str(tmp_path / "bad.json"), str(keys_dir / "trust.json"), str(tmp_path / "rev-3.json"),
    ]  # fmt: skip
    assert all(line.startswith("WARN config") for line in refused)
    assert "gap: delta from 2 but installed 1" in refused[2]

    pem = tmp_path / "not-a-ca.pem"
    pem.write_text("garbage\n")
    hub = {"url": "https://hub.example:8443", "token": "t" * 43, "ca": str(pem)}
    path = write_gate_config(tmp_path / "hub.toml", keys=keys_dir, hub=hub)
    r = _selftest_config_only(path)
    assert r.returncode == 78 and r.stdout == "", r.stdout
    assert f"{path}: [hub] ca {pem}: not a readable PEM CA certificate (" in r.stderr
    assert "('" not in r.stderr  # the message, not the tuple of an ssl.SSLError's arguments

    pretix = {"url": "https://pretix.example", "organizer": "o", "event": "e", "checkin_list": 1}
    path = write_gate_config(tmp_path / "pretix.toml", keys=keys_dir, pretix=pretix)
    r = _selftest_config_only(path)
    assert r.returncode == 0, r.stderr
    assert "WARN config" in r.stdout and "[pretix] init_token: none" in r.stdout

    state = tmp_path / "state"
    (state / "journal.db").write_bytes(b"not a database, whatever its name says" * 4)
    r = _selftest_config_only(tmp_path / "gate.toml")
    assert r.returncode == 78 and r.stdout == ""  # as run exits on it: restarting cannot help
    assert f"[gate] state_dir: {state / 'journal.db'}: file is not a database" in r.stderr
    # An empty file is where run makes its journal (found in a user trial: the check refused it,
    # so the installer would not enable a gate that starts); another program's database is not.
    (state / "journal.db").write_bytes(b"")
    r = _selftest_config_only(tmp_path / "gate.toml")
    assert r.returncode == 0 and (state / "journal.db").stat().st_size == 0, r.stderr
    events = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent", "events", "--config", str(tmp_path / "gate.toml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert events.returncode == 2 and "an empty file: the gate makes its journal" in events.stderr
    with contextlib.closing(sqlite3.connect(state / "journal.db")) as foreign:
        foreign.execute("CREATE TABLE customers (name TEXT)")
    r = _selftest_config_only(tmp_path / "gate.toml")
    assert r.returncode == 78 and "journal.db is not a gate-agent journal" in r.stderr
    # Another gate's journal (run refuses it), read without creating a file beside it
    (state / "journal.db").unlink()
    other = await Journal.open(state / "journal.db", gate_id="gate-9", gate_name="Gate 9",
                               clock=Clock(assume="synced"))  # fmt: skip
    await other.close()
    before = sorted(p.name for p in state.iterdir())
    r = _selftest_config_only(tmp_path / "gate.toml")
    journal = state / "journal.db"
    assert r.returncode == 78 and r.stderr.count(str(journal)) == 1, r.stderr
    assert f"{journal}: the journal of gate 'gate-9', not 'gate-1' ([gate] id)" in r.stderr
    assert sorted(p.name for p in state.iterdir()) == before  # no -wal/-shm made by the check
    # A journal of a newer version (a rollback: run refuses it, and this version's tools would
    # not find rows it keeps elsewhere; found in an integrator's trial: the check said OK).
    journal.unlink()
    mine = await Journal.open(journal, gate_id="gate-1", gate_name="Gate 1",
                              clock=Clock(assume="synced"))  # fmt: skip
    await mine.close()
    with contextlib.closing(sqlite3.connect(journal)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer = f"{journal}: journal schema version {SCHEMA_VERSION + 1}, of a newer gate-agent"
    r = _selftest_config_only(tmp_path / "gate.toml")
    assert r.returncode == 78 and newer in r.stderr, r.stderr
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent", "events", "--config", str(tmp_path / "gate.toml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 78 and newer in done.stderr, done.stderr
    with pytest.raises(JournalError, match="of a newer gate-agent"):  # what `check` reads
        read_history(journal, "tk1:00", "Gate 1")


@pytest.mark.parametrize(
    ("state_dir", "problem", "code"),
    [
        ("/proc/gate-agent-state", "cannot create it in /proc (", 78),
        ("/sys/kernel", "cannot write in it (", 2),  # a folder there: this user may not write
    ],
)
def test_selftest_config_only_refuses_a_state_dir_the_gate_cannot_write(
    keys_dir: Path, tmp_path: Path, state_dir: str, problem: str, code: int
) -> None:
    """An integrator review: the check the installer runs before enabling the unit passed a
    state_dir the gate could not create or write (here: in /proc, and /sys/kernel), so the
    unit was enabled and failed at every start. The check now tries, as its user."""
    path = write_gate_config(tmp_path / "gate.toml", keys=keys_dir, gate={"state_dir": state_dir})
    r = _selftest_config_only(path)
    assert r.returncode == code, r.stdout + r.stderr
    assert f"[gate] state_dir: {state_dir}: {problem}" in r.stderr, r.stderr
    assert "sudo -u gate-agent gate-agent selftest --config-only" in r.stderr


def test_selftest_config_only_passes_a_state_dir_it_can_create_and_leaves_nothing(
    keys_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "new" / "state"
    path = write_gate_config(tmp_path / "gate.toml", keys=keys_dir, gate={"state_dir": state})
    r = _selftest_config_only(path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "new").exists()  # tried in the folder above it, then removed
    assert not list(tmp_path.glob(".gate-agent-check-*"))


async def test_forged_bundle_with_nothing_installed_stops_start(
    write_config: WriteConfig, keys_dir: Path
) -> None:
    (keys_dir / "trust.json").write_bytes((keys_dir / "trust.json").read_bytes()[:100])
    conf = config.load(write_config())
    try:
        async with open_gate(conf):
            raise AssertionError("the gate must not start without trust")
    except ConfigError as exc:
        assert "[trust] bundle refused" in str(exc) and "truncated" in str(exc)


async def test_check_config_uses_gate_state_and_never_writes_it(
    write_config: WriteConfig, iss: Issuer, keys_dir: Path, tmp_path: Path
) -> None:
    used, revoked = iss.ticket(event=1, zones=[1]), iss.ticket(event=1, zones=[1])
    conf_path = write_config()
    conf = config.load(conf_path)
    async with open_gate(conf) as gate:
        await gate.lane.present(Scan(used, "s", 0))
    state = conf.gate.state_dir
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in state.iterdir()}

    code, out = _check("--config", conf_path, used)
    assert code == 1 and out["reason"] == "already_used"
    assert str(out["detail"]).startswith("Gate 3, ")
    what_if = tmp_path / "what-if.json"
    what_if.write_bytes(
        revocation_issuer.issue_delta(
            iss.list_key, keys_dir / "st", revoke=[tickets.parse(revoked).revocation_key]
        )
    )
    code, out = _check("--config", conf_path, "--revocations", what_if, revoked)
    assert code == 1 and out["reason"] == "revoked"
    code, out = _check("--config", conf_path, revoked)  # the what-if list was not installed
    assert code == 0 and out["verdict"] == "admit"

    # The trust bundle may live only in the state folder (installed earlier, e.g. by sync).
    assert write_config(trust={"bundle": None}) == conf_path  # the same config, no [trust] bundle
    trust = config.load(conf_path).trust
    assert trust is not None and trust.bundle is None
    code, out = _check("--config", conf_path, "--zone", "2", revoked)
    assert code == 1 and out["reason"] == "wrong_zone"
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in state.iterdir()}
    assert after == before
