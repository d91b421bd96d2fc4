"""The capabilities the lane talks to. No hardware imports here, ever.

Each driver is an async context manager (``open``/``close``, idempotent) built from a URL by
:mod:`drivers.registry`; the lane depends only on these Protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from agent.model import Decision


@dataclass(frozen=True, slots=True)
class Scan:
    """One read from a scanner: the decoded text, where it came from and when (monotonic ns).

    ``refused`` is set (and ``text`` empty) for a code the reader read but would not pass on
    (too long for its cap, not text, a symbology it does not take): why, never the content. The
    lane denies it as not a ticket, so the staff see that the code was read.
    """

    text: str = field(repr=False)  # a bearer credential: never in a repr or a log
    source: str
    mono_ns: int
    symbology: str | None = None
    refused: str | None = None


def too_long(length: int, cap: int) -> str:
    """The ``Scan.refused`` reason of a code over a reader's cap (every driver says it so)."""
    return f"a code of {length:,} characters, over the reader's {cap:,}"


@runtime_checkable
class Driver(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Scanner(Driver, Protocol):
    """Yields scans until the device is closed or its source ends."""

    def scans(self) -> AsyncIterator[Scan]: ...


@runtime_checkable
class AnswersReads(Protocol):
    """A scanner that waits for an answer to every read (Honeywell host ACK): the lane tells it
    of a read it passes over (one presentation's repeat, or a code beside it), which gets no
    decision of its own to show."""

    def passed_over(self, scan: Scan) -> None: ...


InputName = Literal["passage_entry", "passage_exit", "alarm", "emergency"]


@dataclass(frozen=True, slots=True)
class InputEvent:
    """An input line changed state (after debounce): which one, to what, and when (monotonic)."""

    name: InputName
    active: bool
    mono_ns: int


@runtime_checkable
class GateIO(Driver, Protocol):
    async def grant(self, direction: str, ref: str) -> None:
        """Release the gate once (exactly one relay pulse, or hold until passage) for ``ref``.

        Raises DriverError when the relay cannot be driven; the output is left inactive.
        """
        ...

    async def wait_passage(self, timeout_s: float) -> bool:
        """True when a person passed within ``timeout_s``; False on timeout. A held relay is
        released either way."""
        ...

    @property
    def emergency(self) -> bool:
        """True while the emergency/fire release input is active (free passage)."""
        ...

    def events(self) -> AsyncIterator[InputEvent]:
        """Alarm and emergency input changes, for the lane and health; ends when closed."""
        ...


@runtime_checkable
class Indicator(Driver, Protocol):
    async def show(self, decision: Decision, message: str, read: Scan | None = None) -> None:
        """Show a decision to staff and the visitor (LEDs, buzzer, display, scanner beep).

        ``read`` is the scan the decision answers; None for a show tied to no read (emergency
        release, a relay or gate fault). A scanner that waits for an answer to every read
        (:class:`AnswersReads`) answers that read with it."""
        ...
