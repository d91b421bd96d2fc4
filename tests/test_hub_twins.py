"""Two units heartbeating as one gate (sync.hub_twins), in both real stores: what is an alert and
what is not, and what a token spinning boot ids can and cannot do."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from sync import hub_twins
from sync.hub_store import HubStore
from sync.hub_stores import open_store
from sync.hub_twins import CHURN, MAX_BOOTS, MAX_NEW_PER_MIN, NO_BOOT, NOTE_EVERY_S, BootNotes
from tests.pg import pg_server, pg_url  # noqa: F401
from tests.test_hub_store import POLICY

T0 = 1_800_000_000.0


@pytest.fixture
async def store(hub_store_url: str) -> AsyncIterator[HubStore]:
    opened = await open_store(hub_store_url, POLICY)
    yield opened
    await opened.close()


def _boot() -> str:
    return str(uuid.uuid4())


async def _details(store: HubStore) -> list[str]:
    return [a.detail for a in await store.alerts(0, 1000) if a.kind == "integrity"]


async def test_a_gate_booting_again_is_no_alert(store: HubStore) -> None:
    # Its boot id changes and never comes back; an older gate names none; a dual-stack gate
    # changes address; an upgrade from a version without boot ids; a few boots a day.
    first, second = _boot(), _boot()
    steps = [(NO_BOOT, "10.0.0.7"), (first, "10.0.0.7"), (first, "fd00::7"), (second, "10.0.0.7")]
    steps += [(_boot(), "10.0.0.7") for _ in range(CHURN - 3)]
    for at, (boot, address) in enumerate(steps):
        assert await store.note_boot("gate-a", boot, address, T0 + 60 * at) == []
    assert await store.note_boot("gate-b", first, "10.0.0.9", T0) == []  # each gate its own
    assert await _details(store) == []


async def test_a_boot_id_coming_back_is_one_alert_a_pair(store: HubStore) -> None:
    real, copy = _boot(), _boot()
    assert await store.note_boot("gate-a", real, "10.0.0.7", T0) == []
    assert await store.note_boot("gate-a", copy, "192.0.2.5", T0 + 5) == []
    (alert,) = await store.note_boot("gate-a", real, "10.0.0.7", T0 + 10)
    assert alert.gate_ids == ("gate-a",) and alert.gates == ("gate-a",)
    assert alert.detail.startswith("two units heartbeat as gate gate-a (a copy of its token?")
    assert f"boot {real[:8]} from 10.0.0.7 is still heard after boot {copy[:8]} from 192.0.2.5" in (
        alert.detail
    )
    for at, boot in enumerate((copy, real, copy, real), start=3):  # they go on taking turns
        assert await store.note_boot("gate-a", boot, "x", T0 + 5 * at) == []
    assert len(await _details(store)) == 1
    # A copy that sends no boot id (as an older gate would) is a boot id of its own.
    assert await store.note_boot("gate-b", real, "10.0.0.8", T0) == []
    assert await store.note_boot("gate-b", NO_BOOT, "192.0.2.5", T0 + 5) == []
    (hidden,) = await store.note_boot("gate-b", real, "10.0.0.8", T0 + 10)
    assert "is still heard after boot (none) from 192.0.2.5" in hidden.detail


async def test_a_token_spinning_boot_ids_cannot_push_the_gates_own_out(store: HubStore) -> None:
    real = _boot()
    assert await store.note_boot("gate-a", real, "10.0.0.7", T0) == []
    raised = []
    for at in range(1, 2 * MAX_BOOTS):  # fresh boot ids, far more than are kept
        raised += await store.note_boot("gate-a", _boot(), "192.0.2.5", T0 + at)
    # More than CHURN new ones within the hour: one alert of their own (once an hour) ...
    (churn,) = raised
    assert f"names more than {CHURN} new boot ids within an hour" in churn.detail
    # ... and the gate's own boot id was kept: its next heartbeat is the pair's alert.
    (back,) = await store.note_boot("gate-a", real, "10.0.0.7", T0 + 2 * MAX_BOOTS)
    assert back.detail.startswith("two units heartbeat as gate gate-a")
    # A day later the stale ones make room again: a new unit's boot id is kept.
    later = T0 + hub_twins.STALE_S + 3 * MAX_BOOTS
    assert await store.note_boot("gate-a", _boot(), "10.0.0.7", later) == []


def test_each_process_writes_new_boot_ids_at_once_and_paces_the_rest() -> None:
    now = [0.0]
    notes = BootNotes(clock=lambda: now[0])
    real, copy = _boot(), _boot()
    assert notes.due("gate-a", real) and not notes.due("gate-a", real)  # unchanged: paced
    now[0] += NOTE_EVERY_S
    assert notes.due("gate-a", real) and not notes.due("gate-a", real)
    now[0] += 1
    # A new boot id at once, and each known one once after it (the write that tells a boot id
    # came back), however the two take turns (found in a user trial: a pacing shared by every
    # change of the gate left a squatting copy's boot id unwritten, and no alert came).
    assert notes.due("gate-a", copy) and not notes.due("gate-a", copy)
    assert notes.due("gate-a", real)
    assert [notes.due("gate-a", b) for b in (copy, real, copy, real)] == [False] * 4
    assert notes.due("gate-b", real)  # each gate on its own
    # Made-up boot ids are written at most MAX_NEW_PER_MIN a minute a gate ...
    written = sum(notes.due("gate-a", _boot()) for _ in range(10 * MAX_NEW_PER_MIN))
    assert written == MAX_NEW_PER_MIN - 2  # real and copy were new within the minute
    # ... while the gate's own is written again after them, and paced the same.
    assert notes.due("gate-a", real) and not notes.due("gate-a", real)
    now[0] += 60.0
    assert notes.due("gate-a", _boot())
