"""Revocation lists: signed snapshots and deltas, the SQLite store and the in-memory index."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import keys
from agent.errors import IssuerError, RevocationError, RollbackError, SignedDocumentError
from agent.revocation import (
    ListMeta,
    ListState,
    RevocationIndex,
    RevocationStore,
    secret_key,
)
from agent.revocation_issuer import issue_delta, make_delta, make_snapshot
from agent.signed import sign_document

NOW = 1_750_000_000
DAY = 86_400

# Keys chosen to catch byte-order and padding mistakes: trailing NULs (NumPy strips them from S16
# elements), a key that is a NUL-extension of another, the extremes, and high bytes.
A = b"\x01" + b"\x00" * 15
B = b"\x01" + b"\x00" * 14 + b"\x01"
C = b"\x00" * 16
D = b"\xff" * 16
E = b"\x80" + b"\x7f" * 15
F = bytes(range(16))
ALL = (A, B, C, D, E, F)


def key(i: int) -> bytes:
    return hashlib.blake2b(i.to_bytes(8, "big"), digest_size=16).digest()


@pytest.fixture(scope="module")
def list_key() -> keys.PrivateKey:
    return keys.generate()


@pytest.fixture(scope="module")
def signers(list_key: keys.PrivateKey) -> list[keys.PublicKey]:
    return [list_key.public_key()]


@pytest.fixture
def sign(list_key: keys.PrivateKey) -> Callable[[dict[str, Any]], bytes]:
    return lambda content: sign_document("revocations", content, list_key)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RevocationStore]:
    s = await RevocationStore.open(tmp_path / "rev.db")
    yield s
    await s.close()


def snapshot(
    version: int, revoke: tuple[bytes, ...] = (), block: tuple[bytes, ...] = ()
) -> dict[str, Any]:
    return make_snapshot(
        version=version, issued_at=NOW, expires=NOW + DAY, revoke=revoke, block=block
    )


def delta(from_version: int, version: int, **ops: tuple[bytes, ...]) -> dict[str, Any]:
    return make_delta(
        from_version=from_version,
        version=version,
        issued_at=NOW + version,
        expires=NOW + DAY,
        **ops,
    )


def states(
    s: RevocationStore | RevocationIndex, ks: tuple[bytes, ...] = ALL
) -> dict[bytes, ListState]:
    return {k: s.status(k) for k in ks}


def expect(
    revoked: tuple[bytes, ...] = (), blocked: tuple[bytes, ...] = ()
) -> dict[bytes, ListState]:
    out = dict.fromkeys(ALL, ListState.NONE)
    out |= dict.fromkeys(blocked, ListState.BLOCKED)
    return out | dict.fromkeys(revoked, ListState.REVOKED)


async def test_snapshot_then_deltas_set_each_state(
    store: RevocationStore, sign: Any, signers: Any
) -> None:
    assert states(store) == expect()
    meta = await store.apply(sign(snapshot(1, revoke=(A, C), block=(D,))), signers)
    assert meta == ListMeta(version=1, issued_at=NOW, expires=NOW + DAY)
    assert states(store) == expect(revoked=(A, C), blocked=(D,))

    await store.apply(sign(delta(1, 2, revoke=(B,), unrevoke=(A,), block=(C,))), signers)
    assert states(store) == expect(revoked=(B, C), blocked=(D,))  # revoked wins over blocked

    meta = await store.apply(sign(delta(2, 3, unrevoke=(C,), unblock=(D,), block=(E,))), signers)
    assert states(store) == expect(revoked=(B,), blocked=(C, E))
    assert meta == store.meta == ListMeta(version=3, issued_at=NOW + 3, expires=NOW + DAY)
    assert len(store.index) == 3


async def test_a_part_of_an_upstream_download_keeps_the_lists_freshness_and_expiry(
    tmp_path: Path, sign: Any, signers: Any
) -> None:
    """A review: a part of a pretix download (fresh=False) kept issued_at but dropped the
    signed list's expires, so an expired list looked fresh after the part. Both are kept, on
    disk too; only the round's last part stamps the list."""
    path = tmp_path / "rev.db"
    async with await RevocationStore.open(path) as s:
        signed = await s.apply(sign(snapshot(1, revoke=(A,))), signers)
        assert signed.expires == NOW + DAY
        part = await s.apply_secrets(revoke=["part-1"], cursor={"c": "1"}, fresh=False)
        assert (part.version, part.issued_at, part.expires) == (2, NOW, NOW + DAY)
        assert part.is_stale(NOW + DAY + 1, 10 * DAY)  # expired stays expired
    async with await RevocationStore.open(path) as s:
        assert s.meta == part
        whole = await s.apply_secrets(revoke=["part-2"], cursor={"c": "2"}, issued_at=NOW + 5)
        assert (whole.issued_at, whole.expires) == (NOW + 5, None)


async def test_state_survives_reopen(tmp_path: Path, sign: Any, signers: Any) -> None:
    path = tmp_path / "rev.db"
    async with await RevocationStore.open(path) as s:
        await s.apply(sign(snapshot(1, revoke=(A, B), block=(A, C))), signers)
        await s.apply(sign(delta(1, 2, unrevoke=(B,), revoke=(F,), unblock=(C,))), signers)
        before, meta = states(s), s.meta
    async with await RevocationStore.open(path) as s:
        assert states(s) == before == expect(revoked=(A, F))
        assert s.meta == meta
        assert len(s.index) == 3  # A on both lists counts twice, as in SQLite
        assert s.index.overlay_size == 0  # loaded straight into the sorted arrays


async def test_snapshot_replaces_everything(
    store: RevocationStore, sign: Any, signers: Any
) -> None:
    await store.apply(sign(snapshot(1, revoke=(A, B), block=(C,))), signers)
    await store.apply(sign(delta(1, 2, revoke=(D,))), signers)
    await store.apply(sign(snapshot(7, revoke=(E,))), signers)
    assert states(store) == expect(revoked=(E,))
    assert store.meta.version == 7 and len(store.index) == 1


async def test_overlapping_delta_applies(store: RevocationStore, sign: Any, signers: Any) -> None:
    await store.apply(sign(snapshot(1)), signers)
    await store.apply(sign(delta(1, 2, revoke=(A,))), signers)
    await store.apply(sign(delta(2, 3, revoke=(B,))), signers)
    # computed from v2 while this gate already has v3: re-applying set/clear ops is harmless
    await store.apply(sign(delta(2, 4, revoke=(B, C), unrevoke=(A,))), signers)
    assert states(store) == expect(revoked=(B, C))
    assert store.meta.version == 4


def _forged(sign: Any) -> bytes:
    envelope = json.loads(sign(delta(2, 3, unrevoke=(A,))))
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["unrevoke"] = base64.b64encode(B).decode()
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(envelope).encode()


def _signed_raw(content: dict[str, Any]) -> Callable[[Any], bytes]:
    return lambda sign: sign(content)


REFUSALS: dict[str, tuple[Callable[[Any], bytes], type[SignedDocumentError], str]] = {
    "forged": (_forged, RevocationError, "signature does not verify"),
    "truncated": (
        lambda sign: sign(delta(2, 3, unrevoke=(A,)))[:-40],
        RevocationError,
        "not a JSON",
    ),
    "wrong kind": (
        lambda sign: sign_document("trust", delta(2, 3, unrevoke=(A,)), keys.generate()),
        RevocationError,
        "expected 'revocations'",
    ),
    "not a signer": (
        lambda sign: sign_document("revocations", delta(2, 3, unrevoke=(A,)), keys.generate()),
        RevocationError,
        "signature does not verify",
    ),
    "replay": (lambda sign: sign(delta(1, 2, unrevoke=(A,))), RollbackError, "2 <= installed 2"),
    "rollback": (lambda sign: sign(delta(0, 1, unrevoke=(A,))), RollbackError, "1 <= installed 2"),
    "old snapshot": (lambda sign: sign(snapshot(2)), RollbackError, "rollback/replay"),
    "gap": (lambda sign: sign(delta(3, 4, unrevoke=(A,))), RevocationError, "gap: delta from 3"),
    "unknown field": (
        _signed_raw({**delta(2, 3), "extra": 1}),
        RevocationError,
        "unknown field(s) in delta: extra",
    ),
    "bad base64": (_signed_raw({**delta(2, 3), "revoke": "%%%"}), RevocationError, "base64"),
    "ragged keys": (
        _signed_raw({**delta(2, 3), "revoke": base64.b64encode(b"x" * 17).decode()}),
        RevocationError,
        "not a multiple of 16",
    ),
    "bool version": (_signed_raw({**delta(2, 3), "version": True}), RevocationError, "'version'"),
    "set and clear": (
        _signed_raw({**delta(2, 3, revoke=(A,)), "unrevoke": base64.b64encode(A).decode()}),
        RevocationError,
        "both 'revoke' and 'unrevoke'",
    ),
    "snapshot unblock": (
        _signed_raw({**snapshot(3), "unblock": base64.b64encode(C).decode()}),
        RevocationError,
        "only 'revoke' and 'block'",
    ),
    "snapshot from_version": (
        _signed_raw({**snapshot(3), "from_version": 2}),
        RevocationError,
        "unknown field(s) in snapshot: from_version",
    ),
    "expires before issued": (
        _signed_raw({**delta(2, 3), "expires": NOW - 1}),
        RevocationError,
        "before issued_at",
    ),
    "backwards delta": (_signed_raw({**delta(2, 3), "from_version": 3}), RevocationError, "older"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_refused_document_changes_nothing(
    tmp_path: Path, sign: Any, signers: Any, case: str
) -> None:
    make, error, message = REFUSALS[case]
    path = tmp_path / "rev.db"
    async with await RevocationStore.open(path) as s:
        await s.apply(sign(snapshot(1, revoke=(A,), block=(C,))), signers)
        await s.apply(sign(delta(1, 2, revoke=(B,))), signers)
        before, meta = states(s), s.meta
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            await s.apply(make(sign), signers)
        assert states(s) == before and s.meta == meta
    async with await RevocationStore.open(path) as s:  # and nothing reached SQLite either
        assert states(s) == before == expect(revoked=(A, B), blocked=(C,))
        assert s.meta == meta


async def test_apply_file(tmp_path: Path, store: RevocationStore, sign: Any, signers: Any) -> None:
    path = tmp_path / "list.json"
    path.write_bytes(sign(snapshot(1, revoke=(A,))))
    assert (await store.apply_file(path, signers)).version == 1
    assert store.status(A) is ListState.REVOKED
    with pytest.raises(RevocationError, match=r"missing\.json: cannot read"):
        await store.apply_file(tmp_path / "missing.json", signers)


async def test_same_delta_twice_at_once_installs_once(
    store: RevocationStore, sign: Any, signers: Any
) -> None:
    data = sign(delta(0, 1, revoke=(A,)))
    results = await asyncio.gather(
        store.apply(data, signers), store.apply(data, signers), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["ListMeta", "RollbackError"]
    assert store.meta.version == 1 and store.status(A) is ListState.REVOKED


@pytest.mark.parametrize("delay", [0, 0.0002, 0.0005, 0.001, 0.002, 0.005])
async def test_cancelled_apply_leaves_memory_and_sqlite_agreeing(
    tmp_path: Path, sign: Any, signers: Any, delay: float
) -> None:
    path = tmp_path / "rev.db"
    s = await RevocationStore.open(path)
    await s.apply(sign(snapshot(1, revoke=(A,))), signers)
    task = asyncio.ensure_future(s.apply(sign(delta(1, 2, revoke=(B,), unrevoke=(A,))), signers))
    await asyncio.sleep(delay)  # the scenario: cancel before, during or after the install
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await s.close()  # lets an install that already started finish
    assert (s.meta.version, states(s)) in [(1, expect(revoked=(A,))), (2, expect(revoked=(B,)))]
    async with await RevocationStore.open(path) as reopened:
        assert reopened.meta == s.meta and states(reopened) == states(s)


async def test_store_written_by_another_process_is_refused(
    tmp_path: Path, sign: Any, signers: Any
) -> None:
    path = tmp_path / "rev.db"
    async with (
        await RevocationStore.open(path) as first,
        await RevocationStore.open(path) as second,
    ):
        await first.apply(sign(delta(0, 1, revoke=(A,))), signers)
        with pytest.raises(RevocationError, match="changed by another process"):
            await second.apply(sign(snapshot(2, revoke=(B,))), signers)
        assert second.meta.version == 0 and second.status(A) is ListState.NONE
    async with await RevocationStore.open(path) as s:
        assert s.meta.version == 1 and states(s) == expect(revoked=(A,))


async def test_closed_store_refuses_and_close_is_idempotent(
    store: RevocationStore, sign: Any, signers: Any
) -> None:
    await store.close()
    await store.close()
    with pytest.raises(RevocationError, match="closed"):
        await store.apply(sign(snapshot(1)), signers)


async def test_memory_store(sign: Any, signers: Any) -> None:
    async with await RevocationStore.open(":memory:") as s:
        await s.apply(sign(snapshot(1, block=(F,))), signers)
        assert s.status(F) is ListState.BLOCKED


@pytest.mark.parametrize("bad", [b"short", "sixteen chars!!!", 7, (b"x" * 16, 3)])
async def test_corrupt_store_is_refused_at_open(tmp_path: Path, bad: Any) -> None:
    path = tmp_path / "rev.db"
    await (await RevocationStore.open(path)).close()
    row = bad if isinstance(bad, tuple) else (bad, 1)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO revocation(key, list) VALUES (?, ?)", row)
    with pytest.raises(RevocationError, match="corrupt"):
        await RevocationStore.open(path)


async def test_large_list_loads_into_arrays(tmp_path: Path, sign: Any, signers: Any) -> None:
    revoked = tuple(key(i) for i in range(60_000))
    blocked = tuple(key(i) for i in range(60_000, 100_000))
    path = tmp_path / "rev.db"
    async with await RevocationStore.open(path) as s:
        await s.apply(sign(snapshot(1, revoke=revoked, block=blocked)), signers)
    async with await RevocationStore.open(path) as s:
        assert len(s.index) == 100_000 and s.index.nbytes() == 16 * 100_000
        rng = random.Random(1)
        assert all(s.status(k) is ListState.REVOKED for k in rng.sample(revoked, 500))
        assert all(s.status(k) is ListState.BLOCKED for k in rng.sample(blocked, 500))
        assert all(s.status(key(i)) is ListState.NONE for i in range(100_000, 100_500))


async def test_overlay_rebuild_keeps_answers_exact(tmp_path: Path, sign: Any, signers: Any) -> None:
    pool = [key(i) for i in range(120)] + list(ALL)
    model: dict[bytes, int] = {}
    rng = random.Random(5)
    path = tmp_path / "rev.db"
    async with await RevocationStore.open(path, rebuild_at=16) as s:
        await s.apply(sign(snapshot(1)), signers)
        overlay_sizes = set()
        for version in range(2, 40):
            ops = _random_ops(rng, pool, model)
            await s.apply(sign(delta(version - 1, version, **ops)), signers)
            overlay_sizes.add(s.index.overlay_size)
            assert _model_states(model, pool) == states(s, tuple(pool))
        # both paths ran: answers from the overlay, and merges back into the arrays
        assert 0 in overlay_sizes and max(overlay_sizes) in range(1, 17)
        assert len(s.index) == sum(bin(bits).count("1") for bits in model.values())
    async with await RevocationStore.open(path) as s:
        assert _model_states(model, pool) == states(s, tuple(pool))


def _random_ops(
    rng: random.Random, pool: list[bytes], model: dict[bytes, int]
) -> dict[str, tuple[bytes, ...]]:
    touched = rng.sample(pool, rng.randint(0, 25))
    ops: dict[str, list[bytes]] = {"revoke": [], "unrevoke": [], "block": [], "unblock": []}
    for k in touched:
        bits = model.get(k, 0)
        if rng.random() < 0.7:
            setting = rng.random() < 0.5
            ops["revoke" if setting else "unrevoke"].append(k)
            bits = bits | 1 if setting else bits & ~1
        if rng.random() < 0.5:
            setting = rng.random() < 0.5
            ops["block" if setting else "unblock"].append(k)
            bits = bits | 2 if setting else bits & ~2
        model[k] = bits
    return {name: tuple(ks) for name, ks in ops.items()}


def _model_states(model: dict[bytes, int], pool: list[bytes]) -> dict[bytes, ListState]:
    names = (ListState.NONE, ListState.REVOKED, ListState.BLOCKED, ListState.REVOKED)
    return {k: names[model.get(k, 0)] for k in pool}


def _arr(ks: list[bytes]) -> Any:
    return np.array(sorted(set(ks)), dtype="S16")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["revoke", "unrevoke", "block", "unblock"]), st.sampled_from(list(ALL))
        ),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=6),
)
def test_index_matches_model_whatever_the_rebuild_point(
    steps: list[tuple[str, bytes]], rebuild_at: int
) -> None:
    index = RevocationIndex(rebuild_at=rebuild_at)
    model: dict[bytes, int] = {}
    for op, k in steps:  # one op per delta; the overlay and the arrays take turns holding keys
        ops: dict[str, list[bytes]] = {"revoke": [], "unrevoke": [], "block": [], "unblock": []}
        ops[op].append(k)
        bit = 1 if op.endswith("revoke") else 2
        model[k] = model.get(k, 0) & ~bit | (0 if op.startswith("un") else bit)
        index.apply_plan(
            index.plan_delta(*(_arr(ops[n]) for n in ("revoke", "unrevoke", "block", "unblock")))
        )
        assert states(index) == _model_states(model, list(ALL))
        assert len(index) == sum(bin(bits).count("1") for bits in model.values())
    index.rebuild()
    assert index.overlay_size == 0
    assert states(index) == _model_states(model, list(ALL))


def test_stale_plan_is_refused() -> None:
    index = RevocationIndex()
    plan = index.plan_delta(_arr([A]), _arr([]), _arr([]), _arr([]))
    index.apply_plan(index.plan_delta(_arr([B]), _arr([]), _arr([]), _arr([])))
    with pytest.raises(ValueError, match="older index state"):
        index.apply_plan(plan)


def test_index_rejects_unsorted_arrays_and_bad_keys() -> None:
    with pytest.raises(ValueError, match="sorted"):
        RevocationIndex(np.array([B, A], dtype="S16"))
    with pytest.raises(ValueError, match="16 bytes"):
        RevocationIndex().status(b"short")


@pytest.mark.parametrize(
    ("meta", "now", "stale"),
    [
        (ListMeta(0, None, None), NOW, True),  # nothing installed
        (ListMeta(3, NOW, NOW + DAY), NOW + 60, False),
        (ListMeta(3, NOW, NOW + DAY), NOW + 3601, True),  # older than max_age_s
        (ListMeta(3, NOW, NOW + 60), NOW + 61, True),  # past its signed expiry
        (ListMeta(3, NOW, NOW + DAY), NOW - 5, False),  # clock behind the issuer: not stale
    ],
)
def test_is_stale(meta: ListMeta, now: int, stale: bool) -> None:
    assert meta.is_stale(now, max_age_s=3600) is stale


def test_age() -> None:
    assert ListMeta(0, None, None).age(NOW) is None
    assert ListMeta(1, NOW, NOW + DAY).age(NOW + 90.5) == 90.5


def test_secret_key() -> None:
    assert secret_key("abc") == hashlib.blake2b(b"abc", digest_size=16).digest()
    assert secret_key("abc") != secret_key("abd") and len(secret_key("")) == 16


async def test_issue_delta_chains_versions(
    tmp_path: Path, list_key: keys.PrivateKey, signers: Any
) -> None:
    state = tmp_path / "issuer.json"
    first = issue_delta(list_key, state, revoke=[A, B], now=NOW)
    second = issue_delta(list_key, state, unrevoke=[A], block=[C], now=NOW + 10, validity_s=60)
    assert json.loads(state.read_text()) == {"version": 2}
    async with await RevocationStore.open(tmp_path / "rev.db") as s:
        await s.apply(first, signers)
        meta = await s.apply(second, signers)
        assert meta == ListMeta(version=2, issued_at=NOW + 10, expires=NOW + 70)
        assert states(s) == expect(revoked=(B,), blocked=(C,))


def test_issue_delta_refuses_bad_state_and_arguments(
    tmp_path: Path, list_key: keys.PrivateKey
) -> None:
    state = tmp_path / "issuer.json"
    state.write_text('{"version": "7"}')
    with pytest.raises(IssuerError, match="'version' integer"):
        issue_delta(list_key, state, revoke=[A])
    state.write_text("{")
    with pytest.raises(IssuerError, match="cannot read issuer state"):
        issue_delta(list_key, state, revoke=[A])
    with pytest.raises(IssuerError, match="validity_s"):
        issue_delta(list_key, tmp_path / "new.json", validity_s=0)
    assert not (tmp_path / "new.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"revoke": [b"short"]}, "16 bytes"),
        ({"revoke": [A], "unrevoke": [A]}, "both 'revoke' and 'unrevoke'"),
        ({"block": [B], "unblock": [B]}, "both 'block' and 'unblock'"),
        ({"from_version": 3}, "from_version < version"),
        ({"expires": NOW - 1}, "issued_at <= expires"),
    ],
)
def test_make_delta_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"from_version": 0, "version": 3, "issued_at": NOW, "expires": NOW + 1}
    with pytest.raises(IssuerError, match=message):
        make_delta(**(args | kwargs))
