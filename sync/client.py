"""The gate's link to the gate-agent hub: independent background tasks that never block a lane.

One :class:`HubClient` per gate runs on the daemon's event loop. Lanes decide from what is on the
gate (trust, revocation index, journal); this client only feeds those and drains the journal's
outbox, each job in its own task so a slow one never holds up another:

* uploader: unsynced rows in ``gate_seq`` order, one batch in flight, marked synced only when the
  hub acknowledges them; woken by :meth:`HubClient.nudge` (a lane wrote a row) or every 5 s;
* peer feed: long-polls the venue's entries and stores other gates' ones in the journal, then
  persists the cursor (``state_dir/hub_sync.json``), so a restart re-reads at most one page; a
  hub answering a cursor behind ours (a new store) is read again from the start;
* revocations: signed deltas after the installed version (410: the signed snapshot), verified
  with the trust's list signers, asked again at once while pages bring newer versions; a refused
  document changes nothing;
* trust: the root-signed bundle (ETag, remembered once the bundle was taken), installed if newer;
* heartbeat: outbox depth, list and trust versions, clock state and faults (uploads_conflict or
  uploads_refused while the hub refuses this gate's uploads); the hub's time in its answers gives
  the clock offset;
* claims, set apart: what the hub says of rows a copy of a gate's token disputed (client_disputed).

Faults back off (capped exponential, full jitter, Retry-After as a lower bound); a refusal that
retrying cannot fix (401/403, 409, other 4xx, a certificate) waits the full cap. A refused token
or certificate is one ERROR line naming the config key to check, however many tasks meet it,
until a request succeeds again. The request layer and its errors are :mod:`sync.client_http`.

The bearer token is never logged, only its short hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from agent import version
from agent.backoff import Backoff
from agent.clock import HLC_MAX_AHEAD_S, Clock
from agent.errors import (
    JournalError,
    RollbackError,
    SignedDocumentError,
    UpstreamAuthError,
    UpstreamConflict,
    UpstreamGone,
    UpstreamRefused,
    UpstreamTLSError,
    UpstreamUnavailable,
)
from agent.journal import Journal
from agent.redact import run_id, run_shown, secret_label
from agent.revocation import RevocationStore
from agent.trust import MAX_BUNDLE_BYTES, TrustStore
from sync import protocol
from sync.client_disputed import DisputedRows
from sync.client_http import HubHTTP, Reply
from sync.client_state import STATE_FILE, load_cursor, save_cursor
from sync.client_time import HubTime
from sync.protocol import (
    BatchAck,
    BatchUpload,
    EntryWire,
    FeedPage,
    Heartbeat,
    HeartbeatAck,
    RevocationPage,
    SetApartPage,
)
from sync.upstream_http import sleep_or_stop

log = logging.getLogger(__name__)

UPLOAD_TICK_S = 5.0  # an unnudged uploader still looks every 5 s
FEED_MIN_ROUND_S = 1.0  # a hub answering an empty page at once is not polled faster than this
_STUCK = frozenset({"conflict", "unauthorized", "refused"})  # uploads wait for an operator
MAX_PAGE_BYTES = 64 << 20  # a revocation page carries signed deltas
MAX_SNAPSHOT_BYTES = 256 << 20  # ~8M keys

_M = TypeVar("_M", BatchAck, FeedPage, HeartbeatAck, RevocationPage, SetApartPage)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Who this gate is at the hub and how often it talks to it (from the [hub] section)."""

    url: str
    token: str = field(repr=False)
    venue: str
    gate_id: str
    gate_name: str
    heartbeat_s: float = 10.0
    wait_s: float = 25.0
    timeout_s: float = 10.0
    batch_size: int = 500
    revocation_interval_s: float = 60.0
    trust_interval_s: float = 300.0
    offline_after_s: float = 30.0
    backoff_cap_s: float = 60.0
    max_clock_ahead_s: float = (
        HLC_MAX_AHEAD_S  # a peer's HLC past the best time + this: not followed
    )


class HubClient:
    """Sync one gate with one hub. :meth:`start` the tasks, :meth:`close` them (idempotent)."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        journal: Journal,
        revocations: RevocationStore,
        trust: TrustStore,
        clock: Clock,
        state_dir: Path,
        tls: ssl.SSLContext | None = None,
        faults: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        """Plain values only; nothing touches the network until :meth:`start`.

        ``faults`` names the gate's current faults for the heartbeat (short words).
        """
        self._s = settings
        self._version = version.installed()[: protocol.MAX_ID]
        self._http = HubHTTP(
            settings.url, settings.token, timeout_s=settings.timeout_s, tls=tls,
            user_agent=f"gate-agent/{self._version}", gate_id=settings.gate_id,
        )  # fmt: skip
        self._base = self._http.base_url
        self._journal, self._revocations, self._trust = journal, revocations, trust
        self._clock, self._faults = clock, faults
        self._state_path = state_dir / STATE_FILE
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._nudged = asyncio.Event()
        self._introduced = asyncio.Event()  # the first heartbeat was tried: the hub knows our name
        self._cursor = load_cursor(self._state_path, self._base)
        self._trust_etag: str | None = None
        self._snapshot_etag: str | None = None
        self._feed_current: float | None = None  # monotonic: the feed was caught up
        # Caught up, and every feed request since answered: other gates' admissions arrive as
        # they happen. False from the start and after a failed request until caught up again.
        self._feed_live = False
        self._hub_time = HubTime(clock, trusted=self._base.startswith("https://"))
        self._outbox: int | None = None
        self._upload_state = "idle"  # a conflict holds through link faults (_upload_failed)
        self._conflicts: tuple[str, ...] = ()
        self._conflict_seq: int | None = None  # the lowest gate_seq of them: quarantine from it
        self._last_error: str | None = None
        # The credential the hub refused ("token", "cert"), whichever task met it, until a
        # request is answered again: the gate is offline at once, not offline_after_s later.
        self._refused: str | None = None
        self._reported: set[str] = set()  # refused tokens/certificates already logged
        self._disputed = DisputedRows(journal, settings.heartbeat_s)
        self._run_key = secrets.token_hex(16)  # this run's, for the hub only (sync.hub_twins)

    # -- public API ------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        """True when a hub request succeeded within ``offline_after_s``, the hub has not been
        unreachable since, it takes this gate's uploads (no refused token, no conflict) and the
        peer feed is live (caught up, no failed request since): a decision taken otherwise
        does not know the venue's latest entries, and is flagged offline."""
        ok, down = self._http.last_ok, self._http.last_down
        if ok is None or (down is not None and down > ok) or self._upload_state in _STUCK:
            return False
        if self._refused is not None:
            return False
        return self._feed_live and time.monotonic() - ok <= self._s.offline_after_s

    def nudge(self) -> None:
        """A row was written to the journal: wake the uploader (never blocks)."""
        self._nudged.set()

    def start(self) -> None:
        """Start the background tasks on the running loop; idempotent."""
        if self._tasks:
            return
        log.info(
            "hub %s: gate %s of venue %s (token %s)",
            self._base, self._s.gate_id, self._s.venue, secret_label(self._s.token),
        )  # fmt: skip
        self._stop.clear()
        jobs: dict[str, Callable[[], Awaitable[float]]] = {
            "heartbeat": self._heartbeat_step,
            "upload": self._upload_step,
            "feed": self._feed_step,
            "revocations": self._revocation_step,
            "trust": self._trust_step,
            "claims": lambda: self._disputed.claims(
                self._venue_pages("claims", FeedPage), self._hlc_ceiling_ms
            ),
            "set-apart": lambda: self._disputed.set_apart(
                self._venue_pages("set-apart", SetApartPage)
            ),
        }
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(name, step), name=f"hub-{name}")
            for name, step in jobs.items()
        ]

    async def close(self) -> None:
        """Stop the tasks and close the HTTP session; idempotent. Rows in flight stay unsynced."""
        tasks, self._tasks = self._tasks, []
        self._stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.close()

    def status(self) -> dict[str, Any]:
        """A snapshot for status pages: online, last_success (wall time), upload ("idle", "ok",
        "conflict", "unauthorized", "refused", "unavailable"), outbox_depth (as last counted),
        feed_cursor, feed_lag_s (seconds since the feed was last caught up), revocation_version,
        trust_version, hub_clock_offset_s, last_error, conflicts (entry ids), conflict_from_seq
        (the lowest gate_seq of them: where the rows of a copy of this gate's token begin at the
        hub, the --from-seq of its quarantine), refused (the credential the hub refuses,
        "token" or "cert", until a request is answered again) and reachable (the link alone)."""
        now, ok = time.monotonic(), self._http.last_ok
        return {
            "online": self.online,
            "last_success": None if ok is None else self._clock.now() - (now - ok),
            "upload": self._upload_state, "outbox_depth": self._outbox,
            "feed_cursor": self._cursor,
            "feed_lag_s": None if self._feed_current is None else now - self._feed_current,
            "revocation_version": self._revocations.meta.version,
            "trust_version": self._trust.version, "hub_clock_offset_s": self._hub_time.offset,
            "last_error": self._last_error, "conflicts": list(self._conflicts),
            "conflict_from_seq": self._conflict_seq, "refused": self._refused,
            "reachable": self._http.reachable(self._s.offline_after_s),
            "run": run_shown(run_id(self._run_key)),
        }  # fmt: skip

    async def upload_once(self) -> int:
        """Send the oldest unsynced rows as one batch; returns how many the hub acknowledged.

        Rows are marked synced only up to the acknowledged ``gate_seq`` (never beyond what was
        sent). Raises UpstreamError (nothing marked) or JournalError.
        """
        rows = await self._journal.unsynced(self._s.batch_size)
        if not rows:
            self._outbox = 0
            return 0
        upload = BatchUpload(self._s.gate_id, tuple(EntryWire.from_record(r) for r in rows))
        sent = time.monotonic()
        try:
            reply = await self._http.request(
                "POST", f"/v1/gates/{self._s.gate_id}/entries:batch", body=protocol.encode(upload)
            )
        except UpstreamConflict as exc:  # the rows below are ours, acknowledged
            refused = set(exc.entry_ids)
            self._conflict_seq = min(
                (r.gate_seq for r in rows if r.entry_id in refused), default=None
            )
            raise
        ack = self._parse(reply, BatchAck)
        self._hub_time.note(ack.hub_time, sent)
        through = min(ack.acked_through_seq, rows[-1].gate_seq)
        if through < rows[0].gate_seq:
            raise UpstreamUnavailable(f"hub acknowledged none of gate_seq {rows[0].gate_seq}..")
        await self._journal.mark_synced(through, self._clock.now())
        self._upload_state, self._conflicts, self._conflict_seq = "ok", (), None
        log.debug("hub: %d entries acknowledged through %d (%d new)", len(rows), through,
                  ack.inserted)  # fmt: skip
        return through - rows[0].gate_seq + 1

    async def follow_once(self, wait_s: float) -> FeedPage:
        """Fetch one page of the venue feed (long-poll up to ``wait_s``), store other gates'
        entries, then persist the cursor; returns the page. A hub whose cursor is behind
        ours (its store was reset) is read again from the start: peer inserts are idempotent.
        Raises UpstreamError or JournalError (the cursor then stays)."""
        params = {
            "after": str(self._cursor),
            "wait": f"{wait_s:g}",
            "limit": str(protocol.MAX_PAGE),
        }
        reply = await self._http.request(
            "GET", f"/v1/venues/{self._s.venue}/entries", params=params,
            client_timeout=aiohttp.ClientTimeout(total=wait_s + self._s.timeout_s),
        )  # fmt: skip
        page = self._parse(reply, FeedPage)  # its hub_time is late by the wait: not a clock
        if page.entries:
            learnt = await self._journal.add_peer_entries(
                (e.to_peer() for e in page.entries), hlc_ceiling_ms=self._hlc_ceiling_ms(page)
            )
            log.debug("hub feed: %d entries, %d new from other gates", len(page.entries), learnt)
        if page.next < self._cursor:  # a hub with a new store: its cursors start again
            log.warning("hub feed restarted (the hub's cursor %d is behind ours, %d): reading it"
                        " from the start", page.next, self._cursor)  # fmt: skip
            self._cursor = 0
            await self._keep_cursor()
            return page
        if page.next > self._cursor:
            self._cursor = page.next
            await self._keep_cursor()
        if page.caught_up:
            self._feed_current = time.monotonic()
        return page

    async def _keep_cursor(self) -> None:
        """Save the feed cursor; a full or failing disk is a warning, not a fault of the feed: the
        entries are stored by entry id, so a restart reading from an older cursor is harmless."""
        try:
            await asyncio.to_thread(save_cursor, self._state_path, self._base, self._cursor)
        except OSError as exc:
            log.warning("hub feed: cannot save the cursor to %s (%s); a restart reads the feed"
                        " again from the last saved one", self._state_path, exc.strerror or exc)  # fmt: skip

    async def fetch_revocations(self) -> int:
        """Apply the hub's signed deltas after the installed version (410: its snapshot);
        returns the installed version. Raises UpstreamError, or RevocationError for a refused
        document (it and the rest of the page change nothing)."""
        installed = self._revocations.meta.version
        try:
            reply = await self._http.request(
                "GET", "/v1/revocations", params={"after": str(installed)}, cap=MAX_PAGE_BYTES
            )
        except UpstreamGone:
            log.info("hub: deltas after revocation list v%d are gone, fetching the snapshot",
                     installed)  # fmt: skip
            return await self._fetch_snapshot()
        page = self._parse(reply, RevocationPage, MAX_PAGE_BYTES)
        for text in page.deltas:
            await self._apply(text.encode(), "delta")
        return self._revocations.meta.version

    async def fetch_trust(self) -> bool:
        """Fetch the hub's trust bundle (ETag) and install it when newer; True if installed.

        Raises UpstreamError, or TrustError for a refused bundle (the installed one stays).
        """
        headers = {"If-None-Match": self._trust_etag} if self._trust_etag else {}
        reply = await self._http.request("GET", "/v1/trust", headers=headers, cap=MAX_BUNDLE_BYTES)
        if reply.status == 304:
            return False
        installed = self._trust.offer(reply.body, "trust bundle from the hub")
        # Only once taken (or the same version): a refused bundle is fetched and checked again.
        self._trust_etag = reply.headers.get("ETag")
        return installed

    async def heartbeat_once(self) -> None:
        """Tell the hub how this gate is. Raises UpstreamError or JournalError."""
        depth, oldest = await self._journal.outbox()
        self._outbox = depth
        now = self._clock.now()
        meta = self._revocations.meta
        age = meta.age(now)
        faults = [f[: protocol.MAX_ID] for f in self._faults() if f and f.isprintable()]
        if self._upload_state in ("conflict", "refused"):  # the venue is not hearing this gate
            faults.insert(0, f"uploads_{self._upload_state}")
        beat = Heartbeat(
            gate_id=self._s.gate_id, gate_name=self._s.gate_name[: protocol.MAX_ID],
            version=self._version, outbox_depth=depth,
            oldest_unsynced_age_s=None if oldest is None else max(0.0, now - oldest),
            revocation_version=meta.version,
            revocation_age_s=None if age is None else max(0.0, age),
            trust_version=self._trust.version, clock_synced=self._clock.reading().synced,
            feed_cursor=self._cursor, faults=tuple(faults[:16]), run_key=self._run_key,
        )  # fmt: skip
        sent = time.monotonic()
        reply = await self._http.request(
            "POST", f"/v1/gates/{self._s.gate_id}/heartbeat", body=protocol.encode(beat)
        )
        self._hub_time.note(self._parse(reply, HeartbeatAck).hub_time, sent)

    # -- tasks -----------------------------------------------------------------------------

    async def _run(self, name: str, step: Callable[[], Awaitable[float]]) -> None:
        """Run ``step`` until closed; it returns the delay to its next run. Faults back off.

        A task backing off because the hub was unreachable tries again as soon as any request
        of this gate is answered (the hub is back): with five tasks each in its own backoff, the
        feed and the uploader would otherwise rejoin up to ``backoff_cap_s`` after the heartbeat.
        """
        backoff = Backoff(0.5, self._s.backoff_cap_s, jitter=True)
        failing = False
        while not self._stop.is_set():
            started, wake = time.monotonic(), None
            try:
                delay = await step()
            except Exception as exc:  # every fault is logged and retried; the task never ends
                delay = self._fault(name, exc, backoff, quiet=failing)
                failing = True
                # Woken early only when the hub gave no answer at all (not reachable): a 5xx, a
                # 429 or a malformed 200 is an answer, and retrying at once would spin.
                if isinstance(exc, UpstreamUnavailable) and not self._answered_since(started):
                    wake = self._http.next_answer()  # answers to other tasks from now on
                elif name == "upload" and isinstance(exc, UpstreamConflict):
                    # Each new row is sent at once all the same: the hub keeps a refused batch's
                    # admissions as claims (a user trial: admissions held a minute let in twice).
                    wake = self._nudged
            else:
                if failing:
                    log.info("hub %s: working again", name)
                failing = False
                self._reported.clear()
                backoff.reset()
                if self._http.last_ok is not None and self._http.last_ok >= started:
                    self._refused = None  # this task's request was answered
            if delay > 0 and await sleep_or_stop(delay, self._stop, wake):
                return

    def _answered_since(self, started: float) -> bool:
        answer = self._http.last_answer
        return answer is not None and answer >= started

    def _upload_failed(self, name: str, state: str) -> None:  # the uploader's, after a fault
        if name == "upload" and (state != "unavailable" or self._upload_state != "conflict"):
            self._upload_state = state

    def _fault(self, name: str, exc: Exception, backoff: Backoff, *, quiet: bool) -> float:
        """Log a task's fault (a repeated transient one at DEBUG) and return the delay."""
        self._last_error = f"{name}: {exc}"
        if isinstance(exc, UpstreamUnavailable):
            self._upload_failed(name, "unavailable")
            log.log(logging.DEBUG if quiet else logging.WARNING, "hub %s: %s", name, exc)
            return backoff.next_delay(at_least=exc.retry_after or 0.0)
        if isinstance(exc, UpstreamConflict):
            self._upload_state = "conflict"
            if set(exc.entry_ids) != set(self._conflicts):
                self._conflicts = exc.entry_ids
                seq = self._conflict_seq
                where = "" if seq is None else f" from gate_seq {seq} (a quarantine's --from-seq)"
                log.error("hub refuses entries %s%s: their entry_id or gate_seq holds another"
                          " row there (a copy of this gate's token? tell security); rows kept",
                          ", ".join(exc.entry_ids), where)  # fmt: skip
            return self._s.backoff_cap_s
        if isinstance(exc, UpstreamAuthError | UpstreamTLSError):
            auth = isinstance(exc, UpstreamAuthError)
            if auth or exc.check == "cert":
                self._refused = exc.check or "token"
            self._upload_failed(name, "unauthorized" if auth else "unavailable")  # or TLS
            once = f"{type(exc).__name__}:{exc.check}"
            log.log(logging.DEBUG if once in self._reported else logging.ERROR, "hub: %s", exc)
            self._reported.add(once)
            return self._s.backoff_cap_s
        if isinstance(exc, UpstreamRefused):
            self._upload_failed(name, "refused")
            log.log(logging.DEBUG if quiet else logging.ERROR, "hub %s: %s", name, exc)
            return self._s.backoff_cap_s
        if isinstance(exc, SignedDocumentError):  # a refused revocation list or trust bundle
            log.log(logging.DEBUG if quiet else logging.ERROR,
                    "hub %s refused, keeping the installed one: %s", name, exc)  # fmt: skip
        elif isinstance(exc, JournalError):
            log.error("hub %s: %s", name, exc)
        else:
            log.exception("hub %s: internal error", name)
        return backoff.next_delay()

    async def _heartbeat_step(self) -> float:
        try:
            await self.heartbeat_once()
        finally:
            self._introduced.set()
        return self._s.heartbeat_s

    async def _upload_step(self) -> float:
        await self._introduced.wait()
        self._nudged.clear()  # before reading: a row written meanwhile sets it again
        if not await self.upload_once():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), UPLOAD_TICK_S)
        return 0.0

    async def _feed_step(self) -> float:
        started, cursor, polled = time.monotonic(), self._cursor, self._feed_live
        try:
            # Until caught up, no long-poll: a gate knows at once that it has every entry.
            page = await self.follow_once(self._s.wait_s if polled else 0.0)
        except BaseException:
            self._feed_live = False
            raise
        if not page.caught_up:  # more follows: not live until it is read (a live gate too)
            self._feed_live = False
        elif self._cursor >= cursor:
            self._feed_live = True
        if page.entries or self._cursor < cursor or not polled:
            return 0.0  # more to read, or caught up: the long-poll starts at once
        # A long-poll the hub answered empty at once (a misbehaving hub) is not asked again faster.
        return FEED_MIN_ROUND_S - (time.monotonic() - started)

    async def _revocation_step(self) -> float:
        installed = self._revocations.meta.version
        if await self.fetch_revocations() > installed:
            return 0.0  # a page of deltas (or a snapshot) came: there may be more at once
        return self._s.revocation_interval_s

    async def _trust_step(self) -> float:
        await self.fetch_trust()
        return self._s.trust_interval_s

    # -- documents -------------------------------------------------------------------------

    async def _fetch_snapshot(self) -> int:
        headers = {"If-None-Match": self._snapshot_etag} if self._snapshot_etag else {}
        reply = await self._http.request(
            "GET", "/v1/revocations/snapshot", headers=headers, cap=MAX_SNAPSHOT_BYTES,
            client_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._s.timeout_s, sock_read=self._s.timeout_s
            ),
        )  # fmt: skip
        if reply.status != 304:
            await self._apply(reply.body, "snapshot")
            self._snapshot_etag = reply.headers.get("ETag")
        return self._revocations.meta.version

    async def _apply(self, data: bytes, what: str) -> None:
        """Install one signed list document; an already installed one is skipped."""
        try:
            meta = await self._revocations.apply(data, self._trust.signers())
        except RollbackError as exc:
            level = logging.WARNING if what == "snapshot" else logging.DEBUG
            log.log(level, "hub revocation %s not installed: %s", what, exc)
            return
        log.info("revocation list version %d installed from the hub's %s", meta.version, what)

    def _venue_pages(self, what: str, cls: type[_M]) -> Callable[[dict[str, str]], Awaitable[_M]]:
        """GET /v1/venues/{venue}/``what`` with the given query, parsed as ``cls``."""

        async def page(params: dict[str, str]) -> _M:
            path = f"/v1/venues/{self._s.venue}/{what}"
            return self._parse(await self._http.request("GET", path, params=params), cls)

        return page

    def _parse(self, reply: Reply, cls: type[_M], cap: int = protocol.MAX_BODY_BYTES) -> _M:
        try:
            return protocol.parse(reply.body, cls, cap)
        except protocol.ProtocolError as exc:
            raise UpstreamUnavailable(f"malformed {cls.__name__} from the hub: {exc}") from exc

    # -- state -----------------------------------------------------------------------------

    def _hlc_ceiling_ms(self, page: FeedPage) -> int:
        """How far a peer's HLC may move ours: the best time known (the later of this gate's clock,
        when it is synchronised, and the hub's as of this answer: never tighter than the hub's own
        bound) plus ``max_clock_ahead_s``, in Unix ms."""
        reading = self._clock.reading()
        best = max(reading.now, page.hub_time) if reading.synced else page.hub_time
        return int((best + self._s.max_clock_ahead_s) * 1000)
