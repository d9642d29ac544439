"""Extended JSON decoding: relaxed, canonical, the broker's millisecond dates, and bad values."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core import ejson
from service.core.ejson import (
    Date,
    EJsonError,
    date_from_iso,
    date_from_ms,
    decode,
    may_hold_wrappers,
)


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


# -- the fast paths against slow references ----------------------------------------------------
# The references: the straightforward datetime-based formatting the fast one replaced, the
# general ISO parser, and a plain recursive walk.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference_date_from_ms(ms: int) -> Date:
    if not -62135596800000 <= ms <= 253402300799999:
        raise EJsonError(f"date out of range: {ms} ms")
    dt = _EPOCH + timedelta(milliseconds=ms)
    return Date(
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def reference_date_from_iso(text: str) -> Date:
    """date_from_iso without its fast path for the canonical form."""
    if not 10 <= len(text) <= 40:
        raise EJsonError(f"not an ISO-8601 date: {text!r}")
    return ejson._parse_iso(text)


def outcome(function: Callable[[Any], Any], value: Any) -> tuple[str, Any]:
    """What ``function(value)`` gives: its result with the exact type of every part, or the
    message of the EJsonError it raises."""
    try:
        return "ok", typed(function(value))
    except EJsonError as exc:
        return "error", str(exc)


def typed(value: Any) -> Any:
    if isinstance(value, dict):
        return type(value), {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return type(value), [typed(v) for v in value]
    return type(value), value


MIN_MS, MAX_MS = -62135596800000, 253402300799999
millis = st.one_of(
    st.sampled_from([MIN_MS - 1, MIN_MS, -1, 0, MAX_MS, MAX_MS + 1]),
    st.integers(MIN_MS, MAX_MS),
    st.integers(MIN_MS - 10**6, MIN_MS + 10**6),
    st.integers(MAX_MS - 10**6, MAX_MS + 10**6),
    st.integers(0, 2_000_000_000_000),
    st.integers(-(2**70), 2**70),
)


@given(millis)
def test_date_from_ms_matches_the_reference(ms: int) -> None:
    assert outcome(date_from_ms, ms) == outcome(reference_date_from_ms, ms)


# Canonical texts: real instants, and the same with one field's digits replaced by any digits
# (hour 24, month 13, February 30, year 0000...); below, also with one character changed.
instants = st.datetimes(timezones=st.just(UTC)).map(
    lambda dt: f"{dt.isoformat(timespec='milliseconds')[:23]}Z"
)
FIELDS = [(0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19), (20, 23)]
canonical_shaped = st.builds(
    lambda text, field, digits: text[: field[0]] + digits[: field[1] - field[0]] + text[field[1] :],
    instants,
    st.sampled_from(FIELDS),
    st.text("0123456789", min_size=4, max_size=4),
)
mutated = st.builds(
    lambda text, at, char: text[:at] + char + text[at + 1 :],
    canonical_shaped,
    st.integers(0, 23),
    st.sampled_from([*"09:-.TZz+ ", "\u0663", "\uff11"]),
)
iso_texts = st.one_of(
    instants,
    canonical_shaped,
    mutated,
    millis.filter(lambda ms: MIN_MS <= ms <= MAX_MS).map(reference_date_from_ms),
    st.datetimes(timezones=st.just(UTC) | st.none()).map(datetime.isoformat),
    st.text(max_size=30),
)


@given(iso_texts)
def test_date_from_iso_matches_the_reference(text: str) -> None:
    assert outcome(date_from_iso, text) == outcome(reference_date_from_iso, text)


@settings(max_examples=400)
@given(canonical_shaped | mutated)
def test_canonical_fast_path_matches_the_reference(text: str) -> None:
    assert outcome(date_from_iso, text) == outcome(reference_date_from_iso, text)
    assert outcome(decode, {"$date": text}) == outcome(reference_decode, {"$date": text})


def reference_decode(value: Any) -> Any:
    """The plain recursive walk, converting wrappers with the module's general code."""
    if isinstance(value, dict):
        if value:
            first = next(iter(value))
            if first[:1] == "$":
                try:
                    return ejson._wrapper(first, value)
                except KeyError:
                    pass
        return {k: reference_decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reference_decode(v) for v in value]
    return value


dates = st.one_of(
    iso_texts.map(lambda text: {"$date": text}),
    millis.map(lambda ms: {"$date": ms}),
    millis.map(lambda ms: {"$date": {"$numberLong": str(ms)}}),
    st.sampled_from([{"$date": True}, {"$date": 1.5}, {"$date": 2.0}, {"$date": None}]),
)
ejson_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | dates,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(["$date", "$x"]), inner, max_size=4)
        | st.builds(lambda v: {"$date": v}, inner)
        | st.builds(lambda v: {"$date": v, "x": 1}, inner)
        | st.builds(lambda v: OrderedDict(a=v), inner)
    ),
    max_leaves=30,
)


@settings(max_examples=300)
@given(ejson_values)
def test_decode_matches_the_reference_and_copies(value: Any) -> None:
    before = typed(value)
    assert outcome(decode, value) == outcome(reference_decode, value)
    assert typed(value) == before  # the input is left as it was


def test_may_hold_wrappers() -> None:
    assert may_hold_wrappers(b'{"a": {"$date": 0}}')
    assert may_hold_wrappers(b'{"a": {"\\u0024date": 0}}')  # an escaped $ is still a $
    assert may_hold_wrappers(b'{"a": "$5"}')  # a value like a key: decode just finds nothing
    assert not may_hold_wrappers(b'{"a": "5$", "b": ["x$", {"c$": 1}]}')


@given(ejson_values)
def test_no_wrapper_in_the_text_means_nothing_to_decode(value: Any) -> None:
    try:
        raw = orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits
        return
    if not may_hold_wrappers(raw):
        parsed = orjson.loads(raw)
        assert typed(decode(parsed)) == typed(parsed)


@settings(max_examples=300)
@given(ejson_values)
def test_tagged_parse_matches_the_decode(value: Any) -> None:
    """Where the fast path applies, its document serializes exactly as the decoded one."""
    try:
        raw = orjson.dumps({"doc": value})
    except TypeError:  # integers beyond 64 bits
        return
    parsed = ejson.parse_tagged(raw)
    if parsed is None:
        return
    expected = outcome(decode, orjson.loads(raw))
    assert not isinstance(expected, type) or not issubclass(expected, Exception)
    assert ejson.untag(orjson.dumps(parsed)) == orjson.dumps(decode(orjson.loads(raw)))


@pytest.mark.parametrize(
    ("raw", "applies"),
    [
        (
            b'{"ts":{"$date":"2021-07-09T20:12:19.795Z"},"v":{"t":{"$date":"2021-07-09T20:12:19.795Z"}}}',
            True,
        ),
        (b'{"a":"no dates at all"}', True),
        (b'{"ts":{"$date":"2021-07-09T20:12:19Z"}}', False),  # not the canonical form
        (b'{"ts":{"$date":"2021-02-30T20:12:19.795Z"}}', False),  # no such day
        (b'{"ts":{"$date":"2021-07-09T24:12:19.795Z"}}', False),  # no such hour
        (b'{"ts":{"$date":{"$numberLong":"5"}}}', False),  # another wrapper
        (
            b'{"n":{"x":"XYZ"},"ts":{"$date":"2021-07-09T20:12:19.795Z"}}',
            False,
        ),  # a Z"} not a date's
        (b'{"n":"\\u0000D2021-07-09T20:12:19.795Z"}', False),  # the tag itself in the data
        (b'{"ts":{"$date" :"2021-07-09T20:12:19.795Z"}}', False),  # spaced: left to the decode
    ],
)
def test_tagged_parse_applies_only_to_canonical_dates(raw: bytes, applies: bool) -> None:
    parsed = ejson.parse_tagged(raw)
    assert (parsed is not None) is applies
    if parsed is not None:
        assert ejson.untag(orjson.dumps(parsed)) == orjson.dumps(decode(orjson.loads(raw)))


@pytest.mark.parametrize("text", ["\x80", "a", "é=="])
def test_legacy_binary_that_is_not_base64_is_an_ejson_error(text: str) -> None:
    with pytest.raises(EJsonError):
        decode({"$binary": text, "$type": "00"})
