"""The durable revocation list (SQLite, ``WITHOUT ROWID``) and the index it keeps in step.

Every change is one IMMEDIATE transaction; the index's next state is computed before COMMIT and
installed after it, so SQLite and memory never disagree. See :mod:`agent.revocation`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import aiosqlite
import numpy as np

from agent import keys
from agent.errors import RevocationError
from agent.revocation.document import NOTHING, ListDocument, ListMeta, check_version, verify
from agent.revocation.index import (
    BLOCKED,
    DTYPE,
    KEY_LEN,
    REVOKED,
    KeyArray,
    ListState,
    RevocationIndex,
    found,
    is_strictly_sorted,
    secret_keys,
)

log = logging.getLogger(__name__)

_LOAD_CHUNK = 4096  # rows per fetchmany: small, so loading leaves little heap behind
_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=FULL",
    "journal_size_limit=67108864",  # a big snapshot must not leave a huge WAL on the SD card
    "cache_size=-512",  # KiB; the scan path never reads SQLite, so keep its cache out of RSS
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS revocation(list INTEGER NOT NULL, key BLOB NOT NULL,"
    " PRIMARY KEY(list, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS revocation_meta(id INTEGER PRIMARY KEY CHECK(id=1),"
    " version INTEGER NOT NULL, issued_at INTEGER, expires INTEGER)",
    # Download positions of an authenticated upstream (pretix's created_since/updated_since),
    # written in the same transaction as the keys they led to.
    "CREATE TABLE IF NOT EXISTS revocation_cursor(name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def _rows(list_id: int, arr: KeyArray) -> Iterator[tuple[int, bytes]]:
    raw = arr.tobytes()
    for i in range(0, len(raw), KEY_LEN):
        yield list_id, raw[i : i + KEY_LEN]


async def _read_meta(db: aiosqlite.Connection) -> ListMeta:
    async with db.execute(
        "SELECT version, issued_at, expires FROM revocation_meta WHERE id = 1"
    ) as cur:
        row = await cur.fetchone()
    return NOTHING if row is None else ListMeta(row[0], row[1], row[2])


async def _load_list(db: aiosqlite.Connection, list_id: int, count: int) -> KeyArray:
    # Rows arrive in primary-key order (memcmp, the order NumPy sorts S16 in): no sort, no set,
    # and one preallocated array, so the peak stays near the final 16 bytes an entry.
    arr = np.empty(count, dtype=DTYPE)
    pos = 0
    sql = "SELECT key FROM revocation WHERE list = ? ORDER BY key"
    async with db.execute(sql, (list_id,)) as cur:
        while chunk := [row[0] for row in await cur.fetchmany(_LOAD_CHUNK)]:
            end = pos + len(chunk)
            if end > count:
                raise RevocationError(f"revocation store: list {list_id} grew while loading")
            try:
                arr[pos:end] = np.frombuffer(b"".join(chunk), dtype=DTYPE)
            except TypeError as exc:  # b"".join meets a TEXT or INTEGER key
                raise RevocationError("revocation store is corrupt: a key is not a blob") from exc
            pos = end
    if pos != count or not is_strictly_sorted(arr):
        raise RevocationError(f"revocation store: list {list_id} did not load in key order")
    return arr


async def _load_index(
    db: aiosqlite.Connection, rebuild_at: int
) -> tuple[RevocationIndex, ListMeta]:
    await db.execute("BEGIN")  # one read snapshot for the counts, the keys and the meta
    try:
        sql = "SELECT list, count(*), sum(length(key) <> 16) FROM revocation GROUP BY list"
        async with db.execute(sql) as cur:
            counts = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
        if set(counts) - {REVOKED, BLOCKED} or any(bad for _, bad in counts.values()):
            raise RevocationError("revocation store is corrupt: unknown list id or malformed key")
        revoked = await _load_list(db, REVOKED, counts.get(REVOKED, (0, 0))[0])
        blocked = await _load_list(db, BLOCKED, counts.get(BLOCKED, (0, 0))[0])
        meta = await _read_meta(db)
    finally:
        await db.execute("COMMIT")
    return RevocationIndex(revoked, blocked, rebuild_at=rebuild_at), meta


class RevocationStore:
    """The durable revocation list (SQLite) and its in-memory index; open with :meth:`open`."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        index: RevocationIndex,
        meta: ListMeta,
        name: str,
        cursor: Mapping[str, str] | None = None,
    ) -> None:
        self._db: aiosqlite.Connection | None = db
        self._index = index
        self._meta = meta
        self._name = name
        self._cursor: dict[str, str] = dict(cursor or {})
        self._lock = asyncio.Lock()
        self._installs: set[asyncio.Task[ListMeta]] = set()

    @classmethod
    async def open(
        cls, path: Path | str, *, rebuild_at: int = RevocationIndex.DEFAULT_REBUILD_AT
    ) -> Self:
        """Open (creating if needed) the store at ``path`` (or ":memory:") and load the index.

        Raises RevocationError when the database cannot be opened or its content is corrupt.
        """
        try:
            db = await aiosqlite.connect(str(path), isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise RevocationError(f"{path}: cannot open revocation store: {exc}") from exc
        try:
            for pragma in _PRAGMAS:
                await db.execute(f"PRAGMA {pragma}")
            for statement in _SCHEMA:
                await db.execute(statement)
            index, meta = await _load_index(db, rebuild_at)
            cursor = await _read_cursor(db)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise RevocationError(f"{path}: cannot read revocation store: {exc}") from exc
            raise
        log.info("revocation store %s: v%d, %d entries", path, meta.version, len(index))
        return cls(db, index, meta, str(path), cursor)

    @property
    def index(self) -> RevocationIndex:
        return self._index

    @property
    def meta(self) -> ListMeta:
        return self._meta

    @property
    def upstream_cursor(self) -> dict[str, str]:
        """The cursor stored by the last :meth:`apply_secrets` (a copy; empty when none)."""
        return dict(self._cursor)

    def status(self, key: bytes) -> ListState:
        """The list state of a 16-byte key, from memory; raises ValueError for a wrong length."""
        return self._index.status(key)

    async def apply(self, data: bytes, signers: Sequence[keys.PublicKey]) -> ListMeta:
        """Verify a signed snapshot or delta and install it atomically; returns the new meta.

        Raises RevocationError (forged, truncated, malformed, gap, store fault) or RollbackError
        (version not newer than installed); either way nothing changes.
        """
        if self._db is None:
            raise RevocationError(f"{self._name}: revocation store is closed")
        doc = await asyncio.to_thread(verify, data, signers)
        install = asyncio.ensure_future(self._install(doc))
        self._installs.add(install)
        install.add_done_callback(self._installs.discard)
        # Shielded: once the transaction has started, SQLite and the index finish together even
        # if the caller is cancelled. Refusals are raised, not logged: the caller knows whether a
        # rollback is a harmless re-read of a file or an attack worth an alert.
        return await asyncio.shield(install)

    async def apply_file(self, path: Path, signers: Sequence[keys.PublicKey]) -> ListMeta:
        """:meth:`apply` to a file's content; an unreadable file raises RevocationError."""
        try:
            data = await asyncio.to_thread(Path(path).read_bytes)
        except OSError as exc:
            raise RevocationError(f"{path}: cannot read revocation list: {exc}") from exc
        return await self.apply(data, signers)

    async def apply_secrets(
        self,
        *,
        revoke: Iterable[str] = (),
        unrevoke: Iterable[str] = (),
        block: Iterable[str] = (),
        unblock: Iterable[str] = (),
        cursor: Mapping[str, str],
        issued_at: int | None = None,
        fresh: bool = True,
    ) -> ListMeta:
        """Apply secrets from an authenticated upstream (pretix), no signature, one transaction.

        Each secret becomes its key (:func:`secret_key`); the operations set or clear it as a
        delta does, so applying the same download twice changes nothing. ``cursor`` entries are
        stored (merged) in the same transaction and read back by :attr:`upstream_cursor`.
        ``issued_at`` (default: now) refreshes the list's freshness even when nothing changed;
        with ``fresh=False`` (a part of a longer download) the installed freshness is kept;
        the version goes up by one only when a key's state changed (or nothing was installed
        yet): pretix's inclusive cursors send the newest rows again every round, and setting
        what is already set is no change.
        Raises RevocationError when a secret is both set and cleared on one list or the store
        fails; then nothing changes.
        """
        if self._db is None:
            raise RevocationError(f"{self._name}: revocation store is closed")
        ops = [secret_keys(values) for values in (revoke, unrevoke, block, unblock)]
        for (setting, clearing), name in (((0, 1), "revoke"), ((2, 3), "block")):
            if found(ops[setting], ops[clearing])[1].any():
                raise RevocationError(f"{self._name}: a secret is both {name}d and un{name}d")
        stamp = int(time.time()) if issued_at is None else issued_at
        install = asyncio.ensure_future(
            self._install_secrets(ops, dict(cursor), stamp if fresh else None)
        )
        self._installs.add(install)
        install.add_done_callback(self._installs.discard)
        return await asyncio.shield(install)

    async def close(self) -> None:
        """Finish any install in progress and close the database; safe to call twice."""
        db, self._db = self._db, None
        if db is None:
            return
        await asyncio.gather(*self._installs, return_exceptions=True)
        await db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _install(self, doc: ListDocument) -> ListMeta:
        async with self._lock:
            check_version(doc, self._meta.version)
            plan = None
            if doc.type == "delta":
                plan = await asyncio.to_thread(
                    self._index.plan_delta, doc.revoke, doc.unrevoke, doc.block, doc.unblock
                )
            await self._write(doc)
            # After COMMIT nothing below can fail: the next index state is already computed.
            if plan is None:
                self._index.replace(doc.revoke, doc.block)
            else:
                self._index.apply_plan(plan)
            self._meta = ListMeta(doc.version, doc.issued_at, doc.expires)
            if doc.type == "snapshot":
                self._cursor = {}
        log.info(
            "%s: revocation %s installed, %d entries", self._name, doc.describe(), len(self._index)
        )
        return self._meta

    async def _install_secrets(
        self, ops: list[KeyArray], cursor: dict[str, str], issued_at: int | None
    ) -> ListMeta:
        """Install ``ops`` and ``cursor``; ``issued_at`` None keeps the installed freshness."""
        revoke, unrevoke, block, unblock = ops
        async with self._lock:
            plan = None
            if any(len(op) for op in ops):
                plan = await asyncio.to_thread(
                    self._index.plan_delta, revoke, unrevoke, block, unblock
                )
            changed = plan is not None and plan.changed
            version = self._meta.version + 1 if changed or not self._meta.version else None
            version = version or self._meta.version
            if issued_at is None:  # a part of a download: the freshness stays as installed
                meta = ListMeta(version, self._meta.issued_at, self._meta.expires)
            else:
                meta = ListMeta(version, issued_at, None)

            async def rows(db: aiosqlite.Connection) -> None:
                await self._check_unchanged(db)
                if changed:
                    await _write_ops(db, revoke, unrevoke, block, unblock)
                await _write_meta(db, meta)
                await db.executemany(
                    "INSERT OR REPLACE INTO revocation_cursor(name, value) VALUES (?, ?)",
                    sorted(cursor.items()),
                )

            await self._transaction(rows)
            if plan is not None and changed:
                self._index.apply_plan(plan)
            self._meta = meta
            self._cursor.update(cursor)
        if changed:
            log.info(
                "%s: upstream secrets v%d installed (revoke %d, unrevoke %d, block %d,"
                " unblock %d), %d entries",
                self._name, meta.version, len(revoke), len(unrevoke), len(block), len(unblock),
                len(self._index),
            )  # fmt: skip
        return meta

    async def _write(self, doc: ListDocument) -> None:
        await self._transaction(lambda db: self._write_rows(db, doc))

    async def _transaction(self, body: Callable[[aiosqlite.Connection], Awaitable[None]]) -> None:
        """Run ``body`` in one IMMEDIATE transaction; raises RevocationError on a store fault."""
        db = self._db
        if db is None:
            raise RevocationError(f"{self._name}: revocation store is closed")
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                await body(db)
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    # A failing ROLLBACK must not hide the error that made us roll back.
                    with contextlib.suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise RevocationError(f"{self._name}: cannot store revocation list: {exc}") from exc

    async def _check_unchanged(self, db: aiosqlite.Connection) -> None:
        if await _read_meta(db) != self._meta:
            raise RevocationError(f"{self._name}: store was changed by another process; reopen it")

    async def _write_rows(self, db: aiosqlite.Connection, doc: ListDocument) -> None:
        await self._check_unchanged(db)
        if doc.type == "snapshot":
            # A snapshot replaces everything, so an upstream's download positions no longer hold.
            await db.execute("DELETE FROM revocation")
            await db.execute("DELETE FROM revocation_cursor")
        await _write_ops(db, doc.revoke, doc.unrevoke, doc.block, doc.unblock)
        await _write_meta(db, ListMeta(doc.version, doc.issued_at, doc.expires))


async def _write_ops(
    db: aiosqlite.Connection,
    revoke: KeyArray,
    unrevoke: KeyArray,
    block: KeyArray,
    unblock: KeyArray,
) -> None:
    insert = "INSERT OR IGNORE INTO revocation(list, key) VALUES (?, ?)"
    delete = "DELETE FROM revocation WHERE list = ? AND key = ?"
    await db.executemany(insert, _rows(REVOKED, revoke))
    await db.executemany(insert, _rows(BLOCKED, block))
    await db.executemany(delete, _rows(REVOKED, unrevoke))
    await db.executemany(delete, _rows(BLOCKED, unblock))


async def _write_meta(db: aiosqlite.Connection, meta: ListMeta) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO revocation_meta(id, version, issued_at, expires)"
        " VALUES (1, ?, ?, ?)",
        (meta.version, meta.issued_at, meta.expires),
    )


async def _read_cursor(db: aiosqlite.Connection) -> dict[str, str]:
    async with db.execute("SELECT name, value FROM revocation_cursor") as cur:
        return {str(name): str(value) for name, value in await cur.fetchall()}
