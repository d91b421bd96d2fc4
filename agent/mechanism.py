"""One turnstile mechanism shared by several lanes (a bidirectional turnstile: one controller with
a release output per direction, a reader on each side).

The application builds one :class:`Mechanism` around the one opened device and gives each lane a
:class:`MechanismView`, which is a :class:`~agent.ports.GateIO` of its own:

* the device is opened by the first view opened and closed by the last view closed (once each);
* a view holds the mechanism from its ``grant`` to the end of its ``wait_passage``: a grant by
  another lane waits meanwhile (never two directions released at once), and
  :attr:`MechanismView.held_elsewhere` tells a lane that the mechanism is busy with another lane
  (the lane then refuses or waits, per its ``busy`` setting; see agent/lane.py);
* the device's input events (emergency, alarm) reach every view: an emergency release frees every
  direction, and each lane records and shows it for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from agent.ports import GateIO, InputEvent

log = logging.getLogger(__name__)


class Mechanism:
    """The shared device, its holder and its event fan-out."""

    def __init__(self, device: GateIO, name: str = "") -> None:
        self.device = device
        self.name = name
        self.holder: str | None = None  # the lane whose grant is in progress
        self.waiting = 0  # lanes waiting for the holder to finish (busy = "wait")
        self._lock = asyncio.Lock()
        self._free = asyncio.Event()
        self._free.set()
        self._opened = 0
        self._views: list[MechanismView] = []
        self._pump: asyncio.Task[None] | None = None

    @property
    def lanes(self) -> list[str]:
        """The lanes this mechanism serves, in the order their views were made."""
        return [view.lane for view in self._views]

    def view(self, lane: str) -> MechanismView:
        """The mechanism as lane ``lane`` drives it."""
        view = MechanismView(self, lane)
        self._views.append(view)
        return view

    async def _open(self) -> None:
        if self._opened == 0:
            await self.device.open()
            self._pump = asyncio.create_task(self._fan_out())
        self._opened += 1

    async def _close(self) -> None:
        self._opened -= 1
        if self._opened > 0:
            return
        try:
            await self.device.close()
        finally:
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump
                self._pump = None

    async def _fan_out(self) -> None:
        """Every input event of the device, to every view's queue."""
        try:
            async for event in self.device.events():
                for view in self._views:
                    view.queue.put_nowait(event)
        except Exception:
            log.exception("mechanism %s: input events failed", self.name)
        finally:
            for view in self._views:
                view.queue.put_nowait(None)

    async def _acquire(self, lane: str) -> None:
        await self._lock.acquire()
        self.holder = lane
        self._free.clear()

    def _release(self, lane: str) -> None:
        if self.holder == lane and self._lock.locked():
            self.holder = None
            self._free.set()
            self._lock.release()


class MechanismView:
    """One lane's :class:`~agent.ports.GateIO` onto a shared :class:`Mechanism`."""

    def __init__(self, mechanism: Mechanism, lane: str) -> None:
        self.mechanism = mechanism
        self.lane = lane
        self.queue: asyncio.Queue[InputEvent | None] = asyncio.Queue()
        self._open = False

    @property
    def held_elsewhere(self) -> bool:
        """True while the mechanism is released for another lane."""
        holder = self.mechanism.holder
        return holder is not None and holder != self.lane

    async def reserve(self) -> None:
        """Take the mechanism for this lane (waiting while another lane holds it) before a
        decision, so no other lane can take it between the decision and the grant; the grant
        keeps it, :meth:`release` gives it back when nothing is granted."""
        if self.mechanism.holder == self.lane:
            return
        self.mechanism.waiting += 1
        try:
            await self.mechanism._acquire(self.lane)
        finally:
            self.mechanism.waiting -= 1

    def release(self) -> None:
        """Give the mechanism back (a no-op unless this lane holds it)."""
        self.mechanism._release(self.lane)

    async def open(self) -> None:
        if not self._open:
            await self.mechanism._open()
            self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            self.queue.put_nowait(None)
            await self.mechanism._close()

    async def grant(self, direction: str, ref: str) -> None:
        """Waits while another lane holds the mechanism, then releases it in ``direction``; the
        mechanism stays this lane's until :meth:`wait_passage` ends (or the grant fails)."""
        if self.mechanism.holder != self.lane:  # not reserved by the lane's decision
            await self.mechanism._acquire(self.lane)
        try:
            await self.mechanism.device.grant(direction, ref)
        except BaseException:
            self.mechanism._release(self.lane)
            raise

    async def wait_passage(self, timeout_s: float) -> bool:
        try:
            return await self.mechanism.device.wait_passage(timeout_s)
        finally:
            self.mechanism._release(self.lane)

    @property
    def emergency(self) -> bool:
        return self.mechanism.device.emergency

    async def events(self) -> AsyncIterator[InputEvent]:
        while (event := await self.queue.get()) is not None:
            yield event
