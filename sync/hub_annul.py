"""Who may annul what at the hub, and the runs a gate's rows come from: the checks
:func:`sync.hub_rules.plan_ingest` makes of a batch's new rows, and what the stores read for
them.

A gate annuls an admission nobody used when its passage times out. So an annulment must name an
entry of the uploading gate with the same ticket (stored, or earlier in the batch), recorded in
the same run of the gate (its boot id) at most :data:`ANNUL_WITHIN_S` before it on the gate's
monotonic clock, and the gate's row before it (by gate_seq) must be of its run and dated no
later on that clock.

That last check holds because of the rule on runs, which every new row passes against the
gate's row before it: a gate stamps ``mono_ns`` as it writes each row (one writer thread, one
journal per unit) and its boot id is the kernel's, new at each boot; so in one run a gate's rows
are never dated back, and a run it has left never comes back. A row that breaks either is
refused (nothing of its batch stored, an integrity alert). Together they keep a stolen unit,
which knows its entries' boot ids and clock values, from annulling an admission it made long
before (every other gate would let that ticket in again): dating the annulment just after the
entry is dating it before the rows the gate recorded since, and a row put first to hide them
breaks the rule itself. It can annul only admissions of the last ANNUL_WITHIN_S before the
newest row it had sent, and those of the last ANNUL_WITHIN_S before a hole in its gate_seqs
(rows the hub lost: a restore from backup), where it can put the annulment. A row of a copy of
the token far above the gate's numbers stops none of the gate's rows (an annulment after the
newest row refused the gate's every annulment then: a review). The checks read the gate's row
below the batch (one indexed row) and, only when a batch changes run, one probe of the
(gate_id, boot_id) index: no scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


TARGET_COLUMNS = "entry_id, gate_id, ticket_ref, boot_id, mono_ns"  # entry_id, then a Target


class RunMark(NamedTuple):
    """The run (boot id) and monotonic time of a gate's newest row."""

    boot_id: str
    mono_ns: int


def annul_targets(entries: Sequence[EntryWire], stored: Mapping[str, Any]) -> list[str]:
    """The entry ids the batch's new annulments name, for :attr:`sync.hub_rules.KnownState.targets`."""
    return sorted({e.annuls for e in entries if e.annuls and e.entry_id not in stored})


def first_new(entries: Sequence[EntryWire], stored: Mapping[str, Any]) -> int | None:
    """The gate_seq of the batch's first row not stored (for the row just below it,
    :attr:`sync.hub_rules.KnownState.run_before`); None when every row is stored."""
    return next((e.gate_seq for e in entries if e.entry_id not in stored), None)


def boots_to_ask(entries: Iterable[EntryWire], before: RunMark | None) -> list[str]:
    """The batch's runs other than the one of the gate's row below it: whether the gate has
    rows of them is :attr:`sync.hub_rules.KnownState.seen_boots` (usually none to ask)."""
    return sorted({e.boot_id for e in entries} - ({before.boot_id} if before else set()))


def run_refusal(
    e: EntryWire, before: RunMark | None, seen_boots: Iterable[str]
) -> tuple[str, str] | None:
    """(field, why) when ``e``, the gate's next row after ``before`` (its newest; None: none),
    breaks the rule on runs; ``seen_boots``: the runs the gate has rows of."""
    if before is None:
        return None
    if e.boot_id == before.boot_id:
        if e.mono_ns < before.mono_ns:
            return "mono_ns", (
                f"gate_seq {e.gate_seq} dated before the gate's row before it in the same run"
                " (its monotonic clock never runs back)"
            )
        return None
    if e.boot_id in seen_boots:
        return "boot_id", f"gate_seq {e.gate_seq} of a run the gate had left (boot id)"
    return None


def why_refused(
    e: EntryWire, target: Target | None, gate_id: str, before: RunMark | None
) -> tuple[str, str] | None:
    """(field, why) when the gate may not write the annulment ``e``: of an entry that is not its
    own, not of its passage timeout, or not after every row the gate recorded before it
    (``target``: the annulled entry; ``before``: the gate's row before it by gate_seq, stored
    or earlier in the batch)."""
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
    if before is not None and (before.boot_id != e.boot_id or before.mono_ns > e.mono_ns):
        return "annuls", (
            f"annuls entry {e.annuls} after rows the gate recorded later (another run, a later"
            " monotonic time or gate_seq: a gate records its annulment as the passage times"
            " out, after every row before it)"
        )
    return None
