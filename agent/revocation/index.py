"""The scan path's revocation index: two sorted NumPy arrays of 16-byte keys and a small overlay.

Sync and without I/O: :meth:`RevocationIndex.status` answers a lane from memory (exactly 16 bytes an
entry, plus the keys changed by deltas since the last rebuild). Exact membership only: nothing
probabilistic ever decides a denial. The key-array helpers here are shared by the list document
(:mod:`agent.revocation.document`) and the store (:mod:`agent.revocation.store`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

KEY_LEN = 16
DTYPE = np.dtype("S16")
REVOKED, BLOCKED = 1, 2  # list ids in SQLite and bits in the overlay

KeyArray = npt.NDArray[np.bytes_]
BitArray = npt.NDArray[np.uint8]


class ListState(enum.IntEnum):
    """What the list says about a key; a key on both lists reads as REVOKED. CANCELED, UNPAID and
    UNAPPROVED are a pretix ticket's order state (:meth:`RevocationIndex.order_status`)."""

    NONE = 0
    REVOKED = 1
    BLOCKED = 2
    CANCELED = 3
    UNPAID = 4
    UNAPPROVED = 5


_STATE_OF_BITS = (ListState.NONE, ListState.REVOKED, ListState.BLOCKED, ListState.REVOKED)
# A pretix secret's order state is kept under a second key (:func:`order_key`), on the same two
# lists: the revoked bit alone there means its order (or the position) is cancelled or expired,
# the blocked bit alone that its order is not paid, both that it waits for approval. Set and
# cleared as pretix's orders change.
ORDER_STATE_PREFIX = "\0order\0"
ORDER_STATE_BITS = {
    ListState.NONE: 0,
    ListState.CANCELED: REVOKED,
    ListState.UNPAID: BLOCKED,
    ListState.UNAPPROVED: REVOKED | BLOCKED,
}
_ORDER_STATE_OF_BITS = {bits: state for state, bits in ORDER_STATE_BITS.items()}


def _empty() -> KeyArray:
    return np.empty(0, dtype=DTYPE)


def _select(arr: KeyArray, mask: npt.NDArray[np.bool_]) -> KeyArray:
    # Masked as raw 16-byte records (V16): NumPy then drops the GIL, so a worker thread rebuilding
    # a 5M list stalls the event loop ~1 ms instead of ~30 ms (np.delete on S16: ~140 ms).
    selected: KeyArray = arr.view("V16")[mask].view(DTYPE)
    return selected


def sorted_unique(arr: KeyArray) -> KeyArray:
    if len(arr) < 2:
        return arr.copy()
    ordered = np.sort(arr)  # np.unique is several times slower on S16
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return _select(ordered, keep)


def is_strictly_sorted(arr: KeyArray) -> bool:
    # In blocks, so the check never needs a temporary as large as the list.
    step, last = 1 << 16, len(arr) - 1
    for start in range(0, last, step):
        end = min(start + step, last)
        if not np.all(arr[start:end] < arr[start + 1 : end + 1]):
            return False
    return True


def found(arr: KeyArray, queries: KeyArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
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
    pos, present = found(arr, keys_)
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

    def order_status(self, key: bytes) -> ListState:
        """The order state kept under a pretix secret's :func:`order_key`: CANCELED, UNPAID,
        UNAPPROVED or NONE (paid, or not known to be otherwise)."""
        if len(key) != KEY_LEN:
            raise ValueError(f"revocation key must be {KEY_LEN} bytes, got {len(key)}")
        bits = self._overlay.get(key)
        if bits is None:
            bits = REVOKED * _contains(self._revoked, key) | BLOCKED * _contains(self._blocked, key)
        return _ORDER_STATE_OF_BITS[bits]

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
            if arr.dtype != DTYPE or arr.ndim != 1 or not is_strictly_sorted(arr):
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
        touched = sorted_unique(np.concatenate([revoke, unrevoke, block, unblock]))
        old = self._bits_of(touched)
        new = old.copy()
        for ops, bit, setting in (
            (revoke, REVOKED, True),
            (unrevoke, REVOKED, False),
            (block, BLOCKED, True),
            (unblock, BLOCKED, False),
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
        known = np.array(list(self._overlay), dtype=DTYPE)
        known_bits = np.fromiter(self._overlay.values(), dtype=np.uint8, count=len(known))
        stays = ~found(keys_, known)[1]  # overlay keys the delta does not touch again
        all_keys = np.concatenate([known[stays], keys_])
        all_bits = np.concatenate([known_bits[stays], bits])
        order = np.argsort(all_keys)
        all_keys, all_bits = all_keys[order], all_bits[order]
        return (
            _replace_members(self._revoked, all_keys, (all_bits & REVOKED) != 0),
            _replace_members(self._blocked, all_keys, (all_bits & BLOCKED) != 0),
        )

    def _bits_of(self, keys_: KeyArray) -> BitArray:
        bits = np.zeros(len(keys_), dtype=np.uint8)
        bits[found(self._revoked, keys_)[1]] |= REVOKED
        bits[found(self._blocked, keys_)[1]] |= BLOCKED
        if self._overlay:
            for i, key in enumerate(_py_keys(keys_)):
                known = self._overlay.get(key)
                if known is not None:
                    bits[i] = known
        return bits


def _popcount(bits: BitArray) -> int:
    return int(np.count_nonzero(bits & REVOKED) + np.count_nonzero(bits & BLOCKED))


def secret_keys(secrets: Iterable[str]) -> KeyArray:
    """The sorted, distinct index keys of pretix ``secrets`` (:func:`secret_key`)."""
    raw = b"".join(secret_key(s) for s in secrets)
    return sorted_unique(np.frombuffer(raw, dtype=DTYPE))


def secret_key(secret: str) -> bytes:
    """The 16-byte revocation key of a format whose key is a secret string (pretix)."""
    return hashlib.blake2b(secret.encode(), digest_size=KEY_LEN).digest()


def order_key(secret: str) -> bytes:
    """The 16-byte key a pretix secret's order state is kept under (:data:`ORDER_STATE_PREFIX`:
    no secret holds a NUL, so it is never another secret's key)."""
    return secret_key(ORDER_STATE_PREFIX + secret)
