"""SortOrder alone: seeded random sets, frees and merges against a plain sorted list."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest
from pyroaring import BitMap

from service.core.ejson import Date, date_from_ms
from service.core.store.orders import _SHORT_RUN, SortOrder


def _reference_key(value: Any) -> tuple[Any, ...]:
    """MongoDB's order of the values these tests use, written out plainly."""
    if value is None:
        return (0,)
    if isinstance(value, Date):
        return (6, str(value))
    if isinstance(value, bool):
        return (5, value)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    rank = 3 if isinstance(value, dict) else 4
    return (rank, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def _value(rng: random.Random, few: bool) -> Any:
    """A random value; ``few``: from a handful only, so that runs of equal codes are long."""
    if few:
        return rng.choice(["inbound", "outbound", 0, 1, None])
    kind = rng.randrange(9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.randrange(-50, 50)
    if kind == 2:
        return rng.randrange(50) / 4
    if kind == 3:
        return rng.choice([2**60, -(2**60), 2**60 + 1])
    if kind == 4:
        return rng.choice([True, False])
    if kind == 5:
        return date_from_ms(rng.randrange(10**6) * 1000)
    if kind == 6:
        return rng.choice([{"a": rng.randrange(3)}, [rng.randrange(3)], []])
    return "".join(rng.choice("abcAB9 ") for _ in range(rng.randrange(1, 5)))


def _orders(block: int, dense: bool = True) -> tuple[SortOrder, SortOrder]:
    """The _id order and a field's order breaking ties by it."""
    ids = SortOrder("_id", None, dense=True, block=block, fold_at=1)
    order = SortOrder("f", ids, dense=dense, block=block, fold_at=1)
    return ids, order


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_orders_stress_against_a_sorted_list(seed: int) -> None:
    rng = random.Random(seed)
    block = rng.choice([1, 2, 3, 8])
    few = seed % 2 == 0  # long runs of equal codes: the merge places them with numpy
    ids, order = _orders(block, dense=seed <= 2)
    capacity = 6 * _SHORT_RUN
    ids.grow(capacity)
    order.grow(capacity)
    values: dict[int, Any] = {}
    live = BitMap()
    next_slot = 0
    for _ in range(1500):
        action = rng.random()
        if action < 0.45 and next_slot < capacity:
            slot, next_slot = next_slot, next_slot + 1
            ids.set(slot, f"id{rng.randrange(10**6):07d}-{slot}", True)
            value = _value(rng, few)
            order.set(slot, value, True)
            values[slot] = value
            live.add(slot)
        elif action < 0.8 and values:
            slot = rng.choice(sorted(values))
            value = _value(rng, few)
            order.set(slot, value, False)
            values[slot] = value
        elif action < 0.9 and values:
            slot = rng.choice(sorted(values))
            order.free(slot)
            ids.free(slot)
            del values[slot]
            live.discard(slot)
        elif rng.random() < 0.5:
            order.merge()
            ids.merge()
        order.check(live)
        ids.check(live)
    order.merge()
    ids.merge()
    order.check(live)
    expected = sorted(values, key=lambda s: (_reference_key(values[s]), ids.value(s)))
    assert order.main.tolist() == expected
    assert np.array_equal(order.mcode, order.code[order.main])


def test_long_runs_of_equal_codes_take_pending_slots_in_id_order() -> None:
    ids, order = _orders(4)
    n = 3 * _SHORT_RUN
    ids.grow(2 * n)
    order.grow(2 * n)
    for slot in range(n):
        ids.set(slot, f"id{2 * slot:05d}", True)
        order.set(slot, "same", True)
    order.merge()
    for slot in range(n, 2 * n):  # ids between the merged ones, and past them
        ids.set(slot, f"id{2 * (slot - n) + 1:05d}", True)
        order.set(slot, "same", True)
    order.merge()
    live = BitMap(range(2 * n))
    order.check(live)
    assert [ids.value(s) for s in order.main.tolist()] == sorted(ids.value(s) for s in range(2 * n))


def test_a_new_string_is_placed_among_other_types() -> None:
    """The coder's search compares stored strings directly and falls back to keys when it
    meets another type or a stale slot's old value."""
    ids, order = _orders(2)
    ids.grow(16)
    order.grow(16)
    firsts: list[Any] = ["b", "d", {"x": 1}, [1], True, "f"]
    for slot, value in enumerate(firsts):
        ids.set(slot, f"id{slot}", True)
        order.set(slot, value, True)
    order.merge()
    order.set(1, "zz", False)  # stale: its merged value "d" is in the shadow
    for slot, value in enumerate(["c", "e", "a", "g"], start=len(firsts)):
        ids.set(slot, f"id{slot}", True)
        order.set(slot, value, True)
    live = BitMap(range(len(firsts) + 4))
    order.check(live)
    order.merge()
    order.check(live)
    got = [order.value(s) for s in order.main.tolist()]
    assert got == ["a", "b", "c", "e", "f", "g", "zz", {"x": 1}, [1], True]
