"""A brute-force, obviously correct reference for RoomStore.page (filters, sort, paging)."""

from __future__ import annotations

import functools
from typing import Any

import orjson

from service.core.ejson import Date
from service.core.query import DateRange, RoomQuery

__all__ = ["matches", "reference_page", "sort_key"]

_MISSING = object()


def lookup(room: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, walking through dicts only; _MISSING when absent."""
    value: Any = room
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _is_plain_str(value: Any) -> bool:
    return isinstance(value, str) and not isinstance(value, Date)


def _equals(value: Any, wanted: str) -> bool:
    """MongoDB equality: the value is the string, or a list holding the string."""
    if _is_plain_str(value):
        return bool(value == wanted)
    if isinstance(value, list):
        return any(_is_plain_str(item) and item == wanted for item in value)
    return False


def _any_equals(value: Any, wanted: tuple[str, ...]) -> bool:
    return any(_equals(value, w) for w in wanted)


def _in_range(value: Any, rng: DateRange) -> bool:
    if not isinstance(value, Date):
        return False
    if rng.start is not None and value < rng.start:
        return False
    return not (rng.end is not None and value > rng.end)


def matches(room: dict[str, Any], q: RoomQuery) -> bool:
    """Whether ``room`` passes every filter of ``q``."""
    if q.agents is not None and not (
        _any_equals(lookup(room, "servedBy._id"), q.agents)
        or _any_equals(lookup(room, "servedBy.username"), q.agents)
    ):
        return False
    if q.open is not None and ("open" in room) != q.open:
        return False
    if q.created is not None and not _in_range(lookup(room, "ts"), q.created):
        return False
    if q.closed is not None and not _in_range(lookup(room, "closedAt"), q.closed):
        return False
    if q.tags is not None and not _any_equals(lookup(room, "tags"), q.tags):
        return False
    if q.queue is not None and not _equals(lookup(room, "queue"), q.queue):
        return False
    if q.visitor_id is not None and not _equals(lookup(room, "v._id"), q.visitor_id):
        return False
    if q.direction is not None and not _equals(lookup(room, "direction"), q.direction):
        return False
    if q.room_name is not None:
        name = lookup(room, "name")
        if not isinstance(name, str) or q.room_name.lower() not in name.lower():
            return False
    return True


def sort_key(value: Any) -> tuple[int, Any]:
    """MongoDB's cross-type order: missing/null < numbers < strings < objects < arrays <
    booleans < dates."""
    if value is _MISSING or value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (5, value)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, Date):
        return (6, str(value))
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, dict):
        return (3, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    if isinstance(value, list):
        return (4, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    raise TypeError(f"unexpected value {value!r}")


def _compare(q: RoomQuery, a: dict[str, Any], b: dict[str, Any]) -> int:
    for field, direction in q.sort:
        ka, kb = sort_key(lookup(a, field)), sort_key(lookup(b, field))
        if ka != kb:
            return direction if ka > kb else -direction
    ia: str = a["_id"]
    ib: str = b["_id"]
    return (ia > ib) - (ia < ib)


def reference_page(rooms: list[dict[str, Any]], q: RoomQuery) -> tuple[int, list[dict[str, Any]]]:
    """(total matches, the requested page) by filtering and sorting every room."""
    found = [room for room in rooms if matches(room, q)]
    found.sort(key=functools.cmp_to_key(lambda a, b: _compare(q, a, b)))
    end = None if q.count is None else q.offset + q.count
    return len(found), found[q.offset : end]
