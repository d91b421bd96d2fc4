"""The console's commands at the hub's store: `gate-agent hub ticket ID` (a ticket's history
across the venue's gates) and `gate-agent hub alerts [--follow] [--json]` (the alerts, with the
entries they name and what security did about them), and the short ids `hub revoke` is given.

They read the store the running hub writes (like `hub token` and `hub revoke`), so they work on
the hub's machine without a console token. Tickets appear as their short id only
(:func:`agent.redact.short_id`); a ticket text given on the command line is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import TextIO

from agent import tickets
from agent.errors import TicketFormatError, UsageError
from agent.redact import short_id
from agent.tickets import tk1
from agent.words import plural
from sync.hub_admin import opened_store
from sync.hub_alert_follow import AlertFollower, update_json
from sync.hub_config import HubConfig
from sync.hub_console_sql import ActedAlert
from sync.protocol import MAX_PAGE, Alert
from sync.protocol_console import MAX_HISTORY, TicketEvent, TicketHistory, is_short_id
from sync.protocol_fields import REV_KEY

TICKET_ID = re.compile(r"[0-9a-f]{16}")  # a TK1 ticket's 8-byte id in hex

FOLLOW_POLL_S = 0.5


def ticket_short_id(value: str) -> str:
    """The short id of ``value``: an 8-hex short id (any case), a TK1 ticket's 16-hex ticket id
    (`gate-agent check` shows it) or a ticket's text.

    Raises UsageError naming none of them (the text may be a ticket).
    """
    value = value.strip()
    if is_short_id(value.lower()):
        return value.lower()
    if TICKET_ID.fullmatch(value.lower()):
        return short_id(tk1.ticket_ref(bytes.fromhex(value)))
    try:
        return short_id(tickets.parse(value).ticket_ref)
    except TicketFormatError:
        raise UsageError(
            "ID: not an 8-hex ticket short id, a 16-hex ticket id, a 32-hex token id or a"
            " ticket text"
        ) from None


def local_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def event_line(e: TicketEvent) -> str:
    """One row of a ticket's history as `hub ticket` prints it."""
    word = "ADMIT" if e.verdict == "admit" else "deny "
    extra = [e.detail] if e.detail else []
    if e.offline:
        extra.append("decided offline")
    if e.flags:
        extra.append("[" + ",".join(e.flags) + "]")
    if e.annuls:
        extra.append(f"annuls {e.annuls}")
    if e.set_apart:
        extra.append("SET APART by a quarantine (not in the feed)")
    if e.claimed:
        extra.append("CLAIMED: an admission of a refused upload, shared with the gates")
    return (
        f"{local_time(e.time)}  {e.gate} ({e.gate_id})  lane {e.lane or '-'}  {e.kind:<7} {word}"
        f" {e.reason}" + ("  " + "  ".join(extra) if extra else "")
    )


def history_lines(h: TicketHistory) -> list[str]:
    """What `hub ticket` prints: a heading, then one line per row, oldest first."""
    if not h.events:
        return [f"ticket {h.ticket}: nothing recorded at this venue"]
    gates = sorted({e.gate for e in h.events})
    at = f"at {plural(len(gates), 'gate')} ({', '.join(gates)})"
    if h.more:  # the newest are what an alert is about
        head = f"ticket {h.ticket}: {plural(h.rows, 'row')}; the newest {len(h.events)} shown, {at}"
    else:
        head = f"ticket {h.ticket}: {plural(len(h.events), 'row')} {at}"
    if apart := sum(e.set_apart for e in h.events):
        head += f"; {apart} of them set apart by a quarantine"
    if h.tickets > 1:
        head += f"; WARNING: {h.tickets} different tickets share this short id"
    return [head, *map(event_line, h.events)]


async def ticket_history(config: HubConfig, value: str) -> TicketHistory:
    """The history of the ticket ``value`` names: :func:`ticket_short_id`'s, or a 32-hex token
    id (the revocation key `hub revoke` takes; found by the rows gates uploaded with it).
    Raises UsageError, HubStoreError, ConfigError."""
    key = value.strip().lower()
    short = None if REV_KEY.fullmatch(key) else ticket_short_id(value)
    async with opened_store(config) as store:
        if short is None:
            shorts = await store.short_ids_with_key(key)
            if not shorts:
                return TicketHistory(f"with token id {key}", 0, (), False, 0)
            if len(shorts) > 1:  # a transferred ticket's ids, or a gate that lied
                raise UsageError(
                    f"token id {key}: rows of {len(shorts)} tickets carry it"
                    f" ({', '.join(shorts)}); give one of these short ids"
                )
            short = shorts[0]
        return await store.ticket_history(short, MAX_HISTORY)


def alert_line(a: Alert) -> str:
    """One alert as `hub alerts` prints it: when, id, kind, ticket, entries, workflow, detail."""
    parts = [f"{local_time(a.raised_at)}  #{a.alert_id}  {a.kind}"]
    if a.ticket:
        parts.append(f"ticket {a.ticket}")
    for c in a.context:
        how = f"lane {c.lane or '?'}, {c.kind} {c.verdict} {c.reason}"
        how += (", offline" if c.offline else "") + (", CLAIMED" if c.claimed else "")
        how += f", ticket {c.ticket}" if c.ticket and c.ticket != a.ticket else ""
        how += ", SET APART" if c.set_apart else ""
        how += ", ANNULLED since (nobody passed)" if c.annulled else ""
        gate = f"{c.gate} (now {c.gate_now})" if c.gate_now else c.gate
        parts.append(f"{gate} {local_time(c.time)[11:]} ({how})")
    if not a.context and a.gates:
        parts.append(", ".join(_named(a)))
    w = a.workflow
    parts.append("OPEN" if w.open else f"acknowledged by {w.acked_by}")
    if w.assignee:
        parts.append(f"assigned to {w.assignee}")
    if w.notes:  # their text: --json (a line per alert here)
        parts.append(plural(len(w.notes), "note"))
    if a.detail:
        parts.append(a.detail)
    return "  ".join(parts)


def _named(a: Alert) -> list[str]:
    """The alert's gates by the names it was raised with, and their names now where another."""
    now = dict(enumerate(a.gates_now))
    return [
        name if now.get(i, name) == name else f"{name} (now {now[i]})"
        for i, name in enumerate(a.gates)
    ]


def _write(out: TextIO, alerts: Iterable[Alert], as_json: bool) -> None:
    for a in alerts:
        out.write((json.dumps(a.to_json()) if as_json else alert_line(a)) + "\n")
    out.flush()


def _write_updates(out: TextIO, updates: Iterable[ActedAlert], as_json: bool) -> None:
    """Alerts printed before, again after an action: what was done, then the alert now."""
    for u in updates:
        if as_json:
            out.write(json.dumps(update_json(u)) + "\n")
        else:
            out.write(f"updated ({u.change()}): {alert_line(u.alert)}\n")
    out.flush()


async def print_alerts(
    config: HubConfig, out: TextIO, *, follow: bool, as_json: bool, stop: asyncio.Event
) -> int:
    """Print every alert, oldest first; with ``follow``, then each new one until ``stop`` is
    set, and again each one printed before that is acted on since (a note, by security or the
    hub, an acknowledgement, an assignment), marked updated. Returns 0. Raises HubStoreError
    and ConfigError."""
    async with opened_store(config) as store:
        alerts = AlertFollower(store, 0, await store.last_alert_action())
        quiet = True  # nothing printed yet
        while not stop.is_set():
            found, updated = await alerts.step(MAX_PAGE)
            _write(out, found, as_json)
            _write_updates(out, updated, as_json)
            quiet = quiet and not found
            if len(found) == MAX_PAGE:
                continue
            if quiet and not as_json:  # say so rather than print nothing
                out.write(
                    "no alerts at this venue" + (" yet; new ones follow\n" if follow else "\n")
                )
                out.flush()
            quiet = False
            if not follow:
                return 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FOLLOW_POLL_S)
    return 0


async def resolve_short_ids(config: HubConfig, shorts: Iterable[str]) -> list[bytes]:
    """The revocation keys of the tickets these short ids name; raises UsageError.

    A revocation names the ticket's revocation key (TK1: its token id; pretix: a hash of its
    secret); gates upload it with each row of a ticket whose signature verified. A short id
    must name exactly one ticket seen at this venue, and its rows exactly one key: gates are
    not trusted to say which key is a ticket's, so when they uploaded several (a transferred
    ticket's old and new tokens, or keys a stolen gate made up) nothing is revoked and the
    error lists each key with the gates that sent it, for the operator to give the right ones.
    """
    keys: list[bytes] = []
    async with opened_store(config) as store:
        for short in shorts:
            tickets, pairs = await store.revocation_keys(short)
            if tickets == 0 and (await store.ticket_history(short, 1)).rows:
                raise UsageError(
                    f"short id {short}: only rows a quarantine set apart carry it (their keys"
                    " came from a copied token); give the ticket's text or its 32-hex token id"
                )
            if tickets == 0:
                raise UsageError(f"short id {short}: no ticket with this id was seen at this venue")
            if tickets > 1:
                raise UsageError(
                    f"short id {short}: {tickets} tickets seen at this venue share it;"
                    " give the ticket's text or its 32-hex token id"
                )
            if not pairs:
                raise UsageError(
                    f"short id {short}: its gates uploaded no revocation key (gates before this"
                    " version, or only forged copies were scanned): give the ticket's text or"
                    " its 32-hex token id (`gate-agent check TEXT` shows it)"
                )
            by_key: dict[str, list[str]] = {}
            for key, gate in pairs:
                by_key.setdefault(key, []).append(gate)
            if len(by_key) > 1:
                listed = "; ".join(f"{k} from {', '.join(g)}" for k, g in list(by_key.items())[:8])
                more = "" if len(pairs) < 65 and len(by_key) <= 8 else "; and more"
                raise UsageError(
                    f"short id {short}: gates uploaded {len(by_key)} different revocation keys"
                    f" ({listed}{more}): nothing revoked; give the 32-hex token id(s) to revoke"
                )
            [(key, gates)] = by_key.items()
            print(f"short id {short}: revocation key {key} (uploaded by {', '.join(gates)})")
            keys.append(bytes.fromhex(key))
    return keys
