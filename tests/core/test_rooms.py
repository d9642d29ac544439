"""RoomStore against the brute-force oracle: random rooms, random queries, random updates."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.ejson import Date, date_from_ms
from service.core.query import SORTABLE_FIELDS, DateRange, RoomQuery
from service.core.store import RoomStore, bulk, plan
from tests.oracle import reference_page

BASE_MS = 1_625_000_000_000
QUEUES = ["sales", "support", "Sales", "billing"]
DIRECTIONS = ["inbound", "outbound"]
AGENTS = ["a1", "a2", "a3", "ann", "bob"]
VISITORS = ["v1", "v2", "v3", "v4"]
TAGS = ["vip", "spam", "new", "x"]
NAMES = ["guest-12", "Guest-123", "gü", "ab", "a", "", "abc", "xabcabc", "GUEST-9 (x)", "İx"]


def _date(draw_minutes: int) -> Date:
    return date_from_ms(BASE_MS + draw_minutes * 60_000)


dates = st.integers(0, 40).map(_date)
odd_values = st.sampled_from([None, 0, 1, 1.5, -2, True, False, "2021-07-09T20:12:19.795Z"]) | (
    st.sampled_from([{}, {"a": 1}, [], ["sales"], [1, "x"], {"b": [1]}])
)


def maybe(strategy: st.SearchStrategy[Any], odd: bool = True) -> st.SearchStrategy[Any]:
    """A value from ``strategy``, sometimes an odd value, sometimes missing (the sentinel)."""
    options = [strategy, strategy, strategy, st.just(_MISS)]
    if odd:
        options.append(odd_values)
    return st.one_of(*options)


_MISS = object()


@st.composite
def rooms(draw: st.DrawFn, room_id: str) -> dict[str, Any]:
    """A realistic Rocket.Chat voip room with missing fields, nulls, lists and odd types."""
    fields: dict[str, Any] = {
        "name": maybe(st.sampled_from(NAMES)),
        "fname": maybe(st.sampled_from(NAMES)),
        "ts": maybe(dates),
        "closedAt": maybe(dates),
        "open": st.sampled_from([_MISS, True, None, False]),
        "queue": maybe(st.sampled_from(QUEUES) | st.lists(st.sampled_from(QUEUES), max_size=2)),
        "direction": maybe(st.sampled_from(DIRECTIONS)),
        "v": maybe(
            st.fixed_dictionaries(
                {
                    "_id": maybe(st.sampled_from(VISITORS)),
                    "username": maybe(st.sampled_from(VISITORS)),
                }
            ).map(_drop_missing)
        ),
        "servedBy": maybe(
            st.fixed_dictionaries(
                {
                    "_id": maybe(st.sampled_from(AGENTS) | st.lists(st.sampled_from(AGENTS))),
                    "username": maybe(st.sampled_from(AGENTS)),
                }
            ).map(_drop_missing)
        ),
        "tags": maybe(st.lists(st.sampled_from(TAGS), max_size=3) | st.sampled_from(TAGS)),
        "callDuration": maybe(st.integers(0, 5) | st.floats(0, 5, allow_nan=False)),
        "callWaitingTime": maybe(st.integers(0, 3)),
        "callTotalHoldTime": maybe(st.integers(0, 3)),
        "callStarted": maybe(dates),
        "lm": maybe(dates),
        "_updatedAt": maybe(dates),
        "msgs": maybe(st.integers(0, 3)),
    }
    room: dict[str, Any] = {"_id": room_id, "t": "v"}
    for key, strategy in fields.items():
        value = draw(strategy)
        if value is not _MISS:
            room[key] = value
    return room


def _drop_missing(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not _MISS}


def _ids(n: int) -> list[str]:
    return [f"r{i:03d}" for i in range(n)]


ranges = st.builds(
    DateRange, start=st.none() | dates, end=st.none() | dates
)  # either end may be open
string_lists = st.lists(st.sampled_from(AGENTS + VISITORS + ["zz"]), max_size=3).map(tuple)


@st.composite
def queries(draw: st.DrawFn) -> RoomQuery:
    """A random query using every filter, paging form and sort."""
    sort_fields = draw(
        st.lists(st.sampled_from(SORTABLE_FIELDS), min_size=1, max_size=3, unique=True)
    )
    return RoomQuery(
        agents=draw(st.none() | st.none() | string_lists),
        open=draw(st.sampled_from([None, None, True, False])),
        created=draw(st.none() | st.none() | ranges),
        closed=draw(st.none() | st.none() | ranges),
        tags=draw(
            st.none()
            | st.none()
            | st.lists(st.sampled_from([*TAGS, "nope"]), max_size=2).map(tuple)
        ),
        queue=draw(st.none() | st.none() | st.sampled_from(QUEUES)),
        visitor_id=draw(st.none() | st.none() | st.sampled_from(VISITORS)),
        direction=draw(st.none() | st.none() | st.sampled_from(DIRECTIONS)),
        room_name=draw(
            st.none()
            | st.none()
            | st.sampled_from(["gu", "GUEST", "", "a", "abc", "abca", "(x)", "i̇", "ü", "12"])
        ),
        offset=draw(st.sampled_from([0, 0, 1, 3, 10, 40])),
        count=draw(st.sampled_from([None, 0, 1, 5, 50])),
        sort=tuple((f, draw(st.sampled_from([1, -1]))) for f in sort_fields),
    )


def roundtrip(room: dict[str, Any]) -> Any:
    return orjson.loads(orjson.dumps(room))


def assert_same(store: RoomStore, stored: dict[str, dict[str, Any]], q: RoomQuery) -> None:
    total, page = store.page(q)
    want_total, want = reference_page(list(stored.values()), q)
    assert total == want_total, q
    assert [orjson.loads(b) for b in page] == [roundtrip(r) for r in want], q


def build(
    rooms_: list[dict[str, Any]],
    block_size: int,
    bulk: bool,
    gather: bool | None = None,
    fold_at: int | None = None,
) -> RoomStore:
    store = RoomStore(block_size=block_size, gather=gather, fold_at=fold_at)
    if bulk:
        store.bulk_load(rooms_)
    else:
        for room in rooms_:
            store.upsert(room)
    store._check()
    return store


@st.composite
def room_sets(draw: st.DrawFn, max_size: int = 40) -> list[dict[str, Any]]:
    n = draw(st.integers(0, max_size))
    ids = _ids(n)
    draw(st.randoms()).shuffle(ids)
    return [draw(rooms(rid)) for rid in ids]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    room_sets(),
    st.lists(queries(), min_size=1, max_size=6),
    st.booleans(),
    st.sampled_from([1, 2, 3, 8]),
    st.sampled_from([None, True, False]),
    st.sampled_from([1, 5, None]),
)
def test_page_matches_oracle(
    rooms_: list[dict[str, Any]],
    qs: list[RoomQuery],
    bulk: bool,
    block_size: int,
    gather: bool | None,
    fold_at: int | None,
) -> None:
    """Pages by the order walk (gather=False), by selecting gathered codes (True), or either;
    with the buffer of changes merged after every change, every few, or left unmerged."""
    store = build(rooms_, block_size, bulk, gather, fold_at)
    stored = {r["_id"]: r for r in rooms_}
    for q in qs:
        assert_same(store, stored, q)


def _random_room(rng: random.Random, room_id: str) -> dict[str, Any]:
    """Like the hypothesis strategy, from a seeded Random (for big sets and stress runs)."""

    def pick(values: list[Any], odd: float = 0.05) -> Any:
        r = rng.random()
        if r < 0.15:
            return _MISS
        if r < 0.15 + odd:
            return rng.choice([None, 0, 1.5, True, "x", {"a": 1}, [1], []])
        return rng.choice(values)

    def date() -> Date:
        return _date(rng.randrange(300))

    room: dict[str, Any] = {"_id": room_id, "t": "v"}
    fields = {
        "name": pick(NAMES),
        "fname": pick(NAMES),
        "ts": pick([date() for _ in range(3)]),
        "closedAt": pick([date() for _ in range(3)]),
        "open": rng.choice([_MISS, _MISS, True, None]),
        "queue": pick([*QUEUES, ["sales", "billing"]]),
        "direction": pick(DIRECTIONS),
        "v": pick([{"_id": rng.choice(VISITORS), "username": rng.choice(VISITORS)}, {"_id": None}]),
        "servedBy": pick([{"_id": a, "username": a.upper()} for a in AGENTS]),
        "tags": pick([[rng.choice(TAGS)], rng.sample(TAGS, 2), "vip"]),
        "callDuration": pick(list(range(6))),
        "callWaitingTime": pick(list(range(200))),
        "callTotalHoldTime": pick([0, 1, 2.5]),
        "callStarted": pick([date()]),
        "lm": pick([date()]),
        "_updatedAt": pick([date(), date()]),
        "msgs": pick(list(range(3))),
    }
    for key, value in fields.items():
        if value is not _MISS:
            room[key] = value
    return room


def _random_query(rng: random.Random) -> RoomQuery:
    def opt(value: Any) -> Any:
        return value if rng.random() < 0.25 else None

    def rng_range() -> DateRange:
        return DateRange(
            rng.choice([None, _date(rng.randrange(300))]),
            rng.choice([None, _date(rng.randrange(300))]),
        )

    fields = rng.sample(SORTABLE_FIELDS, rng.choice([1, 1, 1, 2, 3]))
    return RoomQuery(
        agents=opt(tuple(rng.sample([*AGENTS, "A1", "BOB"], rng.randrange(3)))),
        open=rng.choice([None, None, True, False]),
        created=opt(rng_range()),
        closed=opt(rng_range()),
        tags=opt(tuple(rng.sample(TAGS, rng.randrange(3)))),
        queue=opt(rng.choice(QUEUES)),
        visitor_id=opt(rng.choice(VISITORS)),
        direction=opt(rng.choice(DIRECTIONS)),
        room_name=opt(rng.choice(["gu", "GUEST", "", "a", "abc", "abca", "12", "(x)"])),
        offset=rng.choice([0, 0, 7, 50, 300, 900]),
        count=rng.choice([None, 1, 50, 100]),
        sort=tuple((f, rng.choice([1, -1])) for f in fields),
    )


@pytest.mark.parametrize("bulk", [True, False])
def test_many_blocks_against_oracle(bulk: bool) -> None:
    rng = random.Random(7)
    rooms_ = [_random_room(rng, f"room-{rng.randrange(10**6):06d}-{i}") for i in range(1500)]
    store = build(rooms_, 16, bulk, fold_at=64)
    assert max(len(i.blocks) for i in store.orders.values()) > 50
    stored = {r["_id"]: r for r in rooms_}
    for _ in range(200):
        assert_same(store, stored, _random_query(rng))
    for field in SORTABLE_FIELDS:
        for direction in (1, -1):
            for offset in (0, 13, 700, 1450):
                assert_same(
                    store, stored, RoomQuery(sort=((field, direction),), offset=offset, count=40)
                )


@pytest.mark.parametrize("by_code", [0, plan.BY_CODE])
def test_date_ranges_by_codes_or_by_buckets(by_code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A date range met with the other filters' matches by their codes, or always from the
    date buckets (BY_CODE 0): the same answers as the oracle, updates buffered or merged."""
    monkeypatch.setattr(plan, "BY_CODE", by_code)
    rng = random.Random(11)
    rooms_ = [_random_room(rng, f"room-{i:05d}") for i in range(800)]
    store = build(rooms_, 16, True, fold_at=64)
    stored = {r["_id"]: r for r in rooms_}
    for step in range(300):
        if step % 3 == 0:
            room = _random_room(rng, rng.choice(list(stored)))
            store.upsert(room)
            stored[room["_id"]] = room
        assert_same(store, stored, _random_query(rng))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stress_random_updates(seed: int) -> None:
    rng = random.Random(seed)
    store = RoomStore(
        block_size=rng.choice([1, 2, 4]),
        gather=rng.choice([None, True, False]),
        fold_at=rng.choice([1, 7, 10_000]),
    )
    stored: dict[str, dict[str, Any]] = {}
    ids = [f"id{i:02d}" for i in range(60)]
    for step in range(600):
        action = rng.random()
        rid = rng.choice(ids)
        version = store.version
        if action < 0.6:
            room = _random_room(rng, rid)
            same = rid in stored and roundtrip(stored[rid]) == roundtrip(room)
            assert store.upsert(room) is not same
            stored[rid] = room
        elif action < 0.75 and rid in stored:  # update a few fields of a stored room
            room = dict(stored[rid])
            room["_updatedAt"] = _date(rng.randrange(300))
            room.pop(rng.choice(["open", "closedAt", "name", "servedBy"]), None)
            assert store.upsert(room)
            stored[rid] = room
        else:
            assert store.remove(rid) is (rid in stored)
            stored.pop(rid, None)
        assert (store.version != version) is (store.version == version + 1)
        store._check()
        assert len(store) == len(stored)
        if step % 5 == 0:
            assert_same(store, stored, _random_query(rng))
    assert sorted(orjson.loads(b)["_id"] for b in store.iter_rooms()) == sorted(stored)


def test_upsert_identical_is_noop() -> None:
    store = RoomStore()
    room = {"_id": "a", "t": "v", "open": True, "ts": _date(1)}
    assert store.upsert(room)
    assert store.version == 1
    assert not store.upsert(dict(room))
    assert store.version == 1
    assert store.get("a") == orjson.dumps(room)
    assert store.open_count() == 1
    assert store.upsert({"_id": "a", "t": "v"})
    assert store.version == 2
    assert store.open_count() == 0
    store._check()


def test_remove_unknown_and_known() -> None:
    store = RoomStore()
    assert not store.remove("nope")
    assert store.version == 0
    store.upsert({"_id": "a", "t": "v", "name": "guest-1"})
    assert store.remove("a")
    assert store.version == 2
    assert store.get("a") is None
    assert len(store) == 0
    assert store.page(RoomQuery(room_name="gue")) == (0, [])
    store._check()
    store.upsert({"_id": "b", "t": "v"})  # reuses the freed slot
    store._check()
    assert store.page(RoomQuery()) == (1, [orjson.dumps({"_id": "b", "t": "v"})])


def test_bulk_load_duplicates_and_empty() -> None:
    store = RoomStore(block_size=2)
    assert store.bulk_load([]) == 0
    assert store.version == 0
    n = store.bulk_load(
        [
            {"_id": "a", "t": "v", "open": True, "queue": "q1"},
            {"_id": "b", "t": "v", "queue": "q1"},
            {"_id": "a", "t": "v", "queue": "q2"},
        ]
    )
    assert n == 2
    store._check()
    assert store.open_count() == 0
    assert store.page(RoomQuery(queue="q1"))[0] == 1
    assert store.page(RoomQuery(queue="q2"))[0] == 1
    with pytest.raises(ValueError, match="empty"):
        store.bulk_load([{"_id": "c", "t": "v"}])


def test_dates_and_strings_differ() -> None:
    """A date never equals a string filter and sorts above every string."""
    store = RoomStore()
    d = _date(5)
    store.upsert({"_id": "a", "t": "v", "queue": d, "name": "zzz"})
    store.upsert({"_id": "b", "t": "v", "queue": str(d), "name": d})
    assert store.page(RoomQuery(queue=str(d)))[0] == 1
    assert store.upsert({"_id": "a", "t": "v", "queue": str(d)})
    assert store.page(RoomQuery(queue=str(d)))[0] == 2
    store._check()
    _, page = store.page(RoomQuery(sort=(("name", -1),)))
    assert [orjson.loads(b)["_id"] for b in page] == ["b", "a"]


def test_count_none_and_offsets_past_end() -> None:
    store = RoomStore(block_size=1)
    for i in range(10):
        store.upsert({"_id": f"r{i}", "t": "v", "msgs": i % 3})
    total, page = store.page(RoomQuery(count=None, sort=(("msgs", -1),)))
    assert total == 10
    assert [orjson.loads(b)["_id"] for b in page] == [
        "r2",
        "r5",
        "r8",
        "r1",
        "r4",
        "r7",
        "r0",
        "r3",
        "r6",
        "r9",
    ]
    assert store.page(RoomQuery(offset=10)) == (10, [])
    assert store.page(RoomQuery(agents=())) == (0, [])
    assert store.page(RoomQuery(tags=())) == (0, [])


def test_bulk_load_few_ties_in_time_order() -> None:
    """Mostly distinct keys given in time order, with a few ties to put in _id order."""
    rng = random.Random(5)
    rooms_ = [
        {"_id": f"{rng.randrange(10**6):06d}-{i}", "t": "v", "ts": _date(i - i % 50 // 49)}
        for i in range(400)
    ]
    store = build(rooms_, 8, bulk=True)
    stored = {r["_id"]: r for r in rooms_}
    for direction in (1, -1):
        for offset in (0, 48, 200):
            q = RoomQuery(sort=(("ts", direction),), offset=offset, count=60)
            assert_same(store, stored, q)


def test_bulk_load_is_all_or_nothing() -> None:
    store = RoomStore()
    store.upsert({"_id": "old", "t": "v"})
    store.remove("old")
    with pytest.raises(TypeError):
        store.bulk_load([{"_id": "a", "t": "v"}, {"_id": "b", "t": "v", "x": 2**70}])
    assert len(store) == 0
    assert store.version == 2
    store._check()
    assert store.bulk_load([{"_id": "a", "t": "v", "open": True}]) == 1
    assert store.version == 3
    store._check()
    assert store.page(RoomQuery(open=True))[0] == 1


def _durations_after(
    bases: tuple[int, int], block_size: int, bulk: bool, values: Sequence[float], ids: list[str]
) -> tuple[RoomStore, dict[str, dict[str, Any]]]:
    """A store of two rooms with callDuration ``bases``, then one upserted room per value."""
    base: list[dict[str, Any]] = [{"_id": f"b{i}", "t": "v", "callDuration": i} for i in bases]
    store = build(base, block_size, bulk, gather=True)
    stored = {r["_id"]: r for r in base}
    for rid, value in zip(ids, values, strict=True):
        room: dict[str, Any] = {"_id": rid, "t": "v", "callDuration": value}
        store.upsert(room)
        stored[rid] = room
    store._check()
    return store, stored


def _assert_duration_pages(
    store: RoomStore, stored: dict[str, dict[str, Any]], offsets: tuple[int, ...], count: int
) -> None:
    for direction in (1, -1):
        for offset in offsets:
            q = RoomQuery(sort=(("callDuration", direction),), offset=offset, count=count)
            assert_same(store, stored, q)


@pytest.mark.parametrize("bulk", [True, False])
def test_codes_are_spread_again_when_a_gap_runs_out(bulk: bool) -> None:
    """Values that keep landing between the same two keys exhaust the codes between them."""
    values = [2.0**-i for i in range(1, 80)]  # 0.5, 0.25, ...: each lands just above 0
    ids = [f"r{i:02d}" for i in range(1, 80)]
    values.append(2.0**-79)  # a tie with the last one
    ids.append("r00")
    store, stored = _durations_after((0, 1), 2, bulk, values, ids)
    _assert_duration_pages(store, stored, (0, 30, 75), 10)


def test_codes_keep_up_with_values_arriving_in_order() -> None:
    """Runs of growing and of shrinking values between two old keys respread a few blocks."""
    values = [*range(1, 1500), *range(10**6 - 1, 10**6 - 1500, -1), *range(5000, 6000, 2)]
    ids = [f"r{i:05d}" for i in range(len(values))]
    store, stored = _durations_after((0, 10**6), 4, True, values, ids)
    _assert_duration_pages(store, stored, (0, 1499, 2990), 20)


@pytest.mark.parametrize("bulk", [True, False])
def test_name_grams_of_every_kind_of_name(bulk: bool) -> None:
    """Bulk loads index most names in numpy and the rest in Python: both agree with upserts."""
    names = [
        "Ada Lovelace-1795545851.820001",
        "ab",
        "ÄBC Öl Straße",
        "emoji 😀 caller 😀x",  # beyond U+FFFF
        "nul\x00in the middle\x00",
        "x" * 70 + "needle" + "y" * 30,  # longer than the packed width
        "İstanbul",  # lower() changes the length
        "NEEDLE in caps",
        "",
    ]
    rooms_ = [{"_id": f"n{i:02d}", "t": "v", "name": name} for i, name in enumerate(names)]
    store = build(rooms_, 2, bulk)
    stored = {r["_id"]: r for r in rooms_}
    for text in ("needle", "NEED", "😀 c", "\x00in", "straße", "i̇st", "abc", "ab", "e", "xxxx"):
        assert_same(store, stored, RoomQuery(room_name=text, sort=(("name", 1),)))


def _extended(value: Any) -> Any:
    """A decoded value as mongoexport writes it: every Date as ``{"$date": iso}``."""
    if isinstance(value, Date):
        return {"$date": str(value)}
    if isinstance(value, dict):
        return {k: _extended(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_extended(v) for v in value]
    return value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(room_sets(), st.lists(queries(), min_size=1, max_size=4))
def test_lines_read_by_the_tagged_parse_match_the_oracle(
    rooms_: list[dict[str, Any]], qs: list[RoomQuery]
) -> None:
    """Rooms read from JSON lines (dates as canonical ``$date`` wrappers, read in C by the
    tagged parse) load into the same store as decoded rooms: the oracle agrees."""
    data = b"\n".join(orjson.dumps(_extended(room)) for room in rooms_)
    chunk = bulk.extract_lines(data, 1)
    store = RoomStore()
    store.load_extracted(chunk.extracted)
    store._check()
    stored = {r["_id"]: r for r in rooms_}
    for room in rooms_:
        assert store.get(room["_id"]) == orjson.dumps(room)
    for q in qs:
        assert_same(store, stored, q)
