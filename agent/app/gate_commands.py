"""Commands for people at a running gate: `gate-agent status` and `gate-agent events`.

`status` asks the gate's own status server (``[status] listen``) and prints its health in a few
lines. `events` reads the journal file directly, read-only (the daemon keeps writing it), and
prints decisions for security staff, or with ``--alerts`` the security alerts kept beside them:
on a terminal one line each, or JSON lines with ``--json``.
Ticket references never appear: a ticket is shown by its short id, and ``--ticket`` accepts that
id or the ticket's text.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from agent.app import config as cfg
from agent.errors import ConfigError, GateUnreachable, TicketFormatError, UsageError
from agent.journal import AlertRecord, queries, schema
from agent.redact import short_id
from agent.settings import parse_listen
from agent.words import plural
from sync.upstream_http import sleep_or_stop

FOLLOW_POLL_S = 0.5


@dataclass(frozen=True)
class EventFilter:
    denied: bool = False
    duplicates: bool = False
    ticket: str | None = None  # a short id or a ticket text
    alerts: bool = False  # the security alerts instead of the decisions

    def refs_match(self) -> tuple[str | None, str | None]:
        """(exact ticket_ref, short id) to match, from ``ticket``."""
        if self.ticket is None:
            return None, None
        value = self.ticket.strip()
        if len(value) == 8 and all(c in "0123456789abcdef" for c in value.lower()):
            return None, value.lower()  # as the display, alerts and the console show it
        from agent import tickets
        from agent.tickets import tk2

        try:
            if value.startswith(tk2.STATIC_PREFIX):  # a rotating ticket as issued, not a code
                return tk2.static_ticket_ref(tk2.static_bytes(value)), None
            return tickets.parse(value).ticket_ref, None
        except TicketFormatError:
            raise UsageError("--ticket: not a ticket text or an 8-hex short id") from None


def _rows(
    db: sqlite3.Connection, after: int, flt: EventFilter, last: int | None
) -> list[tuple[Any, ...]]:
    exact, short = flt.refs_match()
    return queries.decisions(
        db, after, denied=flt.denied, duplicates=flt.duplicates, ticket_ref=exact, short=short,
        last=last,
    )  # fmt: skip


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, wall, lane, kind, verdict, reason, detail, flags, ref, offline, entry_id = row
    return {
        "gate_seq": seq, "time": wall, "lane": lane, "kind": kind, "verdict": verdict,
        "reason": reason, "detail": detail, "flags": [f for f in flags.split(",") if f],
        "ticket": short_id(ref), "offline": bool(offline),
        "entry_id": entry_id,  # what alerts name (`--alerts`)
    }  # fmt: skip


def _line(event: dict[str, Any], tz: tzinfo | None) -> str:
    when = _when(event["time"], tz)
    word = "ADMIT" if event["verdict"] == "admit" else "deny "
    detail = f"  {event['detail']}" if event["detail"] else ""
    flags = f"  [{','.join(event['flags'])}]" if event["flags"] else ""
    return (
        f"{when}  #{event['gate_seq']:<6} {event['lane']:<8} {event['kind']:<7} {word} "
        f"{event['reason']:<15} ticket {event['ticket']}{detail}{flags}"
    )


def _when(t: float, tz: tzinfo | None) -> str:
    """A row's time as the staff texts give it: in ``[policy] timezone`` when set (a venue's
    gates may run on UTC), else in the machine's; with its zone, as a copy read elsewhere (a
    security lead's laptop, a report) cannot know it."""
    return datetime.fromtimestamp(t, tz).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _time_zone(config: cfg.Config) -> tzinfo | None:
    return None if config.policy.timezone is None else ZoneInfo(config.policy.timezone)


def _peer_lines(
    db: sqlite3.Connection, flt: EventFilter, out: TextIO, tz: tzinfo | None, after: int
) -> int:
    """The ticket's rows learnt from other gates since rowid ``after``, after this gate's own: a
    double entry made while the gates could not see each other shows at each of them, not only
    at the hub. Returns the rowid to follow from."""
    exact, short = flt.refs_match()
    rows = queries.peer_rows(db, exact, short, after)
    for wall, gate_id, gate_name, kind, ref, rowid, claimed in rows:
        when = _when(wall, tz)
        gate = gate_name if gate_name == gate_id else f"{gate_name} ({gate_id})"
        # A claim: the hub refuses that gate's uploads (sync.hub_claims), until its rows come.
        mark = f"  CLAIMED: {gate}'s uploads are refused (a copy of its token?)" if claimed else ""
        out.write(f"{when}  {kind:<7} at {gate} (another gate)  ticket {short_id(ref)}{mark}\n")
        after = max(after, rowid)
    return after


async def events(
    config: cfg.Config,
    flt: EventFilter,
    out: TextIO,
    *,
    follow: bool,
    as_json: bool,
    last: int | None,
    stop: asyncio.Event | None = None,
) -> int:
    """Print the journal's decisions, or its alerts with ``flt.alerts`` (the ``last`` matching
    ones, then new ones with ``follow`` until ``stop`` is set: then 0)."""
    path = config.gate.state_dir / "journal.db"
    db = queries.open_readonly(path, config.gate.id)
    tz = _time_zone(config)
    stopped = stop or asyncio.Event()  # none given: a follow runs until the process ends
    listing = _alert_listing if flt.alerts else _decision_listing
    # On a terminal a ticket's decisions are followed by its rows at other gates and its alerts
    # (JSON lines stay one kind of record: `--alerts --json` gives its alerts).
    # Not beside --denied/--duplicates, which ask for some decisions only.
    ticket_extras = flt.ticket is not None and not (flt.alerts or as_json or flt.denied
                                                    or flt.duplicates)  # fmt: skip
    try:
        # first: the listing says so when it matches nothing (once, and not in JSON)
        after, peers_after, alerts_after, limit, first = 0, 0, 0, last, not as_json
        if flt.alerts and not as_json and schema.version(db) < 4:
            out.write("(a journal from before alerts were kept: kept from the gate's next start)\n")
            first = False
        while True:
            # One read: what is listed and the newest row of each kind as of one moment, so a
            # follow reads on from there (no row skipped; a short id matches rows by a function
            # of each, and its last match may be long past: a review measured 143 ms a poll).
            db.execute("BEGIN")
            try:
                after = listing(db, flt, out, tz, after, limit, as_json=as_json)
                if ticket_extras:
                    peers_after = _peer_lines(db, flt, out, tz, peers_after)
                    alerts_after = _alert_listing(
                        db, flt, out, tz, alerts_after, None, as_json=False
                    )
                top_seq, top_peer, top_alert = queries.tops(db)
            finally:
                db.execute("COMMIT")
            if first and not (after or peers_after or alerts_after):
                out.write(_nothing(flt, ticket_extras, path) + "\n")  # not silence
            first = False
            after = max(after, top_alert if flt.alerts else top_seq)
            peers_after, alerts_after = max(peers_after, top_peer), max(alerts_after, top_alert)
            out.flush()
            if not follow:
                return 0
            limit = None  # from now on, everything new
            if await sleep_or_stop(FOLLOW_POLL_S, stopped):
                return 0
            # Open anew as the gate is now: one stopped is read immutable (agent.fsutil), which
            # would not see the rows it writes once started.
            db.close()
            db = queries.open_readonly(path, config.gate.id)
    finally:
        db.close()


def _nothing(flt: EventFilter, ticket_extras: bool, path: object) -> str:
    """What `events` says when its first read matched no row (a lookup of a ticket never seen
    here printed nothing at all: a trial)."""
    if flt.alerts:
        kind = "alerts"
    elif ticket_extras:
        kind = "decisions, rows from other gates or alerts"
    else:
        kind = "'already used' denials" if flt.duplicates else (
            "denials" if flt.denied else "decisions"
        )  # fmt: skip
    exact, short = flt.refs_match()  # a ticket's text is its secret: never echoed
    shown = short or (short_id(exact) if exact else None)
    ticket = f" for ticket {shown}" if shown else ""
    return f"(no {kind}{ticket} in {path})"


def _decision_listing(
    db: sqlite3.Connection, flt: EventFilter, out: TextIO, tz: tzinfo | None, after: int,
    limit: int | None, *, as_json: bool,
) -> int:  # fmt: skip
    """Print the decisions past gate_seq ``after`` (the last ``limit``); returns the gate_seq to
    follow from (the last matching row printed: the rows after it are new ones)."""
    for row in _rows(db, after, flt, limit):
        event = _record(row)
        out.write((json.dumps(event) if as_json else _line(event, tz)) + "\n")
        after = max(after, row[0])
    return after


def _alert_listing(
    db: sqlite3.Connection, flt: EventFilter, out: TextIO, tz: tzinfo | None, after: int,
    limit: int | None, *, as_json: bool,
) -> int:  # fmt: skip
    """Print the alerts past alert_id ``after`` (the last ``limit``); returns the alert_id to
    follow from."""
    exact, short = flt.refs_match()
    for alert in queries.alerts(db, after, ticket_ref=exact, short=short, last=limit):
        record = _alert_record(alert)
        out.write((json.dumps(record) if as_json else _alert_line(record, tz)) + "\n")
        after = max(after, alert.alert_id)
    return after


def _alert_record(a: AlertRecord) -> dict[str, Any]:
    return {
        "alert_id": a.alert_id, "raised_at": a.raised_at, "kind": a.kind,
        "ticket": short_id(a.ticket_ref), "entry_id": a.entry_id, "time": a.at,
        "other": a.other, "other_time": a.other_at, "detail": a.detail,
    }  # fmt: skip


def _alert_line(alert: dict[str, Any], tz: tzinfo | None) -> str:
    other = alert["other"]
    if alert["other_time"] is not None:
        other += f" at {_when(alert['other_time'], tz)}"
    return (
        f"{_when(alert['raised_at'], tz)}  ALERT {alert['kind']}  ticket {alert['ticket']}"
        f"  entry {alert['entry_id']} at {_when(alert['time'], tz)}; other: {other}"
        f"  {alert['detail']}"
    )


def status(config: cfg.Config, out: TextIO, *, as_json: bool) -> int:
    """Print the running gate's health; returns 0 ready, 1 degraded.

    Raises ConfigError when the status server is off in the config, GateUnreachable when nothing
    answers or the gate answering is not the configured one (two gates' configs on one address).
    """
    listen = config.status.listen
    if not listen:
        raise ConfigError(f"{config.path}: [status] listen is off: nothing to ask")
    host, port = parse_listen(listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a client address
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            snap = json.loads(reply.read())
    except (OSError, ValueError, RecursionError, urllib.error.URLError) as exc:
        raise GateUnreachable(
            f"gate not answering on {url}: {exc} (is gate-agent running?)"
        ) from None
    _check_identity(config, url, snap)
    try:
        ready = snap["health"]["status"] == "ready"
        text = json.dumps(snap, indent=2) + "\n" if as_json else summary(snap)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise GateUnreachable(
            f"{url} answered, but not in the form this version reads ({type(exc).__name__}:"
            f" {str(exc)[:80]}): does the gate run another version? (after an upgrade, restart"
            " it)"
        ) from None
    out.write(text)
    return 0 if ready else 1


def _check_identity(config: cfg.Config, url: str, snap: Any) -> None:
    """Refuse an answer from any gate but the configured one; raises GateUnreachable."""
    gate = snap.get("gate") if isinstance(snap, dict) else None
    answered = gate.get("id") if isinstance(gate, dict) else None
    if not isinstance(answered, str):
        raise GateUnreachable(f"{url} answered, but not as a gate-agent status server")
    if answered != config.gate.id:
        raise GateUnreachable(
            f"{url} is gate {answered[:64]!r}, not the configured {config.gate.id!r}"
            f" ({config.path}): another gate's status server holds this address; check"
            " [status] listen in both configs"
        )


# Uploads an operator must unblock (sync.client: the gate's decisions are flagged offline),
# though the link, the feed and heartbeats may all work: a security trial read "hub OFFLINE" as
# a network fault. A conflict's admissions still reach the gates, as claims (sync.hub_claims).
_REFUSED = {
    "conflict": "conflict{}: admissions shared as claims, exits and annulments held",
    "unauthorized": "token refused: admissions not shared",
    "refused": "rows refused: admissions not shared",
}


def _offline(up: dict[str, Any]) -> str:
    """How `status` names an upstream that is not online."""
    if up.get("refused"):  # its token or certificate, whichever request met it (a trial)
        return f"REFUSES THIS GATE'S {str(up['refused']).upper()}: admissions not shared"
    down = ", and OFFLINE" if up.get("reachable") is False else ""  # the link, apart
    why = _REFUSED.get(str(up.get("upload")))
    if why is None:
        return "OFFLINE"
    seq = up.get("conflict_from_seq")
    return f"UPLOADS REFUSED ({why.format('' if seq is None else f' from gate_seq {seq}')}){down}"


def summary(snap: dict[str, Any]) -> str:
    """The text `gate-agent status` prints for a /status answer (raises KeyError, TypeError on
    one of another form)."""
    health, rev, journal = snap["health"], snap["revocations"], snap["journal"]
    age = rev["age_s"]
    lines = [
        f"{snap['gate']['name']} ({snap['gate']['id']}): {health['status'].upper()}"
        + (f" - {', '.join(health['reasons'])}" if health["reasons"] else ""),
        *(
            f"  lane {ln['name']} ({ln['direction']}): scanner "
            f"{'online' if ln['scanner_online'] else 'OFFLINE'}"
            + (f", {ln['fault']}" if ln["fault"] else "")
            + (
                f", turnstile shared with {', '.join(ln['turnstile_shared_with'])}"
                if ln.get("turnstile_shared_with")
                else ""
            )
            + (", EMERGENCY free passage" if ln["emergency"] else "")
            for ln in snap["lanes"]
        ),
        f"  revocations v{rev['version']} ({plural(rev['entries'], 'entry', 'entries')}"
        + (f", {age / 3600:.1f} h old" if age is not None else "")
        + (", STALE" if rev["stale"] else "")
        + f"), trust v{snap['trust_version']}",
        f"  clock {'synchronised' if snap['clock']['synced'] else 'NOT synchronised'}"
        + (f"; boot {str(snap['gate']['boot_id'])[:8]}" if snap["gate"].get("boot_id") else ""),
        f"  journal {plural(journal['rows'], 'row')}"
        + (f", {journal['outbox_depth']} waiting for upload" if snap.get("upstream") else ""),
        f"  last hour: {snap['last_hour']['admitted']} admitted, {snap['last_hour']['denied']} denied",
    ]
    up = snap.get("upstream")
    if up is not None:
        online = bool(up.get("online"))
        lines.append(  # an error from before the link came back is history, not news
            f"  {up.get('kind', 'upstream')} {'online' if online else _offline(up)}"
            + (f", run {up['run']}" if up.get("run") else "")  # as the hub's alerts name it
            + (f" (last error: {up['last_error']})" if up.get("last_error") and not online else "")
        )
        # pretix's: duplicates and orders no longer valid found in its answers (kept in the
        # journal), and rows it refused for good (an integrator's trial found them only in
        # /status).
        if up.get("alerts"):
            lines.append(
                f"  {plural(int(up['alerts']), 'security alert')} (gate-agent events --alerts)"
            )
        if up.get("rejected"):
            lines.append(f"  {plural(int(up['rejected']), 'row')} refused by pretix for good")
        if up.get("held"):
            lines.append(
                f"  {plural(int(up['held']), 'row')} held back: answered not by pretix round"
                " after round, the rows after it uploaded (log: passed by)"
            )
    return "\n".join(lines) + "\n"
