"""pretix wire formats for the upstream adapter: pure functions, no I/O.

Journal rows become request bodies (redeem, failed check-in, annul); check-ins in downloaded
positions become peer entries; a redeem answer or a ticket's history is read for a conflict with
another device. Secrets travel only inside bodies and URLs, never into logs: callers log
:func:`short` hashes.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from agent.clock import HLC, HLC_MAX_AHEAD_S, PLAUSIBLE_HLC_MS
from agent.journal import EntryRecord, HistoryEntry, PeerEntry
from agent.model import Reason
from agent.pretix_event import is_secret
from agent.redact import printable, text_digest
from agent.rules import effective
from sync.pretix_http import Reply
from sync.upstream_http import parse_http_date

PRETIX_REF = "pretix:"
ANNUL_WINDOW_S = 15 * 60  # pretix refuses an annulment more than 15 min after the check-in
_PEER_PREFIX = "pretix-device-"
_CHECKIN_PREFIX = "pretix-"  # peer entry ids made from pretix check-ins (see _peer_entry)
_ANNUL_PREFIX = "pretix-annulled-"
_REASON = re.compile(r"[a-z][a-z_]{0,39}")  # a redeem refusal's reason, as pretix spells them
MAX_KEY_TEXT = 40  # an answer's key as named in a log line
MAX_KEYS_SHOWN = 8
_PLAUSIBLE_FROM_S = 1_577_836_800.0  # 2020-01-01: no server's clock shows an earlier time
_MAX_LOGICAL = (1 << 16) - 1  # the HLC's logical part (agent.clock)
# Our reason codes onto pretix's failed check-in reasons (Checkin.REASONS).
FAILED_REASON: dict[Reason, str] = {
    Reason.INVALID_FORMAT: "invalid",
    Reason.BAD_SIGNATURE: "invalid",
    Reason.UNKNOWN_KEY: "invalid",
    Reason.KEY_NOT_VALID: "invalid",
    Reason.WRONG_EVENT: "invalid",
    Reason.REVOKED: "revoked",
    Reason.BLOCKED: "blocked",
    Reason.CANCELED: "canceled",
    Reason.UNPAID: "unpaid",
    Reason.UNAPPROVED: "unapproved",
    Reason.ALREADY_USED: "already_redeemed",
    Reason.WRONG_PRODUCT: "product",
    Reason.WRONG_ZONE: "product",
    Reason.NOT_YET_VALID: "invalid_time",
    Reason.EXPIRED: "invalid_time",
}


def secret_of(ticket_ref: str) -> str | None:
    """The pretix secret inside a journal ``ticket_ref``, or None for other formats."""
    if ticket_ref.startswith(PRETIX_REF) and len(ticket_ref) > len(PRETIX_REF):
        return ticket_ref[len(PRETIX_REF) :]
    return None


def iso(t: float) -> str:
    """Unix seconds as pretix's ISO 8601 UTC form, millisecond precision."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def time_field(row: Any, field: str) -> float | None:
    """``row[field]`` as Unix seconds; None when ``row`` is not a dict or the field is not an ISO
    8601 datetime with a time zone that a server's clock could show (2020 to 2200: a hostile
    year 1 or 9999 would break :func:`iso` where the time is named, or hide what it dates)."""
    try:
        when = parse_iso(row.get(field) if isinstance(row, dict) else None)
    except ValueError:
        return None
    return when if _PLAUSIBLE_FROM_S <= when <= PLAUSIBLE_HLC_MS / 1000 else None


def parse_iso(value: Any) -> float:
    """An ISO 8601 datetime from pretix as Unix seconds; raises ValueError if malformed."""
    if not isinstance(value, str):
        raise ValueError(f"datetime must be a string, got {type(value).__name__}")
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"datetime without a time zone: {value!r}")
    return when.timestamp()


def uuid7_time(entry_id: str) -> float:
    """The creation time (Unix seconds) inside a UUIDv7 ``entry_id``; ValueError otherwise."""
    value = uuid.UUID(entry_id)
    if value.version != 7:
        raise ValueError("entry_id is not a UUIDv7")
    return (value.int >> 80) / 1000


def redeem_path(organizer: str, event: str, list_id: int, secret: str) -> str:
    """The per-list redeem path with the secret percent-encoded (``/`` and ``+`` included)."""
    return (
        f"/api/v1/organizers/{quote(organizer, safe='')}/events/{quote(event, safe='')}"
        f"/checkinlists/{list_id}/positions/{quote(secret, safe='')}/redeem/"
    )


def redeem_body(rec: EntryRecord) -> dict[str, Any]:
    """The redeem request for an entry/exit row: nonce = entry_id, scan time, always ``force``.

    Every row is a scan the gate decided by itself and carried out (the turnstile opened), also
    while pretix answered (``rec.offline`` False): pretix's ``force`` is for exactly that, so it
    records the check-in instead of judging it again (a refusal would lose an entry that
    happened); conflicts are found in its answer. ``questions_supported`` is false: a turnstile
    cannot ask questions, and pretix then ignores them instead of answering "incomplete".
    """
    return {
        "questions_supported": False,
        "canceled_supported": True,
        "type": rec.kind,
        "force": True,
        "ignore_unpaid": False,
        "answers": {},
        "source_type": "barcode",
        "nonce": rec.entry_id,
        "datetime": iso(rec.wall_time),
    }


def failed_checkin_body(rec: EntryRecord, direction: str) -> dict[str, Any]:
    """The failed check-in report for a denied attempt.

    ``raw_barcode`` is the secret for a pretix ticket; for any other text the journal holds only
    a digest (scanned texts are never stored), so that digest is reported.
    """
    secret = secret_of(rec.ticket_ref)
    if secret is not None:
        raw = secret
    elif rec.ticket_ref.startswith("raw:"):
        raw = rec.ticket_ref
    else:
        raw = "digest:" + text_digest(rec.ticket_ref)
    return {
        "raw_barcode": raw,
        "error_reason": FAILED_REASON.get(rec.reason, "error"),
        "datetime": iso(rec.wall_time),
        "type": direction,
        "nonce": rec.entry_id,
    }


def annul_body(rec: EntryRecord, list_id: int) -> dict[str, Any]:
    """The annulment of the check-in whose nonce is the annulled entry's id."""
    return {
        "lists": [list_id],
        "nonce": rec.annuls,
        "datetime": iso(rec.wall_time),
        "error_explanation": rec.detail or "turnstile not passed",
    }


def page_generated(headers: Mapping[str, str]) -> float | None:
    """When pretix began answering a list page (``X-Page-Generated``, ISO 8601 with
    microseconds; else the end of the ``Date`` header's second: it cuts the fraction off, and a
    check-in of that second is not after the page), as Unix seconds; None if neither."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        return parse_iso(lower.get("x-page-generated"))
    except ValueError:
        date = parse_http_date(lower.get("date"))
        return None if date is None else date + 1.0


def listed_at(headers: Mapping[str, str], now: float) -> float:
    """When pretix listed a page, by its own clock (:func:`page_generated`); this gate's ``now``
    when it says neither, or says a time no server's clock shows (before 2020, after 2200)."""
    listed = page_generated(headers)
    if listed is None or not _PLAUSIBLE_FROM_S <= listed <= PLAUSIBLE_HLC_MS / 1000:
        return now
    return listed


def cursor_time(listed: float, now: float) -> float:
    """The time to page on from next round: pretix's ``listed``, but this gate's ``now`` when
    that is more than HLC_MAX_AHEAD_S ahead of it. A server clock's glitch would otherwise hold
    a cursor in the future and hide everything until then; paging from an earlier time only
    reads some rows again (the cursors are inclusive, every row idempotent)."""
    return listed if listed <= now + HLC_MAX_AHEAD_S else now


def peer_gate(device: Any) -> str:
    return f"{_PEER_PREFIX}{device}" if isinstance(device, int) else "pretix-backend"


def checkin_device(ci: dict[str, Any]) -> int | None:
    """The per-organizer number (``device_id``) of the device that made a check-in, or None.

    pretix also sends ``device``, the device's database key: the two differ on any server with
    more than one organizer, and only ``device_id`` is what ``device/initialize`` gave us.
    """
    device = ci.get("device_id")
    return device if isinstance(device, int) and not isinstance(device, bool) else None


@dataclass(frozen=True, slots=True)
class PeerCheckins:
    """Other devices' check-ins read from one page: ``skipped`` not well-formed, ``ahead`` dated
    after pretix listed them (learnt as of that time)."""

    entries: list[PeerEntry]
    skipped: int = 0
    ahead: int = 0


def peer_entries(
    rows: Iterable[Any], own_device: int, list_id: int, listed_at: float
) -> PeerCheckins:
    """Check-ins of other devices in positions rows, as peer entries.

    A row or check-in that is not well-formed is skipped (counted), never fatal: one odd
    position must not stop learning the others. Our own device's check-ins are already in the
    journal and are left out. ``entry_id`` is derived from pretix's check-in id when present,
    so a re-download inserts nothing twice. A check-in dated after ``listed_at`` (when pretix
    listed the page, :func:`listed_at`) is learnt as made then, the time no honest check-in
    can be later than: dated ahead (a device's clock, or a stolen device's token redeeming
    with a future datetime) it would stay the ticket's last row through every later entry,
    and an exit so placed would let the ticket in again and again at a reentry gate. (A
    server that lies about its own time too is beyond this: it could as well invent a fresh
    exit every round.)
    """
    out: list[PeerEntry] = []
    late: list[PeerEntry] = []  # dated after the listing
    skipped = 0
    for row in rows:
        secret = row.get("secret") if isinstance(row, dict) else None
        checkins = row.get("checkins") if isinstance(row, dict) else None
        if not is_secret(secret) or not isinstance(checkins, list):
            skipped += 1
            continue
        for ci in checkins:
            if isinstance(ci, dict) and ci.get("list", list_id) != list_id:
                continue  # another list's: not ours to learn, and well-formed (not "skipped")
            entry = _peer_entry(secret, ci, own_device, list_id)
            if entry is None:
                skipped += not isinstance(ci, dict) or checkin_device(ci) != own_device
            elif entry.wall_time > listed_at:
                late.append(entry)
            else:
                out.append(entry)
    # As of the listing, in their own order (the logical part of the HLC): an exit and an entry
    # of two devices whose clocks ran ahead keep which came first.
    late.sort(key=lambda e: (e.wall_time, e.gate_seq, e.entry_id))
    at = HLC.at_ms(int(listed_at * 1000))
    out += [
        replace(e, wall_time=listed_at, hlc=at + min(i, _MAX_LOGICAL)) for i, e in enumerate(late)
    ]
    return PeerCheckins(out, skipped, len(late))


def _peer_entry(secret: str, ci: Any, own_device: int, list_id: int) -> PeerEntry | None:
    if not isinstance(ci, dict) or checkin_device(ci) == own_device:
        return None
    kind, cid, device = ci.get("type", "entry"), ci.get("id"), checkin_device(ci)
    if kind not in ("entry", "exit"):
        return None
    try:
        wall = parse_iso(ci.get("datetime"))
    except ValueError:
        return None
    if not math.isfinite(wall) or wall < 0:
        return None
    if isinstance(cid, int) and not isinstance(cid, bool):
        entry_id = f"pretix-checkin-{cid}"
    else:
        basis = f"{secret}\0{list_id}\0{device}\0{ci.get('datetime')}\0{kind}"
        entry_id = "pretix-" + hashlib.blake2b(basis.encode(), digest_size=12).hexdigest()
    return PeerEntry(
        entry_id=entry_id,
        gate_id=peer_gate(device),
        gate_name=f"pretix device {device}" if device is not None else "pretix backend",
        gate_seq=cid if isinstance(cid, int) and not isinstance(cid, bool) else 0,
        ticket_ref=PRETIX_REF + secret,
        kind=kind,
        annuls=None,
        wall_time=wall,
        hlc=HLC.at_ms(int(wall * 1000)),
    )


# A position's standing check-ins of other devices: entry_id -> (gate id, gate name).
Peers = dict[str, tuple[str, str]]


def position_peers(
    rows: Iterable[Any], own_device: int, list_id: int
) -> Iterator[tuple[int, str, Peers]]:
    """For each well-formed position row: its id, its secret and the check-ins of other devices
    it lists now. pretix lists successful check-ins only, so one learnt before and missing now
    was annulled there."""
    for row in rows:
        pid = row.get("id") if isinstance(row, dict) else None
        secret = row.get("secret") if isinstance(row, dict) else None
        checkins = row.get("checkins") if isinstance(row, dict) else None
        if not isinstance(pid, int) or not is_secret(secret):
            continue
        if not isinstance(checkins, list):
            continue
        entries = (_peer_entry(secret, ci, own_device, list_id) for ci in checkins)
        yield pid, secret, {e.entry_id: (e.gate_id, e.gate_name) for e in entries if e}


def standing_peers(history: Sequence[HistoryEntry]) -> Peers:
    """The check-ins learnt from pretix (peer entries and exits) that no annulment cancelled."""
    annulled = {h.annuls for h in history if h.kind == "annul"}
    return {
        h.entry_id: (h.gate_id, h.gate_name)
        for h in history
        if h.peer and h.kind in ("entry", "exit") and h.entry_id.startswith(_CHECKIN_PREFIX)
        and h.entry_id not in annulled
    }  # fmt: skip


def peer_annulments(secret: str, gone: Peers, at: float) -> list[PeerEntry]:
    """Annulments, learnt at ``at``, of the peer check-ins in ``gone``."""
    out = []
    for entry_id, (gate_id, gate_name) in sorted(gone.items()):
        annul_id = _ANNUL_PREFIX + entry_id.removeprefix(_CHECKIN_PREFIX)
        out.append(PeerEntry(annul_id, gate_id, gate_name, 0, PRETIX_REF + secret, "annul",
                             entry_id, at, int(at * 1000) << 16))  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class Conflict:
    """Another device's entry that was still standing when ours happened."""

    device: str
    at: float


def prior_entry_in_answer(body: Any, own_device: int | None, at: float) -> Conflict | None:
    """A redeem answer's position shows the check-ins before ours: is the last one an entry of
    another device? (pretix accepts forced duplicates silently; this is how we notice.)"""
    position = body.get("position") if isinstance(body, dict) else None
    checkins = position.get("checkins") if isinstance(position, dict) else None
    if not isinstance(checkins, list):
        return None
    timed: list[tuple[float, dict[str, Any]]] = []
    for ci in checkins:
        if not isinstance(ci, dict):
            continue
        try:
            when = parse_iso(ci.get("datetime"))
        except ValueError:
            continue
        if when <= at:
            timed.append((when, ci))
    if not timed:
        return None
    when, last = max(timed, key=lambda pair: pair[0])
    device = checkin_device(last)
    if last.get("type", "entry") != "entry" or (own_device is not None and device == own_device):
        return None
    return Conflict(peer_gate(device), when)


def prior_entry_in_history(history: Sequence[HistoryEntry], entry_id: str) -> Conflict | None:
    """In a ticket's merged history, is the event just before our entry a peer's entry?
    (:func:`entries_after_peer_entries` for one entry.)"""
    return entries_after_peer_entries(history).get(entry_id)


def entries_after_peer_entries(history: Sequence[HistoryEntry]) -> dict[str, Conflict]:
    """This gate's entries in a ticket's merged history whose event just before is another
    device's entry, with that entry; one pass. Annulled entries do not count
    (:func:`agent.rules.effective`); an exit in between ends the earlier visit."""
    return {
        h.entry_id: Conflict(before.gate_id, before.wall_time)
        for before, h in itertools.pairwise(effective(history))
        if h.kind == "entry" and not h.peer and before.peer and before.kind == "entry"
    }


def latest(current: str | None, rows: list[Any], field: str, not_after: float) -> str | None:
    """The newest ``field`` timestamp among ``current`` and the rows (kept as pretix wrote it),
    none past ``not_after`` (:func:`cursor_time`): a row dated later, by a server clock's fault,
    would hold the cursor there and hide every row made until then. A ``current`` already past
    it (stored before this check existed) starts over: the epoch, so the next round reads every
    row again (each is idempotent) instead of none ever again."""
    best, best_t = current, None
    if current:
        try:
            best_t = parse_iso(current)
        except ValueError:
            best, best_t = None, None
        else:
            if best_t > not_after:
                best, best_t = iso(0.0), 0.0
    for row in rows:
        value = row.get(field) if isinstance(row, dict) else None
        try:
            t = parse_iso(value)
        except ValueError:
            continue
        if t <= not_after and (best_t is None or t > best_t):
            best, best_t = value, t
    return best


def reply_keys(reply: Reply) -> str:
    """What a refusal was about, without echoing values (they may contain the secret): the
    answer's first keys, each cut short and printable (the server's text goes into log lines)."""
    if isinstance(reply.body, dict):
        names = sorted(printable(str(k), MAX_KEY_TEXT) for k in reply.body)
        more = f", +{len(names) - MAX_KEYS_SHOWN} more" if len(names) > MAX_KEYS_SHOWN else ""
        return "(" + ", ".join(names[:MAX_KEYS_SHOWN]) + more + ")"
    return ""


def redeem_outcome(reply: Reply) -> str | None:
    """What a redeem answer says: "ok", the refusal's reason (pretix's snake_case word), or None
    when it is not pretix's answer (a proxy's page, a captive portal, another server on the
    port: a security trial's 400 with a foreign body was taken as a refusal for good and its
    check-in dropped, and a 200 of anything as accepted). pretix answers ``{"status": "ok"}``
    (201) or ``{"status": "error", "reason": ...}`` (400, 404)."""
    body = reply.body
    if not isinstance(body, dict):
        return None
    if reply.ok:
        return "ok" if body.get("status") == "ok" else None
    reason = body.get("reason")
    if body.get("status") == "error" and isinstance(reason, str) and _REASON.fullmatch(reason):
        return reason
    return None


def init_messages(answer: dict[str, Any]) -> str:
    """The server's messages in a refused initialisation answer (never the token itself)."""
    texts = [
        m
        for v in answer.values()
        for m in (v if isinstance(v, list) else [v])
        if isinstance(m, str)
    ]
    return printable("; ".join(texts), 200) or "no detail"
