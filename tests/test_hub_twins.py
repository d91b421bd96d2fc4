"""Two units heartbeating as one gate (sync.hub_twins), in both real stores: what is an alert and
what is not, and what a token spinning made-up runs can and cannot do."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from agent.redact import NO_RUN, run_id, run_shown
from sync import hub_twins
from sync.hub_limits import KnownClients
from sync.hub_store import HubStore
from sync.hub_stores import open_store
from sync.hub_twins import CHURN, MAX_NEW_PER_MIN, MAX_RUNS, MAX_WRITES_PER_MIN, RunNotes
from tests.hubproc import heartbeat
from tests.pg import pg_server, pg_url  # noqa: F401
from tests.test_hub_store import POLICY

T0 = 1_800_000_000.0  # on the hour


@pytest.fixture
async def store(hub_store_url: str) -> AsyncIterator[HubStore]:
    opened = await open_store(hub_store_url, POLICY)
    yield opened
    await opened.close()


def _run() -> str:
    return run_id(secrets.token_hex(16))


async def _details(store: HubStore) -> list[str]:
    return [a.detail for a in await store.alerts(0, 1000) if a.kind == "integrity"]


async def test_a_gate_running_again_is_no_alert(store: HubStore) -> None:
    # A run never comes back once its daemon stops; an older gate sends no run key; a
    # dual-stack gate changes address; an upgrade from a version without run keys; restarts.
    first, second = _run(), _run()
    steps = [(NO_RUN, "10.0.0.7"), (first, "10.0.0.7"), (first, "fd00::7"), (second, "10.0.0.7")]
    steps += [(_run(), "10.0.0.7") for _ in range(CHURN - 3)]
    for at, (run, address) in enumerate(steps):
        assert await store.note_run("gate-a", run, address, T0 + 60 * at) == []
    assert await store.note_run("gate-b", first, "10.0.0.9", T0) == []  # each gate its own
    assert await _details(store) == []


async def test_a_run_still_heard_after_a_later_one_began_is_an_alert(store: HubStore) -> None:
    real, copy = _run(), _run()
    assert await store.note_run("gate-a", real, "10.0.0.7", T0) == []
    assert await store.note_run("gate-a", copy, "192.0.2.5", T0 + 5) == []
    (alert,) = await store.note_run("gate-a", real, "10.0.0.7", T0 + 10)
    assert alert.gate_ids == ("gate-a",) and alert.gates == ("gate-a",)
    assert alert.detail.startswith("two units heartbeat as gate gate-a (a copy of its token?")
    assert (
        f"run {run_shown(real)} from 10.0.0.7 is still heard after run {run_shown(copy)} from"
        " 192.0.2.5 began"
    ) in alert.detail
    for at, run in enumerate((copy, real, copy, real), start=3):  # they go on taking turns
        assert await store.note_run("gate-a", run, "x", T0 + 5 * at) == []
    assert len(await _details(store)) == 1  # once an hour a gate
    # The order is the store's, not a hub process's clock: a copy first written by a process
    # whose clock runs behind is still the later run.
    assert await store.note_run("gate-c", real, "10.0.0.8", T0) == []
    assert await store.note_run("gate-c", NO_RUN, "192.0.2.5", T0 - 30) == []  # no run key
    (hidden,) = await store.note_run("gate-c", real, "10.0.0.8", T0 + 10)
    assert "is still heard after run (none) from 192.0.2.5 began" in hidden.detail
    # Revoking the gate's tokens forgets its runs: the gate heard again next hour (its run
    # older than the copy's) raises nothing (a review: the copy's run had alerted hourly).
    await store.revoke_tokens("gate-a")
    assert await store.note_run("gate-a", real, "10.0.0.7", T0 + 2 * 3600) == []
    assert await store.note_run("gate-a", real, "10.0.0.7", T0 + 3 * 3600) == []


async def test_the_addresses_gates_were_heard_from_are_read_newest_first_kept(
    store: HubStore,
) -> None:
    """What a hub knows at its start (sync.hub_limits.KnownClients.seed): the addresses of the
    runs heard since a time, the newest so many, oldest first."""
    assert await store.heard_from(T0 - 3600, 10) == []
    heard = [("gate-a", "10.0.0.7", T0), ("gate-b", "fd00::9", T0 + 60),
             ("gate-a", "10.0.0.8", T0 + 120), ("gate-c", "10.0.0.10", T0 + 180)]  # fmt: skip
    for at, (gate, address, when) in enumerate(heard):
        assert await store.note_run(gate, f"run-{at}", address, when) == []
    assert await store.note_run("gate-a", "run-2", "10.0.0.8", T0 + 240) == []  # heard again
    again = ("gate-a", "10.0.0.8", T0 + 240)
    assert await store.heard_from(T0 + 30, 10) == [heard[1], heard[3], again]
    assert await store.heard_from(T0 + 30, 2) == [heard[3], again]


def test_known_clients_seeded_from_the_store_keep_each_gate_s_newest_within_the_hour() -> None:
    now_mono = [5000.0]
    known = KnownClients(keep_s=3600, clock=lambda: now_mono[0], per_token=2)
    known.seed(
        [
            ("gate-a", "10.0.0.1", T0 - 7200),
            ("gate-a", "10.0.0.2", T0 - 3000),
            ("gate-a", "10.0.0.3", T0 - 60),
            ("gate-a", "10.0.0.4", T0 - 30),
            ("gate-b", "10.0.0.5", T0 - 10),
            ("gate-c", "10.0.0.6", T0 + 10),
        ],
        T0,
    )
    assert [h for h in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6")
            if h in known] == ["10.0.0.3", "10.0.0.4", "10.0.0.5"]  # fmt: skip
    now_mono[0] += 3600 - 45  # as old as when it was last heard: gate-a's first goes first
    assert "10.0.0.3" not in known and "10.0.0.4" in known and "10.0.0.5" in known


async def test_keyless_runs_end_with_an_upgrade(store: HubStore) -> None:
    """An older version sends no run key: its run ends with the gate's first keyed one, so a
    rollback is no alert (a review) while a copy hiding its key beside the gate still is."""
    upgraded = _run()
    assert await store.note_run("gate-a", NO_RUN, "10.0.0.7", T0) == []
    assert await store.note_run("gate-a", upgraded, "10.0.0.7", T0 + 60) == []
    for at in range(2, 5):  # rolled back: keyless again, the upgraded run never heard again
        assert await store.note_run("gate-a", NO_RUN, "10.0.0.7", T0 + 60 * at) == []
    beside = _run()  # upgraded again, and a copy without a key beside it
    assert await store.note_run("gate-b", NO_RUN, "10.0.0.8", T0) == []
    assert await store.note_run("gate-b", beside, "10.0.0.8", T0 + 60) == []
    assert await store.note_run("gate-b", NO_RUN, "192.0.2.5", T0 + 61) == []
    (alert,) = await store.note_run("gate-b", beside, "10.0.0.8", T0 + 62)
    assert "is still heard after run (none) from 192.0.2.5 began" in alert.detail


async def test_the_gate_list_shows_two_units_while_both_are_heard(store: HubStore) -> None:
    """A copy's heartbeats overwrite the gate's health in the console's gate list (its faults
    with them): the list says two units heartbeat as the gate while both are heard."""
    real, copy, restarted = _run(), _run(), _run()
    for gate in ("gate-a", "gate-b"):
        await store.heartbeat(heartbeat(gate, gate.upper()), T0)
    assert await store.note_run("gate-a", real, "10.0.0.7", T0) == []
    assert await store.note_run("gate-a", copy, "192.0.2.5", T0 + 5) == []
    assert len(await store.note_run("gate-a", real, "10.0.0.7", T0 + 10)) == 1
    assert await store.note_run("gate-b", real, "10.0.0.8", T0) == []  # gate B restarts
    assert await store.note_run("gate-b", restarted, "10.0.0.8", T0 + 20) == []

    async def faults(now: float) -> dict[str, tuple[str, ...]]:
        return {g.gate_id: g.faults for g in await store.gates(now)}

    assert await faults(T0 + 20) == {"gate-a": (hub_twins.TWO_UNITS,), "gate-b": ()}
    quiet = T0 + 10 + hub_twins.LATELY * POLICY.gate_offline_after_s  # the copy no longer heard
    assert await faults(quiet + 1) == {"gate-a": (), "gate-b": ()}


async def test_a_token_spinning_runs_raises_two_alerts_an_hour_at_most(store: HubStore) -> None:
    real = _run()
    assert await store.note_run("gate-a", real, "10.0.0.7", T0) == []
    raised, made_up = [], []
    for at in range(1, 2 * MAX_RUNS):  # made-up runs, far more than are kept ...
        made_up.append(_run())
        raised += await store.note_run("gate-a", made_up[-1], "192.0.2.5", T0 + at)
        for old in made_up[-3:]:  # ... each old one heard again after the next began
            raised += await store.note_run("gate-a", old, "192.0.2.5", T0 + at)
    # One alert for the runs' number and one for two units, not one a pair.
    assert sorted(a.detail.split(":")[0] for a in raised) == [
        "gate gate-a heartbeats from more than 8 new runs within an hour",
        "two units heartbeat as gate gate-a (a copy of its token? revoke its tokens, then give"
        " it a new one)",
    ]
    # The gate's own run was kept: the next hour, it is still heard after them.
    (back,) = await store.note_run("gate-a", real, "10.0.0.7", T0 + 3600)
    assert back.detail.startswith("two units heartbeat as gate gate-a")
    # A day later the stale ones make room again: a new run is kept.
    later = T0 + hub_twins.STALE_S + 2 * 3600
    assert await store.note_run("gate-a", _run(), "10.0.0.7", later) == []


def test_each_process_writes_new_runs_at_once_and_paces_the_rest() -> None:
    now = [0.0]
    notes = RunNotes(every_s=30.0, clock=lambda: now[0])
    real, copy = _run(), _run()
    assert notes.due("gate-a", real) and not notes.due("gate-a", real)  # unchanged: paced
    now[0] += 30.0
    assert notes.due("gate-a", real) and not notes.due("gate-a", real)
    now[0] += 1
    # A new run at once, and each known one once after it (the write that tells a run is still
    # heard), however the two take turns (found in a user trial: a pacing shared by every
    # change of the gate left a squatting copy's run unwritten, and no alert came).
    assert notes.due("gate-a", copy) and not notes.due("gate-a", copy)
    assert notes.due("gate-a", real)
    assert [notes.due("gate-a", r) for r in (copy, real, copy, real)] == [False] * 4
    assert notes.due("gate-b", real)  # each gate on its own
    # Made-up runs are written at most MAX_NEW_PER_MIN a minute a gate (real and copy were new
    # within the minute), and writes in all at most MAX_WRITES_PER_MIN (found in review: each
    # new run made every known one due again: 25 commits a second for one token).
    new = sum(notes.due("gate-a", _run()) for _ in range(10 * MAX_NEW_PER_MIN))
    assert new == MAX_NEW_PER_MIN - 2
    now[0] += 60.0
    fresh = [_run() for _ in range(MAX_NEW_PER_MIN)]
    writes = sum(notes.due("gate-a", r) for r in (*fresh, *fresh, real))
    assert writes == MAX_WRITES_PER_MIN  # 30 new, 29 known after a newer one, the gate's own
    now[0] += 31.0  # the gate's own is due by its pacing, but the minute's writes are spent
    assert not notes.due("gate-a", real)
    now[0] += 30.0
    assert notes.due("gate-a", real)
