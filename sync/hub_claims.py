"""Admissions of a gate whose uploads the hub refuses, shared with the venue's gates meanwhile.

A copy of gate A's token can upload rows under A's next gate_seqs; every later upload of the
real gate A then reuses a stored gate_seq with another entry_id: 409, nothing stored, until the
operator revokes A's tokens and sets the copy's rows apart (:mod:`sync.hub_quarantine`). Until
then A's admissions reached no other gate, so a ticket A had admitted was let in again elsewhere.
Now the hub keeps the admissions (kind entry, verdict admit) of a refused batch whose entry_id it
does not hold as claims, and gates read them (``GET /v1/venues/{venue}/claims``, a page like the
feed's) into their peer rows: the ticket is used there too. Only admissions: a claim can make a
ticket used, never let one in again (an exit or annulment waits for the quarantine), and a token
that could write them could upload entries anyway. Once the gate is heard again its rows come
through the feed with the same entry ids, which gates store once. At most
:data:`MAX_CLAIMS_PER_GATE` claims a gate, for good (a stolen token filling them fills no disk).
A double admission a claim makes is raised with the conflict (:func:`sync.hub_rules.plan_ingest`,
within the gate's alert budget), not once the rows come through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agent.redact import short_id
from sync.hub_rules import claimable
from sync.hub_sql import feed_entry
from sync.protocol import EntryWire, FeedEntry

MAX_CLAIMS_PER_GATE = 20_000

# One row a statement (a refused batch is at most 500), stored unless the entry_id is held, as an
# entry or a claim, while the gate has room (CLAIMS_OF_GATE). Both dialects (``?`` parameters).
CLAIMS_OF_GATE = "SELECT count(*) FROM claimed_entries WHERE gate_id = ?"
CLAIM = (
    "INSERT INTO claimed_entries (entry_id, gate_id, gate_seq, ticket_ref, wall_time, hlc,"
    " claimed_at, short_id) SELECT ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE NOT EXISTS (SELECT 1 FROM entries WHERE entry_id = ?)"
    " ON CONFLICT (entry_id) DO NOTHING"
)
# The feed's columns (sync.hub_sql.FEED), the claim's id as its cursor.
CLAIMS_AFTER = (
    "SELECT c.claim_id, c.entry_id, c.gate_id, COALESCE(NULLIF(g.gate_name, ''), c.gate_id),"
    " c.gate_seq, c.ticket_ref, 'entry', NULL, c.wall_time, c.hlc, c.claimed_at"
    " FROM claimed_entries AS c LEFT JOIN gates AS g ON g.gate_id = c.gate_id"
    " WHERE c.claim_id > ? ORDER BY c.claim_id LIMIT ?"
)
TOP_CLAIM = "SELECT coalesce(max(claim_id), 0) FROM claimed_entries"


def claim_params(gate_id: str, rows: Sequence[EntryWire], now: float) -> list[tuple[Any, ...]]:
    """The :data:`CLAIM` parameters of the admissions among ``rows`` (those of ``gate_id``)."""
    return [
        (e.entry_id, gate_id, e.gate_seq, e.ticket_ref, e.wall_time, e.hlc, now,
         short_id(e.ticket_ref), e.entry_id)
        for e in claimable(gate_id, rows)
    ]  # fmt: skip


def room(held: int) -> int:
    """How many more claims a gate holding ``held`` may have."""
    return max(0, MAX_CLAIMS_PER_GATE - held)


def claims_page(
    rows: Iterable[Iterable[Any]], after: int, top: int, max_ahead_s: float
) -> tuple[list[FeedEntry], int]:
    """The claims after ``after`` as feed entries, and the next cursor: the last one's, else
    ``after``, or the highest claim when ``after`` is beyond it (a new store: read again)."""
    entries = [feed_entry(row, max_ahead_s) for row in rows]
    if entries:
        return entries, entries[-1].cursor
    return entries, min(after, top)
