"""Shared fixtures: a real keys directory, tickets, and gate configs written as TOML files.

Also the session-wide log scan (tests/logscan.py): every log line of the run is collected, and the
run fails when one holds a raw ticket, a token or a secret.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path

import pytest

from agent import issuer
from tests import gateconf, logscan, needs
from tests.serial_pty import SOCAT, PtyPair

pytest_plugins = ["pytester", "tests.pretix_real"]  # pretix_real: the real pretix fixture


@pytest.fixture(scope="session")
def _session_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys") / "keys"
    issuer.keys_init(d, kid=7, events=[1, 2])
    return d


@pytest.fixture
def keys_dir(_session_keys: Path, tmp_path: Path) -> Path:
    """A private copy of one session-wide keys directory (key generation is not free)."""
    d = tmp_path / "keys"
    shutil.copytree(_session_keys, d)
    return d


@pytest.fixture
def iss(keys_dir: Path) -> issuer.Issuer:
    return issuer.Issuer.load(keys_dir)


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(keys_dir: Path) -> WriteConfig:
    """Write ``gate.toml`` beside ``keys_dir`` (tests/gateconf.py) and return its path.

    The keywords below are what these tests vary; any other keyword is a section's table for
    :func:`tests.gateconf.gate_toml` (``pretix={...}``), merged key by key into what is set here
    (None: the section left out), ``extra`` raw TOML appended.
    """

    def write(
        *,
        entry: str = "single",
        stale_list: str = "admit",
        repeat_window_ms: int = 2000,
        passage_timeout_s: float = 1.0,
        revocations: list[str] | None = None,
        scanner: str = "sim://queue",
        gate: str = "sim://gate?passage_ms=10",
        state_dir: str | Path = "state",
        extra: str = "",
        **sections: gateconf.Table | None,
    ) -> Path:
        tables: dict[str, gateconf.Table | None] = {
            "gate": {"id": "gate-3", "name": "Gate 3", "state_dir": state_dir},
            "policy": {"entry": entry, "stale_list": stale_list},
            "lane": {
                "name": "in",
                "repeat_window_ms": repeat_window_ms,
                "passage_timeout_s": passage_timeout_s,
            },
            "revocation": {"files": revocations or []},
            "devices": {"scanner": scanner, "gate": gate},
        }
        for name, table in sections.items():  # merged into the tables above, key by key
            tables[name] = None if table is None else {**(tables.get(name) or {}), **table}
        return gateconf.write_gate_config(
            keys_dir.parent / "gate.toml", keys="keys", extra=extra, **tables
        )

    return write


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `hardware` run only where GATE_AGENT_HARDWARE=1 says real devices are wired."""
    import os

    if os.environ.get("GATE_AGENT_HARDWARE") == "1":
        return
    skip = pytest.mark.skip(reason="needs real hardware (set GATE_AGENT_HARDWARE=1)")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``needs`` is skipped when the thing is missing, failed under CI."""
    needs.check(item)


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A hub store of each kind: a SQLite file in the test's folder, then a fresh PostgreSQL
    database (the test module imports ``pg_server`` and ``pg_url`` from ``tests.pg``)."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPair]:
    """A socat pty pair (scanner side and host side), killed after the test."""
    needs.need(SOCAT, "socat (serial tests run on ptys)")
    pair = PtyPair(tmp_path)
    pair.start()
    try:
        yield pair
    finally:
        pair.kill()


_LOG_SCAN = pytest.StashKey[logscan.Run]()


def pytest_configure(config: pytest.Config) -> None:
    run = logscan.Run()
    run.start()
    config.stash[_LOG_SCAN] = run


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(_LOG_SCAN, None)
    if run is not None:
        run.stop()


@pytest.fixture(scope="session")
def log_scan_register(request: pytest.FixtureRequest) -> Callable[[Iterable[str], str], None]:
    """Tell the log scan about secrets made during the run (a real pretix's tokens, tickets):
    ``register(texts, label)``."""
    run = request.config.stash[_LOG_SCAN]

    def register(texts: Iterable[str], label: str) -> None:
        run.made.update(dict.fromkeys(texts, label))

    return register


@pytest.fixture(scope="session", autouse=True)
def _log_scan_basetemp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tell the log scan where this run's temp files are."""
    request.config.stash[_LOG_SCAN].basetemp = tmp_path_factory.getbasetemp()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    run = item.config.stash[_LOG_SCAN]
    run.test_started(item.nodeid, uses_caplog="caplog" in getattr(item, "fixturenames", ()))
    try:
        return (yield)
    finally:
        run.test_finished()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Scan every log line of the run; leaks (or a scan that failed) fail the run."""
    run = session.config.stash.get(_LOG_SCAN, None)
    if run is None:
        return
    try:
        run.findings, run.summary = run.scan()
    except Exception as exc:  # the scan must not take the session down with it
        run.findings, run.summary = [f"the scan itself failed: {exc!r}"], "log scan: FAILED"
    if run.findings and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print the log scan's summary line and its first findings."""
    run = config.stash.get(_LOG_SCAN, None)
    if run is None or not run.summary:
        return
    leaks = bool(run.findings)
    terminalreporter.write_line(run.summary, red=leaks, bold=leaks)
    for line in logscan.report(run.findings):
        terminalreporter.write_line(line, red=True)
