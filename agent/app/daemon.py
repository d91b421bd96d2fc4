"""Wiring: builds a running gate from a Config (clock, trust, revocations, journal, drivers, lane).

This is the one place that knows both the core and the drivers. Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from agent import version
from agent.app import config as cfg
from agent.app.lane_devices import open_lane_devices
from agent.checker import Checker
from agent.clock import HLC_MAX_AHEAD_S, Clock
from agent.errors import (
    AgentError,
    ConfigError,
    JournalRefused,
    RevocationError,
    RollbackError,
    StateInUse,
    TrustError,
)
from agent.fsutil import state_lock
from agent.journal import Journal, queries
from agent.keys import PublicKey
from agent.lane import Lane, LaneSettings, Outcome, OutcomeHook, Uplink
from agent.revocation import RevocationStore
from agent.rules import Direction, GatePolicy
from agent.settings import parse_listen
from agent.trust import (
    MergedTrust,
    TrustBundle,
    TrustStore,
    UpstreamTrust,
    load_root_key,
    read_capped,
)

if TYPE_CHECKING:
    from agent.app.sdnotify import Notifier
    from agent.app.status import StatusServer
    from sync.client import HubClient
    from sync.pretix import PretixUpstream
from agent.ports import GateIO, Indicator, Scanner

log = logging.getLogger(__name__)


def gate_policy(config: cfg.Config) -> GatePolicy:
    """The rules' view of the config."""
    p, g = config.policy, config.gate
    return GatePolicy(
        gate_name=g.name,
        events=frozenset(str(e) for e in g.events),
        zone=g.zone,
        direction=g.direction,
        entry_policy=p.entry,
        entries_per_day=p.entries_per_day,
        validity_skew_s=p.validity_skew_s,
        untrusted_clock=p.untrusted_clock,
        stale_list=p.stale_list,
        max_list_age_s=p.max_list_age_s,
        timezone=ZoneInfo(p.timezone) if p.timezone else None,
        rotating_window_s=p.rotating_window_s,
        rotating_skew_s=p.rotating_skew_s,
    )


def open_trust(
    config: cfg.Config,
    state_path: Path | None,
    *,
    persist: bool = True,
    refused: Callable[[str], None] | None = None,
) -> TrustStore:
    """The installed trust, updated from the configured bundle file when that one is newer.

    ``persist=False`` (for `check`) reads the installed bundle but never writes it. Without
    [trust] (a pretix-only gate) it is empty: pretix's event keys are all the gate trusts. A
    configured bundle refused while another is installed is logged (or given to ``refused``)
    and the installed one kept; with none installed it is a ConfigError.
    """
    if config.trust is None:
        return TrustStore(None, None)
    try:
        root = load_root_key(config.trust.root_key, config.path.parent)
    except TrustError as exc:
        raise ConfigError(f"{config.path}: [trust] root_key: {exc}") from exc
    store = TrustStore(root, state_path, persist=persist)
    bundle = config.trust.bundle
    if bundle is not None:
        try:
            store.offer(read_capped(bundle), str(bundle))
        except OSError as exc:
            raise ConfigError(
                f"{config.path}: [trust] bundle: {bundle}: {exc.strerror or exc}"
            ) from exc
        except TrustError as exc:
            if store.bundle is None:
                raise ConfigError(f"{config.path}: [trust] bundle refused: {exc}") from exc
            message = f"trust bundle refused, keeping version {store.version}: {exc}"
            if refused is None:
                log.error("%s", message)
            else:
                refused(message)
    if store.bundle is None:
        raise ConfigError(f"{config.path}: [trust] no trust bundle installed and none configured")
    return store


async def apply_lists(
    store: RevocationStore,
    files: Sequence[Path],
    signers: Sequence[PublicKey],
    refused: Callable[[Path, RevocationError], None],
) -> None:
    """Apply revocation files in order, as `run` does: an installed one is skipped, a refused
    one is handed to ``refused`` (which may raise to stop) and the next ones are still tried.
    `run`, `check --revocations` and `selftest --config-only` all take them this way."""
    for path in files:
        try:
            meta = await store.apply_file(path, signers)
        except RollbackError:
            log.debug("revocation file %s already installed", path)
        except RevocationError as exc:
            refused(path, exc)
        else:
            log.info("revocation list version %d installed from %s", meta.version, path)


async def load_lists(store: RevocationStore, files: list[Path], trust: TrustStore) -> None:
    """Apply revocation files in order (:func:`apply_lists`); a refused one is logged."""

    def logged(path: Path, exc: RevocationError) -> None:
        log.error("revocation file %s refused, keeping version %d: %s", path,
                  store.meta.version, exc)  # fmt: skip

    await apply_lists(store, files, trust.signers(), logged)


FLOOR_PERSIST_S = 60.0


async def _persist_floor(clock: Clock, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(clock.persist)


@dataclass
class Gate:
    config: cfg.Config
    clock: Clock
    trust: TrustStore
    revocations: RevocationStore
    journal: Journal
    checker: Checker
    lane: Lane = field(init=False)  # the main lane: the first of ``lanes``
    lanes: list[Lane] = field(default_factory=list)  # every lane, in config order
    upstream: PretixUpstream | None = None
    hub: HubClient | None = None

    def add_lane(
        self,
        name: str,
        direction: Direction,
        scanner: Scanner,
        gate_io: GateIO,
        indicator: Indicator | None = None,
        on_outcome: OutcomeHook | None = None,
        settings: cfg.LaneConfig | None = None,
    ) -> Lane:
        """A lane of this gate (same journal, trust and lists) in ``direction``; ``settings``
        default to [lane]. The lane joins ``lanes`` (the first one added is the main lane)."""
        policy = replace(self.checker.policy, direction=direction)
        checker = Checker(
            self.checker.trust,
            lambda: self.revocations.index,
            lambda: self.revocations.meta,
            policy,
        )
        ls = settings or self.config.lane
        lane_settings = LaneSettings(
            name, ls.repeat_window_ms, ls.passage_timeout_s, ls.busy, ls.on_journal_failure
        )
        uplink: Uplink | None = self.hub if self.hub is not None else self.upstream
        lane = Lane(
            lane_settings, checker, self.journal, self.clock, scanner, gate_io, indicator,
            on_outcome, uplink,
        )  # fmt: skip
        if not self.lanes:
            self.lane = lane
        self.lanes.append(lane)
        return lane


# What to do about a journal the gate may not use (run and selftest --config-only say it).
REFUSED_HINT = (
    "the gate cannot start on it (check [gate] id and state_dir; a file another gate or version"
    " left: keep it for the record, move it aside and start again: an empty one is made)"
)


@contextlib.asynccontextmanager
async def open_gate(
    config: cfg.Config,
    on_outcome: OutcomeHook | None = None,
    *,
    scanner: Scanner | None = None,
    gate_io: GateIO | None = None,
) -> AsyncIterator[Gate]:
    """Open every part of the gate described by ``config``; closes all of them on exit.

    ``scanner`` and ``gate_io`` replace the main lane's configured devices (the demo drives its
    own).
    """
    state = config.gate.state_dir
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:  # a mount not ready yet: not a config error, so systemd retries
        raise AgentError(
            f"{config.path}: [gate] state_dir: {state}: {exc.strerror or exc}"
        ) from exc
    # The floor file is written by a background task, never by a decision on the scan path.
    clock = Clock(state / "clock.floor", assume=config.clock.assume, persist_interval_s=math.inf)
    async with contextlib.AsyncExitStack() as stack:
        try:
            stack.enter_context(state_lock(state))  # first: nothing opened on a folder in use
        except StateInUse as exc:
            raise StateInUse(f"{config.path}: [gate] state_dir: {exc}: stop it first") from None
        except OSError as exc:
            raise AgentError(
                f"{config.path}: [gate] state_dir: {state}: {exc.strerror or exc}"
            ) from exc
        if config.pretix is not None:  # refused before the journal is upgraded for it
            from sync.pretix_state import load_device

            load_device(state, config.pretix.url)
        # One this gate may not use stops it before anything is made beside it (a trial); what
        # else is wrong with it the journal's own open says.
        refused = queries.unusable(state / "journal.db", config.gate.id)
        if isinstance(refused, JournalRefused):
            raise JournalRefused(f"{config.path}: [gate] state_dir: {refused}: {REFUSED_HINT}")
        trust = open_trust(config, state / "trust.json")
        revocations = await RevocationStore.open(state / "revocations.db")
        stack.push_async_callback(revocations.close)
        await load_lists(revocations, config.revocation.files, trust)
        journal = await Journal.open(
            state / "journal.db", gate_id=config.gate.id, gate_name=config.gate.name, clock=clock
        )
        stack.push_async_callback(journal.close)
        stack.callback(clock.persist)
        floor_task = asyncio.create_task(_persist_floor(clock, FLOOR_PERSIST_S))
        stack.callback(floor_task.cancel)
        devices = await open_lane_devices(config, stack, scanner, gate_io)
        upstream_trust = UpstreamTrust()
        checker = Checker(
            MergedTrust([trust, upstream_trust]),
            lambda: revocations.index,
            lambda: revocations.meta,
            gate_policy(config),
        )
        gate = Gate(config, clock, trust, revocations, journal, checker)
        if config.hub is not None:
            gate.hub = _hub_client(config, gate)
        for spec, dev in zip(config.lanes, devices, strict=True):
            gate.add_lane(
                spec.name, spec.direction, dev.scanner, dev.gate_io, dev.indicator, on_outcome,
                spec.settings,
            )  # fmt: skip
        if gate.hub is not None:
            gate.hub.start()
            stack.push_async_callback(gate.hub.close)
        if config.pretix is not None:
            gate.upstream = await _start_pretix(config, gate, upstream_trust)
            stack.push_async_callback(gate.upstream.close)
            for lane in gate.lanes:  # admissions while pretix is unreachable: offline
                lane.uplink = gate.upstream
        yield gate


def hub_tls(config: cfg.Config) -> ssl.SSLContext | None:
    """The hub link's TLS context (None for an http:// url); raises ConfigError naming the
    [hub] ca, cert or key file that cannot be used."""
    from sync.client_http import tls_context

    hc = config.hub
    assert hc is not None
    try:
        return tls_context(hc.ca, hc.cert, hc.key) if hc.url.startswith("https:") else None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{config.path}: {exc}") from None


def _hub_client(config: cfg.Config, gate: Gate) -> HubClient:
    """The hub link (not started): lanes ask it whether they are online and nudge its uploader."""
    from sync.client import HubClient, LinkSettings

    hc = config.hub
    assert hc is not None and hc.token is not None
    tls = hub_tls(config)
    settings = LinkSettings(
        url=hc.url, token=hc.token, venue=config.gate.venue, gate_id=config.gate.id,
        gate_name=config.gate.name, heartbeat_s=hc.heartbeat_s, wait_s=hc.wait_s,
        timeout_s=hc.timeout_s, batch_size=hc.batch_size,
        revocation_interval_s=hc.revocation_interval_s, trust_interval_s=hc.trust_interval_s,
        offline_after_s=hc.offline_after_s, backoff_cap_s=hc.retry_max_s,
        max_clock_ahead_s=hc.max_clock_ahead_s,
    )  # fmt: skip

    def faults() -> list[str]:
        return [lane.fault.split(":")[0] for lane in gate.lanes if lane.fault]

    return HubClient(
        settings, journal=gate.journal, revocations=gate.revocations, trust=gate.trust,
        clock=gate.clock, state_dir=config.gate.state_dir, tls=tls, faults=faults,
    )  # fmt: skip


async def _start_pretix(config: cfg.Config, gate: Gate, keys: UpstreamTrust) -> PretixUpstream:
    """pretix as the upstream: its keys join the trust, its list settings become the policy."""
    from sync.pretix import PretixUpstream

    pc = config.pretix
    assert pc is not None

    def set_trust(bundle: TrustBundle) -> None:
        keys.bundle = bundle

    def set_policy(policy: GatePolicy) -> None:
        for lane in gate.lanes:  # pretix's list settings, in each lane's own direction
            lane.checker.policy = replace(policy, direction=lane.checker.policy.direction)

    upstream = PretixUpstream(
        base_url=pc.url, organizer=pc.organizer, event=pc.event, checkin_list=pc.checkin_list,
        state_dir=config.gate.state_dir, journal=gate.journal, revocations=gate.revocations,
        set_trust=set_trust, clock=gate.clock, base_policy=gate.lane.checker.policy,
        on_policy=set_policy, device_id=pc.device_id, interval_s=pc.interval_s,
        timeout_s=pc.timeout_s,
    )  # fmt: skip
    if not upstream.initialized and pc.init_token:
        try:
            await upstream.initialize(pc.init_token)
        except AgentError as exc:  # offline at first start: the gate still runs on what it has
            log.error("pretix device initialisation failed, will run offline: %s", exc)
    upstream.start()
    return upstream


def freeze_startup_heap() -> None:
    """Leave what start-up built (modules, config, the gate) out of every later garbage
    collection: a full collection over it pauses the loop 10-15 ms on the development VM (34k
    objects), and it would stall whichever decision is in flight. Called once the gate is open
    (after one collection, so start-up's garbage is not kept)."""
    gc.collect()
    gc.freeze()


async def run(config: cfg.Config) -> int:
    """Run the gate until every lane's scanner has ended or SIGTERM/SIGINT arrives; returns an
    exit code.

    Under systemd (``Type=notify``) READY=1 is sent once the gate is open and its journal
    answers; WATCHDOG=1 follows from the same loop while the journal keeps answering, with the
    health in STATUS=.
    """
    from agent.app.sdnotify import Notifier

    observers: list[StatusServer] = []

    def observe(outcome: Outcome) -> None:
        for observer in observers:
            observer.observe(outcome)

    notifier = Notifier()
    loop = asyncio.get_running_loop()
    # Signals are handled from the start: a SIGTERM while the gate opens (a large list loading)
    # lets it finish opening and close cleanly, instead of killing it half-open.
    stopping = asyncio.Event()
    running: list[asyncio.Future[Any]] = []

    def stop() -> None:
        stopping.set()
        for future in running:
            future.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    async with open_gate(config, observe) as gate:
        status = _status_server(config, gate)
        observers.append(status)  # what came of each decision (passed, annulled)
        for lane in gate.lanes:
            lane.on_decision = status.decided  # each decision, before the lamps
        await _serve_status(config, status)
        freeze_startup_heap()
        # The gate runs until every lane's scanner has ended (or a signal stops all of them).
        lane_runs = [asyncio.ensure_future(lane.run()) for lane in gate.lanes]
        task = asyncio.ensure_future(asyncio.gather(*lane_runs))
        supervisor = asyncio.create_task(_supervise(gate, status, notifier))
        stop_pruning = threading.Event()
        upkeep = asyncio.create_task(_upkeep(gate, config.journal.retain_synced_days, stop_pruning))
        running.append(task)
        if stopping.is_set():  # a signal came while the gate was opening
            task.cancel()
        if (exposed := cfg.exposed_token(config)) is not None:
            log.warning("%s: %s", config.path, exposed)
        log.info(
            "gate %s ready: %s %s, trust v%d, revocations v%d (%d entries), gate-agent %s, pid %d",
            config.gate.id,
            "lane" if len(gate.lanes) == 1 else "lanes",
            ", ".join(f"{ln.settings.name} ({ln.checker.policy.direction})" for ln in gate.lanes),
            gate.trust.version,
            gate.revocations.meta.version,
            len(gate.revocations.index),
            version.installed(),
            os.getpid(),
        )
        try:
            await task
        except asyncio.CancelledError:
            log.info("gate %s stopping", config.gate.id)
            # The gather ends as soon as one lane has stopped; a lane still carrying out a decision
            # must finish it (its pulse or annulment) before the devices close.
            await asyncio.gather(*lane_runs, return_exceptions=True)
        finally:
            notifier.stopping()
            stop_pruning.set()
            supervisor.cancel()
            upkeep.cancel()
            await asyncio.gather(supervisor, upkeep, return_exceptions=True)
            await status.close()
    # The handlers stay until the gate is closed, then the signals are ignored: a SIGTERM while
    # the gate shuts down (its scanner ended, say) must not kill it half-closed or turn a clean
    # exit into death by signal; cancelling the finished lane does nothing.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    notifier.close()
    return 0


def _status_server(config: cfg.Config, gate: Gate) -> StatusServer:
    from agent.app.status import StatusLimits, StatusServer

    sc = config.status
    ahead = config.hub.max_clock_ahead_s if config.hub is not None else HLC_MAX_AHEAD_S
    limits = StatusLimits(sc.outbox_backlog, sc.disk_free_min_mb * 1024 * 1024, ahead)
    host, port = parse_listen(sc.listen) if sc.listen else ("127.0.0.1", 0)
    return StatusServer(
        gate, host=host, port=port, limits=limits, lanes=lambda: gate.lanes,
        max_streams=sc.max_streams,
    )  # fmt: skip


async def _serve_status(config: cfg.Config, status: StatusServer) -> None:
    """Start the status server; a taken port is logged, never a reason to stop gating."""
    if not config.status.listen:
        return
    try:
        await status.start()
    except OSError as exc:
        log.error(
            "%s: [status] listen: cannot listen on %s: %s (the gate runs without it)",
            config.path, config.status.listen, exc.strerror or exc,
        )  # fmt: skip


SUPERVISE_S = 10.0
UPKEEP_S = 3600.0  # retention and WAL truncation hourly: the journal file stays bounded


async def _upkeep(gate: Gate, retain_days: int, stop: threading.Event) -> None:
    """Hourly, from start: prune synced rows past retention (on a worker thread with its own
    connection, in short transactions), then truncate the WAL. Off the supervisor's loop, so a
    long first prune never delays a watchdog ping."""
    from agent.app import retention

    while True:
        if retain_days and not gate.clock.synced():
            log.warning("journal retention skipped: the clock is not trusted")
        elif retain_days:
            try:
                done = await asyncio.to_thread(
                    retention.prune, gate.journal.path, retain_days * 86400.0,
                    now=gate.clock.now(), stop=stop,
                )  # fmt: skip
            except Exception:  # never the end of upkeep: the WAL checkpoint lives here too
                log.exception("journal retention failed")
            else:
                if done.entries or done.peer_entries:
                    log.info(
                        "journal retention: pruned %d entries (through gate_seq %d) and %d peer"
                        " entries synced and older than %d days",
                        done.entries, done.pruned_through, done.peer_entries, retain_days,
                    )  # fmt: skip
        try:
            await gate.journal.checkpoint()
        except Exception:
            log.exception("journal checkpoint failed")
        await asyncio.sleep(UPKEEP_S)


async def _supervise(gate: Gate, status: StatusServer, notifier: Notifier) -> None:
    """READY once, then WATCHDOG while the loop and the journal answer; STATUS = health."""
    from agent.app.sdnotify import watchdog_interval_s

    every = min(SUPERVISE_S, watchdog_interval_s() or SUPERVISE_S)
    ready_sent, shown = False, ""
    while True:
        try:
            async with asyncio.timeout(every):
                await gate.journal.count()
            ok, reasons = await status.health()
        except (TimeoutError, AgentError) as exc:
            log.error("health check failed, no watchdog ping: %s", exc)
        else:
            text = "ready" if ok else "degraded: " + ", ".join(reasons)
            if not ready_sent:
                notifier.ready(text)
                ready_sent = True
            elif text != shown:
                notifier.status(text)
            if text != shown:
                (log.info if ok else log.warning)("health: %s", text)
            shown = text
            notifier.watchdog()
        await asyncio.sleep(every)
