"""`gate-agent check`: explain one ticket to staff and integrators, without touching the gate.

Shows the format, the key id, the fields, the signature check and every rule, then the verdict.
Exit status: 0 would admit, 1 denied, 2 usage or config error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from agent import config as cfg
from agent import journal, rules
from agent.checker import Checker, Evaluation
from agent.clock import Clock, ClockReading
from agent.daemon import gate_policy, load_lists, open_trust
from agent.errors import ConfigError, IssuerError, TrustError
from agent.model import Reason, Verdict
from agent.revocation import RevocationStore
from agent.trust import TrustStore, load_root_key


@dataclass(frozen=True)
class CheckRequest:
    text: str | None
    image: Path | None
    config: Path | None
    keys: Path | None
    revocations: Sequence[Path]
    zone: int | None
    at: float | None
    as_json: bool


def read_image(path: Path) -> list[str]:
    """Texts of the barcodes found in an image file (pyzbar); raises ConfigError if unreadable."""
    import cv2
    from pyzbar.pyzbar import decode

    frame = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if frame is None:
        raise ConfigError(f"{path}: not a readable image")
    return [r.data.decode("utf-8", "replace") for r in decode(frame)]


def _keys_trust(keys_dir: Path) -> TrustStore:
    if not (keys_dir / "root.pub").is_file():
        raise IssuerError(f"{keys_dir}: not a keys directory (no root.pub)")
    try:
        store = TrustStore(load_root_key(str(keys_dir / "root.pub")), None)
        store.install((keys_dir / "trust.json").read_bytes())
    except OSError as exc:
        raise IssuerError(f"{keys_dir}: not a keys directory: {exc.strerror or exc}") from exc
    except TrustError as exc:
        raise IssuerError(f"{keys_dir}: {exc}") from exc
    return store


async def _evaluate(req: CheckRequest, text: str) -> Evaluation:
    history: list[journal.HistoryEntry] = []
    store = await RevocationStore.open(":memory:")
    try:
        if req.config is not None:
            conf = cfg.load(req.config)
            trust = open_trust(conf, None)
            state_trust = conf.gate.state_dir / "trust.json"
            if state_trust.exists():
                trust.offer(state_trust.read_bytes(), str(state_trust))
            policy = gate_policy(conf)
            clock = Clock(None, assume=conf.clock.assume)
            lists = [p for p in [conf.gate.state_dir / "revocations.db"] if p.exists()]
            if lists:
                await store.close()
                store = await RevocationStore.open(lists[0])
            await load_lists(store, [*conf.revocation.files, *req.revocations], trust)
            journal_path = conf.gate.state_dir / "journal.db"
        else:
            assert req.keys is not None
            trust = _keys_trust(req.keys)
            policy = rules.GatePolicy(gate_name="check", events=None)
            clock = Clock(None)
            await load_lists(store, list(req.revocations), trust)
            journal_path = None
        reading = clock.reading() if req.at is None else ClockReading(now=req.at, synced=True)

        async def lookup(ref: str) -> list[journal.HistoryEntry]:
            if journal_path is None:
                return history
            return journal.read_history(journal_path, ref, policy.gate_name)

        checker = Checker(trust, lambda: store.index, lambda: store.meta, policy)
        if req.zone is not None:
            checker.policy = replace(checker.policy, zone=req.zone)
        return await checker.evaluate(text, lookup, reading, explain=True)
    finally:
        await store.close()


def as_dict(ev: Evaluation) -> dict[str, Any]:
    d = ev.decision
    out: dict[str, Any] = {
        "verdict": str(d.verdict),
        "reason": str(d.reason),
        "detail": d.detail,
        "flags": sorted(d.flags),
        "message": rules.staff_message(d),
    }
    if ev.ticket is not None:
        out.update(
            format=ev.ticket.fmt,
            kid=ev.ticket.kid,
            ticket=ev.ticket.short_id,
            fields=dict(ev.ticket.fields),
        )
    out["rules"] = [
        {"rule": r.rule, "reason": str(r.reason), "detail": r.detail, "flags": sorted(r.flags)}
        for r in ev.results
    ]
    return out


def print_human(ev: Evaluation, out: TextIO) -> None:
    t = ev.ticket
    if t is None:
        print(f"format:    not a ticket ({ev.decision.detail})", file=out)
    else:
        print(f"format:    {t.fmt}   kid: {t.kid or '-'}   ticket: {t.short_id}", file=out)
        for name, value in t.fields:
            print(f"  {name:<11} {value}", file=out)
    for r in ev.results:
        mark = "ok  " if r.passed else "FAIL"
        flags = f" [{', '.join(sorted(r.flags))}]" if r.flags else ""
        print(f"  {mark} {r.rule:<15} {r.detail}{flags}", file=out)
    d = ev.decision
    word = "ADMIT" if d.verdict is Verdict.ADMIT else "DENY"
    reason = "" if d.reason is Reason.OK else f" ({d.reason}: {d.detail})"
    print(f"verdict:   {word}{reason} - {rules.staff_message(d)}", file=out)


async def check(req: CheckRequest, out: TextIO = sys.stdout) -> int:
    """Run one check and print it; returns the exit status (raises ConfigError for code 2)."""
    if req.text is not None:
        texts = [req.text]
    else:
        assert req.image is not None
        if not req.image.is_file():
            raise ConfigError(f"{req.image}: no such image file")
        texts = read_image(req.image)
    if not texts:
        ev = Evaluation(None, rules.invalid_format("no barcode found in the image"))
    else:
        ev = await _evaluate(req, texts[0])
    if req.as_json:
        print(json.dumps(as_dict(ev)), file=out)
    else:
        print_human(ev, out)
    return 0 if ev.decision.admitted else 1
