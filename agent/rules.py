"""Entry rules: a pure function from the facts of one presentation to a Decision.

No I/O, no clock reads, no globals: everything the decision depends on arrives in :class:`Facts`,
so the same facts always give the same decision (tests, `gate-agent check --at`, replays).
Rules run in a fixed order and the first that denies decides; :func:`explain` returns every rule's
outcome for people (`gate-agent check`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Literal

from agent.clock import ClockReading
from agent.journal import HistoryEntry
from agent.model import Decision, Flag, Reason, Ticket, Verdict, annulled_ids, zones_text
from agent.revocation import ListMeta, ListState
from agent.trust import SignatureCheck

EntryPolicy = Literal["single", "reentry", "per_day", "unlimited"]
Direction = Literal["entry", "exit"]
ClockPolicy = Literal["accept", "deny", "ignore_window"]
StalePolicy = Literal["admit", "deny"]


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """What one lane admits. Built from the config once at start-up."""

    gate_name: str
    events: frozenset[str] | None  # None: any event (only for `check` without a gate config)
    zone: int | None = None
    direction: Direction = "entry"
    entry_policy: EntryPolicy = "single"
    entries_per_day: int = 1
    validity_skew_s: int = 300
    untrusted_clock: ClockPolicy = "accept"
    stale_list: StalePolicy = "admit"
    max_list_age_s: int = 86400
    products: frozenset[str] | None = None  # None: every product
    subevent: str | None = None  # a list bound to one date of a series admits only that date
    timezone: tzinfo | None = None
    rotating_window_s: int = 30  # a rotating ticket's code is valid this long after it was made
    rotating_skew_s: int = 5  # tolerance between the holder device's clock and the gate's


@dataclass(frozen=True, slots=True)
class Facts:
    ticket: Ticket
    signature: SignatureCheck
    list_state: ListState
    list_meta: ListMeta
    history: Sequence[HistoryEntry]
    clock: ClockReading
    policy: GatePolicy


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One rule's outcome: ``reason`` OK means passed; ``flags`` mark a degraded pass."""

    rule: str
    reason: Reason
    detail: str
    flags: frozenset[Flag] = field(default_factory=frozenset)

    @property
    def passed(self) -> bool:
        return self.reason is Reason.OK


Rule = Callable[[Facts], RuleResult]


def _local(t: float, tz: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(t, UTC).astimezone(tz)


def _when(t: float, now: float, tz: tzinfo | None) -> str:
    at = _local(t, tz)
    same_day = at.date() == _local(now, tz).date()
    return at.strftime("%H:%M:%S") if same_day else at.strftime("%Y-%m-%d %H:%M:%S")


def _signature(f: Facts) -> RuleResult:
    return RuleResult("signature", f.signature.reason, f.signature.detail)


def _event(f: Facts) -> RuleResult:
    if not f.ticket.event:
        return RuleResult("event", Reason.OK, "event fixed by the signing key")
    if f.policy.events is None or f.ticket.event in f.policy.events:
        return RuleResult("event", Reason.OK, f"event {f.ticket.event}")
    allowed = ", ".join(sorted(f.policy.events)) or "none"
    return RuleResult(
        "event",
        Reason.WRONG_EVENT,
        f"ticket for event {f.ticket.event}, this gate admits {allowed}",
    )


def _zone(f: Facts) -> RuleResult:
    zone, zones = f.policy.zone, f.ticket.zones
    if zone is None or zones is None:
        return RuleResult("zone", Reason.OK, "no zone restriction")
    if zones >> (zone - 1) & 1:
        return RuleResult("zone", Reason.OK, f"zone {zone}")
    held = zones_text(zones)
    return RuleResult("zone", Reason.WRONG_ZONE, f"ticket for zone {held}, this is zone {zone}")


def _product(f: Facts) -> RuleResult:
    allowed, subevent, t = f.policy.products, f.policy.subevent, f.ticket
    if allowed is not None and t.product is not None and t.product not in allowed:
        return RuleResult("product", Reason.WRONG_PRODUCT, f"product {t.product} not admitted")
    if subevent is not None and t.subevent is not None and t.subevent != subevent:
        return RuleResult(
            "product",
            Reason.WRONG_PRODUCT,
            f"ticket for date {t.subevent}, this list admits date {subevent}",
        )
    if allowed is None and subevent is None:
        return RuleResult("product", Reason.OK, "no product restriction")
    return RuleResult("product", Reason.OK, f"product {t.product or '-'} admitted")


def _revocation(f: Facts) -> RuleResult:
    if f.list_state is ListState.REVOKED:
        return RuleResult("revocation", Reason.REVOKED, "ticket is on the revocation list")
    if f.list_state is ListState.BLOCKED:
        return RuleResult("revocation", Reason.BLOCKED, "ticket is blocked")
    if f.list_state is ListState.CANCELED:
        return RuleResult("revocation", Reason.CANCELED, "order cancelled or expired in pretix")
    if f.list_state is ListState.UNPAID:
        return RuleResult("revocation", Reason.UNPAID, "order not paid in pretix")
    if f.list_state is ListState.UNAPPROVED:
        return RuleResult("revocation", Reason.UNAPPROVED, "order not yet approved in pretix")
    return RuleResult("revocation", Reason.OK, f"not listed (list version {f.list_meta.version})")


def _freshness(f: Facts) -> RuleResult:
    meta, policy = f.list_meta, f.policy
    if not meta.is_stale(f.clock.now, policy.max_list_age_s):
        return RuleResult("list_freshness", Reason.OK, "revocation list is fresh")
    age = meta.age(f.clock.now)
    detail = (
        "no revocation list installed"
        if age is None
        else f"revocation list is {int(age // 60)} min old"
    )
    if policy.stale_list == "deny":
        return RuleResult("list_freshness", Reason.LIST_STALE, detail)
    return RuleResult("list_freshness", Reason.OK, detail, frozenset({Flag.LIST_STALE}))


def _clock(f: Facts) -> RuleResult:
    if f.clock.synced:
        return RuleResult("clock", Reason.OK, "clock synchronised")
    if f.policy.untrusted_clock == "deny":
        return RuleResult("clock", Reason.CLOCK_UNTRUSTED, "clock not synchronised")
    return RuleResult(
        "clock",
        Reason.OK,
        f"clock not synchronised ({f.policy.untrusted_clock})",
        frozenset({Flag.CLOCK_UNTRUSTED}),
    )


def _window(f: Facts) -> RuleResult:
    t, p, now = f.ticket, f.policy, f.clock.now
    if not f.clock.synced and p.untrusted_clock == "ignore_window":
        return RuleResult("validity", Reason.OK, "window not checked: clock untrusted")
    if t.not_before is not None and now < t.not_before - p.validity_skew_s:
        return RuleResult(
            "validity",
            Reason.NOT_YET_VALID,
            f"valid from {_local(t.not_before, p.timezone):%Y-%m-%d %H:%M}",
        )
    if t.not_after is not None and now > t.not_after + p.validity_skew_s:
        return RuleResult(
            "validity", Reason.EXPIRED, f"expired {_local(t.not_after, p.timezone):%Y-%m-%d %H:%M}"
        )
    return RuleResult("validity", Reason.OK, "within validity window")


def _code(f: Facts) -> RuleResult:
    """A rotating ticket's code: made within the window (by the gate's clock, per the
    untrusted-clock policy) and newer than every code of this ticket already admitted here."""
    code = f.ticket.holder
    if code is None:
        return RuleResult("code", Reason.OK, "not a rotating ticket")
    t, p, now = code.code_time, f.policy, f.clock.now
    used = [h.code_time for h in effective(f.history) if h.code_time is not None]
    if used and t <= max(used):
        return RuleResult("code", Reason.CODE_EXPIRED, "code not newer than one already used")
    if not f.clock.synced and p.untrusted_clock == "ignore_window":
        return RuleResult("code", Reason.OK, "code age not checked: clock untrusted")
    age = now - t
    if age > p.rotating_window_s + p.rotating_skew_s:
        return RuleResult("code", Reason.CODE_EXPIRED, f"code made {int(age)} s ago")
    if age < -p.rotating_skew_s:
        return RuleResult("code", Reason.CODE_EXPIRED, f"code made {int(-age)} s in the future")
    return RuleResult("code", Reason.OK, f"code made {max(0, int(age))} s ago")


def effective(history: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """Entries and exits in history order (:attr:`HistoryEntry.order`), without those an
    annulment cancelled."""
    annulled = annulled_ids(history)
    rows = [h for h in history if h.kind in ("entry", "exit") and h.entry_id not in annulled]
    return sorted(rows, key=lambda h: h.order)


def _used(f: Facts, last: HistoryEntry) -> RuleResult:
    when = _when(last.wall_time, f.clock.now, f.policy.timezone)
    return RuleResult("entry_policy", Reason.ALREADY_USED, f"{last.gate_name}, {when}")


def _entry_policy(f: Facts) -> RuleResult:
    policy = f.policy.entry_policy
    rows = effective(f.history)
    entries = [h for h in rows if h.kind == "entry"]
    if policy == "unlimited" or not entries:
        return RuleResult("entry_policy", Reason.OK, f"{policy}: {len(entries)} earlier entries")
    if policy == "single":
        return _used(f, entries[-1])
    if policy == "reentry":
        if rows[-1].kind == "exit":
            return RuleResult("entry_policy", Reason.OK, "re-entry after exit")
        return _used(f, rows[-1])
    today = _local(f.clock.now, f.policy.timezone).date()
    todays = [h for h in entries if _local(h.wall_time, f.policy.timezone).date() == today]
    if len(todays) < f.policy.entries_per_day:
        return RuleResult(
            "entry_policy", Reason.OK, f"{len(todays)} of {f.policy.entries_per_day} entries today"
        )
    return _used(f, todays[-1])


ENTRY_RULES: tuple[Rule, ...] = (
    _signature,
    _event,
    _zone,
    _product,
    _revocation,
    _freshness,
    _clock,
    _window,
    _code,
    _entry_policy,
)
EXIT_RULES: tuple[Rule, ...] = (_signature, _event)


def explain(facts: Facts) -> list[RuleResult]:
    """Every rule's outcome, in order (for people; the lane uses :func:`decide`)."""
    rules = EXIT_RULES if facts.policy.direction == "exit" else ENTRY_RULES
    return [rule(facts) for rule in rules]


def decide(facts: Facts) -> Decision:
    """The decision for ``facts``: the first failing rule denies; flags of passed rules carry."""
    rules = EXIT_RULES if facts.policy.direction == "exit" else ENTRY_RULES
    return from_results((rule(facts) for rule in rules), facts.policy.direction)


def from_results(results: Iterable[RuleResult], direction: Direction) -> Decision:
    """The decision for rule outcomes in order; stops reading at the first failure."""
    flags: set[Flag] = set()
    for result in results:
        if not result.passed:
            return Decision(Verdict.DENY, result.reason, result.detail)
        flags |= result.flags
    detail = "exit" if direction == "exit" else "welcome"
    return Decision(Verdict.ADMIT, Reason.OK, detail, frozenset(flags))


def invalid_format(detail: str) -> Decision:
    return Decision(Verdict.DENY, Reason.INVALID_FORMAT, detail)


STAFF_TEXT: dict[Reason, str] = {
    Reason.OK: "Welcome",
    Reason.INVALID_FORMAT: "Not a ticket - check the code shown",
    Reason.BAD_SIGNATURE: "Forged or damaged ticket - call a supervisor",
    Reason.UNKNOWN_KEY: "Ticket from an unknown issuer - send to the box office",
    Reason.KEY_NOT_VALID: "Ticket issuer not valid here - send to the box office",
    Reason.REVOKED: "Ticket cancelled - send to the box office",
    Reason.BLOCKED: "Ticket blocked - send to the box office",
    Reason.ALREADY_USED: "Already used",
    Reason.WRONG_EVENT: "Ticket for another event",
    Reason.WRONG_ZONE: "Wrong entrance - show the way to the right zone",
    Reason.WRONG_PRODUCT: "Ticket type not admitted at this gate",
    Reason.NOT_YET_VALID: "Ticket not valid yet",
    Reason.EXPIRED: "Ticket expired",
    Reason.CLOCK_UNTRUSTED: "Gate clock not set - call technical staff",
    Reason.LIST_STALE: "Gate offline too long - call technical staff",
    Reason.CODE_EXPIRED: "Old code or screenshot - open the ticket in the app",
    Reason.CANCELED: "Order cancelled - send to the box office",
    Reason.UNPAID: "Order not paid - send to the box office",
    Reason.UNAPPROVED: "Order not yet approved - send to the box office",
    Reason.ERROR: "Gate fault - call technical staff",
}


def staff_message(decision: Decision) -> str:
    """Words a steward can act on, e.g. ``Already used at Gate 3, 19:02:11``."""
    text = STAFF_TEXT[decision.reason]
    if decision.admitted and decision.detail == "exit":
        return "Exit - goodbye"
    if decision.reason is Reason.ALREADY_USED and decision.detail:
        return f"{text} at {decision.detail}"
    return text
