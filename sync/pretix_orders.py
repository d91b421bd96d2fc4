"""pretix's orders as the adapter reads them: what it asks of each order, and what the answer
says of each ticket (pure functions, no I/O). The orders' download is
:meth:`sync.pretix_download.PretixDownload.checkins`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from agent.pretix_event import is_secret
from agent.revocation import ListState
from sync.pretix_wire import time_field

# pretix's order statuses: pending, paid, expired, cancelled.
_ORDER_STATUS = {
    "n": ListState.UNPAID,
    "p": ListState.NONE,
    "e": ListState.CANCELED,
    "c": ListState.CANCELED,
}

# What the adapter asks of each order (pretix's ``include``): its state (status, whether it
# admits while pending or waits for approval, when it was cancelled), a position's id, secret,
# whether it is cancelled and its successful check-ins; nothing personal, and a few hundred
# bytes per order. Cancelled positions are listed too (``include_canceled_positions``).
ORDER_FIELDS = (
    "datetime", "status", "require_approval", "valid_if_pending", "cancellation_date",
    "positions.id", "positions.secret", "positions.canceled", "positions.checkins",
)  # fmt: skip
# What pretix then need not even read (each skips a join or prefetch on its side).
ORDER_SKIPPED = ("fees", "payments", "refunds", "invoice_address", "customer")


def order_positions(orders: Iterable[Any]) -> tuple[list[Any], int]:
    """The positions of downloaded orders, as rows like a check-in list's positions; also the
    count of orders that were not well-formed (skipped)."""
    rows: list[Any] = []
    skipped = 0
    for order in orders:
        positions = order.get("positions") if isinstance(order, dict) else None
        if isinstance(positions, list):
            rows += positions
        else:
            skipped += 1
    return rows, skipped


class OrderStates(NamedTuple):
    """What downloaded orders say of their tickets, by secret (:func:`order_states`)."""

    states: dict[str, ListState]
    cancelled_at: dict[str, float]  # the tickets of cancelled orders: when (pretix's clock)
    skipped: int  # orders and positions whose state is not well-formed


def order_states(orders: Iterable[Any]) -> OrderStates:
    """Whether each position's ticket admits, as pretix's check-in judges it for a turnstile
    (its redeem asks with ``ignore_unpaid`` false), by secret: CANCELED when the position is
    cancelled or its order cancelled or expired; for a pending order UNAPPROVED when it waits
    for approval, else UNPAID unless it is valid while pending; else NONE. For a cancelled
    order also its ``cancellation_date`` (when it is one; pretix dates no other change). Orders
    and positions whose state is not well-formed (an unknown status; a flag missing or not a
    boolean: they are asked for, and a missing one must not read as "admit") are counted, and
    their tickets keep the state they had."""
    states: dict[str, ListState] = {}
    cancelled_at: dict[str, float] = {}
    skipped = 0
    for order in orders:
        positions = order.get("positions") if isinstance(order, dict) else None
        if not isinstance(order, dict) or not isinstance(positions, list):
            continue  # counted by order_positions
        status = order.get("status")
        approval, valid_if_pending = order.get("require_approval"), order.get("valid_if_pending")
        if status not in _ORDER_STATUS or not _booleans(approval, valid_if_pending):
            skipped += 1
            continue
        state = _ORDER_STATUS[status]
        if state is ListState.UNPAID and approval:
            state = ListState.UNAPPROVED
        elif state is ListState.UNPAID and valid_if_pending:
            state = ListState.NONE
        when = time_field(order, "cancellation_date") if status == "c" else None
        for position in positions:
            secret = position.get("secret") if isinstance(position, dict) else None
            if not is_secret(secret):
                continue  # counted by peer_entries
            canceled = position.get("canceled")
            if not _booleans(canceled):
                skipped += 1
                continue
            states[secret] = ListState.CANCELED if canceled else state
            if when is not None:
                cancelled_at[secret] = when
    return OrderStates(states, cancelled_at, skipped)


def _booleans(*values: Any) -> bool:
    return all(isinstance(v, bool) for v in values)


class Turned(NamedTuple):
    """A ticket that newly stopped admitting: its state now (an order's, or REVOKED: its secret
    on pretix's revoked list), and when pretix dates the change (by pretix's clock: an order's
    cancellation, a secret's revocation; None for the rest, which pretix does not date)."""

    state: ListState
    since: float | None
