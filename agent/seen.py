"""Which ticket refs may have history in the journal: the scan path's way to skip the database.

Most scans are of tickets never seen at this gate, so :meth:`Journal.history` asks this filter
first and queries SQLite only on a hit. A hit may be false (two refs with one 64-bit hash): that
costs one query, never a decision. A miss is always true: every ref is added before its row is
written.

The refs on file at open are held as a sorted NumPy array of their hashes, 8 bytes each (a Python
set of ints costs ~70 bytes an entry: 7 MB for a season's 100,000 rows); refs added since live in
a set that is folded into the array once it grows past ``fold_at``. Both run on the event loop
the lanes share, so neither sorts the whole array again: opening sorts once (``np.unique`` was
1.8 s for 1,000,000 hashes here, a plain sort 20 ms), and a fold merges the few new hashes into
the sorted array in one pass (9 ms at 1,000,000 held, where ``np.union1d`` took 1.5 s: every
4,096 refs learnt from other gates stalled every lane that long).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

_DTYPE = np.int64  # hash() of a str is a C long (64-bit on every platform the gate runs on)
Hashes = npt.NDArray[np.int64]


class SeenRefs:
    """A set of ticket refs with no false negatives, kept compact for the life of the gate."""

    DEFAULT_FOLD_AT = 4096

    def __init__(self, *, fold_at: int = DEFAULT_FOLD_AT) -> None:
        if fold_at < 1:
            raise ValueError(f"fold_at must be >= 1, got {fold_at}")
        self._fold_at = fold_at
        self._sorted: Hashes = _empty()
        self._recent: set[int] = set()

    @staticmethod
    def hashes(refs: Iterable[str]) -> Hashes:
        """The hashes of a batch of refs, for :meth:`load` (a batch at a time keeps peaks low)."""
        return np.fromiter((hash(ref) for ref in refs), dtype=_DTYPE)

    def load(self, parts: list[Hashes]) -> None:
        """Replace the contents with the refs whose :meth:`hashes` are ``parts``."""
        self._sorted = _distinct(np.sort(np.concatenate(parts))) if parts else _empty()
        self._recent = set()

    def add(self, ref: str) -> bool:
        """Add ``ref``; True when it was not held before (so it has no history yet)."""
        key = hash(ref)
        if self._has(key):
            return False
        self._recent.add(key)
        if len(self._recent) >= self._fold_at:
            self._fold()
        return True

    def update(self, refs: Iterable[str]) -> None:
        for ref in refs:
            self.add(ref)

    def __contains__(self, ref: object) -> bool:
        return self._has(hash(ref))

    def _has(self, key: int) -> bool:
        if key in self._recent:
            return True
        i = int(np.searchsorted(self._sorted, key))
        return i < len(self._sorted) and int(self._sorted[i]) == key

    def __len__(self) -> int:
        """Distinct hashes held (refs sharing a hash count once)."""
        return len(self._sorted) + len(self._recent)

    @property
    def nbytes(self) -> int:
        """Bytes held by the sorted array (the recent set is at most ``fold_at`` entries)."""
        return int(self._sorted.nbytes)

    def _fold(self) -> None:
        """Merge the recent hashes into the sorted array: none of them is in it (add checks)."""
        recent = np.sort(np.fromiter(self._recent, dtype=_DTYPE, count=len(self._recent)))
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, recent), recent)
        self._recent = set()


def _empty() -> Hashes:
    return np.empty(0, dtype=_DTYPE)


def _distinct(ordered: Hashes) -> Hashes:
    """``ordered`` (sorted) without repeats."""
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]
