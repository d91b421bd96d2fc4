"""Turns a scanned text into a Decision: parse, verify, look up lists and history, apply the rules.

Shared by the lane (scan path) and `gate-agent check` (which wants every rule's outcome). Nothing here
touches the network; the revocation lookup is an in-memory index; history is one indexed query.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from agent import rules, tickets, trust
from agent.clock import ClockReading
from agent.errors import TicketFormatError
from agent.journal import HistoryEntry
from agent.model import Decision, Reason, Ticket
from agent.redact import text_digest
from agent.revocation import ListMeta, RevocationIndex

HistoryLookup = Callable[[str], Awaitable[Sequence[HistoryEntry]]]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """``authenticated``: the ticket's signature verified against a key the gate trusts."""

    ticket: Ticket | None
    decision: Decision
    results: tuple[rules.RuleResult, ...] = ()
    authenticated: bool = False


def journal_ref(text: str, evaluation: Evaluation) -> str:
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
        if bundle is None:
            return trust.SignatureCheck(Reason.UNKNOWN_KEY, "no trust bundle installed")
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
            list_state=self._index().status(ticket.revocation_key),
            list_meta=self._meta(),
            history=history,
            clock=clock,
            policy=self.policy,
        )

    def list_version(self) -> int:
        return self._meta().version

    async def evaluate(
        self, text: str, history: HistoryLookup, clock: ClockReading, *, explain: bool = False
    ) -> Evaluation:
        """Decide on ``text``. Bad input is a deny decision, never an exception."""
        try:
            ticket = tickets.parse(text)
        except TicketFormatError as exc:
            return Evaluation(None, rules.invalid_format(str(exc)))
        # Verify first, then history: for a ticket never seen here (the usual case) the journal
        # answers from memory without a thread hop, and a task to overlap the two costs more.
        signature = self.signature(ticket, clock.now)
        # An unauthenticated text is denied by the first rule whatever its claimed history says,
        # so the lane does not look that history up (only `check` shows every rule).
        past = await history(ticket.ticket_ref) if signature.ok or explain else ()
        facts = self.facts(ticket, past, clock, signature)
        if not explain:
            return Evaluation(ticket, rules.decide(facts), authenticated=signature.ok)
        results = tuple(rules.explain(facts))
        decision = rules.from_results(results, self.policy.direction)
        return Evaluation(ticket, decision, results, authenticated=signature.ok)
