"""`gate-agent check`: explain one ticket to staff and integrators, without touching the gate.

Shows the format, the key id, the fields, the signature check and every rule, then the verdict.
Exit status: 0 would admit, 1 denied, 2 usage error (a bad option or input file), 78 config error.

``--image`` decodes the way the camera scanner does: the image file's bytes to its gray plane
(:func:`drivers.camera_frames.prepare`, as a ``file://`` source plays it), then the camera's decoder
engine (:mod:`drivers.decoders`: zxing-cpp by default, pyzbar selectable) asked for every format it
reads, so `check` reads at least what a camera would. This module is a CLI command (application
layer): it may reach the drivers, the core never does.

Three sources of trust: a gate config (its installed state, never written), a keys directory (TK1
issuing), or pretix's own API bodies (``--pretix-event``: the event with its ``valid_keys``, and
optionally one check-in list, ``revokedsecrets/`` pages and ``blockedsecrets/`` pages).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent import journal, rules, tickets
from agent.app import config as cfg
from agent.app.daemon import apply_lists, gate_policy, load_lists, open_trust
from agent.checker import Checker, Evaluation
from agent.clock import Clock, ClockReading
from agent.errors import (
    AgentError,
    ConfigError,
    IssuerError,
    RevocationError,
    TrustError,
    UsageError,
)
from agent.fsutil import file_problem, sqlite_readonly
from agent.model import Reason, Verdict
from agent.revocation import ListMeta, RevocationStore
from agent.trust import MergedTrust, TrustStore, UpstreamTrust, load_root_key

T = TypeVar("T")

MAX_PRETIX_FILE_BYTES = 256 << 20  # a revoked-secrets page of a huge event is tens of MB


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
    pretix_event: Path | None = None
    pretix_list: Path | None = None
    pretix_revoked: Sequence[Path] = ()
    pretix_blocked: Sequence[Path] = ()
    engine: str = "zxing"


@dataclass(frozen=True)
class ImageCode:
    """One code read from an image: its text (a bearer credential: never in a repr) and kind."""

    text: str = field(repr=False)
    symbology: str


def read_image(path: Path, engine: str = "zxing") -> list[ImageCode]:
    """The codes in an image file, read as the camera scanner reads a frame with ``engine``.

    Raises UsageError when the file is missing or not an image, or the engine cannot be loaded.
    """
    from drivers import MAX_IMAGE_PIXELS
    from drivers.camera_frames import prepare
    from drivers.camera_sources import ImageFilesSource
    from drivers.decoders import ENGINES, make_decoder, supported_formats

    if engine not in ENGINES:
        raise UsageError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
    problem = file_problem(path)
    if problem == "no such file":
        raise UsageError(f"{path}: no such image file")
    if problem is not None:  # a folder, a device (/dev/zero never ends), no permission
        raise UsageError(f"{path}: {problem}: expected an image file")
    source = ImageFilesSource(path, fps=0)
    try:
        source.open()
        frame = source.read()
        gray = None if frame is None else prepare(frame)
        if gray is None:
            raise UsageError(
                f"{path}: not a readable image (or one over {MAX_IMAGE_PIXELS:,} pixels)"
            )
        decoder = make_decoder(engine, supported_formats(engine))
        return [ImageCode(code.text, code.symbology) for code in decoder.decode(gray)]
    except UsageError:
        raise
    except AgentError as exc:  # DriverError: unreadable file, missing library
        raise UsageError(f"{path}: {exc}") from exc
    finally:
        source.close()


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


def copy_store(src: Path, dst: Path) -> None:
    """Copy the gate's revocation store without writing to it (SQLite online backup)."""
    try:
        with (
            contextlib.closing(sqlite3.connect(sqlite_readonly(src), uri=True)) as source,
            contextlib.closing(sqlite3.connect(dst)) as target,
        ):
            source.backup(target)
    except sqlite3.Error as exc:
        # A state file, not the config: exit 2, as the gate's own store and selftest say it.
        raise RevocationError(f"{src}: cannot read the revocation store: {exc}") from exc


@dataclass
class _Setup:
    trust: TrustStore
    policy: rules.GatePolicy
    clock: Clock
    lists: list[Path]  # the gate's own ([revocation] files): a refused one is logged, as `run` does
    given: list[Path]  # --revocations: a refused one is an error (no verdict against it)
    journal: Path | None = None
    pretix: UpstreamTrust | None = None  # a pretix gate's event keys, as last downloaded


def _setup(req: CheckRequest, scratch: Path) -> _Setup:
    """What to check against; never writes the gate's own state (a what-if stays a what-if)."""
    if req.config is None:
        assert req.keys is not None
        policy = rules.GatePolicy(gate_name="check", events=None)
        return _Setup(_keys_trust(req.keys), policy, Clock(None), [], list(req.revocations))
    conf = cfg.load(req.config)
    state = conf.gate.state_dir
    trust = open_trust(conf, state / "trust.json", persist=False)
    if (state / "revocations.db").exists():
        copy_store(state / "revocations.db", scratch / "revocations.db")
    pretix, policy = _pretix_kept(conf, gate_policy(conf))
    return _Setup(
        trust,
        policy,
        Clock(None, assume=conf.clock.assume),
        list(conf.revocation.files),
        list(req.revocations),
        state / "journal.db",
        pretix,
    )


def _read_json(path: Path, option: str) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_PRETIX_FILE_BYTES:
            raise UsageError(
                f"{option} {path}: {size} bytes exceeds the {MAX_PRETIX_FILE_BYTES} cap"
            )
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise UsageError(f"{option} {path}: not a JSON document: {exc}") from exc


def _pretix_kept(
    conf: cfg.Config, policy: rules.GatePolicy
) -> tuple[UpstreamTrust | None, rules.GatePolicy]:
    """A pretix gate's event keys and list policy as its daemon last downloaded them (found in
    an integrator's trial: `check --config` on a pretix gate said "the event's keys not yet from
    pretix" for a ticket the gate admits); none for another gate, or before the first round."""
    from agent import pretix_event as pe
    from sync.pretix_state import event_path, event_scope, load_event

    pc = conf.pretix
    if pc is None:
        return None, policy
    scope = event_scope(pc.url, event_path(pc.organizer, pc.event), pc.checkin_list)
    try:
        kept = load_event(conf.gate.state_dir, scope)
        if kept is None:
            return None, policy
        return UpstreamTrust(pe.trust_bundle(kept[0])), pe.list_policy(kept[1], policy)
    except (ConfigError, OSError) as exc:  # the daemon goes on without them too
        print(f"note: the pretix event's kept keys not used: {exc}", file=sys.stderr)
        return None, policy


def _pretix_page(path: Path, option: str) -> dict[str, Any]:
    page = _read_json(path, option)
    if not isinstance(page, dict):
        raise UsageError(f"{option} {path}: expected a pretix list page (an object with results)")
    if page.get("next"):
        # A partial list would admit what the missing pages revoke: say so instead of guessing.
        print(
            f"gate-agent: warning: {path} is one page of several ('next' is set);"
            f" pass every page with {option}",
            file=sys.stderr,
        )
    return page


def _pretix_list(path: Path) -> dict[str, Any]:
    """One check-in list object; a ``checkinlists/`` page is accepted if it holds exactly one."""
    body = _read_json(path, "--pretix-list")
    if isinstance(body, dict) and "results" in body and "all_products" not in body:
        results = body["results"]
        if not isinstance(results, list) or len(results) != 1:
            found = results if isinstance(results, list) else []
            ids = ", ".join(str(r.get("id")) for r in found if isinstance(r, dict))
            raise UsageError(
                f"--pretix-list {path}: a page of {len(found)} check-in lists ({ids or 'none'});"
                " pass one check-in list object"
            )
        body = results[0]
    if not isinstance(body, dict):
        raise UsageError(f"--pretix-list {path}: expected a check-in list object")
    return body


def _pretix_event_policy(event: dict[str, Any]) -> rules.GatePolicy:
    # pretix's validity bounds are exact (inclusive), so no skew; dates shown in the event's zone.
    zone = event.get("timezone")
    tz = None
    if isinstance(zone, str) and zone:
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise UsageError(f"pretix event: unknown timezone {zone!r}") from exc
    return rules.GatePolicy(gate_name="check", events=None, validity_skew_s=0, timezone=tz)


def _from_file(path: Path, option: str, convert: Callable[[Any], T], body: Any) -> T:
    """``convert(body)``; its ConfigError becomes a UsageError naming the option and file."""
    try:
        return convert(body)
    except ConfigError as exc:
        raise UsageError(f"{option} {path}: {exc}") from exc


def _pretix_checker(req: CheckRequest, now: float) -> Checker:
    """A checker from pretix API bodies; raises UsageError naming the option and file."""
    from agent import pretix_event as pe

    path = req.pretix_event
    assert path is not None
    event = _read_json(path, "--pretix-event")
    bundle = _from_file(path, "--pretix-event", pe.trust_bundle, event)
    policy = _from_file(path, "--pretix-event", _pretix_event_policy, event)
    if req.pretix_list is not None:
        checkin_list, base = _pretix_list(req.pretix_list), policy
        policy = _from_file(
            req.pretix_list, "--pretix-list", lambda body: pe.list_policy(body, base), checkin_list
        )
    revoked: list[str] = []
    for p in req.pretix_revoked:
        page = _pretix_page(p, "--pretix-revoked")
        revoked += _from_file(p, "--pretix-revoked", pe.revoked_secrets, page)
    blocked: list[tuple[str, bool]] = []
    for p in req.pretix_blocked:
        page = _pretix_page(p, "--pretix-blocked")
        blocked += _from_file(p, "--pretix-blocked", pe.blocked_secrets, page)
    index = pe.index_from(revoked, blocked)
    # The operator vouches the files are current as of the check; without both lists the
    # freshness rule says so (a flag on an admission, as on a gate that never synced).
    both = bool(req.pretix_revoked) and bool(req.pretix_blocked)
    meta = ListMeta(1, int(now), None) if both else ListMeta(0, None, None)
    return Checker(UpstreamTrust(bundle), lambda: index, lambda: meta, policy)


async def _evaluate_pretix(req: CheckRequest, text: str) -> Evaluation:
    reading = Clock(None).reading() if req.at is None else ClockReading(req.at, True)
    checker = _pretix_checker(req, reading.now)

    async def no_history(ref: str) -> list[journal.HistoryEntry]:
        return []

    return await checker.evaluate(text, no_history, reading, explain=True)


async def evaluate(req: CheckRequest, text: str) -> Evaluation:
    """Decide on ``text`` as the request describes, without writing any gate state.

    Raises ConfigError (or another AgentError) when the config, keys or pretix files are unusable,
    UsageError when a ``--revocations`` file is refused.
    """
    if req.pretix_event is not None:
        return await _evaluate_pretix(req, text)
    with tempfile.TemporaryDirectory(prefix="gate-agent-check-") as tmp:
        setup = _setup(req, Path(tmp))
        policy = setup.policy if req.zone is None else replace(setup.policy, zone=req.zone)
        reading = setup.clock.reading() if req.at is None else ClockReading(req.at, True)
        journal_path = setup.journal

        async def lookup(ref: str) -> list[journal.HistoryEntry]:
            if journal_path is None:
                return []
            return journal.read_history(journal_path, ref, policy.gate_name)

        async with await RevocationStore.open(Path(tmp) / "revocations.db") as store:
            await load_lists(store, setup.lists, setup.trust)
            await apply_lists(store, setup.given, setup.trust.signers(), _given_refused)
            keys = setup.trust if setup.pretix is None else MergedTrust([setup.trust, setup.pretix])
            checker = Checker(keys, lambda: store.index, lambda: store.meta, policy)
            return await checker.evaluate(text, lookup, reading, explain=True)


def _given_refused(path: Path, exc: RevocationError) -> None:
    raise UsageError(f"--revocations {path}: refused: {exc}") from None


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
    """Run one check and print it; returns the exit status.

    Raises ConfigError (a config or the files it names, exit 78) or UsageError (a bad option or
    input file, exit 2).
    """
    read: dict[str, Any] | None = None
    texts: list[str] = []
    if req.text is not None:
        texts = [req.text]
    else:
        assert req.image is not None
        codes = read_image(req.image, req.engine)
        read = {"engine": req.engine, "codes": len(codes)}
        if codes:
            # The first code of a ticket format: a photo of a ticket may show another code
            # beside it (a URL, say), which the gate takes as part of that presentation.
            at = next((i for i, c in enumerate(codes) if tickets.recognised(c.text)), None)
            chosen = codes[at or 0]
            read["symbology"] = chosen.symbology
            texts = [chosen.text]
            if len(codes) > 1:
                print(
                    f"gate-agent: {len(codes)} barcodes in the image; checking the"
                    f" {_ordinal((at or 0) + 1)}{'' if at is None else ', of a ticket format'}",
                    file=sys.stderr,
                )
    if not texts:
        ev = Evaluation(None, rules.invalid_format(f"no barcode found in the image ({req.engine})"))
    else:
        ev = await evaluate(req, texts[0])
    if req.as_json:
        body = as_dict(ev)
        if read is not None:
            body["image"] = read
        print(json.dumps(body), file=out)
    elif read is not None and not read["codes"]:
        # Found in a user trial: a blurred photo of a valid ticket was called "not a ticket".
        print(f"image:     no barcode found by {req.engine}", file=out)
        print(
            "verdict:   DENY (nothing to check) - a camera reads no code in this photo either;"
            " try a sharper, closer or better lit photo, or the other --engine",
            file=out,
        )
    else:
        if read is not None:
            print(f"image:     a {read['symbology']} code, read by {req.engine}", file=out)
        print_human(ev, out)
    return 0 if ev.decision.admitted else 1


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
