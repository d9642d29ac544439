"""RoomQuery, the parsed form of a GET /api/v1/voip/rooms request, and parse(params)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from service.core.ejson import Date, date_from_iso
from service.core.errors import InvalidDate, InvalidFields, InvalidParams, InvalidSort

__all__ = [
    "SORTABLE_FIELDS",
    "DateRange",
    "ParseCache",
    "Parsed",
    "Projection",
    "QueryLimits",
    "RoomQuery",
    "parse",
]

#: Fields the API can sort on (contract section 1), as dotted paths into a room.
SORTABLE_FIELDS: tuple[str, ...] = (
    "ts",
    "name",
    "fname",
    "closedAt",
    "_updatedAt",
    "lm",
    "callStarted",
    "callDuration",
    "callWaitingTime",
    "callTotalHoldTime",
    "queue",
    "direction",
    "msgs",
    "servedBy.username",
    "v.username",
)


@dataclass(frozen=True, slots=True)
class DateRange:
    """Both ends inclusive; None = open end. Dates compare as their ISO strings."""

    start: Date | None = None
    end: Date | None = None


@dataclass(frozen=True, slots=True)
class Projection:
    """MongoDB-style projection: ``include`` True for all-1s, False for all-0s.

    ``paths`` are dotted paths other than ``_id``; ``keep_id`` says whether ``_id`` stays.
    """

    include: bool
    paths: tuple[str, ...]
    keep_id: bool = True


@dataclass(frozen=True, slots=True)
class RoomQuery:
    """Filters (None = no filter), paging and order of one room-list request."""

    agents: tuple[str, ...] | None = None  # servedBy._id OR servedBy.username in list
    open: bool | None = None  # True: has an ``open`` field; False: has none
    created: DateRange | None = None  # on ``ts``
    closed: DateRange | None = None  # on ``closedAt``
    tags: tuple[str, ...] | None = None  # at least one of
    queue: str | None = None
    visitor_id: str | None = None  # v._id
    direction: str | None = None
    room_name: str | None = None  # case-insensitive substring of ``name``
    offset: int = 0
    count: int | None = 50  # None = all
    sort: tuple[tuple[str, int], ...] = (("ts", -1),)
    fields: Projection | None = None


# --------------------------------------------------------------------------------------------
# parse: query-string pairs (and an optional JSON body) -> RoomQuery, or an ApiError.
#
# Decisions where the contract leaves room (mirrored in the README):
# - ``open`` and ``Open`` are two spellings of one parameter. Every spelling given is validated;
#   within one source ``open`` wins over ``Open``; the query string wins over the body.
# - The query string wins per parameter name: a name present there in any form (``agents``,
#   ``agents[]``, ``createdAt[start]``, ``Open`` for ``open``...) makes the body's value for that
#   name ignored, unvalidated. A JSON ``null`` in the body means "not given".
# - List order: plain and ``[]`` values in the order given; the ``[i]`` values form one block at
#   the place of the first of them, ordered by index (equal indexes keep their order). A value
#   starting with ``[`` must be a JSON array of strings. Duplicates are kept, as Rocket.Chat
#   does (the permission rule looks at the list's length).
# - Ranges: the JSON form and the bracket form merge; one end given twice is a 400. An end that
#   is null, absent, the empty string (or, in the bracket form, the text ``null``) is open.
#   A non-string date is a bad date.
# - The empty string means "not given" for queue, visitorId, roomName, sort, fields and a range;
#   it is a 400 for open, direction, offset and count (not one of the allowed values).
# - offset above 2**53 - 1 is a 400 (it is echoed as a JSON number); count above max_count is
#   clamped however large. In a body, offset/count are JSON integers or decimal strings
#   (1.0 is refused).
# - ``query`` is accepted in any form, any number of times, and ignored.
# - A RoomQuery is frozen and hashable, so the web layer can key a cache on it; ``fields``
#   paths are sorted (projection output follows document order, so order does not matter).
# --------------------------------------------------------------------------------------------

_LIST_KEYS = frozenset({"agents", "tags"})
_RANGE_KEYS = frozenset({"createdAt", "closedAt"})
_SCALAR_KEYS = frozenset(
    {
        "open",
        "Open",
        "queue",
        "visitorId",
        "direction",
        "roomName",
        "offset",
        "count",
        "sort",
        "fields",
        "query",
    }
)
_KNOWN_KEYS = _LIST_KEYS | _RANGE_KEYS | _SCALAR_KEYS
_BRACKET_RE = re.compile(r"([A-Za-z]+)\[([^\[\]]*)\]")
_DIGITS_RE = re.compile(r"[0-9]+")
_DIRECTIONS = frozenset({"inbound", "outbound"})
_SORTABLE = frozenset(SORTABLE_FIELDS)
_DEFAULT_SORT: tuple[tuple[str, int], ...] = (("ts", -1),)
_MAX_OFFSET = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER
_HUGE = 10**18  # stands for any decimal string too long to be worth converting


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The count settings and the list size limit that parse applies."""

    default_count: int = 50
    max_count: int = 100
    allow_infinite_count: bool = False
    max_list: int = 500


def _family(key: str) -> str:
    """The name under which body/query-string precedence is decided."""
    return "open" if key == "Open" else key


def _unknown(key: str) -> InvalidParams:
    return InvalidParams(f"must NOT have additional properties '{key}'")


_BAD: Any = object()  # what _json returns for text that is not one JSON value


def _json(text: str) -> Any:
    """Parsed JSON, or _BAD when ``text`` is not one JSON value."""
    try:
        return orjson.loads(text)
    except ValueError:  # orjson.JSONDecodeError, including lone surrogates
        return _BAD


def _dump(value: Any) -> str:
    """``value`` as JSON text, for error messages about a body value."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # not JSON-serializable: only when called with a non-JSON mapping
        return str(value)


class _ListAcc:
    """The raw values of one list key in the query string, in the documented order."""

    __slots__ = ("indexed", "items")

    def __init__(self) -> None:
        self.items: list[str | None] = []  # None marks where the indexed block goes
        self.indexed: list[tuple[int, str, int, str]] = []

    def add(self, value: str) -> None:
        self.items.append(value)

    def add_indexed(self, index: str, value: str) -> None:
        if not self.indexed:
            self.items.append(None)
        digits = index.lstrip("0")
        # Compare indexes as numbers without int() (no limit on the number of digits).
        self.indexed.append((len(digits), digits, len(self.indexed), value))

    def values(self) -> list[str]:
        out: list[str] = []
        for item in self.items:
            if item is None:
                out.extend(entry[3] for entry in sorted(self.indexed))
            else:
                out.append(item)
        return out


def _read_pairs(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, _ListAcc], dict[str, dict[str, str]], dict[str, str]]:
    """Group the query string by parameter; unknown keys and repeated scalars are 400s."""
    lists: dict[str, _ListAcc] = {}
    ranges: dict[str, dict[str, str]] = {}
    scalars: dict[str, str] = {}
    for key, value in pairs:
        if key in _SCALAR_KEYS:
            if key == "query":
                continue
            if key in scalars:
                raise InvalidParams(f"'{key}' must NOT be given more than once")
            scalars[key] = value
        elif key in _LIST_KEYS:
            lists.setdefault(key, _ListAcc()).add(value)
        elif key in _RANGE_KEYS:
            _set_range_part(ranges.setdefault(key, {}), key, "json", value)
        else:
            m = _BRACKET_RE.fullmatch(key)
            if m is None:
                raise _unknown(key)
            base, inner = m.group(1), m.group(2)
            if base in _LIST_KEYS and inner == "":
                lists.setdefault(base, _ListAcc()).add(value)
            elif base in _LIST_KEYS and _DIGITS_RE.fullmatch(inner):
                lists.setdefault(base, _ListAcc()).add_indexed(inner, value)
            elif base in _RANGE_KEYS and inner in ("start", "end"):
                _set_range_part(ranges.setdefault(base, {}), base, inner, value)
            else:
                raise _unknown(key)
    return lists, ranges, scalars


def _set_range_part(parts: dict[str, Any], name: str, part: str, value: Any) -> None:
    if part in parts:
        what = name if part == "json" else f"{name}[{part}]"
        raise InvalidParams(f"'{what}' must NOT be given more than once")
    parts[part] = value


def _check_list_size(name: str, n: int, limits: QueryLimits) -> None:
    if n > limits.max_list:
        raise InvalidParams(f"'{name}' must NOT have more than {limits.max_list} items")


def _list_from_raws(name: str, raws: Sequence[str], limits: QueryLimits) -> tuple[str, ...]:
    out: list[str] = []
    for raw in raws:
        if raw.startswith("["):
            arr = _json(raw)
            if not isinstance(arr, list) or not all(isinstance(x, str) for x in arr):
                raise InvalidParams(f"'{name}' must be a JSON array of strings")
            out.extend(arr)
        else:
            out.append(raw)
        _check_list_size(name, len(out), limits)
    return tuple(out)


def _list_from_body(name: str, value: Any, limits: QueryLimits) -> tuple[str, ...]:
    if isinstance(value, str):
        return _list_from_raws(name, (value,), limits)
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InvalidParams(f"'{name}' must be an array of strings")
    _check_list_size(name, len(value), limits)
    return tuple(value)


def _range_object(name: str, value: Any) -> dict[str, Any]:
    """The ``{"start", "end"}`` object of a range given as a JSON string or object."""
    if isinstance(value, str):
        if value == "":
            return {}
        value = _json(value)
    if not isinstance(value, Mapping):
        raise InvalidParams(f"'{name}' must be a JSON object with optional 'start' and 'end'")
    for key in value:
        if key not in ("start", "end"):
            raise InvalidParams(f"'{name}' must NOT have additional properties '{key}'")
    return dict(value)


def _range_date(name: str, part: str, value: Any, *, bracket: bool) -> Date | None:
    if value is None or value == "" or (bracket and value == "null"):
        return None
    if isinstance(value, str):
        try:
            return date_from_iso(value)
        except ValueError:  # EJsonError, or anything fromisoformat refuses
            pass
    raise InvalidDate(f"{name}.{part}")


def _range(name: str, json_value: Any, brackets: Mapping[str, str]) -> DateRange | None:
    parts = _range_object(name, json_value) if json_value is not None else {}
    ends: dict[str, Date | None] = {}
    for part in ("start", "end"):
        if part in brackets:
            if part in parts:
                raise InvalidParams(f"'{name}' must NOT give '{part}' more than once")
            ends[part] = _range_date(name, part, brackets[part], bracket=True)
        else:
            ends[part] = _range_date(name, part, parts.get(part), bracket=False)
    if ends["start"] is None and ends["end"] is None:
        return None
    return DateRange(start=ends["start"], end=ends["end"])


def _open(key: str, value: Any) -> bool:
    if value is True or value == "true":
        return True
    if value is False or value == "false":
        return False
    raise InvalidParams(f"'{key}' must be equal to one of the allowed values: true, false")


def _string(key: str, value: Any) -> str | None:
    if not isinstance(value, str):
        raise InvalidParams(f"'{key}' must be string")
    return value or None


def _direction(value: Any) -> str:
    if isinstance(value, str) and value in _DIRECTIONS:
        return value
    raise InvalidParams("'direction' must be equal to one of the allowed values: inbound, outbound")


def _non_negative(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _DIGITS_RE.fullmatch(value):
        digits = value.lstrip("0") or "0"
        return int(digits) if len(digits) <= 18 else _HUGE
    raise InvalidParams(f"'{key}' must be a non-negative integer")


def _offset(value: Any) -> int:
    n = _non_negative("offset", value)
    if n > _MAX_OFFSET:
        raise InvalidParams(f"'offset' must be <= {_MAX_OFFSET}")
    return n


def _count(value: Any, limits: QueryLimits) -> int | None:
    n = _non_negative("count", value)
    if n == 0:
        return None if limits.allow_infinite_count else limits.default_count
    return min(n, limits.max_count)


def _json_query(
    value: Any, error: type[InvalidSort | InvalidFields]
) -> tuple[Mapping[Any, Any] | None, str]:
    """(object or None for "not given", raw text for the error) of a sort/fields value."""
    if isinstance(value, str):
        if value == "":
            return None, value
        obj = _json(value)
        if not isinstance(obj, Mapping):
            raise error(value)
        return obj, value
    raw = _dump(value)
    if not isinstance(value, Mapping):
        raise error(raw)
    return value, raw


def _sort(value: Any) -> tuple[tuple[str, int], ...]:
    obj, raw = _json_query(value, InvalidSort)
    if not obj:
        return _DEFAULT_SORT
    out: list[tuple[str, int]] = []
    for key, direction in obj.items():
        if (
            key not in _SORTABLE
            or not isinstance(direction, int)
            or isinstance(direction, bool)
            or direction not in (1, -1)
        ):
            raise InvalidSort(raw)
        out.append((key, direction))
    return tuple(out)


def _valid_path(path: Any) -> bool:
    if not isinstance(path, str) or "\x00" in path:
        return False
    return all(seg and not seg.startswith("$") for seg in path.split("."))


def _fields(value: Any) -> Projection | None:
    obj, raw = _json_query(value, InvalidFields)
    if not obj:
        return None
    modes: set[bool] = set()
    paths: list[str] = []
    id_flag: bool | None = None
    for key, flag in obj.items():
        if not _valid_path(key):
            raise InvalidFields(raw)
        if isinstance(flag, bool):
            on = flag
        elif isinstance(flag, int) and flag in (0, 1):
            on = flag == 1
        else:
            raise InvalidFields(raw)
        if key == "_id":
            id_flag = on
        else:
            modes.add(on)
            paths.append(key)
    if len(modes) > 1:
        raise InvalidFields(raw)
    given = set(obj)
    for path in given:
        head, _, _ = path.rpartition(".")
        while head:  # a path and one of its prefixes: MongoDB's "path collision"
            if head in given:
                raise InvalidFields(raw)
            head, _, _ = head.rpartition(".")
    if not paths:  # only _id: {"_id": 1} keeps _id alone, {"_id": 0} drops it
        return Projection(include=bool(id_flag), paths=(), keep_id=bool(id_flag))
    return Projection(include=modes.pop(), paths=tuple(sorted(paths)), keep_id=id_flag is not False)


def _read_body(body: Mapping[str, Any] | None, given: set[str]) -> dict[str, Any]:
    """The body's parameters not overridden by the query string, nulls dropped."""
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise InvalidParams("the request body must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key not in _KNOWN_KEYS:
            raise _unknown(str(key))
        if value is not None and _family(key) not in given and key != "query":
            out[key] = value
    return out


def parse(
    pairs: Sequence[tuple[str, str]],
    body: Mapping[str, Any] | None = None,
    limits: QueryLimits = QueryLimits(),  # frozen, so one shared default is safe
) -> RoomQuery:
    """Parse a rooms request's query string (percent-decoded pairs, in order) and body.

    Raises InvalidParams, InvalidDate, InvalidSort or InvalidFields, each naming its parameter.
    Runs in O(size of the input + list lengths * log).
    """
    lists, ranges, scalars = _read_pairs(pairs)
    given = {_family(k) for k in scalars} | set(lists) | set(ranges)
    b = _read_body(body, given)

    def list_param(name: str) -> tuple[str, ...] | None:
        if name in lists:
            return _list_from_raws(name, lists[name].values(), limits)
        if name in b:
            return _list_from_body(name, b[name], limits)
        return None

    def range_param(name: str) -> DateRange | None:
        if name in ranges:
            parts = ranges[name]
            return _range(name, parts.get("json"), {k: v for k, v in parts.items() if k != "json"})
        if name in b:
            return _range(name, b[name], {})
        return None

    src: Mapping[str, Any] = scalars if any(k in scalars for k in ("open", "Open")) else b
    open_: bool | None = None
    for key in ("Open", "open"):  # both validated; ``open`` read last, so it wins
        if key in src:
            open_ = _open(key, src[key])

    # Scalars other than open: the query string's value if present, else the body's.
    merged: dict[str, Any] = {**b, **scalars}
    queue = _string("queue", merged["queue"]) if "queue" in merged else None
    visitor = _string("visitorId", merged["visitorId"]) if "visitorId" in merged else None
    if visitor == "undefined":
        visitor = None
    room_name = _string("roomName", merged["roomName"]) if "roomName" in merged else None
    direction = _direction(merged["direction"]) if "direction" in merged else None
    offset = _offset(merged["offset"]) if "offset" in merged else 0
    count = _count(merged["count"], limits) if "count" in merged else limits.default_count
    sort = _sort(merged["sort"]) if "sort" in merged else _DEFAULT_SORT
    fields = _fields(merged["fields"]) if "fields" in merged else None

    return RoomQuery(
        agents=list_param("agents"),
        open=open_,
        created=range_param("createdAt"),
        closed=range_param("closedAt"),
        tags=list_param("tags"),
        queue=queue,
        visitor_id=visitor,
        direction=direction,
        room_name=room_name,
        offset=offset,
        count=count,
        sort=sort,
        fields=fields,
    )


@dataclass(frozen=True, slots=True)
class Parsed:
    """A RoomQuery and its identity: its repr as bytes. Equal queries have equal identities in
    every process (unlike ``hash``), so the identity can name an answer (ETags agree across
    replicas), and as bytes it keys dicts cheaply (bytes keep their hash)."""

    query: RoomQuery
    ident: bytes

    @classmethod
    def of(cls, query: RoomQuery) -> Parsed:
        return cls(query, repr(query).encode())


class ParseCache:
    """``parse`` of body-less requests, remembered by their raw (undecoded) query string.

    The same raw query string always decodes to the same pairs, so a hit is what ``parse``
    would return. Errors are not kept (``parse`` raises them again). Bounded: at most ``size``
    entries (all forgotten when full) of query strings up to ``longest`` characters. O(1).
    """

    def __init__(self, limits: QueryLimits, size: int = 4096, longest: int = 2048) -> None:
        self.limits = limits
        self.size = size
        self.longest = longest
        self._entries: dict[str, Parsed] = {}

    def get(self, raw: str) -> Parsed | None:
        """The remembered parse of the raw query string ``raw``, if any."""
        return self._entries.get(raw)

    def parse(self, raw: str, pairs: Sequence[tuple[str, str]]) -> Parsed:
        """``parse(pairs)`` (``pairs`` being ``raw`` decoded), remembered under ``raw``."""
        parsed = Parsed.of(parse(pairs, None, self.limits))
        if len(raw) <= self.longest and self.size:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[raw] = parsed
        return parsed
