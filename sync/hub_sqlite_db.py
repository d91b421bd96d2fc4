"""The SQLite hub store's file: opening it (a stray file or another venue's store refused, the
schema created in one transaction or brought up to date) and the transaction every job runs in.

The file is marked with an ``application_id`` and ``user_version`` and bound to its venue in
``meta``; SQLite errors while opening become HubStoreError naming the file.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agent.fsutil import not_a_database, sqlite_readonly
from sync import hub_schema
from sync.hub_sqlite_console import upgrade
from sync.hub_store import ForeignStoreError, HubStoreError, OtherVenueError

log = logging.getLogger("sync.hub_sqlite")  # one log for the store, its opening included

APPLICATION_ID = 0x47414831  # "GAH1": a gate-agent hub store
SCHEMA_VERSION = 3  # 2: alerts.source_gate, alerts.held; 3: entries.short_id, alert_actions

_T = TypeVar("_T")


def connect(path: Path, venue: str) -> sqlite3.Connection:
    """Open, check or create the schema, bind the venue. Raises HubStoreError."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise HubStoreError(f"cannot open hub store {path}: {exc}") from exc
    try:
        _prepare(db, path, venue)
    except sqlite3.Error as exc:
        db.close()
        raise _failed(f"cannot open hub store {path}", exc) from exc
    except BaseException:
        db.close()
        raise
    return db


def bound_venue(path: Path) -> str | None:
    """The venue the store at ``path`` is bound to, read without writing anything (None: no
    store there yet). Raises HubStoreError when the file is not a hub store or cannot be read."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(sqlite_readonly(path), uri=True)
        try:
            (app_id,) = db.execute("PRAGMA application_id").fetchone()
            empty = db.execute("SELECT name FROM sqlite_schema LIMIT 1").fetchone() is None
            if app_id == 0 and empty:  # an empty file: the hub makes its store in it
                return None
            if app_id != APPLICATION_ID:
                raise ForeignStoreError(f"{path} is not a hub store")
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:  # as the hub refuses it (a review: the check said OK)
                raise ForeignStoreError(_newer(path, version))
            row = db.execute("SELECT value FROM meta WHERE key = 'venue'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise _failed(f"cannot read hub store {path}", exc) from exc
    return None if row is None else str(row[0])


def _failed(text: str, exc: sqlite3.Error) -> HubStoreError:
    """``exc`` as the error to raise; a file that is not an SQLite database at all is a
    ForeignStoreError: starting again cannot mend it."""
    return (ForeignStoreError if not_a_database(exc) else HubStoreError)(f"{text}: {exc}")


def _newer(path: Path, version: int) -> str:
    return f"hub store {path} has schema version {version}; this hub supports {SCHEMA_VERSION}"


def _prepare(db: sqlite3.Connection, path: Path, venue: str) -> None:
    db.execute("PRAGMA busy_timeout = 5000")
    # Read the header before anything writes: a foreign file must be left exactly as it was.
    (app_id,) = db.execute("PRAGMA application_id").fetchone()
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if app_id == 0 and version == 0:
        if db.execute("SELECT name FROM sqlite_schema LIMIT 1").fetchone() is not None:
            raise ForeignStoreError(f"{path} is an SQLite database but not a hub store")
    elif app_id != APPLICATION_ID:
        raise ForeignStoreError(f"{path} is not a hub store")
    elif version in (1, 2):
        upgrade(db, path, version)
    elif version != SCHEMA_VERSION:
        raise ForeignStoreError(_newer(path, version))
    (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
    db.execute("PRAGMA synchronous = FULL")
    if app_id == 0:
        # One transaction: a crash leaves no schema or all of it (header pragmas included), and
        # IF NOT EXISTS makes a second process creating it at the same moment harmless.
        db.executescript(
            f"BEGIN IMMEDIATE;{hub_schema.SQLITE}{hub_schema.SQLITE_AT_OPEN}"
            f"PRAGMA application_id = {APPLICATION_ID};PRAGMA user_version = {SCHEMA_VERSION};"
            "COMMIT;"
        )
        log.info("created hub store %s", path)
    else:  # a store made before: what later versions add at open (sync.hub_schema)
        db.executescript(f"BEGIN IMMEDIATE;{hub_schema.SQLITE_AT_OPEN}COMMIT;")
        transaction(db, _add_alert_gate_ids)
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('venue', ?)", (venue,))
    (bound,) = db.execute("SELECT value FROM meta WHERE key = 'venue'").fetchone()
    if bound != venue:
        raise OtherVenueError(f"hub store {path} belongs to venue {bound!r}, not {venue!r}")
    if mode != "wal":
        log.warning("hub store %s is not in WAL mode (%s)", path, mode)


def _add_alert_gate_ids(db: sqlite3.Connection) -> None:
    if "gate_ids" not in {row[1] for row in db.execute("PRAGMA table_info(alerts)")}:
        db.execute(hub_schema.SQLITE_ALERT_GATE_IDS)


def transaction(
    db: sqlite3.Connection, job: Callable[..., _T], *args: Any, begin: str = "BEGIN IMMEDIATE"
) -> _T:
    """Run ``job(db, *args)`` inside BEGIN IMMEDIATE (or ``begin``) .. COMMIT (rolled back on any
    failure)."""
    db.execute(begin)
    try:
        result = job(db, *args)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def wal(db: sqlite3.Connection) -> bool:
    """Whether the store is in WAL mode (a second, read-only :class:`ConnectionThread` needs it)."""
    return str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


class ConnectionThread:
    """A connection to the store and the one thread that uses it (the aiosqlite pattern): the
    store's writer, and the read-only connection every request's token is read on. On the
    writer's thread that read waited behind the group commit under way, so an upload joined the
    next group only after it, and most groups held one upload (tests/bench/bench_hub.py). WAL
    lets the reader read the last commit meanwhile; a store in another journal mode (a warning
    at open) reads tokens on the writer's thread, as before (a rollback journal's commit would
    keep the reader waiting, and then failing, busy)."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        """Use :meth:`open`."""
        self._path = path
        self._executor = executor
        self._db: sqlite3.Connection | None = db

    @classmethod
    async def open(
        cls, path: Path, opener: Callable[[Path], sqlite3.Connection], name: str
    ) -> ConnectionThread:
        """``opener(path)`` on a new thread named ``name``. Raises what ``opener`` raises."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, opener, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, db)

    async def run(self, job: Callable[[sqlite3.Connection], _T]) -> _T:
        """``job(db)`` on the connection's thread; SQLite errors become HubStoreError, and so
        does a closed connection."""
        db = self._db
        if db is None:
            raise HubStoreError(f"hub store {self._path} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job, db)
        except sqlite3.Error as exc:
            raise HubStoreError(f"hub store {self._path}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection and stop its thread. Idempotent."""
        db, self._db = self._db, None
        if db is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        finally:
            self._executor.shutdown(wait=False)


def read_only(path: Path) -> sqlite3.Connection:
    """The store at ``path`` (made by :func:`connect`) opened read-only. Raises HubStoreError."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise _failed(f"cannot open hub store {path}", exc) from exc
    try:
        db.execute("PRAGMA busy_timeout = 5000")
    except sqlite3.Error as exc:
        db.close()
        raise _failed(f"cannot open hub store {path}", exc) from exc
    return db
