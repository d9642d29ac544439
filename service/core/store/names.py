"""The name index: ``roomName`` as a case-insensitive substring of ``name``, by n-gram bitmaps.

Every string name is lower-cased; its 3-grams and 4-grams map to BitMaps of slots. A search of
3 or 4 characters is exact from one bitmap; a longer one intersects the bitmaps of all its
4-grams (a room holding the text holds every one of them) and checks only the survivors; a
shorter one unions the 3-grams containing it with the short names holding it.

Invariant (see :meth:`NameIndex.check`): a slot is in ``named`` iff its name is a string, in
``short`` iff that name lower-cased has fewer than 3 characters, and in the bitmap of exactly
the grams of its lower-cased name; ``lows[slot]`` is that lower-cased name.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import compress, repeat
from operator import contains
from typing import Any

import numpy as np
from pyroaring import BitMap

from service.core.store.orders import to_bitmap

__all__ = ["NameIndex"]

_PACKED_LEN = 64  # names up to this long (in characters up to U+FFFF) get n-grams in numpy
_CHUNK = 1 << 16  # names per numpy pass (bounds the memory of a bulk build's n-grams)


def _grams(text: str, n: int) -> set[str]:
    return {text[i : i + n] for i in range(len(text) - n + 1)}


class NameIndex:
    """n-gram bitmaps over lower-cased names; see the module docstring."""

    __slots__ = ("lows", "named", "quads", "short", "tris")

    def __init__(self) -> None:
        self.tris: dict[str, BitMap] = {}
        self.quads: dict[str, BitMap] = {}
        self.short = BitMap()
        self.named = BitMap()
        self.lows: dict[int, str] = {}

    def add(self, slot: int, name: Any) -> None:
        """Index a slot's name (anything but a string is no name). O(len(name))."""
        if not isinstance(name, str):
            return
        self.named.add(slot)
        low = name.lower()
        self.lows[slot] = low
        if len(low) < 3:
            self.short.add(slot)
            return
        for grams, found in ((self.tris, _grams(low, 3)), (self.quads, _grams(low, 4))):
            for g in found:
                bm = grams.get(g)
                if bm is None:
                    grams[g] = BitMap((slot,))
                else:
                    bm.add(slot)

    def discard(self, slot: int) -> None:
        """Forget a slot's name. O(len(name))."""
        low = self.lows.pop(slot, None)
        if low is None:
            return
        self.named.discard(slot)
        self.short.discard(slot)
        for grams, found in ((self.tris, _grams(low, 3)), (self.quads, _grams(low, 4))):
            for g in found:
                bm = grams[g]
                bm.discard(slot)
                if not bm:
                    del grams[g]

    def build(self, names: list[Any], slots: list[int]) -> None:
        """Index ``names`` (of ``slots``) into an empty index: n-grams of most names grouped
        in numpy, the rest (long names, characters beyond U+FFFF) in Python."""
        tris: dict[str, array[int]] = {}
        quads: dict[str, array[int]] = {}
        named = array("I")
        short = array("I")
        packed: list[str] = []
        packed_slots = array("I")
        lows = self.lows
        for slot, name in zip(slots, names, strict=True):
            if not isinstance(name, str):
                continue
            named.append(slot)
            low = name.lower()
            lows[slot] = low
            if len(low) < 3:
                short.append(slot)
                continue
            if len(low) <= _PACKED_LEN and (low.isascii() or max(map(ord, low)) <= 0xFFFF):
                packed.append(low)
                packed_slots.append(slot)
                continue
            for grams, found in ((tris, _grams(low, 3)), (quads, _grams(low, 4))):
                for g in found:
                    lst = grams.get(g)
                    if lst is None:
                        grams[g] = array("I", (slot,))
                    else:
                        lst.append(slot)
        ps = np.frombuffer(packed_slots, dtype=np.uint32)
        self.tris = _merge(tris, _ngram_slots(packed, ps, 3))
        self.quads = _merge(quads, _ngram_slots(packed, ps, 4))
        self.named = BitMap(named)
        self.short = BitMap(short)

    def matching(self, text: str) -> tuple[list[list[BitMap]], str | None]:
        """Filters for names holding ``text`` (case-insensitive): a list of "any of these
        bitmaps" filters that must all hold, and the lower-cased text when the survivors need a
        check (:meth:`holding`), else None."""
        ql = text.lower()
        if not ql:
            return [[self.named]], None
        if len(ql) == 3:
            return [[self.tris[ql]] if ql in self.tris else []], None
        if len(ql) > 3:
            quads = self.quads
            filters = [[quads[g]] if g in quads else [] for g in _grams(ql, 4)]
            return filters, (ql if len(ql) > 4 else None)
        parts = [bm for g, bm in self.tris.items() if ql in g]
        parts.append(self.holding(self.short, ql))
        return [parts], None

    def holding(self, slots: BitMap, text: str) -> BitMap:
        """The named ``slots`` whose lower-cased name holds ``text``; C-level loops only."""
        picked = slots.to_array()
        lows: Iterator[str] = map(self.lows.__getitem__, picked)
        return BitMap(compress(picked, map(contains, lows, repeat(text))))

    def check(self, names: dict[int, Any]) -> None:
        """Invariants against a rebuild from ``names`` (slot -> name of every live slot)."""
        want = NameIndex()
        for slot, name in names.items():
            want.add(slot, name)
        assert self.named == want.named, "names: named differs"
        assert self.short == want.short, "names: short differs"
        assert self.lows == want.lows, "names: lower-cased names differ"
        assert self.tris == want.tris, "names: 3-grams differ"
        assert self.quads == want.quads, "names: 4-grams differ"


def _ngram_slots(texts: list[str], slots: np.ndarray[Any, Any], n: int) -> dict[str, BitMap]:
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
            found = to_bitmap(owners[a:b])
            bm = out.get(gram)
            if bm is None:
                out[gram] = found
            else:
                bm |= found
    return out


def _merge(acc: dict[str, array[int]], packed: dict[str, BitMap]) -> dict[str, BitMap]:
    for gram, slots in acc.items():
        bm = packed.get(gram)
        packed[gram] = BitMap(slots) if bm is None else bm | BitMap(slots)
    return packed
