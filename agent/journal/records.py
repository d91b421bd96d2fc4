"""The journal's values: what one row of this gate, one row of a peer and one history item hold.

Plain frozen dataclasses and their conversion from and to SQLite rows; no I/O here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from agent.clock import ClockReading
from agent.errors import JournalError
from agent.model import Decision, Flag, Reason, Verdict

log = logging.getLogger("agent.journal")

Kind = Literal["entry", "exit", "attempt", "annul"]
KINDS: frozenset[str] = frozenset(get_args(Kind))
# Peer HLCs are capped far below the 63-bit column limit (physical part < 2**46 ms, year ~4199),
# so a bogus peer value cannot push our own HLC to overflow and stop recording.
_PEER_HLC_MAX = (1 << 62) - 1
_PEER_WALL_MAX = (_PEER_HLC_MAX >> 16) / 1000  # seconds: the HLC's physical range
# Attempts are not admissions and never count against a ticket, so they stay out of history.
HISTORY_KINDS = frozenset({"entry", "exit", "annul"})


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One admission-relevant event for a ticket, from this gate (``peer=False``) or another."""

    kind: str
    gate_id: str
    gate_name: str
    lane: str
    wall_time: float
    entry_id: str
    annuls: str | None
    hlc: int
    peer: bool
    code_time: int | None = None  # a rotating ticket's code, on this gate's own rows
    gate_seq: int = 0  # breaks HLC ties within a gate (rows the hub cut to one time)
    timed: bool = True  # False: this gate's row, decided while its clock was not trusted

    @property
    def order(self) -> tuple[int, str, int]:
        """Position in a ticket's history: HLC, then gate, then gate_seq (as the hub orders)."""
        return self.hlc, self.gate_id, self.gate_seq


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """One row of this gate's journal, exactly as stored."""

    gate_seq: int
    entry_id: str
    gate_id: str
    lane: str
    ticket_ref: str
    kind: Kind
    verdict: Verdict
    reason: Reason
    detail: str
    flags: frozenset[Flag]
    annuls: str | None
    zone: int | None
    wall_time: float
    clock_synced: bool
    mono_ns: int
    boot_id: str
    hlc: int
    rev_version: int
    offline: bool
    synced_at: float | None
    code_time: int | None = None  # a rotating ticket's admission: the code's Unix second
    rev_key: str | None = None  # the ticket's revocation key (hex), when its signature verified

    def _params(self) -> tuple[Any, ...]:
        """The row's column values, in ``FIELDS`` order, as SQLite stores them."""
        flags = ",".join(sorted(f.value for f in self.flags))
        return tuple(flags if name == "flags" else getattr(self, name) for name in FIELDS)


# The columns of ``entries`` are exactly the fields of EntryRecord, in order.
FIELDS = tuple(f.name for f in fields(EntryRecord))
COLUMNS = ", ".join(FIELDS)


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """An entry recorded by another gate, as learnt from the hub's venue feed."""

    entry_id: str
    gate_id: str
    gate_name: str
    gate_seq: int
    ticket_ref: str
    kind: str
    annuls: str | None
    wall_time: float
    hlc: int


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A security alert about one of this gate's entries, found after its decision (by the
    upstream): kept in the journal beside the entries, one per entry and finding."""

    kind: str  # "duplicate_entry", "already_redeemed", "order_not_valid"
    finding: str  # what it says of its entry ("entry", "order"): one alert per entry and finding
    entry_id: str
    ticket_ref: str  # kept as its shared ref (agent.redact.shared_ref): never a pretix secret
    other: str  # who else: another device ("pretix-device-2"), "pretix" for an order
    at: float  # the entry's wall time
    other_at: float | None  # the other's entry; when the order stopped admitting; None: not dated
    detail: str
    raised_at: float = 0.0  # when it was kept (the journal sets it)
    alert_id: int = 0  # its place in the journal (the journal sets it)


ALERT_FIELDS = tuple(f.name for f in fields(AlertRecord))
ALERT_COLUMNS = ", ".join(ALERT_FIELDS)
_ALERT_TEXT_MAX = 500  # other, detail: pretix's words in part, capped


def alert_params(alert: AlertRecord) -> tuple[Any, ...]:
    """Column values for ``alerts`` as ``schema.INSERT_ALERT`` names them (no ``alert_id``)."""
    a = alert
    return (a.kind, a.finding, a.entry_id, a.ticket_ref, a.other[:_ALERT_TEXT_MAX], a.at,
            a.other_at, a.detail[:_ALERT_TEXT_MAX], a.raised_at)  # fmt: skip


def alert_record(row: Sequence[Any]) -> AlertRecord:
    """A row of ``alerts`` (all of ``ALERT_COLUMNS``, in order) as an AlertRecord."""
    return AlertRecord(*row)


# ``clock_synced`` as stored: 0 not synchronised, 1 the system's synchronised clock, HUB_TIME the
# hub's time (trusted for the decision but, like an unsynchronised reading, never the clock floor
# at the next start: agent.clock). Read back, both 1 and HUB_TIME are True.
HUB_TIME = 2
_CLOCK_AT = FIELDS.index("clock_synced")


def entry_params(rec: EntryRecord, *, hub_time: bool = False) -> tuple[Any, ...]:
    """Column values for ``entries``, in ``FIELDS`` order; ``hub_time``: decided on the hub's
    time (stored as HUB_TIME)."""
    params = rec._params()
    if hub_time and rec.clock_synced:
        return (*params[:_CLOCK_AT], HUB_TIME, *params[_CLOCK_AT + 1 :])
    return params


def peer_params(e: PeerEntry, received_at: float) -> tuple[Any, ...]:
    """Column values for ``peer_entries``: the PeerEntry fields in order, then ``received_at``."""
    return (*(getattr(e, f.name) for f in fields(PeerEntry)), received_at)


def history_entry(row: Sequence[Any]) -> HistoryEntry:
    """A history row (as the history query selects it) as a HistoryEntry."""
    # Column affinities (TEXT, REAL, INTEGER) already give the field types; only peer is a flag.
    kind, gate_id, gate_name, lane, wall_time, entry_id, annuls, hlc, peer, code_time, seq, t = row
    return HistoryEntry(
        kind, gate_id, gate_name, lane, wall_time, entry_id, annuls, hlc, bool(peer), code_time,
        seq, bool(t),
    )  # fmt: skip


def entry_record(row: Sequence[Any]) -> EntryRecord:
    """A row of ``entries`` (all of ``COLUMNS``, in order) as an EntryRecord."""
    values = dict(zip(FIELDS, row, strict=True))
    values["verdict"] = Verdict(values["verdict"])
    values["reason"] = Reason(values["reason"])
    values["flags"] = frozenset(Flag(f) for f in values["flags"].split(",") if f)
    values["clock_synced"] = bool(values["clock_synced"])
    values["offline"] = bool(values["offline"])
    return EntryRecord(**values)


def acceptable_peer(entry: PeerEntry, own_gate_id: str) -> bool:
    """Whether a peer entry may be stored: not this gate's own echo, and well formed (logged)."""
    if entry.gate_id == own_gate_id:
        return False
    # A wall time outside the HLC's range (or NaN) would break every later decision that
    # shows it to staff ("Gate 3, 19:02:11"), so such an entry is refused here.
    wall_ok = math.isfinite(entry.wall_time) and 0 <= entry.wall_time <= _PEER_WALL_MAX
    if entry.kind not in KINDS or not 0 <= entry.hlc <= _PEER_HLC_MAX or not wall_ok:
        log.warning("skipping malformed peer entry %s from gate %s", entry.entry_id, entry.gate_id)
        return False
    return True


class DecisionNotRecorded(JournalError):
    """A decision was made but its row could not be written; ``decision`` says what it was."""

    def __init__(self, error: JournalError, decision: Decision) -> None:
        super().__init__(str(error))
        self.decision = decision


@dataclass(frozen=True, slots=True)
class RowDraft:
    """What the caller fixes of a row; the writer thread adds gate_seq, entry_id and HLC
    (:class:`agent.journal.store.Journal`)."""

    ticket_ref: str
    kind: Kind
    lane: str
    rev_version: int
    zone: int | None
    annuls: str | None
    offline: bool
    reading: ClockReading
    code_time: int | None = None
    rev_key: str | None = None
