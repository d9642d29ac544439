"""The bulk build's numpy helpers against plain Python references."""

from __future__ import annotations

import random
from array import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.store import bulk


def _reference_ranks(values: list[str]) -> list[int]:
    rank_of = {v: r for r, v in enumerate(sorted(set(values)))}
    return [rank_of[v] for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=40), st.booleans())
def test_string_ranks_are_code_point_ranks(values: list[str], distinct: bool) -> None:
    if distinct:  # the numpy path (mostly distinct values)
        values = list(dict.fromkeys(values))
    want = _reference_ranks(values)
    count, ranks = bulk._string_ranks(list(values))
    assert ranks.tolist() == want
    assert count == len(set(values))


@pytest.mark.parametrize(
    "values",
    [
        ["a", "a\x00", "", "\x00"],  # NULs: the dict path
        ["\ud800", "\ue000", "\ud7ff", "\U0001f600", "z"],  # surrogates sort as code points
        ["x" * 100, "x" * 99, "y"],  # long: the dict path
        ["é", "e", "f", "ë", "E"],
    ],
)
def test_string_ranks_edge_cases(values: list[str]) -> None:
    assert bulk._string_ranks(list(values))[1].tolist() == _reference_ranks(values)


@pytest.mark.parametrize("seed", range(20))
def test_sort_by_code_then_id_is_a_lexsort(seed: int) -> None:
    rnd = np.random.default_rng(seed)
    n = int(rnd.integers(1, 300))
    spread = int(rnd.choice([2, 10, 1 << 62]))
    codes = rnd.integers(-spread, spread, n, dtype=np.int64)
    id_rank = rnd.permutation(n).astype(np.int64)
    got = bulk.sort_by_code_then_id(codes, id_rank)
    assert got.tolist() == np.lexsort((id_rank, codes)).tolist()


@pytest.mark.parametrize("seed", range(20))
def test_postings_group_keys_by_slot(seed: int) -> None:
    rnd = random.Random(seed)
    rows_n = rnd.randrange(1, 80)
    slot_of_row = np.array([rnd.choice([-1, i]) for i in range(rows_n)], dtype=np.int64)
    keys: list[str] = []
    rows = array("I")
    want: dict[str, set[int]] = {}
    for row in range(rows_n):
        for key in rnd.sample("abcdefg", rnd.randrange(4)):
            keys.append(key)
            rows.append(row)
            if slot_of_row[row] >= 0:
                want.setdefault(key, set()).add(int(slot_of_row[row]))
    got = bulk._postings(keys, np.frombuffer(rows, dtype=np.uint32), slot_of_row)
    assert {k: set(bm) for k, bm in got.items()} == want
