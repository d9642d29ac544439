"""One sortable field's order: every slot's order code, and the slots sorted by it.

A :class:`SortOrder` keeps

- ``code`` (int64 per slot): the slot's order code (:mod:`keys`), ``NULL`` for a free slot;
- the *merged part*: ``main`` (uint32 slots) sorted by (code, id code), ``mcode`` (int64, the
  codes along ``main``), and ``blocks``, a BitMap of the slots of each ``block`` positions of
  ``main``, so that a page can skip whole blocks by counting;
- the *buffer of recent changes*: ``pending`` (live slots whose place in ``main`` is missing or
  out of date) and ``stale`` (slots whose entry in ``main`` is out of date: changed or freed).
  Queries take ``main`` without ``stale`` and merge ``pending`` in (see page.py);
- ``vals``: the current value of each slot holding a dictionary-coded value, and ``shadow``:
  the value a stale slot held when it was merged, so that binary searches over ``main`` compare
  the values ``main`` was sorted by.

:meth:`merge` folds the buffer in with numpy (O(n) memory moves, O(p log n) for p pending; a
pending slot in a long run of equal codes is placed by id code with the run's id codes gathered
once), keeping the blocks before the first changed position, when the buffer reaches the
front's limit (``RoomStore.fold_limit``); no single change ever re-sorts the field.

Mutation order (the front, RoomStore, follows it): :meth:`set` for every live slot's value
change, :meth:`free` once a slot is removed; never write ``code`` or ``main`` directly.
"""

from __future__ import annotations

import itertools
from array import array
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import numpy as np
from pyroaring import BitMap

from service.core.ejson import Date, recent_ms
from service.core.store.codes import Coder, Key
from service.core.store.keys import DATE0, NULL, date_ms, direct_code, rank_key

__all__ = ["SortOrder", "to_bitmap"]

Slots = np.ndarray[Any, np.dtype[np.uint32]]
Codes = np.ndarray[Any, np.dtype[np.int64]]


def to_bitmap(slots: np.ndarray[Any, Any]) -> BitMap:
    """A BitMap of a numpy array of slots. Sorted first (timsort: linear when they already
    are): pyroaring builds from sorted input several times faster than from scattered slots,
    and the array.array path is its fast one."""
    ordered = np.sort(np.asarray(slots, dtype=np.uint32), kind="stable")
    return BitMap(array("I", ordered.tobytes()))


#: Codes of ints met lately (counts and durations repeat): spares their float bits' arithmetic.
_INT_CODES: dict[int, int] = {}
_INT_KEPT = 1 << 16

#: A run of equal codes at most this long is searched by id code in Python, a longer one with
#: numpy (its id codes gathered once for every pending slot that falls in it).
_SHORT_RUN = 64


def _place_ties(
    main: Slots, ids: Codes, at: np.ndarray[Any, Any], end: np.ndarray[Any, Any], pid: Codes
) -> None:
    """Where each pending slot goes inside its run of equal codes ``main[at:end]`` (sorted by
    id code): ``at`` moved past the ids below ``pid``. O(total length of the long runs hit)
    numpy work, plus O(log run) Python steps per slot in a short run."""
    ties = np.flatnonzero(end > at)
    if not len(ties):
        return
    long_ = ties[(end[ties] - at[ties]) > _SHORT_RUN]
    if len(long_):
        starts = at[long_]
        cuts = np.flatnonzero(starts[1:] != starts[:-1]) + 1
        for group in np.split(long_, cuts.tolist()):
            a, b = int(at[group[0]]), int(end[group[0]])
            run_ids = ids[main[a:b]]
            at[group] = a + np.searchsorted(run_ids, pid[group], "left")
    short = ties[(end[ties] - at[ties]) <= _SHORT_RUN]
    if len(short):
        idkey = ids.__getitem__
        for i in short.tolist():
            at[i] = bisect_left(main, pid[i], int(at[i]), int(end[i]), key=idkey)


class SortOrder:
    """Slots in (code, id code) order for one field; see the module docstring."""

    __slots__ = (
        "_run_bitmaps",
        "_runs",
        "_runs_of",
        "block",
        "blocks",
        "code",
        "coder",
        "dense",
        "fold_at",
        "ids",
        "main",
        "mcode",
        "merged",
        "name",
        "pending",
        "shadow",
        "stale",
        "vals",
    )

    def __init__(
        self, name: str, ids: SortOrder | None, *, dense: bool, block: int, fold_at: int
    ) -> None:
        self.name = name
        self.ids = ids  # the _id order, whose codes break ties (None: this is the _id order)
        self.block = block
        self.fold_at = fold_at
        self.dense = dense  # vals as a list (most slots dictionary-coded) or a dict
        self.code: Codes = np.empty(0, dtype=np.int64)
        self.main: Slots = np.empty(0, dtype=np.uint32)
        self.mcode: Codes = np.empty(0, dtype=np.int64)
        self.blocks: list[BitMap] = []
        self.merged = BitMap()  # the slots in main
        self.pending = BitMap()
        self.stale = BitMap()
        self.vals: list[Any] | dict[int, Any] = [] if dense else {}
        self.shadow: dict[int, Any] = {}
        self.coder = Coder(self)
        self._runs_of: Slots | None = None  # the main the run index below was made from
        self._runs: tuple[Codes, np.ndarray[Any, np.dtype[np.int64]]] | None = None
        self._run_bitmaps: dict[int, BitMap] = {}

    # -- values -----------------------------------------------------------------------------
    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` slots. O(capacity)."""
        old = len(self.code)
        if capacity <= old:
            return
        code = np.full(capacity, NULL, dtype=np.int64)
        code[:old] = self.code
        self.code = code
        if isinstance(self.vals, list):
            self.vals.extend([None] * (capacity - old))

    def value(self, slot: int) -> Any:
        """The slot's dictionary-coded value (None when its value is direct-coded)."""
        vals = self.vals
        return vals[slot] if isinstance(vals, list) else vals.get(slot)

    def merged_key(self, slot: int) -> Key:
        """The key ``slot`` had when merged (only for slots in main with dictionary codes)."""
        slot = int(slot)
        if slot in self.shadow:
            return rank_key(self.shadow[slot])
        return rank_key(self.value(slot))

    @property
    def raw_value(self) -> Callable[[Any], Any]:
        """The slot's stored value as a C callable (``vals.__getitem__`` or ``.get``)."""
        vals = self.vals
        return vals.__getitem__ if isinstance(vals, list) else vals.get

    def merged_keys(self) -> Callable[[Any], Key]:
        """:meth:`merged_key` as one closure for a binary search over ``main`` (its slots may
        be numpy integers): a single Python frame a step, strings keyed without a call."""
        vals, shadow = self.vals, self.shadow
        get = vals.__getitem__ if isinstance(vals, list) else vals.get

        def key(slot: Any) -> Key:
            value = shadow[slot] if shadow and slot in shadow else get(slot)
            return (2, value) if type(value) is str else rank_key(value)

        return key

    def _store(self, slot: int, value: Any) -> None:
        vals = self.vals
        if isinstance(vals, list):
            vals[slot] = value
        elif value is None:
            vals.pop(slot, None)
        else:
            vals[slot] = value

    def set(self, slot: int, value: Any, fresh: bool) -> bool:
        """Give ``slot`` the value ``value`` (``fresh``: a slot just taken). True when its code
        changed. O(1) for direct-coded values, O(log n) comparisons for dictionary ones."""
        code = direct_code(value)
        dict_value = None if code is not None else value
        if code is None:
            if not fresh:
                held = self.value(slot)
                if type(held) is type(value) and held == value:
                    return False  # the same value: the same code
            code = self.coder.code(value)
        if fresh:
            self.code[slot] = code
            self._store(slot, dict_value)
            self.pending.add(slot)
            return True
        if self.code[slot] == code:
            if dict_value is not None:
                self._store(slot, dict_value)  # an equal value (same key): nothing moves
            return False
        self._unplace(slot)
        self.code[slot] = code
        self._store(slot, dict_value)
        self.pending.add(slot)
        return True

    def set_many(
        self, slots: list[int], values: list[Any], fresh: bool
    ) -> tuple[Slots, Codes, Codes]:
        """:meth:`set` for many distinct slots at once (``fresh``: all just taken); returns the
        slots whose code changed with their old and new codes. One Python step a slot for the
        code (a dictionary lookup for a recent date), numpy and bitmap work for the rest;
        O(log n) comparisons a new dictionary-coded value."""
        n = len(slots)
        at = np.fromiter(slots, dtype=np.int64, count=n)
        old = self.code[at]
        held_codes: list[int] = [NULL] * n if fresh else old.tolist()
        new: list[int] = []
        append = new.append
        ms_of = recent_ms.get
        int_codes = _INT_CODES.get
        held = self.raw_value
        coder = self.coder
        dict_values: list[tuple[int, Any]] = []
        for slot, value, was in zip(slots, values, held_codes, strict=True):
            kind = type(value)
            if kind is Date:
                ms = ms_of(value)
                append(DATE0 + (ms if ms is not None else date_ms(value)))
                continue
            if value is None:
                append(NULL)
                continue
            if kind is int:
                code = int_codes(value)
                if code is not None:
                    append(code)
                    continue
            code = direct_code(value)
            if code is None:
                if not fresh:
                    h = held(slot)
                    if type(h) is kind and h == value:
                        append(was)
                        continue
                code = coder.code(value)
                dict_values.append((slot, value))
            elif kind is int and len(_INT_CODES) < _INT_KEPT:
                _INT_CODES[value] = code
            append(code)
        codes = np.array(new, dtype=np.int64)
        changed = np.ones(n, dtype=np.bool_) if fresh else codes != old
        moved = at[changed]
        if not len(moved):
            return moved.astype(np.uint32), old[changed], codes[changed]
        moved_bm = BitMap(array("I", moved.astype(np.uint32).tobytes()))
        if not fresh:
            going = (moved_bm & self.merged) - self.stale
            if going:
                self.stale |= going
                vals = self.vals
                get = self.raw_value
                shadow = self.shadow
                if isinstance(vals, list) or vals:
                    for slot in going:
                        was_value = get(slot)
                        if was_value is not None:
                            shadow[slot] = was_value
        self.code[moved] = codes[changed]
        # Values: a moved slot's dictionary value, or none (direct); an unmoved slot's equal
        # value stays (the same key).
        vals = self.vals
        keep = dict(dict_values)
        if isinstance(vals, list):
            for slot in moved.tolist():
                vals[slot] = keep.get(slot)
        else:
            for slot in moved.tolist():
                value = keep.get(slot)
                if value is None:
                    vals.pop(slot, None)
                else:
                    vals[slot] = value
        self.pending |= moved_bm
        return moved.astype(np.uint32), old[changed], codes[changed]

    def _unplace(self, slot: int) -> None:
        if slot in self.merged and slot not in self.stale:
            self.stale.add(slot)
            old = self.value(slot)
            if old is not None:
                self.shadow[slot] = old

    def free(self, slot: int) -> None:
        """Forget a removed slot. O(1)."""
        self._unplace(slot)
        self.pending.discard(slot)
        self.code[slot] = NULL
        self._store(slot, None)

    @property
    def buffered(self) -> int:
        return len(self.pending) + len(self.stale)

    # -- merging ----------------------------------------------------------------------------
    def id_codes(self) -> Codes:
        return self.code if self.ids is None else self.ids.code

    def build(
        self,
        main: Slots,
        merged: BitMap | None = None,
        mcode: Codes | None = None,
        unchanged: int = 0,
    ) -> None:
        """Take ``main`` (every live slot, sorted by (code, id code)) as the merged part;
        ``merged``, when given, is its slots as a BitMap, ``mcode`` its codes, and the first
        ``unchanged`` positions hold what they held before (their blocks are kept)."""
        self.main = main
        self.mcode = self.code[main] if mcode is None else mcode
        self.merged = to_bitmap(main) if merged is None else merged
        self._blocks(unchanged)
        self.pending = BitMap()
        self.stale = BitMap()
        self.shadow = {}
        self.coder.clear_recent()
        self.runs()  # O(n) here, with the merge, rather than in the next query

    #: A field with at most this many distinct codes gets a run index (see runs()).
    FEW_RUNS = 64

    def runs(self) -> tuple[Codes, np.ndarray[Any, np.dtype[np.int64]]] | None:
        """For a field of few distinct codes: (the codes, the main position where each run of
        equal codes starts, plus len(main) at the end); None for a field of many. Made from
        main when first asked after it changed. O(n) then, O(1) after."""
        if self._runs_of is not self.main:
            self._runs_of = self.main
            self._run_bitmaps = {}
            mcode = self.mcode
            self._runs = None
            if len(mcode):
                starts = np.flatnonzero(mcode[1:] != mcode[:-1]) + 1
                if len(starts) < self.FEW_RUNS:
                    starts = np.concatenate(([0], starts, [len(mcode)])).astype(np.int64)
                    self._runs = (mcode[starts[:-1]], starts)
        return self._runs

    def run_bitmap(self, i: int) -> BitMap:
        """The merged slots of the i-th run of runs() (stale ones included), made once per
        main. Read-only: shared by every query until the next merge."""
        runs = self.runs()
        assert runs is not None
        found = self._run_bitmaps.get(i)
        if found is None:
            starts = runs[1]
            found = self._run_bitmaps[i] = to_bitmap(self.main[starts[i] : starts[i + 1]])
        return found

    def _blocks(self, unchanged: int = 0) -> None:
        """The block bitmaps, those wholly within the first ``unchanged`` positions kept."""
        b = self.block
        main = self.main
        keep = min(unchanged // b, len(self.blocks))
        self.blocks[keep:] = [to_bitmap(main[i : i + b]) for i in range(keep * b, len(main), b)]

    def merge(self) -> None:
        """Fold the buffer into main: O(n) numpy moves (no Python work per slot but for short
        runs of equal codes), and the blocks from the first changed position on rebuilt."""
        if not self.pending and not self.stale:
            return
        main, mcode = self.main, self.mcode
        first = len(main)  # positions before this one keep their slot
        if self.stale:
            drop = np.zeros(len(self.code), dtype=np.bool_)
            drop[np.frombuffer(self.stale.to_array(), dtype=np.uint32)] = True
            gone = np.flatnonzero(drop[main])
            if len(gone):
                first = int(gone[0])
                main, mcode = np.delete(main, gone), np.delete(mcode, gone)
        if self.pending:
            added = np.frombuffer(self.pending.to_array(), dtype=np.uint32)
            ids = self.id_codes()
            pcode = self.code[added]
            pid = ids[added]
            by = np.lexsort((pid, pcode))
            added, pcode, pid = added[by], pcode[by], pid[by]
            at = np.searchsorted(mcode, pcode, "left")
            end = np.searchsorted(mcode, pcode, "right")
            _place_ties(main, ids, at, end, pid)
            first = min(first, int(at[0]))
            main = np.insert(main, at, added)
            mcode = np.insert(mcode, at, pcode)
        merged = (self.merged - self.stale) | self.pending
        self.build(np.ascontiguousarray(main, dtype=np.uint32), merged, mcode, first)

    def remap(self, lo: int, hi: int, old: Codes, new: Codes) -> None:
        """Respread codes: every code c in [lo, hi] (c in ``old``) becomes the matching ``new``
        one, in ``mcode`` and for every live slot. O(window + pending)."""
        mcode = self.mcode
        a = int(np.searchsorted(mcode, lo, "left"))
        b = int(np.searchsorted(mcode, hi, "right"))
        if b > a:
            mcode[a:b] = new[np.searchsorted(old, mcode[a:b])]
        cand = np.unique(
            np.concatenate(
                [self.main[a:b], np.frombuffer(self.pending.to_array(), dtype=np.uint32)]
            )
        )
        if len(cand):
            codes = self.code[cand]
            inside = (codes >= lo) & (codes <= hi)
            hit = cand[inside]
            self.code[hit] = new[np.searchsorted(old, codes[inside])]

    # -- checks -----------------------------------------------------------------------------
    def check(self, live: BitMap) -> None:
        """Every invariant, against a brute-force rebuild. O(n log n)."""
        name = self.name
        assert self.merged == to_bitmap(self.main), f"{name}: merged != main"
        assert len(self.merged) == len(self.main), f"{name}: main holds a slot twice"
        keep = ~np.isin(self.main, np.frombuffer(self.stale.to_array(), dtype=np.uint32))
        assert np.array_equal(self.code[self.main[keep]], self.mcode[keep]), (
            f"{name}: a merged slot's code changed without it being stale"
        )
        # Sorted by (code, id code) where up to date: a stale slot's id code may have changed
        # (a freed slot's is NULL), and the merge drops stale slots before placing any.
        ids = self.id_codes()
        fresh_main = self.main[keep]
        keys = list(zip(self.mcode[keep].tolist(), ids[fresh_main].tolist(), strict=True))
        if self.ids is None:
            keys = [(c, c) for c in self.mcode[keep].tolist()]
        assert all(a <= b for a, b in itertools.pairwise(keys)), f"{name}: main unsorted"
        assert self.pending <= live, f"{name}: a pending slot is not live"
        assert live - self.pending <= self.merged - self.stale, f"{name}: a live slot is lost"
        assert not (self.pending & (self.merged - self.stale)), f"{name}: pending yet placed"
        b = self.block
        for i, bm in enumerate(self.blocks):
            assert bm == to_bitmap(self.main[i * b : (i + 1) * b]), f"{name}: block {i} stale"
        # Codes order as the values: equal values share codes, greater values greater codes.
        pairs: dict[Key, int] = {}
        for slot in live:
            value = self.value(slot)
            code = int(self.code[slot])
            key = (0, code) if value is None else rank_key(value)
            if value is not None:
                assert direct_code(value) is None, f"{name}: a direct value kept in vals"
            assert pairs.setdefault(key, code) == code, f"{name}: equal values, two codes"
        dict_keys = sorted(k for k in pairs if k[0] != 0)
        codes = [pairs[k] for k in dict_keys]
        assert codes == sorted(codes), f"{name}: codes out of value order"
        self.coder.check()
