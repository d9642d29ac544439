"""RoomStore.apply_batch against the same changes applied one by one: same rooms, results,
version, change records (in order) and answers, and every invariant."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.store import Change, RoomStore
from tests.core.test_rooms import _ids, _random_query, _random_room, assert_same, rooms

Op = tuple[bool, Any]


def _one_by_one(store: RoomStore, ops: list[Op]) -> list[bool | Exception]:
    out: list[bool | Exception] = []
    for upsert, item in ops:
        try:
            out.append(store.upsert(item) if upsert else store.remove(item))
        except Exception as exc:
            out.append(exc)
    return out


def _watched(store: RoomStore) -> list[Change]:
    seen: list[Change] = []
    store.watch(seen.append)
    return seen


def _same(a: list[bool | Exception], b: list[bool | Exception]) -> None:
    assert [r if isinstance(r, bool) else type(r) for r in a] == [
        r if isinstance(r, bool) else type(r) for r in b
    ]


def _run(
    start: list[dict[str, Any]], batches: list[list[Op]], fold_at: int | None, block: int
) -> None:
    one = RoomStore(block_size=block, fold_at=fold_at)
    many = RoomStore(block_size=block, fold_at=fold_at)
    for store in (one, many):
        store.bulk_load(start) if start else None
    seen_one, seen_many = _watched(one), _watched(many)
    stored = {r["_id"]: r for r in start}
    rng = random.Random(len(batches))
    for ops in batches:
        _same(_one_by_one(one, ops), many.apply_batch(ops))
        assert seen_many == seen_one
        assert many.version == one.version
        many._check()
        for upsert, item in ops:
            if upsert:
                if type(item.get("_id")) is str:
                    stored[item["_id"]] = item
            else:
                stored.pop(item, None)
        assert sorted(many.iter_rooms()) == sorted(one.iter_rooms())
        for _ in range(3):
            assert_same(many, stored, _random_query(rng))
    one._check()


@st.composite
def batches(draw: st.DrawFn) -> list[list[Op]]:
    ids = _ids(12)
    out: list[list[Op]] = []
    for _ in range(draw(st.integers(1, 4))):
        ops: list[Op] = []
        for _ in range(draw(st.integers(0, 25))):
            rid = draw(st.sampled_from(ids))
            if draw(st.integers(0, 4)) == 0:
                ops.append((False, rid))
            else:
                ops.append((True, draw(rooms(rid))))
        out.append(ops)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(_ids(12)), unique=True, max_size=8),
    batches(),
    st.sampled_from([1, 3, None]),
    st.sampled_from([1, 4]),
    st.data(),
)
def test_batch_equals_one_by_one(
    start_ids: list[str], ops: list[list[Op]], fold_at: int | None, block: int, data: Any
) -> None:
    start = [data.draw(rooms(rid)) for rid in start_ids]
    _run(start, ops, fold_at, block)


def test_bad_op_rejected_alone() -> None:
    store = RoomStore()
    seen = _watched(store)
    ops: list[Op] = [
        (True, {"_id": "a", "t": "v", "name": "x"}),
        (True, {"_id": 5, "t": "v"}),
        (True, {"_id": "b", "t": "v", "big": 1 << 70}),  # orjson cannot serialize it
        (True, {"_id": "a", "t": "v", "name": "y"}),
        (True, {"_id": "a", "t": "v", "name": "y"}),
        (False, "zz"),
    ]
    results = store.apply_batch(ops)
    assert [results[i] for i in (0, 3, 4, 5)] == [True, True, False, False]
    assert isinstance(results[1], TypeError)
    assert isinstance(results[2], Exception)
    assert [(c.room_id, c.before, c.after) for c in seen] == [
        ("a", None, orjson.dumps(ops[0][1])),
        ("a", orjson.dumps(ops[0][1]), orjson.dumps(ops[3][1])),
    ]
    assert store.version == 2
    assert "b" not in store.columns.slot_of
    store._check()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stress_batches_against_one_by_one(seed: int) -> None:
    """Seeded: long runs of batches over 80 rooms (inserts, updates, removals, re-inserts)."""
    rng = random.Random(seed)
    ids = [f"id{i:02d}" for i in range(80)]
    start = [_random_room(rng, rid) for rid in ids[:40]]
    runs: list[list[Op]] = []
    for _ in range(30):
        ops: list[Op] = []
        for _ in range(rng.choice([1, 5, 40, 120])):
            rid = rng.choice(ids)
            ops.append((False, rid) if rng.random() < 0.15 else (True, _random_room(rng, rid)))
        runs.append(ops)
    _run(start, runs, rng.choice([1, 16, None]), rng.choice([1, 4]))
