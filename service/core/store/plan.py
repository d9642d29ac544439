"""A RoomQuery -> the set of candidate slots: every filter as bitmaps, combined smallest first.

Each filter is "any of" a few bitmaps (agents by id or username, tags, a name's n-grams); all
filters must hold. Unions meet the matches so far part by part. ``open=false`` subtracts the
open rooms last (most rooms are closed). Date ranges come from date buckets (postings.py). A
name search's text check runs last, on the few suspects among the matches (names.py).
Cost: O(bitmap sizes / 64) or better per operation; no loop over rooms in Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pyroaring import BitMap

from service.core.query import DateRange, RoomQuery
from service.core.store.keys import DATE0, date_ms
from service.core.store.orders import to_bitmap

if TYPE_CHECKING:
    from service.core.store import RoomStore

__all__ = ["BY_CODE", "matches"]

#: Matches of the other filters up to which a date range is checked on the slots' codes rather
#: than built from the date buckets (a wide range's buckets cost far more than a few thousand
#: lookups; a gather of many slots costs more than a narrow range's buckets).
BY_CODE = 4_096
_FAR = 1 << 49  # an open end: beyond every date's milliseconds (keys.py)


def _ms(rng: DateRange) -> tuple[int | None, int | None]:
    return (
        None if rng.start is None else date_ms(rng.start),
        None if rng.end is None else date_ms(rng.end),
    )


def matches(store: RoomStore, q: RoomQuery) -> BitMap | None:
    """The slots passing every filter of ``q``; None when ``q`` has no filter at all. The
    result may be one of the postings' own bitmaps: callers never change it in place."""
    post = store.postings
    eq = post.eq
    filters: list[list[BitMap]] = []
    if q.agents is not None:
        by_id, by_name = eq["servedBy._id"], eq["servedBy.username"]
        filters.append([i[a] for a in q.agents for i in (by_id, by_name) if a in i])
    if q.tags is not None:
        tags = eq["tags"]
        filters.append([tags[t] for t in q.tags if t in tags])
    for path, value in (("queue", q.queue), ("v._id", q.visitor_id), ("direction", q.direction)):
        if value is not None:
            values = eq[path]
            filters.append([values[value]] if value in values else [])
    if q.open is True:
        filters.append([post.opened])
    search = None
    if q.room_name is not None:
        search = store.names.matching(q.room_name)
        filters.extend(search[0])
    ranges = [(f, _ms(r)) for f, r in (("ts", q.created), ("closedAt", q.closed)) if r is not None]
    if not filters or not ranges:
        for field, (start, end) in ranges:
            filters.append([post.range(field, start, end, store.orders[field].code)])
        ranges = []
    m: BitMap | None = None
    if filters:
        filters.sort(key=lambda parts: sum(map(len, parts)))
        first = filters[0]
        m = BitMap() if not first else first[0] if len(first) == 1 else BitMap.union(*first)
        for parts in filters[1:]:
            if not m:
                break
            if len(parts) == 1:
                m = m & parts[0]
            else:
                m = BitMap.union(*(m & part for part in parts)) if parts else BitMap()
    for field, (start, end) in ranges:  # m holds the other filters' matches
        assert m is not None
        if not m:
            break
        codes = store.orders[field].code
        if len(m) > BY_CODE:
            m = m & post.range(field, start, end, codes)
            continue
        slots = np.frombuffer(m.to_array(), dtype=np.uint32)
        c = codes[slots]
        lo = DATE0 + (-_FAR if start is None else start)
        hi = DATE0 + (_FAR if end is None else end)
        m = to_bitmap(slots[(c >= lo) & (c <= hi)])
    if q.open is False:
        m = post.closed if m is None else m - post.opened
    if search is not None and m is not None:
        m = store.names.settle(m, search[1], search[2])
    return m
