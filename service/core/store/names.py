"""The name index: ``roomName`` as a case-insensitive substring of ``name``, exact from bitmaps.

Every string name is lower-cased; its 3-grams and 4-grams map to BitMaps of slots (``tris``,
``quads``), and ``reps`` maps a 3-gram to the slots whose lower-cased name holds it at two or
more places. For a lower-cased search text t of

- 3 or 4 characters: one bitmap, exact;
- k + 4 characters (k >= 1): the intersection of the bitmaps of its 4-grams g_0 .. g_k. A slot
  in it lacks t only if one of t's *inner* 3-grams t[i+1 : i+4] (the overlap of g_i and
  g_{i+1}, i < k) occurs twice or more in its name: when each occurs once, g_i can sit only
  right before it and g_{i+1} only on it, so the 4-grams chain into t. Only those *suspects*
  (the intersection with ``reps`` of the inner 3-grams) are checked by text: the check grows
  with names repeating a 3-gram of the search, never with how common the search is;
- 1 or 2 characters: the union of the 3-grams holding it, and the short names holding it.

``texts`` keeps the lower-cased name of every slot a search may check by text: the short names
(under 3 characters) and the names repeating a 3-gram; other names are not kept (the front
passes the old name to :meth:`NameIndex.discard`, read back from the stored room).

Invariant (:meth:`NameIndex.check`): a slot is in ``named`` iff its name is a string, in
``short`` iff that name lower-cased has fewer than 3 characters, in the bitmap of exactly the
grams of its lower-cased name and in ``reps`` of exactly its repeated 3-grams; ``texts`` holds
exactly the short and repeating names. No bitmap is empty.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import Any

import numpy as np
from pyroaring import BitMap

from service.core.store.grams import grouped

__all__ = ["NameIndex", "Search"]

_PACKED_LEN = 64  # names up to this long (in characters up to U+FFFF) get n-grams in numpy

#: A search: filters that must all hold (each "any of these bitmaps"), the suspects to check
#: by text (None: the filters are exact), and the lower-cased text.
Search = tuple[list[list[BitMap]], BitMap | None, str]


def _grams(text: str, n: int) -> set[str]:
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def _repeated(text: str) -> set[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for i in range(len(text) - 2):
        g = text[i : i + 3]
        (twice if g in seen else seen).add(g)
    return twice


def _put(index: dict[str, BitMap], keys: Iterable[str], slot: int) -> None:
    for g in keys:
        bm = index.get(g)
        if bm is None:
            index[g] = BitMap((slot,))
        else:
            bm.add(slot)


def _take(index: dict[str, BitMap], keys: Iterable[str], slot: int) -> None:
    for g in keys:
        bm = index[g]
        bm.discard(slot)
        if not bm:
            del index[g]


class NameIndex:
    """n-gram bitmaps over lower-cased names; see the module docstring."""

    __slots__ = ("named", "quads", "reps", "short", "texts", "tris")

    def __init__(self) -> None:
        self.tris: dict[str, BitMap] = {}
        self.quads: dict[str, BitMap] = {}
        self.reps: dict[str, BitMap] = {}
        self.short = BitMap()
        self.named = BitMap()
        self.texts: dict[int, str] = {}

    def add(self, slot: int, name: Any) -> None:
        """Index a slot's name (anything but a string is no name). O(len(name))."""
        if not isinstance(name, str):
            return
        self.named.add(slot)
        low = name.lower()
        if len(low) < 3:
            self.short.add(slot)
            self.texts[slot] = low
            return
        _put(self.tris, _grams(low, 3), slot)
        _put(self.quads, _grams(low, 4), slot)
        twice = _repeated(low)
        if twice:
            _put(self.reps, twice, slot)
            self.texts[slot] = low

    def discard(self, slot: int, name: Any) -> None:
        """Forget a slot's name: ``name`` is the one it was indexed with. O(len(name))."""
        if slot not in self.named:
            return
        self.named.discard(slot)
        low = str(name).lower()
        self.texts.pop(slot, None)
        if len(low) < 3:
            self.short.discard(slot)
            return
        _take(self.tris, _grams(low, 3), slot)
        _take(self.quads, _grams(low, 4), slot)
        _take(self.reps, _repeated(low), slot)

    def build(self, names: list[Any], slots: list[int]) -> None:
        """Index ``names`` (of distinct ``slots``) into an empty index: the n-grams of most
        names grouped in numpy (grams.py), the rest (long names, characters beyond U+FFFF) in
        Python. O(total length) plus a sort per chunk of names."""
        order = np.argsort(np.asarray(slots, dtype=np.int64), kind="stable").tolist()
        named = array("I")
        short = array("I")
        packed: list[str] = []
        packed_slots = array("I")
        rest = NameIndex()
        for i in order:
            name = names[i]
            if not isinstance(name, str):
                continue
            slot = slots[i]
            named.append(slot)
            low = name.lower()
            if len(low) < 3:
                short.append(slot)
                self.texts[slot] = low
            elif len(low) <= _PACKED_LEN and (low.isascii() or max(map(ord, low)) <= 0xFFFF):
                packed.append(low)
                packed_slots.append(slot)
            else:
                rest.add(slot, low)
        ps = np.frombuffer(packed_slots, dtype=np.uint32)
        found = grouped(packed, ps)
        self.tris = _merge(found.tris, rest.tris)
        self.quads = _merge(found.quads, rest.quads)
        self.reps = _merge(found.reps, rest.reps)
        if found.reps:
            twice = np.frombuffer(BitMap.union(*found.reps.values()).to_array(), np.uint32)
            at = np.searchsorted(ps, twice).tolist()
            self.texts.update(zip(twice.tolist(), map(packed.__getitem__, at), strict=True))
        self.texts.update(rest.texts)
        self.named = BitMap(named)
        self.short = BitMap(short)

    def matching(self, text: str) -> Search:
        """The filters for names holding ``text`` (case-insensitive); see the module docstring.
        O(len(text)) dictionary lookups (O(3-grams) for 1 or 2 characters)."""
        ql = text.lower()
        if not ql:
            return [[self.named]], None, ql
        if len(ql) == 3:
            return [[self.tris[ql]] if ql in self.tris else []], None, ql
        if len(ql) > 3:
            quads = self.quads
            filters = [[quads[g]] if g in quads else [] for g in _grams(ql, 4)]
            inner = [self.reps[g] for g in _grams(ql[1:-1], 3) if g in self.reps]
            if not inner:
                return filters, None, ql
            return filters, inner[0] if len(inner) == 1 else BitMap.union(*inner), ql
        parts = [bm for g, bm in self.tris.items() if ql in g]
        parts.append(self.holding(self.short, ql))
        return [parts], None, ql

    def settle(self, m: BitMap, suspects: BitMap | None, text: str) -> BitMap:
        """``m`` (slots passing a search's filters, and others) without the suspects whose
        name lacks ``text``. O(|m & suspects|) text checks; a new BitMap or ``m`` itself."""
        if suspects is None:
            return m
        doubt = m & suspects
        if not doubt:
            return m
        return (m - doubt) | self.holding(doubt, text)

    def holding(self, slots: BitMap, text: str) -> BitMap:
        """The ``slots`` (each in ``texts``) whose lower-cased name holds ``text``."""
        texts = self.texts
        return BitMap([s for s in slots if text in texts[s]])

    def check(self, names: dict[int, Any]) -> None:
        """Invariants against a rebuild from ``names`` (slot -> name of every live slot)."""
        want = NameIndex()
        for slot, name in names.items():
            want.add(slot, name)
        for field in self.__slots__:
            got = getattr(self, field)
            assert got == getattr(want, field), f"names: {field} differs"
            if isinstance(got, dict) and field != "texts":
                assert all(got.values()), f"names: an empty bitmap in {field}"


def _merge(into: dict[str, BitMap], more: dict[str, BitMap]) -> dict[str, BitMap]:
    for gram, slots in more.items():
        bm = into.get(gram)
        if bm is None:
            into[gram] = slots
        else:
            bm |= slots
    return into
