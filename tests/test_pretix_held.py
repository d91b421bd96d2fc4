"""A check-in whose redeem is answered by something that is not pretix round after round (a
firewall in front of pretix refusing one ticket's URL) no longer holds back every later one.

Found in a review: since an answer that is not pretix's keeps the row queued (it once dropped it
for good), one such row stopped the gate's whole upload at it, so pretix's other scanners never
learnt this gate's later entries and would admit those tickets again. After HOLD_AFTER rounds the
row is passed by when the next row gets pretix's own answer; it stays queued and is asked again
every round, an annulment of it waits with it, and `gate-agent status` says so. A link that
answers nothing as pretix would (every row) still stops the upload at its first row.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from agent.app.gate_commands import summary
from agent.clock import Clock
from agent.journal import EntryRecord, Journal
from agent.model import Decision, Reason, Verdict
from agent.revocation import RevocationStore
from sync.pretix import PretixUpstream
from sync.pretix_upload import HOLD_AFTER
from tests.pretix_server import API_TOKEN, FakePretix, PretixServer, load
from tests.test_pretix_sync import T0, Wall, make_upstream, ok_answer

CASES = {c["name"]: c for c in load("tickets.json")}
# A firewall's refusal of one URL (pretix's own refusals carry "status": "error" and a reason).
BLOCKED_URL = (406, {"message": "Request blocked by the web application firewall"})
NAMES = ("valid_standard_1", "valid_standard_2", "valid_standard_3")


@dataclass
class Rig:
    fake: FakePretix
    up: PretixUpstream
    journal: Journal
    start: Callable[[], PretixUpstream]  # another upstream over the same state, as at a restart
    state: Path  # its state_dir

    async def restart(self) -> None:
        await self.up.close()
        self.up = self.start()

    async def entry(self, name: str) -> EntryRecord:
        return await self.journal.record(
            ticket_ref="pretix:" + CASES[name]["secret"], kind="entry",
            decision=Decision(Verdict.ADMIT, Reason.OK), lane="in", rev_version=0,
        )  # fmt: skip

    def redeemed(self) -> list[str]:
        """The secrets of every redeem the server was asked, in order."""
        names = {CASES[n]["secret"]: n for n in NAMES}
        return [names[unquote(c.raw_path.split("/")[-3])] for c in self.fake.redeem_calls()]

    async def outbox(self) -> list[int]:
        return [r.gate_seq for r in await self.journal.unsynced(100)]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = FakePretix(tokens={API_TOKEN})
    for name in NAMES:
        fake.redeem_answers[CASES[name]["secret"]] = [ok_answer()]
    wall = Wall(T0)
    journal = await Journal.open(tmp_path / "j.db", gate_id="g", gate_name="G",
                                 clock=Clock(wall=wall))  # fmt: skip
    store = await RevocationStore.open(tmp_path / "rev.db")
    async with PretixServer(fake) as server:

        def start() -> PretixUpstream:
            return make_upstream(tmp_path / "state", server.url, journal, store, wall, [], [],
                                 device_token=API_TOKEN, device_id=1)  # fmt: skip

        rig = Rig(fake, start(), journal, start, tmp_path / "state")
        yield rig
        await rig.up.close()
    await store.close()
    await journal.close()


def blocked(rig: Rig, name: str, answer: tuple[int, Any] = BLOCKED_URL) -> None:
    rig.fake.redeem_answers[CASES[name]["secret"]] = [answer]


@pytest.mark.parametrize(
    "answer",
    [
        BLOCKED_URL,
        (403, "<html><h1>403 Forbidden</h1>Request blocked</html>"),  # a WAF in front of pretix
        (500, "<h1>Server Error (500)</h1>"),  # pretix failing on this one position
        (502, "<html>502 Bad Gateway</html>"),
    ],
    ids=["firewall-406", "firewall-403", "pretix-500", "proxy-502"],
)
async def test_one_row_a_firewall_refuses_is_passed_by_and_the_rest_go_up(
    rig: Rig, answer: tuple[int, Any]
) -> None:
    """A trial left this open: a firewall's 403 or a 5xx for one URL (or pretix failing on one
    position) stopped the upload at that row for good, as if pretix were down."""
    stuck = await rig.entry("valid_standard_1")
    await rig.entry("valid_standard_2")
    blocked(rig, "valid_standard_1", answer)
    for _ in range(HOLD_AFTER - 1):  # as before: the upload stops at it, the rest wait
        assert not await rig.up.sync_once()
    assert rig.redeemed() == ["valid_standard_1"] * (HOLD_AFTER - 1)
    assert rig.up.status["held"] == 0
    assert await rig.up.sync_once()  # pretix took the rest: the gate is online ...
    assert rig.redeemed()[HOLD_AFTER - 1 :] == ["valid_standard_1", "valid_standard_2"]
    assert await rig.outbox() == [stuck.gate_seq]  # ... and only the stuck row waits,
    assert rig.up.status["held"] == 1  # which its status says
    text = _status_text({"kind": "pretix", **rig.up.status})
    assert "  1 row held back: answered not by pretix round after round" in text
    # Later rows go up at once; the stuck row is asked again every round, and goes up once the
    # firewall lets it through.
    await rig.entry("valid_standard_3")
    assert await rig.up.sync_once()
    assert rig.redeemed()[-2:] == ["valid_standard_1", "valid_standard_3"]
    rig.fake.redeem_answers[CASES["valid_standard_1"]["secret"]] = [ok_answer()]
    assert await rig.up.sync_once()
    assert await rig.outbox() == [] and rig.up.status["held"] == 0


async def test_the_rounds_counted_survive_a_restart(rig: Rig) -> None:
    """The count of rounds lived in memory: a gate restarted (a power cut) held every later row
    behind the refused one for HOLD_AFTER rounds again."""
    stuck = await rig.entry("valid_standard_1")
    await rig.entry("valid_standard_2")
    blocked(rig, "valid_standard_1")
    for _ in range(HOLD_AFTER - 1):
        assert not await rig.up.sync_once()
    await rig.restart()
    assert await rig.up.sync_once()  # the round after the restart is the HOLD_AFTER-th
    assert await rig.outbox() == [stuck.gate_seq] and rig.up.status["held"] == 1
    for _ in range(3):  # counted up to one past HOLD_AFTER: the file is not written every round
        assert await rig.up.sync_once()
    kept = json.loads((rig.state / "pretix_held.json").read_text())
    assert kept == {str(stuck.gate_seq): HOLD_AFTER + 1}


async def test_a_rate_limit_for_one_row_is_waited_out_not_passed_by(rig: Rig) -> None:
    """A review: 429 (and 408) counted as one URL's refusal, so after 3 rounds the next row went
    straight after pretix asked the gate to slow down. They say nothing of one row."""
    await rig.entry("valid_standard_1")
    await rig.entry("valid_standard_2")
    blocked(rig, "valid_standard_1", (429, {"detail": "Request was throttled."}))
    for _ in range(HOLD_AFTER + 1):
        assert not await rig.up.sync_once()
    assert rig.redeemed() == ["valid_standard_1"] * (HOLD_AFTER + 1)


@pytest.mark.parametrize("kept", ["{not json", '["a list"]', '{"3": -1}', '{"3": true}'])
async def test_a_kept_count_not_as_written_is_counted_again(
    rig: Rig, kept: str, caplog: pytest.LogCaptureFixture
) -> None:
    await rig.entry("valid_standard_1")
    await rig.entry("valid_standard_2")
    blocked(rig, "valid_standard_1")
    rig.state.mkdir(exist_ok=True)
    (rig.state / "pretix_held.json").write_text(kept)
    await rig.restart()
    assert not await rig.up.sync_once()  # from 0 again: the upload stops at it, as before
    assert any("pretix_held.json not used" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "answer",
    [(200, {"portal": "log in to use this network"}), (503, {"detail": "maintenance"})],
    ids=["portal-200", "maintenance-503"],
)
async def test_a_link_that_is_not_pretix_for_every_row_still_stops_at_the_first(
    rig: Rig, answer: tuple[int, Any]
) -> None:
    """Every row answered not as pretix answers one (a captive portal's 200 to every request,
    pretix down for maintenance): passing rows by would only send every row in turn. A row is
    passed by only once it has failed HOLD_AFTER rounds itself, so the round stops at the first
    row that has not, and one more row is asked every HOLD_AFTER rounds (MAX_PASSED_BY at
    most); no round goes through."""
    for name in NAMES:
        await rig.entry(name)
        blocked(rig, name, answer)
    for _ in range(HOLD_AFTER + 2):
        assert not await rig.up.sync_once()
    # Rounds 1-2: the first row; 3-4: the first two; 5: all three (the third fails at its first).
    assert rig.redeemed() == [
        *["valid_standard_1"] * 2, *["valid_standard_1", "valid_standard_2"] * 2,
        "valid_standard_1", "valid_standard_2", "valid_standard_3",
    ]  # fmt: skip
    assert len(await rig.outbox()) == 3
    assert rig.up.status["held"] == 0  # a review: "held back ... the rows after it uploaded"


async def test_rows_of_two_tickets_refused_are_both_passed_by(rig: Rig) -> None:
    """An integrator's trial: a firewall refusing two tickets' URLs (a 403 and a 503) held back
    every later check-in for as long as both were refused (the second was never passed by, as
    the probe of the first), so pretix's other scanners never learnt them, the gate showed
    offline and backed off, and admitted a ticket cancelled meanwhile offline."""
    first = await rig.entry("valid_standard_1")
    second = await rig.entry("valid_standard_2")
    await rig.entry("valid_standard_3")
    blocked(rig, "valid_standard_1", (403, "<html>403 Forbidden</html>"))
    blocked(rig, "valid_standard_2", (503, "<html>503 Service Unavailable</html>"))
    for _ in range(2 * HOLD_AFTER - 2):  # each row fails HOLD_AFTER rounds before it is passed
        assert not await rig.up.sync_once()
    assert await rig.up.sync_once()
    assert await rig.outbox() == [first.gate_seq, second.gate_seq]
    assert rig.up.status["held"] == 2 and rig.up.status["online"]


async def test_the_last_row_is_passed_by_only_when_pretix_answered_the_round(rig: Rig) -> None:
    """A review: the only queued row, answered not by pretix, was passed by with nothing after
    it to tell a refused URL from a broken link, and the round said all was well. The round's
    download tells: pretix answered it (an integrator's trial: a last row held made the gate
    show offline and back off while pretix answered everything else), or not (a link that is
    not pretix: nothing is passed by, the round fails)."""
    await rig.entry("valid_standard_1")
    blocked(rig, "valid_standard_1", (403, "<html>403 Forbidden</html>"))
    assert [await rig.up.sync_once() for _ in range(HOLD_AFTER)] == [False] * 2 + [True]
    assert rig.up.status["held"] == 1 and rig.up.status["last_error"] is None
    rig.fake.fault = "5xx"  # now every answer, the download's too
    assert not await rig.up.sync_once()
    assert rig.up.status["held"] == 1 and rig.up.status["last_error"] is not None


async def test_the_later_rows_of_a_ticket_passed_by_wait_with_it(rig: Rig) -> None:
    """A review: the next row probed was the same ticket's (its URL refused as well), so the
    upload stopped for good; and an exit could go up before its entry. Every later row of the
    ticket waits with it, and the probe is the next row of another ticket."""
    stuck = await rig.entry("valid_standard_1")
    exit_ = await rig.journal.record(
        ticket_ref="pretix:" + CASES["valid_standard_1"]["secret"], kind="exit",
        decision=Decision(Verdict.ADMIT, Reason.OK), lane="out", rev_version=0,
    )  # fmt: skip
    await rig.entry("valid_standard_1")  # in again
    other = await rig.entry("valid_standard_2")
    blocked(rig, "valid_standard_1")
    for i in range(HOLD_AFTER):
        assert await rig.up.sync_once() is (i == HOLD_AFTER - 1)
    assert rig.redeemed() == ["valid_standard_1"] * HOLD_AFTER + ["valid_standard_2"]
    assert other.gate_seq not in await rig.outbox()
    assert await rig.outbox() == [stuck.gate_seq, exit_.gate_seq, exit_.gate_seq + 1]
    assert rig.up.status["held"] == 3


async def test_an_annulment_of_a_row_passed_by_waits_with_it(rig: Rig) -> None:
    """pretix refuses to annul a check-in it does not have (404, for good): the annulment of a
    row passed by waits for it instead of being lost."""
    stuck = await rig.entry("valid_standard_1")
    await rig.journal.record(
        ticket_ref="pretix:" + CASES["valid_standard_1"]["secret"], kind="annul",
        decision=Decision(Verdict.DENY, Reason.OK, "turnstile not passed"), lane="in",
        rev_version=0, annuls=stuck.entry_id,
    )  # fmt: skip
    await rig.entry("valid_standard_2")
    blocked(rig, "valid_standard_1")
    for i in range(HOLD_AFTER):
        assert await rig.up.sync_once() is (i == HOLD_AFTER - 1)
    assert rig.fake.calls_to("/annul/") == []
    assert len(await rig.outbox()) == 2  # the entry and its annulment
    rig.fake.redeem_answers[CASES["valid_standard_1"]["secret"]] = [ok_answer()]
    assert await rig.up.sync_once()
    assert len(rig.fake.calls_to("/annul/")) == 1 and await rig.outbox() == []


def _status_text(upstream: dict[str, Any]) -> str:
    """What `gate-agent status` prints for a /status answer with ``upstream`` (the rest as a
    quiet gate's)."""
    return summary({
        "gate": {"id": "g", "name": "G"},
        "health": {"status": "ok", "reasons": []},
        "lanes": [],
        "revocations": {"version": 1, "entries": 0, "age_s": 0, "stale": False},
        "trust_version": 1,
        "clock": {"synced": True},
        "journal": {"rows": 2, "outbox_depth": 1, "oldest_unsynced": None},
        "last_hour": {"admitted": 0, "denied": 0},
        "upstream": upstream,
    })  # fmt: skip
