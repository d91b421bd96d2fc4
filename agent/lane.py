"""One lane: scan -> debounce -> decide -> record -> grant -> passage or timeout -> annul.

The lane talks only to the Protocols of :mod:`agent.ports`. The decision is committed to the journal
before the gate is told to open; an admission nobody used is annulled so the ticket works again. The
lane never raises for a bad scan: every presentation ends in a recorded decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple, Protocol

from agent import rules, tickets
from agent.checker import Checker, Pending, journal_ref, refused_ref
from agent.clock import Clock
from agent.errors import JournalError, RelayReleaseError
from agent.journal import DecisionNotRecorded, EntryRecord, HistoryEntry, Journal, Kind
from agent.mechanism import MechanismView
from agent.model import Decision, Flag, Reason, Ticket, Verdict
from agent.ports import AnswersReads, GateIO, Indicator, Scan, Scanner
from agent.redact import short_id, text_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LaneSettings:
    name: str = "lane-1"
    repeat_window_ms: int = 2000
    passage_timeout_s: float = 8.0
    busy: Literal["wait", "refuse"] = "wait"
    # A decision the journal cannot record (disk full, a failing card): "deny" keeps the gate
    # shut; "admit" lets a valid ticket through unrecorded (flagged, and logged), for venues
    # where a stopped queue is the greater risk.
    on_journal_failure: Literal["deny", "admit"] = "deny"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one presentation, for displays, the demo and tests.

    ``ticket`` is the authenticated ticket; None when the text did not parse or its signature
    did not verify against a trusted key (what such a text claims to be is not shown).
    """

    scan: Scan
    ticket: Ticket | None
    decision: Decision
    record: EntryRecord | None
    latency_ns: int
    lane: str = ""
    passed: bool | None = None
    annul: EntryRecord | None = None

    @property
    def message(self) -> str:
        return rules.staff_message(self.decision)


class _Decided(NamedTuple):
    """A decision to carry out, its row (None: not written), its ref and the authenticated
    ticket (None when there is none or nothing was decided)."""

    decision: Decision
    record: EntryRecord | None
    ref: str
    ticket: Ticket | None


FREE_PASSAGE = Decision(Verdict.ADMIT, Reason.OK, "emergency")
INTERNAL_ERROR = Decision(Verdict.DENY, Reason.ERROR, "internal error")
MAX_WAITING = 8  # scans queued behind an open gate; beyond this the scanner is not read

OutcomeHook = Callable[[Outcome], Awaitable[None] | None]
# Told of each decision as soon as it is recorded, before the lamps and the relay; must not block.
DecisionHook = Callable[[Outcome], None]


class Uplink(Protocol):
    """The gate's link to its upstream (:class:`sync.client.HubClient`), as a lane sees it.

    Both members must answer at once: they are called on the scan path.
    """

    @property
    def online(self) -> bool:
        """True while the upstream answers: decisions are then not made offline."""
        ...

    def nudge(self) -> None:
        """A row was just written to the journal: upload soon."""
        ...


class Lane:
    def __init__(
        self,
        settings: LaneSettings,
        checker: Checker,
        journal: Journal,
        clock: Clock,
        scanner: Scanner,
        gate: GateIO,
        indicator: Indicator | None = None,
        on_outcome: OutcomeHook | None = None,
        uplink: Uplink | None = None,
    ) -> None:
        """Without an ``uplink`` every row is stored offline and no decision carries the
        OFFLINE flag (nothing upstream to be offline from); with one, admissions made while it is
        not online carry Flag.OFFLINE."""
        self.settings = settings
        self.checker = checker
        self.journal = journal
        self.clock = clock
        self.scanner = scanner
        # A scanner that waits for an answer to every read is told of those passed over.
        self._answers = scanner if isinstance(scanner, AnswersReads) else None
        self.gate = gate
        self.indicator = indicator
        self.on_outcome = on_outcome
        self.on_decision: DecisionHook | None = None  # set by the application (the display)
        self.uplink = uplink
        self._last: dict[str, tuple[str, int]] = {}
        self._busy_with: str | None = None  # the admitted text while the gate is open
        # A turnstile shared with other lanes (agent/mechanism.py): busy while they use it.
        self._shared = gate if isinstance(gate, MechanismView) else None
        self.fault: str | None = None  # the last gate fault, until a grant works again
        self.journal_fault: str | None = None  # the last failed write, until one succeeds
        self.input_ended = False  # the scanner's stream ended (a file played out, a fault)

    async def run(self) -> None:
        """Handle scans until the scanner's stream ends; watch the gate's inputs meanwhile."""
        queue: asyncio.Queue[Scan | None] = asyncio.Queue(MAX_WAITING)
        tasks = [
            asyncio.create_task(self._read(queue)),
            asyncio.create_task(self._watch_inputs()),
        ]
        try:
            while (scan := await queue.get()) is not None:
                # A stop waits for the presentation in hand: once its decision may be on file,
                # the pulse (or the annulment) must follow, or a journalled admission would
                # never open the gate and nothing would give the ticket back.
                presenting = asyncio.ensure_future(self.present(scan))
                try:
                    await asyncio.shield(presenting)
                except asyncio.CancelledError:
                    await _finish(presenting)
                    raise
        finally:
            for task in tasks:
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("lane %s: background task failed: %r", self.settings.name, result)

    async def _read(self, queue: asyncio.Queue[Scan | None]) -> None:
        """Scans arriving while the gate is open wait their turn, or are refused (config).

        At most MAX_WAITING scans wait: beyond that the scanner is not read (backpressure), and a
        device that keeps sending drops in its own bounded buffer, never here.
        """
        try:
            async for scan in self.scanner.scans():
                if self._busy_with is not None and self.settings.busy == "refuse":
                    await self._refuse(scan)
                else:
                    await queue.put(scan)
        except Exception:  # a scanner bug ends this lane's input, loudly
            log.exception("lane %s: scanner failed", self.settings.name)
        else:
            log.warning("lane %s: the scanner's stream ended: no more scans", self.settings.name)
        # Health and the display say the scanner is offline from now on (found in a user trial:
        # a lane whose file source had played out still showed "scanner online").
        self.input_ended = True
        await queue.put(None)  # end of the stream (not reached when the lane is stopped)

    async def _refuse(self, scan: Scan) -> None:
        if scan.text == self._busy_with:
            self._passed_over(scan)  # the person passing, read again: not a new presentation
            return
        log.info(
            "lane %s: scan %s refused, gate still open", self.settings.name, text_digest(scan.text)
        )
        busy = Decision(Verdict.DENY, Reason.OK, "gate busy")
        await self._show(busy, "Wait - gate still open", scan)

    def _passed_over(self, scan: Scan) -> None:
        """Tell a scanner that waits for an answer to every read that ``scan`` gets none of its
        own: it is part of a presentation already answered."""
        if self._answers is not None:
            self._answers.passed_over(scan)

    async def _watch_inputs(self) -> None:
        """Record emergency mode changes in the journal; report alarms."""
        async for event in self.gate.events():
            if event.name == "emergency":
                mode = "on" if event.active else "off"
                if event.active:
                    await self._show(FREE_PASSAGE, "Emergency - free passage")
                log.warning(
                    "lane %s: emergency release %s: free passage %s",
                    self.settings.name,
                    mode,
                    "begins" if event.active else "ends",
                )
                try:
                    await self.journal.record_event("emergency", mode, self.settings.name)
                except JournalError as exc:
                    log.error("lane %s: mode change not recorded: %s", self.settings.name, exc)
            elif event.name == "alarm":
                log.warning(
                    "lane %s: alarm input %s",
                    self.settings.name,
                    "active" if event.active else "cleared",
                )

    def _repeat(self, scan: Scan) -> bool:
        """Same text from the same reader within the window (sliding) is one presentation. A
        refused read (no text), or a code of no ticket format, within the window of the last read
        of the presented text belongs to it too (often the other code printed on the same
        ticket: found in a user trial, a URL beside the ticket code turned the admitted person's
        display to STOP), but does not prolong it: a security trial kept the window of an
        admitted ticket open with a junk code every 250 ms, and the ticket handed back and shown
        again was ignored, with no row and no verdict."""
        window_ns = self.settings.repeat_window_ms * 1_000_000
        last = self._last.get(scan.source)
        if last is None or scan.mono_ns - last[1] >= window_ns:
            self._last[scan.source] = (scan.text, scan.mono_ns)
            return False
        if last[0] == scan.text:  # the same code still in view
            self._last[scan.source] = (scan.text, scan.mono_ns)
            return True
        if scan.refused is not None or not tickets.recognised(scan.text):
            return True  # a code beside the presented one
        self._last[scan.source] = (scan.text, scan.mono_ns)
        return False

    async def present(self, scan: Scan) -> Outcome | None:
        """Decide on one scan and carry the decision out; None when it was a repeat."""
        if self._repeat(scan):
            log.debug("lane %s: repeat of %s ignored", self.settings.name, text_digest(scan.text))
            self._passed_over(scan)
            return None
        if self.gate.emergency:  # free passage: nothing to decide, no ticket consumed
            await self._show(FREE_PASSAGE, "Emergency - free passage", scan)
            return None
        shared = self._shared
        if shared is None:
            return await self._present(scan)
        if shared.held_elsewhere and self.settings.busy == "refuse":  # released for another lane
            await self._refuse(scan)
            return None
        await shared.reserve()  # held from the decision on: no other lane takes it meanwhile
        try:
            return await self._present(scan)
        finally:
            shared.release()  # a no-op once the passage (or a failed grant) gave it back

    async def _present(self, scan: Scan) -> Outcome:
        self.journal.expect_write()  # the writer thread wakes while the signature is checked
        decision, record, ref, ticket = await self._decide_and_record(scan, self._prepare(scan))
        latency = time.monotonic_ns() - scan.mono_ns
        self._log(ref, decision, latency)
        outcome = Outcome(scan, ticket, decision, record, latency, self.settings.name)
        self._decided(outcome)
        await self._show(decision, read=scan)
        if decision.admitted:
            outcome = await self._carry_out(outcome, record, ref)
        await self._notify(outcome)
        return outcome

    def _unrecorded(self, decision: Decision, exc: JournalError) -> Decision:
        """The decision to carry out when the journal refused to record ``decision``."""
        name = self.settings.name
        if not decision.admitted:  # a refusal stands as it is, reason and all
            log.error("lane %s: denial not recorded: %s", name, exc)
            return decision
        if self.settings.on_journal_failure == "admit":
            log.error("lane %s: admission NOT recorded, admitted by policy: %s", name, exc)
            return replace(decision, flags=decision.flags | {Flag.UNRECORDED})
        log.error("lane %s: decision not recorded, gate stays shut: %s", name, exc)
        return Decision(Verdict.DENY, Reason.ERROR, "journal write failed")

    def _prepare(self, scan: Scan) -> Pending:
        """All of the decision but the ticket's history (:meth:`Checker.prepare`)."""
        if scan.refused is not None:  # read, but the reader would not pass it on: not a ticket
            return Pending(None, None, rules.invalid_format(scan.refused))
        try:
            return self.checker.prepare(scan.text, self.clock.reading())
        except Exception:  # a bug must deny one scan, not stop the lane
            log.exception(
                "lane %s: internal error deciding %s", self.settings.name, text_digest(scan.text)
            )
            return Pending(None, None, INTERNAL_ERROR)

    async def _decide_and_record(self, scan: Scan, pending: Pending) -> _Decided:
        """Decide and record in one journal job (one thread round trip per scan)."""
        offline = self._offline()
        flag_offline = offline and self.uplink is not None

        def decide(history: Sequence[HistoryEntry]) -> Decision:
            decision = pending.decide(history)
            if flag_offline and decision.admitted:
                decision = replace(decision, flags=decision.flags | {Flag.OFFLINE})
            return decision

        ref = journal_ref(scan.text, pending) if scan.refused is None else refused_ref(scan)
        ticket = pending.ticket if pending.authenticated else None
        try:
            decision, record = await self.journal.decide_and_record(
                ref,
                decide,
                admit_as=self.checker.policy.direction,
                lane=self.settings.name,
                rev_version=self.checker.list_version(),
                zone=self.checker.policy.zone,
                offline=offline,
                with_history=pending.needs_history,
                code_time=ticket.holder.code_time if ticket and ticket.holder else None,
                rev_key=ticket.revocation_key.hex() if ticket else None,
            )
        except DecisionNotRecorded as exc:
            self.journal_fault = f"journal write failed: {exc}"
            return _Decided(self._unrecorded(exc.decision, exc), None, ref, ticket)
        except Exception:  # history unreadable, journal closed, a bug: deny, and record that
            log.exception(
                "lane %s: internal error deciding %s", self.settings.name, text_digest(scan.text)
            )
            return await self._record_error(scan, offline)
        self._recorded()
        return _Decided(decision, record, ref, ticket)

    async def _record_error(self, scan: Scan, offline: bool) -> _Decided:
        """Record an internal error's denial, under the text's digest (nothing was decided)."""
        unknown = Pending(None, None, INTERNAL_ERROR)
        ref = journal_ref(scan.text, unknown) if scan.refused is None else refused_ref(scan)
        try:
            record = await self._record(ref, "attempt", INTERNAL_ERROR, offline=offline)
        except JournalError as exc:
            return _Decided(self._unrecorded(INTERNAL_ERROR, exc), None, ref, None)
        return _Decided(INTERNAL_ERROR, record, ref, None)

    def _offline(self) -> bool:
        return self.uplink is None or not self.uplink.online

    async def _record(
        self,
        ref: str,
        kind: Kind,
        decision: Decision,
        annuls: str | None = None,
        *,
        offline: bool | None = None,
    ) -> EntryRecord:
        try:
            record = await self.journal.record(
                ticket_ref=ref,
                kind=kind,
                decision=decision,
                lane=self.settings.name,
                rev_version=self.checker.list_version(),
                zone=self.checker.policy.zone,
                annuls=annuls,
                offline=self._offline() if offline is None else offline,
            )
        except JournalError as exc:
            self.journal_fault = f"journal write failed: {exc}"
            raise
        self._recorded()
        return record

    def _recorded(self) -> None:
        """A row was written: the journal works, and the uplink has something to upload."""
        self.journal_fault = None
        if self.uplink is not None:
            self.uplink.nudge()

    async def _carry_out(self, outcome: Outcome, record: EntryRecord | None, ref: str) -> Outcome:
        """Open the gate once and wait; an admission (entry or exit) nobody used is annulled.

        ``record`` is None for an admission the journal could not record (on_journal_failure =
        "admit"): there is nothing to annul then.
        """
        name, direction = self.settings.name, self.checker.policy.direction
        seq = record.gate_seq if record is not None else 0
        self._busy_with = outcome.scan.text
        try:
            await self.gate.grant(
                direction, record.entry_id if record is not None else "unrecorded"
            )
            self.fault = None
            passed = await self.gate.wait_passage(self.settings.passage_timeout_s)
            why = "nobody passed"
        except RelayReleaseError as exc:  # the gate moved: somebody may have passed
            log.exception("lane %s: relay not released after admission %d", name, seq)
            self.fault = f"relay fault: {exc}"
            await self._show(Decision(Verdict.DENY, Reason.ERROR, "relay fault"))
            return replace(outcome, passed=None)  # the entry stands: never annul what may be used
        except Exception as exc:  # a failing turnstile must not stop the lane or burn the ticket
            log.exception("lane %s: gate fault during admission %d", name, seq)
            self.fault = f"gate fault: {exc}"
            await self._show(Decision(Verdict.DENY, Reason.ERROR, "gate fault"))
            passed, why = False, "gate fault"
        finally:
            self._busy_with = None
        if passed or record is None:
            return replace(outcome, passed=passed)
        try:
            annul = await self._record(
                ref, "annul", Decision(Verdict.DENY, Reason.OK, why), annuls=record.entry_id
            )
        except JournalError as exc:
            log.error("lane %s: annulment not recorded (entry stands): %s", name, exc)
            return replace(outcome, passed=False)
        log.info("lane %s: %s, %s %d annulled", name, why, direction, record.gate_seq)
        return replace(outcome, passed=False, annul=annul)

    async def _show(
        self, decision: Decision, message: str | None = None, read: Scan | None = None
    ) -> None:
        """Show ``decision``; ``read``: the scan it answers (None: tied to no read)."""
        if self.indicator is not None:
            try:
                await self.indicator.show(decision, message or rules.staff_message(decision), read)
            except Exception:
                log.exception("lane %s: indicator failed", self.settings.name)

    def _decided(self, outcome: Outcome) -> None:
        if self.on_decision is not None:
            try:
                self.on_decision(outcome)
            except Exception:  # a display fault must not stop the lane
                log.exception("lane %s: decision hook failed", self.settings.name)

    async def _notify(self, outcome: Outcome) -> None:
        if self.on_outcome is None:
            return
        try:
            result = self.on_outcome(outcome)
            if result is not None:
                await result
        except Exception:  # a display or hook fault must not stop the lane
            log.exception("lane %s: outcome hook failed", self.settings.name)

    def _log(self, ref: str, decision: Decision, latency: int) -> None:
        # The journal row's short id: the one `events`, alerts, the display and the console show
        # (for a text that is no authentic ticket, that of its "raw:" digest).
        ident = short_id(ref)
        log.info(
            "decision lane=%s verdict=%s reason=%s ticket=%s flags=%s latency_ms=%.2f",
            self.settings.name,
            decision.verdict,
            decision.reason,
            ident,
            ",".join(sorted(decision.flags)) or "-",
            latency / 1e6,
        )


async def _finish(presenting: asyncio.Future[Outcome | None]) -> None:
    """Wait for a presentation to end however often this task is cancelled meanwhile (a second
    SIGTERM): awaiting it bare would pass the cancel into it, cutting it between its journal
    row and the pulse or annulment."""
    while not presenting.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(presenting)
