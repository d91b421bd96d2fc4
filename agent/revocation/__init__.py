"""Revocation: signed snapshots and deltas, a SQLite store, and the scan path's in-memory index.

Entries are 16-byte keys (TK1: the ticket's ``token_id``; formats whose revocation key is a secret
string: :func:`secret_key`) on two lists, *revoked* and *blocked*. A pretix ticket's order state
(cancelled, not paid) is kept on the same lists under a second key, :func:`order_key`. A list
document is signed (:mod:`agent.signed`, kind ``"revocations"``) and carries a monotonic
``version``::

    {"type": "snapshot" | "delta", "version": int >= 1, "from_version": int (delta only),
     "issued_at": int, "expires": int,            # unix seconds: the list's signed freshness
     "revoke": B64, "unrevoke": B64, "block": B64, "unblock": B64}   # concatenated 16-byte keys

A snapshot replaces everything and carries only ``revoke`` and ``block``. A delta from version F to
V applies on an installed version I when ``F <= I < V``; its operations set or clear a key, so an
overlap is re-applied harmlessly. Older or equal versions are refused as a rollback or replay, and a
delta from a later version than the installed one as a gap. A refused document changes nothing.

The SQLite table is the durable copy; :class:`RevocationIndex` answers the scan path from memory
(two sorted NumPy ``S16`` arrays, exactly 16 bytes an entry, plus a small overlay of keys changed by
deltas since the last rebuild). Exact membership only: nothing probabilistic ever decides a denial.

The package, by seam: :mod:`~agent.revocation.index` (the in-memory index, sync, no I/O),
:mod:`~agent.revocation.document` (parse and verify a signed snapshot or delta) and
:mod:`~agent.revocation.store` (SQLite, one transaction per change, the index kept in step). The
public names are importable from here.
"""

from __future__ import annotations

from agent.revocation.document import KIND, OPS, ListMeta
from agent.revocation.index import (
    BLOCKED,
    KEY_LEN,
    ORDER_STATE_BITS,
    ORDER_STATE_PREFIX,
    REVOKED,
    DeltaPlan,
    KeyArray,
    ListState,
    RevocationIndex,
    order_key,
    secret_key,
    secret_keys,
)
from agent.revocation.store import RevocationStore

__all__ = [
    "BLOCKED",
    "KEY_LEN",
    "KIND",
    "OPS",
    "ORDER_STATE_BITS",
    "ORDER_STATE_PREFIX",
    "REVOKED",
    "DeltaPlan",
    "KeyArray",
    "ListMeta",
    "ListState",
    "RevocationIndex",
    "RevocationStore",
    "order_key",
    "secret_key",
    "secret_keys",
]
