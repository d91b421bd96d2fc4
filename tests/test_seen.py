"""SeenRefs: the journal's filter of refs with history never misses one, loaded or added later."""

from __future__ import annotations

import pytest

from agent.seen import SeenRefs


def test_loaded_and_added_refs_are_all_found_and_others_are_not() -> None:
    seen = SeenRefs(fold_at=3)
    loaded = [f"tk1:{i:032x}" for i in range(1000)]
    seen.load([SeenRefs.hashes(loaded[:600]), SeenRefs.hashes(loaded[600:] + loaded[:10])])
    assert len(seen) == 1000 and seen.nbytes == 8000
    added = [f"pretix:secret-{i}" for i in range(10)]  # crosses fold_at three times
    seen.update(added)
    seen.add(loaded[5])  # already there: not counted again
    assert len(seen) == 1010
    assert all(ref in seen for ref in loaded + added)
    assert not any(f"tk1:{i:032x}" in seen for i in range(1000, 3000))


def test_an_empty_filter_finds_nothing() -> None:
    seen = SeenRefs()
    seen.load([])
    assert "tk1:00" not in seen and len(seen) == 0


def test_fold_at_must_be_positive() -> None:
    with pytest.raises(ValueError, match="fold_at"):
        SeenRefs(fold_at=0)


def test_the_array_stays_sorted_and_distinct_through_loads_and_folds() -> None:
    """Folds merge into the sorted array (no re-sort): checked against a plain set of hashes."""
    seen = SeenRefs(fold_at=8)
    loaded = [f"tk1:{i:032x}" for i in range(500)]
    seen.load([SeenRefs.hashes(loaded), SeenRefs.hashes(loaded[::3]), SeenRefs.hashes([])])
    added = [f"raw:{i:016x}" for i in range(300)] + loaded[:50]
    seen.update(added)
    seen.add("raw:last")  # leaves a recent set behind: the array holds the folded ones
    expected = {hash(ref) for ref in loaded + added} | {hash("raw:last")}
    held = seen._sorted.tolist()
    assert held == sorted(set(held)), "the array must stay sorted with no repeats"
    assert set(held) | seen._recent == expected and len(seen) == len(expected)
    assert len(held) == 500 + 296 and len(seen._recent) == 5  # 301 new: 37 folds of 8, 5 left
