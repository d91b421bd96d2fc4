"""Who may annul what at the hub: the checks :func:`sync.hub_rules.plan_ingest` makes of a
batch's new annulments, and what the stores read for them.

A gate annuls an admission nobody used when its passage times out. So an annulment must name an
entry of the uploading gate with the same ticket (stored, or earlier in the batch), recorded in
the same run of the gate (its boot id) at most :data:`ANNUL_WITHIN_S` before it on the gate's
monotonic clock, and with no row between the two (by gate_seq) of another run or dated later on
that clock: a gate stamps each row's ``mono_ns`` as it writes it, so in one run its rows' times
rise with their gate_seq, and it records an annulment in the run of its entry. The last check is
what keeps a stolen unit, which knows its entries' boot ids and clock values, from annulling
its admissions long after (every other gate would let those tickets in again): it can annul
only admissions of the last ANNUL_WITHIN_S before it was taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sync.protocol import EntryWire

# Entry to annulment: a shared turnstile's turn and the passage timeout (each up to 600 s) and more.
ANNUL_WITHIN_S = 1800.0


class Target(NamedTuple):
    """An entry an annulment names, as far as the check needs it."""

    gate_id: str
    ticket_ref: str
    boot_id: str
    mono_ns: int  # the gate's monotonic clock: in one run, immune to the wall clock's steps
    gate_seq: int


TARGET_COLUMNS = "entry_id, gate_id, ticket_ref, boot_id, mono_ns, gate_seq"  # entry_id, Target


class Overtake(NamedTuple):
    """Ask the store: is a stored row of the gate between the annulment ``entry_id`` and its
    entry (``after_seq < gate_seq < before_seq``) of another run than ``boot_id``, or dated past
    the annulment's ``mono_ns``? (:attr:`sync.hub_rules.KnownState.overtaken`)"""

    entry_id: str
    boot_id: str
    after_seq: int
    before_seq: int
    mono_ns: int


def annul_targets(entries: Sequence[EntryWire], stored: Mapping[str, Any]) -> list[str]:
    """The entry ids the batch's new annulments name, for :attr:`sync.hub_rules.KnownState.targets`."""
    return sorted({e.annuls for e in entries if e.annuls and e.entry_id not in stored})


def overtake_checks(
    entries: Sequence[EntryWire], stored: Mapping[str, Any], targets: Mapping[str, Target]
) -> list[Overtake]:
    """What the store must ask about the batch's new annulments of stored entries of the same
    run, for :attr:`sync.hub_rules.KnownState.overtaken` (each one statement on the gate's
    gate_seq index that stops at the first row it finds)."""
    return [
        Overtake(e.entry_id, e.boot_id, target.gate_seq, e.gate_seq, e.mono_ns)
        for e in entries
        if e.annuls is not None
        and e.entry_id not in stored
        and (target := targets.get(e.annuls)) is not None
        and target.boot_id == e.boot_id
    ]


def overtaken_in_batch(e: EntryWire, target: Target, before: Sequence[EntryWire]) -> bool:
    """True when a row of the batch before ``e`` and after its target is of another run or
    dated past ``e`` on the gate's monotonic clock."""
    return any(
        target.gate_seq < r.gate_seq < e.gate_seq
        and (r.boot_id != e.boot_id or r.mono_ns > e.mono_ns)
        for r in before
    )


def why_refused(
    e: EntryWire, target: Target | None, gate_id: str, overtaken: bool
) -> tuple[str, str] | None:
    """(field, why) when the gate may not write ``e``: an annulment of an entry that is not its
    own, or not of its passage timeout (``target``: the annulled entry; ``overtaken``: a row the
    gate recorded between the two is of another run or dated after ``e``)."""
    if e.annuls is None:
        return None
    if target is None:
        return "annuls", f"annuls an unknown entry {e.annuls}"
    if target.gate_id != gate_id:
        return "annuls", f"annuls entry {e.annuls} of another gate"
    if target.ticket_ref != e.ticket_ref:
        return "annuls", f"annuls entry {e.annuls} of another ticket"
    if target.boot_id != e.boot_id:
        return "annuls", f"annuls entry {e.annuls} recorded in another run of the gate (boot id)"
    if not 0 <= (late := (e.mono_ns - target.mono_ns) / 1e9) <= ANNUL_WITHIN_S:
        return "annuls", (
            f"annuls entry {e.annuls} {late:,.0f} s after it (a gate annuls an admission"
            f" nobody used within {ANNUL_WITHIN_S:,.0f} s)"
        )
    if overtaken:
        return "annuls", (
            f"annuls entry {e.annuls} after rows the gate recorded later (another run, or a"
            " later monotonic time than the annulment's: a gate records its annulment as the"
            " passage times out, after every row before it)"
        )
    return None
