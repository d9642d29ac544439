"""Every invariant of a RoomStore, against a brute-force rebuild from its stored rooms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from pyroaring import BitMap

from service.core.store.keys import value_at
from service.core.store.postings import DATE_FIELDS, Postings, day_of

if TYPE_CHECKING:
    from service.core.store import RoomStore

__all__ = ["check"]


def check(store: RoomStore) -> None:
    """Assert every invariant of ``store``. O(n log n); for tests."""
    columns = store.columns
    columns.check()
    live = BitMap(columns.slot_of.values())
    assert store.live == live, "live slots differ from the ids"
    for order in store.orders.values():
        order.check(live)
    rooms: dict[int, dict[str, Any]] = {s: orjson.loads(columns.doc(s)) for s in live}
    want = Postings()
    for slot, room in rooms.items():
        want.add(slot, room)
    assert store.postings.eq == want.eq, "equality postings differ"
    assert store.postings.opened == want.opened, "open postings differ"
    assert store.postings.closed == want.closed, "closed postings differ"
    for field in DATE_FIELDS:
        code = store.orders[field].code
        by_day: dict[int, BitMap] = {}
        for slot in live:
            day = day_of(int(code[slot]))
            if day is not None:
                by_day.setdefault(day, BitMap()).add(slot)
        assert store.postings.buckets[field][0] == by_day, f"{field}: day buckets differ"
    store.names.check({s: value_at(r, ("name",)) for s, r in rooms.items()})
