"""sync/group_commit.py: what waits during a commit goes into the next one, together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sync.group_commit import GroupCommit
from tests.polling import until


class Store:
    """A commit that records its groups; it stays in the first commit until released."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.groups: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def commit(self, items: Sequence[int]) -> list[int | Exception]:
        self.groups.append(list(items))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def grouped(store: Store, max_group: int = 3) -> GroupCommit[int, int]:
    return GroupCommit(
        store.commit,
        max_group=max_group,
        own_error=lambda exc: RuntimeError(f"group failed: {exc}"),
        closing=lambda: RuntimeError("closing"),
    )


async def test_what_waits_during_a_commit_is_committed_together_in_groups_of_at_most_max() -> None:
    store = Store()
    commits = grouped(store)
    first = asyncio.ensure_future(commits.submit(0))
    await asyncio.sleep(0)  # the scenario: the first commit has begun, with item 0 alone
    rest = [asyncio.ensure_future(commits.submit(i)) for i in range(2, 12, 2)]
    store.release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [20, 40, 60, 80, 100]
    assert store.groups == [[0], [2, 4, 6], [8, 10]]


async def test_each_item_gets_its_own_outcome_and_a_failed_group_fails_each_caller() -> None:
    store = Store()
    store.release.set()
    commits = grouped(store)
    results = await asyncio.gather(
        commits.submit(2), commits.submit(3), commits.submit(4), return_exceptions=True
    )
    assert results[0] == 20 and results[2] == 40
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd 3"

    broken = Store(fail=OSError("disk gone"))
    broken.release.set()
    failed = grouped(broken)
    errors = await asyncio.gather(failed.submit(2), failed.submit(4), return_exceptions=True)
    assert [str(e) for e in errors] == ["group failed: disk gone"] * 2
    assert errors[0] is not errors[1]  # one exception object per caller


@pytest.mark.parametrize("when", ["before it began", "during a commit"])
async def test_a_stopped_committer_leaves_nobody_waiting(when: str) -> None:
    store = Store()
    commits = grouped(store, max_group=1)
    waiting = [asyncio.ensure_future(commits.submit(i)) for i in (2, 4, 6)]
    await asyncio.sleep(0)  # the scenario: all three submitted
    if when == "during a commit":
        await until(lambda: store.groups == [[2]], what="item 2's commit under way")
    assert commits._committer is not None
    commits._committer.cancel()  # as when the loop stops
    results = await asyncio.gather(*waiting, return_exceptions=True)
    if when == "during a commit":  # its caller is told it was stopped; the others: closing
        assert isinstance(results[0], asyncio.CancelledError)
        results = results[1:]
    assert [str(r) for r in results] == ["closing"] * len(results)
    await commits.close()


async def test_a_cancelled_caller_does_not_cancel_its_item() -> None:
    store = Store()
    commits = grouped(store)
    gone = asyncio.ensure_future(commits.submit(2))
    stays = asyncio.ensure_future(commits.submit(4))
    await asyncio.sleep(0)  # the scenario: both are in the commit under way
    gone.cancel()
    store.release.set()
    assert await stays == 40
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert store.groups == [[2, 4]]  # the cancelled caller's item was committed all the same
