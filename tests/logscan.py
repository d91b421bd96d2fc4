"""The session-wide log scan: no raw ticket payload, token or secret in any log line of a test run.

``tests/conftest.py`` collects, for the whole run:

* every record logged in the pytest process: a :class:`Collector` on the root logger at DEBUG.
  Each record is formatted as ``%(name)s %(levelname)s %(message)s`` plus its traceback and stack
  text. For each test that does not use ``caplog``, the product's loggers (``agent``, ``drivers``,
  ``sync``) are lowered to DEBUG, so their byte traffic and other DEBUG lines are scanned too; a
  test with ``caplog`` keeps the levels it sets, so what it asserts on is unchanged. Library
  loggers keep the levels the tests give them;
* the stderr of every subprocess a test runs through ``subprocess.run(..., capture_output=True)``,
  ``stderr=PIPE`` and ``Popen.communicate`` (``gate-agent run``, ``gate-agent ops ...``, the
  powercut and systemd-notify gates, ``gate-agent hub token``: the CLI logs to stderr). stdout is
  not scanned: it is command output, where ``gate-agent hub token`` prints its token once on
  purpose;
* at session end, every regular file under pytest's base temp directory whose name ends in
  ``.log``, ``.err``, ``.out`` or ``stderr`` (:data:`LOG_SUFFIXES`), the first
  :data:`MAX_FILE_BYTES` of each: ``hub.log`` (the hub subprocess's stderr, tests/hubproc.py),
  ``chromium.log`` (tests/browser.py), ``gate.log`` (tests/test_disk_full.py's gate), the sim
  relay's pulse logs (``pulses.log``, ``p.log``) and pytester's ``stderr``; Chromium's LevelDB
  journals in its profiles are named ``*.log`` too and are read like the rest. Files that hold
  tickets or secrets on purpose are never read as logs: ticket-*.txt and scans.txt, *.toml,
  *.json (``pretix_device.json`` holds the device token), *.db, *.png, keys, and Chromium's
  IndexedDB journals (``*.indexeddb.leveldb/*.log``: the wallet page keeps its ticket there).

Left out, on purpose (:func:`excluded`), from the in-process records:

* ``aiosqlite`` DEBUG records: the library's trace of every call, SQL parameters included (a
  pretix ``ticket_ref`` is ``pretix:`` + the secret). They appear only where a test turns the root
  logger to DEBUG itself; the product's CLI keeps them out of its own logs, which
  ``test_logscan.py`` checks.

(tests/pretix_server.py, the stand-in for pretix, keeps no access log: pretix's redeem URL
  carries the secret by design of its API. The hub logs its requests to ``sync.hub.access``,
  which is scanned.)

Not covered: subprocess stderr a test reads itself line by line (none do today), anything a
process writes outside the base temp directory (the PostgreSQL server log of tests/pg.py lives in
its own temp dir and is the database's, not the product's; so does the real pretix server's log of
tests/pretix_real.py, pretix's own, whose access lines show ticket secrets in redeem URLs), and
in-process ``print`` output.

A leak (:func:`find_leaks`) is, anywhere in a line, or in its percent-decoded form:

* TK1 transport text: ``TK1:`` and at least 16 Base45 characters (a ticket is ``TK1:`` + 162);
  the body without its prefix (every TK1 body starts ``V50``: version 1, flags 0) from 40
  characters on; ``TK1:`` in hex (``544b313a`` and 8 more bytes). Texts issued during the run
  (recorded where ``agent.tickets.tk1.encode`` returns) are named as such;
* any known secret, whole, or a piece of at least 31 characters of one (a :data:`WINDOW`-character
  window at a :data:`STRIDE` offset, looked for in the first :data:`MAX_RUN` characters of each
  stretch of a line between blanks, quotes and brackets): every ``secret`` string in the pretix
  vectors (12 characters or more), the loopback pretix server's device and initialisation
  tokens, the real pretix server's tokens and ticket secrets (registered by tests/pretix_real.py
  through the ``log_scan_register`` fixture), every hub and console token made in-process
  (``sync.hub_admin.new_token``), and the body lines of every PEM private key file (``*.key``,
  ``*.pem``) under the base temp directory;
* by format: a PEM private key header; a hub or console token (``secrets.token_urlsafe(32)``: 43
  URL-safe Base64 characters with upper case, lower case and a digit, standing alone); a pretix
  device token (64 lower-case letters and digits, not all hex).

Short hashes the product logs on purpose (``text_digest``, ``wire.short``, ``token_hash``, the
SHA-256 ``hash_token``), entry ids (UUIDs), paths and numbers do not match any of these.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec
from urllib.parse import unquote

import pytest

from agent.tickets import tk1
from tests import pretix_server

P = ParamSpec("P")

Line = tuple[str, str]
"""``(where, text)``: where a line came from (test id, file:line) and the line itself."""

LOG_SUFFIXES = (".log", ".err", ".out", "stderr")
KEY_SUFFIXES = (".key", ".pem")
MAX_FILE_BYTES = 4 << 20
MAX_KEY_BYTES = 64 << 10
MIN_SECRET = 12
WINDOW = 24
STRIDE = 8
MAX_RUN = 64 << 10
SHOWN = 8
FORMAT = "%(name)s %(levelname)s %(message)s"
PRODUCT_LOGGERS = ("agent", "drivers", "sync")
ISSUED_TK1 = "TK1 ticket issued in this run"
MADE_TOKEN = "hub/console token made in this run"

_BASE45 = r"[0-9A-Z $%*+\-./:]"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("TK1 ticket text", re.compile(rf"TK1:{_BASE45}{{16,}}")),
    ("TK1 body without its prefix", re.compile(rf"(?<!TK1:)(?<![0-9A-Z])V50{_BASE45}{{40,}}")),
    ("TK1 text in hex", re.compile(r"(?i)54[ :]?4b[ :]?31[ :]?3a(?:[ :]?[0-9a-f]{2}){8}")),
    ("private key PEM", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")),
    (
        "hub/console token",
        re.compile(
            r"(?<![\w+/=-])(?=[\w-]*[A-Z])(?=[\w-]*[a-z])(?=[\w-]*[0-9])[\w-]{43}(?![\w+/=-])",
            re.ASCII,
        ),
    ),
    ("pretix device token", re.compile(r"(?<![a-z0-9])(?=[a-z0-9]*[g-z])[a-z0-9]{64}(?![a-z0-9])")),
)
# Pieces of a line that can hold a secret: the characters between blanks, quotes and brackets.
_RUN = re.compile(r"[^\s\"'`<>()\[\]{},;\\]{" + str(WINDOW) + ",}")


def find_leaks(lines: Iterable[Line], secrets: Mapping[str, str]) -> list[str]:
    """Every leak in ``lines`` as ``"where: what: prefix... (n chars)"``, in order.

    ``secrets`` maps each known secret text to a label saying what it is; texts shorter than
    MIN_SECRET characters are ignored, and texts labelled ISSUED_TK1 only name the TK1 texts the
    patterns find (a piece of a ticket is found by its format). One finding per place and kind
    of leak; it shows at most SHOWN characters of what matched, never the whole secret.
    """
    index = _SecretIndex.build(secrets)
    found: dict[tuple[str, str], str] = {}
    for where, text in lines:
        for label, hit in _leaks_in(text, index):
            found.setdefault((where, label), hit)
    return [f"{where}: {label}: {_shown(hit)}" for (where, label), hit in found.items()]


@dataclass
class _SecretIndex:
    issued: frozenset[str]
    short: dict[str, str]
    windows: dict[str, str]

    @classmethod
    def build(cls, secrets: Mapping[str, str]) -> _SecretIndex:
        issued: set[str] = set()
        short: dict[str, str] = {}
        windows: dict[str, str] = {}
        for text, label in secrets.items():
            if len(text) < MIN_SECRET:
                continue
            if label == ISSUED_TK1:
                issued.add(text)  # the TK1 patterns find them; the set only names them
            elif len(text) < WINDOW:
                short[text] = label
            else:
                last = len(text) - WINDOW
                for start in (*range(0, last + 1, STRIDE), last):
                    piece = text[start : start + WINDOW]
                    if _RUN.fullmatch(piece) and len(set(piece)) >= WINDOW // 2:
                        windows.setdefault(piece, label)
        return cls(frozenset(issued), short, windows)


def _leaks_in(text: str, index: _SecretIndex) -> Iterator[tuple[str, str]]:
    variants = [text, unquote(text)] if "%" in text else [text]
    for variant in variants:
        hits = [
            (ISSUED_TK1 if match.group()[: tk1.TEXT_LEN].rstrip() in index.issued else label,
             match.group())
            for label, pattern in _PATTERNS
            for match in pattern.finditer(variant)
        ]  # fmt: skip
        hits += [(label, secret) for secret, label in index.short.items() if secret in variant]
        if hits:  # the decoded form only for what the line as written hides ("%2B" for "+")
            yield from hits
            break
    for variant in variants:
        piece = _known_piece(variant, index.windows)
        if piece is not None:
            yield piece  # one is enough: pieces of one secret often belong to others too
            return


def _known_piece(text: str, windows: Mapping[str, str]) -> tuple[str, str] | None:
    for run in _RUN.findall(text):
        for start in range(min(len(run), MAX_RUN) - WINDOW + 1):
            label = windows.get(run[start : start + WINDOW])
            if label is not None:
                return label, run[start:]
    return None


def _shown(hit: str) -> str:
    return f"{hit[:SHOWN]!r}... ({len(hit)} chars)"


class Collector(logging.Handler):
    """A DEBUG handler that keeps every formatted record with the test that was running.

    Records :func:`excluded` says are not the product's own are counted in :attr:`excluded` and
    not kept.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.where = "session"
        self.records: list[Line] = []
        self.excluded = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if excluded(record):
                self.excluded += 1
                return
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.records.append((f"{self.where} (logger {record.name}, {record.levelname})", text))


def excluded(record: logging.LogRecord) -> bool:
    """True for the in-process records the scan leaves out (see the module doc)."""
    return record.name == "aiosqlite" and record.levelno <= logging.DEBUG


@dataclass
class Outputs:
    """Subprocess stderr captured by tests, decoded and split into lines."""

    lines: list[Line] = field(default_factory=list)
    count: int = 0

    def add(self, where: str, args: object, data: bytes | str | None) -> None:
        """Keep ``data`` (stderr of the process started with ``args``) when there is any."""
        if not data:
            return
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="replace")
        self.count += 1
        source = f"{where} (stderr of {_command(args)})"
        self.lines.extend((source, line) for line in data.splitlines())


_WORD = re.compile(r"[a-z][a-z_-]{0,15}")


def _command(args: object) -> str:
    # The program and a subcommand-like word only: arguments can be tickets, tokens or paths.
    parts = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
    if parts[1:3] == ["-m", "agent"]:
        parts = ["gate-agent", *parts[3:]]
    shown = [Path(parts[0]).name] if parts else []
    if len(parts) > 1 and _WORD.fullmatch(parts[1]):
        shown.append(parts[1])
    return " ".join(shown)


@dataclass
class TempFiles:
    """What a walk of the base temp directory found: log lines and private key lines."""

    lines: list[Line] = field(default_factory=list)
    files: int = 0
    key_lines: set[str] = field(default_factory=set)


def _wallet_storage(path: Path) -> bool:
    """A LevelDB journal of Chromium's IndexedDB: where the wallet page (sync/wallet.js) keeps
    its rotating ticket's static part on purpose, as a holder's phone does."""
    return any(part.endswith(".indexeddb.leveldb") for part in path.parts)


def read_temp_files(base: Path) -> TempFiles:
    """Read the log files (LOG_SUFFIXES) and PEM private keys (KEY_SUFFIXES) under ``base``.

    Only regular files are opened (never a FIFO or socket); a log file is read up to
    MAX_FILE_BYTES and decoded with replacement characters. Unreadable files are skipped.
    """
    found = TempFiles()
    for path in _regular_files(base):
        name = path.name
        try:
            if name.endswith(LOG_SUFFIXES) and not _wallet_storage(path):
                text = _head(path, MAX_FILE_BYTES)
                found.files += 1
                where = path.relative_to(base)
                lines = enumerate(text.splitlines(), 1)
                found.lines.extend((f"{where}:{n}", line) for n, line in lines)
            elif name.endswith(KEY_SUFFIXES):
                found.key_lines.update(pem_private_lines(_head(path, MAX_KEY_BYTES)))
        except OSError:
            continue
    return found


def _regular_files(base: Path) -> Iterator[Path]:
    for folder, _dirs, names in os.walk(base):
        for name in names:
            path = Path(folder, name)
            try:
                if stat.S_ISREG(path.lstat().st_mode):
                    yield path
            except OSError:
                continue


def _head(path: Path, limit: int) -> str:
    with path.open("rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")


def pem_private_lines(text: str) -> set[str]:
    """The Base64 body lines of the PEM private keys in ``text``."""
    body: set[str] = set()
    inside = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("-----BEGIN") and "PRIVATE KEY" in line:
            inside = True
        elif line.startswith("-----END"):
            inside = False
        elif inside and line and ":" not in line:  # not a Proc-Type/DEK-Info header
            body.add(line)
    return body


def vector_secrets(folder: Path) -> dict[str, str]:
    """Every string under a ``secret`` key in the JSON files of ``folder`` (a pretix vectors set).

    Strings shorter than MIN_SECRET are left out. Labels name the case (tickets.json first, so a
    secret is named after its ticket case). A missing folder gives no secrets.
    """
    found: dict[str, str] = {}
    paths = sorted(folder.glob("*.json"), key=lambda p: (p.name != "tickets.json", p.name))
    for path in paths if folder.is_dir() else ():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for case, secret in _secrets_in(doc, path.stem):
            if len(secret) >= MIN_SECRET:
                found.setdefault(secret, f"pretix vector secret ({case})")
    return found


def _secrets_in(node: object, case: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        case = node.get("name", case) if isinstance(node.get("name"), str) else case
        for key, value in node.items():
            if key == "secret" and isinstance(value, str):
                yield case, value
            else:
                yield from _secrets_in(value, case)
    elif isinstance(node, list):
        for item in node:
            yield from _secrets_in(item, case)


def report(findings: list[str], limit: int = 20) -> list[str]:
    """The lines to print for ``findings``: at most ``limit`` of them, then how many more."""
    lines = [f"  {f}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"  ... and {len(findings) - limit} more")
    return lines


class Run:
    """The scan of one test run: what it collects while the tests run, and the scan at the end.

    :meth:`start` adds the collector to the root logger and wraps ``subprocess.Popen.communicate``,
    ``tk1.encode`` and ``hub_admin.new_token`` to record stderr, issued tickets and tokens;
    :meth:`stop` undoes all of it. Set :attr:`basetemp` before :meth:`scan` to scan the files of
    the run too.
    """

    def __init__(self) -> None:
        self.collector = Collector()
        self.outputs = Outputs()
        self.made: dict[str, str] = {}
        self.basetemp: Path | None = None
        self.findings: list[str] = []
        self.summary = ""
        self._patch = pytest.MonkeyPatch()
        self._levels: dict[str, int] = {}

    def start(self) -> None:
        """Start collecting (at pytest_configure)."""
        from sync import hub_admin

        logging.getLogger().addHandler(self.collector)
        self._patch.setattr(subprocess.Popen, "communicate", self._communicate())
        self._patch.setattr(tk1, "encode", self._recording(tk1.encode, ISSUED_TK1))
        new_token = self._recording(hub_admin.new_token, MADE_TOKEN)
        self._patch.setattr(hub_admin, "new_token", new_token)

    def stop(self) -> None:
        """Stop collecting and undo every wrapper (at pytest_unconfigure)."""
        self._patch.undo()
        logging.getLogger().removeHandler(self.collector)

    def test_started(self, nodeid: str, *, uses_caplog: bool) -> None:
        """Name the running test; lower the product's loggers to DEBUG unless it reads records.

        A test with ``caplog`` keeps the levels it would have had, so what it sees is unchanged.
        """
        self.collector.where = nodeid
        if uses_caplog:
            return
        for name in PRODUCT_LOGGERS:
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() > logging.DEBUG:
                self._levels[name] = logger.level
                logger.setLevel(logging.DEBUG)

    def test_finished(self) -> None:
        """Undo :meth:`test_started` (a level the test itself set stays, as it would)."""
        self.collector.where = "session"
        for name, level in self._levels.items():
            logger = logging.getLogger(name)
            if logger.level == logging.DEBUG:
                logger.setLevel(level)
        self._levels.clear()

    def scan(self) -> tuple[list[str], str]:
        """The findings of the whole run and a one-line summary of what was scanned."""
        began = time.monotonic()
        files = read_temp_files(self.basetemp) if self.basetemp is not None else TempFiles()
        secrets = vector_secrets(pretix_server.VECTORS)
        secrets[pretix_server.API_TOKEN] = "pretix device token of the loopback server"
        secrets[pretix_server.INIT_TOKEN] = "pretix initialisation token of the loopback server"
        secrets.update(dict.fromkeys(files.key_lines, "private key (a PEM body line)"))
        secrets.update(self.made)
        lines = [*self.collector.records, *self.outputs.lines, *files.lines]
        findings = find_leaks(lines, secrets)
        summary = (
            f"log scan: {len(lines)} lines ({len(self.collector.records)} logged in-process, "
            f"{len(self.outputs.lines)} from {self.outputs.count} subprocess stderr outputs, "
            f"{len(files.lines)} from {files.files} files; {self.collector.excluded} records "
            f"left out), {len(secrets)} known secrets, "
            f"{len(findings)} leaks ({time.monotonic() - began:.1f} s)"
        )
        return findings, summary

    def _communicate(self) -> Callable[..., tuple[Any, Any]]:
        original = subprocess.Popen.communicate
        outputs, collector = self.outputs, self.collector

        def communicate(proc: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            out, err = original(proc, *args, **kwargs)
            outputs.add(collector.where, proc.args, err)
            return out, err

        return communicate

    def _recording(self, make: Callable[P, str], label: str) -> Callable[P, str]:
        made = self.made

        @functools.wraps(make)
        def recording(*args: P.args, **kwargs: P.kwargs) -> str:
            text = make(*args, **kwargs)
            made[text] = label
            return text

        return recording
