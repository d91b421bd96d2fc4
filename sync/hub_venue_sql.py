"""What the venue's tallies (:mod:`sync.hub_venue`) read from both hub stores: every stored row
after a cursor, an annulment together with the row it cancels, in the same words for SQLite and
PostgreSQL (``?`` parameters; :func:`sync.hub_sql.numbered` makes PostgreSQL's ``$n``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Oldest first by cursor (the primary key); an annulment's target by its unique entry_id (one
# index lookup each). Attempts are read too: denials are counted by reason.
# A row's minute is its wall time, but never after its arrival at the hub: a gate whose clock
# runs ahead (or a stolen one) counts now, not in a future minute the tallies would keep.
VENUE_ROWS = (
    "SELECT e.cursor, e.gate_id, e.kind, e.verdict, e.reason, e.zone, e.wall_time, e.received_at,"
    " t.cursor, t.gate_id, t.kind, t.verdict, t.reason, t.zone, t.wall_time, t.received_at"
    " FROM entries AS e LEFT JOIN entries AS t ON e.kind = 'annul' AND t.entry_id = e.annuls"
    " WHERE e.cursor > ? ORDER BY e.cursor LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class VenueRow:
    """What the venue's tallies need of one stored row. For an annulment, ``annulled`` is the
    row it cancels (None when the store does not hold it)."""

    cursor: int
    gate_id: str
    kind: str  # entry | exit | attempt | annul
    admitted: bool
    reason: str
    zone: int | None
    wall_time: float  # no later than its arrival at the hub
    annulled: VenueRow | None = None


def venue_row(row: Iterable[Any]) -> VenueRow:
    """A :class:`VenueRow` from the columns of :data:`VENUE_ROWS`."""
    values = tuple(row)
    target = None if values[8] is None else _row(values[8:])
    return _row(values[:8], target)


def _row(values: tuple[Any, ...], annulled: VenueRow | None = None) -> VenueRow:
    cursor, gate_id, kind, verdict, reason, zone, wall_time, received_at = values
    return VenueRow(
        int(cursor), str(gate_id), str(kind), verdict == "admit", str(reason),
        None if zone is None else int(zone), min(float(wall_time), float(received_at)), annulled,
    )  # fmt: skip
