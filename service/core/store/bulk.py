"""The bulk build: rooms -> a whole RoomStore at once, every index built in numpy.

:func:`extract` reduces each room, in one pass, to what the indexes need and nothing more: its
bytes appended to one arena, direct order codes into typed arrays, the few dictionary-coded
values (strings and the like) by row, and equality postings as row lists. No per-room object
outlives the pass but the id. :func:`build` then orders the rows by (``ts``, ``_id``), so that
slots follow creation time and date ranges are runs of slots, and builds each part at once:
dictionary codes ranked among each field's distinct values and spread over their band, each
order by one ``lexsort``, postings and date buckets grouped in numpy, n-grams of the names.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pyroaring import BitMap

from service.core import ejson
from service.core.ejson import TAG
from service.core.query import SORTABLE_FIELDS
from service.core.store.keys import DATE0, STR_BAND, band, date_ms, direct_code, rank_key
from service.core.store.orders import to_bitmap
from service.core.store.postings import DATE_FIELDS, EQ_FIELDS, eq_keys

if TYPE_CHECKING:
    from service.core.store import RoomStore

__all__ = [
    "Chunk",
    "Extracted",
    "LineError",
    "build",
    "extract",
    "extract_lines",
    "extract_lines_py",
]

Rows = np.ndarray[Any, np.dtype[np.int64]]


def _getter(path: str) -> tuple[str, str | None]:
    parts = path.split(".")
    assert len(parts) <= 2, "paths have one or two parts"
    return parts[0], parts[1] if len(parts) > 1 else None


_SORT_GET = tuple(_getter(f) for f in SORTABLE_FIELDS)
_EQ_GET = tuple(_getter(f) for f in EQ_FIELDS)
_SORT_SPECS = list(_SORT_GET)
_EQ_SPECS = list(_EQ_GET)

try:  # the compiled kernel (built by the package install); the Python path is the same
    from service.core.store import _extract as _kernel
except ImportError:  # pragma: no cover - a source tree without the built extension
    _kernel = None  # type: ignore[assignment]


class Extracted:
    """What the indexes need of a run of rooms, by row (input order; later duplicates win)."""

    __slots__ = (
        "arena",
        "codes",
        "drows",
        "dvals",
        "eq_keys",
        "eq_rows",
        "ids",
        "name_rows",
        "names",
        "opened",
        "sizes",
    )

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.arena = bytearray()
        self.sizes = array("I")
        self.opened = array("I")  # rows with an ``open`` field
        self.codes = [array("q") for _ in SORTABLE_FIELDS]  # direct codes (0: see dvals)
        # Dictionary-coded values: per field, their rows and the values, in step.
        self.drows = [array("I") for _ in SORTABLE_FIELDS]
        self.dvals: list[list[Any]] = [[] for _ in SORTABLE_FIELDS]
        # Equality keys: per field, each (key, row) pair, in step (grouped once, in build).
        self.eq_keys: list[list[str]] = [[] for _ in EQ_FIELDS]
        self.eq_rows = [array("I") for _ in EQ_FIELDS]
        self.name_rows = array("I")  # rows whose name is a string (a date's text too)
        self.names: list[str] = []

    def extend(self, other: Extracted) -> None:
        """Append ``other``'s rows after these. O(rows of other)."""
        shift = len(self.ids)
        self.ids.extend(other.ids)
        self.arena += other.arena
        self.sizes.extend(other.sizes)
        self.opened.extend(_shifted(other.opened, shift))
        for mine, theirs in zip(self.codes, other.codes, strict=True):
            mine.extend(theirs)
        for rmine, rtheirs in zip(self.drows, other.drows, strict=True):
            rmine.extend(_shifted(rtheirs, shift))
        for dmine, dtheirs in zip(self.dvals, other.dvals, strict=True):
            dmine.extend(dtheirs)
        for kmine, ktheirs in zip(self.eq_keys, other.eq_keys, strict=True):
            kmine.extend(ktheirs)
        for emine, etheirs in zip(self.eq_rows, other.eq_rows, strict=True):
            emine.extend(_shifted(etheirs, shift))
        self.name_rows.extend(_shifted(other.name_rows, shift))
        self.names.extend(other.names)


def _shifted(rows: array[int], shift: int) -> array[int]:
    if not shift:
        return rows
    return array("I", (np.frombuffer(rows, dtype=np.uint32) + np.uint32(shift)).tobytes())


def extract(rooms: Iterable[dict[str, Any]]) -> Extracted:
    """One pass over decoded ``rooms``. O(total size); per room, field lookups only."""
    out = Extracted()
    add = Extractor(out).add
    for room in rooms:
        add(room, False)
    return out


class LineError(Exception):
    """A line of a JSON-lines chunk that cannot be loaded: ``line`` (1-based) and ``reason``."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(line, reason)  # the arguments, so it pickles back from a worker
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class Chunk:
    """What :func:`extract_lines` found in a run of lines (picklable, for worker processes)."""

    __slots__ = ("extracted", "lines", "not_v")

    def __init__(self) -> None:
        self.extracted = Extracted()
        self.not_v: list[int] = []  # line numbers of documents whose ``t`` is not "v"
        self.lines = 0


def extract_lines(data: bytes, first_line: int) -> Chunk:
    """Decode and extract a run of JSON lines (``first_line`` is the first one's number).

    Runs the compiled kernel (``_extract.pyx``) when it is built, else :func:`extract_lines_py`;
    both give the same Chunk. Raises LineError naming the line for a bad one. Meant to run in a
    worker process: it touches nothing but its arguments. O(bytes)."""
    if _kernel is None:
        return extract_lines_py(data, first_line)
    chunk = Chunk()
    _kernel.extract_run(
        data, first_line, chunk, _SORT_SPECS, _EQ_SPECS, _slow_line, _other, LineError
    )
    return chunk


def extract_lines_py(data: bytes, first_line: int) -> Chunk:
    """:func:`extract_lines` in Python: the reference the compiled kernel is tested against.

    The fast path (:func:`ejson.parse_tagged`) reads canonical dates in C; other lines take the
    general Extended JSON decode."""
    chunk = Chunk()
    add = Extractor(chunk.extracted).add
    lines = data.split(b"\n")
    chunk.lines = len(lines)
    for number, raw in enumerate(lines, first_line):
        try:
            doc = ejson.parse_tagged(raw)
        except orjson.JSONDecodeError as exc:
            if not raw.strip():
                continue
            raise LineError(number, f"not JSON: {exc}") from None
        if doc is None:
            _slow_line(chunk, raw, number, add)
            continue
        if type(doc) is not dict:
            raise LineError(number, "not a JSON object")
        rid = doc.get("_id")
        if type(rid) is not str or rid[:2] == TAG:
            raise LineError(number, "document without a string _id")
        kind = doc.get("t")
        if kind != "v":
            chunk.not_v.append(number)
            continue
        add(doc, True)
    return chunk


def _slow_line(
    chunk: Chunk, raw: bytes, number: int, add: Callable[[dict[str, Any], bool], None] | None = None
) -> None:
    """One line by the general Extended JSON decode (whatever the fast paths leave)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw.strip():
            return
        raise LineError(number, f"not JSON: {exc}") from None
    if type(doc) is not dict:
        raise LineError(number, "not a JSON object")
    if ejson.may_hold_wrappers(raw):
        try:
            doc = ejson.decode(doc)
        except ejson.EJsonError as exc:
            raise LineError(number, f"bad Extended JSON: {exc}") from None
    if type(doc.get("_id")) is not str:
        raise LineError(number, "document without a string _id")
    if doc.get("t") != "v":
        chunk.not_v.append(number)
        return
    (add or Extractor(chunk.extracted).add)(doc, False)


def _other(value: Any) -> Any:
    """A dictionary-coded value that is no string (kernel lines: dates still wrapped)."""
    return ejson.decode(value)


def _untagged(value: Any) -> Any:
    """A tagged object or array as the decode would give it (its dates as plain strings)."""
    return orjson.loads(ejson.untag(orjson.dumps(value)))


def _tagged_eq_keys(value: Any) -> Iterable[str]:
    if type(value) is str:
        return () if value[:2] == TAG else (value,)
    if type(value) is list:
        return dict.fromkeys(v for v in value if type(v) is str and v[:2] != TAG)
    return ()


class Extractor:
    """Appends rooms to an Extracted; ``tagged`` rooms come from :func:`ejson.parse_tagged`."""

    __slots__ = ("eq_specs", "out", "sort_specs")

    def __init__(self, out: Extracted) -> None:
        self.out = out
        self.sort_specs = list(zip(_SORT_GET, out.codes, out.drows, out.dvals, strict=True))
        self.eq_specs = list(zip(_EQ_GET, out.eq_keys, out.eq_rows, strict=True))

    def add(self, room: dict[str, Any], tagged: bool) -> None:
        out = self.out
        row = len(out.ids)
        rid = room["_id"]
        if type(rid) is not str:
            raise TypeError(f"room _id must be a string, got {rid!r}")
        out.ids.append(rid)
        doc = orjson.dumps(room)
        if tagged:
            doc = ejson.untag(doc)
        out.arena += doc
        out.sizes.append(len(doc))
        if "open" in room:
            out.opened.append(row)
        get = room.get
        name = get("name")
        if isinstance(name, str):
            out.name_rows.append(row)
            out.names.append(name[2:] if tagged and name[:2] == TAG else name)
        for (top, sub), codes, drows, dvals in self.sort_specs:
            v = get(top)
            if sub is not None:
                v = v.get(sub) if type(v) is dict else None
            if tagged and type(v) is str and v[:2] == TAG:
                codes.append(DATE0 + date_ms(v[2:]))
                continue
            c = direct_code(v)
            if c is None:
                if tagged and (type(v) is dict or type(v) is list):
                    v = _untagged(v)
                drows.append(row)
                dvals.append(v)
                codes.append(0)
            else:
                codes.append(c)
        keys_of = _tagged_eq_keys if tagged else eq_keys
        for (top, sub), keys, rows in self.eq_specs:
            v = get(top)
            if sub is not None:
                v = v.get(sub) if type(v) is dict else None
            if v is None:
                continue
            for key in keys_of(v):
                keys.append(key)
                rows.append(row)


def _rank_codes(rows: array[int], values: list[Any], codes: Rows) -> None:
    """Dictionary codes for ``values`` (at ``rows``): distinct keys ranked, spread evenly over
    their band. Plain strings (the common case) are ranked as they are, without keys."""
    if not values:
        return
    at = np.frombuffer(rows, dtype=np.uint32)
    if set(map(type, values)) == {str}:
        lo, hi = STR_BAND
        distinct_n, ranks = _string_ranks(values)
        step = (hi - lo) // (distinct_n + 1)
        codes[at] = lo + (ranks + 1) * step
        return
    by_key: dict[tuple[int, Any], list[int]] = {}
    for i, v in enumerate(values):
        by_key.setdefault(rank_key(v), []).append(i)
    by_band: dict[tuple[int, int], list[tuple[int, Any]]] = {}
    for key in by_key:
        by_band.setdefault(band(key), []).append(key)
    for (lo, hi), keys in by_band.items():
        keys.sort()
        step = (hi - lo) // (len(keys) + 1)
        for rank, key in enumerate(keys, 1):
            codes[at[by_key[key]]] = lo + rank * step


#: numpy ranks strings of up to this many characters (longer ones: Python's sort)
_NUMPY_CHARS = 64


def _string_ranks(values: list[str]) -> tuple[int, Rows]:
    """(number of distinct ``values``, each value's rank among them, from 0), in code point
    order. Mostly distinct values (judged from a sample) are ranked by numpy's sort of their
    UTF-8 bytes (whose order is the code points'), several times faster than Python's sort,
    unless a value is long or holds a NUL (which numpy's fixed-width strings drop at the end);
    others by a dict of the distinct values. O(n log n)."""
    n = len(values)
    sample = values[:: max(1, n // 4096)]
    if (
        4 * len(set(sample)) > len(sample)
        and max(map(len, values)) <= _NUMPY_CHARS
        and "\x00" not in "".join(values)
    ):
        encoded = np.array([v.encode("utf-8", "surrogatepass") for v in values])
        by = np.argsort(encoded)
        ordered = encoded[by]
        step = np.empty(n, dtype=np.int64)
        step[0] = 0
        np.not_equal(ordered[1:], ordered[:-1], out=step[1:])
        ranks = np.empty(n, dtype=np.int64)
        ranks[by] = np.cumsum(step)
        return int(ranks[by[-1]]) + 1, ranks
    distinct = sorted(set(values))
    rank_of = dict(zip(distinct, range(len(distinct)), strict=True))
    ranks = np.fromiter(map(rank_of.__getitem__, values), np.int64, n)
    if 2 * len(distinct) < n:  # repeated values: keep one object of each
        values[:] = map(dict(zip(distinct, distinct, strict=True)).__getitem__, values)
    return len(distinct), ranks


def _id_codes(ids: list[str]) -> Rows:
    """Codes of distinct strings ``ids`` (as dictionary codes of the _id order)."""
    codes = np.zeros(len(ids), dtype=np.int64)
    _rank_codes(array("I", range(len(ids))), ids, codes)
    return codes


def build(ex: Extracted, block: int, gather: bool | None, fold_at: int | None) -> RoomStore:
    """A new RoomStore holding the extracted rooms (a later duplicate wins). O(n log n)."""
    from service.core.store import RoomStore

    store = RoomStore(block, gather, fold_at)
    rows_n = len(ex.ids)
    last = dict(zip(ex.ids, range(rows_n), strict=True))  # a later duplicate wins
    n = len(last)
    if n == 0:
        return store
    if n == rows_n:
        keep = np.arange(n, dtype=np.int64)
        ids = ex.ids
    else:
        keep = np.fromiter(last.values(), dtype=np.int64, count=n)
        keep.sort()
        ids = list(map(ex.ids.__getitem__, keep.tolist()))
    del last
    id_codes = _id_codes(ids)
    ts_at = SORTABLE_FIELDS.index("ts")
    row_codes = [np.frombuffer(c, dtype=np.int64).copy() for c in ex.codes]
    for codes, drows, dvals in zip(row_codes, ex.drows, ex.dvals, strict=True):
        _rank_codes(drows, dvals, codes)
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[np.argsort(id_codes)] = np.arange(n, dtype=np.int64)
    perm = sort_by_code_then_id(row_codes[ts_at][keep], id_rank)  # slot -> index into keep
    rows = keep[perm]  # slot -> row
    slot_of_row = np.full(rows_n, -1, dtype=np.int64)
    slot_of_row[rows] = np.arange(n, dtype=np.int64)
    store._grow(n - 1)
    columns = store.columns
    slot_ids = list(map(ids.__getitem__, perm.tolist()))
    columns.slot_of = dict(zip(slot_ids, range(n), strict=True))
    columns.ids = list(slot_ids)  # (a list of str | None: a freed slot's id is None)
    sizes = np.frombuffer(ex.sizes, dtype=np.uint32)
    starts = np.zeros(rows_n, dtype=np.int64)
    if rows_n > 1:
        np.cumsum(sizes[:-1], out=starts[1:])
    columns.load(ex.arena, starts[rows], sizes[rows])
    store.live = BitMap(range(n))
    slot_id_rank = id_rank[perm]
    _order(store, "_id", id_codes[perm], np.arange(n), slot_ids, slot_id_rank)
    for field, codes, drows, dvals in zip(
        SORTABLE_FIELDS, row_codes, ex.drows, ex.dvals, strict=True
    ):
        slots = slot_of_row[np.frombuffer(drows, dtype=np.uint32)]
        _order(store, field, codes[rows], slots, dvals, slot_id_rank)
        if field in DATE_FIELDS:
            store.postings.build_dates(field, store.orders[field].code)
    post = store.postings
    post.opened = _slots_of(np.frombuffer(ex.opened, dtype=np.uint32), slot_of_row)
    post.closed = store.live - post.opened
    for field, keys, key_rows in zip(EQ_FIELDS, ex.eq_keys, ex.eq_rows, strict=True):
        post.eq[field] = _postings(keys, np.frombuffer(key_rows, dtype=np.uint32), slot_of_row)
    name_slots = slot_of_row[np.frombuffer(ex.name_rows, dtype=np.uint32)]
    kept = name_slots >= 0
    if kept.all():
        store.names.build(ex.names, name_slots.tolist())
    else:
        names = [v for v, k in zip(ex.names, kept.tolist(), strict=True) if k]
        store.names.build(names, name_slots[kept].tolist())
    return store


def _postings(keys: list[str], rows: np.ndarray[Any, Any], slot_of_row: Rows) -> dict[str, BitMap]:
    """key -> BitMap of the slots of ``rows`` (in step with ``keys``): the keys coded by one
    dict, the (code, slot) pairs sorted at once, one BitMap a key. O(p log p) for p pairs."""
    if not keys:
        return {}
    distinct = list(dict.fromkeys(keys))
    code_of = dict(zip(distinct, range(len(distinct)), strict=True))
    codes = np.fromiter(map(code_of.__getitem__, keys), np.int64, len(keys))
    slots = slot_of_row[rows]
    kept = slots >= 0
    pairs = np.sort((codes[kept] << 32) | slots[kept])
    if not len(pairs):
        return {}
    held = pairs >> 32
    cuts = (np.flatnonzero(held[1:] != held[:-1]) + 1).tolist()
    slots32 = (pairs & 0xFFFF_FFFF).astype(np.uint32)
    found = {}
    for a, b in zip([0, *cuts], [*cuts, len(pairs)], strict=True):
        found[distinct[int(held[a])]] = BitMap(array("I", slots32[a:b].tobytes()))
    return found


def _slots_of(rows: np.ndarray[Any, Any], slot_of_row: Rows) -> BitMap:
    slots = slot_of_row[rows]
    return to_bitmap(slots[slots >= 0])


def _objects(values: list[Any]) -> np.ndarray[Any, np.dtype[np.object_]]:
    """``values`` as a 1-d object array (never nested: lists stay list objects)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _order(
    store: RoomStore, field: str, codes: Rows, slots: Rows, values: list[Any], id_rank: Rows
) -> None:
    """Set a field's codes (by slot) and dictionary values (``values`` at ``slots``; a slot
    below 0 is a dropped duplicate), then build its order (``id_rank``: each slot's rank among
    the ids, which breaks ties)."""
    order = store.orders[field]
    n = len(codes)
    order.code[:n] = codes
    vals = order.vals
    kept = slots >= 0
    if not kept.all():
        slots = slots[kept]
        values = [v for v, k in zip(values, kept.tolist(), strict=True) if k]
    if isinstance(vals, list):
        if len(values):
            column = np.empty(len(vals), dtype=object)
            column[slots] = _objects(values)
            vals[:] = column.tolist()
    else:
        vals.clear()
        vals.update(zip(slots.tolist(), values, strict=True))
    if field == "_id":
        main = np.empty(n, dtype=np.int64)
        main[id_rank] = np.arange(n, dtype=np.int64)
    else:
        main = sort_by_code_then_id(codes, id_rank)
    # Every slot is in every order: its merged slots are the live ones (a copy: never shared).
    order.build(np.ascontiguousarray(main, dtype=np.uint32), BitMap(store.live))


def sort_by_code_then_id(codes: Rows, id_rank: Rows) -> Rows:
    """The slots ordered by (``codes``, ``id_rank``) (``id_rank``: each slot's rank among the
    ids, a permutation of 0..n-1), as ``np.lexsort((id_rank, codes))`` gives them. Two
    unstable argsorts, which numpy runs several times faster than a lexsort: codes, then (the
    dense rank of the code, the id rank) packed into one int64. O(n log n)."""
    n = len(codes)
    by_code = np.argsort(codes)
    ordered = codes[by_code]
    if n < 2 or bool((ordered[1:] != ordered[:-1]).all()):
        return by_code
    assert n < 1 << 31, "ranks must fit 31 bits each"
    step = np.empty(n, dtype=np.int64)
    step[0] = 0
    np.not_equal(ordered[1:], ordered[:-1], out=step[1:])
    dense = np.empty(n, dtype=np.int64)
    dense[by_code] = np.cumsum(step)
    return np.argsort((dense << 31) | id_rank)
