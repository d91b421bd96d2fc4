"""Revocation: signed snapshots and deltas, a SQLite store, and the scan path's in-memory index.

Entries are 16-byte keys (TK1: the ticket's ``token_id``; formats whose revocation key is a secret
string: :func:`secret_key`) on two lists, *revoked* and *blocked*. A list document is signed
(:mod:`agent.signed`, kind ``"revocations"``) and carries a monotonic ``version``::

    {"type": "snapshot" | "delta", "version": int >= 1, "from_version": int (delta only),
     "issued_at": int, "expires": int,            # unix seconds: the list's signed freshness
     "revoke": B64, "unrevoke": B64, "block": B64, "unblock": B64}   # concatenated 16-byte keys

A snapshot replaces everything and carries only ``revoke`` and ``block``. A delta from version F to
V applies on an installed version I when ``F <= I < V``; its operations set or clear a key, so an
overlap is re-applied harmlessly. Older or equal versions are refused as a rollback or replay, and a
delta from a later version than the installed one as a gap. A refused document changes nothing.

The SQLite table is the durable copy; :class:`RevocationIndex` answers the scan path from memory
(two sorted NumPy ``S16`` arrays, exactly 16 bytes an entry, plus a small overlay of keys changed by
deltas since the last rebuild). Exact membership only: nothing probabilistic ever decides a denial.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiosqlite
import numpy as np
import numpy.typing as npt

from agent import keys
from agent.errors import RevocationError, RollbackError
from agent.signed import open_document

log = logging.getLogger(__name__)

KIND = "revocations"
KEY_LEN = 16
_DTYPE = np.dtype("S16")
_REVOKED, _BLOCKED = 1, 2  # list ids in SQLite and bits in the overlay
_LOAD_CHUNK = 4096  # rows per fetchmany: small, so loading leaves little heap behind
_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=FULL",
    "journal_size_limit=67108864",  # a big snapshot must not leave a huge WAL on the SD card
    "cache_size=-512",  # KiB; the scan path never reads SQLite, so keep its cache out of RSS
)
_MAX_INT = 2**63 - 1  # SQLite INTEGER

KeyArray = npt.NDArray[np.bytes_]
BitArray = npt.NDArray[np.uint8]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS revocation(list INTEGER NOT NULL, key BLOB NOT NULL,"
    " PRIMARY KEY(list, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS revocation_meta(id INTEGER PRIMARY KEY CHECK(id=1),"
    " version INTEGER NOT NULL, issued_at INTEGER, expires INTEGER)",
    # Download positions of an authenticated upstream (pretix's created_since/updated_since),
    # written in the same transaction as the keys they led to.
    "CREATE TABLE IF NOT EXISTS revocation_cursor(name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class ListState(enum.IntEnum):
    """What the list says about a key; a key on both lists reads as REVOKED."""

    NONE = 0
    REVOKED = 1
    BLOCKED = 2


_STATE_OF_BITS = (ListState.NONE, ListState.REVOKED, ListState.BLOCKED, ListState.REVOKED)


@dataclass(frozen=True, slots=True)
class ListMeta:
    """The installed list's version and signed freshness (version 0: nothing installed)."""

    version: int
    issued_at: int | None
    expires: int | None

    def age(self, now: float) -> float | None:
        """Seconds since the list was issued, or None when nothing is installed."""
        return None if self.issued_at is None else now - self.issued_at

    def is_stale(self, now: float, max_age_s: float) -> bool:
        """True when nothing is installed, the list has expired, or it is older than max_age_s."""
        if self.version == 0 or self.issued_at is None:
            return True
        if self.expires is not None and now > self.expires:
            return True
        return now - self.issued_at > max_age_s


_NOTHING = ListMeta(version=0, issued_at=None, expires=None)


def _empty() -> KeyArray:
    return np.empty(0, dtype=_DTYPE)


def _select(arr: KeyArray, mask: npt.NDArray[np.bool_]) -> KeyArray:
    # Masked as raw 16-byte records (V16): NumPy then drops the GIL, so a worker thread rebuilding
    # a 5M list stalls the event loop ~1 ms instead of ~30 ms (np.delete on S16: ~140 ms).
    selected: KeyArray = arr.view("V16")[mask].view(_DTYPE)
    return selected


def _sorted_unique(arr: KeyArray) -> KeyArray:
    if len(arr) < 2:
        return arr.copy()
    ordered = np.sort(arr)  # np.unique is several times slower on S16
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return _select(ordered, keep)


def _is_strictly_sorted(arr: KeyArray) -> bool:
    # In blocks, so the check never needs a temporary as large as the list.
    step, last = 1 << 16, len(arr) - 1
    for start in range(0, last, step):
        end = min(start + step, last)
        if not np.all(arr[start:end] < arr[start + 1 : end + 1]):
            return False
    return True


def _found(arr: KeyArray, queries: KeyArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Positions of ``queries`` in the sorted ``arr`` and a mask of those present."""
    pos = np.searchsorted(arr, queries)
    present = np.zeros(len(queries), dtype=bool)
    inside = pos < len(arr)
    # Equal-length S16 values compare exactly, trailing NULs included, in memcmp order.
    present[inside] = arr[pos[inside]] == queries[inside]
    return pos, present


def _py_keys(arr: KeyArray) -> list[bytes]:
    # Not arr.tolist(): NumPy strips trailing NUL bytes from S16 elements it hands out.
    raw = arr.tobytes()
    return [raw[i : i + KEY_LEN] for i in range(0, len(raw), KEY_LEN)]


def _contains(arr: KeyArray, key: bytes) -> bool:
    n = len(arr)
    if n == 0:  # an empty list (often the blocked one) costs no search
        return False
    i = int(arr.searchsorted(key))
    # The element comes back with trailing NULs stripped; both sides are 16 bytes, so comparing
    # the stripped forms is exact.
    return i < n and bool(arr[i] == key.rstrip(b"\0"))


def _replace_members(arr: KeyArray, keys_: KeyArray, member: npt.NDArray[np.bool_]) -> KeyArray:
    """``arr`` with each of the sorted ``keys_`` present exactly when its ``member`` flag is set."""
    pos, present = _found(arr, keys_)
    keep = np.ones(len(arr), dtype=bool)
    keep[pos[present]] = False
    base = _select(arr, keep)
    add = keys_[member]
    return np.insert(base, np.searchsorted(base, add), add)


@dataclass(frozen=True, slots=True)
class DeltaPlan:
    """A delta's effect on one index state, computed off the event loop, installed after COMMIT.

    Holds the complete next state (overlay, and new arrays when the delta triggers a rebuild), so
    installing it is a few assignments that cannot fail halfway.
    """

    generation: int
    count: int
    overlay: dict[bytes, int]
    arrays: tuple[KeyArray, KeyArray] | None
    changed: bool = True  # False when every key already had the state the delta gives it


class RevocationIndex:
    """The in-memory revocation index: sync, no I/O; the scan path calls :meth:`status`.

    Two sorted ``S16`` arrays (revoked, blocked) answer by binary search. Keys changed by deltas
    since the last rebuild live in ``_overlay`` (key -> bits: 1 revoked, 2 blocked), which is
    checked first and merged into the arrays once it would hold more than ``rebuild_at`` keys.
    """

    DEFAULT_REBUILD_AT = 50_000

    def __init__(
        self,
        revoked: KeyArray | None = None,
        blocked: KeyArray | None = None,
        *,
        rebuild_at: int = DEFAULT_REBUILD_AT,
    ) -> None:
        """Build from sorted, duplicate-free S16 arrays; raises ValueError otherwise."""
        if rebuild_at < 1:
            raise ValueError(f"rebuild_at must be >= 1, got {rebuild_at}")
        self._rebuild_at = rebuild_at
        self._revoked = _empty()
        self._blocked = _empty()
        self._overlay: dict[bytes, int] = {}
        self._count = 0
        self._generation = 0
        self.replace(
            _empty() if revoked is None else revoked, _empty() if blocked is None else blocked
        )

    def status(self, key: bytes) -> ListState:
        """The list state of a 16-byte key; raises ValueError for a key of another length."""
        if len(key) != KEY_LEN:
            raise ValueError(f"revocation key must be {KEY_LEN} bytes, got {len(key)}")
        bits = self._overlay.get(key)
        if bits is None:
            if _contains(self._revoked, key):
                return ListState.REVOKED
            return ListState.BLOCKED if _contains(self._blocked, key) else ListState.NONE
        return _STATE_OF_BITS[bits]

    def __len__(self) -> int:
        """Revoked plus blocked entries (a key on both lists counts twice, as in SQLite)."""
        return self._count

    def nbytes(self) -> int:
        """Bytes held by the index's sorted arrays (16 per entry)."""
        return int(self._revoked.nbytes + self._blocked.nbytes)

    @property
    def overlay_size(self) -> int:
        """Keys changed by deltas and not yet merged into the arrays."""
        return len(self._overlay)

    def replace(self, revoked: KeyArray, blocked: KeyArray) -> None:
        """Install whole lists (a snapshot); raises ValueError unless sorted, unique S16 arrays."""
        for name, arr in (("revoked", revoked), ("blocked", blocked)):
            if arr.dtype != _DTYPE or arr.ndim != 1 or not _is_strictly_sorted(arr):
                raise ValueError(f"{name} must be a sorted, duplicate-free 1-D S16 array")
        self._revoked, self._blocked = revoked, blocked
        self._overlay = {}
        self._count = len(revoked) + len(blocked)
        self._generation += 1

    def plan_delta(
        self, revoke: KeyArray, unrevoke: KeyArray, block: KeyArray, unblock: KeyArray
    ) -> DeltaPlan:
        """Compute the index state after a delta, without changing the index.

        Each argument is a sorted, duplicate-free S16 array. Only reads, so it may run on a worker
        thread (the rebuild's copies included) while the loop keeps answering :meth:`status`.
        """
        touched = _sorted_unique(np.concatenate([revoke, unrevoke, block, unblock]))
        old = self._bits_of(touched)
        new = old.copy()
        for ops, bit, setting in (
            (revoke, _REVOKED, True),
            (unrevoke, _REVOKED, False),
            (block, _BLOCKED, True),
            (unblock, _BLOCKED, False),
        ):
            pos = np.searchsorted(touched, ops)
            new[pos] = (new[pos] | bit) if setting else (new[pos] & ~np.uint8(bit))
        count = self._count + _popcount(new) - _popcount(old)
        changed = bool((new != old).any())
        if len(self._overlay) + len(touched) > self._rebuild_at:
            return DeltaPlan(self._generation, count, {}, self._merged(touched, new), changed)
        overlay = dict(self._overlay)
        overlay.update(zip(_py_keys(touched), new.tolist(), strict=True))
        return DeltaPlan(self._generation, count, overlay, None, changed)

    def apply_plan(self, plan: DeltaPlan) -> None:
        """Install a plan made by :meth:`plan_delta` on the current state; ValueError if stale."""
        if plan.generation != self._generation:
            raise ValueError("delta plan was made against an older index state")
        if plan.arrays is not None:
            self._revoked, self._blocked = plan.arrays
        self._overlay = plan.overlay
        self._count = plan.count
        self._generation += 1

    def rebuild(self) -> None:
        """Merge the overlay into the sorted arrays now (O(n) copies, no full sort)."""
        if self._overlay:
            arrays = self._merged(_empty(), np.empty(0, dtype=np.uint8))
            self.apply_plan(DeltaPlan(self._generation, self._count, {}, arrays))

    def _merged(self, keys_: KeyArray, bits: BitArray) -> tuple[KeyArray, KeyArray]:
        """New arrays holding the overlay and then ``keys_`` (sorted) at their ``bits``."""
        known = np.array(list(self._overlay), dtype=_DTYPE)
        known_bits = np.fromiter(self._overlay.values(), dtype=np.uint8, count=len(known))
        stays = ~_found(keys_, known)[1]  # overlay keys the delta does not touch again
        all_keys = np.concatenate([known[stays], keys_])
        all_bits = np.concatenate([known_bits[stays], bits])
        order = np.argsort(all_keys)
        all_keys, all_bits = all_keys[order], all_bits[order]
        return (
            _replace_members(self._revoked, all_keys, (all_bits & _REVOKED) != 0),
            _replace_members(self._blocked, all_keys, (all_bits & _BLOCKED) != 0),
        )

    def _bits_of(self, keys_: KeyArray) -> BitArray:
        bits = np.zeros(len(keys_), dtype=np.uint8)
        bits[_found(self._revoked, keys_)[1]] |= _REVOKED
        bits[_found(self._blocked, keys_)[1]] |= _BLOCKED
        if self._overlay:
            for i, key in enumerate(_py_keys(keys_)):
                known = self._overlay.get(key)
                if known is not None:
                    bits[i] = known
        return bits


def _popcount(bits: BitArray) -> int:
    return int(np.count_nonzero(bits & _REVOKED) + np.count_nonzero(bits & _BLOCKED))


@dataclass(frozen=True, slots=True)
class _Document:
    """A verified, well-formed list document; key arrays sorted and duplicate-free."""

    type: Literal["snapshot", "delta"]
    version: int
    from_version: int
    issued_at: int
    expires: int
    revoke: KeyArray
    unrevoke: KeyArray
    block: KeyArray
    unblock: KeyArray

    def describe(self) -> str:
        counts = f"revoke {len(self.revoke)}, block {len(self.block)}"
        if self.type == "snapshot":
            return f"snapshot v{self.version} ({counts})"
        return (
            f"delta v{self.from_version}->v{self.version} ({counts},"
            f" unrevoke {len(self.unrevoke)}, unblock {len(self.unblock)})"
        )


_OPS = ("revoke", "unrevoke", "block", "unblock")
_FIELDS = {
    "snapshot": frozenset({"type", "version", "issued_at", "expires", *_OPS}),
    "delta": frozenset({"type", "version", "from_version", "issued_at", "expires", *_OPS}),
}


def _int_field(content: dict[str, Any], name: str, minimum: int = 0) -> int:
    value = content.get(name)
    if type(value) is not int or not minimum <= value <= _MAX_INT:
        raise RevocationError(f"{KIND}: {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _keys_field(content: dict[str, Any], name: str) -> KeyArray:
    value = content.get(name, "")
    if not isinstance(value, str):
        raise RevocationError(f"{KIND}: {name!r} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RevocationError(f"{KIND}: {name!r} is not valid base64") from exc
    if len(raw) % KEY_LEN:
        raise RevocationError(f"{KIND}: {name!r} holds {len(raw)} bytes, not a multiple of 16")
    return _sorted_unique(np.frombuffer(raw, dtype=_DTYPE))


def _parse(content: dict[str, Any]) -> _Document:
    """Check a list document's content strictly; raises RevocationError when malformed."""
    kind = content.get("type")
    if kind not in ("snapshot", "delta"):
        raise RevocationError(f"{KIND}: 'type' must be 'snapshot' or 'delta', got {kind!r}")
    unknown = sorted(set(content) - _FIELDS[kind])
    if unknown:
        raise RevocationError(f"{KIND}: unknown field(s) in {kind}: {', '.join(unknown)}")
    version = _int_field(content, "version", minimum=1)
    from_version = _int_field(content, "from_version") if kind == "delta" else 0
    if kind == "delta" and from_version >= version:
        raise RevocationError(f"{KIND}: delta from v{from_version} must be older than v{version}")
    issued_at, expires = _int_field(content, "issued_at"), _int_field(content, "expires")
    if expires < issued_at:
        raise RevocationError(f"{KIND}: expires ({expires}) is before issued_at ({issued_at})")
    ops = {name: _keys_field(content, name) for name in _OPS}
    if kind == "snapshot" and (len(ops["unrevoke"]) or len(ops["unblock"])):
        raise RevocationError(f"{KIND}: a snapshot carries only 'revoke' and 'block'")
    for setting, clearing in (("revoke", "unrevoke"), ("block", "unblock")):
        if _found(ops[setting], ops[clearing])[1].any():
            raise RevocationError(f"{KIND}: a key is in both {setting!r} and {clearing!r}")
    return _Document(kind, version, from_version, issued_at, expires, **ops)


def _check_version(doc: _Document, installed: int) -> None:
    if doc.version <= installed:
        raise RollbackError(
            f"{KIND}: rollback/replay: list version {doc.version} <= installed {installed}"
        )
    if doc.type == "delta" and doc.from_version > installed:
        raise RevocationError(
            f"{KIND}: gap: delta from {doc.from_version} but installed {installed};"
            " fetch a snapshot"
        )


def _verify(data: bytes, signers: Sequence[keys.PublicKey]) -> _Document:
    return _parse(open_document(KIND, data, list(signers), error=RevocationError))


def _rows(list_id: int, arr: KeyArray) -> Iterator[tuple[int, bytes]]:
    raw = arr.tobytes()
    for i in range(0, len(raw), KEY_LEN):
        yield list_id, raw[i : i + KEY_LEN]


async def _read_meta(db: aiosqlite.Connection) -> ListMeta:
    async with db.execute(
        "SELECT version, issued_at, expires FROM revocation_meta WHERE id = 1"
    ) as cur:
        row = await cur.fetchone()
    return _NOTHING if row is None else ListMeta(row[0], row[1], row[2])


async def _load_list(db: aiosqlite.Connection, list_id: int, count: int) -> KeyArray:
    # Rows arrive in primary-key order (memcmp, the order NumPy sorts S16 in): no sort, no set,
    # and one preallocated array, so the peak stays near the final 16 bytes an entry.
    arr = np.empty(count, dtype=_DTYPE)
    pos = 0
    sql = "SELECT key FROM revocation WHERE list = ? ORDER BY key"
    async with db.execute(sql, (list_id,)) as cur:
        while chunk := [row[0] for row in await cur.fetchmany(_LOAD_CHUNK)]:
            end = pos + len(chunk)
            if end > count:
                raise RevocationError(f"revocation store: list {list_id} grew while loading")
            try:
                arr[pos:end] = np.frombuffer(b"".join(chunk), dtype=_DTYPE)
            except TypeError as exc:  # b"".join meets a TEXT or INTEGER key
                raise RevocationError("revocation store is corrupt: a key is not a blob") from exc
            pos = end
    if pos != count or not _is_strictly_sorted(arr):
        raise RevocationError(f"revocation store: list {list_id} did not load in key order")
    return arr


async def _load_index(
    db: aiosqlite.Connection, rebuild_at: int
) -> tuple[RevocationIndex, ListMeta]:
    await db.execute("BEGIN")  # one read snapshot for the counts, the keys and the meta
    try:
        sql = "SELECT list, count(*), sum(length(key) <> 16) FROM revocation GROUP BY list"
        async with db.execute(sql) as cur:
            counts = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
        if set(counts) - {_REVOKED, _BLOCKED} or any(bad for _, bad in counts.values()):
            raise RevocationError("revocation store is corrupt: unknown list id or malformed key")
        revoked = await _load_list(db, _REVOKED, counts.get(_REVOKED, (0, 0))[0])
        blocked = await _load_list(db, _BLOCKED, counts.get(_BLOCKED, (0, 0))[0])
        meta = await _read_meta(db)
    finally:
        await db.execute("COMMIT")
    return RevocationIndex(revoked, blocked, rebuild_at=rebuild_at), meta


class RevocationStore:
    """The durable revocation list (SQLite) and its in-memory index; open with :meth:`open`."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        index: RevocationIndex,
        meta: ListMeta,
        name: str,
        cursor: Mapping[str, str] | None = None,
    ) -> None:
        self._db: aiosqlite.Connection | None = db
        self._index = index
        self._meta = meta
        self._name = name
        self._cursor: dict[str, str] = dict(cursor or {})
        self._lock = asyncio.Lock()
        self._installs: set[asyncio.Task[ListMeta]] = set()

    @classmethod
    async def open(
        cls, path: Path | str, *, rebuild_at: int = RevocationIndex.DEFAULT_REBUILD_AT
    ) -> Self:
        """Open (creating if needed) the store at ``path`` (or ":memory:") and load the index.

        Raises RevocationError when the database cannot be opened or its content is corrupt.
        """
        try:
            db = await aiosqlite.connect(str(path), isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise RevocationError(f"{path}: cannot open revocation store: {exc}") from exc
        try:
            for pragma in _PRAGMAS:
                await db.execute(f"PRAGMA {pragma}")
            for statement in _SCHEMA:
                await db.execute(statement)
            index, meta = await _load_index(db, rebuild_at)
            cursor = await _read_cursor(db)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise RevocationError(f"{path}: cannot read revocation store: {exc}") from exc
            raise
        log.info("revocation store %s: v%d, %d entries", path, meta.version, len(index))
        return cls(db, index, meta, str(path), cursor)

    @property
    def index(self) -> RevocationIndex:
        return self._index

    @property
    def meta(self) -> ListMeta:
        return self._meta

    @property
    def upstream_cursor(self) -> dict[str, str]:
        """The cursor stored by the last :meth:`apply_secrets` (a copy; empty when none)."""
        return dict(self._cursor)

    def status(self, key: bytes) -> ListState:
        """The list state of a 16-byte key, from memory; raises ValueError for a wrong length."""
        return self._index.status(key)

    async def apply(self, data: bytes, signers: Sequence[keys.PublicKey]) -> ListMeta:
        """Verify a signed snapshot or delta and install it atomically; returns the new meta.

        Raises RevocationError (forged, truncated, malformed, gap, store fault) or RollbackError
        (version not newer than installed); either way nothing changes.
        """
        if self._db is None:
            raise RevocationError(f"{self._name}: revocation store is closed")
        doc = await asyncio.to_thread(_verify, data, signers)
        install = asyncio.ensure_future(self._install(doc))
        self._installs.add(install)
        install.add_done_callback(self._installs.discard)
        # Shielded: once the transaction has started, SQLite and the index finish together even
        # if the caller is cancelled. Refusals are raised, not logged: the caller knows whether a
        # rollback is a harmless re-read of a file or an attack worth an alert.
        return await asyncio.shield(install)

    async def apply_file(self, path: Path, signers: Sequence[keys.PublicKey]) -> ListMeta:
        """:meth:`apply` to a file's content; an unreadable file raises RevocationError."""
        try:
            data = await asyncio.to_thread(Path(path).read_bytes)
        except OSError as exc:
            raise RevocationError(f"{path}: cannot read revocation list: {exc}") from exc
        return await self.apply(data, signers)

    async def apply_secrets(
        self,
        *,
        revoke: Iterable[str] = (),
        unrevoke: Iterable[str] = (),
        block: Iterable[str] = (),
        unblock: Iterable[str] = (),
        cursor: Mapping[str, str],
        issued_at: int | None = None,
    ) -> ListMeta:
        """Apply secrets from an authenticated upstream (pretix), no signature, one transaction.

        Each secret becomes its key (:func:`secret_key`); the operations set or clear it as a
        delta does, so applying the same download twice changes nothing. ``cursor`` entries are
        stored (merged) in the same transaction and read back by :attr:`upstream_cursor`.
        ``issued_at`` (default: now) refreshes the list's freshness even when nothing changed;
        the version goes up by one only when a key's state changed (or nothing was installed
        yet): pretix's inclusive cursors send the newest rows again every round, and setting
        what is already set is no change.
        Raises RevocationError when a secret is both set and cleared on one list or the store
        fails; then nothing changes.
        """
        if self._db is None:
            raise RevocationError(f"{self._name}: revocation store is closed")
        ops = [_secret_keys(values) for values in (revoke, unrevoke, block, unblock)]
        for (setting, clearing), name in (((0, 1), "revoke"), ((2, 3), "block")):
            if _found(ops[setting], ops[clearing])[1].any():
                raise RevocationError(f"{self._name}: a secret is both {name}d and un{name}d")
        stamp = int(time.time()) if issued_at is None else issued_at
        install = asyncio.ensure_future(self._install_secrets(ops, dict(cursor), stamp))
        self._installs.add(install)
        install.add_done_callback(self._installs.discard)
        return await asyncio.shield(install)

    async def close(self) -> None:
        """Finish any install in progress and close the database; safe to call twice."""
        db, self._db = self._db, None
        if db is None:
            return
        await asyncio.gather(*self._installs, return_exceptions=True)
        await db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _install(self, doc: _Document) -> ListMeta:
        async with self._lock:
            _check_version(doc, self._meta.version)
            plan = None
            if doc.type == "delta":
                plan = await asyncio.to_thread(
                    self._index.plan_delta, doc.revoke, doc.unrevoke, doc.block, doc.unblock
                )
            await self._write(doc)
            # After COMMIT nothing below can fail: the next index state is already computed.
            if plan is None:
                self._index.replace(doc.revoke, doc.block)
            else:
                self._index.apply_plan(plan)
            self._meta = ListMeta(doc.version, doc.issued_at, doc.expires)
            if doc.type == "snapshot":
                self._cursor = {}
        log.info(
            "%s: revocation %s installed, %d entries", self._name, doc.describe(), len(self._index)
        )
        return self._meta

    async def _install_secrets(
        self, ops: list[KeyArray], cursor: dict[str, str], issued_at: int
    ) -> ListMeta:
        revoke, unrevoke, block, unblock = ops
        async with self._lock:
            plan = None
            if any(len(op) for op in ops):
                plan = await asyncio.to_thread(
                    self._index.plan_delta, revoke, unrevoke, block, unblock
                )
            changed = plan is not None and plan.changed
            version = self._meta.version + 1 if changed or not self._meta.version else None
            meta = ListMeta(version or self._meta.version, issued_at, None)

            async def rows(db: aiosqlite.Connection) -> None:
                await self._check_unchanged(db)
                if changed:
                    await _write_ops(db, revoke, unrevoke, block, unblock)
                await _write_meta(db, meta)
                await db.executemany(
                    "INSERT OR REPLACE INTO revocation_cursor(name, value) VALUES (?, ?)",
                    sorted(cursor.items()),
                )

            await self._transaction(rows)
            if plan is not None and changed:
                self._index.apply_plan(plan)
            self._meta = meta
            self._cursor.update(cursor)
        if changed:
            log.info(
                "%s: upstream secrets v%d installed (revoke %d, unrevoke %d, block %d,"
                " unblock %d), %d entries",
                self._name, meta.version, len(revoke), len(unrevoke), len(block), len(unblock),
                len(self._index),
            )  # fmt: skip
        return meta

    async def _write(self, doc: _Document) -> None:
        await self._transaction(lambda db: self._write_rows(db, doc))

    async def _transaction(self, body: Callable[[aiosqlite.Connection], Awaitable[None]]) -> None:
        """Run ``body`` in one IMMEDIATE transaction; raises RevocationError on a store fault."""
        db = self._db
        if db is None:
            raise RevocationError(f"{self._name}: revocation store is closed")
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                await body(db)
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    # A failing ROLLBACK must not hide the error that made us roll back.
                    with contextlib.suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise RevocationError(f"{self._name}: cannot store revocation list: {exc}") from exc

    async def _check_unchanged(self, db: aiosqlite.Connection) -> None:
        if await _read_meta(db) != self._meta:
            raise RevocationError(f"{self._name}: store was changed by another process; reopen it")

    async def _write_rows(self, db: aiosqlite.Connection, doc: _Document) -> None:
        await self._check_unchanged(db)
        if doc.type == "snapshot":
            # A snapshot replaces everything, so an upstream's download positions no longer hold.
            await db.execute("DELETE FROM revocation")
            await db.execute("DELETE FROM revocation_cursor")
        await _write_ops(db, doc.revoke, doc.unrevoke, doc.block, doc.unblock)
        await _write_meta(db, ListMeta(doc.version, doc.issued_at, doc.expires))


async def _write_ops(
    db: aiosqlite.Connection,
    revoke: KeyArray,
    unrevoke: KeyArray,
    block: KeyArray,
    unblock: KeyArray,
) -> None:
    insert = "INSERT OR IGNORE INTO revocation(list, key) VALUES (?, ?)"
    delete = "DELETE FROM revocation WHERE list = ? AND key = ?"
    await db.executemany(insert, _rows(_REVOKED, revoke))
    await db.executemany(insert, _rows(_BLOCKED, block))
    await db.executemany(delete, _rows(_REVOKED, unrevoke))
    await db.executemany(delete, _rows(_BLOCKED, unblock))


async def _write_meta(db: aiosqlite.Connection, meta: ListMeta) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO revocation_meta(id, version, issued_at, expires)"
        " VALUES (1, ?, ?, ?)",
        (meta.version, meta.issued_at, meta.expires),
    )


async def _read_cursor(db: aiosqlite.Connection) -> dict[str, str]:
    async with db.execute("SELECT name, value FROM revocation_cursor") as cur:
        return {str(name): str(value) for name, value in await cur.fetchall()}


def _secret_keys(secrets: Iterable[str]) -> KeyArray:
    raw = b"".join(secret_key(s) for s in secrets)
    return _sorted_unique(np.frombuffer(raw, dtype=_DTYPE))


def secret_key(secret: str) -> bytes:
    """The 16-byte revocation key of a format whose key is a secret string (pretix)."""
    return hashlib.blake2b(secret.encode(), digest_size=KEY_LEN).digest()
