"""The compiled extraction kernel against its pure Python reference (bulk.extract_lines_py)."""

from __future__ import annotations

import importlib.util
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.store import bulk
from service.core.store.bulk import Chunk, LineError


def test_the_kernel_is_built() -> None:
    """make install compiles it; without it the load falls back to the slower Python path."""
    assert importlib.util.find_spec("service.core.store._extract") is not None


def _outcome(fn: Any, data: bytes) -> Chunk | tuple[int, str]:
    try:
        return fn(data, 7)  # type: ignore[no-any-return]
    except LineError as exc:
        return exc.line, exc.reason


def _same(data: bytes) -> None:
    want = _outcome(bulk.extract_lines_py, data)
    got = _outcome(bulk.extract_lines, data)
    if isinstance(want, tuple) or isinstance(got, tuple):
        assert got == want
        return
    assert (got.not_v, got.lines) == (want.not_v, want.lines)
    for name in bulk.Extracted.__slots__:
        assert getattr(got.extracted, name) == getattr(want.extracted, name), name


_DATES = [
    {"$date": "2021-07-09T20:12:19.795Z"},
    {"$date": "2024-02-29T00:00:00.000Z"},  # a leap day
    {"$date": "0001-01-01T00:00:00.000Z"},
    {"$date": "9999-12-31T23:59:59.999Z"},
    {"$date": "1969-12-31T23:59:59.999Z"},  # before the epoch
    {"$date": "2021-02-30T20:12:19.795Z"},  # no such day: the general decode rejects it
    {"$date": "2023-02-29T00:00:00.000Z"},
    {"$date": "2021-07-09T24:00:00.000Z"},
    {"$date": "2021-07-09T20:12:19Z"},  # not canonical: the general path
    {"$date": "2021-07-09T20:12:19.795+02:00"},
    {"$date": {"$numberLong": "1625861539795"}},
    {"$date": 1625861539795},
    {"$date": "2021-07-09T20:12:19.795Z", "x": 1},  # not a wrapper
]
_SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -0.0,
    1.5,
    -7,
    2**53,
    2**53 + 1,
    -(2**53) - 1,
    2**63 - 1,
    1e300,
    "",
    "inbound",
    "Zoë 90417",
    "$5",
    "a$b",
    '{"$date":"2021-07-09T20:12:19.795Z"}',  # a wrapper's text inside a string
    {"$numberInt": "3"},
    {"$oid": "5f1d7a3b2c1e4a0012345678"},
    {"a": 1},
    {"a": {"$date": "2021-07-09T20:12:19.795Z"}},
    [],
    ["x", "y", "x", 3, {"$date": "2021-07-09T20:12:19.795Z"}],
    *_DATES,
]
_FIELDS = (
    "ts",
    "name",
    "fname",
    "closedAt",
    "lm",
    "callDuration",
    "msgs",
    "queue",
    "direction",
    "tags",
    "open",
)


def _room(rnd: random.Random, i: int) -> dict[str, Any]:
    room: dict[str, Any] = {"_id": f"r{i % 13}", "t": rnd.choice(["v", "v", "v", "c"])}
    for field in rnd.sample(_FIELDS, rnd.randrange(len(_FIELDS))):
        room[field] = rnd.choice(_SCALARS)
    for top in ("servedBy", "v"):
        if rnd.random() < 0.6:
            room[top] = {
                "_id": rnd.choice(_SCALARS[12:16]),
                "username": rnd.choice(_SCALARS[10:16]),
            }
    return room


@pytest.mark.parametrize("seed", range(30))
def test_seeded_runs_match_the_reference(seed: int) -> None:
    rnd = random.Random(seed)
    lines = [orjson.dumps(_room(rnd, i)) for i in range(rnd.randrange(1, 60))]
    if rnd.random() < 0.3:
        lines.insert(rnd.randrange(len(lines) + 1), b"  ")
    if rnd.random() < 0.2:
        lines.append(b"")
    _same(b"\n".join(lines))


@pytest.mark.parametrize(
    "line",
    [
        b"{bad",
        b"[1, 2]",
        b'"text"',
        b'{"t": "v"}',
        b'{"_id": 5, "t": "v"}',
        b'{"_id": {"$date": "2021-07-09T20:12:19.795Z"}, "t": "v"}',
        b'{"_id": "a", "t": {"$date": "2021-07-09T20:12:19.795Z"}}',
        b'{"_id": "a", "t": "v", "ts": {"$date": "2021-02-30T20:12:19.795Z"}}',
        b'{"_id": "a", "t": "v", "ts": {"\\u0024date": "2021-07-09T20:12:19.795Z"}}',
        b'{"_id": "a", "t": "v", "ts": { "$date" : "2021-07-09T20:12:19.795Z" } }',
        b'{"_id": "a", "t": "v", "name": {"$date": "2021-07-09T20:12:19.795Z"}}',
        b'{"_id": "a", "t": "v", "name": "x", "_id": "b"}',
        b"",
    ],
)
def test_odd_lines_match_the_reference(line: bytes) -> None:
    good = b'{"_id": "g", "t": "v", "ts": {"$date": "2021-07-09T20:12:19.795Z"}}'
    _same(b"\n".join([good, line, good]))


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(_DATES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(_FIELDS), _json), min_size=1, max_size=6))
def test_any_rooms_match_the_reference(fields: list[dict[str, Any]]) -> None:
    rooms = [{"_id": f"r{i}", "t": "v", **f} for i, f in enumerate(fields)]
    _same(b"\n".join(orjson.dumps(room) for room in rooms))
