"""The name index and its numpy bulk build, against a plain dict of names (seeded stress)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from pyroaring import BitMap

from service.core.store import grams
from service.core.store.grams import grouped
from service.core.store.names import NameIndex

#: Characters that make repeats, case folds that change length, NULs, beyond U+FFFF.
_ALPHABET = "aab1200 .-Xİß\x00é😀"


def _name(rng: random.Random) -> Any:
    kind = rng.random()
    if kind < 0.05:
        return rng.choice([None, 7, ["ab"]])
    if kind < 0.1:
        return "x" * rng.randrange(60, 80) + rng.choice(["abc", "aXb"])  # long names
    size = rng.choice([0, 1, 2, 3, 4, 5, 8, 12])
    return "".join(rng.choice(_ALPHABET[: rng.choice([6, 10, 16])]) for _ in range(size))


def _search(index: NameIndex, text: str) -> BitMap:
    """What plan.py does with a search alone."""
    filters, suspects, low = index.matching(text)
    m: BitMap | None = None
    for parts in filters:
        found = BitMap.union(*parts) if parts else BitMap()
        m = found if m is None else m & found
    assert m is not None
    return index.settle(m, suspects, low)


def _texts(rng: random.Random, names: dict[int, Any]) -> list[str]:
    held = [n for n in names.values() if isinstance(n, str) and n]
    out = ["", "a", "0", "00", "aab", "b12", "120a", "AAB1", "a b", "xxxxabc", "😀"]
    for _ in range(12):
        if held:
            name = rng.choice(held)
            start = rng.randrange(len(name))
            out.append(name[start : start + rng.randint(1, 9)].upper())
        out.append("".join(rng.choice("ab120 ") for _ in range(rng.randint(3, 7))))
    return out


def _same(index: NameIndex, names: dict[int, Any], rng: random.Random) -> None:
    index.check(names)
    for text in _texts(rng, names):
        want = BitMap(
            s for s, n in names.items() if isinstance(n, str) and text.lower() in n.lower()
        )
        assert _search(index, text) == want, text


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stress_against_a_dict(seed: int) -> None:
    rng = random.Random(seed)
    start = {s: _name(rng) for s in range(0, 300, 2)}
    index = NameIndex()
    index.build(list(start.values()), list(start))
    names = dict(start)
    _same(index, names, rng)
    for _step in range(400):
        slot = rng.randrange(320)
        if rng.random() < 0.7:
            name = _name(rng)
            if slot in names:
                index.discard(slot, names[slot])
            index.add(slot, name)
            names[slot] = name
        elif slot in names:
            index.discard(slot, names.pop(slot))
        index.check(names)
        if _step % 40 == 0:
            _same(index, names, rng)
    _same(index, names, rng)


def test_a_long_inner_repeat_is_checked() -> None:
    """Both 4-grams of "abcab" are in "xabcaxbcab", nowhere one place apart: a suspect."""
    index = NameIndex()
    index.add(1, "xabcaxbcab")
    index.add(2, "zabcabz")
    assert _search(index, "ABCAB") == BitMap([2])
    assert index.reps == {"bca": BitMap([1])}  # its only inner 3-gram, held twice
    assert index.texts == {1: "xabcaxbcab"}


@pytest.mark.parametrize("chunk", [3, 1 << 17])
def test_numpy_grams_match_python(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Chunked and whole, with and without a real NUL, and past the packable alphabet (the
    texts are lower-cased already, as the build passes them)."""
    monkeypatch.setattr(grams, "_CHUNK", chunk)
    rng = random.Random(4)
    texts = ["abcabc", "aaaa", "zz\x00zz\x00", "0000000", "é é é"]
    texts += ["".join(rng.choice("abc01 ") for _ in range(rng.randint(3, 20))) for _ in range(50)]
    wide = [chr(0x4E00 + i) * 3 for i in range(2100)]  # 2,100 characters: in Python
    for batch in (texts, texts + wide):
        slots = np.arange(0, 2 * len(batch), 2, dtype=np.uint32)
        got = grouped(batch, slots)
        want = NameIndex()
        for slot, text in zip(slots.tolist(), batch, strict=True):
            want.add(slot, text)
        assert (got.tris, got.quads, got.reps) == (want.tris, want.quads, want.reps)
