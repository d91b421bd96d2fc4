"""Values shared by every part of the scan path: tickets, verdicts, reasons and decisions."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from agent import redact


class Verdict(enum.StrEnum):
    ADMIT = "admit"
    DENY = "deny"


class Reason(enum.StrEnum):
    """Stable reason codes: they go upstream, into metrics and into operators' scripts."""

    OK = "ok"
    INVALID_FORMAT = "invalid_format"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    KEY_NOT_VALID = "key_not_valid"
    REVOKED = "revoked"
    BLOCKED = "blocked"
    ALREADY_USED = "already_used"
    WRONG_EVENT = "wrong_event"
    WRONG_ZONE = "wrong_zone"
    WRONG_PRODUCT = "wrong_product"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    CLOCK_UNTRUSTED = "clock_untrusted"
    LIST_STALE = "list_stale"
    CODE_EXPIRED = "code_expired"  # a rotating ticket's code: too old, or older than one used
    CANCELED = "canceled"  # pretix: the ticket's order (or the ticket) cancelled, or expired
    UNPAID = "unpaid"  # pretix: the ticket's order not paid (pending, e.g. after a chargeback)
    UNAPPROVED = "unapproved"  # pretix: the ticket's order waits for the organiser's approval
    ERROR = "error"


class Flag(enum.StrEnum):
    """Marks on an admission that went through despite a degraded condition."""

    LIST_STALE = "list_stale"
    CLOCK_UNTRUSTED = "clock_untrusted"
    OFFLINE = "offline"
    UNRECORDED = "unrecorded"  # the journal could not record it (policy on_journal_failure)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one presentation. ``detail`` is for people; ``reason`` is for machines."""

    verdict: Verdict
    reason: Reason
    detail: str = ""
    flags: frozenset[Flag] = field(default_factory=frozenset)

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMIT


@dataclass(frozen=True, slots=True)
class HolderCode:
    """The part of a rotating ticket (TK2) that the holder's device signs when it shows the code.

    ``device_key`` is the P-256 public key (SEC1 compressed) the issuer bound to the ticket;
    ``code_time`` the Unix second the device signed; ``signed_data`` exactly the bytes its
    ``signature`` covers.
    """

    device_key: bytes = field(repr=False)
    code_time: int
    signed_data: bytes = field(repr=False)
    signature: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A parsed (not yet verified) ticket of any registered format.

    ``revocation_key`` is the 16-byte key looked up in the revocation index (TK1: the token_id;
    formats whose revocation key is a longer secret use a 16-byte BLAKE2b of it); ``order_key``,
    where the format has orders (pretix), the key its order's state is looked up under.
    ``ticket_ref`` is the admission right: the anti-passback key that history is kept under.
    ``event`` is empty for formats whose event is fixed by the signing key alone (pretix_sig1).
    ``signed_data`` is exactly the bytes the signature covers (domain tag included).
    ``zones`` is a bitmask, bit ``n-1`` for zone ``n``; ``None`` means the format has no zones.
    Times are Unix seconds; ``None`` means open-ended.
    """

    fmt: str
    kid: str
    revocation_key: bytes
    ticket_ref: str
    event: str
    signed_data: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    zones: int | None = None
    product: str | None = None
    subevent: str | None = None  # a date of an event series (pretix), where the format has one
    not_before: int | None = None
    not_after: int | None = None
    fields: tuple[tuple[str, str], ...] = ()
    holder: HolderCode | None = None  # rotating formats: the device-signed code
    order_key: bytes | None = None  # pretix: the key its order's state is kept under

    @property
    def short_id(self) -> str:
        """The ticket's short id: what staff screens, logs, alerts and the console show."""
        return redact.short_id(self.ticket_ref)


class HistoryRow(Protocol):
    """What :func:`annulled_ids` reads of a row of a ticket's history (gate or hub)."""

    @property
    def kind(self) -> str: ...
    @property
    def entry_id(self) -> str: ...
    @property
    def gate_id(self) -> str: ...
    @property
    def annuls(self) -> str | None: ...


def annulled_ids(history: Iterable[HistoryRow]) -> set[str]:
    """The entry ids of a ticket's history that an annulment cancels. Only the gate that recorded
    an entry can annul it: an annulment from any other gate (a stolen one) cancels nothing."""
    rows = list(history)
    owner = {r.entry_id: r.gate_id for r in rows}
    return {
        r.annuls
        for r in rows
        if r.kind == "annul" and r.annuls is not None and owner.get(r.annuls) == r.gate_id
    }


def zones_text(zones: int) -> str:
    """A zone bitmask as a comma-separated list of zone numbers ("1,2"); "none" for 0."""
    listed = [str(n + 1) for n in range(16) if zones >> n & 1]
    return ",".join(listed) if listed else "none"
