"""Dictionary codes: order codes for values that :func:`keys.direct_code` cannot encode alone.

Strings, objects, arrays, booleans and numbers beyond 2**53 take codes from their field's sort
order: a new value is placed by a binary search over the order's merged part (comparing the
values the slots held when it was merged) and over the values coded since, then takes a code
between its neighbours'. Equal values always share a code. When no integer is left between the
neighbours, the codes of a window around it are spread evenly again (:meth:`Coder.respread`),
doubling the window until every gap is at least ``_MIN_GAP``.

Invariants (checked by :meth:`Coder.check`): ``recent`` maps each value coded since the last
merge to its code, ``recent_keys`` holds the same keys sorted, and codes order as the keys do.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from service.core.store.keys import band, rank_key

__all__ = ["Coder", "Placement"]

Key = tuple[int, Any]
_STEP = 1 << 24  # a value past the last (or before the first): this far from its neighbour
_MIN_GAP = 1 << 20
_KNOWN = 1 << 16  # codes remembered per field at most


class Placement(Protocol):
    """What a Coder needs of its sort order (see orders.SortOrder)."""

    main: np.ndarray[Any, np.dtype[np.uint32]]
    mcode: np.ndarray[Any, np.dtype[np.int64]]

    def merged_key(self, slot: int) -> Key: ...

    def merged_keys(self) -> Callable[[Any], Key]:
        """merged_key as a closure taking main's items as they are."""

    @property
    def shadow(self) -> dict[int, Any]:
        """Stale slots' values as merged."""

    @property
    def raw_value(self) -> Callable[[Any], Any]:
        """A slot's stored value, called in C (no Python frame) where it can be."""

    def remap(self, lo: int, hi: int, old: np.ndarray[Any, Any], new: np.ndarray[Any, Any]) -> None:
        """Every code c with lo <= c <= hi becomes new[searchsorted(old, c)] (c is in old)."""


class Coder:
    """Codes of one field's dictionary-coded values. O(log n) Python comparisons a new value."""

    __slots__ = ("_bands", "_of", "_view", "known", "order", "recent", "recent_keys")

    def __init__(self, order: Placement) -> None:
        self.order = order
        # For the main array last searched (by identity): each band's [a, b) positions in it,
        # and a memoryview of it (indexed into Python ints, not numpy scalars).
        self._of: Any = None
        self._bands: dict[int, tuple[int, int]] = {}
        self._view: memoryview = memoryview(b"")
        self.recent: dict[Key, int] = {}
        self.recent_keys: list[Key] = []
        # Codes looked up before (a code only changes in a respread, which empties this).
        self.known: dict[Key, int] = {}

    def clear_recent(self) -> None:
        """After a merge: every coded value is in the merged part now. O(1).

        ``known`` goes too: a code whose value left every slot is free once merged away."""
        self.recent = {}
        self.recent_keys = []
        self.known = {}

    def code(self, value: Any) -> int:
        """The code of ``value`` (a dictionary-coded value); assigns one if it is new."""
        key = rank_key(value)
        found = self.known.get(key)
        if found is not None:
            return found
        found = self.recent.get(key)
        if found is not None:
            return found
        code = self._code(key)
        if len(self.known) >= _KNOWN:
            self.known.clear()
        self.known[key] = code
        return code

    def _code(self, key: Key) -> int:
        lo_band, hi_band = band(key)
        order = self.order
        mcode = order.mcode
        main = order.main
        if self._of is not main:
            # A new main (a merge): the bands' positions and the view go with the old one.
            # Codes change in place only within a band (respread), never its bounds' positions.
            self._of = main
            self._bands = {}
            self._view = memoryview(main.data) if main.flags.c_contiguous else memoryview(b"")
        found = self._bands.get(lo_band)
        if found is None:
            found = self._bands[lo_band] = (
                int(np.searchsorted(mcode, lo_band, "right")),
                int(np.searchsorted(mcode, hi_band, "left")),
            )
        a, b = found
        value = key[1]
        p = -1
        if key[0] == 2 and type(value) is str and not order.shadow and len(self._view):
            raw = order.raw_value
            view = self._view
            try:
                p = bisect_left(view, value, a, b, key=raw)
            except TypeError:
                p = -1
            else:
                if p < b:
                    held = raw(view[p])
                    if type(held) is str and held == value:
                        return int(mcode[p])
        if p < 0:
            merged_key = order.merged_keys()
            p = _search(order, main, key, a, b, merged_key)
            if p < b and merged_key(main[p]) == key:
                return int(mcode[p])
        lower = int(mcode[p - 1]) if p > a else lo_band
        upper = int(mcode[p]) if p < b else hi_band
        r = bisect_left(self.recent_keys, key)
        if r > 0:
            below = self.recent[self.recent_keys[r - 1]]
            lower = max(lower, below)
        if r < len(self.recent_keys):
            upper = min(upper, self.recent[self.recent_keys[r]])
        code = _between(lower, upper, lo_band, hi_band)
        if code is None:
            code = self.respread(key, lower, upper, lo_band, hi_band)
        self.recent[key] = code
        self.recent_keys.insert(r, key)  # r: where bisect_left put it above
        return code

    def respread(self, key: Key, lower: int, upper: int, lo_band: int, hi_band: int) -> int:
        """Spread the codes of a window around ``key`` evenly and return the new key's code.

        The window [wlo, whi] of codes grows (doubling its width) until it holds few enough
        distinct codes for every gap to be at least _MIN_GAP, or covers the band. O(window)."""
        self.known.clear()
        width = max(upper - lower, 2)
        mcode = self.order.mcode
        recent_codes = np.fromiter(self.recent.values(), dtype=np.int64, count=len(self.recent))
        while True:
            width *= 2
            wlo = max(lo_band + 1, lower - width)
            whi = min(hi_band - 1, upper + width)
            a = int(np.searchsorted(mcode, wlo, "left"))
            b = int(np.searchsorted(mcode, whi, "right"))
            inside = recent_codes[(recent_codes >= wlo) & (recent_codes <= whi)]
            old = np.unique(np.concatenate([mcode[a:b], inside]))
            slots_needed = len(old) + 1
            full = wlo == lo_band + 1 and whi == hi_band - 1
            if (whi - wlo) // (slots_needed + 1) >= _MIN_GAP or full:
                break
        # The new key goes right after ``lower`` (or first when lower is below the window).
        step = (whi - wlo) // (slots_needed + 1)
        if step < 1:
            raise OverflowError("no order codes left in this band")
        at = int(np.searchsorted(old, lower, "right"))  # codes <= lower keep their rank
        ranks = np.arange(1, slots_needed + 1, dtype=np.int64)
        spread = wlo + ranks * step
        new = np.delete(spread, at)  # old codes' new values, in order
        mine = int(spread[at])
        if len(old):
            self.order.remap(wlo, whi, old, new)
            for k, c in self.recent.items():
                if wlo <= c <= whi:
                    self.recent[k] = int(new[np.searchsorted(old, c)])
        return mine

    def check(self) -> None:
        """Invariants: recent keys sorted, their codes ordered as the keys are."""
        assert self.recent_keys == sorted(self.recent), "recent_keys out of step"
        codes = [self.recent[k] for k in self.recent_keys]
        assert codes == sorted(codes), "recent codes out of order"
        assert len(set(codes)) == len(codes), "recent values share a code"


def _search(
    order: Placement, main: Any, key: Key, a: int, b: int, merged_key: Callable[[Any], Key]
) -> int:
    """bisect_left of ``key`` over main[a:b] by merged key. A string among strings (the usual
    case: no stale slot's old value to read) compares the stored values themselves, with no
    Python call a step; a comparison with any other type raises TypeError, and the keyed
    search runs instead."""
    if key[0] == 2 and type(key[1]) is str and not order.shadow:
        try:
            return bisect_left(main, key[1], a, b, key=order.raw_value)
        except TypeError:
            pass
    return bisect_left(main, key, a, b, key=merged_key)


def _between(lower: int, upper: int, lo_band: int, hi_band: int) -> int | None:
    """A code strictly between ``lower`` and ``upper``: _STEP past an end neighbour (values
    arriving in order do not halve the gap each time), else the middle; None when none."""
    if upper - lower < 2:
        return None
    if upper == hi_band:
        return lower + min(_STEP, (upper - lower) // 2)
    if lower == lo_band:
        return upper - min(_STEP, (upper - lower) // 2)
    return lower + (upper - lower) // 2
