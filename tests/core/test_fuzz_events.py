"""Fuzzing the feed's decoders: whatever arrives, only the documented errors come out.

``events.decode`` either returns an Event or raises BadEvent; ``events.apply`` of a decoded
event returns a bool or raises BadEvent having changed nothing; ``ejson.decode`` raises only
EJsonError. Nothing else (no KeyError, TypeError, RecursionError...) may escape.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core import ejson
from service.core.events import SUBJECTS, BadEvent, Event, apply, decode
from service.core.store import RoomStore
from service.core.users import Directory, hash_token

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)  # orjson reads larger integers as floats
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
WRAPPERS = [
    "$date",
    "$numberLong",
    "$numberInt",
    "$numberDouble",
    "$numberDecimal",
    "$oid",
    "$binary",
    "$uuid",
    "$timestamp",
    "$minKey",
    "$maxKey",
    "$undefined",
    "$symbol",
    "$code",
    "$type",
    "$regex",
]


def _wrapped(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Extended JSON type wrappers holding anything, alone or with a second key."""
    return st.one_of(
        st.builds(lambda k, v: {k: v}, st.sampled_from(WRAPPERS), inner),
        st.builds(
            lambda k, v, k2, v2: {k: v, k2: v2},
            st.sampled_from(WRAPPERS),
            inner,
            st.sampled_from([*WRAPPERS, "x"]),
            inner,
        ),
    )


ejson_values = st.recursive(
    scalars
    | st.sampled_from(["2021-07-09T20:12:19.795Z", "1625861539795", "5f0a1b2c3d4e5f6a7b8c9d0e"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(WRAPPERS), inner, max_size=4)
        | _wrapped(inner)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(ejson_values)
def test_ejson_decode_raises_only_ejson_errors(value: Any) -> None:
    try:
        out = ejson.decode(value)
    except ejson.EJsonError:
        return
    orjson.dumps(out)  # whatever it returns serializes as JSON


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60).map(lambda depth: "[" * depth + "1" + "]" * depth))
def test_ejson_decode_handles_nesting(text: str) -> None:
    ejson.decode(orjson.loads(text))


@pytest.mark.parametrize(
    "wrapper",
    [{"$numberLong": "99999999999999999999"}, {"$numberInt": "-99999999999999999999"}],
)
def test_integer_wrappers_beyond_64_bits_are_ejson_errors(wrapper: dict[str, str]) -> None:
    payload = orjson.dumps(
        {"clientAction": "updated", "room": {"_id": "r", "t": "v", "n": wrapper}}
    )
    try:
        _check("watch.rooms", payload)
    except TypeError as exc:
        raise AssertionError(f"escaped: {exc!r}") from None


# -- events ----------------------------------------------------------------------------------

actions = st.sampled_from(["inserted", "updated", "removed", "changed"]) | scalars
ids = st.sampled_from(["r1", "r2", "u1", "view-livechat-rooms"]) | scalars
paths = st.sampled_from(
    ["roles", "active", "services.resume.loginTokens", "a.b", "a..b", "$set", "_id", "a.0.b", ""]
) | st.text(max_size=8)
rooms = st.fixed_dictionaries(
    {},
    optional={
        "_id": ids,
        "t": st.sampled_from(["v", "c"]) | scalars,
        "ts": ejson_values,
        "open": ejson_values,
        "closedAt": ejson_values,
        "tags": ejson_values,
        "servedBy": ejson_values,
        "queue": ejson_values,
    },
)
users = st.fixed_dictionaries(
    {},
    optional={
        "_id": ids,
        "username": ejson_values,
        "roles": st.lists(st.text(max_size=6), max_size=3) | ejson_values,
        "active": ejson_values,
        "services": ejson_values,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "clientAction": actions,
        "room": rooms | ejson_values,
        "id": ids,
        "data": users | rooms | ejson_values,
        "diff": st.dictionaries(paths, ejson_values, max_size=3) | ejson_values,
        "unset": st.dictionaries(paths, st.just(1), max_size=3) | ejson_values,
    },
)


def _top_level_wrapper(value: Any) -> bool:
    body = value[0] if isinstance(value, list) and len(value) == 1 else value
    return isinstance(body, dict) and str(next(iter(body), ""))[:1] == "$"


payloads = st.one_of(
    bodies,
    bodies.map(lambda body: [body]),
    st.lists(bodies, max_size=3),
    # a payload that is itself a type wrapper is test_payload_that_is_a_wrapper's case
    ejson_values.filter(lambda value: not _top_level_wrapper(value)),
)
subjects = st.sampled_from([*SUBJECTS, "other", ""]) | st.text(max_size=20)


def _state() -> tuple[RoomStore, Directory]:
    store, directory = RoomStore(block_size=2), Directory()
    store.upsert({"_id": "r1", "t": "v", "ts": ejson.date_from_ms(0), "tags": ["x"]})
    directory.upsert_user(
        {
            "_id": "u1",
            "username": "u1",
            "roles": ["admin"],
            "services": {"resume": {"loginTokens": [{"hashedToken": hash_token("t")}]}},
        }
    )
    return store, directory


def _check(subject: str, payload: Any) -> None:
    try:
        event: Event = decode(subject, payload)
    except BadEvent:
        return
    store, directory = _state()
    try:
        result = apply(event, store, directory)
    except BadEvent:
        return
    assert isinstance(result, bool)
    store.page  # noqa: B018 - the store is still usable
    for room_id in ("r1", "r2"):
        raw = store.get(room_id)
        assert raw is None or isinstance(orjson.loads(raw), dict)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subjects, payloads)
def test_decode_and_apply_raise_only_bad_event(subject: str, payload: Any) -> None:
    _check(subject, payload)
    try:
        raw = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return
    _check(subject, raw)  # the same payload as the bytes a transport hands over


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SUBJECTS), st.binary(max_size=200))
def test_decode_of_random_bytes(subject: str, raw: bytes) -> None:
    _check(subject, raw)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SUBJECTS), st.binary(max_size=64), st.integers(0, 200))
def test_decode_of_damaged_json(subject: str, noise: bytes, cut: int) -> None:
    good = orjson.dumps(
        {"clientAction": "updated", "room": {"_id": "r2", "t": "v", "ts": {"$date": 0}}}
    )
    _check(subject, good[:cut] + noise + good[cut:])


@pytest.mark.parametrize("payload", [b'{"$date": 0}', b'[{"$numberInt": "1"}]'])
def test_payload_that_is_a_wrapper(payload: bytes) -> None:
    _check("watch.rooms", payload)
