"""The PostgreSQL hub store's revocation list: the current version and keys, the signed deltas
that lead there, and storing the next delta (one transaction each, the caller's). The SQLite
store's counterpart is :mod:`sync.hub_sqlite_revocations`."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from sync import hub_rules, hub_sql
from sync.hub_store import RevocationState, VersionTakenError

if TYPE_CHECKING:  # asyncpg's classes are generic only in the stubs
    _Conn: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

_DELTAS = hub_sql.numbered(hub_sql.DELTAS)
_INSERT_DELTA = hub_sql.numbered(hub_sql.INSERT_DELTA)
_PRUNE_DELTAS = hub_sql.numbered(hub_sql.PRUNE_DELTAS)


async def revocation_version(conn: _Conn) -> int:
    sql = "SELECT value FROM hub_meta WHERE key = 'revocation_version'"
    return int(await conn.fetchval(sql))


async def read_revocations(conn: _Conn) -> RevocationState:
    version = await revocation_version(conn)
    rows = await conn.fetch("SELECT key, list FROM revocation_keys")
    return RevocationState(
        version,
        frozenset(bytes(k) for k, lst in rows if lst == "revoke"),
        frozenset(bytes(k) for k, lst in rows if lst == "block"),
    )


async def add_delta(
    conn: _Conn,
    version: int,
    document: bytes,
    state: RevocationState,
    cached: RevocationState | None,
) -> None:
    # The row lock serialises concurrent admins: the second one sees the new version and fails.
    sql = "SELECT value FROM hub_meta WHERE key = 'revocation_version' FOR UPDATE"
    current = int(await conn.fetchval(sql))
    if version != current + 1:
        raise VersionTakenError(
            f"revocation delta version {version} does not follow the current version {current}"
        )
    if cached is not None and cached.version == current:
        old = cached
    else:
        old = await read_revocations(conn)
    for name, before, after in (
        ("revoke", old.revoked, state.revoked),
        ("block", old.blocked, state.blocked),
    ):
        await conn.execute(
            "DELETE FROM revocation_keys WHERE list = $1 AND key = ANY($2::bytea[])",
            name,
            list(before - after),
        )
        await conn.execute(
            "INSERT INTO revocation_keys (key, list) SELECT k, $1 FROM unnest($2::bytea[]) AS k",
            name,
            list(after - before),
        )
    await conn.execute(_INSERT_DELTA, version, document)
    await conn.execute(
        "UPDATE hub_meta SET value = $1 WHERE key = 'revocation_version'", str(version)
    )
    await conn.execute(_PRUNE_DELTAS, version - hub_rules.KEEP_DELTAS)


async def deltas(conn: _Conn, after: int, limit: int) -> list[bytes] | None:
    """The first ``limit`` signed deltas with version > ``after``; None when some were pruned."""
    version = await revocation_version(conn)
    oldest = await conn.fetchval(hub_sql.OLDEST_DELTA)
    if hub_rules.deltas_gone(after, version, oldest):
        return None
    return [bytes(row[0]) for row in await conn.fetch(_DELTAS, after, limit)]
