"""Wall time the gate can defend: sync detection, a persisted floor, and a hybrid logical clock.

Boards without a battery-backed clock boot with a wrong time. :class:`Clock` therefore never reports
a time below a *floor* (the latest trusted time it has seen, kept in a small file across restarts)
and says whether its time can be trusted, so the rules can decide what an untrusted clock means for
validity windows. Its sources, in order: the config's assumption, the system clock when the kernel
says NTP synchronised it, and a reference time (the hub's, learnt over TLS) carried forward on the
monotonic clock (:meth:`Clock.set_reference`); else the system clock, untrusted. While running, only
the first two raise the floor (a hub's time is used while fresh, so a hub clock set ahead does not
hold the gate's own NTP time untrusted until it catches up), and journal rows decided on the hub's
time are marked so (agent.journal.records.HUB_TIME) and do not set the floor at the next start.

Events are never ordered by wall time: within a gate by ``gate_seq``, across gates by the
:class:`HLC` (hybrid logical clock) stamped on every journal row.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.fsutil import write_atomic

log = logging.getLogger(__name__)

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
# adjtimex(2) returns the clock state; TIME_ERROR means "not synchronised" (STA_UNSYNC set).
_TIME_ERROR = 5
# struct timex is about 208 bytes on 64-bit Linux; a larger zeroed buffer leaves room for padding
# and future fields. ``modes`` is its first member, and modes=0 makes the call read-only.
_TIMEX_BUFFER_SIZE = 512
_SYNC_CACHE_S = 5.0
_BEHIND_WARN_EVERY_S = 3600.0  # the ERROR line of a system clock behind the floor
_HLC_LOGICAL_BITS = 16
# SQLite stores INTEGER as signed 64-bit; an HLC must fit in a journal column.
_HLC_MAX = (1 << 63) - 1
_UUID7_MAX_MS = (1 << 48) - 1

Assume = Literal["auto", "synced", "unsynced"]
Source = Literal["config", "ntp", "hub", "none"]
# A reference time (the hub's) is carried forward on the monotonic clock for this long after the
# last sample: a board's oscillator drifts by well under a second in that time.
REFERENCE_MAX_AGE_S = 6 * 3600.0


@functools.cache
def _adjtimex() -> Callable[[ctypes.Array[ctypes.c_char]], int] | None:
    """The libc ``adjtimex`` function, loaded on first use (never at import time)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func: Callable[[ctypes.Array[ctypes.c_char]], int] = libc.adjtimex
    except (OSError, AttributeError):
        return None
    return func


def system_clock_synced() -> bool | None:
    """Whether the kernel considers the system clock synchronised (NTP/chrony/timesyncd).

    Uses a read-only ``adjtimex(2)`` call. Returns ``None`` when it cannot tell (not Linux, the call
    is blocked, e.g. by a container's seccomp profile). Never raises.
    """
    try:
        func = _adjtimex()
        if func is None:
            return None
        buf = ctypes.create_string_buffer(_TIMEX_BUFFER_SIZE)
        state = int(func(buf))
    except Exception:  # any ctypes fault means "cannot tell", never a crash of the scan path
        log.debug("adjtimex failed", exc_info=True)
        return None
    if state == -1:
        return None
    return state != _TIME_ERROR


@functools.cache
def boot_id() -> str:
    """This boot's id from the kernel, or a random id fixed for this process if unavailable.

    Stamped on journal rows so that ``mono_ns`` values can be compared only within one boot.
    """
    try:
        text = _BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return text or str(uuid.uuid4())


def uuid7(unix_ms: int) -> uuid.UUID:
    """An RFC 9562 UUIDv7: 48-bit Unix milliseconds, version 7, variant ``10``, 74 random bits.

    Raises ValueError when ``unix_ms`` does not fit in 48 unsigned bits.
    """
    if not 0 <= unix_ms <= _UUID7_MAX_MS:
        raise ValueError(f"unix_ms out of range for UUIDv7: {unix_ms}")
    rand_a = secrets.randbits(12)
    rand_b = secrets.randbits(62)
    value = (unix_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


@dataclass(frozen=True, slots=True)
class ClockReading:
    """One consistent observation: the (floored) time and whether it can be trusted."""

    now: float
    synced: bool
    source: Source = field(default="none", compare=False)  # where a trusted time came from


class Clock:
    """Wall time that never goes below a persisted floor, plus a trust verdict for it.

    ``assume`` lets the config override detection ("synced" for boards with a GPS/PTP source the
    kernel does not know about, "unsynced" to never trust the clock). ``probe`` is the sync
    detector (injectable for tests). ``tolerance_s`` is how far the wall clock may sit behind the
    floor and still count as synced: NTP steps back by milliseconds and the floor is raised from
    other sources (the hub), so an exact comparison would flap.
    """

    def __init__(
        self,
        floor_path: Path | None = None,
        *,
        assume: Assume = "auto",
        wall: Callable[[], float] = time.time,
        persist_interval_s: float = 60.0,
        probe: Callable[[], bool | None] = system_clock_synced,
        tolerance_s: float = 1.0,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        if assume not in ("auto", "synced", "unsynced"):
            raise ValueError(f"assume must be auto, synced or unsynced, not {assume!r}")
        self._path = floor_path
        self._assume: Assume = assume
        self._wall = wall
        self._interval = persist_interval_s
        self._probe = probe
        self._tolerance = tolerance_s
        self._floor = _load_floor(floor_path) if floor_path is not None else 0.0
        self._persisted = self._floor
        self._last_persist = -math.inf
        self._probe_value: bool | None = None
        self._probe_at = -math.inf
        self._probe_warned = False
        self._mono = mono
        self._reference: tuple[float, float] | None = None  # (trusted time, monotonic then)
        self._reference_offset: float | None = None  # reference minus the wall clock, seconds
        self._behind_warned_at = -math.inf

    @property
    def floor(self) -> float:
        """The lowest time :meth:`now` will ever return (Unix seconds)."""
        return self._floor

    def now(self) -> float:
        """The time (see :meth:`reading`), never below the floor."""
        return self.reading().now

    def synced(self) -> bool:
        """Whether the time from :meth:`now` can be trusted for validity windows."""
        return self.reading().synced

    def wall(self) -> float:
        """The system clock as it is (no floor, no reference): what offsets are measured from."""
        return self._wall()

    def source(self) -> Source:
        """Where the trusted time comes from now: config, ntp, hub, or none (untrusted)."""
        return self.reading().source

    @property
    def reference_offset(self) -> float | None:
        """The last reference time (the hub's) minus the system clock, seconds; None before one."""
        return self._reference_offset

    def set_reference(self, t: float, *, trusted: bool = True) -> None:
        """The hub's time is ``t`` at this moment; ``trusted`` when the answer came over TLS.

        Its offset from the system clock is always kept (:attr:`reference_offset`, for status).
        A trusted one is used while the system clock is not synchronised, for
        REFERENCE_MAX_AGE_S after the last call, carried forward on the monotonic clock (immune to
        steps of the wall clock). Never raises the floor itself. Non-finite values are ignored.
        """
        if not math.isfinite(t):
            return
        self._reference_offset = t - self._wall()
        if trusted:
            self._reference = (t, self._mono())

    def reading(self) -> ClockReading:
        """The time and its trust verdict from a single sample of the sources.

        The floor is a time a trusted clock gave before. A system clock said to be synchronised
        (by the config or the kernel) but behind it contradicts it: one of them ran ahead, so
        the system clock is not trusted then (an ERROR line says so, once an hour; trusted, the
        gate's time would stand still at the floor with nothing said). An unsynchronised clock
        behind the floor is what the floor is for (a board without a battery at boot). A hub's
        time is never below the floor: a hub set back cannot take the gate's time back, nor
        make it untrusted (a policy that ignores validity windows then would let it open them).
        """
        wall = self._wall()
        floor = self._floor
        claimed = self._said_synced()
        if claimed and wall >= floor - self._tolerance:
            return ClockReading(
                max(wall, floor), True, "config" if self._assume == "synced" else "ntp"
            )
        if claimed:
            self._warn_behind(wall)
        if self._reference is not None:
            t, at = self._reference
            age = self._mono() - at
            if 0 <= age <= REFERENCE_MAX_AGE_S:
                return ClockReading(max(t + age, floor), True, "hub")
        return ClockReading(max(wall, floor), False, "none")

    def raise_floor(self, t: float) -> None:
        """Raise the floor to ``t`` (never lowers it; non-finite values are ignored).

        Persists at most every ``persist_interval_s``; a failed write is logged and retried at the
        next raise, since the in-memory floor still protects this process.
        """
        if not math.isfinite(t) or t <= self._floor:
            return
        self._floor = t
        if self._path is not None and time.monotonic() - self._last_persist >= self._interval:
            self._persist_logged()

    def persist(self) -> None:
        """Write the floor to its file now (at shutdown). Failures are logged, never raised:
        losing the floor file only weakens the check after the next cold boot."""
        if self._path is not None:
            self._persist_logged()

    def behind_floor(self) -> float | None:
        """How far a system clock said to be synchronised is behind the floor, in seconds; None
        when it is not (within the tolerance), or is not said to be synchronised."""
        behind = self._floor - self._wall()
        return behind if self._said_synced() and behind > self._tolerance else None

    def _said_synced(self) -> bool:
        """Whether the config or the kernel says the system clock is synchronised."""
        return self._assume == "synced" or (self._assume == "auto" and self._probe_cached() is True)

    def _warn_behind(self, wall: float) -> None:
        mono = self._mono()
        if mono - self._behind_warned_at < _BEHIND_WARN_EVERY_S:
            return
        self._behind_warned_at = mono
        log.error(
            "the system clock, said to be synchronised, is %.0f s behind the clock floor (%s, the"
            " latest trusted time seen: one of them ran ahead): it is not trusted until it passes"
            " the floor, and the gate's time stays at the floor; see the README, \"A clock floor"
            " ahead\"",
            self._floor - wall, self._path or "not persisted",
        )  # fmt: skip

    def _probe_cached(self) -> bool | None:
        # adjtimex is a syscall on the scan path; the kernel's sync state changes slowly.
        mono = time.monotonic()
        if mono - self._probe_at >= _SYNC_CACHE_S:
            self._probe_value = self._probe()
            self._probe_at = mono
            if self._probe_value is None and not self._probe_warned:
                self._probe_warned = True
                log.warning(
                    "cannot tell whether the system clock is synchronised; treating it "
                    "as unsynchronised (set the clock assumption in config to override)"
                )
        return self._probe_value

    def _persist_logged(self) -> None:
        assert self._path is not None
        self._last_persist = time.monotonic()
        if self._floor <= self._persisted:
            return
        try:
            write_atomic(self._path, f"{self._floor:.6f}\n".encode("ascii"))
        except OSError as exc:
            log.warning("cannot persist the clock floor to %s: %s", self._path, exc)
            return
        self._persisted = self._floor


def _load_floor(path: Path) -> float:
    """The floor stored in ``path``, or 0.0 when the file is missing or unreadable (logged)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0.0
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the clock floor from %s: %s", path, exc)
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        log.warning("ignoring a malformed clock floor in %s", path)
        return 0.0
    return value


HLC_MAX_AHEAD_S = 300.0  # default bound of a peer's HLC (and a row's time) past the best time known
# 2200-01-01: no clock reads a time past this; an HLC beyond it was pushed there by a bogus row.
PLAUSIBLE_HLC_MS = 7_258_118_400_000


def plausible_hlc(hlc: int, wall_time: float) -> int:
    """``hlc``, or, when no clock could have produced it (past :data:`PLAUSIBLE_HLC_MS`: a bogus
    peer row followed before HLCs were bounded), the HLC of the row's ``wall_time``. Honest values
    pass unchanged, also those of a gate whose clock is behind (its HLC follows its peers)."""
    if HLC.physical_ms(hlc) > PLAUSIBLE_HLC_MS:
        return max(0, int(wall_time * 1000)) << _HLC_LOGICAL_BITS
    return hlc


class HLC:
    """A hybrid logical clock packed in one int: ``(physical_ms << 16) | logical``.

    Packed values compare like (physical, logical) pairs, so ``+ 1`` is the logical increment and a
    logical overflow carries into the physical part (a 1 ms bump), as intended.
    """

    def __init__(self, last: int = 0) -> None:
        _check_hlc(last)
        self._last = last

    @property
    def last(self) -> int:
        """The most recent value issued or observed."""
        return self._last

    def tick(self, wall_ms: int) -> int:
        """A new value for a local or send event; strictly greater than every earlier one."""
        physical = wall_ms << _HLC_LOGICAL_BITS
        self._last = physical if physical > self._last else self._last + 1
        _check_hlc(self._last)
        return self._last

    def observe(self, remote: int, wall_ms: int) -> int:
        """A new value for a receive event; greater than both ``remote`` and every earlier value.

        Raises ValueError when ``remote`` is not a valid packed HLC.
        """
        _check_hlc(remote)
        physical = wall_ms << _HLC_LOGICAL_BITS
        top = max(self._last, remote)
        self._last = physical if physical > top else top + 1
        _check_hlc(self._last)
        return self._last

    @staticmethod
    def physical_ms(h: int) -> int:
        """The physical (Unix milliseconds) part of a packed HLC value."""
        return h >> _HLC_LOGICAL_BITS

    @staticmethod
    def at_ms(wall_ms: int) -> int:
        """The first packed value of Unix millisecond ``wall_ms`` (logical part 0)."""
        return wall_ms << _HLC_LOGICAL_BITS


def _check_hlc(value: int) -> None:
    if not 0 <= value <= _HLC_MAX:
        raise ValueError(f"HLC value out of range: {value}")
