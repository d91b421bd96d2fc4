"""The PostgreSQL hub store's database: its schema created (once, under a lock, however many
hub processes start), brought up to date or refused, and the venue it is bound to; the
advisory lock keys every process derives alike. The SQLite store's counterpart is
:mod:`sync.hub_sqlite_db`.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from sync import hub_schema
from sync.hub_postgres_console import upgrade_2_to_3
from sync.hub_store import ForeignStoreError, OtherVenueError

if TYPE_CHECKING:  # asyncpg's classes are generic only in the stubs
    _Conn: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

log = logging.getLogger("sync.hub_postgres")  # one log for the store, its opening included

SCHEMA = "gate-agent-hub/3"  # 2: alerts.source_gate, alerts.held; 3: short_id, alert_actions
_OLD_SCHEMA = "gate-agent-hub/1"
_SCHEMA_2 = "gate-agent-hub/2"
_HAS_ALERT_GATE_IDS = (  # the alerts table the ALTER would name, as search_path finds it
    "SELECT count(*) FROM pg_attribute WHERE attrelid = 'alerts'::regclass"
    " AND attname = 'gate_ids' AND NOT attisdropped"
)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` (the same in every process)."""
    digest = hashlib.blake2b(f"gate-agent-hub:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def prepare(conn: _Conn, where: str, venue: str) -> None:
    """Create the schema or check it, for ``venue`` (``where``: the database, for messages).

    Raises ForeignStoreError for a database that is not a hub store or of another schema
    version, OtherVenueError for another venue's."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("schema"))
        if await conn.fetchval("SELECT to_regclass('hub_meta') IS NULL"):
            tables = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
            if tables:
                raise ForeignStoreError(f"database {where} is not a hub store")
            await conn.execute(hub_schema.POSTGRES)
            await conn.execute(
                "INSERT INTO hub_meta (key, value) VALUES ('schema', $1), ('venue', $2),"
                " ('revocation_version', '0')",
                SCHEMA,
                venue,
            )
            log.info("created hub store %s", where)
        meta = {r[0]: r[1] for r in await conn.fetch("SELECT key, value FROM hub_meta")}
        if meta.get("schema") == _OLD_SCHEMA:
            await conn.execute(hub_schema.POSTGRES_1_TO_2)
            meta["schema"] = _SCHEMA_2
            log.warning(
                "hub store %s: schema upgraded to %s; gate names, which gates chose for"
                " themselves before, are reset: name each gate with `gate-agent hub token"
                " --gate ID --name NAME`",
                where,
                _SCHEMA_2,
            )
        if meta.get("schema") == _SCHEMA_2:
            await upgrade_2_to_3(conn, where, SCHEMA)
            meta["schema"] = SCHEMA
        if meta.get("schema") == SCHEMA:
            await conn.execute(hub_schema.POSTGRES_AT_OPEN)
            if not await conn.fetchval(_HAS_ALERT_GATE_IDS):
                await conn.execute(hub_schema.POSTGRES_ALERT_GATE_IDS)
    if meta.get("schema") != SCHEMA:
        raise ForeignStoreError(
            f"database {where} has hub schema {meta.get('schema')!r}; this hub supports {SCHEMA!r}"
        )
    if meta.get("venue") != venue:
        raise OtherVenueError(
            f"hub store {where} belongs to venue {meta.get('venue')!r}, not {venue!r}"
        )
