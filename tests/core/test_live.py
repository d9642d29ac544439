"""The live-answer core: the match of a room against a query's filters (against the oracle), and
the query index's invalidation: a cached answer is always the answer the store would build now."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.ejson import date_from_ms
from service.core.live import QueryIndex, matches, room_keys
from service.core.query import DateRange, Parsed, RoomQuery
from service.core.store import Change, RoomStore
from tests import oracle
from tests.core.test_rooms import queries, rooms
from tests.factories import make_room

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(rooms("r1"), queries())
def test_match_is_the_oracles(room: dict[str, Any], query: RoomQuery) -> None:
    assert matches(room, query) == oracle.matches(room, query)


@FAST
@given(rooms("r1"), queries())
def test_a_stored_room_errs_only_towards_a_match(room: dict[str, Any], query: RoomQuery) -> None:
    """Read back from stored bytes (dates as plain strings), a room that matches still does."""
    stored = orjson.loads(orjson.dumps(room))
    if oracle.matches(room, query):
        assert matches(stored, query, stored=True)


def test_range_ends_are_inclusive() -> None:
    day = [date_from_ms(1_700_000_000_000 + i * 60_000) for i in range(3)]
    room = {"_id": "r", "ts": day[1], "closedAt": day[1]}
    for start in (None, *day):
        for end in (None, *day):
            for query in (
                RoomQuery(created=DateRange(start, end)),
                RoomQuery(closed=DateRange(start, end)),
            ):
                assert matches(room, query) == oracle.matches(room, query)
                assert matches(room, query, stored=True) == oracle.matches(room, query)


def test_a_string_that_looks_like_a_date_is_possibly_one() -> None:
    query = RoomQuery(created=DateRange(start=None, end=None))
    stored = {"_id": "r", "ts": "2021-07-09T20:12:19.795Z"}
    assert not matches(stored, query)  # a plain string is no date
    assert matches(stored, query, stored=True)  # but stored bytes do not say which it was


@FAST
@given(rooms("r1"), queries())
def test_a_matching_room_holds_a_key_of_the_querys_anchor(
    room: dict[str, Any], query: RoomQuery
) -> None:
    index = QueryIndex()
    index.add(b"q", query)
    doc = orjson.dumps(room)
    if oracle.matches(room, query):
        assert index.affected(doc, None) == {b"q"}
        assert index.affected(None, doc) == {b"q"}
    assert room_keys(orjson.loads(doc))  # at least the open/closed bucket


def test_empty_lists_match_nothing_and_are_never_affected() -> None:
    index = QueryIndex()
    index.add(b"none", RoomQuery(agents=()))
    index.add(b"no-tags", RoomQuery(tags=()))
    doc = orjson.dumps({"_id": "r", "servedBy": {"_id": "a"}, "tags": ["x"]})
    assert index.affected(None, doc) == set()


def test_index_files_queries_by_value_and_forgets_them() -> None:
    index = QueryIndex()
    sales = RoomQuery(queue="sales")
    index.add(b"sales", sales)
    index.add(b"support", RoomQuery(queue="support"))
    index.add(b"agent", RoomQuery(agents=("a1", "ann")))
    index.add(b"all", RoomQuery())
    room = orjson.dumps({"_id": "r", "queue": "sales", "servedBy": {"username": "ann"}})
    assert index.affected(None, room) == {b"sales", b"agent", b"all"}
    moved = orjson.dumps({"_id": "r", "queue": "support"})
    assert index.affected(room, moved) == {b"sales", b"support", b"agent", b"all"}
    index.discard(b"sales")
    index.discard(b"sales")  # twice: a no-op
    assert b"sales" not in index
    assert index.affected(None, room) == {b"agent", b"all"}
    assert len(index) == 3
    index.clear()
    assert index.affected(None, room) == set()


def test_filters_other_than_the_anchor_are_checked() -> None:
    index = QueryIndex()
    index.add(b"q", RoomQuery(queue="sales", direction="outbound", open=True))
    inbound = orjson.dumps({"_id": "r", "queue": "sales", "direction": "inbound", "open": True})
    outbound = orjson.dumps({"_id": "r", "queue": "sales", "direction": "outbound", "open": True})
    assert index.affected(None, inbound) == set()
    assert index.affected(inbound, outbound) == {b"q"}
    assert index.affected(outbound, None) == {b"q"}


# -- invalidation against the store: random events, random cached queries -----------------------

EVENT_IDS = [f"r{i}" for i in range(8)]


@st.composite
def events(draw: st.DrawFn) -> tuple[str, dict[str, Any] | None]:
    """(room id, the room to upsert) or (room id, None): a removal."""
    room_id = draw(st.sampled_from(EVENT_IDS))
    if draw(st.integers(0, 4)) == 0:
        return room_id, None
    return room_id, draw(rooms(room_id))


class _Cache:
    """The smallest answer cache on a QueryIndex: answers by identity, dropped when affected."""

    def __init__(self, store: RoomStore) -> None:
        self.store = store
        self.index = QueryIndex()
        self.answers: dict[bytes, tuple[int, list[bytes]]] = {}
        self.dropped = 0
        store.watch(self.changed)

    def get(self, parsed: Parsed) -> tuple[int, list[bytes]]:
        answer = self.answers.get(parsed.ident)
        if answer is None:
            answer = self.answers[parsed.ident] = self.store.page(parsed.query)
            self.index.add(parsed.ident, parsed.query)
        return answer

    def changed(self, change: Change) -> None:
        for ident in self.index.affected(change.before, change.after):
            self.dropped += 1
            del self.answers[ident]
            self.index.discard(ident)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(events(), max_size=8),
    st.lists(queries(), min_size=1, max_size=12),
    st.lists(events(), min_size=1, max_size=25),
)
def test_a_cached_answer_is_always_the_answer_the_store_builds_now(
    setup: list[tuple[str, dict[str, Any] | None]],
    asked: list[RoomQuery],
    later: list[tuple[str, dict[str, Any] | None]],
) -> None:
    store = RoomStore(block_size=4, fold_at=3)
    cache = _Cache(store)
    for room_id, room in setup:
        _apply(store, room_id, room)
    parsed = [Parsed.of(q) for q in asked]
    for p in parsed:
        cache.get(p)
    for step, (room_id, room) in enumerate(later):
        _apply(store, room_id, room)
        for ident, answer in cache.answers.items():
            query = next(p.query for p in parsed if p.ident == ident)
            assert answer == store.page(query), (step, query)
        cache.get(parsed[step % len(parsed)])  # asked again: cached anew when it was dropped


def test_unrelated_changes_keep_answers() -> None:
    store = RoomStore()
    cache = _Cache(store)
    store.upsert(make_room("a", queue="sales"))
    sales = Parsed.of(RoomQuery(queue="sales"))
    first = cache.get(sales)
    for i in range(20):
        store.upsert(make_room(f"s{i}", queue="support"))
    store.remove("s3")
    assert cache.get(sales) is first
    assert cache.dropped == 0
    store.upsert(make_room("a", queue="support"))  # leaves the query: dropped
    assert cache.dropped == 1
    assert cache.get(sales) == (0, [])


def _apply(store: RoomStore, room_id: str, room: dict[str, Any] | None) -> None:
    if room is None:
        store.remove(room_id)
    else:
        store.upsert(room)
