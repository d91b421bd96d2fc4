"""What the status server reads of the running gate: narrow, read-only Protocols.

The daemon's ``Gate``, its journal, stores, clock and lanes satisfy them as they are
(structurally), so :mod:`agent.app.status` depends neither on the daemon that serves it nor on
any writer: a write through the view (a journal insert, a list install, a pulse) is a type error
that ``mypy --strict`` refuses. Each member is what ``/status``, ``/metrics`` or the staff display
shows.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agent.app.config import Config
    from agent.clock import ClockReading
    from agent.journal.queries import RecentRow
    from agent.lane import LaneSettings
    from agent.revocation import ListMeta
    from agent.rules import GatePolicy


class JournalReads(Protocol):
    """The journal's figures: its outbox, its size and the last hour's decisions."""

    async def recent(self, since: float) -> list[RecentRow]: ...
    async def outbox(self) -> tuple[int, float | None]: ...
    async def count(self) -> int: ...


class ListReads(Protocol):
    """The installed revocation list: its version and age, and how many keys it holds."""

    @property
    def meta(self) -> ListMeta: ...
    @property
    def index(self) -> Sized: ...


class TrustReads(Protocol):
    @property
    def version(self) -> int: ...


class ClockReads(Protocol):
    def reading(self) -> ClockReading: ...
    def wall(self) -> float: ...
    def behind_floor(self) -> float | None: ...
    @property
    def reference_offset(self) -> float | None: ...


class PolicyReads(Protocol):
    @property
    def policy(self) -> GatePolicy: ...


class TurnstileReads(Protocol):
    @property
    def emergency(self) -> bool: ...


class MechanismReads(Protocol):
    @property
    def lanes(self) -> Sequence[str]: ...


@runtime_checkable
class SharedTurnstileReads(Protocol):
    """A turnstile several lanes share (:class:`agent.mechanism.MechanismView`): which lanes."""

    @property
    def mechanism(self) -> MechanismReads: ...


class UplinkReads(Protocol):
    @property
    def online(self) -> bool: ...


class LaneView(Protocol):
    """One lane as its health and the staff display read it."""

    @property
    def settings(self) -> LaneSettings: ...
    @property
    def scanner(self) -> object: ...  # its ``connected``, where it has one
    @property
    def gate(self) -> TurnstileReads: ...
    @property
    def checker(self) -> PolicyReads: ...
    @property
    def fault(self) -> str | None: ...
    @property
    def journal_fault(self) -> str | None: ...
    @property
    def input_ended(self) -> bool: ...
    @property
    def uplink(self) -> UplinkReads | None: ...


class PretixReads(Protocol):
    @property
    def status(self) -> dict[str, Any]: ...


class HubReads(Protocol):
    def status(self) -> dict[str, Any]: ...


class GateView(Protocol):
    """The running gate as the status server reads it (the daemon's ``Gate`` is one)."""

    @property
    def config(self) -> Config: ...
    @property
    def clock(self) -> ClockReads: ...
    @property
    def trust(self) -> TrustReads: ...
    @property
    def revocations(self) -> ListReads: ...
    @property
    def journal(self) -> JournalReads: ...
    @property
    def checker(self) -> PolicyReads: ...
    @property
    def lane(self) -> LaneView: ...
    @property
    def upstream(self) -> PretixReads | None: ...
    @property
    def hub(self) -> HubReads | None: ...
