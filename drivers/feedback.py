"""Scanner feedback plug-ins: the bytes that make a serial scanner show a validation result.

A plug-in only builds bytes; :class:`drivers.serial_scanner.SerialScanner` writes them. Feedback is
never needed to read a ticket: with ``feedback=none`` the scanner beeps on its own as configured.

Sources and how sure each sequence is (checked against public copies of the vendors' manuals):

- Honeywell host acknowledgement ("Host ACK", Xenon/Granit 19xx, Voyager, 2020 user guides,
  section "Host ACK On/Off" and "Host ACK Responses"): the host answers every read with
  ``<group> ESC <command> ,`` where group ``0`` is the default application work group and the comma
  terminates the string. ``ESC 7`` = "successful decode and communication to host" (good-read
  beep), ``ESC 8`` = "razz or error tone ... unsuccessful". Confirmed. While Host ACK is on the
  scanner waits (10 s by default) for that answer before it reads again, so the driver answers
  every read, including frames it drops (:attr:`Feedback.host_ack`). Host ACK itself is switched on
  by scanning the "Host ACK On" bar code in the guide; no serial menu command for it was confirmed,
  so :meth:`setup` sends nothing.
- Zebra SSI (Simple Serial Interface Programmer's Guide 72E-40451; scanner integration guides,
  "SSI Commands"): packet = ``length, opcode, message source (0x04 host), status (0x00), data...,
  checksum`` where length counts every byte but the checksum, and the checksum is the 2's
  complement of the 16-bit sum of those bytes, sent high byte first. Opcodes BEEP 0xE6,
  LED_ON 0xE7, LED_OFF 0xE8 and CMD_ACK 0xD0 are confirmed; the checksum rule was checked against
  a published example packet (``0A 80 04 00 00 06 20 00 00 FF`` -> ``FE 4D``). The beep codes
  (0x01 two short high beeps for good, 0x12 four long low beeps for bad) are from the guide's beep
  code table as recalled and as used by open-source Zebra SSI drivers; the table itself was not
  re-read in a primary copy. The scanner answers each command with CMD_ACK
  (``04 D0 00 00 FF 2C``), which :meth:`replies` lists so the framer skips it. Needs the scanner
  in SSI host mode with raw (not packeted) decode data and a CR suffix.
- Newland ("Serial Programming Command Manual", NLS-HR52 / FM430 user guides, "Use of Programming
  Command"): command = ``~ SOH 0000`` (7E 01 30 30 30 30), storage type ``#`` (temporary, not kept
  across power-off) or ``@`` (permanent), the command, then ``; ETX`` (3B 03); the scanner
  answers ``STX SOH 0000 <storage> <command> ACK ; ETX``. The frame format and the reply are
  confirmed. The command used, ``LEDONS<colour>C<ms>D`` (good-read LED on, colour 2 green / 0 red,
  for <ms> milliseconds), is NOT confirmed in a Newland manual: it comes from third-party code for
  Newland scanners. No host-triggered beep command could be confirmed, so Newland feedback is LED
  only. Verify on the device before relying on it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

ESC = b"\x1b"


@runtime_checkable
class Feedback(Protocol):
    """Bytes for a scanner's good/bad indication.

    ``host_ack`` True means the scanner waits for an answer to every read it sends (Honeywell
    Host ACK), so the driver must answer dropped frames and repeats too.
    """

    name: str
    host_ack: bool

    def good(self) -> bytes:
        """Bytes that make the scanner signal an admission."""
        ...

    def bad(self) -> bytes:
        """Bytes that make the scanner signal a refusal."""
        ...

    def setup(self) -> bytes:
        """Bytes sent once after each (re)connect; empty when nothing is needed."""
        ...

    def replies(self) -> tuple[bytes, ...]:
        """Exact byte sequences the scanner sends back to our commands (never frames)."""
        ...


class HoneywellHostAck:
    """Honeywell host acknowledgement: ``0 ESC 7 ,`` good, ``0 ESC 8 ,`` bad (work group 0)."""

    name = "honeywell"
    host_ack = True

    def __init__(self, group: int = 0) -> None:
        if not 0 <= group <= 6:
            raise ValueError(f"Honeywell application work group must be 0..6, got {group}")
        self.group = group

    def _command(self, *escapes: bytes) -> bytes:
        return str(self.group).encode() + b"".join(ESC + e for e in escapes) + b","

    def good(self) -> bytes:
        return self._command(b"7")

    def bad(self) -> bytes:
        return self._command(b"8")

    def setup(self) -> bytes:
        return b""

    def replies(self) -> tuple[bytes, ...]:
        return ()


SSI_HOST = 0x04
SSI_DECODER = 0x00
SSI_BEEP = 0xE6
SSI_LED_ON = 0xE7
SSI_LED_OFF = 0xE8
SSI_CMD_ACK = 0xD0


def ssi_packet(opcode: int, data: bytes = b"", *, source: int = SSI_HOST, status: int = 0) -> bytes:
    """One Zebra SSI packet with its length byte and 2-byte checksum; raises ValueError."""
    body = bytes((len(data) + 4, opcode, source, status)) + data
    if len(body) > 0xFF:
        raise ValueError(f"SSI packet too long ({len(body)} bytes)")
    checksum = (0x10000 - sum(body)) & 0xFFFF
    return body + checksum.to_bytes(2, "big")


class ZebraSsi:
    """Zebra SSI BEEP packets: beep code 0x01 for good, 0x12 for bad."""

    name = "zebra"
    host_ack = False
    GOOD_BEEP = 0x01
    BAD_BEEP = 0x12

    def good(self) -> bytes:
        return ssi_packet(SSI_BEEP, bytes((self.GOOD_BEEP,)))

    def bad(self) -> bytes:
        return ssi_packet(SSI_BEEP, bytes((self.BAD_BEEP,)))

    def setup(self) -> bytes:
        return b""

    def replies(self) -> tuple[bytes, ...]:
        return (ssi_packet(SSI_CMD_ACK, source=SSI_DECODER),)


NEWLAND_PREFIX = b"\x7e\x010000"
NEWLAND_SUFFIX = b";\x03"
NEWLAND_REPLY_PREFIX = b"\x02\x010000"
ACK = b"\x06"


def newland_command(command: bytes, *, permanent: bool = False) -> bytes:
    """A Newland serial command frame: ``~ SOH 0000 #|@ <command> ; ETX``."""
    return NEWLAND_PREFIX + (b"@" if permanent else b"#") + command + NEWLAND_SUFFIX


def newland_reply(command: bytes, *, permanent: bool = False) -> bytes:
    """The scanner's positive answer to :func:`newland_command`: ``STX SOH 0000 .. ACK ; ETX``."""
    return NEWLAND_REPLY_PREFIX + (b"@" if permanent else b"#") + command + ACK + NEWLAND_SUFFIX


class NewlandCommand:
    """Newland command frames lighting the good-read LED green (good) or red (bad)."""

    name = "newland"
    host_ack = False
    GOOD = b"LEDONS2C500D"  # unconfirmed command, see the module docstring
    BAD = b"LEDONS0C1000D"

    def good(self) -> bytes:
        return newland_command(self.GOOD)

    def bad(self) -> bytes:
        return newland_command(self.BAD)

    def setup(self) -> bytes:
        return b""

    def replies(self) -> tuple[bytes, ...]:
        return (newland_reply(self.GOOD), newland_reply(self.BAD))


FEEDBACKS: dict[str, type[HoneywellHostAck] | type[ZebraSsi] | type[NewlandCommand]] = {
    "honeywell": HoneywellHostAck,
    "zebra": ZebraSsi,
    "newland": NewlandCommand,
}


def feedback_for(name: str) -> Feedback | None:
    """The plug-in called ``name`` (None for ``none``); raises LookupError for an unknown name."""
    if name == "none":
        return None
    cls = FEEDBACKS.get(name)
    if cls is None:
        raise LookupError(f"unknown feedback {name!r} (none, {', '.join(sorted(FEEDBACKS))})")
    return cls()
