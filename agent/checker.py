"""Turns a scanned text into a Decision: parse, verify, look up lists and history, apply the rules.

Shared by the lane (scan path) and `gate-agent check` (which wants every rule's outcome). Nothing here
touches the network; the revocation lookup is an in-memory index; history is one indexed query.

The lane splits the work in two: :meth:`Checker.prepare` does everything but the ticket's history
on the event loop, and :meth:`Pending.decide` (pure) finishes the decision once the history is
read, on the journal's thread, in the same job as the insert (:meth:`Journal.decide_and_record`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from agent import rules, tickets, trust
from agent.clock import ClockReading
from agent.errors import TicketFormatError
from agent.journal import HistoryEntry
from agent.model import Decision, Reason, Ticket
from agent.ports import Scan
from agent.redact import text_digest
from agent.revocation import ListMeta, ListState, RevocationIndex

HistoryLookup = Callable[[str], Awaitable[Sequence[HistoryEntry]]]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """``authenticated``: the ticket's signature verified against a key the gate trusts."""

    ticket: Ticket | None
    decision: Decision
    results: tuple[rules.RuleResult, ...] = ()
    authenticated: bool = False


@dataclass(frozen=True, slots=True)
class Pending:
    """A scan parsed and verified; its decision waits only for the ticket's history.

    ``facts`` is None when the text did not parse: ``decision`` is then final.
    """

    ticket: Ticket | None
    facts: rules.Facts | None
    decision: Decision | None = None
    authenticated: bool = False

    @property
    def needs_history(self) -> bool:
        """Whether the ticket's history can change the decision (an unauthenticated text is
        denied by the first rule whatever its claimed history says)."""
        return self.facts is not None and self.authenticated

    def decide(self, history: Sequence[HistoryEntry]) -> Decision:
        """The decision given the ticket's ``history``. Pure: safe on any thread."""
        if self.facts is None:
            assert self.decision is not None
            return self.decision
        return rules.decide(replace(self.facts, history=history))


def journal_ref(text: str, evaluation: Evaluation | Pending) -> str:
    """The reference a presentation of ``text`` is journalled (and uploaded) under.

    A ticket's own ``ticket_ref`` only once its signature verified against a trusted key. Any
    other text, forged copies of a real ticket included, goes under ``"raw:"`` and a digest of
    the text: a forger presenting many copies of a real ticket's id then neither adds to that
    ticket's history nor raises repeated-denial alerts against its holder, and two different
    texts never share a reference.
    """
    if evaluation.ticket is not None and evaluation.authenticated:
        return evaluation.ticket.ticket_ref
    return "raw:" + text_digest(text)


def refused_ref(scan: Scan) -> str:
    """The reference of a read the driver refused (it has no text): one per read, from its
    reader and time, so refused reads at different gates never look like one ticket presented
    again (the hub's repeated-denial alert)."""
    return "raw:" + text_digest(f"refused\0{scan.source}\0{scan.mono_ns}")


class Checker:
    """Everything a decision needs besides the scanned text and the history of that ticket."""

    def __init__(
        self,
        trust_store: trust.BundleSource,
        index: Callable[[], RevocationIndex],
        list_meta: Callable[[], ListMeta],
        policy: rules.GatePolicy,
    ) -> None:
        self.trust = trust_store
        self._index = index
        self._meta = list_meta
        self.policy = policy

    def signature(self, ticket: Ticket, now: float) -> trust.SignatureCheck:
        bundle = self.trust.bundle
        if bundle is None:  # a pretix gate gets its event's keys from pretix's first answer
            pretix = ticket.fmt.startswith("pretix")
            what = "the event's keys not yet from pretix" if pretix else "no trust bundle installed"
            return trust.SignatureCheck(Reason.UNKNOWN_KEY, what)
        return trust.verify(ticket, bundle, now)

    def facts(
        self,
        ticket: Ticket,
        history: Sequence[HistoryEntry],
        clock: ClockReading,
        signature: trust.SignatureCheck | None = None,
    ) -> rules.Facts:
        return rules.Facts(
            ticket=ticket,
            signature=signature or self.signature(ticket, clock.now),
            list_state=self.list_state(ticket),
            list_meta=self._meta(),
            history=history,
            clock=clock,
            policy=self.policy,
        )

    def list_state(self, ticket: Ticket) -> ListState:
        """What the revocation index says of ``ticket``: revoked or blocked, else (pretix) its
        order's state."""
        index = self._index()
        state = index.status(ticket.revocation_key)
        if state is ListState.NONE and ticket.order_key is not None:
            return index.order_status(ticket.order_key)
        return state

    def list_version(self) -> int:
        return self._meta().version

    def prepare(self, text: str, clock: ClockReading) -> Pending:
        """Parse and verify ``text`` and look it up in the lists: all but its history.

        Bad input is a final deny decision, never an exception.
        """
        try:
            ticket = tickets.parse(text)
        except TicketFormatError as exc:
            return Pending(None, None, rules.invalid_format(str(exc)))
        signature = self.signature(ticket, clock.now)
        facts = self.facts(ticket, (), clock, signature)
        return Pending(ticket, facts, authenticated=signature.ok)

    async def evaluate(
        self, text: str, history: HistoryLookup, clock: ClockReading, *, explain: bool = False
    ) -> Evaluation:
        """Decide on ``text``. Bad input is a deny decision, never an exception.

        With ``explain`` every rule's outcome is kept, and the history of an unauthenticated
        text is looked up too (`gate-agent check` shows every rule).
        """
        pending = self.prepare(text, clock)
        if pending.facts is None:
            assert pending.decision is not None
            return Evaluation(None, pending.decision)
        ticket, authenticated = pending.ticket, pending.authenticated
        assert ticket is not None
        past = await history(ticket.ticket_ref) if authenticated or explain else ()
        if not explain:
            return Evaluation(ticket, pending.decide(past), authenticated=authenticated)
        results = tuple(rules.explain(replace(pending.facts, history=past)))
        decision = rules.from_results(results, self.policy.direction)
        return Evaluation(ticket, decision, results, authenticated=authenticated)
