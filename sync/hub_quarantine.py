"""Setting apart the rows a copy of a gate's token wrote under the gate's own next gate_seqs.

A thief holding a copy of gate A's token can upload rows under A's upcoming gate_seqs; each later
upload of the real gate A then reuses a stored gate_seq with another entry_id: a 409 for good
(an integrity alert names the gate_seq), so A's admissions never reach the venue. Revoking the
token stops the copy but frees nothing. The operator then quarantines A's rows from that gate_seq
on (`gate-agent hub quarantine`): they move from ``entries`` to ``quarantined_entries``, kept
there for the record (every column, the feed cursor they had, when they were moved), out of the
feed, the double-admission rules and the gate_seq check (a ticket's history, `hub ticket` and
the console, still shows them, marked), so the gate's own rows from that gate_seq are taken
again once it has a new token (those it has not had acknowledged: a gate_seq below the
conflict's moves rows of its own the gate will not send again). Gates that already learned a
moved exit or annulment, which let its ticket in again, forget it (:data:`RELEASES_AFTER`,
``GET /v1/venues/{venue}/set-apart``, :mod:`sync.client_disputed`); a moved entry stays, its
ticket used. Until they do, the operator is shown each row's kind and ticket; where such a ticket was
admitted again meanwhile, the double admission the moved row hid is raised as the quarantine
moves it (the rules had seen the moved row when the ticket came back).

Refused while the gate still has a token (the copy would squat again); a batch of a revoked
token that was still arriving is refused inside its ingest transaction (TokenGoneError). Both
stores run it as one transaction under their ingest lock, with an integrity alert telling the
security console what was moved; the statements here are the same in both dialects (``?``
parameters).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent.words import plural
from sync.hub_plan import TICKET_COLUMNS, Names, NewAlert, TicketRow
from sync.hub_sql import ENTRY_COLUMNS
from sync.hub_store import HubPolicy, QuarantinedRow
from sync.hub_ticket_alerts import double_admissions
from sync.protocol_fields import MAX_DETAIL

MAX_ALERT_ENTRIES = 64  # entry ids an alert names (protocol_console.Alert reads at most 64)

_COLUMNS = ", ".join(("cursor", *ENTRY_COLUMNS))  # the table: sync.hub_schema
TOKENS = "SELECT count(*) FROM tokens WHERE gate_id = ?"
ROWS = (
    "SELECT gate_seq, entry_id, short_id, kind, received_at, boot_id FROM entries"
    " WHERE gate_id = ? AND gate_seq >= ? ORDER BY gate_seq"
)
COPY = (
    f"INSERT INTO quarantined_entries ({_COLUMNS}, quarantined_at)"
    f" SELECT {_COLUMNS}, CAST(? AS DOUBLE PRECISION) FROM entries"
    " WHERE gate_id = ? AND gate_seq >= ?"
)
DELETE = "DELETE FROM entries WHERE gate_id = ? AND gate_seq >= ?"
TOP_CURSOR = "SELECT coalesce(max(cursor), 0) FROM entries"
SET_APART_ROWS = "SELECT count(*) FROM quarantined_entries"  # rows never leave it

# The tickets a moved exit or annulment had let in again (read before the move), and what is left
# of their histories after it: the double admissions the moved row hid are raised then.
MAX_REOPENED = 500  # tickets looked at again; the alert's text names them all the same
REOPENED_REFS = (
    "SELECT DISTINCT ticket_ref FROM entries WHERE gate_id = ? AND gate_seq >= ?"
    f" AND kind IN ('exit', 'annul') ORDER BY ticket_ref LIMIT {MAX_REOPENED}"
)
GATE_NAMES = "SELECT gate_id, gate_name FROM gates"

# The moved exits and annulments gates must forget (SetApartPage), for good: a moved entry keeps
# its ticket used where it was learnt, which fails closed, and so does forgetting an exit or an
# annulment uploaded again since (a review: a listing that left out ids stored again let another
# gate's token keep a forged annulment alive by uploading a row under its id; and the count, which
# gates compare, must only grow).
_RELEASES = " FROM quarantined_entries WHERE kind IN ('exit', 'annul')"
RELEASES_TOTAL = f"SELECT count(DISTINCT entry_id){_RELEASES}"
RELEASES_AFTER = f"SELECT DISTINCT entry_id{_RELEASES} AND entry_id > ? ORDER BY entry_id LIMIT ?"


def history_sql(tickets: int) -> str:
    """The rows left of ``tickets`` tickets (attempts aside), as :func:`reopened_alerts` reads
    them; one ``?`` per ticket_ref."""
    marks = ", ".join("?" * tickets)
    return (
        f"SELECT {', '.join(TICKET_COLUMNS)} FROM entries"
        f" WHERE ticket_ref IN ({marks}) AND kind <> 'attempt'"
    )


def moved_alerts(
    gate_id: str,
    from_seq: int,
    rows: tuple[QuarantinedRow, ...],
    left: Iterable[Iterable[Any]],
    names: Mapping[str, str],
    policy: HubPolicy,
    now: float,
) -> list[NewAlert]:
    """What a quarantine of ``rows`` raises: its own alert, then the double admissions in what
    is ``left`` of the reopened tickets' histories (of :func:`history_sql`), which the moved
    exits and annulments had hidden from the rules. ``names``: every gate's name, by id."""
    own = alert(gate_id, names.get(gate_id, ""), from_seq, rows, now)
    return [own, *_reopened_alerts(left, names, policy)]


def _reopened_alerts(
    rows: Iterable[Iterable[Any]], names: Mapping[str, str], policy: HubPolicy
) -> list[NewAlert]:
    history: dict[str, list[TicketRow]] = {}
    for row in rows:
        ref, ticket_row = TicketRow.from_row(row, policy.max_clock_ahead_s)
        history.setdefault(ref, []).append(ticket_row)
    gate_names = Names({gate: name for gate, name in names.items() if name})
    return [
        alert
        for ref, past in history.items()
        for alert in double_admissions(ref, past, policy, gate_names)
    ]


# Feed cursors never go back. Gates ask for rows after the last cursor they read, and take a
# highest cursor below theirs for a store started anew (they read the feed again from the
# start). Moving the newest rows away would lower the highest cursor, and SQLite (its rowid)
# would give the next rows the numbers of the moved ones: rows gates already count as read. The
# moved rows keep their cursors in quarantined_entries (rows never leave it; indexed by cursor),
# so the highest cursor the store ever gave is the higher of the two tables' tops: the feed's
# highest cursor is never below it, and SQLite's next row is numbered above it.
SET_APART_TOP = "SELECT coalesce(max(cursor), 0) FROM quarantined_entries"
SQLITE_MAX_CURSOR = f"SELECT max(({TOP_CURSOR}), ({SET_APART_TOP}))"
POSTGRES_MAX_CURSOR = f"SELECT greatest(({TOP_CURSOR}), ({SET_APART_TOP}))"


def alert(
    gate_id: str, name: str, from_seq: int, rows: tuple[QuarantinedRow, ...], now: float
) -> NewAlert:
    """The integrity alert of a quarantine of ``rows`` (not empty) of ``gate_id``, called
    ``name`` (its id when it has none)."""
    detail = (
        f"the operator set apart {plural(len(rows), 'row')} of {name or gate_id} from gate_seq"
        f" {from_seq} through {rows[-1].gate_seq} (a copy of its token wrote them): out of the feed"
    )
    # What the stewards must hear: a moved exit or annulment let its ticket in again at the gates
    # that learnt it, and the rules, which saw it when the ticket came back, raised nothing.
    reopened = sorted({r.short_id for r in rows if r.kind in ("exit", "annul")})
    if reopened:
        detail += "; exits or annulments among them may have let in again: " + ", ".join(reopened)
        if len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 4].rsplit(", ", 1)[0] + " ..."
    tickets = {r.short_id for r in rows}
    entries = tuple(r.entry_id for r in rows[:MAX_ALERT_ENTRIES])
    return NewAlert(
        "integrity", tickets.pop() if len(tickets) == 1 else "", (name or gate_id,), (now,),
        entries, detail[:MAX_DETAIL],
        f"quarantine:{gate_id}:{from_seq}:{now!r}", gate_ids=(gate_id,),
    )  # fmt: skip
