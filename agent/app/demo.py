"""`gate-agent demo`: a simulated gate with an entry lane and an exit lane, run through a scenario.

Issues keys and tickets into a folder, writes a gate config there, and presents each scenario step
to the real lane (real journal, real revocation store, sim scanner and turnstile), printing every
decision as it happens and a summary at the end.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from agent import issuer, keys, revocation_issuer, ticket_files
from agent.app import config as cfg
from agent.app import demo_hub
from agent.app.daemon import open_gate
from agent.errors import UsageError
from agent.lane import Outcome
from agent.model import Flag
from agent.ports import Scan
from drivers.sim import SimGate, SimScanner

DEMO_TOML = """\
# Written by `gate-agent demo`. Run this gate yourself with
#   gate-agent run --config {dir}/gate.toml
# and type or paste ticket texts (tickets/*.txt) on stdin: they are scanned at the entry lane
# "in"; ticket texts in exits.txt are scanned at the exit lane "out" once, at start, and that
# lane then stays ready (end=wait). Ctrl-C stops the gate. The staff display of each lane is at
#   http://127.0.0.1:{status_port}/display?lane=in   (and ?lane=out)
[gate]
id = "demo-gate-1"
name = "Gate 1"
venue = "demo"
events = [1]
zone = 1
state_dir = "state"

[policy]
entry = "reentry"
validity_skew_s = 60
stale_list = "admit"

[lane]                       # settings of both lanes
repeat_window_ms = 300
passage_timeout_s = 1.0

[trust]
root_key = "keys/root.pub"
bundle = "keys/trust.json"

[revocation]
files = ["revocations-1.json"]

[clock]
assume = "synced"

[status]
listen = "127.0.0.1:{status_port}"

# Two lanes of one unit, one journal: an exit at "out" lets the ticket in again at "in", offline.
[[lanes]]
name = "in"
direction = "entry"
scanner = "sim://stdin"
gate = "sim://gate?passage_ms=250&log=pulses.log"

[[lanes]]
name = "out"
direction = "exit"
scanner = "sim://file?path=exits.txt&end=wait"  # without end=wait: offline once read
gate = "sim://gate?passage_ms=250&log=exit-pulses.log"
"""


@dataclass(frozen=True)
class Step:
    title: str
    text: str
    lane: str = "in"
    passes: bool = True
    repeat: int = 1


def _tickets(dir: Path) -> dict[str, str]:
    keys_dir = dir / "keys"
    issuer.keys_init(keys_dir, events=[1], force=True)
    iss = issuer.Issuer.load(keys_dir)
    now = int(time.time())
    t = {
        "valid": iss.ticket(event=1, zones=[1]),
        "revoked": iss.ticket(event=1, zones=[1]),
        "expired": iss.ticket(
            event=1, zones=[1], not_before=now - 86400 * 2, not_after=now - 86400
        ),
        "zone2": iss.ticket(event=1, zones=[2]),
        "noshow": iss.ticket(event=1, zones=[1]),
        "forged": iss.ticket(event=1, zones=[1], key=keys.generate()),
        "hub-1": iss.ticket(event=1, zones=[1]),
        "hub-2": iss.ticket(event=1, zones=[1]),
        **_rotating(iss, now),
    }
    ticket_files.issue_files(
        iss, dir / "tickets", event=1, zones=[1], not_before=None, not_after=None, count=3
    )
    from agent import tickets

    delta = revocation_issuer.issue_delta(
        iss.list_key,
        keys_dir / "revocations.state.json",
        revoke=[tickets.parse(t["revoked"]).revocation_key],
    )
    (dir / "revocations-1.json").write_bytes(delta)
    (dir / "gate.toml").write_text(DEMO_TOML.format(dir=dir, status_port=_free_port()))
    (dir / "exits.txt").touch()
    return t


def _rotating(iss: issuer.Issuer, now: int) -> dict[str, str]:
    """A rotating ticket (TK2) as the wallet page shows it: the phone's code of now, and the
    same static part with a code signed by another phone's key (the text copied over)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from agent.tickets import base45, tk2

    phone, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    static = iss.rotating_ticket(tk2.compressed(phone.public_key()), event=1, zones=[1])
    body = tk2.static_bytes(static)
    signed = keys.sign(other, tk2.code_message(body, now))
    return {
        "rotating": tk2.make_code(static, phone, now),
        "rotating-copied": tk2.PREFIX + base45.encode(body + now.to_bytes(4, "big") + signed),
    }


def _free_port() -> int:
    """A loopback port free now: the demo gate's status server, off the installed gate's 8471."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scenario(t: dict[str, str]) -> list[Step]:
    return [
        Step("Valid ticket (the scanner reads it 3 times: one presentation)", t["valid"], repeat=3),
        Step("The same ticket again", t["valid"]),
        Step("Revoked ticket", t["revoked"]),
        Step("Forged ticket (right key id, wrong signature)", t["forged"]),
        Step("Expired ticket", t["expired"]),
        Step("Ticket for zone 2 at a zone 1 gate", t["zone2"]),
        Step("Not a ticket at all", "HELLO-WORLD"),
        Step("First ticket leaves through the exit lane", t["valid"], lane="out"),
        Step("... and comes back in (re-entry after exit)", t["valid"]),
        Step("Admitted, but nobody walks through", t["noshow"], passes=False),
        Step("Same visitor tries again (the annulled entry does not count)", t["noshow"]),
        Step("Rotating ticket: the wallet page's code of this moment", t["rotating"]),
        Step("A screenshot of that code, shown again", t["rotating"]),
        Step("The rotating ticket copied to another phone (its key signs)", t["rotating-copied"]),
    ]


def _painter(tty: bool) -> Callable[[str, str], str]:
    codes = {"green": "32;1", "red": "31;1", "dim": "2", "bold": "1"}
    return (lambda s, c: f"\x1b[{codes[c]}m{s}\x1b[0m") if tty else (lambda s, c: s)


def _line(o: Outcome, paint: Callable[[str, str], str]) -> str:
    d = o.decision
    word = paint(" ADMIT ", "green") if d.admitted else paint(" DENY  ", "red")
    message = o.message
    extra = (
        "" if d.admitted else f"  ({d.reason}" + (")" if d.detail in message else f": {d.detail})")
    )
    if Flag.OFFLINE in d.flags:
        extra += "  (decided offline)"
    seq = f"#{o.record.gate_seq}" if o.record else "-"
    tail = ""
    if o.annul is not None:
        tail = paint(
            f"\n           nobody passed: entry {seq} annulled (#{o.annul.gate_seq})", "dim"
        )
    elif o.passed:
        tail = paint("  passed", "dim")
    return (
        f"  {word} {message}{extra}  "
        f"{paint(f'[{o.scan.source} {seq} {o.latency_ns / 1e6:.1f} ms]', 'dim')}{tail}"
    )


async def main(keep: Path | None = None, stream: TextIO | None = None) -> int:
    """Run the demo; files go to ``keep`` (kept) or a temporary folder (removed)."""
    stream = stream or sys.stdout
    paint = _painter(stream.isatty())
    if keep is not None:
        _make_empty(keep)
    with tempfile.TemporaryDirectory(prefix="gate-agent-demo-") as tmp:
        dir = (keep or Path(tmp)).resolve()
        t = _tickets(dir)
        conf = cfg.load(dir / "gate.toml")
        code = await _play(conf, _scenario(t), paint, stream, kept=keep is not None)
        print(paint("\nPart 2: a hub and two gates of one venue", "bold"), file=stream)
        fresh = [t["hub-1"], t["hub-2"]]
        hub_code = await demo_hub.play(
            dir, fresh, lambda o: _line(o, paint), lambda s: print(s, file=stream)
        )
        if keep is not None:
            _afterwards(dir, paint, stream)
        return code or hub_code


def _make_empty(dir: Path) -> None:
    """Create ``dir`` for the demo's files, or take an empty folder; raises UsageError for
    anything else (the demo makes new keys: files of an earlier run there would not work with
    them, e.g. its tickets refused unknown_key by the new gate.toml)."""
    try:
        if dir.exists() and (not dir.is_dir() or any(dir.iterdir())):
            what = "a folder with files in it" if dir.is_dir() else "not a folder"
            raise UsageError(f"demo --dir {dir}: {what}: give a new or empty folder")
        dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"demo --dir {dir}: {exc.strerror or exc}") from None


def _afterwards(dir: Path, paint: Callable[[str, str], str], stream: TextIO) -> None:
    cli = _cli()
    print(paint("\nThe files stay in " + str(dir), "bold"), file=stream)
    print(f"  gate:    {cli} run --config {dir / 'gate.toml'}", file=stream)
    print(f"           then paste a ticket, e.g. from {dir / 'tickets'}", file=stream)
    print(f"  hub:     {cli} hub --config {dir / 'hub.toml'}", file=stream)
    print(f"  console: open the URL in {dir / 'console.url'} (it holds a token)", file=stream)
    print(
        f"  wallet:  {cli} wallet serve, then certify its key: {cli} issue --keys"
        f" {dir / 'keys'} --event 1 --device-key device.pub --out {dir / 'rotating'}",
        file=stream,
    )


def _cli() -> str:
    """The command as it was started (``.venv/bin/gate-agent`` from the README), so the hints
    work as printed; ``gate-agent`` when started otherwise (``python -m agent``)."""
    argv0 = sys.argv[0]
    return argv0 if Path(argv0).name == "gate-agent" else "gate-agent"


async def _play(
    conf: cfg.Config,
    steps: list[Step],
    paint: Callable[[str, str], str],
    stream: TextIO,
    *,
    kept: bool,
) -> int:
    outcomes: list[Outcome] = []
    async with open_gate(
        conf, scanner=SimScanner(source="scanner-in"), gate_io=SimGate(passage_ms=250)
    ) as gate:
        lanes = {lane.settings.name: lane for lane in gate.lanes}  # in (the main lane), out
        exit_gate = lanes["out"].gate
        assert isinstance(exit_gate, SimGate)
        print(
            paint(
                f"gate-agent demo: {conf.gate.name}, event 1, zone 1, policy "
                f"'{conf.policy.entry}'"
                + (f"  (files in {conf.path.parent})" if kept else "  (files removed at the end)"),
                "bold",
            ),
            file=stream,
        )
        for n, step in enumerate(steps, 1):
            print(f"\n{n:>2}. {step.title}", file=stream)
            lane = lanes[step.lane]
            assert isinstance(lane.gate, SimGate)
            lane.gate.plan = [step.passes]
            source = f"scanner-{step.lane}"
            for _ in range(step.repeat):  # a scanner re-reading a code in view
                outcome = await lane.present(Scan(step.text, source, time.monotonic_ns()))
                if outcome is not None:
                    outcomes.append(outcome)
                    print(_line(outcome, paint), file=stream)
            await asyncio.sleep(0.35)
        assert isinstance(gate.lane.gate, SimGate)
        pulses = len(gate.lane.gate.pulses) + len(exit_gate.pulses)
        rows = await gate.journal.count()
    _summary(outcomes, pulses, rows, paint, lambda line: print(line, file=stream))
    return 0


def _summary(
    outcomes: list[Outcome],
    pulses: int,
    rows: int,
    paint: Callable[[str, str], str],
    say: Callable[[str], None],
) -> None:
    admitted = [o for o in outcomes if o.decision.admitted]
    denied = Counter(str(o.decision.reason) for o in outcomes if not o.decision.admitted)
    annulled = sum(1 for o in outcomes if o.annul is not None)
    latencies = sorted(o.latency_ns / 1e6 for o in outcomes)
    say(paint("\nSummary", "bold"))
    say(
        f"  presentations: {len(outcomes)}   admitted: {len(admitted)} "
        f"(annulled {annulled})   denied: {sum(denied.values())}"
    )
    say("  denied by reason: " + ", ".join(f"{r} {n}" for r, n in sorted(denied.items())))
    say(
        f"  relay pulses: {pulses}   journal rows: {rows}   "
        f"decision latency median {latencies[len(latencies) // 2]:.1f} ms"
    )
