"""Which active queries an applied room change can affect: a room's match against a query's
filters, and an index of active queries by their filter values.

A cached answer (or a stream's last answer) to a query changes only when a room that matches the
query's filters is added, changed or removed: the room matched before the change or matches
after it. ``QueryIndex.affected`` finds those queries for one change without looking at every
active query: each query is filed under the values of one of its equality filters (its anchor),
a change looks up the buckets of the values its room holds (before and after), and only those
candidates, plus the queries with no equality filter, are checked with :func:`matches`.

Erring towards "affected" is safe (an answer is built again), the other way is a bug: a change
record holds a room as stored bytes, where dates are plain ISO strings, so there a string is
taken to be possibly a date (``stored=True``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from service.core.ejson import Date
from service.core.query import DateRange, RoomQuery

__all__ = ["QueryIndex", "matches", "room_keys"]

_MISSING: Any = object()

#: A bucket of the index: (filter, value), or ("open", "1"/"0").
Key = tuple[str, str]

_OPEN = ("open", "1")
_CLOSED = ("open", "0")


def _lookup(room: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    value: Any = room
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


_AGENT_ID = ("servedBy", "_id")
_AGENT_NAME = ("servedBy", "username")
_VISITOR = ("v", "_id")


def _strings(value: Any) -> Iterator[str]:
    """The values an equality filter can match in ``value``: a plain string, or the plain
    strings of a list (MongoDB matches an array when one element equals the value)."""
    if isinstance(value, str):
        if type(value) is not Date:
            yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str) and type(item) is not Date:
                yield item


def _equals(value: Any, wanted: str) -> bool:
    if type(value) is str:
        return value == wanted
    return any(item == wanted for item in _strings(value))


def _any_equals(value: Any, wanted: tuple[str, ...]) -> bool:
    if type(value) is str:
        return value in wanted
    return any(item in wanted for item in _strings(value))


def _in_range(value: Any, rng: DateRange, stored: bool) -> bool:
    # Dates are their canonical ISO strings, so they compare as strings. In stored bytes a date
    # is a plain string: any string is then possibly a date (a non-date never matches, so a
    # string compared this way only ever errs towards a match).
    if not (isinstance(value, str) if stored else isinstance(value, Date)):
        return False
    if rng.start is not None and value < rng.start:
        return False
    return not (rng.end is not None and value > rng.end)


def matches(room: Mapping[str, Any], q: RoomQuery, *, stored: bool = False) -> bool:
    """Whether ``room`` passes every filter of ``q`` (paging, sort and projection aside).

    ``room`` is decoded Extended JSON (dates as :class:`Date`), or with ``stored`` a room read
    back from the store's bytes (dates as plain strings), where the answer errs towards True
    when a string might have been a date. O(filters + list sizes).
    """
    if q.agents is not None and not (
        _any_equals(_lookup(room, _AGENT_ID), q.agents)
        or _any_equals(_lookup(room, _AGENT_NAME), q.agents)
    ):
        return False
    if q.open is not None and ("open" in room) != q.open:
        return False
    if q.created is not None and not _in_range(room.get("ts", _MISSING), q.created, stored):
        return False
    if q.closed is not None and not _in_range(room.get("closedAt", _MISSING), q.closed, stored):
        return False
    if q.tags is not None and not _any_equals(room.get("tags", _MISSING), q.tags):
        return False
    if q.queue is not None and not _equals(room.get("queue", _MISSING), q.queue):
        return False
    if q.visitor_id is not None and not _equals(_lookup(room, _VISITOR), q.visitor_id):
        return False
    if q.direction is not None and not _equals(room.get("direction", _MISSING), q.direction):
        return False
    if q.room_name is not None:
        name = room.get("name")
        if not isinstance(name, str) or q.room_name.lower() not in name.lower():
            return False
    return True


def room_keys(room: Mapping[str, Any]) -> set[Key]:
    """Every bucket a query matching ``room`` can be filed under. O(size of the room's lists)."""
    keys: set[Key] = {_OPEN if "open" in room else _CLOSED}
    keys.update(("agent", s) for s in _strings(_lookup(room, _AGENT_ID)))
    keys.update(("agent", s) for s in _strings(_lookup(room, _AGENT_NAME)))
    keys.update(("visitor", s) for s in _strings(_lookup(room, _VISITOR)))
    keys.update(("queue", s) for s in _strings(room.get("queue")))
    keys.update(("tag", s) for s in _strings(room.get("tags")))
    keys.update(("direction", s) for s in _strings(room.get("direction")))
    return keys


def _anchor(q: RoomQuery) -> tuple[Key, ...] | None:
    """The buckets ``q`` is filed under: the values of its most selective equality filter
    (a room matching ``q`` holds one of them); () when it can match no room at all (an empty
    list); None when it has no equality filter."""
    if q.visitor_id is not None:
        return (("visitor", q.visitor_id),)
    if q.agents is not None:
        return tuple(("agent", a) for a in dict.fromkeys(q.agents))
    if q.queue is not None:
        return (("queue", q.queue),)
    if q.tags is not None:
        return tuple(("tag", t) for t in dict.fromkeys(q.tags))
    if q.direction is not None:
        return (("direction", q.direction),)
    if q.open is not None:
        return (_OPEN if q.open else _CLOSED,)
    return None


class QueryIndex:
    """Active queries, by identity (bytes), filed under their anchor values.

    ``add``/``discard`` are O(anchor values); ``affected`` is O(keys of the room + candidates),
    where the candidates are the queries filed under the room's values and those with no
    equality filter, never a scan over every active query.
    """

    def __init__(self) -> None:
        self._queries: dict[bytes, tuple[RoomQuery, tuple[Key, ...] | None]] = {}
        self._buckets: dict[Key, set[bytes]] = {}
        self._unfiltered: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._queries)

    def __contains__(self, ident: object) -> bool:
        return ident in self._queries

    def add(self, ident: bytes, query: RoomQuery) -> None:
        """File ``query`` under ``ident`` (a no-op when already filed)."""
        if ident in self._queries:
            return
        anchor = _anchor(query)
        self._queries[ident] = (query, anchor)
        if anchor is None:
            self._unfiltered.add(ident)
            return
        for key in anchor:
            self._buckets.setdefault(key, set()).add(ident)

    def discard(self, ident: bytes) -> None:
        """Forget ``ident`` (a no-op when unknown)."""
        entry = self._queries.pop(ident, None)
        if entry is None:
            return
        anchor = entry[1]
        if anchor is None:
            self._unfiltered.discard(ident)
            return
        for key in anchor:
            bucket = self._buckets[key]
            bucket.discard(ident)
            if not bucket:
                del self._buckets[key]

    def clear(self) -> None:
        self._queries.clear()
        self._buckets.clear()
        self._unfiltered.clear()

    def affected(self, before: bytes | None, after: bytes | None) -> set[bytes]:
        """The identities of the filed queries whose answers the change of one room from
        ``before`` to ``after`` (stored bytes; None: absent) can change."""
        if not self._queries:
            return set()
        rooms = [orjson.loads(doc) for doc in (before, after) if doc is not None]
        rooms = [room for room in rooms if isinstance(room, dict)]
        buckets = self._buckets
        candidates: set[bytes] = set(self._unfiltered)
        for room in rooms:
            for key in room_keys(room):
                bucket = buckets.get(key)
                if bucket:
                    candidates |= bucket
        return {ident for ident in candidates if self._touches(ident, rooms)}

    def _touches(self, ident: bytes, rooms: Iterable[Mapping[str, Any]]) -> bool:
        query = self._queries[ident][0]
        return any(matches(room, query, stored=True) for room in rooms)
