"""The two small mechanisms between capture and decisions, kept pure so they test on their own.

:class:`LatestSlot` hands frames from the capture thread to the decode thread: one slot, a newer
frame replaces one not yet taken (counted as dropped), so the decoder always works on the freshest
frame and never on a backlog. :class:`Presentations` turns "seen in this frame" into presentations:
a code that stays in view is one presentation, seen again only after ``hold`` out of view.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item, thread-safe hand-over where the newest item wins."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: T, *, wait: bool = False) -> bool:
        """Offer ``item``; with ``wait`` block until the slot is empty instead of replacing.

        Returns False (item not stored) once the slot is closed.
        """
        with self._cond:
            if wait:
                self._cond.wait_for(lambda: self._item is None or self._closed)
            if self._closed:
                return False
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
            return True

    def take(self, timeout: float | None = None) -> T | None:
        """The item, waiting for one; None when closed and empty (or on ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self, *, discard: bool = False) -> None:
        """No more items: ``take`` returns what is left, then None. ``discard`` drops it too."""
        with self._cond:
            self._closed = True
            if discard:
                self._item = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class Presentations:
    """Decides which texts seen at a view time are new presentations.

    A text is new when it was never seen or has been out of view for more than ``hold_ns`` (on the
    source's view clock). Memory is bounded: texts out of view longer than the hold are forgotten.
    """

    PRUNE_AT = 64

    def __init__(self, hold_ns: int) -> None:
        if hold_ns < 0:
            raise ValueError("hold_ns must be >= 0")
        self.hold_ns = hold_ns
        self._last: dict[str, int] = {}

    def seen(self, texts: Iterable[str], view_ns: int) -> list[str]:
        """Record ``texts`` as in view at ``view_ns``; returns those that start a presentation."""
        fresh = []
        for text in dict.fromkeys(texts):
            last = self._last.get(text)
            if last is None or view_ns - last > self.hold_ns:
                fresh.append(text)
            self._last[text] = view_ns
        if len(self._last) > self.PRUNE_AT:
            self._last = {t: v for t, v in self._last.items() if view_ns - v <= self.hold_ns}
        return fresh

    def __len__(self) -> int:
        return len(self._last)
