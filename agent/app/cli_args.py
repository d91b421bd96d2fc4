"""The `gate-agent` command line's arguments: every command, option and help text.

Kept apart from :mod:`agent.app.cli` (which runs the commands) so each stays readable; a test walks
:func:`build_parser` to check that every option has a help string.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent import version
from agent.errors import AgentError

_MAX_DIGITS = 19  # a signed 64-bit integer; the command checks the range it needs


def _digits(value: str) -> bool:
    """1-19 ASCII digits: int() would also take "+1", "1_000", " 1", other scripts' digits, and
    thousands of digits (then failing with a message quoting them all)."""
    return value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS


def _whole(value: str) -> int:
    """A whole number as argparse takes it (each command checks the range it needs)."""
    if not _digits(value):
        many = value.isascii() and value.isdigit()  # digits, but more than any range here
        raise argparse.ArgumentTypeError(
            f"expected a whole number of at most {_MAX_DIGITS} digits, got {len(value):,}"
            if many
            else f"expected a whole number (digits 0-9), got {value[:40]!r}"
        )
    return int(value)


def _int_list(value: str) -> list[int]:
    """Numbers separated by commas: at least one, each once."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or not all(_digits(v) for v in items):
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {value[:40]!r}"
        )
    numbers = [int(v) for v in items]
    if twice := sorted({n for n in numbers if numbers.count(n) > 1}):
        raise argparse.ArgumentTypeError(f"{', '.join(map(str, twice))}: given twice")
    return numbers


def _text(value: str) -> str:
    """A ticket's text as typed or pasted: bytes that are not UTF-8 reach Python as lone
    surrogates, which a parser would name as "U+DCFF"."""
    if any("\udc80" <= c <= "\udcff" for c in value):
        raise argparse.ArgumentTypeError("not valid UTF-8 text (a ticket's text is ASCII)")
    return value


def _path(value: str) -> Path:
    """A file or folder name: an empty one would mean the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if not value.isprintable():  # shown in messages, a control character would not be seen
        raise argparse.ArgumentTypeError(
            f"a path of characters that print (no control characters), got {value[:80]!r}"
        )
    return Path(value)


def _zone(value: str) -> int:
    if not _digits(value) or not 1 <= int(value) <= 16:
        raise argparse.ArgumentTypeError(f"a zone is a number 1-16, got {value[:40]!r}")
    return int(value)


def _iso(value: str) -> int:
    from agent.issuer import parse_iso

    try:
        return parse_iso(value)
    except AgentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


INSTALLED_CONFIG = Path("/etc/gate-agent/gate.toml")  # where systemd/install puts it
INSTALLED_HUB_CONFIG = Path("/etc/gate-hub/hub.toml")  # and the hub's (install --hub)
_WHERE = f"the gate's config (default {INSTALLED_CONFIG})"


def build_parser() -> argparse.ArgumentParser:
    """The whole `gate-agent` parser, subcommands included."""
    p = argparse.ArgumentParser(
        prog="gate-agent", description="Offline ticket validation agent for turnstiles."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"%(prog)s {version.installed()}")
    sub = p.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="issuer key management").add_subparsers(
        dest="keys_command", required=True
    )
    init = keys.add_parser("init", help="make root, issuer and list-signing keys and a bundle")
    init.add_argument("dir", type=_path, help="the keys folder to create (keep it off gates, hub)")
    init.add_argument(
        "--alg", choices=("ed25519", "p256"), default="ed25519", help="issuer key algorithm"
    )
    init.add_argument("--kid", type=_whole, help="the issuer key's id (default: random)")
    init.add_argument(
        "--events",
        type=_int_list,
        help="events the issuer key may sign for, e.g. 1,2 (default all)",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace the keys in an existing folder: a new root invalidates every ticket and gate",
    )
    export = keys.add_parser(
        "export", help="copy what the hub needs (list.key, trust.json, root.pub) into DIR"
    )
    export.add_argument("--hub", type=_path, required=True, metavar="DIR", help="the hub's keys")
    export.add_argument("--keys", type=_path, required=True, help="a `keys init` dir")
    export.add_argument("--force", action="store_true", help="replace differing files in DIR")

    signer = keys.add_parser(
        "issuer", help="make an issuer key folder (a sales channel's): issuer.key, issuer.pub"
    )
    signer.add_argument("dir", type=_path, help="the issuer's folder to create")
    signer.add_argument(
        "--alg", choices=("ed25519", "p256"), default="ed25519", help="key algorithm"
    )
    signer.add_argument("--kid", type=_whole, help="the key's id (default: random)")
    signer.add_argument("--force", action="store_true", help="replace a key already there")

    trust = sub.add_parser(
        "trust", help="change the trust bundle: add, retire, compromise issuer keys"
    ).add_subparsers(dest="trust_command", required=True)
    add = trust.add_parser("add", help="add an issuer key as active; writes the next version")
    add.add_argument("--keys", type=_path, required=True, help="the root's `keys init` folder")
    add.add_argument(
        "source", type=_path, metavar="ISSUER_DIR_OR_PUBFILE", help="a `keys issuer` folder or PEM"
    )
    add.add_argument("--kid", type=_whole, help="the key's id (required for a bare PEM file)")
    add.add_argument("--events", type=_int_list, help="events it may sign for (default all)")
    add.add_argument("--not-before", type=_iso, metavar="ISO", help="the key valid from")
    add.add_argument("--not-after", type=_iso, metavar="ISO", help="the key valid until")
    for verb, meaning in (
        ("retire", "no new tickets; those issued stay valid until their own end"),
        ("compromise", "refuse every ticket the key signed (final)"),
    ):
        change = trust.add_parser(verb, help=f"{verb} issuer key KID: {meaning}")
        change.add_argument("--keys", type=_path, required=True, help="the root's folder")
        change.add_argument("kid", type=_whole, metavar="KID", help="the issuer key's id")

    rotate = trust.add_parser(
        "rotate-root", help="hand over to a new root key (the next bundle is signed by both)"
    )
    rotate.add_argument("--keys", type=_path, required=True, help="the root's folder")

    issue = sub.add_parser("issue", help="write tickets (NAME.txt + NAME.png QR code)")
    issue.add_argument(
        "--keys", type=_path, required=True, help="a `keys init` or `keys issuer` folder"
    )
    issue.add_argument("--event", type=_whole, required=True, help="the event number")
    issue.add_argument("--zones", type=_int_list, help="zones 1-16, e.g. 1,2 (default: every zone)")
    issue.add_argument(
        "--not-before", type=_iso, metavar="ISO", help="valid from (default: no start)"
    )
    issue.add_argument(
        "--not-after", type=_iso, metavar="ISO", help="valid until (default: no end)"
    )
    issue.add_argument("--count", type=_whole, default=1, help="how many tickets (default 1)")
    issue.add_argument(
        "--device-key",
        type=_path,
        metavar="PUBFILE",
        help="rotating tickets bound to this P-256 public key (PEM): NAME.txt only, no image",
    )
    issue.add_argument(
        "--out", type=_path, required=True, help="folder for NAME.txt and NAME.png per ticket"
    )

    revoke = sub.add_parser("revoke", help="write a signed revocation delta")
    revoke.add_argument("--keys", type=_path, required=True, help="a `keys init` folder")
    revoke.add_argument("--out", type=_path, required=True, help="the delta file to write")
    revoke.add_argument(
        "--op",
        choices=("revoke", "unrevoke", "block", "unblock"),
        default="revoke",
        help="what to do with the items (default revoke)",
    )
    revoke.add_argument(
        "items", nargs="+", metavar="TICKET_TEXT_OR_TOKEN_ID", help="tickets or 32-hex token ids"
    )

    move = sub.add_parser(
        "transfer", help="re-issue a ticket under a new token and revoke the old one"
    )
    move.add_argument("--keys", type=_path, required=True, help="the issuer's `keys init` folder")
    move.add_argument("--out", type=_path, required=True, help="folder for the new ticket files")
    move.add_argument("text", type=_text, metavar="TICKET_TEXT", help="the ticket being passed on")

    wallet = sub.add_parser("wallet", help="a rotating ticket's holder side: device key, codes")
    wallet_sub = wallet.add_subparsers(dest="wallet_command", required=True)
    wallet_key = wallet_sub.add_parser("key", help="a new P-256 device key (KEYFILE, KEYFILE.pub)")
    wallet_key.add_argument("keyfile", type=_path, metavar="KEYFILE", help="private key to write")
    code = wallet_sub.add_parser("code", help="print the code a holder's device shows")
    code.add_argument("--ticket", type=_path, required=True, help="a rotating ticket's file")
    code.add_argument(
        "--device-key", type=_path, required=True, metavar="KEYFILE", help="PEM private key"
    )
    code.add_argument("--at", type=_iso, metavar="ISO", help="the device's time (default: now)")
    serve = wallet_sub.add_parser("serve", help="the wallet page on 127.0.0.1 (no issuing)")
    serve.add_argument(
        "--port", type=_whole, default=8472, help="port on 127.0.0.1 (default 8472, 0: any free)"
    )

    check = sub.add_parser("check", help="explain one ticket: fields, signature, rules, verdict")
    src = check.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=_path, help="a gate's config: its trust, lists and journal")
    src.add_argument("--keys", type=_path, help="a `keys init` folder")
    src.add_argument(
        "--pretix-event", type=_path, metavar="FILE", help="pretix event body (with valid_keys)"
    )
    check.add_argument(
        "--revocations",
        type=_path,
        action="append",
        default=[],
        help="a signed revocation file (repeat for more)",
    )
    check.add_argument(
        "--pretix-list", type=_path, metavar="FILE", help="one pretix check-in list object"
    )
    check.add_argument(
        "--pretix-revoked",
        type=_path,
        metavar="FILE",
        action="append",
        default=[],
        help="a pretix revokedsecrets/ page (repeat for more pages)",
    )
    check.add_argument(
        "--pretix-blocked",
        type=_path,
        metavar="FILE",
        action="append",
        default=[],
        help="a pretix blockedsecrets/ page (repeat for more pages)",
    )
    check.add_argument("--zone", type=_zone, help="zone 1-16 (default: the config's)")
    check.add_argument("--at", type=_iso, help="decide as of this time (ISO-8601)")
    check.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    what = check.add_mutually_exclusive_group(required=True)
    what.add_argument("text", nargs="?", type=_text, help="the ticket's text")
    what.add_argument("--image", type=_path, metavar="FILE", help="a photo or scan of the code")
    check.add_argument(
        "--engine",
        choices=("zxing", "pyzbar"),
        default="zxing",
        help="with --image: the camera driver's decoder engine (default zxing)",
    )

    run = sub.add_parser("run", help="run the gate daemon")
    run.add_argument("--config", type=_path, required=True, help="the gate's config")

    selftest = sub.add_parser("selftest", help="open each configured device and report")
    selftest.add_argument("--config", type=_path, default=INSTALLED_CONFIG, help=_WHERE)
    selftest.add_argument("--relay", action="store_true", help="pulse the relay once")
    selftest.add_argument("--scan", action="store_true", help="wait for one scan, show verdict")
    selftest.add_argument(
        "--config-only",
        action="store_true",
        help="check only the config and the files it names (trust, lists); open no device",
    )
    selftest.add_argument(
        "--hub",
        action="store_true",
        help="check the [hub] link instead: URL, CA, client certificate, token, venue",
    )

    demo = sub.add_parser("demo", help="run a simulated gate through a scenario")
    demo.add_argument("--dir", type=_path, help="keep keys, tickets and state here")
    _hub_parser(sub)
    status = sub.add_parser("status", help="the running gate's health in a few lines")
    status.add_argument("--config", type=_path, default=INSTALLED_CONFIG, help=_WHERE)
    status.add_argument("--json", action="store_true", help="the whole /status answer as JSON")
    events = sub.add_parser("events", help="the journal's decisions, for security staff")
    events.add_argument("--config", type=_path, default=INSTALLED_CONFIG, help=_WHERE)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new ones")
    events.add_argument("--denied", action="store_true", help="denied attempts only")
    events.add_argument("--duplicates", action="store_true", help="'already used' denials only")
    events.add_argument("--ticket", metavar="ID", help="one ticket: its short id or its text")
    events.add_argument(
        "--alerts", action="store_true", help="the security alerts kept (pretix) instead"
    )
    events.add_argument(
        "--last",
        "-n",
        type=_whole,
        help="how many of the newest matching rows to show first (default 20; --alerts: all)",
    )
    events.add_argument("--json", action="store_true", help="JSON lines")
    return p


def _hub_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    journal = sub.add_parser("journal", help="journal upkeep").add_subparsers(
        dest="journal_command", required=True
    )
    prune = journal.add_parser("prune", help="delete entries synced upstream and older than AGE")
    prune.add_argument("--config", type=_path, default=INSTALLED_CONFIG, help=_WHERE)
    prune.add_argument(
        "--synced-older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 90m, 3600s"
    )

    hub = sub.add_parser(
        "hub", help="run the hub, or administer its tokens, revocations and alerts"
    )
    hub.add_argument(
        "--config",
        type=_path,
        help=f"the hub's TOML config (required to run the hub; for --check and the commands"
        f" below, default {INSTALLED_HUB_CONFIG})",
    )
    hub.add_argument(
        "--check",
        action="store_true",
        help="check the config and the files it names (keys, bundle, TLS), then exit",
    )
    admin = hub.add_subparsers(
        dest="hub_command", metavar="{token,revoke,ticket,alerts,quarantine}"
    )
    token = admin.add_parser("token", help="make a gate, console or issuing token (printed once)")
    revoke = admin.add_parser("revoke", help="issue a signed revocation delta at the hub")
    ticket = admin.add_parser("ticket", help="a ticket's history across the venue's gates")
    ticket.add_argument(
        "id",
        metavar="ID",
        help="the ticket's 8-hex short id, its text, its 32-hex token id or 16-hex ticket id",
    )
    alerts = admin.add_parser("alerts", help="the venue's alerts, oldest first")
    alerts.add_argument("--follow", "-f", action="store_true", help="keep printing new ones")
    alerts.add_argument("--json", action="store_true", help="one JSON object per line")
    quarantine = admin.add_parser(
        "quarantine",
        help="set apart a gate's rows from a gate_seq on (a copy of its token wrote them)",
    )
    quarantine.add_argument(
        "--gate", metavar="ID", required=True, help="the gate (its tokens revoked)"
    )
    quarantine.add_argument(
        "--from-seq",
        type=_whole,
        required=True,
        metavar="N",
        help="the first gate_seq to set apart (the integrity alert: 'gate_seq N reused')",
    )
    quarantine.add_argument(
        "--dry-run", action="store_true", help="list the rows it would set apart, move nothing"
    )
    # SUPPRESS: `hub --config F token` and `hub token --config F`
    for p in (token, revoke, ticket, alerts, quarantine):
        p.add_argument(
            "--config",
            type=_path,
            default=argparse.SUPPRESS,
            help=f"the hub's config (default {INSTALLED_HUB_CONFIG})",
        )
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--gate", metavar="ID", help="a token bound to this gate")
    who.add_argument("--console", metavar="NAME", help="a security console token")
    who.add_argument(
        "--issuing", metavar="NAME", help="a token for the wallet's POST /v1/wallet/tickets"
    )
    who.add_argument("--revoke-gate", metavar="ID", help="delete every token of this gate")
    who.add_argument("--revoke-console", metavar="NAME", help="delete this console token")
    who.add_argument("--revoke-issuing", metavar="NAME", help="delete this issuing token")
    token.add_argument(
        "--name", help="with --gate: the gate's name in the venue, unique (e.g. 'Gate 3')"
    )
    token.add_argument(
        "--out",
        type=_path,
        metavar="FILE",
        help="write the token to FILE (mode 0600) instead of printing it",
    )
    token.add_argument("--force", action="store_true", help="with --out: replace an existing FILE")
    token.add_argument(
        "--owner",
        metavar="USER[:GROUP]",
        help="with --out, as root: the file's owner, e.g. gate-agent (the gate's service user)",
    )
    revoke.add_argument(
        "--op",
        choices=("revoke", "unrevoke", "block", "unblock"),
        default="revoke",
        help="what to do with the items (default revoke)",
    )
    revoke.add_argument(
        "--file", type=_path, help="import: one ticket text or 32-hex token id per line"
    )
    revoke.add_argument(
        "items",
        nargs="*",
        metavar="TICKET_TEXT_OR_TOKEN_ID",
        help="tickets or 32-hex token ids (an 8-hex short id is looked up, see README)",
    )
