"""Extended JSON decoding: relaxed, canonical, the broker's millisecond dates, and bad values."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.ejson import Date, EJsonError, date_from_iso, date_from_ms, decode


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"$date": "2021-07-09T20:12:19.795Z"}, "2021-07-09T20:12:19.795Z"),
        ({"$date": "2021-07-09T22:12:19.795+02:00"}, "2021-07-09T20:12:19.795Z"),
        ({"$date": "2021-07-09T20:12:19Z"}, "2021-07-09T20:12:19.000Z"),
        ({"$date": {"$numberLong": "1625861539795"}}, "2021-07-09T20:12:19.795Z"),
        ({"$date": 1625861539795}, "2021-07-09T20:12:19.795Z"),
        ({"$date": {"$numberLong": "-1000"}}, "1969-12-31T23:59:59.000Z"),
        ({"$numberLong": "9007199254740993"}, 9007199254740993),
        ({"$numberInt": "-7"}, -7),
        ({"$numberDouble": "1.5"}, 1.5),
        ({"$numberDouble": "NaN"}, None),
        ({"$oid": "5F0A1B2C3D4E5F6A7B8C9D0E"}, "5f0a1b2c3d4e5f6a7b8c9d0e"),
        ({"$regex": "x"}, {"$regex": "x"}),  # not a wrapper we know: kept
    ],
)
def test_wrappers(value: Any, expected: Any) -> None:
    assert decode(value) == expected


def test_dates_are_typed_and_serialize_as_strings() -> None:
    doc = decode({"a": [{"ts": {"$date": 0}}], "name": "x"})
    assert isinstance(doc["a"][0]["ts"], Date)
    assert not isinstance(doc["name"], Date)
    assert orjson.dumps(doc) == b'{"a":[{"ts":"1970-01-01T00:00:00.000Z"}],"name":"x"}'


@pytest.mark.parametrize(
    "value",
    [
        {"$date": "yesterday"},
        {"$date": {"$numberLong": "x"}},
        {"$date": True},
        {"$date": 10**17},
        {"$numberLong": 5},
        {"$numberInt": " 5"},
        {"$numberDouble": "abc"},
        {"$oid": "123"},
        {"$binary": 5},
    ],
)
def test_bad_wrappers(value: Any) -> None:
    with pytest.raises(EJsonError):
        decode({"x": [value]})


def test_iso_forms() -> None:
    assert date_from_iso("2021-07-09") == "2021-07-09T00:00:00.000Z"
    assert date_from_iso("2021-07-09T20:12:19.795123") == "2021-07-09T20:12:19.795Z"
    for bad in ("", "2021-13-01", "2021-07-09T25:00:00Z", "x" * 100):
        with pytest.raises(EJsonError):
            date_from_iso(bad)


@given(st.integers(min_value=-62135596800000, max_value=253402300799999))
def test_date_strings_order_like_time(ms: int) -> None:
    a, b = date_from_ms(ms), date_from_ms(ms + 1) if ms < 253402300799999 else date_from_ms(ms)
    assert a <= b
    assert date_from_iso(a) == a


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_decode_never_fails_unexpectedly(value: Any) -> None:
    with contextlib.suppress(EJsonError):
        decode(value)
