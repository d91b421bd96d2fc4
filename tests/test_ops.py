"""Commands for people: `gate-agent events` (journal for security), `gate-agent status`, JSON logs.

The commands run as real processes against a real journal and a real running gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from agent import revocation_issuer, tickets
from agent.app import config as cfg
from agent.app.daemon import open_gate
from agent.clock import Clock, uuid7
from agent.issuer import Issuer
from agent.journal import AlertRecord, Journal, PeerEntry
from agent.ports import Scan
from agent.redact import short_id
from drivers.sim import SimGate, SimScanner
from tests.conftest import WriteConfig
from tests.hubproc import free_port
from tests.polling import until_sync

EXE = (sys.executable, "-m", "agent")


def ga(*args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


async def _decide(conf: cfg.Config, texts: list[tuple[str, str]]) -> None:
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate(passage_ms=5)) as gate:
        for text, source in texts:
            await gate.lane.present(Scan(text, source, time.monotonic_ns()))


async def test_events_filters_and_never_shows_a_ticket(
    write_config: WriteConfig, iss: Issuer
) -> None:
    path = write_config()
    conf = cfg.load(path)
    ticket, other = iss.ticket(event=1, zones=[1]), iss.ticket(event=1, zones=[1])
    # Each from its reader: a code of no ticket format just after a read from the same reader
    # would be part of that presentation (agent.lane).
    await _decide(conf, [(ticket, "a"), (ticket, "b"), ("NOT-A-TICKET", "c"), (other, "a")])

    everything = ga("events", "--config", path)
    assert everything.returncode == 0, everything.stderr
    lines = everything.stdout.splitlines()
    assert len(lines) == 4
    assert "ADMIT ok" in lines[0] and "deny  already_used" in lines[1]
    assert "Gate 3, " in lines[1]
    assert "invalid_format" in lines[2]
    assert ticket not in everything.stdout and other not in everything.stdout

    denied = ga("events", "--config", path, "--denied").stdout.splitlines()
    assert [("already_used" in ln, "invalid_format" in ln) for ln in denied] == [
        (True, False),
        (False, True),
    ]
    dupes = ga("events", "--config", path, "--duplicates", "--json").stdout.splitlines()
    assert [json.loads(ln)["reason"] for ln in dupes] == ["already_used"]
    by_text = ga("events", "--config", path, "--ticket", ticket, "--json").stdout.splitlines()
    rows = [json.loads(ln) for ln in by_text]
    assert [r["gate_seq"] for r in rows] == [1, 2]
    sid = rows[0]["ticket"]
    by_id = ga("events", "--config", path, "--ticket", sid, "--json").stdout.splitlines()
    assert by_id == by_text
    last = ga("events", "--config", path, "-n", "1", "--json").stdout.splitlines()
    assert [json.loads(ln)["gate_seq"] for ln in last] == [4]

    bad = ga("events", "--config", path, "--ticket", "nonsense")
    assert bad.returncode == 2 and "--ticket" in bad.stderr


async def test_events_shows_times_in_the_policy_time_zone(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found in a user trial: with [policy] timezone set, one events line read the time in the
    machine's zone and the "Already used at Gate 4, 00:05" detail in the venue's, 9 h apart."""
    path = write_config(policy={"timezone": "Asia/Tokyo"}, lane={"repeat_window_ms": 0})
    ticket = iss.ticket(event=1, zones=[1])
    await _decide(cfg.load(path), [(ticket, "a"), (ticket, "b")])
    rows = [json.loads(ln) for ln in ga("events", "--config", path, "--json").stdout.splitlines()]
    env = {**os.environ, "TZ": "UTC"}  # the machine's zone is another
    done = await asyncio.to_thread(
        subprocess.run, [*EXE, "events", "--config", str(path)], capture_output=True, text=True,
        timeout=30, check=False, env=env,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    tokyo = ZoneInfo("Asia/Tokyo")
    for row, line in zip(rows, lines, strict=True):  # and says so (a copy read elsewhere)
        assert line.startswith(
            datetime.fromtimestamp(row["time"], tokyo).strftime("%Y-%m-%d %H:%M:%S JST  #")
        )
    denied = datetime.fromtimestamp(rows[0]["time"], tokyo).strftime("%H:%M")
    assert f", {denied}" in lines[1]  # "Already used at Gate 3, HH:MM": the same clock


async def test_events_by_short_id_finds_the_tickets_rows_however_old(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found in a user trial: --ticket SHORTID filtered the newest 20 rows (--last's default),
    so a ticket with 20 newer rows after it had no history by the id the display shows."""
    path = write_config()
    ticket = iss.ticket(event=1, zones=[1])
    junk = [(f"JUNK-{i}", f"reader-{i}") for i in range(25)]  # each its own presentation
    await _decide(cfg.load(path), [(ticket, "a"), *junk, (ticket, "b")])
    by_text = ga("events", "--config", path, "--ticket", ticket, "--json").stdout.splitlines()
    assert [json.loads(ln)["gate_seq"] for ln in by_text] == [1, 27]
    sid = json.loads(by_text[0])["ticket"]
    for arg in (sid, sid.upper()):
        by_id = ga("events", "--config", path, "--ticket", arg, "--json")
        assert by_id.returncode == 0 and by_id.stdout.splitlines() == by_text, by_id.stderr
    newest = ga("events", "--config", path, "--ticket", sid, "-n", "1", "--json").stdout
    assert [json.loads(ln)["gate_seq"] for ln in newest.splitlines()] == [27]


async def test_events_for_a_ticket_shows_its_entries_at_other_gates(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found trying the product: after a double entry made while the gates could not see each
    other, `events --ticket` at either gate showed its own admission only, though the gate
    had learnt the other's from the hub."""
    path = write_config()
    conf = cfg.load(path)
    ticket = iss.ticket(event=1, zones=[1])
    await _decide(conf, [(ticket, "a")])
    ref = tickets.parse(ticket).ticket_ref
    async with await Journal.open(
        conf.gate.state_dir / "journal.db", gate_id="gate-3", gate_name="Gate 3", clock=Clock()
    ) as journal:
        now = time.time()
        peer = PeerEntry(str(uuid7(int(now * 1000))), "gate-b", "Gate B", 7, ref, "entry", None,
                         now, int(now * 1000) << 16)  # fmt: skip
        assert await journal.add_peer_entries([peer]) == 1
    own = ga("events", "--config", path, "--ticket", ticket).stdout.splitlines()
    assert len(own) == 2 and "ADMIT ok" in own[0]
    sid = short_id(ref)
    assert own[1].endswith(f"entry   at Gate B (gate-b) (another gate)  ticket {sid}"), own[1]
    assert ga("events", "--config", path, "--ticket", sid).stdout.splitlines() == own
    as_json = ga("events", "--config", path, "--ticket", sid, "--json").stdout.splitlines()
    assert [json.loads(ln)["gate_seq"] for ln in as_json] == [1]  # the JSON lines stay this gate's
    assert len(ga("events", "--config", path).stdout.splitlines()) == 1  # only with --ticket


async def test_events_follow_prints_new_decisions_as_they_are_made(
    write_config: WriteConfig, iss: Issuer
) -> None:
    path = write_config()
    conf = cfg.load(path)
    await _decide(conf, [("FIRST", "a")])
    async with _following(path, "--json") as proc:
        first = json.loads(await _line(proc))
        assert first["gate_seq"] == 1
        ticket = iss.ticket(event=1, zones=[1])
        await _decide(conf, [(ticket, "a")])
        second = json.loads(await _line(proc))
        assert (second["gate_seq"], second["verdict"]) == (2, "admit")
        # Stopped by its supervisor (or Ctrl-C): exit 0, as `hub alerts --follow` (found trying
        # the product: 143 on SIGTERM, 130 on SIGINT, where operators' scripts expect 0)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


@contextlib.asynccontextmanager
async def _following(path: Path, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`gate-agent events --follow ARGS` running; killed at the end unless it ended."""
    proc = await asyncio.create_subprocess_exec(
        *EXE, "events", "--config", str(path), "--follow", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _line(proc: asyncio.subprocess.Process) -> str:
    """The next line ``proc`` prints (within 20 s)."""
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()


async def test_events_for_a_ticket_marks_a_claim_until_the_feed_brings_its_row(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """A security trial: an admission learnt as a claim (the hub refuses its gate's uploads: a
    copy of its token squats its numbers) read in `events --ticket` like any other gate's
    entry. It is marked until the venue's feed brings that row; it keeps the ticket used."""
    path = write_config()
    conf = cfg.load(path)
    ticket = iss.ticket(event=1, zones=[1])
    ref = tickets.parse(ticket).ticket_ref
    sid = short_id(ref)
    now = time.time()
    claim = PeerEntry(str(uuid7(int(now * 1000))), "gate-c", "Gate C", 4, ref, "entry", None,
                      now, int(now * 1000) << 16)  # fmt: skip
    conf.gate.state_dir.mkdir(parents=True)
    async with await Journal.open(
        conf.gate.state_dir / "journal.db", gate_id="gate-3", gate_name="Gate 3", clock=Clock()
    ) as journal:
        assert await journal.add_peer_entries([claim], claimed=True) == 1
        assert await journal.add_peer_entries([claim], claimed=True) == 0
        (seen,) = await journal.history(ref)  # a claim makes the ticket used here too
        assert seen.peer and seen.gate_id == "gate-c"
        marked = ga("events", "--config", path, "--ticket", sid).stdout.splitlines()
        assert marked == [
            f"{marked[0][:23]}  entry   at Gate C (gate-c) (another gate)  ticket {sid}  CLAIMED:"
            " Gate C (gate-c)'s uploads are refused (a copy of its token?)"
        ], marked
        # Another gate's row under the claim's entry id (a stolen token's upload) clears nothing.
        forged = dataclasses.replace(claim, gate_id="gate-x", gate_name="Gate X")
        assert await journal.add_peer_entries([forged]) == 0
        assert ga("events", "--config", path, "--ticket", sid).stdout.splitlines() == marked
        assert await journal.add_peer_entries([claim]) == 1  # the feed brings it
        assert await journal.add_peer_entries([claim]) == 0
        assert await journal.add_peer_entries([claim], claimed=True) == 0  # not marked again
        (line,) = ga("events", "--config", path, "--ticket", sid).stdout.splitlines()
        assert line.endswith(f"entry   at Gate C (gate-c) (another gate)  ticket {sid}"), line
    # A journal of before the mark (schema 5), read after an update, before the daemon's restart.
    with sqlite3.connect(conf.gate.state_dir / "journal.db") as db:
        db.executescript("ALTER TABLE peer_entries DROP COLUMN claimed; PRAGMA user_version = 5;")
    done = ga("events", "--config", path, "--ticket", sid)
    assert done.returncode == 0 and done.stdout.splitlines() == [line], done.stderr


async def test_events_follow_prints_a_ticket_s_new_alerts_too(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """A review: `events --ticket X --follow` printed the ticket's decisions only, never its
    alerts (they were read once, without --follow), nor the rows learnt from other gates (a
    trial). Both follows print an alert as it is kept: `--ticket` (text) after the ticket's
    decisions and its rows learnt since, `--alerts --json` as a JSON line."""
    path = write_config()
    conf = cfg.load(path)
    ticket = iss.ticket(event=1, zones=[1])
    await _decide(conf, [(ticket, "a")])
    sid = short_id(tickets.parse(ticket).ticket_ref)
    async with (
        _following(path, "--ticket", sid) as text,
        _following(path, "--alerts", "--json") as lines,
    ):
        first = await _line(text)
        assert "ADMIT ok" in first, first
        async with await Journal.open(
            conf.gate.state_dir / "journal.db", gate_id="gate-3", gate_name="Gate 3", clock=Clock()
        ) as journal:
            (entry,) = await journal.tail(1)
            now = time.time()
            peer = PeerEntry(str(uuid7(int(now * 1000))), "gate-b", "Gate B", 7,
                             entry.ticket_ref, "entry", None, now, int(now * 1000) << 16)  # fmt: skip
            assert await journal.add_peer_entries([peer]) == 1
            learnt = await _line(text)
            assert learnt.endswith(f"entry   at Gate B (gate-b) (another gate)  ticket {sid}\n")
            alert = AlertRecord("order_not_valid", "order", entry.entry_id, entry.ticket_ref,
                                "pretix", entry.wall_time, None, "its order not paid")  # fmt: skip
            assert await journal.record_alert(alert)
        said = await _line(text)
        assert f"ALERT order_not_valid  ticket {sid}  entry {entry.entry_id}" in said, said
        listed = json.loads(await _line(lines))
        assert (listed["kind"], listed["ticket"], listed["entry_id"]) == (
            "order_not_valid",
            sid,
            entry.entry_id,
        )


async def test_events_alerts_lists_every_alert_kept_by_default(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found in a security lead's trial: `status` counted 29 alerts and the command it names,
    `events --alerts`, printed the newest 20 without a word (the decisions' default). Alerts
    list whole unless --last says otherwise; a decision's JSON names its entry_id, which
    alerts name; a journal from before alerts were kept says so."""
    path = write_config()
    conf = cfg.load(path)
    ticket = iss.ticket(event=1, zones=[1])
    await _decide(conf, [(ticket, "a")])
    journal_path = conf.gate.state_dir / "journal.db"
    async with await Journal.open(
        journal_path, gate_id="gate-3", gate_name="Gate 3", clock=Clock()
    ) as journal:
        (entry,) = await journal.tail(1)
        for n in range(25):
            assert await journal.record_alert(
                AlertRecord(
                    "duplicate_entry",
                    f"finding-{n}",
                    entry.entry_id,
                    entry.ticket_ref,
                    "pretix-device-2",
                    entry.wall_time,
                    None,
                    "admitted here",
                )
            )
    assert len(ga("events", "--config", path, "--alerts").stdout.splitlines()) == 25
    assert len(ga("events", "--config", path, "--alerts", "--last", "3").stdout.splitlines()) == 3
    (decision,) = [
        json.loads(ln) for ln in ga("events", "--config", path, "--json").stdout.splitlines()
    ]
    assert decision["entry_id"] == entry.entry_id
    sid = short_id(entry.ticket_ref)
    assert len(ga("events", "--config", path, "--ticket", sid).stdout.splitlines()) == 26
    none = ga("events", "--config", path, "--ticket", sid, "--denied")
    assert none.stdout == f"(no denials for ticket {sid} in {journal_path})\n"
    never = iss.ticket(event=1, zones=[1])  # never seen here: named by its short id only
    unseen = ga("events", "--config", path, "--ticket", never)
    assert unseen.returncode == 0 and unseen.stdout == (
        f"(no decisions, rows from other gates or alerts for ticket"
        f" {short_id(tickets.parse(never).ticket_ref)} in {journal_path})\n"
    )
    assert ga("events", "--config", path, "--ticket", never, "--json").stdout == ""
    with sqlite3.connect(journal_path) as db:
        db.executescript(
            "DROP TABLE alerts; ALTER TABLE peer_entries DROP COLUMN claimed; PRAGMA user_version = 3;"
        )
    old = ga("events", "--config", path, "--alerts")
    assert old.returncode == 0 and old.stdout == (
        "(a journal from before alerts were kept: kept from the gate's next start)\n"
    )


def test_events_alerts_of_a_journal_without_its_table_is_one_clear_error(
    write_config: WriteConfig,
) -> None:
    """A review: a journal of schema 4 without its alerts table (a downgrade done halfway) made
    `events --alerts` end in a traceback."""
    path = write_config()
    conf = cfg.load(path)
    asyncio.run(_decide(conf, []))
    with sqlite3.connect(conf.gate.state_dir / "journal.db") as db:
        db.execute("DROP TABLE alerts")
    done = ga("events", "--config", path, "--alerts")
    assert done.returncode == 2 and "cannot read the journal: no such table: alerts" in done.stderr
    assert "Traceback" not in done.stderr


async def test_events_beside_a_stopped_gate_leaves_no_files_and_follows_it_once_started(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found in a security lead's trial: `events` opened the journal read-only in WAL mode, which
    beside a stopped gate makes -wal and -shm files, owned by whoever runs it (often root): the
    gate's user could then not open its own journal. A journal with no -wal file is read as
    immutable (as `check` reads it), and a follow started then opens it anew each poll, so it
    still prints what the gate writes once started."""
    path = write_config()
    conf = cfg.load(path)
    await _decide(conf, [("FIRST", "a")])
    journal = conf.gate.state_dir / "journal.db"
    beside = [journal.with_name("journal.db-wal"), journal.with_name("journal.db-shm")]
    assert not any(f.exists() for f in beside)
    assert len(ga("events", "--config", path, "--json").stdout.splitlines()) == 1
    assert not any(f.exists() for f in beside)
    async with _following(path, "--json") as proc:
        first = json.loads(await _line(proc))
        assert first["gate_seq"] == 1
        await _decide(conf, [(iss.ticket(event=1, zones=[1]), "a")])  # started, then stopped
        second = json.loads(await _line(proc))
        assert (second["gate_seq"], second["verdict"]) == (2, "admit")


def test_events_on_a_missing_journal_is_one_clear_error(write_config: WriteConfig) -> None:
    done = ga("events", "--config", write_config())
    assert done.returncode == 2 and "no journal here" in done.stderr


def _running_gate(
    write_config: WriteConfig, iss: Issuer, port: int, env: dict[str, str]
) -> tuple[subprocess.Popen[str], Path]:
    path = write_config()
    delta = revocation_issuer.issue_delta(iss.list_key, path.parent / "rev.state.json")
    (path.parent / "revocations-1.json").write_bytes(delta)
    path = write_config(
        revocations=["revocations-1.json"],
        scanner="sim://socket?path=scan.sock",
        status={"listen": f"127.0.0.1:{port}"},
    )
    proc = subprocess.Popen(
        [*EXE, "run", "--config", str(path)],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    until_sync(
        lambda: (
            proc.poll() is not None
            or (
                (path.parent / "scan.sock").exists()
                and ga("status", "--config", path).returncode != 2
            )
        ),
        within_s=20,
        what="the gate to answer on its status server",
    )
    assert proc.poll() is None, "gate did not start"
    return proc, path


def test_status_prints_the_running_gates_health(write_config: WriteConfig, iss: Issuer) -> None:
    proc, path = _running_gate(write_config, iss, free_port(), {})
    try:
        done = ga("status", "--config", path)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "Gate 3 (gate-3): READY"
        assert "lane in (entry): scanner online" in done.stdout
        assert "  journal 0 rows\n" in done.stdout  # no upstream: nothing waits for upload
        snap = json.loads(ga("status", "--config", path, "--json").stdout)
        assert snap["gate"]["id"] == "gate-3"
        # The unit's boot id, as the hub's alerts and quarantine listings show it: which unit
        # is the real one when a copy of its token runs elsewhere (a user trial).
        assert f"; boot {snap['gate']['boot_id'][:8]}\n" in done.stdout
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    gone = ga("status", "--config", path)
    assert gone.returncode == 2 and "not answering" in gone.stderr


def test_an_over_long_code_is_a_recorded_denial_not_only_a_log_line(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found trying the product: a code longer than the reader's cap was only logged, so the
    steward saw nothing happen and the security team found nothing in `events`. It is now a
    denial (not a ticket) saying why, never the code itself."""
    proc, path = _running_gate(write_config, iss, free_port(), {})
    ticket = iss.ticket(event=1, zones=[1])
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path.parent / "scan.sock"))
            s.sendall(b"Q" * 5000 + b"\n" + f"{ticket}\n".encode())
        until_sync(
            lambda: "ADMIT" in ga("events", "--config", path).stdout,
            within_s=10,
            what="the ticket after the over-long code",
        )
        out = ga("events", "--config", path, "--json").stdout
        rows = [json.loads(line) for line in out.splitlines()]
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert [(r["verdict"], r["reason"]) for r in rows] == [
        ("deny", "invalid_format"),
        ("admit", "ok"),
    ]
    assert rows[0]["detail"] == "a code of 5,000 characters, over the reader's 4,096"


def test_a_second_process_on_a_running_gates_state_is_refused_and_harms_nothing(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """Found trying the product: a second `run`, or a device selftest, on a running gate's
    config started on the same journal and made its socket scanner anew, so the running gate
    read nothing more while it said "scanner online". Both now refuse, naming the running pid."""
    proc, path = _running_gate(write_config, iss, free_port(), {})
    try:
        second = ga("run", "--config", path)
        assert second.returncode == 2
        assert f"is in use by another gate-agent process (pid {proc.pid})" in second.stderr
        assert "stop it first" in second.stderr and "Traceback" not in second.stderr
        check = ga("selftest", "--config", path)
        assert check.returncode == 2 and f"pid {proc.pid}" in check.stderr
        assert "--config-only" in check.stderr and "Traceback" not in check.stderr
        assert ga("selftest", "--config", path, "--config-only").returncode == 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # the gate still reads
            s.connect(str(path.parent / "scan.sock"))
            s.sendall(f"{iss.ticket(event=1, zones=[1])}\n".encode())
        until_sync(
            lambda: "ADMIT" in ga("events", "--config", path).stdout,
            within_s=10,
            what="the running gate's admission",
        )
    finally:
        proc.kill()  # kill -9: the kernel lets go of the lock
        proc.communicate(timeout=20)
    again, _ = _running_gate(write_config, iss, free_port(), {})
    again.terminate()
    again.communicate(timeout=20)


def test_logs_are_json_lines_under_systemd_with_one_line_per_decision(
    write_config: WriteConfig, iss: Issuer
) -> None:
    proc, path = _running_gate(write_config, iss, free_port(), {"JOURNAL_STREAM": "8:1234"})
    ticket = iss.ticket(event=1, zones=[1])
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path.parent / "scan.sock"))
            # the garbage first: after the ticket it would be part of its presentation
            s.sendall(f"GARBAGE-{ticket[:20]}\n{ticket}\n".encode())
        until_sync(
            lambda: ga("events", "--config", path).stdout.count("\n") >= 2,
            within_s=10,
            what="both decisions in the journal",
        )
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    records = [json.loads(line) for line in err.splitlines()]
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    decisions = [r["msg"] for r in records if r["logger"] == "agent.lane" and "ok" in r["msg"]]
    assert decisions, records
    for r in records:
        assert ticket not in r["msg"] and ticket[:20] not in r["msg"]
