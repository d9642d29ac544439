"""RoomStore: voip rooms as columns, with bitmap filters, sort orders and an answer arena.

Layout (one module a responsibility):

- ``columns``: slots, ids, the answer-bytes arena;
- ``keys``: MongoDB's cross-type order as int64 codes (the one place it is defined);
- ``codes``: codes for strings and other dictionary-coded values;
- ``orders``: per sortable field, codes per slot, the merged order and the buffer of changes;
- ``postings``: equality, ``open`` and date-bucket bitmaps;
- ``names``: the ``roomName`` n-gram index (``grams``: its bulk build in numpy);
- ``plan``: a query -> its matching slots; ``page``: matches -> a sorted page;
- ``bulk``: the bulk build; ``check``: every invariant against a brute-force rebuild.

Ownership and mutation order. Only this front changes the parts, and always in this order,
within one call (no ``await`` in between, so a reader never sees half a change):

1. ``columns``: take a slot (new room) — slots are never reused;
2. ``postings`` and ``names``: discard the old values (read back from the old bytes), add the new;
3. each ``orders[field].set`` (codes, buffer), then the date buckets from the old and new codes;
4. ``columns.put`` (new bytes) or ``columns.free``; ``live``; ``version += 1``;
5. the change record to every watcher; then buffers past their size are merged.

A batch (:meth:`RoomStore.apply_batch`) keeps the same order per phase rather than per change:
steps 1 and 4 op by op (slots, bytes, ``live``, ``version``, the change records kept), then 2
and 3 once per touched slot, from its state before the batch to its state after it (sort orders
field by field over all the slots at once), then 5 for every record in order, and the merges.

Everything handed out (bitmaps from ``postings``, arrays from ``orders``) is the store's own:
read it, never change it. Not thread-safe: call it from one thread (the event loop).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pyroaring import BitMap

from service.core.ejson import Date
from service.core.query import SORTABLE_FIELDS, RoomQuery
from service.core.store import bulk, check, page, plan
from service.core.store.columns import Columns
from service.core.store.keys import DICT_HI, NULL
from service.core.store.names import NameIndex
from service.core.store.orders import SortOrder
from service.core.store.postings import DATE_FIELDS, Postings

__all__ = ["Change", "RoomStore"]

DATES = DICT_HI  # every date's code is above this, every other code below

#: Fields whose values are mostly dictionary-coded (strings): their values live in a list.
_DENSE = frozenset({"name", "fname", "queue", "direction", "servedBy.username", "v.username"})


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change: the room's bytes before and after (None: absent)."""

    room_id: str
    before: bytes | None
    after: bytes | None


def _dumps(room: dict[str, Any]) -> bytes:
    return orjson.dumps(room)


_SCALARS = frozenset({str, int, float, type(None)})


_FOLD_MIN = 8192


def _paths(
    orders: dict[str, SortOrder],
) -> tuple[tuple[str, str, str | None, SortOrder, bool], ...]:
    """Per sortable field: (field, its first key, its second key or None, order, dated)."""
    out = []
    for field in SORTABLE_FIELDS:
        parts = field.split(".")
        assert len(parts) <= 2, "a sortable field nested deeper than two keys"
        sub = parts[1] if len(parts) == 2 else None
        out.append((field, parts[0], sub, orders[field], field in DATE_FIELDS))
    return tuple(out)


class RoomStore:
    """Voip rooms by ``_id``, indexed for every filter and sort of GET /api/v1/voip/rooms.

    ``version`` goes up by one on every change and never on a no-op. ``gather`` forces the page
    strategy (tests); ``block`` and ``fold_at`` size the sort orders' blocks and buffers.
    """

    def __init__(
        self, block_size: int = 4096, gather: bool | None = None, fold_at: int | None = None
    ) -> None:
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.version = 0
        self.gather = gather
        self.block = block_size
        self.fold_at = fold_at  # None: see fold_limit()
        self.columns = Columns()
        self.live = BitMap()
        self.postings = Postings()
        self.names = NameIndex()
        self.watchers: list[Callable[[Change], None]] = []
        ids = SortOrder("_id", None, dense=True, block=block_size, fold_at=fold_at or _FOLD_MIN)
        self.orders: dict[str, SortOrder] = {"_id": ids}
        for field in SORTABLE_FIELDS:
            self.orders[field] = SortOrder(
                field, ids, dense=field in _DENSE, block=block_size, fold_at=fold_at or _FOLD_MIN
            )
        self._fields = tuple(
            (f, tuple(f.split(".")), self.orders[f], f in DATE_FIELDS) for f in SORTABLE_FIELDS
        )
        self._paths = _paths(self.orders)

    # -- reads ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of rooms; O(1)."""
        return len(self.columns.slot_of)

    def get(self, room_id: str) -> bytes | None:
        """The stored orjson bytes of a room, or None; O(size)."""
        slot = self.columns.slot_of.get(room_id)
        return None if slot is None else self.columns.doc(slot)

    def open_count(self) -> int:
        """Rooms that have an ``open`` field; O(1)."""
        return len(self.postings.opened)

    def iter_rooms(self) -> Iterator[bytes]:
        """Every stored room's bytes, in slot order; O(n) for the whole walk."""
        columns = self.columns
        for slot in list(columns.slot_of.values()):
            yield columns.doc(slot)

    def page(self, q: RoomQuery) -> tuple[int, list[bytes]]:
        """(total matches, the requested page as stored bytes). Filters are bitmap operations;
        the page is a partial sort of the matches or a walk of the first key's order
        (page.py), whichever the estimate says is cheaper."""
        m = plan.matches(self, q)
        total = len(self.live) if m is None else len(m)
        if total == 0 or q.offset >= total or q.count == 0:
            return total, []
        need = total - q.offset if q.count is None else min(q.count, total - q.offset)
        slots = page.page_slots(self, m, tuple(q.sort), q.offset, need)
        return total, self.columns.docs(slots.tolist())

    # -- changes ----------------------------------------------------------------------------
    def watch(self, callback: Callable[[Change], None]) -> None:
        """Call ``callback`` with every applied change, right after it is applied."""
        self.watchers.append(callback)

    def _grow(self, slot: int) -> None:
        if slot < self.columns.capacity:
            return
        self.reserve(max(1024, 2 * self.columns.capacity, slot + 1))

    def reserve(self, capacity: int) -> None:
        """Room for ``capacity`` slots in every column and sort order, so that no new room
        reallocates them (which copies every per-slot array at once, a pause of about 0.2 s at
        1,000,000 rooms) before the slots run out. O(capacity) when it grows."""
        self.columns.grow(capacity)
        for order in self.orders.values():
            order.grow(capacity)

    def headroom(self) -> None:
        """Room for an eighth more rooms than held (at least 1,024): a freshly loaded store
        takes its first new rooms without reallocating. O(n) once."""
        n = len(self.columns.ids)
        self.reserve(n + max(1024, n >> 3))

    def upsert(self, room: dict[str, Any]) -> bool:
        """Store ``room`` (replacing the room with its ``_id``); False when the identical room
        is already stored. O(F) direct codes, O(log n) per new string value, O(len(name)) when
        the name changed; merges of the buffers amortize to O(n / fold) per change."""
        rid = room["_id"]
        if type(rid) is not str:
            raise TypeError(f"room _id must be a string, got {rid!r}")
        doc = _dumps(room)
        columns = self.columns
        post = self.postings
        slot = columns.slot_of.get(rid)
        before: bytes | None = None
        touched: list[SortOrder] = []
        if slot is None:
            slot = len(columns.ids)
            self._grow(slot)
            columns.new_slot(rid)
            ids = self.orders["_id"]
            ids.set(slot, rid, True)
            touched.append(ids)
            post.add(slot, room)
            self.names.add(slot, room.get("name"))
            for field, top, sub, order, dated in self._paths:
                value = room.get(top)
                if sub is not None:
                    value = value.get(sub) if type(value) is dict else None
                order.set(slot, value, True)
                touched.append(order)
                if dated:
                    post.move_date(field, slot, NULL, int(order.code[slot]))
        else:
            before = columns.doc(slot)
            if before == doc:
                return False
            old = orjson.loads(before)
            post.update(slot, old, room)
            name = room.get("name")
            old_name = old.get("name")
            if old_name != name:
                self.names.discard(slot, old_name)
            if slot not in self.names.named:
                self.names.add(slot, name)
            for field, top, sub, order, dated in self._paths:
                value = room.get(top)
                was = old.get(top)
                if sub is not None:
                    value = value.get(sub) if type(value) is dict else None
                    was = was.get(sub) if type(was) is dict else None
                if value == was:
                    # Equal to the value read back from the bytes (a date there is a plain
                    # string): the same code when of one scalar type, and a string that is a
                    # date exactly when the code says it was one.
                    kind = type(value)
                    if kind is Date:
                        if type(was) is str and order.code[slot] >= DATES:
                            continue
                    elif (
                        kind is type(was)
                        and kind in _SCALARS
                        and (kind is not str or order.code[slot] < DATES)
                    ):
                        continue
                code = int(order.code[slot])
                if order.set(slot, value, False):
                    touched.append(order)
                    if dated:
                        post.move_date(field, slot, code, int(order.code[slot]))
        columns.put(slot, doc)
        self.live.add(slot)
        self.version += 1
        self._changed((Change(rid, before, doc),), touched)
        return True

    def apply_batch(self, ops: Sequence[tuple[bool, Any]]) -> list[bool | Exception]:
        """Apply many changes in one call, as :meth:`upsert` (``(True, room)``) and
        :meth:`remove` (``(False, room_id)``) one by one would: the same rooms, results, version
        and change records (one per applied change, in order, with the right before and after).
        Returns each op's result; an op that cannot apply (no string ``_id``, a value orjson
        cannot serialize) gives its exception and changes nothing, the others apply.

        The bytes go in op by op; the indexes then move each touched slot from its state before
        the batch to its state after it, field by field over all slots at once (numpy and
        bitmaps), and buffers past their size are merged once. Watchers get the change records
        after that. O(k) Python steps for k ops plus O(log n) per new dictionary-coded value."""
        columns = self.columns
        results: list[bool | Exception] = []
        changes: list[Change] = []
        first: dict[int, bytes | None] = {}  # touched slot -> its bytes before the batch
        final: dict[int, dict[str, Any] | None] = {}  # touched slot -> its room after
        slot_of = columns.slot_of
        for upsert, item in ops:
            if upsert:
                try:
                    rid = item["_id"]
                    if type(rid) is not str:
                        raise TypeError(f"room _id must be a string, got {rid!r}")
                    doc = _dumps(item)
                except Exception as exc:
                    results.append(exc)
                    continue
                slot = slot_of.get(rid)
                if slot is None:
                    slot = len(columns.ids)
                    self._grow(slot)
                    columns.new_slot(rid)
                    first[slot] = None
                    before = None
                else:
                    before = columns.doc(slot)
                    if before == doc:
                        results.append(False)
                        continue
                    if slot not in first:
                        first[slot] = before
                final[slot] = item
                columns.put(slot, doc)
                self.live.add(slot)
                changes.append(Change(rid, before, doc))
            else:
                slot = slot_of.get(item)
                if slot is None:
                    results.append(False)
                    continue
                before = columns.doc(slot)
                if slot not in first:
                    first[slot] = before
                final[slot] = None
                columns.free(slot)
                self.live.discard(slot)
                changes.append(Change(item, before, None))
            self.version += 1
            results.append(True)
        if first:
            self._changed(changes, self._reindex(first, final))
        return results

    def _reindex(
        self, first: dict[int, bytes | None], final: dict[int, dict[str, Any] | None]
    ) -> list[SortOrder]:
        """Move each slot's index entries from its state ``first`` (bytes, None: new) to its
        state ``final`` (room, None: removed); the sort orders touched."""
        post, names = self.postings, self.names
        new_slots: list[int] = []
        new_rooms: list[dict[str, Any]] = []
        old_slots: list[int] = []
        old_rooms: list[dict[str, Any]] = []
        touched: set[SortOrder] = set()
        for slot, was in first.items():
            room = final[slot]
            if was is None:
                if room is not None:
                    new_slots.append(slot)
                    new_rooms.append(room)
                    post.add(slot, room)
                    names.add(slot, room.get("name"))
                continue
            old = orjson.loads(was)
            if room is None:
                self._unindex(slot, old)
                touched.update(self.orders.values())
                continue
            old_slots.append(slot)
            old_rooms.append(room)
            post.update(slot, old, room)
            name, old_name = room.get("name"), old.get("name")
            if old_name != name:
                names.discard(slot, old_name)
            if slot not in names.named:
                names.add(slot, name)
        if new_slots:
            ids = self.orders["_id"]
            ids.set_many(new_slots, [r["_id"] for r in new_rooms], True)
            touched.add(ids)
        for slots, rooms, fresh in ((new_slots, new_rooms, True), (old_slots, old_rooms, False)):
            if not slots:
                continue
            for field, top, sub, order, dated in self._paths:
                if sub is None:
                    values = [r.get(top) for r in rooms]
                else:
                    values = [v.get(sub) if type(v := r.get(top)) is dict else None for r in rooms]
                moved, was_codes, now_codes = order.set_many(slots, values, fresh)
                if len(moved):
                    touched.add(order)
                    if dated:
                        move = post.move_date
                        for s, a, b in zip(
                            moved.tolist(), was_codes.tolist(), now_codes.tolist(), strict=True
                        ):
                            move(field, s, a, b)
        return list(touched)

    def _unindex(self, slot: int, old: dict[str, Any]) -> None:
        """Take a removed slot (its room ``old``, read back from its bytes) out of every index."""
        self.postings.discard(slot, old)
        self.names.discard(slot, old.get("name"))
        for field, _, order, dated in self._fields:
            if dated:
                self.postings.move_date(field, slot, int(order.code[slot]), NULL)
            order.free(slot)
        self.orders["_id"].free(slot)

    def remove(self, room_id: str) -> bool:
        """Forget a room; False when unknown. O(F + len(name))."""
        columns = self.columns
        slot = columns.slot_of.get(room_id)
        if slot is None:
            return False
        before = columns.doc(slot)
        self._unindex(slot, orjson.loads(before))
        columns.free(slot)
        self.live.discard(slot)
        self.version += 1
        self._changed((Change(room_id, before, None),), list(self.orders.values()))
        return True

    def fold_limit(self) -> int:
        """Buffered slots at which a sort order is merged: ``fold_at`` when given, else one
        sixty-fourth of the rooms and at least 8,192, so that merges (O(n) each) amortize to
        O(1) a change at any size."""
        if self.fold_at is not None:
            return self.fold_at
        return max(_FOLD_MIN, len(self.live) >> 6)

    def _changed(self, changes: Sequence[Change], touched: list[SortOrder]) -> None:
        """Hand ``changes`` to every watcher, in order; then merge the touched sort orders
        whose buffers reached the fold limit."""
        for change in changes:
            for watcher in self.watchers:
                watcher(change)
        limit = self.fold_limit()
        for order in touched:
            if len(order.pending) + len(order.stale) >= limit:
                order.merge()

    def merge(self) -> None:
        """Fold every sort order's buffer in now (tests, and after a burst). O(F n)."""
        for order in self.orders.values():
            order.merge()

    def bulk_load(self, rooms: Iterable[dict[str, Any]]) -> int:
        """Load a snapshot into an empty store, building every index in bulk; returns the rooms
        stored (a later room with the same ``_id`` replaces an earlier one). O(n log n).

        All or nothing: when a room cannot be stored (no string ``_id``, or a value orjson cannot
        serialize) the store is left empty and the error raised."""
        if self.columns.slot_of:
            raise ValueError("bulk_load needs an empty store")
        return self.load_extracted(bulk.extract(rooms))

    def load_extracted(self, extracted: bulk.Extracted) -> int:
        """Load rooms already reduced by :mod:`bulk` (e.g. in worker processes) into an empty
        store, building every index in bulk; returns the rooms stored. O(n log n)."""
        if self.columns.slot_of:
            raise ValueError("bulk_load needs an empty store")
        built = bulk.build(extracted, self.block, self.gather, self.fold_at)
        self.columns, self.live = built.columns, built.live
        self.postings, self.names = built.postings, built.names
        self.orders, self._fields = built.orders, built._fields
        self._paths = _paths(self.orders)
        self.headroom()
        n = len(self)
        self.version += 1 if n else 0
        return n

    def _check(self) -> None:
        """Every invariant, against a brute-force rebuild (tests). O(n log n)."""
        check.check(self)
