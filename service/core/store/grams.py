"""The 3-grams and 4-grams of many short names at once, grouped in numpy (the bulk build).

Per chunk of names (lower-cased, 3 to 64 characters, each at most U+FFFF, slots ascending):
the characters are mapped to dense ids (the chunk's alphabet, b bits each), every gram packs
with its name's row in the chunk into one uint64 key (gram ids high, row low), and one
``np.sort`` of the keys groups them by gram, then by row. So each gram's slots come sorted (a
BitMap is built straight from them, no sort per gram), and a 3-gram a name holds twice shows as
two equal keys in a row: the repeats (``reps``). Gram strings are decoded for all groups at once.

Cost: O(L log L) for the L grams of a chunk (the sort), plus one BitMap per gram and chunk.
A chunk whose alphabet is too large to pack (over 2048 characters) is done in Python.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyroaring import BitMap

__all__ = ["Grams", "grouped"]

_CHUNK = 1 << 17  # names per numpy pass (bounds the memory of a bulk build's n-grams)
_MAX_BITS = 11  # character id bits: 4 * 11 + 17 row bits <= 64


@dataclass(slots=True)
class Grams:
    """gram -> slots, for 3-grams, 4-grams and the 3-grams a name holds twice or more."""

    tris: dict[str, BitMap] = field(default_factory=dict)
    quads: dict[str, BitMap] = field(default_factory=dict)
    reps: dict[str, BitMap] = field(default_factory=dict)


def _add(index: dict[str, BitMap], grams: list[str], groups: list[BitMap]) -> None:
    for gram, bm in zip(grams, groups, strict=True):
        held = index.get(gram)
        if held is None:
            index[gram] = bm
        else:
            held |= bm


def grouped(texts: list[str], slots: np.ndarray[Any, np.dtype[np.uint32]]) -> Grams:
    """The grams of ``texts`` (``slots`` alongside, ascending); see the module docstring."""
    out = Grams()
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start : start + _CHUNK]
        _chunk(chunk, slots[start : start + len(chunk)], out)
    return out


def _chunk(chunk: list[str], slots: np.ndarray[Any, Any], out: Grams) -> None:
    width = max(map(len, chunk))
    rows = len(chunk)
    utf = np.array(chunk, dtype=f"<U{width}").view(np.uint32).reshape(rows, width)
    lengths = np.fromiter(map(len, chunk), dtype=np.int64, count=rows)
    counts = np.bincount(utf.ravel())
    alphabet = np.flatnonzero(counts)
    bits = max(1, (len(alphabet) - 1).bit_length())
    if bits > _MAX_BITS:
        _python(chunk, slots, out)
        return
    # A real NUL (not padding) would be cut off by numpy's string decoding of the grams.
    nul = int(counts[0]) > int(rows * width - lengths.sum())
    lut = np.zeros(len(counts), dtype=np.uint64)
    lut[alphabet] = np.arange(len(alphabet), dtype=np.uint64)
    ids = lut[utf]
    row_bits = 64 - 4 * bits
    row_of = np.arange(rows, dtype=np.uint64)[:, None]
    for n, index in ((3, out.tris), (4, out.quads)):
        if width < n:
            continue
        span = width - n + 1
        key = ids[:, :span].copy()
        for k in range(1, n):
            key <<= np.uint64(bits)
            key |= ids[:, k : span + k]
        key <<= np.uint64(row_bits)
        key |= row_of
        valid = np.arange(span)[None, :] <= (lengths - n)[:, None]
        keys = np.sort(key[valid])
        grams, groups = _groups(keys, row_bits, slots)
        _add(index, _decode(grams, n, bits, alphabet, nul), groups)
        if n == 3:
            twice = keys[1:][keys[1:] == keys[:-1]]
            if len(twice):
                twice = np.unique(twice)
                grams, groups = _groups(twice, row_bits, slots)
                _add(out.reps, _decode(grams, n, bits, alphabet, nul), groups)


def _groups(
    keys: np.ndarray[Any, Any], row_bits: int, slots: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], list[BitMap]]:
    """(the distinct gram ids of sorted ``keys``, a BitMap of each one's slots)."""
    gram = keys >> np.uint64(row_bits)
    owner = slots[(keys & np.uint64((1 << row_bits) - 1)).astype(np.int64)]
    cuts = np.flatnonzero(gram[1:] != gram[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    ends = [*cuts.tolist(), len(keys)]
    raw = owner.astype(np.uint32).tobytes()
    groups = [
        BitMap(array("I", raw[4 * a : 4 * b])) for a, b in zip(starts.tolist(), ends, strict=True)
    ]
    return gram[starts], groups


def _decode(
    grams: np.ndarray[Any, Any], n: int, bits: int, alphabet: np.ndarray[Any, Any], nul: bool
) -> list[str]:
    mask = np.uint64((1 << bits) - 1)
    chars = np.empty((len(grams), n), dtype=np.uint32)
    for k in range(n):
        chars[:, k] = alphabet[((grams >> np.uint64(bits * (n - 1 - k))) & mask).astype(np.int64)]
    if nul:
        return ["".join(map(chr, row)) for row in chars.tolist()]
    decoded: list[str] = chars.view(f"<U{n}").ravel().tolist()
    return decoded


def _python(chunk: list[str], slots: np.ndarray[Any, Any], out: Grams) -> None:
    for low, slot in zip(chunk, slots.tolist(), strict=True):
        seen: set[str] = set()
        for i in range(len(low) - 2):
            g = low[i : i + 3]
            index = out.reps if g in seen else out.tris
            seen.add(g)
            _add(index, [g], [BitMap((slot,))])
        for g in {low[i : i + 4] for i in range(len(low) - 3)}:
            _add(out.quads, [g], [BitMap((slot,))])
