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

from tests import needs
from tests.chaos.invariants import FEED_BOUND_S, known_at
from tests.chaos.schedule import Timeline, Window, make_schedule
from tests.chaos.venue import FAKETIME
from tests.hubproc import ROOT
from tests.pg import PgMissing, find_bindir

RUN = ROOT / "tests" / "chaos" / "run"
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
