"""The session-wide log scan (tests/logscan.py) finds every leak and nothing logged on purpose.

Nothing here may leak into the logs the session scans: sample lines go straight to
:func:`logscan.find_leaks`, records to a logger that does not propagate, and sample files to a
directory outside pytest's base temp directory.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from agent import keys
from agent.issuer import Issuer
from agent.redact import pretix_short_id, secret_label, text_digest
from sync import hub_admin
from tests import logscan, pretix_server

VECTORS = pretix_server.VECTORS


def _leaks(*texts: str, secrets: dict[str, str] | None = None) -> list[str]:
    return logscan.find_leaks([(f"line {n}", t) for n, t in enumerate(texts, 1)], secrets or {})


def _vector_secret(name: str) -> str:
    cases = json.loads((VECTORS / "tickets.json").read_text())
    return str(next(c["secret"] for c in cases if c["name"] == name))


@pytest.fixture
def ticket(iss: Issuer) -> str:
    return iss.ticket(event=1, zones=[1])


def test_an_issued_ticket_is_flagged_and_named_without_reprinting_it(ticket: str) -> None:
    line = f"agent.lane INFO lane in: scan {ticket} refused"
    (by_format,) = _leaks(line)
    (by_value,) = _leaks(line, secrets={ticket: logscan.ISSUED_TK1})
    assert by_format.startswith("line 1: TK1 ticket text: ")
    assert by_value.startswith(f"line 1: {logscan.ISSUED_TK1}: ")
    for finding in (by_format, by_value):
        assert ticket[: logscan.SHOWN] in finding and ticket[: logscan.SHOWN + 1] not in finding


def test_pieces_and_encodings_of_a_ticket_are_flagged(ticket: str) -> None:
    raw = ticket.encode()
    forms = [
        ticket[:24],  # a "short" prefix is still most of the signed fields
        ticket[4:],  # the Base45 body without "TK1:"
        f"rx {raw[:16].hex(' ')}",
        f"frame {raw[:20].hex()}",
        f"decoded {raw!r}",
        f"Scan(text={ticket!r}, lane='in')",
    ]
    assert all(_leaks(form) for form in forms), [form for form in forms if not _leaks(form)]


def test_pretix_vector_secrets_are_flagged_whole_encoded_and_in_pieces() -> None:
    secret = _vector_secret("valid_standard_1")
    secrets = logscan.vector_secrets(VECTORS)
    assert secrets[secret] == "pretix vector secret (valid_standard_1)"
    assert "28" not in secrets and "" not in secrets  # too short to look for
    lines = [
        f"sync.pretix WARNING upload of {secret} failed",
        f"POST /api/v1/organizers/stadium/checkinlists/11/positions/{quote(secret, safe='')}/",
        f"aiosqlite DEBUG executing (..., 'pretix:{secret}', 'entry', ...)",
        f"prefix {secret[:32]}",
        f"middle {secret[40:80]}",
        "garbage scanned: NOT-A-TICKET-0042",
    ]
    findings = _leaks(*lines, secrets=secrets)
    assert {f.split(":")[0] for f in findings} == {f"line {n}" for n in range(1, 7)}
    assert all(": pretix vector secret (" in f and secret not in f for f in findings)


def test_hub_and_console_tokens_are_flagged_by_format_and_by_value() -> None:
    token = hub_admin.new_token()
    assert _leaks(f"Authorization: Bearer {token}")
    assert _leaks(f"hub token for gate-a: {token}")
    (piece,) = _leaks(f"token {token[:32]}...", secrets={token: logscan.MADE_TOKEN})
    assert logscan.MADE_TOKEN in piece


def test_pretix_device_tokens_are_flagged() -> None:
    assert _leaks(f"Authorization: Device {pretix_server.API_TOKEN}")
    init = pretix_server.INIT_TOKEN
    assert _leaks(f"init with {init}", secrets={init: "pretix initialisation token"})


def test_private_keys_are_flagged_by_header_and_by_body(keys_dir: Path) -> None:
    pem = (keys_dir / "issuer.key").read_text()
    body = logscan.pem_private_lines(pem)
    assert body and not any(line.startswith("-----") for line in body)
    secrets = dict.fromkeys(body, "private key")
    assert _leaks(pem.splitlines()[0])
    assert all(_leaks(f"loaded {line}", secrets=secrets) for line in body)


def test_what_a_gate_logs_on_purpose_is_not_flagged(ticket: str, keys_dir: Path) -> None:
    token = hub_admin.new_token()
    secrets = {ticket: logscan.ISSUED_TK1, token: logscan.MADE_TOKEN}
    if VECTORS.is_dir():
        secrets.update(logscan.vector_secrets(VECTORS))
    pub = keys.public_raw_b64(keys.read_private(keys_dir / "issuer.key"))
    entry = str(uuid.uuid4())
    lines = [
        "agent.lane INFO decision lane=in verdict=admit reason=ok "
        f"ticket={text_digest(ticket)[:12]} flags=- latency_ms=1.20",
        f"agent.lane DEBUG lane in: repeat of {text_digest(ticket)} ignored",
        f"sync.pretix INFO pretix device 2 initialised (token {secret_label(token)})",
        f"sync.hub INFO token {hub_admin.hash_token(token)} refused for gate-a",
        f"sync.pretix WARNING SECURITY ALERT duplicate_entry ticket {pretix_short_id(ticket)}",
        f"sync.client ERROR hub refuses entries {entry} from gate_seq 2 (a quarantine's --from-seq)",
        f"agent.trust INFO issuer kid 7 key {pub} (ed25519)",
        "agent.journal INFO created journal "
        "/tmp/pytest-of-root/pytest-12/test_conflict_keeps_rows_and_0/gate/state/journal.db",
        "TK1: expected 166 characters, got 12",
        "ticket format error: TK1: text does not start with 'TK1:'",
        'sync.hub.access INFO 127.0.0.1 "POST /v1/gates/gate-a/entries:batch HTTP/1.1" 200 312',
        "drivers.lcus DEBUG lcus relay: /dev/ttyUSB0 sent a0 01 01 a2",
        "drivers.serial_scanner DEBUG serial scanner /dev/pts/3: 167 bytes",
        "2026-11-23 07:31:02,114 INFO agent.app.daemon: gate gate-3 ready (1 lane, trust v1)",
    ]
    assert _leaks(*lines, secrets=secrets) == []


def test_log_files_are_read_and_ticket_files_are_not(ticket: str, keys_dir: Path) -> None:
    # Outside pytest's base temp dir: the session scan must not find these samples.
    with tempfile.TemporaryDirectory(prefix="logscan-") as name:
        base = Path(name)
        (base / "hub").mkdir()
        (base / "hub/hub.log").write_text(f"INFO hub: started\nERROR hub: bad scan {ticket}\n")
        (base / "gate.err").write_bytes(b"\xff\xfe binary \x00 junk\nTK1:" + ticket[4:40].encode())
        (base / "big.out").write_bytes(b"x" * (logscan.MAX_FILE_BYTES + 10) + b"\nlast line")
        (base / "ticket-0001.txt").write_text(ticket + "\n")
        (base / "gate.toml").write_text(f'ticket = "{ticket}"\n')
        os.mkfifo(base / "fifo.log")  # opening it would block the session
        (base / "issuer.key").write_text((keys_dir / "issuer.key").read_text())
        found = logscan.read_temp_files(base)
    assert found.files == 3
    assert ("hub/hub.log:2", f"ERROR hub: bad scan {ticket}") in found.lines
    assert not any(text == "last line" for _, text in found.lines)  # capped
    assert ticket not in {text for where, text in found.lines if not where.startswith("hub/")}
    assert found.key_lines == logscan.pem_private_lines((keys_dir / "issuer.key").read_text())
    findings = logscan.find_leaks(found.lines, {})
    assert sorted(f.split(": ")[0] for f in findings) == ["gate.err:2", "hub/hub.log:2"]


def test_subprocess_stderr_is_kept_without_the_command_arguments(ticket: str) -> None:
    outputs = logscan.Outputs()
    command = [sys.executable, "-m", "agent", "check", ticket]
    outputs.add("tests/x.py::t", command, b"line one\nline two\n")
    outputs.add("tests/x.py::t", command, None)
    assert outputs.count == 1
    assert outputs.lines == [
        ("tests/x.py::t (stderr of gate-agent check)", "line one"),
        ("tests/x.py::t (stderr of gate-agent check)", "line two"),
    ]


@pytest.fixture
def sample_logger() -> Iterator[tuple[logging.Logger, logscan.Collector]]:
    """A logger whose records reach only a fresh collector, never the session's."""
    logger = logging.getLogger("tests.logscan_sample")
    collector = logscan.Collector()
    logger.addHandler(collector)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, collector
    finally:
        logger.removeHandler(collector)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def test_a_ticket_in_a_traceback_is_flagged(
    ticket: str, sample_logger: tuple[logging.Logger, logscan.Collector]
) -> None:
    logger, collector = sample_logger
    try:
        raise ValueError(f"cannot parse {ticket}")
    except ValueError:
        logger.exception("scan failed")
    ((where, text),) = collector.records
    assert where == "session (logger tests.logscan_sample, ERROR)"
    assert text.startswith("tests.logscan_sample ERROR scan failed\nTraceback")
    assert len(logscan.find_leaks(collector.records, {})) == 1


def test_only_aiosqlite_debug_records_are_left_out() -> None:
    def record(name: str, level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, None, None)

    path = "/api/v1/organizers/stadium/checkinlists/11/positions/%3D%3DQD/redeem/"
    assert logscan.excluded(record("aiosqlite", logging.DEBUG, "executing ..."))
    assert not logscan.excluded(record("aiohttp.access", logging.INFO, f'"POST {path}" 201'))
    assert not logscan.excluded(record("aiosqlite", logging.ERROR, "exception while dumping db"))
    assert not logscan.excluded(record("aiohttp.access", logging.INFO, '"GET /v1/revocations"'))
    assert not logscan.excluded(record("sync.hub.access", logging.INFO, f'"POST {path}"'))
    assert not logscan.excluded(record("sync.pretix", logging.DEBUG, f"POST {path}"))


def test_a_run_records_tickets_tokens_and_subprocess_stderr(iss: Issuer) -> None:
    run = logscan.Run()
    run.start()
    try:
        text = iss.ticket(event=1)
        token = hub_admin.new_token()
        subprocess.run(
            [sys.executable, "-c", "import sys; sys.stderr.write('only a log line')"],
            capture_output=True,
            check=True,
        )
    finally:
        run.stop()
    assert run.made == {text: logscan.ISSUED_TK1, token: logscan.MADE_TOKEN}
    assert [line for _, line in run.outputs.lines] == ["only a log line"]
    findings, summary = run.scan()
    assert findings == []
    assert summary.startswith("log scan: 1 lines (0 logged in-process, 1 from 1 subprocess")


def test_a_run_with_a_leak_fails_and_says_where(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real hooks in a separate pytest process: green tests, one leaked line, a failed run."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    pytester.makeconftest('pytest_plugins = ["tests.conftest"]')
    pytester.makepyfile(
        test_sample="""
        import logging

        def test_leaks():
            logging.getLogger("agent.lane").debug("scan %s refused", "TK1:V50" + "0" * 159)

        def test_fine():
            logging.getLogger("agent.lane").info("decision ticket=%s", "3f2a9c01d2e4")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "log scan: * lines (2 logged in-process, *), * 1 leaks *",
        "  test_sample.py::test_leaks (logger agent.lane, DEBUG): TK1 ticket text: 'TK1:V500'... *",
    ])  # fmt: skip


def test_cli_debug_logging_keeps_sql_parameters_out(tmp_path: Path) -> None:
    """At DEBUG the gate logs its own byte traffic, not aiosqlite's trace of every SQL call: a
    pretix ``ticket_ref`` in those parameters is ``pretix:`` + the secret. (The session scan
    leaves in-process aiosqlite DEBUG records out because of this check.)"""
    code = (
        "import logging, sys\n"
        "from agent.app import cli\n"
        "cli.main(['-v', 'keys', 'init', sys.argv[1]])\n"
        "print(logging.getLogger('aiosqlite').isEnabledFor(logging.DEBUG))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "keys")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines()[-1] == "False"
