"""GPIO plumbing shared by :mod:`drivers.gpio` (gate I/O) and :mod:`drivers.indicators` (LEDs).

- :class:`LineSpec` and :func:`parse_line_id`: which line plays which role, found by name
  (``GPIO17``) or by offset (``17``), with its polarity and bias; :func:`output_specs` and
  :func:`check_distinct` read the output roles of a driver URL.
- :class:`Lines`: one libgpiod v2 request for all roles of a driver. Outputs are requested
  already inactive (no glitch at start), :meth:`Lines.release` sets them inactive before releasing
  and is registered with :mod:`atexit`, so an interpreter that exits without ``close()`` still
  leaves the relay de-energised. (Nothing in user space survives SIGKILL or a power cut: wire the
  relay fail-safe, normally open.)
- :class:`Debouncer`: pure debounce of edge events by their kernel timestamps.

Polarity is left to the kernel (``LineSettings.active_low``): values and edge events are logical,
so "active" always means "relay energised" / "contact reports its condition". The gpiod library is
imported only when lines are requested; tests inject a chip factory (:data:`ChipFactory`) whose
objects speak gpiod's own types (``LineSettings``, ``line.Value``, ``EdgeEvent``).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from agent.errors import DriverError
from drivers.url_params import UrlParams

if TYPE_CHECKING:
    from gpiod import EdgeEvent, LineSettings
    from gpiod.line import Value

log = logging.getLogger(__name__)

BIASES = ("as_is", "disabled", "pull_up", "pull_down")
_LINE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_CHIP_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class RequestLike(Protocol):
    """What the drivers use of ``gpiod.LineRequest``."""

    @property
    def fd(self) -> int: ...

    def get_value(self, line: int | str) -> Value: ...

    def set_value(self, line: int | str, value: Value) -> None: ...

    def read_edge_events(self, max_events: int | None = None) -> list[EdgeEvent]: ...

    def release(self) -> None: ...


class ChipLike(Protocol):
    """What the drivers use of ``gpiod.Chip``."""

    def line_offset_from_id(self, id: str | int) -> int: ...

    def request_lines(
        self,
        config: dict[Iterable[int | str] | int | str, LineSettings | None],
        consumer: str | None = None,
        event_buffer_size: int | None = None,
        output_values: dict[int | str, Value] | None = None,
    ) -> RequestLike: ...

    def close(self) -> None: ...


ChipFactory = Callable[[str], ChipLike]


def gpiod_chip(path: str) -> ChipLike:
    """Open ``path`` with the gpiod (libgpiod v2) bindings.

    Raises DriverError when the library is missing (a startup error: no silent simulation);
    OSError from the library passes through for :func:`os_hint`.
    """
    try:
        import gpiod
    except ImportError as exc:
        raise DriverError(
            "gpio: the libgpiod v2 Python bindings are not installed (pip install 'gpiod>=2')"
        ) from exc
    return gpiod.Chip(path)


def os_hint(exc: OSError) -> str:
    """The fix a person needs for a GPIO OSError."""
    hints = {
        errno.ENOENT: "no such device (list chips with: gpiodetect or ls /dev/gpiochip*)",
        errno.EACCES: "permission denied: add the service user to group 'gpio' (or a udev rule)",
        errno.EPERM: "permission denied: add the service user to group 'gpio' (or a udev rule)",
        errno.EBUSY: "line busy: another process holds it (gpioinfo shows the consumer)",
        errno.ENOTTY: "not a GPIO character device",
    }
    return hints.get(exc.errno or 0, exc.strerror or str(exc))


def parse_chip(netloc: str, path: str, url: str) -> str:
    """``gpio://gpiochip0`` -> ``/dev/gpiochip0``; ``gpio:///dev/gpiochip4`` as given."""
    if netloc and path in ("", "/"):
        if not _CHIP_NAME.fullmatch(netloc):
            raise DriverError(f"{url}: chip must be a name like gpiochip0, not {netloc!r}")
        return f"/dev/{netloc}"
    if not netloc and path.startswith("/dev/") and len(path) > 5:
        return path
    raise DriverError(f"{url}: name the chip as gpio://gpiochip0 or gpio:///dev/gpiochip0")


def parse_line_id(value: str | None, name: str, url: str) -> str:
    """A line name (``GPIO17``) or offset (``17``) as given for parameter ``name``."""
    if value is None or not _LINE_ID.fullmatch(value):
        raise DriverError(
            f"{url}: {name} must be a line name (GPIO17) or offset (17), not {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class LineSpec:
    """One role's line: where it is, which way, and when it counts as active."""

    line: str
    output: bool
    active_low: bool = False
    bias: str = "as_is"  # inputs only; one of BIASES


def output_specs(p: UrlParams, roles: Iterable[str], active: str) -> dict[str, LineSpec]:
    """The outputs named in ``p`` (``role=LINE``) among ``roles``, in that order; each active
    ``high`` or ``low`` as ``<role>_active`` says (default ``active``). Raises DriverError naming
    the bad parameter."""
    outputs: dict[str, LineSpec] = {}
    for role in roles:
        low = p.choice(f"{role}_active", active, ("high", "low")) == "low"
        line = p.text(role)
        if line is not None:
            outputs[role] = LineSpec(parse_line_id(line, role, p.url), True, low)
    return outputs


def check_distinct(p: UrlParams, specs: Iterable[LineSpec]) -> None:
    """Raise DriverError about ``p``'s URL when two roles name the same line."""
    lines = [spec.line for spec in specs]
    if len(set(lines)) != len(lines):
        raise p.error("each role needs its own line (a line is named twice)")


def line_settings(spec: LineSpec) -> LineSettings:
    """The gpiod settings for ``spec``: outputs start inactive; inputs report both edges with
    monotonic kernel timestamps."""
    from gpiod import LineSettings
    from gpiod.line import Bias, Clock, Direction, Edge, Value

    if spec.output:
        return LineSettings(
            direction=Direction.OUTPUT, active_low=spec.active_low, output_value=Value.INACTIVE
        )
    bias = {
        "as_is": Bias.AS_IS,
        "disabled": Bias.DISABLED,
        "pull_up": Bias.PULL_UP,
        "pull_down": Bias.PULL_DOWN,
    }[spec.bias]
    return LineSettings(
        direction=Direction.INPUT,
        edge_detection=Edge.BOTH,
        bias=bias,
        active_low=spec.active_low,
        event_clock=Clock.MONOTONIC,
    )


class Lines:
    """A live request of named roles on one chip. Not thread-safe: used from the event loop."""

    def __init__(
        self, chip: str, request: RequestLike, offsets: Mapping[str, int], outputs: Iterable[str]
    ) -> None:
        self.chip = chip
        self.offsets = dict(offsets)
        self.outputs = tuple(outputs)
        self._request: RequestLike | None = request
        self._roles = {offset: role for role, offset in self.offsets.items()}
        atexit.register(self.release)

    @classmethod
    def request(
        cls, chip: str, specs: Mapping[str, LineSpec], consumer: str, factory: ChipFactory
    ) -> Lines:
        """Resolve every role's line and request them all at once.

        Raises DriverError naming the chip, the role and the fix (no chip, no such line, two roles
        on one line, line busy, permission denied, library missing).
        """
        try:
            handle = factory(chip)
        except OSError as exc:
            raise DriverError(f"gpio: cannot open {chip}: {os_hint(exc)}") from exc
        try:
            offsets = {
                role: _resolve(handle, chip, role, spec.line) for role, spec in specs.items()
            }
            roles_of: dict[int, str] = {}
            for role, offset in offsets.items():
                if offset in roles_of:
                    raise DriverError(
                        f"gpio: {chip}: {roles_of[offset]} and {role} are the same line {offset}"
                    )
                roles_of[offset] = role
            config: dict[Iterable[int | str] | int | str, LineSettings | None] = {
                offsets[role]: line_settings(spec) for role, spec in specs.items()
            }
            try:
                request = handle.request_lines(config, consumer=consumer)
            except OSError as exc:
                raise DriverError(f"gpio: {chip}: cannot request lines: {os_hint(exc)}") from exc
            except ValueError as exc:
                raise DriverError(f"gpio: {chip}: cannot request lines: {exc}") from exc
        finally:
            handle.close()
        outputs = [role for role, spec in specs.items() if spec.output]
        log.info("gpio: %s lines %s", chip, ", ".join(f"{r}={o}" for r, o in offsets.items()))
        return cls(chip, request, offsets, outputs)

    @property
    def live(self) -> bool:
        return self._request is not None

    @property
    def fd(self) -> int:
        return self._live().fd

    def role(self, offset: int) -> str | None:
        return self._roles.get(offset)

    def set(self, role: str, active: bool) -> None:
        """Drive output ``role`` (logical). Raises DriverError when the line cannot be set."""
        from gpiod.line import Value

        try:
            self._live().set_value(self.offsets[role], Value.ACTIVE if active else Value.INACTIVE)
        except OSError as exc:
            raise DriverError(f"gpio: {self.chip}: cannot set {role}: {os_hint(exc)}") from exc

    def get(self, role: str) -> bool:
        """The logical level of ``role``. Raises DriverError when it cannot be read."""
        from gpiod.line import Value

        try:
            return self._live().get_value(self.offsets[role]) is Value.ACTIVE
        except OSError as exc:
            raise DriverError(f"gpio: {self.chip}: cannot read {role}: {os_hint(exc)}") from exc

    def read_edges(self) -> list[EdgeEvent]:
        """Edge events ready on the request's fd. Raises DriverError on a read error."""
        try:
            return self._live().read_edge_events()
        except OSError as exc:
            raise DriverError(f"gpio: {self.chip}: reading edge events: {os_hint(exc)}") from exc

    def off(self, role: str) -> bool:
        """Best effort: set ``role`` inactive, retrying once; True when it took. Never raises."""
        for attempt in (1, 2):
            try:
                self.set(role, False)
                return True
            except DriverError as exc:
                log.error("%s (attempt %d)", exc, attempt)
        return False

    def release(self) -> None:
        """Set every output inactive (best effort), then release the lines. Idempotent."""
        atexit.unregister(self.release)
        if self._request is None:
            return
        for role in self.outputs:
            self.off(role)
        request, self._request = self._request, None
        with contextlib.suppress(OSError):
            request.release()

    def _live(self) -> RequestLike:
        if self._request is None:
            raise DriverError(f"gpio: {self.chip}: lines already released")
        return self._request


def _resolve(chip: ChipLike, path: str, role: str, line: str) -> int:
    try:
        return chip.line_offset_from_id(line)
    except (OSError, ValueError) as exc:
        raise DriverError(f"gpio: {path}: {role}={line}: no line with that name or offset") from exc


class Debouncer:
    """Debounce one input from its edge events, timed by the events' own timestamps.

    A level counts once it has held for ``period_ns`` after its last edge; a pulse shorter than
    the period (contact bounce, a glitch) is never reported. With a period of 0 every edge counts.
    Pure: no clock, no I/O; the caller feeds edges and asks :meth:`settle` when a deadline passed.
    """

    def __init__(self, period_ns: int, state: bool = False) -> None:
        if period_ns < 0:
            raise ValueError("period_ns must be >= 0")
        self.period_ns = period_ns
        self.state = state
        self.changed_ns: int | None = None
        self._pending: bool | None = None
        self._edge_ns = 0

    @property
    def deadline_ns(self) -> int | None:
        """When the pending level will have held long enough; None when nothing is pending."""
        return None if self._pending is None else self._edge_ns + self.period_ns

    def edge(self, active: bool, t_ns: int) -> list[tuple[bool, int]]:
        """Feed the level after an edge at ``t_ns``; returns the stable changes this confirms as
        ``(state, edge time)``: the previous level if it had held for the period, and with a zero
        period this one."""
        changes = self.settle(t_ns)
        self._pending, self._edge_ns = active, t_ns
        if self.period_ns == 0:
            changes += self.settle(t_ns)
        return changes

    def settle(self, now_ns: int) -> list[tuple[bool, int]]:
        """Commit the pending level if it has held for the period at ``now_ns``."""
        if self._pending is None or now_ns < self._edge_ns + self.period_ns:
            return []
        level, self._pending = self._pending, None
        if level == self.state:
            return []
        self.state, self.changed_ns = level, self._edge_ns
        return [(level, self._edge_ns)]
