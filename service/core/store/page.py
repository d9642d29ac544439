"""Sorted pages: the window [offset, offset + count) of a match set in the query's order.

Two ways, chosen per query by a cost estimate (or forced, for tests):

- *gather*: the first sort key's codes of the matches gathered with numpy, the window
  [offset, offset + count) selected by one partition (never a full sort of the matches), and
  only the window (and runs tied at its bounds, by the next keys) ordered;
- *walk*: the first sort field's merged order, block by block, skipping whole blocks by
  counting their matches, extracting only the blocks that hold the window, merged with the
  buffered (pending) slots that match.

Why the walk is exact: let P be the first ``offset + count`` pending matches, p = |P|. The window
holds only merged matches of merged rank in [offset - p, offset + count). The walk extracts a
run of positions starting at merged rank r0 <= offset - p (whole runs of equal first keys, when
ties need reordering) and reaching rank offset + count; sorted together with P, the extracted
element at index j has rank r0 + j among all matches, for every j inside the window.
Cost: O(blocks skipped) bitmap counts plus O(block + offset + count) numpy work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pyroaring import BitMap

from service.core.store.orders import SortOrder, to_bitmap

if TYPE_CHECKING:
    from service.core.store import RoomStore

__all__ = ["page_slots"]

Slots = np.ndarray[Any, np.dtype[np.uint32]]
Keys = tuple[tuple[str, int], ...]
_EMPTY: Slots = np.empty(0, dtype=np.uint32)
#: Cost estimate (µs): gathering m matches; walking, per block counted and per slot extracted.
#: (Fitted at 1,000,000 rooms on the benchmark's query classes.)
_GATHER_PER_MATCH = 0.012
_WALK_BASE = 75.0
_WALK_PER_BLOCK = 2.5
_WALK_PER_SLOT = 0.005
_RUN_COUNT = 20.0  # a run's matches counted
_RUN_PAGE = 200.0  # the sub-page of the runs holding the page
_SAMPLES = 32  # matches placed in the order to estimate a walk


def _slots(bm: BitMap) -> Slots:
    return np.frombuffer(bm.to_array(), dtype=np.uint32)


def _signed(order: SortOrder, direction: int, slots: Slots) -> np.ndarray[Any, Any]:
    codes = order.code[slots]
    return codes if direction > 0 else ~codes  # ~c = -c - 1: reverses order, no overflow


def _lexsorted(store: RoomStore, slots: Slots, keys: Keys) -> Slots:
    """``slots`` fully ordered by ``keys`` (the last key orders ties no more)."""
    if len(slots) < 2 or not keys:
        return slots
    cols = [_signed(store.orders[f], d, slots) for f, d in reversed(keys)]
    return slots[np.lexsort(cols)]


def _window(store: RoomStore, slots: Slots, keys: Keys, skip: int, reach: int) -> Slots:
    """The slots of ranks [skip, reach) of ``slots`` ordered by ``keys``, in order.

    One ``np.partition`` of the first key's codes finds the codes at ranks skip and reach - 1;
    the slots strictly between them are the middle of the window (ordered, at most
    reach - skip of them), and the runs tied at either bound are windowed the same way by the
    next keys. O(len(slots)) plus O(k log k) for the k = reach - skip ordered; never a sort of
    all the slots, however many ties."""
    n = len(slots)
    reach = min(reach, n)
    if skip >= reach:
        return _EMPTY
    if n <= 2 * (reach - skip) + 64 or not keys:
        return _lexsorted(store, slots, keys)[skip:reach]
    field, direction = keys[0]
    first = _signed(store.orders[field], direction, slots)
    bounds = np.partition(first, (skip, reach - 1))
    lo, hi = bounds[skip], bounds[reach - 1]
    below = int(np.count_nonzero(first < lo))
    rest = keys[1:]
    if not rest:  # the last key (``_id``: no ties among live slots)
        inside = (first >= lo) & (first <= hi)
        picked: Slots = slots[inside][np.argsort(first[inside], kind="stable")]
        return picked[skip - below : reach - below]
    if lo == hi:
        return _window(store, slots[first == lo], rest, skip - below, reach - below)
    low = slots[first == lo]
    inside = (first > lo) & (first < hi)
    mid = slots[inside]
    cols = [_signed(store.orders[f], d, mid) for f, d in reversed(rest)]
    mid = mid[np.lexsort((*cols, first[inside]))]
    head = _window(store, low, rest, skip - below, reach - below)
    tail = _window(store, slots[first == hi], rest, 0, reach - below - len(low) - len(mid))
    return np.concatenate([head, mid, tail])


def sorted_window(store: RoomStore, slots: Slots, keys: Keys, skip: int, take: int) -> Slots:
    """``slots`` ordered by ``keys`` then ``_id``, items [skip, skip + take) (see _window).
    O(len(slots)) plus O(take log take)."""
    if take <= 0 or skip >= len(slots):
        return _EMPTY
    return _window(store, slots, (*keys, ("_id", 1)), skip, skip + take)


def page_slots(store: RoomStore, m: BitMap | None, keys: Keys, offset: int, need: int) -> Slots:
    """The ``need`` slots from ``offset`` on, of matches ``m`` (None: every room), in order."""
    if not keys:
        keys = (("_id", 1),)
    order = store.orders[keys[0][0]]
    total = len(store.live) if m is None else len(m)
    reach = offset + need
    gather = store.gather
    runs = order.runs() if order.ids is not None else None  # _id's runs are single slots
    if gather is None:
        if runs is not None:
            walk_cost = len(runs[0]) * _RUN_COUNT + _RUN_PAGE
        elif m is None:  # every room: the window's blocks are the first ones
            visit = reach // order.block + 1
            walk_cost = (visit + 1) * _WALK_PER_BLOCK + visit * order.block * _WALK_PER_SLOT
            walk_cost += _WALK_BASE
        else:
            walk_cost = _walk_cost(order, m, keys[0][1], offset, reach)
        gather = total * _GATHER_PER_MATCH < walk_cost
    if gather:
        matched = _slots(store.live if m is None else m)
        return sorted_window(store, matched, keys, offset, need)
    if runs is not None:
        return _by_runs(store, order, m, keys, offset, need)
    return _walk(store, order, m, keys, offset, need)


def _walk_cost(order: SortOrder, m: BitMap, direction: int, offset: int, reach: int) -> float:
    """A walk's estimated µs: blocks counted up to the one holding the ``reach``-th match, and
    blocks extracted from the one holding the ``offset``-th. Where those lie comes from
    _SAMPLES matches at evenly spaced ranks, placed in main by their codes: matches clustered
    in the order (a name fragment sorted by name) put the window far from where an even spread
    would. O(_SAMPLES log n)."""
    total = len(m)
    k = min(_SAMPLES, total)
    picked = [m[(i * (total - 1)) // max(1, k - 1)] for i in range(k)]
    at = np.searchsorted(order.mcode, order.code[picked])  # stale entries: a fair guess still
    if direction < 0:
        at = len(order.main) - at
    at.sort()
    ranks = np.linspace(0, total, k)  # the sampled places, as a piecewise linear rank -> place
    first = int(np.interp(offset, ranks, at)) // order.block
    last = int(np.interp(reach, ranks, at)) // order.block
    extracted = (last - first + 1) * order.block + reach
    return _WALK_BASE + (last + 2) * _WALK_PER_BLOCK + extracted * _WALK_PER_SLOT


def _by_runs(
    store: RoomStore, order: SortOrder, m: BitMap | None, keys: Keys, offset: int, need: int
) -> Slots:
    """A first sort field of few distinct values: its runs of equal codes in the query's
    direction, each counted (bitmap cardinalities), and the page taken from the runs that
    hold it, each by the remaining keys (then _id) as a query of its own. Never a whole run
    sorted, whatever the ties. O(runs) counts plus the sub-pages."""
    runs = order.runs()
    assert runs is not None
    codes, _ = runs
    matched = store.live if m is None else m
    placed = matched - order.stale if order.stale else matched
    pend = matched & order.pending if order.pending else BitMap()
    pend_slots = _slots(pend)
    pend_codes = order.code[pend_slots]
    extra = set(np.unique(pend_codes).tolist()) - set(codes.tolist())
    if extra:  # a buffered value no run holds yet: the general walk copes
        return _walk(store, order, m, keys, offset, need)
    rest = keys[1:]
    out: list[Slots] = []
    seq = range(len(codes)) if keys[0][1] > 0 else range(len(codes) - 1, -1, -1)
    for i in seq:
        members = order.run_bitmap(i) & placed
        if len(pend_slots):
            members |= to_bitmap(pend_slots[pend_codes == codes[i]])
        count = len(members)
        if offset >= count:
            offset -= count
            continue
        take = min(need, count - offset)
        out.append(page_slots(store, members, rest, offset, take))
        need -= take
        offset = 0
        if not need:
            break
    return np.concatenate(out) if out else _EMPTY


def _walk(
    store: RoomStore, order: SortOrder, m: BitMap | None, keys: Keys, offset: int, need: int
) -> Slots:
    reach = offset + need
    every = m is None
    matched = store.live if m is None else m
    placed = matched - order.stale if order.stale else matched
    pend = matched & order.pending if order.pending else None
    head = _EMPTY
    if pend:
        head = sorted_window(store, _slots(pend), keys, 0, reach)
    lo_rank = max(0, offset - len(head))
    blocks = order.blocks
    step = order.block
    direction = keys[0][1]
    seq = range(len(blocks)) if direction > 0 else range(len(blocks) - 1, -1, -1)
    cum = 0
    r0 = 0
    first_block = last_block = -1
    counts: dict[int, int] = {}
    for k in seq:
        bm = blocks[k]
        c = len(bm) if every and not order.stale else bm.intersection_cardinality(placed)
        counts[k] = c
        if first_block < 0 and cum + c > lo_rank:
            first_block, r0 = k, cum
        cum += c
        last_block = k
        if cum >= reach:
            break
    if first_block < 0:  # fewer placed matches than lo_rank: take them all
        found = np.concatenate([_slots(placed - order.pending), head])
        return sorted_window(store, found, keys, offset, need)
    n = len(order.main)
    lo, hi = min(first_block, last_block) * step, min(n, (max(first_block, last_block) + 1) * step)
    if len(keys) == 1 and direction < 0:
        extracted, r0 = _desc_runs(order, placed, counts, lo, hi, r0, reach)
    else:
        if len(keys) > 1:  # ties are reordered by the next keys: take whole runs
            mcode = order.mcode
            lo2 = int(np.searchsorted(mcode, mcode[lo], "left"))
            hi2 = int(np.searchsorted(mcode, mcode[hi - 1], "right"))
            before = order.main[lo2:lo] if direction > 0 else order.main[hi:hi2]
            if len(before):
                r0 -= placed.intersection_cardinality(to_bitmap(before))
            lo, hi = lo2, hi2
        extracted = to_bitmap(order.main[lo:hi]) & placed
    found = _slots(extracted)
    if len(head):
        found = np.concatenate([found, head])
    return sorted_window(store, found, keys, offset - r0, need)


def _count(order: SortOrder, placed: BitMap, counts: dict[int, int], a: int, b: int) -> int:
    """Placed matches in main positions [a, b), from the walk's block counts where whole."""
    step = order.block
    total = 0
    k = a // step
    while a < b:
        end = min(b, (k + 1) * step)
        if a == k * step and end == (k + 1) * step and k in counts:
            total += counts[k]
        else:
            total += placed.intersection_cardinality(to_bitmap(order.main[a:end]))
        a, k = end, k + 1
    return total


def _prefix(order: SortOrder, placed: BitMap, a: int, b: int, want: int) -> BitMap:
    """The first ``want`` placed matches (at least) of main positions [a, b), in main order."""
    step = order.block
    end = a
    got = 0
    while end < b and got < want:
        stop = min(b, (end // step + 1) * step)
        bm = order.blocks[end // step]
        if end == (end // step) * step and stop - end == len(bm):
            got += bm.intersection_cardinality(placed)
        else:
            got += placed.intersection_cardinality(to_bitmap(order.main[end:stop]))
        end = stop
    return to_bitmap(order.main[a:end]) & placed


def _desc_runs(
    order: SortOrder,
    placed: BitMap,
    counts: dict[int, int],
    lo: int,
    hi: int,
    r0: int,
    reach: int,
) -> tuple[BitMap, int]:
    """A descending walk's extraction when equal codes stay in ascending _id order (their main
    order): the runs of the range's first and last codes contribute only their first matches
    in main order, never a whole run. Returns the slots and the rank of the first of them."""
    mcode = order.mcode
    top = int(mcode[hi - 1])
    top_lo = int(np.searchsorted(mcode, top, "left"))
    top_hi = int(np.searchsorted(mcode, top, "right"))
    r0 -= _count(order, placed, counts, hi, top_hi)  # the top run's later slots came first
    want = reach - r0
    found = _prefix(order, placed, top_lo, top_hi, want)
    if lo < top_lo:
        bottom = int(mcode[lo])
        bottom_lo = int(np.searchsorted(mcode, bottom, "left"))
        bottom_hi = int(np.searchsorted(mcode, bottom, "right"))
        if bottom_hi < top_lo:
            found |= to_bitmap(order.main[bottom_hi:top_lo]) & placed
        found |= _prefix(order, placed, bottom_lo, bottom_hi, want)
    return found, r0
