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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pyroaring import BitMap

from service.core.query import SORTABLE_FIELDS
from service.core.store.columns import DatePaths, date_paths
from service.core.store.keys import band, direct_code, rank_key
from service.core.store.orders import to_bitmap
from service.core.store.postings import DATE_FIELDS, EQ_FIELDS, eq_keys

if TYPE_CHECKING:
    from service.core.store import RoomStore

__all__ = ["Extracted", "build", "extract"]

Rows = np.ndarray[Any, np.dtype[np.int64]]


def _getter(path: str) -> tuple[str, str | None]:
    parts = path.split(".")
    assert len(parts) <= 2, "paths have one or two parts"
    return parts[0], parts[1] if len(parts) > 1 else None


_SORT_GET = tuple(_getter(f) for f in SORTABLE_FIELDS)
_EQ_GET = tuple(_getter(f) for f in EQ_FIELDS)


class Extracted:
    """What the indexes need of a run of rooms, by row (input order; later duplicates win)."""

    __slots__ = ("arena", "codes", "dates", "dvals", "eq", "ids", "names", "opened", "sizes")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.arena = bytearray()
        self.sizes = array("I")
        self.dates: list[DatePaths] = []
        self.opened = array("I")  # rows with an ``open`` field
        self.codes = [array("q") for _ in SORTABLE_FIELDS]  # direct codes (0: see dvals)
        self.dvals: list[dict[int, Any]] = [{} for _ in SORTABLE_FIELDS]  # row -> value
        self.eq: list[dict[str, array[int]]] = [{} for _ in EQ_FIELDS]  # value -> rows
        self.names: dict[int, str] = {}  # row -> name, when a string (a date's text too)


def extract(rooms: Iterable[dict[str, Any]]) -> Extracted:
    """One pass over ``rooms``. O(total size); Python work per room is field lookups only."""
    out = Extracted()
    ids, arena, sizes, dates, opened = out.ids, out.arena, out.sizes, out.dates, out.opened
    names = out.names
    sort_specs = list(zip(_SORT_GET, out.codes, out.dvals, strict=True))
    eq_specs = list(zip(_EQ_GET, out.eq, strict=True))
    dumps = orjson.dumps
    direct = direct_code
    for row, room in enumerate(rooms):
        rid = room["_id"]
        if type(rid) is not str:
            raise TypeError(f"room _id must be a string, got {rid!r}")
        ids.append(rid)
        doc = dumps(room)
        arena += doc
        sizes.append(len(doc))
        dates.append(date_paths(room))
        if "open" in room:
            opened.append(row)
        get = room.get
        name = get("name")
        if isinstance(name, str):
            names[row] = name
        for (top, sub), codes, dvals in sort_specs:
            v = get(top)
            if sub is not None:
                v = v.get(sub) if type(v) is dict else None
            c = direct(v)
            if c is None:
                dvals[row] = v
                codes.append(0)
            else:
                codes.append(c)
        for (top, sub), index in eq_specs:
            v = get(top)
            if sub is not None:
                v = v.get(sub) if type(v) is dict else None
            if v is None:
                continue
            for key in eq_keys(v):
                rows = index.get(key)
                if rows is None:
                    index[key] = array("I", (row,))
                else:
                    rows.append(row)
    return out


def _rank_codes(dvals: dict[int, Any], codes: Rows) -> None:
    """Dictionary codes for the rows in ``dvals``: distinct keys ranked, spread over bands."""
    if not dvals:
        return
    by_key: dict[tuple[int, Any], list[int]] = {}
    for row, v in dvals.items():
        by_key.setdefault(rank_key(v), []).append(row)
    by_band: dict[tuple[int, int], list[tuple[int, Any]]] = {}
    for key in by_key:
        by_band.setdefault(band(key), []).append(key)
    for (lo, hi), keys in by_band.items():
        keys.sort()
        step = (hi - lo) // (len(keys) + 1)
        for rank, key in enumerate(keys, 1):
            codes[by_key[key]] = lo + rank * step


def _id_codes(ids: list[str]) -> Rows:
    """Codes of distinct strings ``ids`` (as dictionary codes of the _id order)."""
    codes = np.zeros(len(ids), dtype=np.int64)
    _rank_codes(dict(enumerate(ids)), codes)
    return codes


def build(
    rooms: Iterable[dict[str, Any]], block: int, gather: bool | None, fold_at: int
) -> RoomStore:
    """A new RoomStore holding ``rooms``. O(n log n)."""
    from service.core.store import RoomStore

    ex = extract(rooms)
    store = RoomStore(block, gather, fold_at)
    rows_n = len(ex.ids)
    last: dict[str, int] = {rid: row for row, rid in enumerate(ex.ids)}
    keep = np.fromiter(last.values(), dtype=np.int64, count=len(last))
    keep.sort()
    n = len(keep)
    if n == 0:
        return store
    ids = [ex.ids[r] for r in keep.tolist()]
    del last
    id_codes = _id_codes(ids)
    ts_at = SORTABLE_FIELDS.index("ts")
    row_codes = [np.frombuffer(c, dtype=np.int64).copy() for c in ex.codes]
    for codes, dvals in zip(row_codes, ex.dvals, strict=True):
        _rank_codes(dvals, codes)
    perm = np.lexsort((id_codes, row_codes[ts_at][keep]))  # slot -> index into keep
    rows = keep[perm]  # slot -> row
    slot_of_row = np.full(rows_n, -1, dtype=np.int64)
    slot_of_row[rows] = np.arange(n, dtype=np.int64)
    store._grow(n - 1)
    columns = store.columns
    for i in perm.tolist():
        columns.new_slot(ids[i])
    columns.dates[:] = [ex.dates[r] for r in rows.tolist()]
    sizes = np.frombuffer(ex.sizes, dtype=np.uint32)
    starts = np.zeros(rows_n, dtype=np.int64)
    if rows_n > 1:
        np.cumsum(sizes[:-1], out=starts[1:])
    columns.load(ex.arena, starts[rows], sizes[rows])
    store.live = BitMap(range(n))
    _order(store, "_id", id_codes[perm], {s: ids[i] for s, i in enumerate(perm.tolist())})
    for field, codes, dvals in zip(SORTABLE_FIELDS, row_codes, ex.dvals, strict=True):
        slot_vals = {}
        for row, v in dvals.items():
            slot = int(slot_of_row[row])
            if slot >= 0:
                slot_vals[slot] = v
        _order(store, field, codes[rows], slot_vals)
        if field in DATE_FIELDS:
            store.postings.build_dates(field, store.orders[field].code)
    post = store.postings
    post.opened = _slots_of(np.frombuffer(ex.opened, dtype=np.uint32), slot_of_row)
    post.closed = store.live - post.opened
    for field, index in zip(EQ_FIELDS, ex.eq, strict=True):
        found = {}
        for key, rows_of in index.items():
            bm = _slots_of(np.frombuffer(rows_of, dtype=np.uint32), slot_of_row)
            if bm:
                found[key] = bm
        post.eq[field] = found
    named = [(int(slot_of_row[r]), v) for r, v in ex.names.items() if slot_of_row[r] >= 0]
    store.names.build([v for _, v in named], [s for s, _ in named])
    return store


def _slots_of(rows: np.ndarray[Any, Any], slot_of_row: Rows) -> BitMap:
    slots = slot_of_row[rows]
    return to_bitmap(slots[slots >= 0])


def _order(store: RoomStore, field: str, codes: Rows, slot_vals: dict[int, Any]) -> None:
    order = store.orders[field]
    n = len(codes)
    order.code[:n] = codes
    vals = order.vals
    if isinstance(vals, list):
        for slot, v in slot_vals.items():
            vals[slot] = v
    else:
        vals.clear()
        vals.update(slot_vals)
    if field == "_id":
        main = np.argsort(codes, kind="stable")
    else:
        main = np.lexsort((store.orders["_id"].code[:n], codes))
    order.build(np.ascontiguousarray(main, dtype=np.uint32))
