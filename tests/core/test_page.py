"""Sorted pages: the window selection and both page strategies against a plain sort (seeded)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from service.core.query import RoomQuery
from service.core.store import RoomStore, page, plan
from service.core.store.page import page_slots, sorted_window


def _store(rng: random.Random, rooms: int) -> RoomStore:
    store = RoomStore(block_size=rng.choice([4, 16, 64]), fold_at=rng.choice([8, 1000]))
    for i in range(rooms):
        room: dict[str, object] = {"_id": f"r{rng.randrange(10**6):06d}-{i}", "t": "v"}
        room["queue"] = rng.choice(["a", "b", "c"])  # long runs of ties
        room["msgs"] = rng.choice([0, 1, 2, 3, rng.randrange(100)])
        if rng.random() < 0.9:
            room["callDuration"] = rng.randrange(50)
        store.upsert(room)
    return store


def _want(store: RoomStore, slots: list[int], keys: page.Keys) -> list[int]:
    """A plain full sort by every key's code, then the _id code."""

    def key(slot: int) -> tuple[int, ...]:
        codes = [int(store.orders[f].code[slot]) * d for f, d in keys]
        return (*codes, int(store.orders["_id"].code[slot]))

    return sorted(slots, key=key)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_windows_against_a_plain_sort(seed: int) -> None:
    rng = random.Random(seed)
    store = _store(rng, 600)
    store._check()
    fields = ["queue", "msgs", "callDuration", "_id"]
    live = np.frombuffer(store.live.to_array(), dtype=np.uint32)
    for _ in range(150):
        slots = live[np.array([rng.random() < 0.6 for _ in live], dtype=np.bool_)]
        keys = tuple((f, rng.choice([1, -1])) for f in rng.sample(fields, rng.randint(1, 3)))
        want = _want(store, slots.tolist(), keys)
        skip, take = rng.randrange(len(slots) + 2), rng.choice([0, 1, 5, 50, 400])
        got = sorted_window(store, slots, keys, skip, take).tolist()
        assert got == want[skip : skip + take], (keys, skip, take)


@pytest.mark.parametrize("seed", [4, 5])
def test_pages_walk_and_gather_agree(seed: int) -> None:
    """Both strategies, with changes still buffered, against the plain sort of the matches."""
    rng = random.Random(seed)
    store = _store(rng, 400)
    for _ in range(100):  # changes after the last merge: pending and stale slots
        slot = rng.choice(list(store.columns.slot_of))
        store.upsert({"_id": slot, "t": "v", "msgs": rng.randrange(4)})
    store._check()
    for _ in range(60):
        q = RoomQuery(queue=rng.choice([None, "a", "b"]))
        m = plan.matches(store, q)
        matched = list(store.live if m is None else m)
        keys = ((rng.choice(["msgs", "callDuration", "queue"]), rng.choice([1, -1])),)
        offset, need = rng.randrange(len(matched) + 1), rng.choice([1, 10, 100])
        want = _want(store, matched, keys)[offset : offset + need]
        for gather in (True, False, None):
            store.gather = gather
            assert page_slots(store, m, keys, offset, need).tolist() == want, (keys, gather)
