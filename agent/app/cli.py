"""The `gate-agent` command line. Logging is configured here and nowhere else.

Exit status: 0 success (for `check`: would admit), 1 denied or a check failed, 2 usage error (a bad
option or input file) or a fault, 78 (EX_CONFIG) a config error: the gate's or hub's config file, or
a file it names, is missing or wrong, or the journal or hub store at its place is not one it may
use (another gate's or venue's, of a newer version, not one at all): starting again cannot mend it.
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
from typing import Literal

from agent.app.cli_args import build_parser
from agent.errors import AgentError, ConfigError, UsageError
from agent.words import plural

log = logging.getLogger(__name__)


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
    if args.keys_command == "issuer":
        return _keys_issuer(args)
    return _keys_export(args) if args.keys_command == "export" else _keys_init(args)


def _keys_issuer(args: argparse.Namespace) -> int:
    from agent import issuer

    info = issuer.keys_issuer(args.dir, alg=args.alg, kid=args.kid, force=args.force)
    print(
        f"issuer key written to {info.dir} (kid {info.kid}, {info.alg}); give the root operator"
        f" {info.dir / issuer.ISSUER_PUB} (`gate-agent trust add`), keep issuer.key here"
    )
    return 0


def _trust(args: argparse.Namespace) -> int:
    """`trust add|retire|compromise`: prints the bundle version written (operators' scripts
    read the first word of the line)."""
    from agent import trust_admin

    if args.trust_command == "add":
        done = trust_admin.add_issuer(
            args.keys, args.source, kid=args.kid, events=args.events,
            not_before=args.not_before, not_after=args.not_after,
        )  # fmt: skip
        print(f"{done.version} (kid {done.kid} added as active; publish {done.path})")
        return 0
    if args.trust_command == "rotate-root":
        done = trust_admin.rotate_root(args.keys)
        print(
            f"{done.version} (new root key in {args.keys / 'root.key'}; publish {done.path} to"
            " every gate and the hub; give new gates the new root.pub; destroy root.key.old once"
            " every gate runs this version)"
        )
        return 0
    status: Literal["retired", "compromised"] = (
        "retired" if args.trust_command == "retire" else "compromised"
    )
    changed = trust_admin.set_status(args.keys, args.kid, status)
    if not changed.changed:
        print(f"{changed.version} (kid {args.kid} was already {status}; nothing written)")
        return 0
    print(f"{changed.version} (kid {changed.kid} {status}; publish {changed.path})")
    return 0


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
    from agent import issuer, ticket_files

    if args.count < 1 or args.count > 100_000:
        raise UsageError("--count must be 1-100000")
    device_key = None
    if args.device_key is not None:
        from agent import wallet

        device_key = wallet.device_public_bytes(args.device_key)
    signer = issuer.TicketSigner.load(args.keys)
    _refuse_inactive(args.keys, signer.kid, "no ticket written")
    if signer.events is not None and str(args.event) not in signer.events:
        raise UsageError(  # every gate would refuse them (key_not_valid): write none
            f"--event {args.event}: issuer key {signer.kid} may sign for event"
            f"{'s' if len(signer.events) != 1 else ''} {', '.join(signer.events)} only"
            " (its trust bundle entry); no ticket written"
        )
    paths = ticket_files.issue_files(
        signer,
        args.out,
        event=args.event,
        zones=args.zones,
        not_before=args.not_before,
        not_after=args.not_after,
        count=args.count,
        device_key=device_key,
    )
    kind = "ticket" if device_key is None else "rotating ticket"
    print(f"{plural(len(paths), kind)} written to {args.out}")
    print(f"valid {_validity(args)}")
    return 0


def _refuse_inactive(keys_dir: Path, kid: int, nothing: str) -> None:
    """Raise UsageError when the bundle kept in ``keys_dir`` marks issuer ``kid`` retired or
    compromised (an issuer's own folder keeps none: nothing to check then)."""
    from agent import issuer, trust_admin

    status = trust_admin.status_of(keys_dir, kid)
    if status not in ("retired", "compromised"):
        return
    gates = (
        "every gate refuses its tickets (key_not_valid)" if status == "compromised"
        else "it signs no new tickets (its tickets issued before stay valid)"
    )  # fmt: skip
    raise UsageError(
        f"issuer key {kid} is {status} in {keys_dir / issuer.TRUST_BUNDLE}: {gates};"
        f" issue under an active key (gate-agent keys issuer, then trust add); {nothing}"
    )


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

    # The same ticket given twice (its text and its id, say) is one entry of the list.
    keys_ = list(dict.fromkeys(revocation_issuer.revocation_key(item) for item in args.items))
    loaded = issuer.Issuer.load(args.keys)
    ops: dict[str, list[bytes]] = {args.op: keys_}
    revocation_issuer.issue_delta(
        loaded.list_key,
        args.keys / "revocations.state.json",
        revoke=ops.get("revoke", ()),
        unrevoke=ops.get("unrevoke", ()),
        block=ops.get("block", ()),
        unblock=ops.get("unblock", ()),
        out=args.out,
    )
    print(f"{args.op}: {plural(len(keys_), 'entry', 'entries')} written to {args.out}")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from agent import issuer, transfer

    signer = issuer.Issuer.load(args.keys)
    _refuse_inactive(args.keys, signer.kid, "nothing transferred, nothing revoked")
    done = transfer.transfer(signer, args.out, args.text)
    print(f"ticket {done.short_id} transferred: new text {done.ticket} (and .png)")
    print(f"revocation of the old text: {done.revocation} (publish it like `revoke` output)")
    return 0


def _wallet(args: argparse.Namespace) -> int:
    import time

    from agent import wallet

    if args.wallet_command == "key":
        public = wallet.new_device_key(args.keyfile)
        print(f"device key {args.keyfile} (keep it on the device); public key {public}")
        return 0
    if args.wallet_command == "serve":
        import asyncio

        from agent.app import wallet_serve

        if not 0 <= args.port <= 65535:
            raise UsageError("--port must be 0-65535")
        return asyncio.run(wallet_serve.serve(args.port))
    at = int(time.time()) if args.at is None else args.at
    if not 0 <= at <= 0xFFFFFFFF:  # a code's time is 32 bits: 1970 to 2106
        raise UsageError("--at: a code's time must be between 1970 and 2106-02-07")
    print(wallet.code(args.ticket, args.device_key, at))
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
    from agent.app.check import CheckRequest, check

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
    from agent.app import config, daemon

    conf = config.load(args.config)
    logging.getLogger().setLevel(conf.log.level)
    return asyncio.run(daemon.run(conf))


SHORT_RETENTION_S = 86400.0


def _journal(args: argparse.Namespace) -> int:
    from agent.app import config, retention

    try:
        age = retention.parse_age(args.synced_older_than)
    except ConfigError as exc:
        raise UsageError(f"--synced-older-than: {exc}") from None
    conf = config.load(args.config)
    path = conf.gate.state_dir / "journal.db"
    if os.geteuid() == 0 and path.exists() and path.stat().st_uid != 0:
        # Root would leave root-owned -wal/-shm files the gate's own user cannot open.
        raise UsageError(f"{path} belongs to another user: run this as that user (sudo -u ...)")
    if age < SHORT_RETENTION_S:  # found trying the product: 1s, and tickets worked again
        print(
            f"warning: --synced-older-than {args.synced_older_than} is under a day: a pruned"
            " admission no longer counts against its ticket at this gate, so a ticket still"
            " valid can be admitted here again; keep more than the longest time a ticket"
            " stays valid (an event's days, a season)",
            file=sys.stderr,
        )
    done = retention.prune(path, age, gate_id=conf.gate.id)
    if done.entries or done.peer_entries:
        print(
            f"pruned {plural(done.entries, 'entry', 'entries')} (gate_seq up to"
            f" {done.pruned_through:,}) and {plural(done.peer_entries, 'peer entry', 'peer entries')}"
            f" synced and older than {args.synced_older_than}"
        )
    else:
        print(f"nothing to prune: no synced entries older than {args.synced_older_than}")
    print(
        f"kept {plural(done.kept, 'entry', 'entries')} ({done.kept_unsynced:,} not yet synced"
        " upstream: never"
        f" pruned); {done.free_pages * done.page_size / 1e6:.1f} MB free in the file for new rows"
    )
    return 0


def _selftest(args: argparse.Namespace) -> int:
    from agent.app import selftest, selftest_hub

    if args.hub:
        if args.relay or args.scan or args.config_only:
            raise UsageError("selftest: --hub goes alone (not with --relay, --scan, --config-only)")
        return asyncio.run(selftest_hub.run_hub(args.config, out=sys.stdout))
    if args.config_only:
        return selftest.check_config(args.config, sys.stdout)
    return asyncio.run(selftest.run(args.config, relay=args.relay, scan=args.scan, out=sys.stdout))


def _status(args: argparse.Namespace) -> int:
    from agent.app import config, gate_commands

    return gate_commands.status(config.load(args.config), sys.stdout, as_json=args.json)


def _events(args: argparse.Namespace) -> int:
    from agent.app import config, gate_commands

    if args.last is not None and args.last < 1:
        raise UsageError("--last must be >= 1")
    from agent.app.signals import until_signalled

    if args.alerts and (args.denied or args.duplicates):
        raise UsageError("--alerts lists alerts, not decisions: without --denied, --duplicates")
    flt = gate_commands.EventFilter(
        denied=args.denied, duplicates=args.duplicates, ticket=args.ticket, alerts=args.alerts
    )
    conf = config.load(args.config)

    async def listing(stop: asyncio.Event | None) -> int:
        # Alerts are few, and `status` counts them all: its hint lists each (a trial).
        last = args.last if args.last is not None else None if args.alerts else 20
        return await gate_commands.events(conf, flt, sys.stdout, follow=args.follow, as_json=args.json,
                                          last=last, stop=stop)  # fmt: skip

    try:  # following ends with SIGINT/SIGTERM (exit 0); a listing stops as any command does
        return asyncio.run(until_signalled(listing) if args.follow else listing(None))
    except BrokenPipeError:  # `gate-agent events | head`: the reader has all it wanted
        _stdout_closed()
        return 0


def _demo(args: argparse.Namespace) -> int:
    from agent.app import demo

    return asyncio.run(demo.main(args.dir))


def _hub(args: argparse.Namespace) -> int:
    from agent.app import hub_commands

    return hub_commands.hub(args)


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
    args = build_parser().parse_args(argv)
    quiet = args.command in (
        "check", "demo", "keys", "trust", "issue", "transfer", "selftest", "revoke", "status",
        "events", "journal", "wallet",
    )  # fmt: skip
    _setup_logging(args.verbose, quiet=quiet or getattr(args, "hub_command", None) is not None)
    handlers = {
        "keys": _keys,
        "trust": _trust,
        "issue": _issue,
        "transfer": _transfer,
        "wallet": _wallet,
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
