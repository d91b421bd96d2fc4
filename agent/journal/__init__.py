"""The gate's durable journal: every decision, in order, before the gate moves.

The package's parts:

- :mod:`~agent.journal.records`: the values (``EntryRecord``, ``PeerEntry``, ``HistoryEntry``,
  ``AlertRecord``, ``Kind``);
- :mod:`~agent.journal.schema`: the SQL schema, its creation and checks (the only journal DDL);
- :mod:`~agent.journal.writer`: the thread that owns the connection;
- :mod:`~agent.journal.checkpoint`: WAL checkpoints on a worker thread, off the decision path;
- :mod:`~agent.journal.store`: :class:`Journal`, recording, peers, outbox, recovery;
- :mod:`~agent.journal.queries`: read-only queries (history, outbox, `gate-agent events`);
- :mod:`~agent.journal.prune`: retention, the one way rows leave.

The names below are the public API; import them from ``agent.journal``.
"""

from agent.journal.queries import read_history
from agent.journal.records import (
    KINDS,
    AlertRecord,
    DecisionNotRecorded,
    EntryRecord,
    HistoryEntry,
    Kind,
    PeerEntry,
)
from agent.journal.schema import APPLICATION_ID, SCHEMA_VERSION
from agent.journal.store import Journal

__all__ = [
    "APPLICATION_ID",
    "KINDS",
    "SCHEMA_VERSION",
    "AlertRecord",
    "DecisionNotRecorded",
    "EntryRecord",
    "HistoryEntry",
    "Journal",
    "Kind",
    "PeerEntry",
    "read_history",
]
