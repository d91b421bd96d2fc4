"""`gate-agent demo`: a simulated gate with an entry lane and an exit lane, run through a scenario.

Issues keys and tickets into a folder, writes a gate config there, and presents each scenario step
to the real lane (real journal, real revocation store, sim scanner and turnstile), printing every
decision as it happens and a summary at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import config as cfg
from agent import issuer, keys, revocation
from agent.daemon import open_gate
from agent.lane import Lane, LaneSettings, Outcome
from drivers.sim import SimGate, SimScanner

DEMO_TOML = """\
# Written by `gate-agent demo`. Run this gate yourself with
#   gate-agent run --config {dir}/gate.toml   and type or paste ticket texts on stdin.
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

[lane]
name = "in"
repeat_window_ms = 300
passage_timeout_s = 1.0

[trust]
root_key = "keys/root.pub"
bundle = "keys/trust.json"

[revocation]
files = ["revocations-1.json"]

[clock]
assume = "synced"

[devices]
scanner = "sim://stdin"
gate = "sim://gate?passage_ms=250&log=pulses.log"
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
        "expired": iss.ticket(event=1, zones=[1], not_before=now - 86400 * 2,
                              not_after=now - 86400),
        "zone2": iss.ticket(event=1, zones=[2]),
        "noshow": iss.ticket(event=1, zones=[1]),
        "forged": iss.ticket(event=1, zones=[1], key=keys.generate()),
    }
    issuer.issue_files(iss, dir / "tickets", event=1, zones=[1], not_before=None,
                       not_after=None, count=3)
    from agent import tickets

    delta = revocation.issue_delta(iss.list_key, keys_dir / "revocations.state.json",
                                   revoke=[tickets.parse(t["revoked"]).revocation_key])
    (dir / "revocations-1.json").write_bytes(delta)
    (dir / "gate.toml").write_text(DEMO_TOML.format(dir=dir))
    return t


def _scenario(t: dict[str, str]) -> list[Step]:
    return [
        Step("Valid ticket (the scanner reads it 3 times: one presentation)", t["valid"],
             repeat=3),
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
    ]


def _painter(tty: bool) -> Callable[[str, str], str]:
    codes = {"green": "32;1", "red": "31;1", "dim": "2", "bold": "1"}
    return (lambda s, c: f"\x1b[{codes[c]}m{s}\x1b[0m") if tty else (lambda s, c: s)


def _line(o: Outcome, paint: Callable[[str, str], str]) -> str:
    d = o.decision
    word = paint(" ADMIT ", "green") if d.admitted else paint(" DENY  ", "red")
    message = o.message
    extra = "" if d.admitted else f"  ({d.reason}" + (
        ")" if d.detail in message else f": {d.detail})")
    seq = f"#{o.record.gate_seq}" if o.record else "-"
    tail = ""
    if o.annul is not None:
        tail = paint(f"\n           nobody passed: entry {seq} annulled "
                     f"(#{o.annul.gate_seq})", "dim")
    elif o.passed:
        tail = paint("  passed", "dim")
    return (f"  {word} {message}{extra}  "
            f"{paint(f'[{o.scan.source} {seq} {o.latency_ns / 1e6:.1f} ms]', 'dim')}{tail}")


async def main(keep: Path | None = None, out: object = None) -> int:
    """Run the demo; files go to ``keep`` (kept) or a temporary folder (removed)."""
    stream = sys.stdout if out is None else out
    assert hasattr(stream, "write")
    paint = _painter(getattr(stream, "isatty", lambda: False)())
    with tempfile.TemporaryDirectory(prefix="gate-agent-demo-") as tmp:
        dir = (keep or Path(tmp)).resolve()
        dir.mkdir(parents=True, exist_ok=True)
        t = _tickets(dir)
        conf = cfg.load(dir / "gate.toml")
        return await _play(conf, _scenario(t), paint, stream)


async def _play(conf: cfg.Config, steps: list[Step], paint: Callable[[str, str], str],
                stream: object) -> int:
    def say(s: str) -> None:
        print(s, file=stream)  # type: ignore[call-overload]

    scanners = {"in": SimScanner(source="scanner-in"), "out": SimScanner(source="scanner-out")}
    outcomes: list[Outcome] = []
    async with open_gate(conf, on_outcome=outcomes.append, scanner=scanners["in"],
                         gate_io=SimGate(passage_ms=250)) as gate:
        entry_lane = gate.lane
        exit_checker = dataclasses.replace(gate.checker.policy, direction="exit")
        from agent.checker import Checker

        exit_lane = Lane(LaneSettings("out", 300, 1.0),
                         Checker(gate.trust, lambda: gate.revocations.index,
                                 lambda: gate.revocations.meta, exit_checker),
                         gate.journal, gate.clock, scanners["out"], SimGate(passage_ms=250),
                         on_outcome=outcomes.append)
        lanes = {"in": entry_lane, "out": exit_lane}
        assert isinstance(entry_lane.gate, SimGate)
        tasks = [asyncio.create_task(lane.run()) for lane in lanes.values()]
        say(paint(f"gate-agent demo: {conf.gate.name}, event 1, zone 1, policy "
                  f"'{conf.policy.entry}'  (files in {conf.path.parent})", "bold"))
        for n, step in enumerate(steps, 1):
            say(f"\n{n:>2}. {step.title}")
            lane_gate = lanes[step.lane].gate
            assert isinstance(lane_gate, SimGate)
            lane_gate.plan = [step.passes]
            before = len(outcomes)
            for _ in range(step.repeat):
                scanners[step.lane].feed(step.text)
            while len(outcomes) == before or any(
                    not s._queue.empty() for s in scanners.values()):
                await asyncio.sleep(0.02)
            for o in outcomes[before:]:
                say(_line(o, paint))
            await asyncio.sleep(0.35)
        for s in scanners.values():
            s.finish()
        await asyncio.gather(*tasks)
        pulses = len(entry_lane.gate.pulses) + len(exit_lane.gate.pulses)  # type: ignore[attr-defined]
        rows = await gate.journal.count()
    _summary(outcomes, pulses, rows, paint, say)
    return 0


def _summary(outcomes: list[Outcome], pulses: int, rows: int,
             paint: Callable[[str, str], str], say: Callable[[str], None]) -> None:
    admitted = [o for o in outcomes if o.decision.admitted]
    denied = Counter(str(o.decision.reason) for o in outcomes if not o.decision.admitted)
    annulled = sum(1 for o in outcomes if o.annul is not None)
    latencies = sorted(o.latency_ns / 1e6 for o in outcomes)
    say(paint("\nSummary", "bold"))
    say(f"  presentations: {len(outcomes)}   admitted: {len(admitted)} "
        f"(annulled {annulled})   denied: {sum(denied.values())}")
    say("  denied by reason: " + ", ".join(f"{r} {n}" for r, n in sorted(denied.items())))
    say(f"  relay pulses: {pulses}   journal rows: {rows}   "
        f"decision latency median {latencies[len(latencies) // 2]:.1f} ms")
