"""`gate-agent hub ...`: run the hub (:mod:`sync.hub`) or administer it at its store: tokens,
revocations (:mod:`sync.hub_admin`), a ticket's history and the alerts
(:mod:`sync.hub_admin_console`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from agent.app.cli_args import INSTALLED_HUB_CONFIG
from agent.errors import ConfigError, IssuerError, TrustError, UsageError
from agent.words import plural

if TYPE_CHECKING:
    from sync.hub_config import HubConfig
    from sync.hub_store import Role


def hub(args: argparse.Namespace) -> int:
    """`gate-agent hub`: run the hub, or one of its admin commands; returns the exit status."""
    from sync import hub_config

    if args.config is None:
        if args.hub_command is None and not args.check:
            raise UsageError("hub: --config FILE is required to run the hub")
        args.config = INSTALLED_HUB_CONFIG  # the admin commands: as the gate's read its own
    conf = hub_config.load(args.config)
    if args.hub_command is None:
        try:
            if args.check:
                return _hub_check(conf)
            from sync import hub

            logging.getLogger().setLevel(conf.log.level)
            return asyncio.run(hub.run(conf))
        except IssuerError as exc:  # the list key in [hub] keys
            raise ConfigError(f"{conf.path}: [hub] keys: {exc}") from exc
        except TrustError as exc:  # the bundle [hub] names
            where = "trust_bundle" if conf.hub.trust_bundle is not None else "keys"
            raise ConfigError(f"{conf.path}: [hub] {where}: {exc}") from exc
    if args.hub_command == "token":
        return asyncio.run(_hub_token(args, conf))
    if args.hub_command == "ticket":
        return asyncio.run(_hub_ticket(args, conf))
    if args.hub_command == "alerts":
        return asyncio.run(_hub_alerts(args, conf))
    if args.hub_command == "quarantine":
        return asyncio.run(_hub_quarantine(args, conf))
    return asyncio.run(_hub_revoke(args, conf))


def _hub_check(conf: HubConfig) -> int:
    """What the hub reads at start besides its store: TLS files, list key, trust bundle."""
    from sync import hub_admin, hub_config, hub_trust_file

    hub_config.ssl_context(conf)
    hub_admin.load_list_key(conf)
    older = hub_trust_file.TrustFile(conf, serving=False).older_file
    if older is not None:  # the hub starts, serving the newer copy it kept
        print(f"WARN trust    {older}")
    for warning in conf.warnings():
        print(f"WARN policy   {warning}")
    store = hub_admin.check_store(conf)
    print(f"OK   hub config {conf.path}: venue {conf.hub.venue}, listen {conf.hub.listen}; {store}")
    return 0


async def _hub_token(args: argparse.Namespace, conf: HubConfig) -> int:
    from agent.app import token_file
    from sync import hub_admin

    if args.name is not None and args.gate is None:
        print("gate-agent: hub token: --name goes with --gate", file=sys.stderr)
        return 2
    if args.out is None and (args.force or args.owner is not None):
        raise UsageError("hub token: --force and --owner go with --out FILE")
    named: tuple[tuple[Role, str | None], ...] = (
        ("console", args.revoke_console), ("issuing", args.revoke_issuing),
    )  # fmt: skip
    revoking = [(role, name) for role, name in named if name is not None]
    if args.revoke_gate is not None or revoking:
        if args.out is not None:
            raise UsageError("hub token: --out goes with --gate, --console or --issuing")
        if args.revoke_gate is not None:  # the options are mutually exclusive
            what, name = "gate", args.revoke_gate
            count = await hub_admin.revoke_gate(conf, name)
        else:
            ((what, name),) = revoking
            count = await hub_admin.revoke_named(conf, what, name)
        if not count:  # a typo must not look like a revocation done
            print(
                f"gate-agent: hub token: no {what} token {name} (nothing deleted)", file=sys.stderr
            )
            return 1
        print(f"{plural(count, 'token')} of {what} {name} deleted")
        return 0
    # The file is checked and written before the token is stored: a file that cannot be had
    # leaves no stored token nobody has.
    where, staged, token = None, None, hub_admin.new_token()
    if args.out is not None:
        where = token_file.checked(args.out, force=args.force, owner=args.owner)
        staged = token_file.stage(where, token)
    try:
        if args.gate is not None:
            await hub_admin.add_gate_token(conf, args.gate, args.name, token=token)
        elif args.issuing is not None:
            await hub_admin.add_console_token(conf, args.issuing, "issuing", token=token)
        else:
            await hub_admin.add_console_token(conf, args.console, token=token)
    except BaseException:
        if staged is not None:
            token_file.discard(staged)
        raise
    if where is None or staged is None:
        print(token)
        print("store this token now: the hub keeps only its hash", file=sys.stderr)
        return 0
    try:
        token_file.place(where, staged)
    except OSError as exc:  # the rename over the old file: the new token is written nowhere
        taken = ""
        if args.gate is None:  # a console or issuing name is taken by the token
            role = "issuing" if args.issuing is not None else "console"
            taken = f"; its name stays taken until `hub token --revoke-{role} NAME`"
        raise UsageError(
            f"--out {where.path}: {exc.strerror or exc}; the old file is as it was, and the token"
            f" stored for it is written nowhere, so no one holds it{taken}"
        ) from exc
    owner = f", owner {where.owner}" if where.owner else ""
    print(f"token written to {where.path} (mode 0600{owner})")
    return 0


async def _hub_revoke(args: argparse.Namespace, conf: HubConfig) -> int:
    from sync import hub_admin, hub_admin_console
    from sync.protocol_console import is_short_id

    # A short id names a ticket the hub has seen: the keys its gates uploaded with its rows.
    shorts = [item.lower() for item in args.items if is_short_id(item.lower())]
    items = await hub_admin_console.resolve_short_ids(conf, shorts) if shorts else []
    items += hub_admin.parse_items(i for i in args.items if not is_short_id(i.lower()))
    if args.file is not None:
        items += hub_admin.read_items(args.file)
    done = await hub_admin.issue(conf, args.op, items)
    if not done.changed:  # found in a user trial: a new version "revoking" what already was
        print(
            f"revocation list version {done.version}: nothing issued, every key given was already"
            f" {_PAST[args.op]}"
        )
        return 0
    print(
        f"revocation list version {done.version}: {plural(done.changed, 'key')} {_PAST[args.op]}"
        f" (list: {len(done.state.revoked):,} revoked, {len(done.state.blocked):,} blocked)"
    )
    return 0


async def _hub_quarantine(args: argparse.Namespace, conf: HubConfig) -> int:
    """Set apart a gate's rows from a gate_seq on (with --dry-run list them only); 1 when
    nothing was moved (a token left, or no such rows: a typo must not look like a quarantine)."""
    from sync import hub_admin, hub_admin_console

    gate, first, dry = args.gate, args.from_seq, args.dry_run
    done = await hub_admin.quarantine(conf, gate, first, dry_run=dry)
    tokens = plural(done.tokens, "token")
    if done.tokens and not dry:
        print(
            f"gate-agent: hub quarantine: gate {gate} still has {tokens}: revoke them first"
            f" (gate-agent hub token --revoke-gate {gate}); nothing was moved",
            file=sys.stderr,
        )
        return 1
    if not done.known:
        print(
            f"gate-agent: hub quarantine: no gate {gate} at this hub: it has no token and nothing"
            " came from it (nothing was moved; the id is the one `hub token --gate` was given,"
            " case counts; the console's gate list shows them)",
            file=sys.stderr,
        )
        return 1
    if not done.rows:
        print(
            f"gate-agent: hub quarantine: gate {gate} has no rows from gate_seq {first}"
            " (nothing was moved; the gate id is the one its token was made for, case counts;"
            " a quarantine done before is in `hub alerts`)",
            file=sys.stderr,
        )
        return 1
    for r in done.rows:
        print(
            f"gate_seq {r.gate_seq}  {r.kind:<7} ticket {r.short_id}  entry {r.entry_id}"
            f"  received {hub_admin_console.local_time(r.received_at)}  boot {r.boot_id[:8] or '-'}"
        )
    rows = f"{plural(len(done.rows), 'row')} of gate {gate}"
    span = f"gate_seq {first}..{done.rows[-1].gate_seq}"
    if dry:
        held = f"; the gate still has {tokens}: revoke them first" if done.tokens else ""
        print(f"{rows} would be set apart ({span}; --dry-run: nothing was moved){held}")
        return 0
    print(
        f"{rows} set apart ({span}): kept in the hub's quarantined_entries, out of the feed."
        f" Give the gate a new token (gate-agent hub token --gate {gate} --out FILE): the rows"
        " it has not had acknowledged go up again (a row of its own set apart here does not)"
    )
    return 0


_PAST = {"revoke": "revoked", "unrevoke": "unrevoked", "block": "blocked", "unblock": "unblocked"}


async def _hub_ticket(args: argparse.Namespace, conf: HubConfig) -> int:
    """Print a ticket's history; 0 when it has one at this venue, 1 when nothing is recorded."""
    from sync import hub_admin_console

    found = await hub_admin_console.ticket_history(conf, args.id)
    for line in hub_admin_console.history_lines(found):
        print(line)
    return 0 if found.events else 1


async def _hub_alerts(args: argparse.Namespace, conf: HubConfig) -> int:
    """Print the alerts; with --follow the new ones too, until SIGINT or SIGTERM (then 0)."""
    from agent.app.signals import until_signalled
    from sync import hub_admin_console

    return await until_signalled(
        lambda stop: hub_admin_console.print_alerts(
            conf, sys.stdout, follow=args.follow, as_json=args.json, stop=stop
        )
    )
