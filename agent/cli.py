"""The `gate-agent` command line. Logging is configured here and nowhere else.

Exit status: 0 success (for `check`: would admit), 1 denied or a check failed, 2 usage error (a bad
option or input file) or a fault, 78 (EX_CONFIG) a config error: the gate's or hub's config file, or
a file it names, is missing or wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import AgentError, ConfigError, IssuerError, TrustError, UsageError

if TYPE_CHECKING:
    from sync.hub_config import HubConfig

log = logging.getLogger("agent.cli")


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {value!r}"
        ) from None


def _zone(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 16:
        raise argparse.ArgumentTypeError(f"a zone is a number 1-16, got {value!r}")
    return int(value)


def _iso(value: str) -> int:
    from agent.issuer import parse_iso

    try:
        return parse_iso(value)
    except AgentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("gate-agent")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


INSTALLED_CONFIG = Path("/etc/gate-agent/gate.toml")  # where systemd/install puts it
_WHERE = f"the gate's config (default {INSTALLED_CONFIG})"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gate-agent", description="Offline ticket validation agent for turnstiles."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="issuer key management").add_subparsers(
        dest="keys_command", required=True
    )
    init = keys.add_parser("init", help="make root, issuer and list-signing keys and a bundle")
    init.add_argument("dir", type=Path, help="the keys folder to create (keep it off gates, hub)")
    init.add_argument(
        "--alg", choices=("ed25519", "p256"), default="ed25519", help="issuer key algorithm"
    )
    init.add_argument("--kid", type=int, help="the issuer key's id (default: random)")
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
    export.add_argument("--hub", type=Path, required=True, metavar="DIR", help="the hub's keys")
    export.add_argument("--keys", type=Path, required=True, help="a `keys init` dir")
    export.add_argument("--force", action="store_true", help="replace differing files in DIR")

    issue = sub.add_parser("issue", help="write tickets (NAME.txt + NAME.png QR code)")
    issue.add_argument("--keys", type=Path, required=True, help="a `keys init` folder")
    issue.add_argument("--event", type=int, required=True, help="the event number")
    issue.add_argument("--zones", type=_int_list, help="zones 1-16, e.g. 1,2 (default: every zone)")
    issue.add_argument(
        "--not-before", type=_iso, metavar="ISO", help="valid from (default: no start)"
    )
    issue.add_argument(
        "--not-after", type=_iso, metavar="ISO", help="valid until (default: no end)"
    )
    issue.add_argument("--count", type=int, default=1, help="how many tickets (default 1)")
    issue.add_argument(
        "--out", type=Path, required=True, help="folder for NAME.txt and NAME.png per ticket"
    )

    revoke = sub.add_parser("revoke", help="write a signed revocation delta")
    revoke.add_argument("--keys", type=Path, required=True, help="a `keys init` folder")
    revoke.add_argument("--out", type=Path, required=True, help="the delta file to write")
    revoke.add_argument(
        "--op",
        choices=("revoke", "unrevoke", "block", "unblock"),
        default="revoke",
        help="what to do with the items (default revoke)",
    )
    revoke.add_argument(
        "items", nargs="+", metavar="TICKET_TEXT_OR_TOKEN_ID", help="tickets or 32-hex token ids"
    )

    check = sub.add_parser("check", help="explain one ticket: fields, signature, rules, verdict")
    src = check.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="a gate's config: its trust, lists and journal")
    src.add_argument("--keys", type=Path, help="a `keys init` folder")
    src.add_argument(
        "--pretix-event", type=Path, metavar="FILE", help="pretix event body (with valid_keys)"
    )
    check.add_argument(
        "--revocations",
        type=Path,
        action="append",
        default=[],
        help="a signed revocation file (repeat for more)",
    )
    check.add_argument(
        "--pretix-list", type=Path, metavar="FILE", help="one pretix check-in list object"
    )
    check.add_argument(
        "--pretix-revoked",
        type=Path,
        metavar="FILE",
        action="append",
        default=[],
        help="a pretix revokedsecrets/ page (repeat for more pages)",
    )
    check.add_argument(
        "--pretix-blocked",
        type=Path,
        metavar="FILE",
        action="append",
        default=[],
        help="a pretix blockedsecrets/ page (repeat for more pages)",
    )
    check.add_argument("--zone", type=_zone, help="zone 1-16 (default: the config's)")
    check.add_argument("--at", type=_iso, help="decide as of this time (ISO-8601)")
    check.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    what = check.add_mutually_exclusive_group(required=True)
    what.add_argument("text", nargs="?", help="the ticket's text")
    what.add_argument("--image", type=Path, metavar="FILE", help="a photo or scan of the code")
    check.add_argument(
        "--engine",
        choices=("zxing", "pyzbar"),
        default="zxing",
        help="with --image: the camera driver's decoder engine (default zxing)",
    )

    run = sub.add_parser("run", help="run the gate daemon")
    run.add_argument("--config", type=Path, required=True, help="the gate's config")

    selftest = sub.add_parser("selftest", help="open each configured device and report")
    selftest.add_argument("--config", type=Path, default=INSTALLED_CONFIG, help=_WHERE)
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
    demo.add_argument("--dir", type=Path, help="keep keys, tickets and state here")
    _hub_parser(sub)
    status = sub.add_parser("status", help="the running gate's health in a few lines")
    status.add_argument("--config", type=Path, default=INSTALLED_CONFIG, help=_WHERE)
    status.add_argument("--json", action="store_true", help="the whole /status answer as JSON")
    events = sub.add_parser("events", help="the journal's decisions, for security staff")
    events.add_argument("--config", type=Path, default=INSTALLED_CONFIG, help=_WHERE)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new ones")
    events.add_argument("--denied", action="store_true", help="denied attempts only")
    events.add_argument("--duplicates", action="store_true", help="'already used' denials only")
    events.add_argument("--ticket", metavar="ID", help="one ticket: its short id or its text")
    events.add_argument("--last", "-n", type=int, default=20, help="how many to show first")
    events.add_argument("--json", action="store_true", help="JSON lines")
    return p


def _hub_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    journal = sub.add_parser("journal", help="journal upkeep").add_subparsers(
        dest="journal_command", required=True
    )
    prune = journal.add_parser("prune", help="delete entries synced upstream and older than AGE")
    prune.add_argument("--config", type=Path, default=INSTALLED_CONFIG, help=_WHERE)
    prune.add_argument(
        "--synced-older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 90m, 3600s"
    )

    hub = sub.add_parser("hub", help="run the hub, or administer its tokens and revocations")
    hub.add_argument("--config", type=Path, help="the hub's TOML config")
    hub.add_argument(
        "--check",
        action="store_true",
        help="check the config and the files it names (keys, bundle, TLS), then exit",
    )
    admin = hub.add_subparsers(dest="hub_command", metavar="{token,revoke}")
    token = admin.add_parser("token", help="make a gate or console token (printed once)")
    revoke = admin.add_parser("revoke", help="issue a signed revocation delta at the hub")
    for p in (token, revoke):  # SUPPRESS: `hub --config F token` and `hub token --config F`
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="the hub's config")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--gate", metavar="ID", help="a token bound to this gate")
    who.add_argument("--console", metavar="NAME", help="a security console token")
    who.add_argument("--revoke-gate", metavar="ID", help="delete every token of this gate")
    token.add_argument(
        "--name", help="with --gate: the gate's name in the venue, unique (e.g. 'Gate 3')"
    )
    token.add_argument(
        "--out",
        type=Path,
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
        "--file", type=Path, help="import: one ticket text or 32-hex token id per line"
    )
    revoke.add_argument(
        "items", nargs="*", metavar="TICKET_TEXT_OR_TOKEN_ID", help="tickets or 32-hex token ids"
    )


class JsonLines(logging.Formatter):
    """One JSON object per record, for journald (``JOURNAL_STREAM`` set by systemd)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM") and os.environ.get("GATE_AGENT_LOG_FORMAT") != "text":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    # aiosqlite's DEBUG trace logs every SQL call with its parameters, and a pretix ticket_ref
    # is "pretix:" + the secret. Set on its own logger, so [log] level = "DEBUG" leaves it off.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    logging.Formatter.converter = time.gmtime


def _keys(args: argparse.Namespace) -> int:
    return _keys_export(args) if args.keys_command == "export" else _keys_init(args)


def _keys_export(args: argparse.Namespace) -> int:
    from agent import issuer

    for done in issuer.export_hub(args.keys, args.hub, force=args.force):
        what = "wrote" if done.written else "unchanged"
        print(f"{what} {done.path} ({done.mode:04o})")
    print(f'set the hub\'s [hub] keys = "{args.hub}"; root.key and issuer.key stay off the hub')
    return 0


def _keys_init(args: argparse.Namespace) -> int:
    from agent import issuer

    replacing = args.force and (args.dir / "root.key").exists()
    info = issuer.keys_init(
        args.dir, alg=args.alg, kid=args.kid, events=args.events, force=args.force
    )
    if replacing:
        print(
            "gate-agent: warning: a new root key: every ticket issued before and every gate's"
            " trust are invalid until gates get the new root.pub and trust.json",
            file=sys.stderr,
        )
    print(
        f"keys written to {info.dir} (issuer kid {info.kid}, {info.alg}); "
        f"give gates {info.dir / 'root.pub'} and {info.dir / 'trust.json'}"
    )
    return 0


def _issue(args: argparse.Namespace) -> int:
    from agent import issuer

    if args.count < 1 or args.count > 100_000:
        raise UsageError("--count must be 1-100000")
    paths = issuer.issue_files(
        issuer.Issuer.load(args.keys),
        args.out,
        event=args.event,
        zones=args.zones,
        not_before=args.not_before,
        not_after=args.not_after,
        count=args.count,
    )
    print(f"{_plural(len(paths), 'ticket')} written to {args.out}")
    print(f"valid {_validity(args)}")
    return 0


def _plural(count: int, word: str, plural: str | None = None) -> str:
    """``1 ticket``, ``2 tickets``; ``plural`` for irregular words (``entry``/``entries``)."""
    return f"{count:,} {word if count == 1 else plural or word + 's'}"


def _validity(args: argparse.Namespace) -> str:
    """What `issue` gave the tickets, spelt out (the defaults are open-ended and every zone)."""
    from datetime import UTC, datetime

    def when(ts: int) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")

    nb, na = args.not_before, args.not_after
    if nb is None and na is None:
        window = "at any time: no validity window (set one with --not-before/--not-after)"
    elif na is None:
        window = f"from {when(nb)}, with no end (--not-after sets one)"
    elif nb is None:
        window = f"until {when(na)}, with no start (--not-before sets one)"
    else:
        window = f"from {when(nb)} until {when(na)}"
    zones = "every zone (1-16)" if args.zones is None else "zones " + ",".join(map(str, args.zones))
    return f"for event {args.event}, {zones}, {window}"


def _revoke(args: argparse.Namespace) -> int:
    from agent import issuer, revocation_issuer

    keys_ = [revocation_issuer.revocation_key(item) for item in args.items]
    loaded = issuer.Issuer.load(args.keys)
    ops: dict[str, list[bytes]] = {args.op: keys_}
    data = revocation_issuer.issue_delta(
        loaded.list_key,
        args.keys / "revocations.state.json",
        revoke=ops.get("revoke", ()),
        unrevoke=ops.get("unrevoke", ()),
        block=ops.get("block", ()),
        unblock=ops.get("unblock", ()),
    )
    args.out.write_bytes(data)
    print(f"{args.op}: {_plural(len(keys_), 'entry', 'entries')} written to {args.out}")
    return 0


def _check_sources(args: argparse.Namespace) -> None:
    """Options that belong to another trust source are usage errors, not silently ignored."""
    pretix = {
        "--pretix-list": args.pretix_list is not None,
        "--pretix-revoked": bool(args.pretix_revoked),
        "--pretix-blocked": bool(args.pretix_blocked),
    }
    if args.pretix_event is None:
        given = [name for name, present in pretix.items() if present]
        if given:
            raise UsageError(f"{', '.join(given)} need --pretix-event")
        return
    other = {"--revocations": bool(args.revocations), "--zone": args.zone is not None}
    given = [name for name, present in other.items() if present]
    if given:
        raise UsageError(
            f"{', '.join(given)} cannot be used with --pretix-event"
            " (pretix lists: --pretix-revoked, --pretix-blocked; pretix has no zones)"
        )


def _check(args: argparse.Namespace) -> int:
    from agent.inspect import CheckRequest, check

    _check_sources(args)
    req = CheckRequest(
        text=args.text,
        image=args.image,
        config=args.config,
        keys=args.keys,
        revocations=args.revocations,
        zone=args.zone,
        at=args.at,
        as_json=args.json,
        pretix_event=args.pretix_event,
        pretix_list=args.pretix_list,
        pretix_revoked=args.pretix_revoked,
        pretix_blocked=args.pretix_blocked,
        engine=args.engine,
    )
    return asyncio.run(check(req, sys.stdout))


def _run(args: argparse.Namespace) -> int:
    from agent import config, daemon

    conf = config.load(args.config)
    logging.getLogger().setLevel(conf.log.level)
    return asyncio.run(daemon.run(conf))


def _journal(args: argparse.Namespace) -> int:
    from agent import config, retention

    try:
        age = retention.parse_age(args.synced_older_than)
    except ConfigError as exc:
        raise UsageError(f"--synced-older-than: {exc}") from None
    conf = config.load(args.config)
    path = conf.gate.state_dir / "journal.db"
    if os.geteuid() == 0 and path.exists() and path.stat().st_uid != 0:
        # Root would leave root-owned -wal/-shm files the gate's own user cannot open.
        raise UsageError(f"{path} belongs to another user: run this as that user (sudo -u ...)")
    done = retention.prune(path, age)
    if done.entries or done.peer_entries:
        print(
            f"pruned {_plural(done.entries, 'entry', 'entries')} (gate_seq up to"
            f" {done.pruned_through:,}) and {_plural(done.peer_entries, 'peer entry', 'peer entries')}"
            f" synced and older than {args.synced_older_than}"
        )
    else:
        print(f"nothing to prune: no synced entries older than {args.synced_older_than}")
    print(
        f"kept {_plural(done.kept, 'entry', 'entries')} ({done.kept_unsynced:,} not yet synced"
        " upstream: never"
        f" pruned); {done.free_pages * done.page_size / 1e6:.1f} MB free in the file for new rows"
    )
    return 0


def _selftest(args: argparse.Namespace) -> int:
    from agent import selftest

    if args.hub:
        if args.relay or args.scan or args.config_only:
            raise UsageError("selftest: --hub checks the hub link alone (no --relay, --scan)")
        return asyncio.run(selftest.run_hub(args.config, out=sys.stdout))
    if args.config_only:
        return selftest.check_config(args.config, sys.stdout)
    return asyncio.run(selftest.run(args.config, relay=args.relay, scan=args.scan, out=sys.stdout))


def _status(args: argparse.Namespace) -> int:
    from agent import config, ops

    return ops.status(config.load(args.config), sys.stdout, as_json=args.json)


def _events(args: argparse.Namespace) -> int:
    from agent import config, ops

    if args.last < 1:
        raise UsageError("--last must be >= 1")
    flt = ops.EventFilter(denied=args.denied, duplicates=args.duplicates, ticket=args.ticket)
    try:
        return asyncio.run(
            ops.events(
                config.load(args.config), flt, sys.stdout,
                follow=args.follow, as_json=args.json, last=args.last,
            )
        )  # fmt: skip
    except BrokenPipeError:  # `gate-agent events | head`: the reader has all it wanted
        _stdout_closed()
        return 0


def _demo(args: argparse.Namespace) -> int:
    from agent import demo

    return asyncio.run(demo.main(args.dir))


def _hub(args: argparse.Namespace) -> int:
    from sync import hub_config

    if args.config is None:
        raise UsageError("hub: --config FILE is required")
    conf = hub_config.load(args.config)
    if args.check and args.hub_command is None:
        return _hub_check(conf)
    if args.hub_command is None:
        from sync import hub

        logging.getLogger().setLevel(conf.log.level)
        try:
            return asyncio.run(hub.run(conf))
        except (TrustError, IssuerError) as exc:  # the list key or bundle in [hub] keys
            raise ConfigError(f"{conf.path}: [hub] keys: {exc}") from exc
    if args.hub_command == "token":
        return asyncio.run(_hub_token(args, conf))
    return asyncio.run(_hub_revoke(args, conf))


def _hub_check(conf: HubConfig) -> int:
    """What the hub reads at start besides its store: TLS files, list key, trust bundle."""
    from sync import hub_admin, hub_config

    hub_config.ssl_context(conf)
    hub_admin.load_list_key(conf)
    hub_admin.TrustFile(conf)
    print(f"OK   hub config {conf.path}: venue {conf.hub.venue}, listen {conf.hub.listen}")
    return 0


async def _hub_token(args: argparse.Namespace, conf: HubConfig) -> int:
    from sync import hub_admin

    if args.name is not None and args.gate is None:
        print("gate-agent: hub token: --name goes with --gate", file=sys.stderr)
        return 2
    if args.out is None and (args.force or args.owner is not None):
        raise UsageError("hub token: --force and --owner go with --out FILE")
    if args.revoke_gate is not None:
        if args.out is not None:
            raise UsageError("hub token: --out goes with --gate or --console")
        count = await hub_admin.revoke_gate(conf, args.revoke_gate)
        print(f"{_plural(count, 'token')} of gate {args.revoke_gate} deleted")
        return 0
    # The file is checked before the token exists: a refused file leaves no orphan token.
    where = None
    if args.out is not None:
        where = hub_admin.token_file(args.out, force=args.force, owner=args.owner)
    if args.gate is not None:
        token = await hub_admin.add_gate_token(conf, args.gate, args.name)
    else:
        token = await hub_admin.add_console_token(conf, args.console)
    if where is None:
        print(token)
        print("store this token now: the hub keeps only its hash", file=sys.stderr)
        return 0
    try:
        hub_admin.write_token_file(where, token)
    except OSError as exc:
        raise UsageError(f"--out {where.path}: {exc.strerror or exc}") from exc
    owner = f", owner {where.owner}" if where.owner else ""
    print(f"token written to {where.path} (mode 0600{owner})")
    return 0


async def _hub_revoke(args: argparse.Namespace, conf: HubConfig) -> int:
    from sync import hub_admin

    items = hub_admin.parse_items(args.items)
    if args.file is not None:
        items += hub_admin.read_items(args.file)
    done = await hub_admin.issue(conf, args.op, items)
    print(
        f"revocation list version {done.version}: {_plural(done.changed, 'key')} {_PAST[args.op]}"
        f" (list: {len(done.state.revoked):,} revoked, {len(done.state.blocked):,} blocked)"
    )
    return 0


_PAST = {"revoke": "revoked", "unrevoke": "unrevoked", "block": "blocked", "unblock": "unblocked"}


# sysexits' EX_CONFIG: what `run` and the hub exit with on a bad config. The units name it in
# RestartPreventExitStatus=, so systemd does not restart into the same error again and again.
EX_CONFIG = 78


# Bits every file and folder this process creates leaves out: group and others get nothing.
PRIVATE_UMASK = 0o077


def _private_files() -> None:
    """Narrow the process umask so whatever gate-agent creates (journal, hub database and their
    -wal/-shm, state files, tickets, keys) is 0600 and its folders 0700, also when started from a
    shell with a permissive umask. Bits the inherited umask already sets stay set."""
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)


def _stdout_closed() -> None:
    """Point stdout at /dev/null after its reader went away (`gate-agent events | head -1`), so
    the interpreter's final flush raises no second BrokenPipeError (Python docs, "Note on
    SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gate-agent` console script."""
    _private_files()
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a reader gone before the last buffered line
        return code
    except BrokenPipeError:
        _stdout_closed()
        return 1  # as Python itself exits on EPIPE


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    quiet = args.command in (
        "check", "demo", "keys", "issue", "selftest", "revoke", "status", "events", "journal"
    )  # fmt: skip
    _setup_logging(args.verbose, quiet=quiet or getattr(args, "hub_command", None) is not None)
    handlers = {
        "keys": _keys,
        "issue": _issue,
        "revoke": _revoke,
        "check": _check,
        "run": _run,
        "selftest": _selftest,
        "demo": _demo,
        "hub": _hub,
        "status": _status,
        "events": _events,
        "journal": _journal,
    }
    try:
        return handlers[args.command](args)
    except AgentError as exc:
        print(f"gate-agent: error: {exc}", file=sys.stderr)
        return EX_CONFIG if isinstance(exc, ConfigError) else 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # stdout's reader went away: handled in main()
    except Exception:  # a bug: never exit 1, which scripts read as "denied"
        log.exception("internal error")
        return 2


if __name__ == "__main__":
    sys.exit(main())
