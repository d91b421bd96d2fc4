"""Group commit: work submitted while a commit runs goes into the next one, together.

The hub's SQLite store commits uploads this way (:mod:`sync.hub_sqlite`): gates uploading at the
same moment share one transaction and one fsync. :class:`GroupCommit` only orders and settles;
the ``commit`` function given to it does the work for a whole group and returns one outcome per
item (its result, or the exception that item alone failed with). Each item's caller gets its own
outcome once the group's commit has returned, so nothing is answered before it is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # its result

Commit = Callable[[Sequence[I]], Awaitable[Sequence[R | Exception]]]


@dataclass(frozen=True, slots=True)
class _Waiting(Generic[I, R]):
    item: I
    done: asyncio.Future[R]


class GroupCommit(Generic[I, R]):
    """Submit items with :meth:`submit`; at most ``max_group`` go into one ``commit`` call.

    When ``commit`` raises, every item of that group fails with a copy of the error made by
    ``own_error`` (one exception object per caller); when the committing task is stopped, the
    items still waiting fail with ``closing()``.
    """

    def __init__(
        self,
        commit: Commit[I, R],
        *,
        max_group: int,
        own_error: Callable[[Exception], Exception],
        closing: Callable[[], Exception],
    ) -> None:
        self._commit = commit
        self._max = max_group
        self._own_error = own_error
        self._closing = closing
        self._waiting: list[_Waiting[I, R]] = []
        self._committer: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        """The item's result once its group is committed; raises what failed it."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(item, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_all())
            self._committer.add_done_callback(self._ended)
        return await done

    async def close(self) -> None:
        """Wait for the commits under way (the items still waiting then fail, if the
        ``commit`` refuses them)."""
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)

    async def _commit_all(self) -> None:
        while self._waiting:
            group = self._waiting[: self._max]
            del self._waiting[: self._max]
            await self._commit_group(group)

    def _ended(self, committer: asyncio.Task[None]) -> None:
        """Stopped (even before it began): none is left waiting for a commit that will not
        come. Ended normally, nothing waits."""
        if committer.cancelled() or committer.exception() is not None:
            left, self._waiting = self._waiting, []
            for waiting in left:
                _settle(waiting.done, self._closing())

    async def _commit_group(self, group: list[_Waiting[I, R]]) -> None:
        try:
            outcomes = await self._commit([w.item for w in group])
        except Exception as exc:  # the whole group failed
            for waiting in group:
                _settle(waiting.done, self._own_error(exc))
            return
        except BaseException:  # stopped (cancelled): its callers are told so
            for waiting in group:
                waiting.done.cancel()
            raise
        for waiting, outcome in zip(group, outcomes, strict=True):
            _settle(waiting.done, outcome)


def _settle(done: asyncio.Future[R], outcome: R | Exception) -> None:
    if done.done():  # its caller was cancelled: the item's fate stands, nobody waits for it
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)
