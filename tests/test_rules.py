"""The entry rules as a pure function: each reason code, each policy, the staff wording."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from agent import rules, tickets
from agent.clock import ClockReading
from agent.issuer import Issuer
from agent.journal import HistoryEntry
from agent.model import Flag, Reason, Verdict
from agent.revocation import ListMeta, ListState
from agent.trust import SignatureCheck

NOW = datetime(2026, 11, 23, 19, 30, 0, tzinfo=UTC).timestamp()
FRESH = ListMeta(version=3, issued_at=int(NOW) - 600, expires=int(NOW) + 86400)
POLICY = rules.GatePolicy(gate_name="Gate 7", events=frozenset({"1"}), zone=1, timezone=UTC)
OK_SIG = SignatureCheck(Reason.OK, "signed")


def _entry(
    kind: str,
    at: float,
    *,
    gate: str = "Gate 3",
    entry_id: str = "e1",
    annuls: str | None = None,
    hlc: int = 0,
) -> HistoryEntry:
    return HistoryEntry(
        kind=kind,
        gate_id="g3",
        gate_name=gate,
        lane="in",
        wall_time=at,
        entry_id=entry_id,
        annuls=annuls,
        hlc=hlc or int(at * 1000) << 16,
        peer=False,
    )


@pytest.fixture
def facts(iss: Issuer) -> rules.Facts:
    ticket = tickets.parse(
        iss.ticket(event=1, zones=[1, 2], not_before=int(NOW) - 3600, not_after=int(NOW) + 3600)
    )
    return rules.Facts(
        ticket=ticket,
        signature=OK_SIG,
        list_state=ListState.NONE,
        list_meta=FRESH,
        history=(),
        clock=ClockReading(NOW, True),
        policy=POLICY,
    )


def _with(f: rules.Facts, **changes: object) -> rules.Facts:
    return dataclasses.replace(f, **changes)  # type: ignore[arg-type]


def _policy(f: rules.Facts, **changes: object) -> rules.Facts:
    return _with(f, policy=dataclasses.replace(f.policy, **changes))  # type: ignore[arg-type]


def test_valid_ticket_is_admitted(facts: rules.Facts) -> None:
    d = rules.decide(facts)
    assert d.verdict is Verdict.ADMIT and d.reason is Reason.OK and not d.flags
    assert rules.staff_message(d) == "Welcome"


@pytest.mark.parametrize("reason", [Reason.BAD_SIGNATURE, Reason.UNKNOWN_KEY, Reason.KEY_NOT_VALID])
def test_signature_failures_deny_with_their_reason(facts: rules.Facts, reason: Reason) -> None:
    d = rules.decide(_with(facts, signature=SignatureCheck(reason, "x")))
    assert (d.verdict, d.reason) == (Verdict.DENY, reason)


def test_scope_rules(facts: rules.Facts) -> None:
    assert rules.decide(_policy(facts, events=frozenset({"2"}))).reason is Reason.WRONG_EVENT
    d = rules.decide(_policy(facts, zone=3))
    assert d.reason is Reason.WRONG_ZONE and "zone 1,2" in d.detail
    assert rules.decide(_policy(facts, zone=2)).admitted
    assert rules.decide(_policy(facts, zone=None)).admitted


def test_revoked_and_blocked(facts: rules.Facts) -> None:
    assert rules.decide(_with(facts, list_state=ListState.REVOKED)).reason is Reason.REVOKED
    assert rules.decide(_with(facts, list_state=ListState.BLOCKED)).reason is Reason.BLOCKED


def test_stale_list_policy(facts: rules.Facts) -> None:
    old = ListMeta(version=3, issued_at=int(NOW) - 3 * 86400, expires=None)
    admitted = rules.decide(_with(facts, list_meta=old))
    assert admitted.admitted and admitted.flags == {Flag.LIST_STALE}
    denied = rules.decide(_policy(_with(facts, list_meta=old), stale_list="deny"))
    assert (denied.verdict, denied.reason) == (Verdict.DENY, Reason.LIST_STALE)
    expired = ListMeta(version=3, issued_at=int(NOW) - 60, expires=int(NOW) - 1)
    assert (
        rules.decide(_policy(_with(facts, list_meta=expired), stale_list="deny")).reason
        is Reason.LIST_STALE
    )


def test_validity_window_with_skew(facts: rules.Facts) -> None:
    early = _with(facts, clock=ClockReading(NOW - 3600 - 301, True))
    assert rules.decide(early).reason is Reason.NOT_YET_VALID
    assert rules.decide(_with(facts, clock=ClockReading(NOW - 3600 - 299, True))).admitted
    late = _with(facts, clock=ClockReading(NOW + 3600 + 301, True))
    assert rules.decide(late).reason is Reason.EXPIRED
    assert rules.decide(_policy(late, validity_skew_s=400)).admitted


def test_untrusted_clock_policies(facts: rules.Facts) -> None:
    unsynced = _with(facts, clock=ClockReading(NOW, False))
    accepted = rules.decide(unsynced)
    assert accepted.admitted and Flag.CLOCK_UNTRUSTED in accepted.flags
    assert rules.decide(_policy(unsynced, untrusted_clock="deny")).reason is Reason.CLOCK_UNTRUSTED
    late_unsynced = _with(facts, clock=ClockReading(NOW + 86400, False))
    assert rules.decide(late_unsynced).reason is Reason.EXPIRED
    ignored = rules.decide(_policy(late_unsynced, untrusted_clock="ignore_window"))
    assert ignored.admitted and Flag.CLOCK_UNTRUSTED in ignored.flags


def test_single_entry_says_where_and_when(facts: rules.Facts) -> None:
    used_at = datetime(2026, 11, 23, 19, 2, 11, tzinfo=UTC).timestamp()
    d = rules.decide(_with(facts, history=[_entry("entry", used_at)]))
    assert (d.verdict, d.reason, d.detail) == (
        Verdict.DENY,
        Reason.ALREADY_USED,
        "Gate 3, 19:02:11",
    )
    assert rules.staff_message(d) == "Already used at Gate 3, 19:02:11"
    yesterday = rules.decide(_with(facts, history=[_entry("entry", used_at - 86400)]))
    assert yesterday.detail == "Gate 3, 2026-11-22 19:02:11"


def test_annulled_entry_does_not_count(facts: rules.Facts) -> None:
    history = [
        _entry("entry", NOW - 60, entry_id="a"),
        _entry("annul", NOW - 50, entry_id="b", annuls="a"),
    ]
    assert rules.decide(_with(facts, history=history)).admitted


def test_reentry_policy(facts: rules.Facts) -> None:
    f = _policy(facts, entry_policy="reentry")
    inside = [_entry("entry", NOW - 600, entry_id="a")]
    assert rules.decide(_with(f, history=inside)).reason is Reason.ALREADY_USED
    left = [*inside, _entry("exit", NOW - 300, entry_id="b")]
    assert rules.decide(_with(f, history=left)).admitted
    back_in = [*left, _entry("entry", NOW - 100, entry_id="c", gate="Gate 9")]
    d = rules.decide(_with(f, history=back_in))
    assert d.reason is Reason.ALREADY_USED and d.detail.startswith("Gate 9,")


def test_rows_of_one_hlc_go_in_their_gates_order_whatever_the_input_order(
    facts: rules.Facts,
) -> None:
    """The hub gives rows of a gate whose clock ran ahead one time: entry then exit at one HLC.
    The rules order them by gate_seq, not by where they sit in the list they are given."""
    f = _policy(facts, entry_policy="reentry")
    hlc = int((NOW - 60) * 1000) << 16
    entry = dataclasses.replace(_entry("entry", NOW - 60, entry_id="z", hlc=hlc), gate_seq=7)
    exit_ = dataclasses.replace(_entry("exit", NOW - 60, entry_id="a", hlc=hlc), gate_seq=8)
    for history in ([entry, exit_], [exit_, entry]):
        assert [h.kind for h in rules.effective(history)] == ["entry", "exit"]
        assert rules.decide(_with(f, history=history)).admitted  # out, so back in


def test_per_day_and_unlimited(facts: rules.Facts) -> None:
    f = _policy(facts, entry_policy="per_day", entries_per_day=2)
    one = [
        _entry("entry", NOW - 600, entry_id="a"),
        _entry("entry", NOW - 86400, entry_id="y"),
    ]  # yesterday's does not count
    assert rules.decide(_with(f, history=one)).admitted
    two = [*one, _entry("entry", NOW - 300, entry_id="b")]
    assert rules.decide(_with(f, history=two)).reason is Reason.ALREADY_USED
    many = [_entry("entry", NOW - i, entry_id=str(i)) for i in range(1, 50)]
    assert rules.decide(_policy(_with(facts, history=many), entry_policy="unlimited")).admitted


def test_exit_lane_lets_people_out(facts: rules.Facts) -> None:
    f = _policy(
        _with(
            facts,
            list_state=ListState.REVOKED,
            history=[_entry("entry", NOW - 60)],
            clock=ClockReading(NOW + 86400, True),
        ),
        direction="exit",
    )
    d = rules.decide(f)
    assert d.admitted and d.detail == "exit"
    assert (
        rules.decide(_with(f, signature=SignatureCheck(Reason.BAD_SIGNATURE, ""))).reason
        is Reason.BAD_SIGNATURE
    )


def test_explain_agrees_with_decide(facts: rules.Facts) -> None:
    variants = [
        facts,
        _with(facts, list_state=ListState.REVOKED),
        _policy(facts, zone=5),
        _with(facts, history=[_entry("entry", NOW - 5)]),
    ]
    for f in variants:
        results = rules.explain(f)
        assert [r.rule for r in results][:2] == ["signature", "event"]
        assert rules.from_results(results, f.policy.direction) == rules.decide(f)
