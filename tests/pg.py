"""A real PostgreSQL for the tests: a temporary cluster per session, a fresh database per test.

Use from a test module (pytest finds fixtures imported into it)::

    from tests.pg import pg_server, pg_url  # noqa: F401

The cluster runs from the distribution's binaries (PATH or /usr/lib/postgresql/*/bin), trusts
local connections, listens on 127.0.0.1 on a free port, and is stopped at the end of the session.
As root, it runs as the ``postgres`` user. Missing binaries fail the tests (never skip): install
them with ``.ci/setup --tests``. :func:`temp_cluster` gives the same to scripts (the benchmarks).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port

_BINARIES = ("initdb", "pg_ctl", "createdb")
_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, createdb) not found: run `.ci/setup --tests`"
)


class PgMissing(RuntimeError):
    """initdb/pg_ctl are not installed."""


def find_bindir() -> Path:
    """The directory with initdb, pg_ctl and createdb (PATH first, then the newest Debian one)."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = Path(initdb).resolve().parent  # /usr/local/bin/initdb may be a symlink
        if all((bindir / name).exists() for name in _BINARIES):
            return bindir
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for bindir in reversed(candidates):
        if all((bindir / name).exists() for name in _BINARIES):
            return bindir
    raise PgMissing(_INSTALL_HINT)


@dataclass
class PgServer:
    """A running temporary cluster."""

    bindir: Path
    root: Path  # data directory, socket directory and log live under it
    port: int
    as_postgres: bool  # commands run via `runuser -u postgres --`

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of the cluster's binaries as the cluster's owner; raises on failure."""
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.run("pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PgServer:
    """initdb a cluster into a new temporary directory and start it; raises PgMissing."""
    bindir = find_bindir()
    as_postgres = os.geteuid() == 0
    # Not under pytest's tmp dirs: those are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="gate-agent-pg-"))
    if as_postgres:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PgServer(bindir, root, free_port(), as_postgres)
    try:
        server.run("initdb", "-A", "trust", "-U", "postgres", "-D", str(root / "data"))
        options = (
            f"-k {root} -p {server.port} -c listen_addresses=127.0.0.1 -c fsync=on"
            " -c max_connections=200"
        )
        log = str(root / "server.log")
        server.run("pg_ctl", "start", "-w", "-D", str(root / "data"), "-l", log, "-o", options)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


@contextlib.contextmanager
def temp_cluster() -> Iterator[PgServer]:
    """A temporary cluster for the duration of the block."""
    server = start_cluster()
    try:
        yield server
    finally:
        server.stop()


# Each test module that imports ``pg_server`` gets its own session-scoped instance of it from
# pytest; they all share this one cluster, stopped when the last of them is torn down.
_shared: PgServer | None = None
_users = 0


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL cluster for the test session."""
    global _shared, _users
    if _shared is None:
        try:
            _shared = start_cluster()
        except PgMissing as exc:
            pytest.fail(str(exc), pytrace=False)
    server = _shared
    _users += 1
    try:
        yield server
    finally:
        _users -= 1
        if _users == 0:
            _shared = None
            server.stop()


_numbers = itertools.count(1)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database of the session's cluster: ``postgresql://postgres@127.0.0.1:P/hub_N``."""
    return pg_server.create_database(f"hub_{next(_numbers)}")
