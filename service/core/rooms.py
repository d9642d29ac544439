"""RoomStore: voip rooms as pre-serialized bytes, with bitmap, range, name and sort indexes."""

from __future__ import annotations

import re
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress, groupby, islice, repeat
from operator import contains, eq, itemgetter, ne
from typing import Any

import numpy as np
import orjson
from pyroaring import BitMap

from service.core.ejson import Date
from service.core.query import SORTABLE_FIELDS, DateRange, RoomQuery

__all__ = ["RoomStore"]

#: Equality-filter fields (dotted paths) indexed value -> BitMap of slots.
_EQ_FIELDS: tuple[str, ...] = (
    "queue",
    "direction",
    "v._id",
    "servedBy._id",
    "servedBy.username",
    "tags",
)
_ID = "_id"  # internal sort index: ties and multi-key sorts that end on a big tie group
_LOW_CARD = frozenset({"queue", "direction", "servedBy.username", "v.username"})

#: Order codes (see _SortIndex.codes) lie in [0, _CODE_MAX]; fresh ones are _GAP apart.
_CODE_MAX = 1 << 62
_GAP = 1 << 40
_STEP = 1 << 24  # a new key between two others: this far past the lesser, at most
#: A sorted page taken from gathered candidates gives up (for the block walk) when the runs of
#: equal keys around it, which are put in _id order one by one, hold more slots than this.
_TIE_LIMIT = 4096
#: Below this many matches the block walk sorts a run's candidates directly.
_SMALL = 256
#: Cost model of a page in µs, fitted by tests/bench/page_model.py at 1,000,000 rooms:
#: gathering = a + b * matches + c * (offset + count); walking = d + e * blocks visited.
_GATHER_US = (367.0, 0.0148, 0.041)
_WALK_US = (235.0, 2.57)

Codes = np.ndarray[Any, np.dtype[np.int64]]
Slots = np.ndarray[Any, np.dtype[np.uint32]]

Key = tuple[Any, ...]
_head = itemgetter(0)  # the first item of a tuple
# Stored dates read back as plain strings; an equality index rightly lacks them.
_DATE_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
_MIN_DATE = Date("")
_ABOVE_DATES: Key = (7, "")


def _path(room: dict[str, Any], parts: tuple[str, ...]) -> Any:
    """The value at a dotted path through dicts only; None when missing."""
    value: Any = room
    for part in parts:
        if type(value) is not dict:
            return None
        value = value.get(part)
    return value


def _norm(value: Any, intern: bool = False) -> Any:
    """The compact sort value kept per slot: scalars as they are (repeated strings interned),
    objects and arrays as their (rank, canonical bytes) key."""
    t = type(value)
    if t is dict:
        return (3, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    if t is list:
        return (4, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    if intern and t is str:
        return sys.intern(value)
    return value


def ck(value: Any) -> Key:
    """MongoDB cross-type sort key of a normalized value: null < numbers < strings < objects <
    arrays < booleans < dates."""
    t = type(value)
    if t is Date:
        return (6, value)
    if t is str:
        return (2, value)
    if value is None:
        return (0, 0)
    if t is int or t is float:
        return (1, value)
    if t is bool:
        return (5, value)
    if t is tuple:
        return value  # type: ignore[no-any-return]
    if isinstance(value, str):  # pragma: no cover - other str subclasses
        return (2, str(value))
    raise TypeError(f"unsortable value {value!r}")  # pragma: no cover


DatePaths = tuple[tuple[str | int, ...], ...]
_NO_DATES: DatePaths = ()
_DATE_PATHS: dict[DatePaths, DatePaths] = {_NO_DATES: _NO_DATES}


def _date_paths(room: dict[str, Any]) -> DatePaths:
    """The paths of every Date in a room, as one shared tuple per distinct shape.

    The stored bytes hold dates as plain strings; these paths let checkpoints write them back
    as dates. Rooms of one shape share one tuple, so this costs a pointer per room."""
    found: list[tuple[str | int, ...]] = []
    for key, value in room.items():  # rooms are shallow: the first two levels inline
        t = type(value)
        if t is Date:
            found.append((key,))
        elif t is dict:
            for sub, inner in value.items():
                u = type(inner)
                if u is Date:
                    found.append((key, sub))
                elif u is dict or u is list:
                    _deep_dates((key, sub), inner, found)
        elif t is list:
            _deep_dates((key,), value, found)
    if not found:
        return _NO_DATES
    paths = tuple(found)  # in document order: rooms of one shape share it
    return _DATE_PATHS.setdefault(paths, paths)


def _deep_dates(
    prefix: tuple[str | int, ...], node: Any, found: list[tuple[str | int, ...]]
) -> None:
    stack: list[tuple[tuple[str | int, ...], Any]] = [(prefix, node)]
    while stack:
        prefix, node = stack.pop()
        items = node.items() if type(node) is dict else enumerate(node)
        for key, value in items:
            t = type(value)
            if t is Date:
                found.append((*prefix, key))
            elif t is dict or t is list:
                stack.append(((*prefix, key), value))


def _restore_dates(doc: Any, paths: DatePaths) -> Any:
    for path in paths:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = Date(node[path[-1]])
    return doc


def _dumps(room: dict[str, Any]) -> bytes:
    """orjson bytes of ``room``, copied: orjson's own result keeps a multi-KiB allocation."""
    return bytes(memoryview(orjson.dumps(room)))


def _eq_keys(value: Any) -> list[str]:
    """The strings an equality filter can match: the value, or the strings of a list."""
    if type(value) is str:
        return [value]
    if type(value) is list:
        return [v for v in value if type(v) is str]
    return []


def _trigrams(text: str) -> set[str]:
    return {text[i : i + 3] for i in range(len(text) - 2)}


def _quadgrams(text: str) -> set[str]:
    return {text[i : i + 4] for i in range(len(text) - 3)}


#: Types whose values order among themselves as their keys do (numbers together); a block
#: whose values all fall in one of these is searched by the raw values, in C.
_NONE = type(None)
_KIND: dict[type, type] = {Date: Date, str: str, int: int, float: int, _NONE: _NONE}


class _Block:
    """A run of slots in (key, _id) order, with the same slots as a bitmap."""

    __slots__ = ("arr", "bm", "kind", "pure")

    def __init__(self, slots: Sequence[int], pure: bool, kind: type | None) -> None:
        self.arr = array("I", slots)
        self.bm = BitMap(self.arr)
        self.pure = pure  # every slot holds the same key
        self.kind = kind  # the _KIND of every value in the block, if they share one (or None)


def _as_slots(slots: array[int] | BitMap) -> Slots:
    """A uint32 numpy view of an array of slots, or of a BitMap's slots (ascending)."""
    if isinstance(slots, BitMap):
        slots = slots.to_array()
    return np.frombuffer(slots, dtype=np.uint32)


def _to_bitmap(slots: Slots) -> BitMap:
    return BitMap(array("I", slots.astype(np.uint32, copy=False).tobytes()))


class _SortIndex:
    """Every live slot in (key, _id) order, cut into blocks; optionally an order code per slot.

    Invariant: a key shared across a block boundary only occurs between two *pure* blocks, so a
    mixed block holds whole runs of equal keys and a run spanning blocks is a chain of pure blocks.

    ``codes`` (when kept) maps each live slot to an int64 that orders as its key: slots with equal
    keys share a code and a greater key has a greater code, so numpy can filter and sort slots by
    key without Python comparisons. A new key takes a code between its neighbours' (at most
    ``_STEP`` past the lesser, ``_GAP`` past the last); when no integer is left between them,
    the codes of the blocks around it are spread again (see ``_respread``).
    """

    __slots__ = ("blocks", "ckof", "codes", "firsts", "full", "ids", "max_size", "size", "vals")

    def __init__(self, vals: list[Any], ids: list[str | None], size: int, coded: bool) -> None:
        self.vals = vals
        self.ids = ids
        self.size = size
        self.max_size = 2 * size
        self.blocks: list[_Block] = []
        self.firsts: list[tuple[Key, str]] = []  # (ck, _id) of each block's first slot
        # An array (cheap to read one at a time) that numpy views for vector work; a view must
        # not outlive the call that makes it (the array cannot grow while viewed).
        self.codes: array[int] | None = array("q") if coded else None

        # Closures over the columns, with the common types inlined: these run in every bisect.
        def ckof(slot: int) -> Key:
            v = vals[slot]
            t = type(v)
            if t is Date:
                return (6, v)
            if t is str:
                return (2, v)
            return ck(v)

        def full(slot: int) -> tuple[Key, str]:
            v = vals[slot]
            t = type(v)
            if t is Date:
                return ((6, v), ids[slot])  # type: ignore[return-value]
            if t is str:
                return ((2, v), ids[slot])  # type: ignore[return-value]
            return (ck(v), ids[slot])  # type: ignore[return-value]

        self.ckof: Callable[[int], Key] = ckof
        self.full: Callable[[int], tuple[Key, str]] = full

    def _first(self, block: _Block) -> tuple[Key, str]:
        return self.full(block.arr[0])

    def _is_pure(self, block: _Block) -> bool:
        arr = block.arr
        return ck(self.vals[arr[0]]) == ck(self.vals[arr[-1]])

    # -- building ---------------------------------------------------------------------------
    def build(self, order: list[int]) -> None:
        """Blocks from slots already in (key, _id) order: cut every ``size`` slots, moving a cut
        that would split a run to the run's start; a run longer than a block gets pure blocks
        of its own. O(n + (n / size) log size) key computations."""
        blocks: list[_Block] = []
        size = self.size
        ckof = self.ckof
        n = len(order)
        i = 0
        while i < n:
            j = min(i + size, n)
            if j < n:
                k = ckof(order[j])
                if ckof(order[j - 1]) == k:  # the cut would split a run
                    start = bisect_left(order, k, i, j, key=ckof)
                    if start > i:
                        j = start
                    else:  # the run fills this block and goes on: pure blocks for it
                        end = bisect_right(order, k, j, n, key=ckof)
                        for a in range(i, end, size):
                            run = order[a : min(a + size, end)]
                            blocks.append(_Block(run, True, self._kind(run)))
                        i = end
                        continue
            part = order[i:j]
            blocks.append(_Block(part, ckof(part[0]) == ckof(part[-1]), self._kind(part)))
            i = j
        self.blocks = blocks
        self.firsts = [self._first(b) for b in blocks]
        if self.codes is not None and n:
            self._label(order)

    # -- order codes ------------------------------------------------------------------------
    def grow(self, capacity: int) -> None:
        """Room for codes of slots below ``capacity``."""
        codes = self.codes
        if codes is not None and len(codes) < capacity:
            codes.frombytes(bytes(8 * (max(capacity, 2 * len(codes), 1024) - len(codes))))

    def view(self) -> Codes:
        """The codes as a numpy array sharing their memory (drop it before the next insert)."""
        assert self.codes is not None
        return np.frombuffer(self.codes, dtype=np.int64) if self.codes else np.zeros(0, np.int64)

    def _label(self, order: Sequence[int]) -> None:
        """Codes for slots given in (key, _id) order: equal keys share a code, evenly spread."""
        assert self.codes is not None
        n = len(order)
        seq = list(map(self.vals.__getitem__, order))
        kinds = set(map(type, seq)) - {_NONE}  # None equals only None, as its key does
        if not (kinds <= {int, float} or kinds == {str} or kinds == {Date}):
            seq = list(map(self.ckof, order))  # mixed types: compare full keys
        change = np.ones(n, dtype=bool)
        change[1:] = np.fromiter(map(ne, seq, islice(seq, 1, None)), dtype=bool, count=n - 1)
        self._spread(np.asarray(order, dtype=np.uint32), change)

    def _spread(self, order: Slots, change: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        """Codes for ``order`` (every slot in key order) where ``change`` marks each new key."""
        assert self.codes is not None
        ranks = np.cumsum(change, dtype=np.int64)
        step = min(_GAP, _CODE_MAX // (int(ranks[-1]) + 2))
        self.view()[order] = ranks * step

    def order(self) -> Slots:
        """Every slot in (key, _id) order; O(n)."""
        if not self.blocks:
            return np.zeros(0, dtype=np.uint32)
        return np.concatenate([_as_slots(b.arr) for b in self.blocks])

    def _neighbours(self, b: int, p: int) -> tuple[int | None, int | None]:
        blocks = self.blocks
        arr = blocks[b].arr
        prev = arr[p - 1] if p else blocks[b - 1].arr[-1] if b else None
        nxt = (
            arr[p + 1]
            if p + 1 < len(arr)
            else blocks[b + 1].arr[0]
            if b + 1 < len(blocks)
            else None
        )
        return prev, nxt

    def _code_new(self, slot: int, b: int, p: int) -> None:
        """Give ``slot``, just placed at block ``b`` position ``p``, its code."""
        codes = self.codes
        assert codes is not None
        prev, nxt = self._neighbours(b, p)
        k = self.ckof(slot)
        if prev is not None and self.ckof(prev) == k:
            codes[slot] = codes[prev]
            return
        if nxt is not None and self.ckof(nxt) == k:
            codes[slot] = codes[nxt]
            return
        lo = -1 if prev is None else codes[prev]
        hi = _CODE_MAX + 1 if nxt is None else codes[nxt]
        if prev is None and nxt is None:
            c = _CODE_MAX // 2
        elif prev is None:
            c = hi - min(_GAP, (hi - lo) // 2)
        else:  # a small step past prev leaves room for more keys after it (values that grow)
            c = lo + min(_GAP if nxt is None else _STEP, (hi - lo) // 2)
        if lo < c < hi and 0 <= c <= _CODE_MAX:
            codes[slot] = c
            return
        self._respread(b, p)

    def _respread(self, b: int, p: int) -> None:
        """Spread the codes of a few blocks around block ``b`` evenly between the codes just
        outside them, taking in more blocks (twice as many each time) until every key in them
        gets at least ``_STEP`` of room, so values arriving in order cost O(1) amortized.

        The slot at (b, p) is a new key that differs from both of its neighbours."""
        codes = self.codes
        assert codes is not None
        blocks = self.blocks
        nb = len(blocks)
        reach = 0
        while True:
            b0, b1 = max(0, b - reach), min(nb - 1, b + reach)
            # Never split a run of equal keys: its codes must stay equal.
            while b0 > 0 and codes[blocks[b0 - 1].arr[-1]] == codes[blocks[b0].arr[0]]:
                b0 -= 1
            while b1 < nb - 1 and codes[blocks[b1 + 1].arr[0]] == codes[blocks[b1].arr[-1]]:
                b1 += 1
            lo = codes[blocks[b0 - 1].arr[-1]] if b0 else -1
            hi = codes[blocks[b1 + 1].arr[0]] if b1 < nb - 1 else _CODE_MAX + 1
            order = np.concatenate([_as_slots(blocks[i].arr) for i in range(b0, b1 + 1)])
            along = self.view()[order]
            change = np.ones(len(order), dtype=bool)
            change[1:] = along[1:] != along[:-1]
            i = sum(len(blocks[j].arr) for j in range(b0, b)) + p
            change[i] = True
            if i + 1 < len(order):
                change[i + 1] = True
            ranks = np.cumsum(change, dtype=np.int64)
            room = (hi - lo) // (int(ranks[-1]) + 1)
            if room >= _STEP or (b0 == 0 and b1 == nb - 1):
                if b0 == 0 and b1 == nb - 1:  # the whole index: as after a build
                    self._spread(order, change)
                else:
                    self.view()[order] = lo + ranks * room
                return
            reach = 2 * reach + 1

    def code_span(self, lo: tuple[int, int], hi: tuple[int, int]) -> tuple[int, int] | None:
        """The (least, greatest) code of the slots from position ``lo`` up to (not including)
        ``hi``; None when there are none."""
        assert self.codes is not None
        if self.span_count(lo, hi) == 0:
            return None
        (b0, p0), (b1, p1) = lo, hi
        first = self.blocks[b0].arr[p0]
        last = self.blocks[b1].arr[p1 - 1] if p1 else self.blocks[b1 - 1].arr[-1]
        return self.codes[first], self.codes[last]

    # -- positions --------------------------------------------------------------------------
    def _kind(self, slots: Iterable[int]) -> type | None:
        kinds = {_KIND.get(t) for t in set(map(type, map(self.vals.__getitem__, slots)))}
        return kinds.pop() if len(kinds) == 1 else None

    def _find(self, block: _Block, slot: int, key: tuple[Key, str]) -> int:
        """Where ``slot`` (with ``key``) is or goes in ``block``: with C-level comparisons of
        raw values and ids when the block and the slot's value share a kind."""
        arr = block.arr
        kind = block.kind
        v = self.vals[slot]
        if kind is None or _KIND.get(type(v)) is not kind:
            return bisect_left(arr, key, key=self.full)
        lo, hi = 0, len(arr)
        if kind is not _NONE:  # None values are all equal: only the ids order them
            getv = self.vals.__getitem__
            lo = bisect_left(arr, v, key=getv)
            hi = bisect_right(arr, v, lo, key=getv)
        if lo == hi:
            return lo
        return bisect_left(arr, self.ids[slot], lo, hi, key=self.ids.__getitem__)  # type: ignore[type-var]

    def locate(self, slot: int) -> tuple[int, int]:
        key = self.full(slot)
        b = bisect_right(self.firsts, key) - 1
        arr = self.blocks[b].arr
        p = self._find(self.blocks[b], slot, key)
        if p >= len(arr) or arr[p] != slot:
            raise AssertionError(f"slot {slot} not found in sort index")
        return b, p

    def lower(self, x: Key) -> tuple[int, int]:
        """Position of the first slot whose key is >= x."""
        b = bisect_left(self.firsts, x, key=_head)
        if b == 0:
            return 0, 0
        arr = self.blocks[b - 1].arr
        p = bisect_left(arr, x, key=self.ckof)
        return (b, 0) if p == len(arr) else (b - 1, p)

    def upper(self, x: Key) -> tuple[int, int]:
        """Position of the first slot whose key is > x."""
        b = bisect_right(self.firsts, x, key=_head)
        if b == 0:
            return 0, 0
        arr = self.blocks[b - 1].arr
        p = bisect_right(arr, x, key=self.ckof)
        return (b, 0) if p == len(arr) else (b - 1, p)

    def span_count(self, lo: tuple[int, int], hi: tuple[int, int]) -> int:
        (b0, p0), (b1, p1) = lo, hi
        if b0 == b1:
            return max(0, p1 - p0)
        if b0 > b1:
            return 0
        blocks = self.blocks
        n = len(blocks[b0].arr) - p0 + p1
        for b in range(b0 + 1, b1):
            n += len(blocks[b].arr)
        return n

    def span_bitmap(self, lo: tuple[int, int], hi: tuple[int, int]) -> BitMap:
        (b0, p0), (b1, p1) = lo, hi
        blocks = self.blocks
        if b0 > b1 or (b0 == b1 and p1 <= p0):
            return BitMap()
        if b0 == b1:
            return BitMap(blocks[b0].arr[p0:p1])
        parts = [BitMap(blocks[b0].arr[p0:]) if p0 else blocks[b0].bm]
        parts.extend(blocks[b].bm for b in range(b0 + 1, b1))
        if b1 < len(blocks) and p1:
            parts.append(BitMap(blocks[b1].arr[:p1]))
        return BitMap.union(*parts)

    # -- updates ----------------------------------------------------------------------------
    def insert(self, slot: int) -> None:
        b, p = self._place(slot)
        if self.codes is not None:
            self._code_new(slot, b, p)
        if len(self.blocks[b].arr) > self.max_size:
            self._split(b)

    def _place(self, slot: int) -> tuple[int, int]:
        """Put ``slot`` in its block; returns (block, position)."""
        blocks = self.blocks
        key = self.full(slot)
        k = key[0]
        if not blocks:
            blocks.append(_Block([slot], True, self._kind((slot,))))
            self.firsts.append(key)
            return 0, 0
        nb = len(blocks)
        b = max(0, bisect_right(self.firsts, key) - 1)
        block = blocks[b]
        arr = block.arr
        p = self._find(block, slot, key)
        if p == len(arr) and b + 1 < nb and self.firsts[b + 1][0] == k:
            b, block, p = b + 1, blocks[b + 1], 0  # join the run that starts the next block
        elif block.pure and self.ckof(arr[0]) != k:
            chained = (
                b > 0 and blocks[b - 1].pure and self.firsts[b - 1][0] == self.firsts[b][0]
            ) or (b + 1 < nb and blocks[b + 1].pure and self.firsts[b + 1][0] == self.firsts[b][0])
            if chained:
                # The pure block is part of a chain: the new key must not join it.
                if p == 0:
                    blocks.insert(b, _Block([slot], True, self._kind((slot,))))
                    self.firsts.insert(b, key)
                    return b, 0
                if b + 1 < nb and not blocks[b + 1].pure:
                    b, block, p = b + 1, blocks[b + 1], 0
                else:
                    blocks.insert(b + 1, _Block([slot], True, self._kind((slot,))))
                    self.firsts.insert(b + 1, key)
                    return b + 1, 0
        block.arr.insert(p, slot)
        block.bm.add(slot)
        if block.kind is not None and _KIND.get(type(self.vals[slot])) is not block.kind:
            block.kind = None
        if p == 0:
            self.firsts[b] = key
        if block.pure:
            block.pure = self._is_pure(block)
        return b, p

    def _split(self, b: int) -> None:
        block = self.blocks[b]
        arr = block.arr
        n = len(arr)
        m = n // 2
        if not block.pure:
            k = self.ckof(arr[m])
            left = bisect_left(arr, k, key=self.ckof)
            right = bisect_right(arr, k, key=self.ckof)
            cands = [c for c in (left, right) if 0 < c < n]
            m = min(cands, key=lambda c: abs(c - m))
        one, two = arr[:m], arr[m:]
        vals = self.vals
        first = _Block(one, block.pure or ck(vals[one[0]]) == ck(vals[one[-1]]), self._kind(one))
        second = _Block(two, block.pure or ck(vals[two[0]]) == ck(vals[two[-1]]), self._kind(two))
        self.blocks[b : b + 1] = [first, second]
        self.firsts[b : b + 1] = [self.firsts[b], self._first(second)]

    def remove(self, slot: int) -> None:
        b, p = self.locate(slot)
        block = self.blocks[b]
        del block.arr[p]
        block.bm.discard(slot)
        if not block.arr:
            del self.blocks[b]
            del self.firsts[b]
            return
        if p == 0:
            self.firsts[b] = self._first(block)
        if not block.pure:
            block.pure = self._is_pure(block)

    # -- checking ---------------------------------------------------------------------------
    def check(self, live: BitMap, name: str) -> None:
        order = [s for block in self.blocks for s in block.arr]
        want = sorted(live, key=self.full)
        assert order == want, f"{name}: sort order differs"
        assert len(self.firsts) == len(self.blocks), name
        prev: _Block | None = None
        for block, first in zip(self.blocks, self.firsts, strict=True):
            arr = block.arr
            assert arr, f"{name}: empty block"
            assert len(arr) <= self.max_size, f"{name}: oversized block"
            assert block.bm == BitMap(arr), f"{name}: block bitmap differs"
            assert first == self._first(block), f"{name}: stale block first key"
            assert block.pure == self._is_pure(block), f"{name}: stale pure flag"
            if block.kind is not None:
                assert self._kind(arr) is block.kind, f"{name}: wrong block kind"
            if prev is not None and self.ckof(prev.arr[-1]) == self.ckof(arr[0]):
                assert prev.pure, f"{name}: a run crosses a mixed block"
                assert block.pure, f"{name}: a run crosses a mixed block"
            prev = block
        if self.codes is not None and order:
            codes = [self.codes[s] for s in order]
            assert all(0 <= c <= _CODE_MAX for c in codes), f"{name}: code out of range"
            for a, b, ca, cb in zip(order, order[1:], codes, codes[1:], strict=False):
                same = self.ckof(a) == self.ckof(b)
                assert (ca == cb) if same else (ca < cb), f"{name}: codes out of key order"

    # -- paging -----------------------------------------------------------------------------
    def chain_end(self, b: int, step: int) -> int:
        """The last block (going by ``step``) of the pure chain that block ``b`` starts."""
        blocks, firsts = self.blocks, self.firsts
        if not blocks[b].pure:
            return b
        k = firsts[b][0]
        e = b
        n = len(blocks)
        while 0 <= e + step < n and blocks[e + step].pure and firsts[e + step][0] == k:
            e += step
        return e


def _count(block: _Block, m: BitMap | None) -> int:
    return len(block.arr) if m is None else block.bm.intersection_cardinality(m)


_PACKED_LEN = 64  # names up to this long (in characters up to U+FFFF) get n-grams in numpy
_CHUNK = 1 << 16  # names per numpy pass (bounds the memory of a bulk load's n-grams)


def _ngram_slots(texts: list[str], slots: Slots, n: int) -> dict[str, BitMap]:
    """gram -> BitMap of slots, for every ``n``-gram (3 or 4) of each text (its slot alongside).

    Texts are at most _PACKED_LEN characters, each at most U+FFFF, so a gram packs into one
    uint64 of 16-bit characters; each chunk of texts is grouped by sorting in numpy, and the
    chunks' bitmaps are merged (so the memory needed stays that of one chunk)."""
    out: dict[str, BitMap] = {}
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start : start + _CHUNK]
        width = max(map(len, chunk))
        if width < n:
            continue
        utf32 = np.array(chunk, dtype=f"<U{width}").view(np.uint32).reshape(len(chunk), width)
        chars = utf32.astype(np.uint64)
        packed = chars[:, : width - n + 1].copy()
        for k in range(1, n):
            packed <<= np.uint64(16)
            packed |= chars[:, k : width - n + 1 + k]
        lengths = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
        valid = np.arange(width - n + 1)[None, :] <= (lengths - n)[:, None]
        owner = np.broadcast_to(slots[start : start + len(chunk), None], valid.shape)
        codes, owners = packed[valid], owner[valid]
        order = np.argsort(codes)  # slots in a group may come in any order
        codes, owners = codes[order], owners[order]
        cuts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = [*cuts.tolist(), len(codes)]
        for a, b, code in zip(starts, ends, codes[starts].tolist(), strict=True):
            gram = "".join(chr((code >> (16 * (n - 1 - k))) & 0xFFFF) for k in range(n))
            found = _to_bitmap(owners[a:b])
            bm = out.get(gram)
            if bm is None:
                out[gram] = found
            else:
                bm |= found
    return out


def _merge_grams(acc: dict[str, array[int]], packed: dict[str, BitMap]) -> dict[str, BitMap]:
    for gram, slots in acc.items():
        bm = packed.get(gram)
        packed[gram] = BitMap(slots) if bm is None else bm | BitMap(slots)
    return packed


class RoomStore:
    """Voip rooms by ``_id``, indexed for every filter and sort of GET /api/v1/voip/rooms.

    Each room lives in an int slot: its orjson bytes, and per sortable field its value in a
    column. Equality filters, ``open`` (and its absence) and name 3- and 4-grams map to BitMaps
    of slots; every sortable field (and ``_id``) keeps the slots in (key, _id) order in blocks of
    ``block_size`` to ``2 * block_size`` slots, each with a BitMap, so a page skips whole blocks
    by counting. Each sortable field also gives every slot an order code (see _SortIndex), with
    which numpy filters date ranges and sorts a query's matches when that costs less than the
    walk (``gather``: None decides per query by a cost estimate; True or False forces it, for
    tests). ``version`` goes up by one on every change and never on a no-op. Not thread-safe:
    call it from one thread (the event loop).
    """

    def __init__(self, block_size: int = 2048, gather: bool | None = None) -> None:
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.version = 0
        self._block_size = block_size
        self._gather = gather  # pages by gathering: None = when cheaper, else always / never
        self._ids: list[str | None] = []
        self._docs: list[bytes | None] = []
        self._dates: list[DatePaths] = []
        self._slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._all = BitMap()
        self._open = BitMap()
        self._closed = BitMap()  # live slots without ``open``
        self._eq: dict[str, dict[str, BitMap]] = {f: {} for f in _EQ_FIELDS}
        self._eq_paths = tuple((f, tuple(f.split("."))) for f in _EQ_FIELDS)
        self._grams: dict[str, BitMap] = {}  # lower-cased name trigram -> slots
        self._quads: dict[str, BitMap] = {}  # and 4-grams, so that most searches need no check
        self._short = BitMap()  # slots whose lower-cased name has fewer than 3 characters
        self._named = BitMap()  # slots whose name is a string
        self._lows: list[str | None] = []  # lower-cased name of each slot whose name is a string
        self._vals: dict[str, list[Any]] = {f: [] for f in SORTABLE_FIELDS}
        self._sort_paths = tuple(
            (f, tuple(f.split(".")), self._vals[f], f in _LOW_CARD) for f in SORTABLE_FIELDS
        )
        self._index: dict[str, _SortIndex] = {
            f: _SortIndex(self._vals[f], self._ids, block_size, coded=True) for f in SORTABLE_FIELDS
        }
        self._index[_ID] = _SortIndex(self._ids, self._ids, block_size, coded=False)
        self._capacity = 0  # slots the order codes have room for

    # -- basic access -----------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of rooms; O(1)."""
        return len(self._slot_of)

    def get(self, room_id: str) -> bytes | None:
        """The stored orjson bytes of a room, or None; O(1)."""
        slot = self._slot_of.get(room_id)
        return None if slot is None else self._docs[slot]

    def open_count(self) -> int:
        """Rooms that have an ``open`` field; O(1)."""
        return len(self._open)

    def iter_rooms(self) -> Iterator[bytes]:
        """Every stored room's bytes, in no particular order; O(n) for the whole walk."""
        for doc in list(self._docs):
            if doc is not None:
                yield doc

    def iter_documents(self) -> Iterator[dict[str, Any]]:
        """Every room as a dict with its dates typed as Date again (for checkpoints).

        The view is taken when called (O(n) reference copies), so the iterator may be read in
        another thread while the store changes; each room costs one orjson parse."""
        pairs = [(d, p) for d, p in zip(self._docs, self._dates, strict=True) if d is not None]
        loads = orjson.loads
        return (_restore_dates(loads(doc), paths) for doc, paths in pairs)

    # -- updates ----------------------------------------------------------------------------
    def _new_slot(self) -> int:
        if self._free:
            return self._free.pop()
        slot = len(self._ids)
        if slot >= self._capacity:
            self._grow(slot + 1)
        self._ids.append(None)
        self._lows.append(None)
        self._docs.append(None)
        self._dates.append(_NO_DATES)
        for vals in self._vals.values():
            vals.append(None)
        return slot

    def _grow(self, capacity: int) -> None:
        for index in self._index.values():
            index.grow(capacity)
        self._capacity = min(
            (len(i.codes) for i in self._index.values() if i.codes is not None), default=capacity
        )

    def _index_filters(self, slot: int, room: dict[str, Any]) -> None:
        for field, parts in self._eq_paths:
            index = self._eq[field]
            for key in _eq_keys(_path(room, parts)):
                bm = index.get(key)
                if bm is None:
                    index[key] = BitMap([slot])
                else:
                    bm.add(slot)
        if "open" in room:
            self._open.add(slot)
        else:
            self._closed.add(slot)

    def _unindex_filters(self, slot: int, old: dict[str, Any]) -> None:
        # ``old`` is re-read from the stored bytes, so dates came back as plain strings: that can
        # only name extra keys, and discarding a slot from a bitmap lacking it is harmless.
        for field, parts in self._eq_paths:
            index = self._eq[field]
            for key in _eq_keys(_path(old, parts)):
                bm = index.get(key)
                if bm is not None:
                    bm.discard(slot)
                    if not bm:
                        del index[key]
        self._open.discard(slot)
        self._closed.discard(slot)

    def _index_name(self, slot: int, name: Any) -> None:
        if not isinstance(name, str):
            return
        self._named.add(slot)
        low = name.lower()
        self._lows[slot] = name if low == name else low
        if len(low) < 3:
            self._short.add(slot)
        for grams, found in ((self._grams, _trigrams(low)), (self._quads, _quadgrams(low))):
            for g in found:
                bm = grams.get(g)
                if bm is None:
                    grams[g] = BitMap([slot])
                else:
                    bm.add(slot)

    def _unindex_name(self, slot: int, name: Any) -> None:
        if not isinstance(name, str):
            return
        self._named.discard(slot)
        self._short.discard(slot)
        self._lows[slot] = None
        low = name.lower()
        for grams, found in ((self._grams, _trigrams(low)), (self._quads, _quadgrams(low))):
            for g in found:
                bm = grams[g]
                bm.discard(slot)
                if not bm:
                    del grams[g]

    def upsert(self, room: dict[str, Any]) -> bool:
        """Store ``room`` (replacing the room with its ``_id``); False when the identical room
        is already stored. O(F·(log n + B)) for F sortable fields whose value changed and block
        size B, plus O(len(name)) when the name changed."""
        rid = room["_id"]
        if type(rid) is not str:
            raise TypeError(f"room _id must be a string, got {rid!r}")
        doc = _dumps(room)
        slot = self._slot_of.get(rid)
        if slot is None:
            slot = self._new_slot()
            self._slot_of[rid] = slot
            self._ids[slot] = rid
            self._docs[slot] = doc
            self._dates[slot] = _date_paths(room)
            self._all.add(slot)
            self._index_filters(slot, room)
            for field, parts, vals, intern in self._sort_paths:
                vals[slot] = _norm(_path(room, parts), intern)
                self._index[field].insert(slot)
            self._index[_ID].insert(slot)
            self._index_name(slot, self._vals["name"][slot])
            self.version += 1
            return True
        old_doc = self._docs[slot]
        if old_doc == doc:
            return False
        assert old_doc is not None
        self._unindex_filters(slot, orjson.loads(old_doc))
        self._index_filters(slot, room)
        self._docs[slot] = doc
        self._dates[slot] = _date_paths(room)
        for field, parts, vals, intern in self._sort_paths:
            new = _norm(_path(room, parts), intern)
            old = vals[slot]
            if type(new) is type(old) and new == old:
                continue
            if ck(new) == ck(old):
                vals[slot] = new  # same order (e.g. 1 and 1.0): nothing moves
            else:
                index = self._index[field]
                index.remove(slot)
                vals[slot] = new
                index.insert(slot)
            if field == "name":
                self._unindex_name(slot, old)
                self._index_name(slot, new)
        self.version += 1
        return True

    def remove(self, room_id: str) -> bool:
        """Forget a room; False when unknown. O(F·(log n + B) + len(name))."""
        slot = self._slot_of.pop(room_id, None)
        if slot is None:
            return False
        doc = self._docs[slot]
        assert doc is not None
        self._unindex_filters(slot, orjson.loads(doc))
        self._unindex_name(slot, self._vals["name"][slot])
        for field, index in self._index.items():
            index.remove(slot)
            if field != _ID:
                self._vals[field][slot] = None
        self._ids[slot] = None
        self._docs[slot] = None
        self._dates[slot] = _NO_DATES
        self._all.discard(slot)
        self._free.append(slot)
        self.version += 1
        return True

    def bulk_load(self, rooms: Iterable[dict[str, Any]]) -> int:
        """Load a snapshot into an empty store, building every index in bulk; returns the rooms
        stored (a later room with the same ``_id`` replaces an earlier one). O(n log n).

        All or nothing: when a room cannot be stored (no string ``_id``, or a value orjson cannot
        serialize, such as an integer beyond 64 bits) the store is left empty and the error
        raised."""
        if self._slot_of:
            raise ValueError("bulk_load needs an empty store")
        version = self.version
        if self._ids:  # slots left by removals: start from fresh columns
            self.__init__(self._block_size, self._gather)  # type: ignore[misc]
            self.version = version
        try:
            return self._bulk_load(rooms)
        except BaseException:
            self.__init__(self._block_size, self._gather)  # type: ignore[misc]
            self.version = version
            raise

    def _bulk_load(self, rooms: Iterable[dict[str, Any]]) -> int:
        ids, docs, slot_of, dates = self._ids, self._docs, self._slot_of, self._dates
        # Paths here have one or two parts; the loop is unrolled for that (the hot path).
        sort_specs = [
            (parts[0], parts[1] if len(parts) > 1 else None, vals, intern)
            for _, parts, vals, intern in self._sort_paths
        ]
        assert all(len(parts) <= 2 for _, parts in self._eq_paths)
        eq_specs: list[tuple[str, str | None, list[Any]]] = [
            (parts[0], parts[1] if len(parts) > 1 else None, []) for _, parts in self._eq_paths
        ]
        eq_vals: list[list[Any]] = [spec[2] for spec in eq_specs]
        opened: list[int] = []
        dumps = _dumps
        intern_str = sys.intern
        sort_keys = orjson.OPT_SORT_KEYS
        for room in rooms:
            rid = room["_id"]
            if type(rid) is not str:
                raise TypeError(f"room _id must be a string, got {rid!r}")
            slot = slot_of.get(rid)
            fresh = slot is None
            if slot is None:
                slot = len(ids)
                slot_of[rid] = slot
                ids.append(rid)
                docs.append(dumps(room))
                dates.append(_date_paths(room))
            else:  # a later duplicate replaces the earlier room
                docs[slot] = dumps(room)
                dates[slot] = _date_paths(room)
                opened = [s for s in opened if s != slot]
            get = room.get
            for top, sub, vals, intern in sort_specs:
                v = get(top)
                if sub is not None:
                    v = v.get(sub) if type(v) is dict else None
                t = type(v)
                if t is dict:
                    v = (3, orjson.dumps(v, option=sort_keys))
                elif t is list:
                    v = (4, orjson.dumps(v, option=sort_keys))
                elif intern and t is str:
                    v = intern_str(v)  # type: ignore[arg-type]
                if fresh:
                    vals.append(v)
                else:
                    vals[slot] = v
            for top, sub, column in eq_specs:
                v = get(top)
                if sub is not None:
                    v = v.get(sub) if type(v) is dict else None
                if fresh:
                    column.append(v)
                else:
                    column[slot] = v
            if "open" in room:
                opened.append(slot)
        n = len(ids)
        self._all = BitMap(range(n))
        self._open = BitMap(opened)
        self._closed = self._all - self._open
        for field, values in zip(_EQ_FIELDS, eq_vals, strict=True):
            acc: dict[str, array[int]] = {}
            for slot, value in enumerate(values):
                t = type(value)
                for key in (value,) if t is str else _eq_keys(value) if t is list else ():
                    slots = acc.get(key)
                    if slots is None:
                        acc[key] = array("I", (slot,))
                    else:
                        slots.append(slot)
            self._eq[field] = {k: BitMap(v) for k, v in acc.items()}
            values.clear()
        self._bulk_names(self._vals["name"])
        self._grow(n)
        by_id = sorted(range(n), key=ids.__getitem__)  # type: ignore[arg-type]
        self._index[_ID].build(by_id)
        for field in SORTABLE_FIELDS:
            self._index[field].build(_sorted_slots(by_id, self._vals[field], ids))
        if n:
            self.version += 1
        return n

    def _bulk_names(self, names: list[Any]) -> None:
        """The name indexes of a bulk load: n-grams of most names in numpy (see _ngram_slots),
        of the rest (long names, characters beyond U+FFFF) in Python."""
        acc: dict[str, array[int]] = {}
        quads: dict[str, array[int]] = {}
        named = array("I")
        short = array("I")
        packed: list[str] = []  # lower-cased names that numpy indexes
        packed_slots = array("I")
        lows = self._lows = [None] * len(names)
        for slot, name in enumerate(names):
            if not isinstance(name, str):
                continue
            named.append(slot)
            low = name.lower()
            lows[slot] = name if low == name else low
            if len(low) < 3:
                short.append(slot)
                continue
            if len(low) <= _PACKED_LEN and (low.isascii() or max(map(ord, low)) <= 0xFFFF):
                packed.append(low)
                packed_slots.append(slot)
                continue
            for grams, found in ((acc, _trigrams(low)), (quads, _quadgrams(low))):
                for g in found:
                    lst = grams.get(g)
                    if lst is None:
                        grams[g] = array("I", (slot,))
                    else:
                        lst.append(slot)
        self._grams = _merge_grams(acc, _ngram_slots(packed, _as_slots(packed_slots), 3))
        self._quads = _merge_grams(quads, _ngram_slots(packed, _as_slots(packed_slots), 4))
        self._named = BitMap(named)
        self._short = BitMap(short)

    # -- queries ----------------------------------------------------------------------------
    def _range(self, field: str, rng: DateRange) -> tuple[tuple[int, int], tuple[int, int]]:
        index = self._index[field]
        lo = index.lower((6, rng.start if rng.start is not None else _MIN_DATE))
        hi = index.upper((6, rng.end)) if rng.end is not None else index.lower(_ABOVE_DATES)
        return lo, hi

    def _matches(self, q: RoomQuery) -> tuple[BitMap | None, dict[str, tuple[int, int]]]:
        """The slots passing every filter of ``q`` (None when there is no filter at all), and
        for each range filter the (first, last) blocks of its field's index holding them."""
        # Each filter is "any of" some bitmaps; all filters must hold.
        positives: list[list[BitMap]] = []
        if q.agents is not None:
            by_id, by_name = self._eq["servedBy._id"], self._eq["servedBy.username"]
            positives.append([i[a] for a in q.agents for i in (by_id, by_name) if a in i])
        if q.tags is not None:
            tags = self._eq["tags"]
            positives.append([tags[t] for t in q.tags if t in tags])
        equal = (("queue", q.queue), ("v._id", q.visitor_id), ("direction", q.direction))
        for path, value in equal:
            if value is not None:
                values = self._eq[path]
                positives.append([values[value]] if value in values else [])
        if q.open is True:
            positives.append([self._open])
        ql: str | None = None
        verify_name = False
        if q.room_name is not None:
            ql = q.room_name.lower()
            if not ql:
                positives.append([self._named])
            elif len(ql) >= 3:  # its trigram, or every 4-gram of it, each a filter
                grams, found = (
                    (self._grams, (ql,)) if len(ql) == 3 else (self._quads, _quadgrams(ql))
                )
                positives.extend([grams[g]] if g in grams else [] for g in found)
                verify_name = len(ql) > 4
            else:  # every name of 3+ characters holding ql has a trigram holding it
                parts = [bm for g, bm in self._grams.items() if ql in g]
                parts.append(self._holding(self._short, ql))
                positives.append(parts)
        ranges = []
        for field, rng in (("ts", q.created), ("closedAt", q.closed)):
            if rng is not None:
                lo, hi = self._range(field, rng)
                ranges.append((self._index[field].span_count(lo, hi), field, lo, hi, rng))
        ranges.sort(key=itemgetter(0))
        hints = {field: (lo[0], hi[0] if hi[1] else hi[0] - 1) for _, field, lo, hi, _ in ranges}
        m: BitMap | None = None
        if positives:
            # Smallest first; a union meets the matches so far part by part, each part smaller.
            positives.sort(key=lambda parts: sum(map(len, parts)))
            first = positives[0]
            m = BitMap() if not first else first[0] if len(first) == 1 else BitMap.union(*first)
            for parts in positives[1:]:
                if not m:
                    break
                if len(parts) == 1:
                    m = m & parts[0]
                else:
                    m = BitMap.union(*(m & part for part in parts)) if parts else BitMap()
        if q.open is False:  # most rooms are closed: subtract the open ones
            m = self._closed if m is None else m - self._open
        for size, field, lo, hi, _ in ranges:
            if m is not None and len(m) < size:  # fewer matches than dates in range: check each
                sort_index = self._index[field]
                bounds = sort_index.code_span(lo, hi)
                if bounds is None or not m:
                    m = BitMap()
                    continue
                slots = _as_slots(m)
                codes = sort_index.view()[slots]
                m = _to_bitmap(slots[(codes >= bounds[0]) & (codes <= bounds[1])])
            else:
                span = self._index[field].span_bitmap(lo, hi)
                m = span if m is None else m & span
        if verify_name and m is not None:
            assert ql is not None
            m = self._holding(m, ql)
        return m, hints  # m may be an index's own bitmap: callers never modify it

    def _holding(self, slots: BitMap, text: str) -> BitMap:
        """The named ``slots`` whose lower-cased name holds ``text``; C-level loops only."""
        picked = slots.to_array()
        lows: Iterator[str] = map(self._lows.__getitem__, picked)  # type: ignore[arg-type]
        return BitMap(compress(picked, map(contains, lows, repeat(text))))

    def page(self, q: RoomQuery) -> tuple[int, list[bytes]]:
        """(total matches, the requested page as stored bytes). Filters cost bitmap operations
        (O(matches / 64) or better); the page walks the first sort key's blocks, skipping whole
        blocks by count, so it costs O(n / B) bitmap counts plus O(B + count) in one block."""
        m, hints = self._matches(q)
        total = len(self._slot_of) if m is None else len(m)
        if total == 0 or q.offset >= total or q.count == 0:
            return total, []
        need = total - q.offset if q.count is None else min(q.count, total - q.offset)
        keys = tuple(q.sort)
        bounds = hints.get(keys[0][0]) if keys else None
        slots: list[int] | None = None
        if m is not None and keys and self._gathers(keys[0][0], total, q.offset + need, bounds):
            slots = self._gather_page(m, keys, q.offset, need)
        if slots is None:
            slots = self._page_slots(m, keys, q.offset, need, total, bounds)
        docs = self._docs
        return total, [docs[s] for s in slots]  # type: ignore[misc]

    def _gathers(self, field: str, total: int, reach: int, bounds: tuple[int, int] | None) -> bool:
        """Whether gathering and sorting ``total`` matches beats walking the blocks of
        ``field``'s index to position ``reach``, by the fitted cost model."""
        if self._gather is not None:
            return self._gather
        nb = len(self._index[field].blocks)
        if bounds is not None:
            nb = min(nb, bounds[1] - bounds[0] + 1)
        per_block = total / max(nb, 1)
        visits = min(nb, reach / max(per_block, 1e-9) + 1)
        a, b, c = _GATHER_US
        d, e = _WALK_US
        return a + b * total + c * reach < d + e * visits

    def _gather_page(
        self, m: BitMap, keys: tuple[tuple[str, int], ...], skip: int, need: int
    ) -> list[int] | None:
        """Positions [skip, skip + need) of the matches ``m`` ordered by ``keys`` then ``_id``,
        by their order codes: O(len(m)) in numpy plus a sort of the slots that can be on the
        page. None (walk the blocks instead) when the page sits in too long a run of equal
        keys, which would be put in _id order in Python."""
        slots = _as_slots(m)
        index = self._index
        reach = skip + need

        def signed(field: str, direction: int, at: Slots) -> Codes:
            picked = index[field].view()[at]
            return picked if direction > 0 else -picked

        first = signed(*keys[0], slots)
        if len(slots) > reach:
            # Keep the first key's values from the skip-th one's to the reach-th one's: the page
            # lies among them, after the matches with a lesser first key.
            lo_key, hi_key = np.partition(first, (skip, reach - 1))[[skip, reach - 1]]
            keep = (first >= lo_key) & (first <= hi_key)
            before = int(np.count_nonzero(first < lo_key)) if skip else 0
            slots, first = slots[keep], first[keep]
            skip -= before
            reach -= before
        cols = [first, *(signed(f, d, slots) for f, d in keys[1:])]
        order = np.lexsort(cols[::-1])
        slots = slots[order]
        n = len(slots)
        lo, hi = skip, min(reach, n)
        if lo >= hi:
            return []
        same = np.ones(n - 1, dtype=bool)
        for col in cols:
            col = col[order]
            same &= col[1:] == col[:-1]
        if not same[lo - 1 if lo else 0 : hi].any():
            return slots[lo:hi].tolist()  # type: ignore[no-any-return]
        # Runs of equal keys around the page: each goes in _id order.
        run = np.zeros(n, dtype=np.int64)
        np.cumsum(~same, out=run[1:])
        a = int(np.searchsorted(run, run[lo], "left"))
        b = int(np.searchsorted(run, run[hi - 1], "right"))
        if b - a > _TIE_LIMIT:
            return None
        ids = self._ids.__getitem__
        out: list[int] = []
        for _, group in groupby(zip(run[a:b].tolist(), slots[a:b].tolist(), strict=True), _head):
            out.extend(sorted((slot for _, slot in group), key=ids))  # type: ignore[arg-type]
        return out[lo - a : hi - a]

    def _sort_small(self, slots: Iterable[int], keys: tuple[tuple[str, int], ...]) -> list[int]:
        """``slots`` ordered by ``keys`` then ``_id``: stable sorts, last key first."""
        out = sorted(slots, key=self._ids.__getitem__)  # type: ignore[arg-type]
        for field, direction in reversed(keys):
            out.sort(key=self._index[field].ckof, reverse=direction < 0)
        return out

    def _page_slots(
        self,
        m: BitMap | None,
        keys: tuple[tuple[str, int], ...],
        skip: int,
        need: int,
        total: int,
        bounds: tuple[int, int] | None = None,
    ) -> list[int]:
        """Slots at positions [skip, skip + need) of the matches ``m`` (None = all rooms)
        ordered by ``keys`` and then ``_id``; ``bounds`` (first, last) are blocks of the first
        key's index known to hold every match."""
        if m is not None and total <= _SMALL:
            return self._sort_small(m, keys)[skip : skip + need]
        if not keys:
            keys = ((_ID, 1),)
        field, direction = keys[0]
        rest = keys[1:]
        index = self._index[field]
        blocks = index.blocks
        nb = len(blocks)
        desc = direction < 0
        out: list[int] = []
        first, last = (0, nb - 1) if bounds is None else (max(0, bounds[0]), min(nb - 1, bounds[1]))
        b = last if desc else first
        step = -1 if desc else 1
        card = None if m is None else m.intersection_cardinality
        while first <= b <= last and len(out) < need:
            block = blocks[b]
            if not block.pure:  # the common case first, kept tight: skipping whole blocks
                c = len(block.arr) if card is None else card(block.bm)
                if skip >= c:
                    skip -= c
                    b += step
                    continue
            else:
                e = index.chain_end(b, step)
                lo, hi = (e, b) if desc else (b, e)
                if rest:
                    counts = sum(_count(blocks[i], m) for i in range(lo, hi + 1))
                    if skip >= counts:
                        skip -= counts
                    else:
                        run = BitMap.union(*(blocks[i].bm for i in range(lo, hi + 1)))
                        if m is not None:
                            run = run & m
                        got = self._page_slots(run, rest, skip, need - len(out), counts)
                        out.extend(got)
                        skip = 0
                else:
                    for i in range(lo, hi + 1):  # a run: _id ascending in either direction
                        c = _count(blocks[i], m)
                        if skip >= c:
                            skip -= c
                            continue
                        part = self._filtered(index, blocks[i], m, c)
                        out.extend(part[skip : skip + need - len(out)])
                        skip = 0
                        if len(out) >= need:
                            break
                b = e + step
                continue
            f: Sequence[int] = self._filtered(index, block, m, c)
            want = need - len(out)
            if rest:
                runs = _runs(f, index.ckof)
                if desc:
                    runs.reverse()
                flat: list[int] = []
                for run_slots in runs:
                    if len(flat) >= skip + want:
                        break
                    flat.extend(
                        self._sort_small(run_slots, rest) if len(run_slots) > 1 else run_slots
                    )
                out.extend(flat[skip : skip + want])
            elif desc:
                out.extend(_desc_slice(f, skip, want, index.vals))
            else:
                out.extend(f[skip : skip + want])
            skip = 0
            b += step
        return out

    @staticmethod
    def _filtered(index: _SortIndex, block: _Block, m: BitMap | None, c: int) -> Sequence[int]:
        """The block's slots that are in ``m``, in (key, _id) order."""
        if m is None or c == len(block.arr):
            return block.arr
        if c * 16 < len(block.arr):
            return sorted(block.bm & m, key=index.full)
        return [s for s in block.arr if s in m]

    # -- verification -----------------------------------------------------------------------
    def _check(self) -> None:
        """Verify every index against the stored rooms (AssertionError on a mismatch).

        O(n log n)."""
        live = BitMap(self._slot_of.values())
        assert live == self._all, "live bitmap differs"
        assert len(live) == len(self._slot_of), "two ids share a slot"
        assert set(self._free).isdisjoint(live), "a free slot is live"
        assert len(self._free) + len(live) == len(self._ids), "slots leak"
        assert len(self._dates) == len(self._docs) == len(self._ids) == len(self._lows), (
            "columns differ in length"
        )
        eq: dict[str, dict[str, set[int]]] = {f: {} for f in _EQ_FIELDS}
        opened: set[int] = set()
        grams: dict[str, set[int]] = {}
        quads: dict[str, set[int]] = {}
        named: set[int] = set()
        short: set[int] = set()
        for rid, slot in self._slot_of.items():
            assert self._ids[slot] == rid, "id of slot differs"
            doc = self._docs[slot]
            assert doc is not None, "live slot without a document"
            room = orjson.loads(doc)
            assert room["_id"] == rid, "stored document has another _id"
            typed = _restore_dates(orjson.loads(doc), self._dates[slot])
            assert self._dates[slot] == _date_paths(typed), "date paths differ"
            for field, parts in self._eq_paths:
                for key in _eq_keys(_path(room, parts)):
                    eq[field].setdefault(key, set()).add(slot)
            if "open" in room:
                opened.add(slot)
            for field, parts, vals, _ in self._sort_paths:
                value = vals[slot]
                raw = _path(room, parts)
                if isinstance(raw, dict | list):
                    assert value == _norm(raw), f"{field}: stale sort value"
                else:
                    assert value == raw, f"{field}: stale sort value"
            name = self._vals["name"][slot]
            want_low = name.lower() if isinstance(name, str) else None
            assert self._lows[slot] == want_low, "lower-cased name differs"
            if isinstance(name, str):
                named.add(slot)
                low = name.lower()
                if len(low) < 3:
                    short.add(slot)
                for g in _trigrams(low):
                    grams.setdefault(g, set()).add(slot)
                for g in _quadgrams(low):
                    quads.setdefault(g, set()).add(slot)
        for slot in self._free:
            assert self._ids[slot] is None, "free slot holds an id"
            assert self._docs[slot] is None, "free slot holds a room"
        for field in _EQ_FIELDS:
            index = self._eq[field]
            # Stored dates read back as strings, so the index may only lack such keys.
            for key, bm in index.items():
                assert bm, f"{field}: empty bitmap kept for {key!r}"
                assert key in eq[field], f"{field}: stale key {key!r}"
            for key, slots in eq[field].items():
                got = set(index.get(key, ()))
                assert got <= slots, f"{field}: bitmap for {key!r} has extra slots"
                assert got == slots or _DATE_TEXT.match(key), f"{field}: bitmap for {key!r}"
        assert set(self._open) == opened, "open bitmap differs"
        assert self._closed == live - self._open, "closed bitmap differs"
        assert {g: set(bm) for g, bm in self._grams.items()} == grams, "name index differs"
        assert {g: set(bm) for g, bm in self._quads.items()} == quads, "4-gram index differs"
        assert set(self._named) == named, "named set differs"
        assert set(self._short) == short, "short-name set differs"
        for field, sort_index in self._index.items():
            sort_index.check(live, field)


def _sorted_slots(by_id: list[int], vals: list[Any], ids: list[str | None]) -> list[int]:
    """Slots in (key, _id) order, given the slots in _id order."""
    kinds = set(map(type, vals))
    nulls = [s for s in by_id if vals[s] is None] if type(None) in kinds else []
    kinds.discard(type(None))
    if not kinds or not (kinds <= {int, float} or kinds == {str} or kinds == {Date}):
        return sorted(by_id, key=lambda s: ck(vals[s]))  # stable: ties stay in _id order
    # One type, so raw values order as their keys. Sorting slot order (not _id order) is
    # near linear when the snapshot is in time order, as mongoexport's natural order is.
    rest = [s for s in range(len(vals)) if vals[s] is not None] if nulls else range(len(vals))
    order = sorted(rest, key=vals.__getitem__)
    keys = list(map(vals.__getitem__, order))
    ties = list(compress(range(len(keys) - 1), map(eq, keys, islice(keys, 1, None))))
    if len(ties) * 8 > len(keys):  # many ties (few distinct values): stable sort of _id order
        rest = [s for s in by_id if vals[s] is not None] if nulls else by_id
        return nulls + sorted(rest, key=vals.__getitem__)
    a = 0
    while a < len(ties):  # put each group of equal keys in _id order
        b = a
        while b + 1 < len(ties) and ties[b + 1] == ties[b] + 1:
            b += 1
        lo, hi = ties[a], ties[b] + 2
        order[lo:hi] = sorted(order[lo:hi], key=ids.__getitem__)  # type: ignore[arg-type]
        a = b + 1
    return nulls + order


def _runs(f: Sequence[int], ckof: Callable[[int], Key]) -> list[list[int]]:
    runs: list[list[int]] = []
    prev: Key | None = None
    for s in f:
        k = ckof(s)
        if runs and k == prev:
            runs[-1].append(s)
        else:
            runs.append([s])
            prev = k
    return runs


def _desc_slice(f: Sequence[int], skip: int, want: int, vals: list[Any]) -> list[int]:
    """Positions [skip, skip + want) of ``f`` (in (key, _id) order) taken by key descending
    with ties still _id ascending."""

    def ckof(slot: int) -> Key:
        return ck(vals[slot])

    def same(a: int, b: int) -> bool:
        # Unequal raw values never share a key; equal ones may not either (1 and True).
        va, vb = vals[a], vals[b]
        return bool(va == vb) and ck(va) == ck(vb)

    n = len(f)
    i = n - 1 - skip
    k = ckof(f[i])
    start = i if i == 0 or not same(f[i - 1], f[i]) else bisect_left(f, k, 0, i, key=ckof)
    end = (
        i + 1 if i + 1 == n or not same(f[i + 1], f[i]) else bisect_right(f, k, i + 1, n, key=ckof)
    )
    j = start + (skip - (n - end))
    out = list(f[j : min(end, j + want)])
    hi = start
    while len(out) < want and hi > 0:
        lo = hi - 1
        if lo > 0 and same(f[lo - 1], f[lo]):
            lo = bisect_left(f, ckof(f[lo]), 0, lo, key=ckof)
        out.extend(f[lo : min(hi, lo + want - len(out))])
        hi = lo
    return out
