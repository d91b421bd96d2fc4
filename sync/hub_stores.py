"""Which hub store a URL names: ``sqlite:///path/hub.db`` or ``postgresql://...``.

Kept apart from :mod:`sync.hub_store` (the Protocol both backends implement), so the Protocol
module never imports its backends.
"""

from __future__ import annotations

from sync.hub_store import HubPolicy, HubStore


async def open_store(url: str, policy: HubPolicy) -> HubStore:
    """Open the store named by ``url``: ``sqlite:///path/hub.db`` or ``postgresql://...``.

    Creates the schema when missing. Raises HubStoreError (unreachable, not a hub database) and
    ValueError for an unknown scheme.
    """
    if url.startswith("sqlite://"):
        from sync.hub_sqlite import SQLiteHubStore

        return await SQLiteHubStore.open(url.removeprefix("sqlite://"), policy)
    if url.startswith(("postgresql://", "postgres://")):
        from sync.hub_postgres import PostgresHubStore

        return await PostgresHubStore.open(url, policy)
    raise ValueError(
        f"unknown hub store {url.split(':', 1)[0]!r} (valid: sqlite://, postgresql://)"
    )
