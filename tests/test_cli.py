"""The CLI contract, as operators' scripts call it: real processes, real files, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

from agent.clock import Clock
from agent.journal import Journal
from agent.journal.schema import SCHEMA_VERSION
from tests.gateconf import write_gate_config
from tests.polling import until_sync

EXE = [sys.executable, "-m", "agent"]


def ga(
    *args: str | Path, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _issue(tmp_path_factory.mktemp("cli"))


@pytest.fixture
def own_keys(tmp_path: Path) -> Path:
    """As ``issued``, with a keys folder of the test's own (its list versions start at 0)."""
    return _issue(tmp_path / "own")


def _issue(d: Path) -> Path:
    assert ga("keys", "init", d / "keys").returncode == 0
    r = ga(
        "issue",
        "--keys",
        d / "keys",
        "--event",
        "5",
        "--zones",
        "1,2",
        "--count",
        "3",
        "--not-before",
        "2026-01-01T00:00:00Z",
        "--not-after",
        "2030-01-01T00:00:00Z",
        "--out",
        d / "tickets",
    )
    assert r.returncode == 0, r.stderr
    return d


def _text(d: Path, n: int = 1) -> str:
    return (d / "tickets" / f"ticket-{n:04d}.txt").read_text().strip()


def test_keys_init_writes_private_keys_0600_and_refuses_overwrite(issued: Path) -> None:
    for name in ("root.key", "issuer.key", "list.key"):
        assert stat.S_IMODE(os.stat(issued / "keys" / name).st_mode) == 0o600
    again = ga("keys", "init", issued / "keys")
    assert again.returncode == 2 and "already holds keys" in again.stderr


def test_issue_writes_text_and_qr(issued: Path) -> None:
    files = sorted(p.name for p in (issued / "tickets").iterdir())
    assert files == [f"ticket-000{n}.{ext}" for n in (1, 2, 3) for ext in ("png", "txt")]
    assert _text(issued).startswith("TK1:") and len(_text(issued)) == 166


def test_check_admits_and_explains(issued: Path) -> None:
    r = ga("check", "--keys", issued / "keys", "--zone", "2", _text(issued))
    assert r.returncode == 0, r.stdout + r.stderr
    for part in ("tk1", "signature", "validity", "ADMIT", "zone 2"):
        assert part in r.stdout
    assert _text(issued) not in r.stdout + r.stderr


def test_check_json_at_and_zone(issued: Path) -> None:
    def verdict(*extra: str) -> tuple[int, dict[str, object]]:
        r = ga("check", "--keys", issued / "keys", "--json", *extra, _text(issued))
        return r.returncode, json.loads(r.stdout)

    code, out = verdict("--at", "2027-06-01T12:00:00Z")
    assert code == 0 and out["verdict"] == "admit" and out["reason"] == "ok"
    code, out = verdict("--at", "2031-01-01T00:00:00Z")
    assert code == 1 and (out["verdict"], out["reason"]) == ("deny", "expired")
    code, out = verdict("--at", "2025-06-01")
    assert code == 1 and out["reason"] == "not_yet_valid"
    code, out = verdict("--zone", "3")
    assert code == 1 and out["reason"] == "wrong_zone"
    for zone in ("0", "17", "\uff13", "+3", " 3"):  # a full-width 3 is no zone 3
        r = ga("check", "--keys", issued / "keys", "--zone", zone, _text(issued))
        assert r.returncode == 2 and r.stdout == "", zone
        assert f"argument --zone: a zone is a number 1-16, got {zone!r}" in r.stderr, r.stderr


def test_revoke_then_check_denies(issued: Path, tmp_path: Path) -> None:
    delta = tmp_path / "delta.json"
    r = ga("revoke", "--keys", issued / "keys", "--out", delta, _text(issued, 2))
    assert r.returncode == 0, r.stderr
    r = ga("check", "--keys", issued / "keys", "--revocations", delta, "--json", _text(issued, 2))
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "revoked"
    other = ga("check", "--keys", issued / "keys", "--revocations", delta, _text(issued, 3))
    assert other.returncode == 0


def test_a_revocation_that_cannot_be_written_uses_up_no_version(
    own_keys: Path, tmp_path: Path
) -> None:
    """Found trying the product: `revoke --out` into a missing folder failed with a traceback
    after it had recorded the next version, so the delta written next began at a version no
    gate had and every gate refused it and all after it (the revoked ticket admitted). An
    existing --out was silently replaced, so gates that missed that delta met the same gap."""
    keys = own_keys / "keys"
    state = keys / "revocations.state.json"
    first = tmp_path / "rev-1.json"
    assert ga("revoke", "--keys", keys, "--out", first, _text(own_keys, 1)).returncode == 0
    before = state.read_bytes()
    lost = ga("revoke", "--keys", keys, "--out", tmp_path / "no" / "rev-2.json", _text(own_keys, 2))
    assert lost.returncode == 2 and "Traceback" not in lost.stderr
    assert "rev-2.json: cannot write: No such file or directory" in lost.stderr
    kept = first.read_bytes()
    again = ga("revoke", "--keys", keys, "--out", first, _text(own_keys, 2))
    assert again.returncode == 2 and "rev-1.json exists" in again.stderr
    assert first.read_bytes() == kept and state.read_bytes() == before
    second = tmp_path / "rev-2.json"
    assert ga("revoke", "--keys", keys, "--out", second, _text(own_keys, 2)).returncode == 0
    both = ga("check", "--keys", keys, "--revocations", first, "--revocations", second,
              "--json", _text(own_keys, 2))  # fmt: skip
    assert both.returncode == 1 and json.loads(both.stdout)["reason"] == "revoked", both.stderr


def test_a_revocation_file_check_cannot_use_is_an_error_not_a_verdict(
    own_keys: Path, tmp_path: Path
) -> None:
    """Found trying the product: `check --revocations` with a mistyped file name, or a delta
    without the one before it, logged one line and answered ADMIT, exit 0."""
    keys = own_keys / "keys"
    first, second = tmp_path / "rev-1.json", tmp_path / "rev-2.json"
    for out, n in ((first, 1), (second, 2)):
        assert ga("revoke", "--keys", keys, "--out", out, _text(own_keys, n)).returncode == 0
    for given, words in (
        (tmp_path / "rev-2.jsn", "cannot read revocation list"),
        (second, "gap: delta from 1 but installed 0"),
    ):
        r = ga("check", "--keys", keys, "--revocations", given, "--json", _text(own_keys, 2))
        assert r.returncode == 2 and r.stdout == "", r.stdout
        assert f"--revocations {given}: refused: " in r.stderr and words in r.stderr


def test_check_image_reads_the_qr(issued: Path) -> None:
    r = ga(
        "check",
        "--keys",
        issued / "keys",
        "--json",
        "--image",
        issued / "tickets" / "ticket-0001.png",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"] == "tk1"


def test_check_image_refuses_an_image_past_50_megapixels(issued: Path, tmp_path: Path) -> None:
    """Found trying the product: a 439 kB PNG of 20000x20000 pixels took 9 s and 1.7 GB to
    decode (a 1 GB Pi runs out of memory; camera file sources decode the same way)."""
    import cv2
    import numpy as np

    huge = tmp_path / "huge.png"
    assert cv2.imwrite(str(huge), np.zeros((10_000, 5_001), np.uint8))  # 50,005,000 pixels
    r = ga("check", "--keys", issued / "keys", "--image", huge)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not a readable image (or one over 50,000,000 pixels)" in r.stderr
    assert cv2.imwrite(str(huge), np.zeros((10_000, 5_000), np.uint8))  # at the limit: read
    r = ga("check", "--keys", issued / "keys", "--image", huge)
    assert r.returncode == 1 and "no barcode found by zxing" in r.stdout, r.stderr


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["check", "--keys", "/nonexistent", "TK1:AAA"], 2, "not a keys directory"),
        (["check", "--config", "/nonexistent.toml", "TK1:AAA"], 78, "config file not found"),
        (["check", "--keys", "KEYS", "--image", "/nonexistent.png"], 2, "no such image"),
        # found trying the product: these exist, yet were "no such image file"
        (["check", "--keys", "KEYS", "--image", "/dev/zero"], 2, "/dev/zero: not a file: exp"),
        (["check", "--keys", "KEYS", "--image", "/tmp"], 2, "/tmp: not a file: expected an"),
        (
            ["wallet", "code", "--ticket", "/t", "--device-key", "/k", "--at", "9999-12-31"],
            2,
            "--at: a code's time must be between 1970 and 2106",
        ),
        (["check", "--keys", "KEYS", "--at", "yesterday", "x"], 2, "--at"),
        (["check", "--keys", "KEYS", "--json", "hello"], 1, "invalid_format"),
        (["frobnicate"], 2, "invalid choice"),
        (["revoke", "--keys", "KEYS", "--out", "OUT", "not-a-ticket"], 2, "32-hex token id"),
    ],
)
def test_bad_input_gives_clear_errors(
    issued: Path, tmp_path: Path, args: list[str], code: int, words: str
) -> None:
    args = [
        str(issued / "keys") if a == "KEYS" else str(tmp_path / "o") if a == "OUT" else a
        for a in args
    ]
    r = ga(*args)
    assert r.returncode == code, r.stdout + r.stderr
    assert words in r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_run_decides_a_scan_file_and_exits(issued: Path, tmp_path: Path) -> None:
    scans = tmp_path / "scans.txt"
    scans.write_text(f"{_text(issued)}\n{_text(issued)}\nnonsense\n")
    conf = write_gate_config(
        tmp_path / "gate.toml",
        keys=issued / "keys",
        gate={"id": "g1", "events": [5]},
        lane={"repeat_window_ms": 0},
        devices={
            "scanner": "sim://file?path=scans.txt",
            "gate": "sim://gate?passage_ms=1&log=pulses.log",
        },
    )
    r = ga("run", "--config", conf)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("verdict=admit") == 1 and r.stderr.count("verdict=deny") == 2
    assert "reason=already_used" in r.stderr and "reason=invalid_format" in r.stderr
    assert len((tmp_path / "pulses.log").read_text().splitlines()) == 1
    assert _text(issued) not in r.stderr and _text(issued)[4:40] not in r.stderr


def test_run_with_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "gate.toml"
    conf.write_text("[gate]\nid = 'g'\nevents = [1]\nstate_dir = 's'\nspeed = 3\n")
    r = ga("run", "--config", conf)
    assert r.returncode == 78 and f"{conf}: [gate] unknown key 'speed'" in r.stderr


def _journal_of(path: Path, gate_id: str) -> None:
    async def make() -> None:
        journal = await Journal.open(path, gate_id=gate_id, gate_name=gate_id, clock=Clock())
        await journal.close()

    path.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(make())


def _schema(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


@pytest.mark.parametrize("problem", ["another gate's", "a newer version's", "not a database"])
def test_run_exits_78_on_a_journal_it_may_not_use(
    issued: Path, tmp_path: Path, problem: str
) -> None:
    """An integrator's upgrade trial: a gate started on a journal it may not use (a state
    folder copied from another gate, a version rolled back, a broken file) exited 2, so systemd
    restarted it every 5 s for good. Starting again cannot mend it: 78, as a config error, which
    the unit does not restart; the file is left as it was."""
    conf = write_gate_config(tmp_path / "gate.toml", keys=issued / "keys", gate={"id": "g1"})
    journal = tmp_path / "state" / "journal.db"
    if problem == "not a database":
        journal.parent.mkdir()
        journal.write_bytes(b"these bytes were a journal once " * 64)
        said = f"{journal}: file is not a database"
    else:
        _journal_of(journal, "g9" if problem == "another gate's" else "g1")
        if problem == "a newer version's":
            with contextlib.closing(sqlite3.connect(journal)) as db:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        said = "the journal of gate 'g9', not 'g1'" if problem == "another gate's" else (
            f"journal schema version {SCHEMA_VERSION + 1}, of a newer gate-agent"
        )  # fmt: skip
    before = journal.read_bytes()
    r = ga("run", "--config", conf)
    assert r.returncode == 78 and said in r.stderr, r.stderr
    assert journal.read_bytes() == before and "Traceback" not in r.stderr
    # What to do, and nothing made beside it first (a trial: trust.json and revocations.db).
    assert f"{conf}: [gate] state_dir: " in r.stderr and "check [gate] id and state_dir" in r.stderr
    assert sorted(p.name for p in journal.parent.iterdir()) == ["gate.lock", "journal.db"]
    done = ga("selftest", "--config-only", "--config", conf)  # what the installer runs first
    assert done.returncode == 78 and "the gate cannot start on it" in done.stderr, done.stderr
    if problem != "another gate's":  # check reads a copy of another gate's as that gate's
        checked = ga("check", _text(issued), "--config", conf)  # reads the ticket's history
        assert checked.returncode == 78 and str(journal) in checked.stderr, checked.stderr


@pytest.mark.parametrize("url", ["https://pretix.example", "https://pretix.example/"])
def test_run_refuses_a_pretix_device_of_another_server_before_upgrading_the_journal(
    issued: Path, tmp_path: Path, url: str
) -> None:
    """The same trial: a gate whose pretix device was initialised at another URL upgraded its
    journal, then refused to start, so going back to the version before was refused too. The
    device is checked first; the URL as written with or without its trailing slash is the same
    server (the check before start refused the slash, and `run` did not)."""
    state = tmp_path / "state"
    _journal_of(state / "journal.db", "g1")
    with contextlib.closing(sqlite3.connect(state / "journal.db")) as db:  # as schema 4 left it
        db.executescript(
            "DROP TRIGGER entries_ref_digest_only; ALTER TABLE peer_entries DROP COLUMN claimed;"
            "PRAGMA user_version = 4;"
        )
    device = {"base_url": "https://old-pretix.example", "api_token": "t" * 32, "device_id": 7}
    (state / "pretix_device.json").write_text(json.dumps(device))
    (state / "pretix_device.json").chmod(0o600)
    pretix = {"url": url, "organizer": "o", "event": "e", "checkin_list": 1}
    conf = write_gate_config(
        tmp_path / "gate.toml", keys=issued / "keys", gate={"id": "g1"}, pretix=pretix
    )
    for args in (("selftest", "--config-only"), ("run",)):
        r = ga(*args, "--config", conf)
        assert r.returncode == 78, r.stderr
        assert "initialised at 'https://old-pretix.example', not at [pretix] url" in r.stderr
        assert _schema(state / "journal.db") == 4 and "t" * 32 not in r.stdout + r.stderr
    device["base_url"] = "https://pretix.example"
    (state / "pretix_device.json").write_text(json.dumps(device))
    r = ga("selftest", "--config-only", "--config", conf)
    assert r.returncode == 0 and "WARN" not in r.stdout, r.stdout + r.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`gate-agent demo --dir D`, run once for the tests below: (D, the finished process)."""
    d = tmp_path_factory.mktemp("demo") / "demo"
    return d, ga("demo", "--dir", d, timeout=120)


def test_demo_runs_the_whole_scenario(demo: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    r = demo[1]
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for reason in (
        "already_used",
        "revoked",
        "bad_signature",
        "expired",
        "wrong_zone",
        "invalid_format",
        "code_expired",
    ):
        assert f"({reason}" in out
    assert "nobody passed: entry" in out and "Exit - goodbye" in out
    assert "admitted: 6 (annulled 1)   denied: 8" in out
    assert "\x1b[" not in out  # no colour codes when not on a terminal
    # Part 2: hub and two gates, online then partitioned.
    part2 = out[out.index("Part 2: a hub and two gates") :]
    lines = part2.splitlines()
    refused = next(i for i, line in enumerate(lines) if "is refused at Gate B" in line)
    assert "DENY   Already used at Gate A, " in lines[refused + 1]
    assert "Gate B learnt it from the hub within" in part2
    partition = part2[part2.index("2. Partition") : part2.index("3. The partition heals")]
    assert partition.count("ADMIT  Welcome  (decided offline)") == 2
    assert "[gate-a #2" in partition and "[gate-b #2" in partition
    alerts = [line for line in lines if "ALERT double admission: ticket " in line]
    assert len(alerts) == 1 and "Gate A" in alerts[0] and "Gate B" in alerts[0]
    assert "WARNING" not in out and "Traceback" not in r.stderr


def test_demo_dir_must_be_new_or_empty(
    demo: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """Found trying the product: `demo --dir` on a file stopped with a traceback, and run
    again into a kept folder it made new keys beside the old run's tickets, which its gate
    then refused as unknown_key."""
    kept, first = demo
    assert first.returncode == 0
    a_file = tmp_path / "a-file"
    a_file.write_text("x\n")
    for target, words in ((kept, "a folder with files in it"), (a_file, "not a folder")):
        r = ga("demo", "--dir", target, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert f"demo --dir {target}: {words}: give a new or empty folder" in r.stderr
    r = ga("demo", "--dir", "/proc/gate-agent-demo", timeout=60)
    assert r.returncode == 2 and "demo --dir /proc/gate-agent-demo: " in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("argv0", "shown"),
    [(".venv/bin/gate-agent", ".venv/bin/gate-agent"), ("/src/agent/__main__.py", "gate-agent")],
)
def test_demo_hints_name_the_command_as_it_was_started(
    monkeypatch: pytest.MonkeyPatch, argv0: str, shown: str
) -> None:
    # Started as the README says (.venv/bin/gate-agent, not on PATH), the hints must work as
    # printed when pasted.
    from agent.app import demo

    monkeypatch.setattr(sys, "argv", [argv0, "demo"])
    out = io.StringIO()
    demo._afterwards(Path("/d"), lambda text, _: text, out)
    assert f"  gate:    {shown} run --config /d/gate.toml\n" in out.getvalue()
    assert f"  hub:     {shown} hub --config /d/hub.toml\n" in out.getvalue()


def test_demo_dir_runs_its_gate_and_serves_its_hub_again(
    demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    d, r = demo
    assert r.returncode == 0, r.stderr
    for name in ("gate.toml", "hub.toml", "console.url"):
        assert str(d / name) in r.stdout, name  # the demo says where they are
    assert f"(files in {d.resolve()})" in r.stdout  # kept (without --dir: "files removed")
    # The gate: a ticket the scenario never used is admitted, one pulse, by `run` as a user runs it.
    conf = tomllib.loads((d / "gate.toml").read_text())
    assert conf["status"]["listen"] != "127.0.0.1:8471"  # never an installed gate's port
    ticket = (d / "tickets" / "ticket-0001.txt").read_text().strip()
    run = subprocess.Popen(
        [*EXE, "run", "--config", str(d / "gate.toml")],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert run.stdin is not None
        run.stdin.write(ticket + "\n")
        run.stdin.flush()
        pulses = d / "pulses.log"
        until_sync(lambda: pulses.exists() and pulses.read_text(), 60, "the ticket's pulse")
        # Both lanes ready, the exit lane too once exits.txt is read (found in a newcomer's
        # trial: its file played out, it showed "scanner offline" and the display OUT OF SERVICE).
        until_sync(lambda: ga("status", "--config", d / "gate.toml").returncode == 0, 30, "READY")
        ready = ga("status", "--config", d / "gate.toml")
        assert "lane out (exit): scanner online" in ready.stdout, ready.stdout
    finally:
        run.terminate()
        _, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert err.count("verdict=admit reason=ok") == 1, err
    assert len((d / "pulses.log").read_text().splitlines()) == 1
    assert ticket not in err and ticket[4:40] not in err
    # The hub: served again from hub.toml; console.url (0600, never printed) opens its alerts.
    url_file = d / "console.url"
    assert stat.S_IMODE(url_file.stat().st_mode) == 0o600
    url = url_file.read_text().strip()
    base, token = url.split("/console#token=")
    assert token and token not in r.stdout + r.stderr
    hub = subprocess.Popen(
        [*EXE, "hub", "--config", str(d / "hub.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        alerts = _poll_alerts(base, token, within_s=30)
        with urllib.request.urlopen(url.split("#")[0], timeout=5) as page:  # the console itself
            assert page.status == 200 and b"console" in page.read().lower()
    finally:
        hub.terminate()
        _, err = hub.communicate(timeout=30)
    assert hub.returncode == 0, err
    doubles = [a for a in alerts if a["kind"] == "double_admission"]
    assert len(doubles) == 1 and doubles[0]["gates"] == ["Gate A", "Gate B"], alerts
    assert token not in err


def _poll_alerts(base: str, token: str, within_s: float) -> list[dict[str, object]]:
    """GET /v1/alerts with the console token once the hub answers (AssertionError if it does not)."""
    request = urllib.request.Request(
        f"{base}/v1/alerts?after=0", headers={"Authorization": f"Bearer {token}"}
    )
    answers: list[list[dict[str, object]]] = []

    def answered() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                answers.append(json.load(answer)["alerts"])
                return True
        except OSError:  # not listening yet
            return False

    until_sync(answered, within_s, "the hub answers GET /v1/alerts")
    return answers[-1]
