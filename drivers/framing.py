"""Serial scanner framing: bytes in, frames out. Pure: no I/O and no clock of its own.

A :class:`Framer` is fed raw bytes with the monotonic time they arrived and returns the frames
they complete. The caller owns the clock, so the same bytes at the same times always give the same
frames, however the stream is split into chunks.

Framing rules (all accepted at once, so a scanner needs no framing setting here):

- a frame ends with CR, LF or CRLF (empty lines are ignored, so the LF of a CRLF is harmless);
- or it is wrapped STX (0x02) .. ETX (0x03); CR/LF just before the ETX (a scanner configured with
  both a wrapper and a CR suffix) is stripped; an STX always starts a new frame, so a half frame
  before it is dropped; an ETX with no STX before it drops what was gathered;
- a frame longer than ``max_frame`` bytes (between its delimiters) is dropped whole, including the
  rest of it up to its terminator;
- a frame with any byte outside 0x20-0x7E (after the delimiters are removed) is refused;
- a half frame that sees no byte for ``idle_ns`` is dropped (a cable pulled mid-frame, noise);
- a frame equal to a no-read string (``NR``, ``%%NoRead``) is dropped, with or without AIM id;
- an AIM symbology identifier (ISO/IEC 15424: ``]`` + code character + modifier character, e.g.
  ``]Q1`` QR, ``]z0`` Aztec, ``]L2`` PDF417, ``]d1`` DataMatrix) is stripped and mapped to
  :attr:`Frame.symbology`; an allow-list keeps only the listed ids (``Q1`` matches that id exactly,
  ``z`` any Aztec modifier); ``require_aim`` drops frames that carry none;
- exact byte sequences listed in ``discard`` (a vendor's reply to a feedback command, such as the
  Zebra SSI CMD_ACK packet) are skipped when they arrive between frames.

Dropped frames are counted in :attr:`Framer.drops` per :class:`DropReason` and logged with their
length only: scanned text is a bearer credential and never reaches a log. A code the scanner read
in full but this framing refuses (too long, not printable, an AIM id not allowed or missing) also
comes out as a :class:`Frame` without text whose ``refused`` says why, so the lane can tell the
staff (the code was read, it is not a ticket) instead of staying silent.
"""

from __future__ import annotations

import enum
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.ports import too_long
from agent.redact import bytes_digest

log = logging.getLogger(__name__)

STX, ETX, CR, LF = 0x02, 0x03, 0x0D, 0x0A

AIM_SYMBOLOGIES = {
    "Q": "qr",
    "z": "aztec",
    "L": "pdf417",
    "d": "datamatrix",
    "A": "code39",
    "C": "code128",
    "E": "ean-upc",
    "e": "gs1-databar",
    "I": "itf",
}
"""AIM code characters (ISO/IEC 15424) mapped to :attr:`Frame.symbology`; others are
``"aim-<code>"``."""

DEFAULT_NOREAD = frozenset({"NR", "%%NoRead"})
WARN_INTERVAL_NS = 1_000_000_000  # at most one warning per drop reason per second

_SPECIAL = re.compile(rb"[\x02\x03\r\n]")
_NON_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
_AIM = re.compile(r"\]([A-Za-z])([0-9A-Za-z])")
_AIM_ENTRY = re.compile(r"[A-Za-z][0-9A-Za-z]?")


class DropReason(enum.StrEnum):
    """Why bytes did not become a frame (counted for health, logged without content)."""

    TOO_LONG = "too_long"
    NON_PRINTABLE = "non_printable"
    UNTERMINATED = "unterminated"  # a new STX arrived before the frame ended
    UNFRAMED = "unframed"  # an ETX arrived without an STX
    IDLE = "idle"  # half frame, then silence for idle_ns
    DISCONNECTED = "disconnected"  # half frame when the device went away
    NO_READ = "no_read"
    AIM_NOT_ALLOWED = "aim_not_allowed"
    AIM_MISSING = "aim_missing"
    EMPTY = "empty"  # only an AIM id


UNFRAMED_READ = "a code ended by ETX without its STX (check the reader's prefix and suffix)"

# Reasons that refuse a frame the scanner finished sending (as opposed to a half frame).
COMPLETE_FRAME_DROPS = frozenset(
    {
        DropReason.TOO_LONG,
        DropReason.NON_PRINTABLE,
        DropReason.UNFRAMED,
        DropReason.NO_READ,
        DropReason.AIM_NOT_ALLOWED,
        DropReason.AIM_MISSING,
        DropReason.EMPTY,
    }
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One correctly framed read: the text without AIM id, its symbology and arrival time."""

    text: str = field(repr=False)  # a bearer credential: never in a repr or a log
    symbology: str | None
    aim: str | None  # the AIM id without "]", e.g. "Q1"
    mono_ns: int
    refused: str | None = None  # a code read but refused (text empty): why, without its content


@dataclass(frozen=True, slots=True)
class FramingConfig:
    """Limits and filters of a :class:`Framer`; raises ValueError when one is out of range.

    ``aim_allow`` None accepts every AIM id; ``idle_ns`` 0 disables the idle timeout.
    """

    max_frame: int = 1024
    idle_ns: int = 300_000_000
    aim_allow: frozenset[str] | None = None
    require_aim: bool = False
    noread: frozenset[str] = DEFAULT_NOREAD
    discard: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.max_frame <= 65536:
            raise ValueError(f"max_frame must be 1..65536, got {self.max_frame}")
        if self.idle_ns < 0:
            raise ValueError(f"idle_ns must be >= 0, got {self.idle_ns}")
        for entry in self.aim_allow or ():
            if not _AIM_ENTRY.fullmatch(entry):
                raise ValueError(f"AIM allow-list entry {entry!r} is not <letter>[<modifier>]")
        if any(not seq for seq in self.discard):
            raise ValueError("discard sequences must not be empty")


def symbology_of(code: str) -> str:
    """The symbology name for an AIM code character (``Q`` -> ``qr``)."""
    return AIM_SYMBOLOGIES.get(code, f"aim-{code}")


def parse_aim_allow(entries: Iterable[str]) -> frozenset[str]:
    """An AIM allow-list from ids such as ``Q1``, ``z`` or ``]L``; raises ValueError."""
    allow = frozenset(e.strip().removeprefix("]") for e in entries)
    for entry in allow:
        if not _AIM_ENTRY.fullmatch(entry):
            raise ValueError(f"{entry!r} is not an AIM id (<letter> or <letter><modifier>)")
    return allow


class Framer:
    """The framing state machine; see the module docstring for the rules.

    Not thread-safe: one owner (the device's reader task) feeds it.
    """

    def __init__(self, config: FramingConfig | None = None, *, name: str = "serial") -> None:
        self.config = config or FramingConfig()
        self.name = name
        self.drops: Counter[DropReason] = Counter()
        self.frames = 0
        self._buf = bytearray()
        self._wrapped = False  # inside STX .. ETX
        self._skipping = False  # inside an over-long frame: drop up to its terminator
        self._long = 0  # the over-long frame's length so far
        self._carry = b""  # a possible start of a discard sequence, held until more arrives
        self._last_ns = 0
        self._last_warn: dict[DropReason, int] = {}
        self._suppressed: Counter[DropReason] = Counter()

    @property
    def pending(self) -> bool:
        """True while a half frame (or a held partial discard sequence) is buffered."""
        return bool(self._buf or self._wrapped or self._skipping or self._carry)

    @property
    def rejected(self) -> int:
        """Frames refused whole: ones the scanner finished sending, and over-long ones whatever
        ended them (not half frames)."""
        return sum(n for reason, n in self.drops.items() if reason in COMPLETE_FRAME_DROPS)

    def deadline_ns(self) -> int | None:
        """When the buffered half frame expires, or None when nothing is pending."""
        if not self.pending or not self.config.idle_ns:
            return None
        return self._last_ns + self.config.idle_ns

    def expire(self, now_ns: int) -> bool:
        """Drop the half frame if it has been idle too long; True when one was dropped."""
        deadline = self.deadline_ns()
        if deadline is None or now_ns < deadline:
            return False
        self._drop_partial(DropReason.IDLE, now_ns)
        return True

    def reset(self, now_ns: int, reason: DropReason = DropReason.DISCONNECTED) -> None:
        """Forget any half frame (the device went away); counted under ``reason``."""
        if self.pending:
            self._drop_partial(reason, now_ns)

    def feed(self, data: bytes, now_ns: int) -> list[Frame]:
        """Take bytes that arrived at ``now_ns`` (monotonic); return the frames they complete."""
        if not data:
            return []
        self.expire(now_ns)
        if self._carry:
            data, self._carry = self._carry + data, b""
        out: list[Frame] = []
        pos, end = 0, len(data)
        while pos < end:
            if self.config.discard and not self.pending:
                pos = self._skip_discards(data, pos)
                if pos >= end:
                    break
            match = _SPECIAL.search(data, pos)
            stop = end if match is None else match.start()
            if stop > pos:
                self._take(data, pos, stop, now_ns)
            if match is None:
                break
            self._special(data[stop], now_ns, out)
            pos = stop + 1
        if self.pending:
            self._last_ns = now_ns
        self.frames += sum(frame.refused is None for frame in out)
        return out

    def _skip_discards(self, data: bytes, pos: int) -> int:
        """Skip discard sequences at ``pos``; hold a trailing prefix of one in the carry."""
        skipped = True
        while skipped and pos < len(data):
            skipped = False
            for seq in self.config.discard:
                if data.startswith(seq, pos):
                    pos += len(seq)
                    skipped = True
                    break
                rest = data[pos:]
                if len(rest) < len(seq) and seq.startswith(rest):
                    self._carry = rest
                    return len(data)
        return pos

    def _take(self, data: bytes, start: int, stop: int, now_ns: int) -> None:
        """Append ``data[start:stop]`` (no delimiters in it) to the frame being gathered."""
        if self._skipping:
            self._long += stop - start
            return
        size = len(self._buf) + stop - start
        if size > self.config.max_frame:  # counted when it ends: one read, one drop
            self._buf.clear()
            self._skipping, self._long = True, size
            return
        self._buf += data[start:stop]

    def _special(self, byte: int, now_ns: int, out: list[Frame]) -> None:
        if byte == STX:
            if self._skipping:
                self._note(DropReason.TOO_LONG, self._long, now_ns)
            elif self._buf:
                self._note(DropReason.UNTERMINATED, len(self._buf), now_ns)
            self._clear()
            self._wrapped = True
        elif byte == ETX:
            if self._wrapped:
                if self._skipping:
                    self._refuse_long(now_ns, out)
                else:
                    self._finish(bytes(self._buf).rstrip(b"\r\n"), now_ns, out)
                self._clear()
            elif self._buf and not self._skipping:
                # A read the scanner finished (an ETX suffix without its STX prefix: the reader's
                # framing is off, or noise): refused with a reason, so the staff see it was read.
                self._note(DropReason.UNFRAMED, len(self._buf), now_ns)
                out.append(Frame("", None, None, now_ns, UNFRAMED_READ))
                self._clear()
        elif self._wrapped:  # CR or LF inside STX .. ETX: data, checked at the end
            self._take(bytes((byte,)), 0, 1, now_ns)
        elif self._skipping:  # the terminator of an over-long line
            self._refuse_long(now_ns, out)
            self._clear()
        elif self._buf:
            self._finish(bytes(self._buf), now_ns, out)
            self._clear()

    def _refuse_long(self, now_ns: int, out: list[Frame]) -> None:
        """The end of an over-long frame: a refused read, with its length."""
        self._note(DropReason.TOO_LONG, self._long, now_ns)
        out.append(Frame("", None, None, now_ns, too_long(self._long, self.config.max_frame)))

    def _finish(self, raw: bytes, now_ns: int, out: list[Frame]) -> None:
        """Turn one correctly framed payload into a Frame, or drop it."""
        if not raw:
            return
        if _NON_PRINTABLE.search(raw):
            self._note(DropReason.NON_PRINTABLE, len(raw), now_ns, raw)
            out.append(Frame("", None, None, now_ns, "a code with characters that are not text"))
            return
        text = raw.decode("ascii")
        cfg = self.config
        aim: str | None = None
        match = _AIM.match(text)
        if text in cfg.noread:
            self._note(DropReason.NO_READ, len(raw), now_ns)
            return
        if match is not None:
            aim, text = match.group(1) + match.group(2), text[3:]
            allow = cfg.aim_allow
            if allow is not None and aim not in allow and aim[0] not in allow:
                self._note(DropReason.AIM_NOT_ALLOWED, len(raw), now_ns, raw, aim)
                why = f"a {symbology_of(aim[0])} code (AIM ]{aim}), not one this reader takes"
                out.append(Frame("", None, None, now_ns, why))
                return
        elif cfg.require_aim:
            self._note(DropReason.AIM_MISSING, len(raw), now_ns, raw)
            why = "a code without the AIM id this reader requires"
            out.append(Frame("", None, None, now_ns, why))
            return
        if not text:
            self._note(DropReason.EMPTY, len(raw), now_ns)
            return
        if text in cfg.noread:
            self._note(DropReason.NO_READ, len(raw), now_ns)
            return
        symbology = symbology_of(aim[0]) if aim is not None else None
        out.append(Frame(text, symbology, aim, now_ns))

    def _clear(self) -> None:
        self._buf.clear()
        self._wrapped = self._skipping = False

    def _drop_partial(self, reason: DropReason, now_ns: int) -> None:
        size = len(self._buf) + len(self._carry)
        if self._skipping:  # an over-long frame that never ended
            self._note(DropReason.TOO_LONG, self._long, now_ns)
        elif self._buf or self._wrapped or self._carry:
            self._note(reason, size, now_ns)
        self._clear()
        self._carry = b""

    def _note(
        self,
        reason: DropReason,
        size: int,
        now_ns: int,
        raw: bytes | None = None,
        aim: str | None = None,
    ) -> None:
        """Count a drop; warn at most once a second per reason (no-reads only at DEBUG)."""
        self.drops[reason] += 1
        what = f" digest={bytes_digest(raw)}" if raw is not None else ""
        what += f" aim=]{aim}" if aim is not None else ""
        last = self._last_warn.get(reason)
        if reason is DropReason.NO_READ or (last is not None and now_ns - last < WARN_INTERVAL_NS):
            if reason is not DropReason.NO_READ:
                self._suppressed[reason] += 1
            log.debug("%s: dropped frame (%s, %d bytes)%s", self.name, reason, size, what)
            return
        self._last_warn[reason] = now_ns
        more = self._suppressed.pop(reason, 0)
        log.warning(
            "%s: dropped frame (%s, %d bytes)%s%s",
            self.name,
            reason,
            size,
            what,
            f"; {more} more since the last warning" if more else "",
        )
