"""The SQLite hub store's revocation list: the current version and keys, the signed deltas that
lead there, and storing the next delta (each inside the caller's transaction, on the store's
thread). The PostgreSQL store's counterpart is :mod:`sync.hub_postgres_revocations`."""

from __future__ import annotations

import sqlite3

from sync import hub_rules, hub_sql
from sync.hub_store import RevocationState, VersionTakenError


def revocation_version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'revocation_version'").fetchone()
    return 0 if row is None else int(row[0])


def add_delta(
    db: sqlite3.Connection,
    version: int,
    document: bytes,
    state: RevocationState,
    cached: RevocationState | None,
) -> None:
    current = revocation_version(db)
    if version != current + 1:
        raise VersionTakenError(
            f"revocation delta version {version} does not follow the current version {current}"
        )
    old = cached if cached is not None and cached.version == current else read_revocations(db)
    for name, before, after in (
        ("revoke", old.revoked, state.revoked),
        ("block", old.blocked, state.blocked),
    ):
        db.executemany(
            "DELETE FROM revocation_keys WHERE key = ? AND list = ?",
            ((k, name) for k in before - after),
        )
        db.executemany(
            "INSERT INTO revocation_keys (key, list) VALUES (?, ?)",
            ((k, name) for k in after - before),
        )
    db.execute(hub_sql.INSERT_DELTA, (version, document))
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('revocation_version', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(version),),
    )
    db.execute(hub_sql.PRUNE_DELTAS, (version - hub_rules.KEEP_DELTAS,))


def read_revocations(db: sqlite3.Connection) -> RevocationState:
    keys = db.execute("SELECT key, list FROM revocation_keys").fetchall()
    return RevocationState(
        revocation_version(db),
        frozenset(bytes(k) for k, lst in keys if lst == "revoke"),
        frozenset(bytes(k) for k, lst in keys if lst == "block"),
    )


def deltas(db: sqlite3.Connection, after: int, limit: int) -> list[bytes] | None:
    version = revocation_version(db)
    (oldest,) = db.execute(hub_sql.OLDEST_DELTA).fetchone()
    if hub_rules.deltas_gone(after, version, oldest):
        return None
    rows = db.execute(hub_sql.DELTAS, (after, limit)).fetchall()
    return [bytes(doc) for (doc,) in rows]
