"""A gate's rounds over rows a copy of a gate's token disputed (sync/client_disputed.py), against
a real journal and hub answers as a hostile or an older hub would give them: the set-apart list
read to its end over several pages, not read again while its count stays, a page that does not
move on refused, and an older hub (404) asked again later. The hub's side, and the rounds through
real hub and gate processes: test_hub_store.py, test_hub_http.py, test_stolen_gate.py."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.clock import Clock
from agent.errors import UpstreamNotFound, UpstreamRefused, UpstreamUnavailable
from agent.journal import Journal, PeerEntry
from sync import client_disputed
from sync.client_disputed import OLD_HUB_RETRY_S, forget_set_apart, set_apart_round
from sync.protocol import MAX_SET_APART_PAGE, SetApartPage


class Hub:
    """The set-apart list of a hub, paged as the hub pages it; ``asked`` records each query."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = sorted(ids)
        self.asked: list[dict[str, str]] = []

    async def page(self, params: dict[str, str]) -> SetApartPage:
        self.asked.append(params)
        after, limit = params.get("after", ""), int(params["limit"])
        return SetApartPage(len(self.ids), tuple(i for i in self.ids if i > after)[:limit])


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    """Gate B's journal (tmp_path / "j.db")."""
    clock = Clock(assume="synced")
    async with await Journal.open(
        tmp_path / "j.db", gate_id="gate-b", gate_name="B", clock=clock
    ) as opened:
        yield opened


def _peer(entry_id: str, kind: str, n: int) -> PeerEntry:
    return PeerEntry(entry_id, "gate-a", "A", n, f"tk1:{n:016x}", kind, None, 1e9, n << 16)


def _peer_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT entry_id FROM peer_entries")}


async def test_the_list_is_read_to_its_end_once_and_again_only_when_its_count_changes(
    tmp_path: Path, journal: Journal
) -> None:
    ids = sorted(str(uuid.uuid4()) for _ in range(MAX_SET_APART_PAGE + 2))
    exits = [_peer(i, "exit", n) for n, i in enumerate(ids[-3:], 1)]  # on the second page
    kept = _peer(str(uuid.uuid4()), "exit", 9)
    entry = _peer(ids[0], "entry", 10)  # set apart too, but an entry: its ticket stays used
    await journal.add_peer_entries([*exits, kept, entry])
    hub = Hub(ids)
    assert await forget_set_apart(hub.page, journal, None) == (len(ids), 3)
    assert _peer_ids(tmp_path / "j.db") == {kept.entry_id, entry.entry_id}
    assert [p.get("after", "") for p in hub.asked] == ["", "", ids[MAX_SET_APART_PAGE - 1],
                                                       ids[-1]]  # fmt: skip
    hub.asked.clear()
    assert await forget_set_apart(hub.page, journal, len(ids)) == (len(ids), 0)
    assert hub.asked == [{"limit": "0"}]  # the count alone


async def test_a_page_that_does_not_move_on_is_refused_and_a_long_list_is_read_on_next_round(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    same = tuple(sorted(str(uuid.uuid4()) for _ in range(3)))

    async def stuck(params: dict[str, str]) -> SetApartPage:
        return SetApartPage(3, same)  # the same page, whatever was asked

    with pytest.raises(UpstreamUnavailable, match="ids not after"):
        await forget_set_apart(stuck, journal, None)
    monkeypatch.setattr(client_disputed, "MAX_PAGES", 1)
    monkeypatch.setattr(client_disputed, "MAX_SET_APART_PAGE", 2)
    hub = Hub(list(same))
    assert await forget_set_apart(hub.page, journal, 7) == (7, 0)  # not read to its end
    assert await forget_set_apart(hub.page, journal, None) == (None, 0)


async def test_rows_forgotten_before_a_page_fails_are_said(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """A CI run: the hub answered the first page, then not the next (its store busy with the
    operator's quarantine), and the rows forgotten from the first went unsaid."""
    ids = sorted(str(uuid.uuid4()) for _ in range(MAX_SET_APART_PAGE + 1))
    await journal.add_peer_entries([_peer(ids[0], "annul", 1)])
    hub = Hub(ids)

    async def busy_after_one(params: dict[str, str]) -> SetApartPage:
        if params.get("after"):
            raise UpstreamUnavailable("hub: HTTP 503")
        return await hub.page(params)

    with pytest.raises(UpstreamUnavailable):
        await forget_set_apart(busy_after_one, journal, None)
    assert "hub: forgot 1 row learnt from other gates" in caplog.text


async def test_an_older_hub_without_the_list_is_asked_again_in_ten_minutes(
    journal: Journal,
) -> None:

    async def old(params: dict[str, str]) -> SetApartPage:
        raise UpstreamNotFound("GET /v1/venues/v/set-apart: HTTP 404 (not_found: no route)")

    assert await set_apart_round(old, journal, None, 10.0) == (None, OLD_HUB_RETRY_S)

    async def refused(params: dict[str, str]) -> SetApartPage:
        raise UpstreamRefused("GET /v1/venues/v/set-apart: HTTP 400 (bad_request: after)")

    with pytest.raises(UpstreamRefused):
        await set_apart_round(refused, journal, None, 10.0)
