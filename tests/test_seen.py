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
