"""Equality postings, ``open``, and date buckets: filters as pyroaring bitmaps of slots.

- ``eq[field][value]``: the slots whose field is the string ``value`` or a list holding it;
- ``opened`` / ``closed``: live slots with and without an ``open`` field;
- ``buckets[field][level][k]``: the slots whose date (field ``ts`` or ``closedAt``) falls in
  the k-th run of ``_LEVELS[level]`` days since the epoch, so that a date range is a union of a
  few precomputed bitmaps plus two partial days checked by code (see :meth:`Postings.range`).

Bitmaps handed out are the postings' own: callers must never change them in place (the query
plan only combines them into new ones). Invariant: every bitmap is non-empty, and a slot is in
the bitmaps its current values name and no others (see check.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from pyroaring import BitMap

from service.core.ejson import Date
from service.core.store.keys import DATE0, value_at
from service.core.store.orders import to_bitmap

__all__ = ["DATE_FIELDS", "EQ_FIELDS", "Postings", "eq_keys"]

#: Equality-filter fields (dotted paths).
EQ_FIELDS: tuple[str, ...] = (
    "queue",
    "direction",
    "v._id",
    "servedBy._id",
    "servedBy.username",
    "tags",
)
#: Date-range filter fields: ``createdAt`` is on ``ts``, ``closedAt`` on ``closedAt``.
DATE_FIELDS: tuple[str, ...] = ("ts", "closedAt")
_DAY_MS = 86_400_000
_LEVELS = (1, 16, 256)  # days per bucket, finest first
_EQ_PARTS = tuple((f, tuple(f.split("."))) for f in EQ_FIELDS)


def eq_keys(value: Any) -> Iterable[str]:
    """The strings an equality filter can match: the value, or the strings of a list."""
    if type(value) is str:
        return (value,)
    if type(value) is list:
        return {v for v in value if type(v) is str}
    return ()


_EMPTY = BitMap()


def _dated(value: Any) -> bool:
    """Whether a value is or holds (in a list) a Date."""
    if type(value) is list:
        return any(isinstance(v, Date) for v in value)
    return isinstance(value, Date)


def day_of(code: int) -> int | None:
    """The day (since the epoch) of a date's order code; None when the code is no date."""
    if code < DATE0 - (1 << 49):
        return None
    return (code - DATE0) // _DAY_MS


class Postings:
    """Bitmaps of slots per filter value; see the module docstring."""

    __slots__ = ("buckets", "closed", "eq", "opened")

    def __init__(self) -> None:
        self.eq: dict[str, dict[str, BitMap]] = {f: {} for f in EQ_FIELDS}
        self.opened = BitMap()
        self.closed = BitMap()
        self.buckets: dict[str, list[dict[int, BitMap]]] = {
            f: [{} for _ in _LEVELS] for f in DATE_FIELDS
        }

    # -- changes: O(values) bitmap adds or discards -------------------------------------------
    def add(self, slot: int, room: dict[str, Any]) -> None:
        for field, parts in _EQ_PARTS:
            index = self.eq[field]
            for key in eq_keys(value_at(room, parts)):
                bm = index.get(key)
                if bm is None:
                    index[key] = BitMap((slot,))
                else:
                    bm.add(slot)
        (self.opened if "open" in room else self.closed).add(slot)

    def discard(self, slot: int, room: dict[str, Any]) -> None:
        # ``room`` may come back from stored bytes with dates as plain strings: that can only
        # name extra keys, and discarding a slot from a bitmap lacking it is harmless.
        for field, parts in _EQ_PARTS:
            index = self.eq[field]
            for key in eq_keys(value_at(room, parts)):
                bm = index.get(key)
                if bm is not None:
                    bm.discard(slot)
                    if not bm:
                        del index[key]
        self.opened.discard(slot)
        self.closed.discard(slot)

    def update(self, slot: int, old: dict[str, Any], new: dict[str, Any]) -> None:
        """A stored room changed from ``old`` (read back from its bytes, dates as strings) to
        ``new``: only the fields whose keys changed are touched. A field is left alone when its
        value is equal, holds no date, and its keys already hold the slot (a date read back as
        a string is never in a bitmap, so that test catches a date turned string)."""
        for field, parts in _EQ_PARTS:
            value = value_at(new, parts)
            before = value_at(old, parts)
            index = self.eq[field]
            if before == value and not _dated(value):
                keys = eq_keys(value)
                if all(slot in index.get(k, _EMPTY) for k in keys):
                    continue
            for key in eq_keys(before):
                bm = index.get(key)
                if bm is not None:
                    bm.discard(slot)
                    if not bm:
                        del index[key]
            for key in eq_keys(value):
                bm = index.get(key)
                if bm is None:
                    index[key] = BitMap((slot,))
                else:
                    bm.add(slot)
        if ("open" in old) != ("open" in new):
            if "open" in new:
                self.closed.discard(slot)
                self.opened.add(slot)
            else:
                self.opened.discard(slot)
                self.closed.add(slot)

    def move_date(self, field: str, slot: int, old: int, new: int) -> None:
        """The slot's ``field`` code went from ``old`` to ``new`` (NULL or any code)."""
        before, after = day_of(old), day_of(new)
        if before == after:
            return
        levels = self.buckets[field]
        for size, buckets in zip(_LEVELS, levels, strict=True):
            if before is not None:
                k = before // size
                held = buckets[k]
                held.discard(slot)
                if not held:
                    del buckets[k]
            if after is not None:
                k = after // size
                bm = buckets.get(k)
                if bm is None:
                    buckets[k] = BitMap((slot,))
                else:
                    bm.add(slot)

    def build_dates(self, field: str, codes: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        """Every bucket of ``field`` from the codes of all slots (NULL for free ones). O(n)."""
        is_date = codes >= DATE0 - (1 << 49)
        slots = np.flatnonzero(is_date).astype(np.uint32)
        days = (codes[is_date] - DATE0) // _DAY_MS
        levels: list[dict[int, BitMap]] = []
        for size in _LEVELS:
            k = days // size
            by = np.argsort(k, kind="stable")
            ks, ss = k[by], slots[by]
            cuts = np.flatnonzero(ks[1:] != ks[:-1]) + 1
            starts = [0, *cuts.tolist()]
            ends = [*cuts.tolist(), len(ks)]
            found: dict[int, BitMap] = {}
            for a, b in zip(starts, ends, strict=True):
                if b > a:
                    bm = to_bitmap(ss[a:b])
                    bm.run_optimize()
                    found[int(ks[a])] = bm
            levels.append(found)
        self.buckets[field] = levels

    # -- queries ----------------------------------------------------------------------------
    def range(
        self,
        field: str,
        start: int | None,
        end: int | None,
        codes: np.ndarray[Any, np.dtype[np.int64]],
    ) -> BitMap:
        """Slots whose ``field`` is a date with ``start <= ms <= end`` (None: open end).

        Whole days come from the coarsest aligned buckets that fit (at most about 2 * 15 per
        level); the partial days at either end are filtered by code. A new BitMap."""
        levels = self.buckets[field]
        finest = levels[0]
        if not finest:
            return BitMap()
        first_day, last_day = min(finest), max(finest)
        lo_day = first_day if start is None else max(first_day, start // _DAY_MS)
        hi_day = last_day if end is None else min(last_day, end // _DAY_MS)
        if lo_day > hi_day:
            return BitMap()
        lo_partial = start is not None and start > lo_day * _DAY_MS
        hi_partial = end is not None and end < (hi_day + 1) * _DAY_MS - 1
        partial_days = []
        lo_full, hi_full = lo_day, hi_day
        if lo_partial:
            partial_days.append(lo_day)
            lo_full = lo_day + 1
        if hi_partial and hi_day != lo_day:
            partial_days.append(hi_day)
            hi_full = hi_day - 1
        elif hi_partial:
            hi_full = hi_day - 1
            if not lo_partial:
                partial_days.append(hi_day)
        partial = [finest[d] for d in partial_days if d in finest]
        parts: list[BitMap] = []
        _cover(levels, lo_full, hi_full, parts)
        found = BitMap.union(*parts) if parts else BitMap()
        if partial:
            lo = DATE0 + (start if start is not None else -(1 << 49))
            hi = DATE0 + (end if end is not None else 1 << 49)
            edge = BitMap.union(*partial) if len(partial) > 1 else partial[0]
            slots = np.frombuffer(edge.to_array(), dtype=np.uint32)
            c = codes[slots]
            found |= to_bitmap(slots[(c >= lo) & (c <= hi)])
        return found


def _cover(levels: list[dict[int, BitMap]], lo: int, hi: int, parts: list[BitMap]) -> None:
    """Append the buckets covering days lo..hi exactly, coarsest first where aligned."""
    day = lo
    top = len(_LEVELS) - 1
    while day <= hi:
        for level in range(top, -1, -1):
            size = _LEVELS[level]
            if day % size == 0 and day + size - 1 <= hi:
                bm = levels[level].get(day // size)
                if bm is not None:
                    parts.append(bm)
                day += size
                break
