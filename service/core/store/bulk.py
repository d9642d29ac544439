"""The bulk build: rooms -> a whole RoomStore at once, every index built in numpy.

Rooms are first reduced to plain per-field values (:func:`extract`, one pass, no index work),
then ordered by (``ts``, ``_id``) so that slots follow creation time, then each part is built
at once: codes per field (direct ones computed, dictionary ones ranked among the field's
distinct values and spread evenly over their band), each order by one ``lexsort``, equality
postings grouped in numpy, date buckets, n-grams, and the arena as one join.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pyroaring import BitMap

from service.core.query import SORTABLE_FIELDS
from service.core.store.columns import Columns, DatePaths, date_paths
from service.core.store.keys import band, direct_code, rank_key, value_at
from service.core.store.postings import DATE_FIELDS, EQ_FIELDS, eq_keys

if TYPE_CHECKING:
    from service.core.store import RoomStore

__all__ = ["Extracted", "build", "extract"]

_SORT_PARTS = tuple(tuple(f.split(".")) for f in SORTABLE_FIELDS)
_EQ_PARTS = tuple(tuple(f.split(".")) for f in EQ_FIELDS)


class Extracted:
    """Per-room plain values of a run of rooms, in input order (later duplicates win)."""

    __slots__ = ("dates", "docs", "eqs", "ids", "opened", "values")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.docs: list[bytes] = []
        self.dates: list[DatePaths] = []
        self.opened: list[bool] = []
        self.values: list[list[Any]] = [[] for _ in SORTABLE_FIELDS]
        self.eqs: list[list[Any]] = [[] for _ in EQ_FIELDS]


def extract(rooms: Iterable[dict[str, Any]]) -> Extracted:
    """One pass over ``rooms``: ids, bytes, sort values and filter values. O(total size)."""
    out = Extracted()
    ids, docs, dates, opened = out.ids, out.docs, out.dates, out.opened
    values, eqs = out.values, out.eqs
    dumps = orjson.dumps
    for room in rooms:
        rid = room["_id"]
        if type(rid) is not str:
            raise TypeError(f"room _id must be a string, got {rid!r}")
        ids.append(rid)
        docs.append(dumps(room))
        dates.append(date_paths(room))
        opened.append("open" in room)
        for column, parts in zip(values, _SORT_PARTS, strict=True):
            column.append(value_at(room, parts))
        for column, parts in zip(eqs, _EQ_PARTS, strict=True):
            column.append(value_at(room, parts))
    return out


def _dedupe(ex: Extracted) -> list[int]:
    """Indexes of the rooms kept: the last of each ``_id``."""
    last: dict[str, int] = {}
    for i, rid in enumerate(ex.ids):
        last[rid] = i
    if len(last) == len(ex.ids):
        return list(range(len(ex.ids)))
    return sorted(last.values())


def _codes(values: list[Any]) -> tuple[np.ndarray[Any, np.dtype[np.int64]], list[Any]]:
    """The codes of a field's values, and the dictionary-coded values (None where direct)."""
    n = len(values)
    codes = np.empty(n, dtype=np.int64)
    dict_values: list[Any] = [None] * n
    pending: dict[tuple[int, Any], list[int]] = {}
    for i, v in enumerate(values):
        c = direct_code(v)
        if c is None:
            dict_values[i] = v
            pending.setdefault(rank_key(v), []).append(i)
            codes[i] = 0
        else:
            codes[i] = c
    if pending:
        by_band: dict[tuple[int, int], list[tuple[int, Any]]] = {}
        for key in pending:
            by_band.setdefault(band(key), []).append(key)
        for (lo, hi), keys in by_band.items():
            keys.sort()
            step = (hi - lo) // (len(keys) + 1)
            for rank, key in enumerate(keys, 1):
                codes[pending[key]] = lo + rank * step
    return codes, dict_values


def build(
    rooms: Iterable[dict[str, Any]], block: int, gather: bool | None, fold_at: int
) -> RoomStore:
    """A new RoomStore holding ``rooms``. O(n log n)."""
    from service.core.store import RoomStore

    ex = extract(rooms)
    keep = _dedupe(ex)
    store = RoomStore(block, gather, fold_at)
    n = len(keep)
    if n == 0:
        return store
    ids = [ex.ids[i] for i in keep]
    id_codes, _ = _codes(ids)
    ts_at = SORTABLE_FIELDS.index("ts")
    ts_codes, _ = _codes([ex.values[ts_at][i] for i in keep])
    # Slot i holds the i-th room in (ts, _id) order.
    perm = np.lexsort((id_codes, ts_codes))
    order_of = [keep[i] for i in perm.tolist()]
    store._grow(n - 1)
    columns: Columns = store.columns
    for i in order_of:
        columns.new_slot(ex.ids[i])
    columns.dates[:] = [ex.dates[i] for i in order_of]
    docs = [ex.docs[i] for i in order_of]
    sizes = np.fromiter(map(len, docs), dtype=np.uint32, count=n)
    columns.load(bytearray(b"".join(docs)), sizes)
    del docs
    columns.grow(store.orders["_id"].code.shape[0])
    store.live = BitMap(range(n))
    slot_ids = np.asarray(id_codes)[perm]
    _order(store, "_id", slot_ids, [ids[i] for i in perm.tolist()])
    for f_at, field in enumerate(SORTABLE_FIELDS):
        codes, dvals = _codes([ex.values[f_at][i] for i in order_of])
        _order(store, field, codes, dvals)
        if field in DATE_FIELDS:
            store.postings.build_dates(field, store.orders[field].code)
    post = store.postings
    post.opened = BitMap(s for s, i in enumerate(order_of) if ex.opened[i])
    post.closed = store.live - post.opened
    for field, column in zip(EQ_FIELDS, ex.eqs, strict=True):
        acc: dict[str, array[int]] = {}
        for slot, i in enumerate(order_of):
            for key in eq_keys(column[i]):
                slots = acc.get(key)
                if slots is None:
                    acc[key] = array("I", (slot,))
                else:
                    slots.append(slot)
        post.eq[field] = {k: BitMap(v) for k, v in acc.items()}
    name_at = SORTABLE_FIELDS.index("name")
    store.names.build([ex.values[name_at][i] for i in order_of], list(range(n)))
    return store


def _order(store: RoomStore, field: str, codes: np.ndarray[Any, Any], dvals: list[Any]) -> None:
    order = store.orders[field]
    n = len(codes)
    order.code[:n] = codes
    vals = order.vals
    if isinstance(vals, list):
        vals[:n] = dvals
    else:
        vals.clear()
        vals.update((s, v) for s, v in enumerate(dvals) if v is not None)
    ids = store.orders["_id"].code[:n]
    main = np.lexsort((ids, codes)).astype(np.uint32) if field != "_id" else np.argsort(codes)
    order.build(np.ascontiguousarray(main, dtype=np.uint32))
