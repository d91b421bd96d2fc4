"""The chaos harness (tests/chaos/): a real venue under seeded random faults, invariants checked.

CI runs three short schedules through the harness's own command line, as a user would: on
PostgreSQL, a hub restart, full disks and a clock step; then slow links, a full disk, a PostgreSQL
restart, a partition and a gate killed -9; on SQLite, a clock step, slow links and the hub killed
-9 twice. Every kind of fault, about a minute in all. The long soak is the README's
``tests/chaos/run --schedules 200``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from agent.redact import short_id
from tests import needs
from tests.chaos.invariants import FEED_BOUND_S, Facts, check, known_at
from tests.chaos.schedule import Timeline, Window, make_schedule
from tests.faketime import FAKETIME
from tests.hubproc import ROOT
from tests.pg import PgMissing, find_bindir

RUN = ROOT / "tests" / "chaos" / "run"
REF = "tk1:0123456789abcdef"
SUMMARY = re.compile(r"^chaos: (\d+) schedules, (\d+) faults, (\d+) invariant violations$")


def _pg() -> bool:
    try:
        find_bindir()
    except PgMissing:
        return False
    return True


def _run(*args: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [str(RUN), *args], capture_output=True, text=True, timeout=600, check=False, cwd=ROOT
    )
    lines = done.stdout.splitlines()
    assert lines, done.stderr[-3000:]
    return done.returncode, lines


def test_a_seed_is_one_schedule() -> None:
    first, again, other = make_schedule(42), make_schedule(42), make_schedule(43)
    assert first == again
    assert first != other
    assert 3 <= len(first.faults) <= 6
    assert make_schedule(42, duration_s=12).duration_s == 12


def test_could_have_known_counts_the_feed_delay_and_every_outage() -> None:
    timeline = Timeline(t0=0.0)
    assert known_at(timeline, "gate-2", 10.0) == 10.0 + FEED_BOUND_S
    timeline.windows.append(Window("link:gate-2", 11.0, 20.0))  # b cut before it could learn
    assert known_at(timeline, "gate-2", 10.0) == 20.0 + FEED_BOUND_S
    timeline.windows.append(Window("hub", 21.0, 25.0))  # then the hub down
    assert known_at(timeline, "gate-2", 10.0) == 25.0 + FEED_BOUND_S
    timeline.windows.append(Window("slow:gate-2", 0.0, 30.0, size=0.5))
    assert known_at(timeline, "gate-2", 10.0) == 25.0 + FEED_BOUND_S + 1.0
    assert known_at(timeline, "gate-3", 10.0) == 10.0 + FEED_BOUND_S  # another gate's cut


def _facts(*admissions: tuple[str, float], alerts: int) -> Facts:
    """One ticket admitted at each (gate, time) given, every row at the hub 0.1 s later, pulsed;
    ``alerts`` double_admission alerts naming the first two admissions."""
    facts = Facts()
    ids = []
    for n, (gate, t) in enumerate(admissions):
        entry_id = f"e{n}"
        ids.append(entry_id)
        row = {
            "entry_id": entry_id, "gate_seq": 1, "lane": "in", "ticket_ref": REF,
            "kind": "entry", "verdict": "admit", "annuls": None, "mono_ns": int(t * 1e9),
            "rev_version": 2,
        }  # fmt: skip
        facts.journals[gate] = [row]
        facts.pulses[(gate, "in")], facts.pulses[(gate, "out")] = [entry_id], []
        hub = {k: row[k] for k in ("entry_id", "gate_seq", "ticket_ref", "kind", "verdict")}
        facts.hub_rows.append(hub | {"gate_id": gate, "annuls": None, "at": t + 0.1})
    double = {"kind": "double_admission", "ticket": short_id(REF), "entries": ids[:2]}
    facts.alerts = [double] * alerts
    return facts


def test_the_checks_find_what_breaks_a_promise() -> None:
    quiet = Timeline(t0=0.0)
    # gate-2 admits 10 s after gate-1 with every link up: it could have known
    found = check(_facts(("gate-1", 10.0), ("gate-2", 20.0), alerts=1), quiet, {})
    assert len(found) == 1 and "could have known from 13.10s" in found[0], found
    # within the feed's delay: both admissions stand, one alert
    assert check(_facts(("gate-1", 10.0), ("gate-2", 11.0), alerts=1), quiet, {}) == []
    # gate-2 cut off: it could not have known; but the alert must be there, once
    cut = Timeline(t0=0.0, windows=[Window("link:gate-2", 5.0, 30.0)])
    assert check(_facts(("gate-1", 10.0), ("gate-2", 20.0), alerts=1), cut, {}) == []
    for alerts in (0, 2):
        found = check(_facts(("gate-1", 10.0), ("gate-2", 20.0), alerts=alerts), cut, {})
        assert found == [f"ticket {short_id(REF)}: 2 admissions, {alerts} double alerts"]
    # admitted at list version 2, the ticket revoked in version 2
    found = check(_facts(("gate-1", 10.0), alerts=0), quiet, {REF: 2})
    assert found == [
        f"gate-1 gate_seq 1: ticket {short_id(REF)} admitted at list version 2, revoked in 2"
    ]
    assert check(_facts(("gate-1", 10.0), alerts=0), quiet, {REF: 3}) == []
    # a row the hub never got; a pulse that never came (no kill -9 to explain it)
    lost = _facts(("gate-1", 10.0), alerts=0)
    lost.hub_rows.clear()
    assert "gate-1 gate_seq 1: 0 copies at the hub" in check(lost, quiet, {})
    unpulsed = _facts(("gate-1", 10.0), alerts=0)
    unpulsed.pulses[("gate-1", "in")] = []
    assert check(unpulsed, quiet, {}) == ["gate-1/in gate_seq 1: admitted, no pulse"]
    killed = Timeline(t0=0.0, windows=[Window("kill:gate-1", 10.5, 10.5)])
    assert check(unpulsed, killed, {}) == []


@pytest.mark.slow
@needs.mark(os.geteuid() == 0, "root (a tmpfs state disk per gate)")
@needs.mark(FAKETIME.exists(), "libfaketime (apt package faketime)")
@needs.mark(_pg(), "PostgreSQL server binaries")
def test_short_schedules_break_no_invariant(tmp_path: Path) -> None:
    code, lines = _run(
        "--schedules", "2", "--seed", "3", "--duration", "12", "--dir", str(tmp_path / "a")
    )
    assert code == 0, "\n".join(lines)
    found = SUMMARY.match(lines[-1])
    assert found, lines[-1]
    schedules, faults, violations = map(int, found.groups())
    assert (schedules, violations) == (2, 0)
    assert faults == len(make_schedule(3).faults) + len(make_schedule(4).faults)
    stores = [line.split()[2] for line in lines if line.startswith("schedule seed=")]
    assert stores == ["store=postgresql", "store=postgresql"]
    kinds = next(line for line in lines if line.startswith("faults by kind:"))
    for kind in ("hub_restart", "kill_gate", "disk_full", "pg_restart", "partition", "slow_link"):
        assert kind in kinds, kinds


@pytest.mark.slow
@needs.mark(os.geteuid() == 0, "root (a tmpfs state disk per gate)")
@needs.mark(FAKETIME.exists(), "libfaketime (apt package faketime)")
def test_one_seed_is_one_schedule_with_its_faults(tmp_path: Path) -> None:
    code, lines = _run("--seed", "9", "--duration", "12", "--dir", str(tmp_path))
    assert code == 0, "\n".join(lines)
    assert lines[0].startswith("schedule seed=9 store=sqlite ")
    kinds = next(line for line in lines if line.startswith("faults by kind:"))
    assert kinds == "faults by kind: clock_step 1, kill_hub 2, slow_link 1", kinds
    assert lines[-1] == "chaos: 1 schedules, 4 faults, 0 invariant violations"
