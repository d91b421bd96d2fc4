"""Hub administration: bearer tokens, signed revocation deltas and snapshots, the served documents.

Used by `gate-agent hub token|revoke` (against the store while the hub runs: every hub process
reads the revocation state from the store, so a new delta is served at once) and by the server
for the snapshot and the trust bundle.

Tokens are 32 random bytes (urlsafe base64); only their SHA-256 hex digest is stored, and a
token is printed once. The list key (``<keys>/list.key``) must be one of the trust bundle's
``list_signers``, or every gate would refuse what the hub issues: checked when it is loaded. The
keys folder is what `gate-agent keys export --hub` writes; :func:`sync.hub_config.load` refuses one
holding another private key (root.key, issuer.key), so no admin command runs with it either.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from agent import keys
from agent.backoff import Backoff
from agent.errors import AgentError, ConfigError, IssuerError, UsageError
from agent.issuer import LIST_KEY
from agent.revocation import KIND
from agent.revocation_issuer import make_delta, make_snapshot, revocation_key
from agent.signed import sign_document
from sync import hub_sqlite_db
from sync.hub_config import HubConfig
from sync.hub_store import (
    HubStore,
    HubStoreError,
    OtherVenueError,
    Quarantine,
    RevocationState,
    Role,
    VersionTakenError,
)
from sync.hub_stores import open_store
from sync.protocol import INT63, MAX_DOCUMENT_CHARS, GateHealth, is_id

log = logging.getLogger(__name__)

Op = Literal["revoke", "unrevoke", "block", "unblock"]
OPS: tuple[Op, ...] = ("revoke", "unrevoke", "block", "unblock")
# A delta travels inside a revocation page whose documents are capped (protocol
# MAX_DOCUMENT_CHARS): ~28 characters per key in the envelope, so an import is split into deltas
# of at most this many keys.
MAX_KEYS_PER_DELTA = 30_000
MAX_IMPORT_BYTES = 256 << 20
# `hub revoke` gives up when it lost every race (another writer stored a version first) this long.
ISSUE_PATIENCE_S = 120.0


def hash_token(token: str) -> str:
    """The SHA-256 hex digest a token is stored under."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    """A fresh bearer token: 32 random bytes, urlsafe base64."""
    return secrets.token_urlsafe(32)


@asynccontextmanager
async def opened_store(config: HubConfig, *, create: bool = False) -> AsyncIterator[HubStore]:
    """The configured store, closed on exit; raises HubStoreError or ConfigError.

    ``create``: a SQLite store (and its folder) is made when missing: by the hub, and by `hub
    token`, which may run before it. Without it a missing SQLite store is a ConfigError: a
    mistyped state_dir must not read as a venue with no alerts, or take revocations no gate gets.
    """
    if config.store_url.startswith("sqlite://"):
        _sqlite_place(config, Path(config.store_url.removeprefix("sqlite://")), create)
    try:
        store = await open_store(config.store_url, config.policy())
    except ValueError as exc:
        raise ConfigError(f"{config.path}: [hub] store: {exc}") from exc
    try:
        yield store
    finally:
        await store.close()


def _sqlite_place(config: HubConfig, path: Path, create: bool) -> None:
    if not create and not path.exists():
        default = config.path.parent / config.hub.state_dir / "hub.db"
        where = "state_dir" if path == default else "store"
        raise ConfigError(
            f"{config.path}: [hub] {where}: no hub store at {path} (the hub makes it at its"
            " first start, as `hub token` does): is this the hub's config?"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{config.path}: [hub] cannot create {path.parent}: {exc}") from exc


def check_store(config: HubConfig) -> str:
    """What `hub --check` can say of a SQLite store without writing: that there is none yet, or
    that it is this venue's. Raises OtherVenueError (a config error) and HubStoreError."""
    if not config.store_url.startswith("sqlite://"):
        return "store not opened by the check"
    path = Path(config.store_url.removeprefix("sqlite://"))
    venue = hub_sqlite_db.bound_venue(path)
    if venue is None:
        return f"no store at {path} yet: the hub makes it at start"
    if venue != config.hub.venue:
        raise OtherVenueError(
            f"{config.path}: [hub] venue: the store {path} belongs to venue {venue!r},"
            f" not {config.hub.venue!r}"
        )
    return f"store {path}"


async def add_gate_token(
    config: HubConfig, gate_id: str, name: str | None = None, *, token: str | None = None
) -> str:
    """Store a token bound to ``gate_id`` (``token``, or a new one); returns it (it is not stored
    anywhere else).

    ``name`` sets the gate's display name in the venue (alerts, the console, "Already used at
    ..." on other gates); a gate never names itself. Raises UsageError for a bad id, a bad name
    or a name another gate has.
    """
    if not is_id(gate_id):
        raise UsageError(f"gate id {gate_id[:80]!r}: expected 1-64 letters, digits or ._:-")
    token = token or new_token()
    async with opened_store(config, create=True) as store:
        if name is not None:
            try:
                await store.set_gate_name(gate_id, name)
            except ValueError as exc:  # NameTakenError too
                raise UsageError(f"--name: {exc}") from None
        await store.add_token(hash_token(token), "gate", gate_id, gate_id)
    return token


async def add_console_token(
    config: HubConfig, name: str, role: Role = "console", *, token: str | None = None
) -> str:
    """Store a console token (``token``, or a new one: it reads alerts and gate health) or, with
    ``role`` "issuing", a token for the wallet's issuing endpoint (sync.hub_wallet); returns it."""
    if not is_id(name):
        raise UsageError(f"{role} name {name[:80]!r}: expected 1-64 letters, digits or ._:-")
    if role == "issuing" and config.wallet is None:  # the endpoint it is for is off (404)
        raise UsageError(f"{config.path}: an issuing token needs a [wallet] section")
    token = token or new_token()
    async with opened_store(config, create=True) as store:
        if await store.named_tokens(role, name):  # its actions are recorded under the name
            raise UsageError(
                f"a {role} token named {name} exists: revoke it first (hub token"
                f" --revoke-{role} {name}) or choose another name"
            )
        await store.add_token(hash_token(token), role, None, name)
    return token


async def revoke_gate(config: HubConfig, gate_id: str) -> int:
    """Delete every token of ``gate_id``; returns how many there were."""
    async with opened_store(config) as store:
        return await store.revoke_tokens(gate_id)


async def quarantine(
    config: HubConfig, gate_id: str, from_seq: int, *, dry_run: bool = False
) -> Quarantine:
    """Set apart ``gate_id``'s rows from ``from_seq`` on (:mod:`sync.hub_quarantine`); nothing
    while the gate has a token or on a ``dry_run``. Raises UsageError for a bad gate id (one
    that is a gate's name, as alerts show gates, says whose) or gate_seq."""
    if not 1 <= from_seq <= INT63:
        raise UsageError(f"--from-seq {from_seq}: expected a gate_seq from 1 to {INT63}")
    if not is_id(gate_id):
        named = None
        with contextlib.suppress(AgentError):  # no store yet: the id's own fault is the answer
            async with opened_store(config) as store:
                named = _named(await store.gates(time.time()), gate_id)
        raise UsageError(
            f"gate id {gate_id[:80]!r}: expected 1-64 letters, digits or ._:-"
            + (f"; it is the name of gate {named}: --gate {named}" if named else "")
        )
    async with opened_store(config) as store:
        done = await store.quarantine(gate_id, from_seq, time.time(), dry_run=dry_run)
        if done.rows or done.tokens:
            return done
        gates = await store.gates(time.time())
    if any(g.gate_id == gate_id for g in gates):
        return done
    if named := _named(gates, gate_id):
        raise UsageError(f"{gate_id!r} is the name of gate {named}: --gate {named}")
    return replace(done, known=False)


def _named(gates: Iterable[GateHealth], name: str) -> str | None:
    """The id of the gate among ``gates`` the venue calls ``name``, if any."""
    return next((g.gate_id for g in gates if g.gate_name == name), None)


async def revoke_named(config: HubConfig, role: Role, name: str) -> int:
    """Delete the console (or issuing) tokens named ``name``; returns how many there were."""
    async with opened_store(config) as store:
        return await store.named_tokens(role, name, revoke=True)


# --- signed documents ------------------------------------------------------------------------


def load_list_key(config: HubConfig) -> keys.PrivateKey:
    """The list-signing private key of the hub's keys folder; raises IssuerError."""
    return keys.read_private(config.hub.keys / LIST_KEY)


def build_snapshot(
    state: RevocationState, list_key: keys.PrivateKey, validity_s: int, now: float
) -> bytes:
    """A signed snapshot of ``state`` (version >= 1), valid for ``validity_s`` from ``now``."""
    issued_at = int(now)
    content = make_snapshot(
        version=state.version,
        issued_at=issued_at,
        expires=issued_at + validity_s,
        revoke=state.revoked,
        block=state.blocked,
    )
    return sign_document(KIND, content, list_key)


@dataclass
class Snapshot:
    version: int
    built_at: float
    data: bytes


class SnapshotCache:
    """The signed snapshot of the store's current list, built on request and cached by version.

    A cached snapshot is re-signed after ``refresh_s`` so its ``issued_at`` stays fresh.
    """

    def __init__(
        self,
        store: HubStore,
        list_key: keys.PrivateKey,
        validity_s: int,
        *,
        refresh_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._key = list_key
        self._validity = validity_s
        self._refresh = refresh_s
        self._clock = clock
        self._cached: Snapshot | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Snapshot | None:
        """The current snapshot, or None before any delta was issued; raises HubStoreError."""
        async with self._lock:
            cached = self._cached
            # No delta after the cached version (cheap to ask): it is still current.
            if (
                cached is not None
                and self._clock() - cached.built_at < self._refresh
                and await self._store.revocation_deltas(cached.version) == []
            ):
                return cached
            state = await self._store.revocation_state()
            if state.version == 0:
                return None
            now = self._clock()
            data = await asyncio.to_thread(build_snapshot, state, self._key, self._validity, now)
            self._cached = Snapshot(state.version, now, data)
            return self._cached


def document_field(data: bytes, name: str) -> int:
    """An integer field (``version``, ``issued_at``) of a list document the hub itself stored.

    Not verified: the hub signed it. Raises HubStoreError when the document is malformed.
    """
    try:
        payload = json.loads(base64.b64decode(json.loads(data)["payload"], validate=True))
        value = payload[name]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise HubStoreError("a stored revocation delta is not a signed list document") from exc
    if type(value) is not int:
        raise HubStoreError(f"a stored revocation delta has no {name}")
    return value


def document_version(data: bytes) -> int:
    """The ``version`` inside a signed list document the hub itself stored (not verified)."""
    return document_field(data, "version")


# --- revocation administration -----------------------------------------------------------------


def read_items(path: Path) -> list[bytes]:
    """The list keys of an import file: one ticket text or 32-hex token id per line.

    Blank lines and lines starting with ``#`` are skipped. Raises UsageError naming the first
    bad line's number (never its text: it may be a ticket).
    """
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise UsageError(f"{path}: import file is over {MAX_IMPORT_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the import file: {exc}") from exc
    found: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(revocation_key(line))
        except IssuerError as exc:
            raise UsageError(f"{path}: line {number}: {exc}") from None
    return found


def parse_items(items: Iterable[str]) -> list[bytes]:
    """The list keys of command-line items (ticket texts or 32-hex ids); raises UsageError."""
    try:
        return [revocation_key(item) for item in items]
    except IssuerError as exc:
        raise UsageError(str(exc)) from None


def next_state(state: RevocationState, op: Op, changed: frozenset[bytes]) -> RevocationState:
    """The list after applying ``op`` to ``changed`` keys, one version later."""
    revoked, blocked = state.revoked, state.blocked
    if op == "revoke":
        revoked = revoked | changed
    elif op == "unrevoke":
        revoked = revoked - changed
    elif op == "block":
        blocked = blocked | changed
    else:
        blocked = blocked - changed
    return RevocationState(state.version + 1, revoked, blocked)


@dataclass(frozen=True)
class Issued:
    """What `hub revoke` did: the list's version now and the keys it changed (0: every key was
    already so, and no version was issued)."""

    version: int
    changed: int
    state: RevocationState


async def issue(
    config: HubConfig, op: Op, items: Sequence[bytes], *, now: float | None = None
) -> Issued:
    """Sign delta(s) applying ``op`` to ``items`` and store them; the running hub serves them.

    Big imports are split into deltas of MAX_KEYS_PER_DELTA keys. When another writer stores a
    version first (the running hub's list refresher, another admin), the list is read again
    after a short jittered wait and what is still to change is signed against it: each loss is
    another writer's progress (another admin's import of many deltas may take a while), so it
    gives up only when ISSUE_PATIENCE_S pass with nothing of its own stored. Raises UsageError
    (no keys), IssuerError (list key) and HubStoreError (the store failed, or VersionTakenError
    when it gave up: then the keys of the delta that lost are not stored).
    """
    unique = sorted(set(items))
    if not unique:
        raise UsageError("nothing to issue: no tickets or token ids given")
    list_key = load_list_key(config)
    when = time.time() if now is None else now
    changed = 0
    losses = Backoff(0.02, 1.0, jitter=True)  # two admins' big imports interleave less and less
    progress = time.monotonic()
    async with opened_store(config) as store:
        while True:
            state = await store.revocation_state()
            # Keys already so change nothing: no delta for them (none at all when none changes).
            listed = state.revoked if op in ("revoke", "unrevoke") else state.blocked
            adding = op in ("revoke", "block")
            changing = [key for key in unique if (key in listed) != adding]
            try:
                for start in range(0, len(changing), MAX_KEYS_PER_DELTA):
                    chunk = frozenset(changing[start : start + MAX_KEYS_PER_DELTA])
                    document = _sign_delta(state.version, op, chunk, list_key, config, when)
                    following = next_state(state, op, chunk)
                    await store.add_revocation_delta(following.version, document, following)
                    state, changed = following, changed + len(chunk)
                    losses.reset()
                    progress = time.monotonic()
            except VersionTakenError as exc:
                if time.monotonic() - progress > ISSUE_PATIENCE_S:
                    raise
                log.info("revocation list changed meanwhile (%s): reading it again", exc)
                await asyncio.sleep(losses.next_delay())
                continue
            return Issued(state.version, changed, state)


async def refresh_list(
    store: HubStore, config: HubConfig, list_key: keys.PrivateKey, now: float
) -> int | None:
    """Issue an empty delta when the newest one is ``list_refresh_s`` old (or there is none).

    Gates judge a list's freshness by its ``issued_at``; without revocations for a day they would
    call it stale. Returns the new version, or None when the list is fresh. When another hub
    process issued the same version first, VersionTakenError is raised and nothing is stored.
    """
    state = await store.revocation_state()
    if state.version:
        newest = await store.revocation_deltas(state.version - 1)
        if newest and now - document_field(newest[-1], "issued_at") < config.hub.list_refresh_s:
            return None
    document = _sign_delta(state.version, "revoke", frozenset(), list_key, config, now)
    await store.add_revocation_delta(
        state.version + 1,
        document,
        RevocationState(state.version + 1, state.revoked, state.blocked),
    )
    return state.version + 1


def _sign_delta(
    from_version: int,
    op: Op,
    chunk: frozenset[bytes],
    list_key: keys.PrivateKey,
    config: HubConfig,
    now: float,
) -> bytes:
    issued_at = int(now)
    ops: dict[str, frozenset[bytes]] = {op: chunk}
    content = make_delta(
        from_version=from_version,
        version=from_version + 1,
        issued_at=issued_at,
        expires=issued_at + config.hub.list_validity_s,
        revoke=ops.get("revoke", ()),
        unrevoke=ops.get("unrevoke", ()),
        block=ops.get("block", ()),
        unblock=ops.get("unblock", ()),
    )
    document = sign_document(KIND, content, list_key)
    if len(document) > MAX_DOCUMENT_CHARS:  # a bug in MAX_KEYS_PER_DELTA, not bad input
        raise IssuerError(f"delta of {len(document)} bytes is over the page's document cap")
    return document
