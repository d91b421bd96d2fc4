"""Keyboard-wedge decoding, pure: Linux key events -> characters -> frames ended by Enter.

A keyboard-wedge scanner types what it read, one key press per character, on the layout it was
configured for. This module assumes the scanner is set to the **US keyboard layout** (the factory
default of nearly all models) and to send **Enter** after each code. Key codes are the kernel's
(``linux/input-event-codes.h``, a stable ABI), so this module needs no evdev import; the tests check
the table against ``evdev.ecodes``.

Limits, as for serial scanners: a frame longer than ``max_frame`` characters is dropped whole (up
to its Enter); a pause longer than ``idle_ms`` inside a frame drops the half frame; a key with no
printable ASCII character (0x20-0x7E) - a function key, Tab, Ctrl/Alt/Meta held, an unmapped key -
refuses the frame; no-read strings are dropped; empty frames are ignored. Dropped frames are logged
with their reason and length, never their text. A frame typed in full but refused (too long, a key
that is not text) comes out as :class:`Refused`, so the lane can tell the staff.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from agent.ports import too_long

log = logging.getLogger(__name__)

EV_KEY = 1
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2

# (kernel name, code, unshifted, shifted) for the US layout
KEYMAP_US: tuple[tuple[str, int, str, str], ...] = (
    *(
        (f"KEY_{c}", code, c, s)
        for c, code, s in zip("1234567890", range(2, 12), "!@#$%^&*()", strict=True)
    ),
    ("KEY_MINUS", 12, "-", "_"),
    ("KEY_EQUAL", 13, "=", "+"),
    *(
        (f"KEY_{c.upper()}", code, c, c.upper())
        for c, code in zip("qwertyuiop", range(16, 26), strict=True)
    ),
    ("KEY_LEFTBRACE", 26, "[", "{"),
    ("KEY_RIGHTBRACE", 27, "]", "}"),
    *(
        (f"KEY_{c.upper()}", code, c, c.upper())
        for c, code in zip("asdfghjkl", range(30, 39), strict=True)
    ),
    ("KEY_SEMICOLON", 39, ";", ":"),
    ("KEY_APOSTROPHE", 40, "'", '"'),
    ("KEY_GRAVE", 41, "`", "~"),
    ("KEY_BACKSLASH", 43, "\\", "|"),
    *(
        (f"KEY_{c.upper()}", code, c, c.upper())
        for c, code in zip("zxcvbnm", range(44, 51), strict=True)
    ),
    ("KEY_COMMA", 51, ",", "<"),
    ("KEY_DOT", 52, ".", ">"),
    ("KEY_SLASH", 53, "/", "?"),
    ("KEY_SPACE", 57, " ", " "),
    # keypad (scanners set to "keypad emulation" for digits; NumLock assumed on)
    ("KEY_KPASTERISK", 55, "*", "*"),
    ("KEY_KP7", 71, "7", "7"),
    ("KEY_KP8", 72, "8", "8"),
    ("KEY_KP9", 73, "9", "9"),
    ("KEY_KPMINUS", 74, "-", "-"),
    ("KEY_KP4", 75, "4", "4"),
    ("KEY_KP5", 76, "5", "5"),
    ("KEY_KP6", 77, "6", "6"),
    ("KEY_KPPLUS", 78, "+", "+"),
    ("KEY_KP1", 79, "1", "1"),
    ("KEY_KP2", 80, "2", "2"),
    ("KEY_KP3", 81, "3", "3"),
    ("KEY_KP0", 82, "0", "0"),
    ("KEY_KPDOT", 83, ".", "."),
    ("KEY_KPSLASH", 98, "/", "/"),
    ("KEY_KPEQUAL", 117, "=", "="),
)
CHARS: dict[int, tuple[str, str]] = {code: (lo, hi) for _, code, lo, hi in KEYMAP_US}
SHIFT = {42: "KEY_LEFTSHIFT", 54: "KEY_RIGHTSHIFT"}
BLOCKING_MODIFIERS = {  # held while a key is typed: not a printable character
    29: "KEY_LEFTCTRL",
    97: "KEY_RIGHTCTRL",
    56: "KEY_LEFTALT",
    100: "KEY_RIGHTALT",
    125: "KEY_LEFTMETA",
    126: "KEY_RIGHTMETA",
}
ENTER = {28: "KEY_ENTER", 96: "KEY_KPENTER"}
CAPSLOCK = (58, "KEY_CAPSLOCK")
NUMLOCK = (69, "KEY_NUMLOCK")


class KeyEventLike(Protocol):
    """What is read of ``evdev.InputEvent``."""

    type: int
    code: int
    value: int
    sec: int  # when the kernel received it
    usec: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A frame typed in full but refused: why, never its text."""

    why: str


class KeyFramer:
    """Turns a keyboard's key events into frames of text, one per Enter.

    ``feed`` returns the text of a complete, accepted frame, :class:`Refused` for a complete one
    it refuses (oversize, non_printable), else None. ``dropped`` counts the frames refused per
    reason (oversize, idle, non_printable, noread).
    """

    def __init__(
        self, max_frame: int = 1024, idle_ms: int = 300, noread: Iterable[str] = ()
    ) -> None:
        if max_frame < 1 or idle_ms < 1:
            raise ValueError("max_frame and idle_ms must be positive")
        self.max_frame = max_frame
        self.idle_ns = idle_ms * 1_000_000
        self.noread = frozenset(noread)
        self.dropped: Counter[str] = Counter()
        self._held: set[int] = set()  # modifier keys down
        self._caps = False
        self._chars: list[str] = []
        self._length = 0
        self._bad = False
        self._last_ns: int | None = None

    def reset(self) -> None:
        """Forget the half frame and the modifier state (the device went away)."""
        if self._length:
            self._drop("disconnect")
        self._clear()
        self._held.clear()
        self._caps = False

    def feed(self, event: KeyEventLike, now_ns: int) -> str | Refused | None:
        """Take one input event received at ``now_ns`` (the event's time, in ns)."""
        if event.type != EV_KEY:
            return None
        code, value = event.code, event.value
        if code in SHIFT or code in BLOCKING_MODIFIERS:
            if value == KEY_UP:
                self._held.discard(code)
            else:
                self._held.add(code)
            return None
        if value != KEY_DOWN:  # releases; auto-repeat never comes from a scanner's own typing
            return None
        if code == CAPSLOCK[0]:
            self._caps = not self._caps
            return None
        if code == NUMLOCK[0]:
            return None
        if self._last_ns is not None and now_ns - self._last_ns > self.idle_ns:
            self._drop("idle")
            self._clear()
        self._last_ns = now_ns
        if code in ENTER:
            return self._end()
        self._length += 1
        char = self._char(code)
        if char is None:
            self._bad = True
        elif self._length <= self.max_frame:
            self._chars.append(char)
        else:
            self._chars.clear()  # over-long: only counting on to the Enter
        return None

    def _char(self, code: int) -> str | None:
        if self._held & BLOCKING_MODIFIERS.keys():
            return None
        pair = CHARS.get(code)
        if pair is None:
            return None
        lo, hi = pair
        shifted = bool(self._held & SHIFT.keys())
        if lo.isalpha():
            shifted ^= self._caps
        return hi if shifted else lo

    def _end(self) -> str | Refused | None:
        length, bad = self._length, self._bad
        text = "".join(self._chars)
        self._clear()
        if length > self.max_frame:
            self._drop("oversize", length)
            return Refused(too_long(length, self.max_frame))
        if bad:
            self._drop("non_printable", length)
            return Refused("a code with keys that are not text (a keyboard layout other than US?)")
        if text in self.noread:
            self._drop("noread", length)
            return None
        return text or None

    def _drop(self, reason: str, length: int | None = None) -> None:
        self.dropped[reason] += 1
        log.warning(
            "hid scanner: frame dropped (%s, %d keys)",
            reason,
            self._length if length is None else length,
        )

    def _clear(self) -> None:
        self._chars.clear()
        self._length = 0
        self._bad = False
        self._last_ns = None
