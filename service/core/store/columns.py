"""Slots and the answer-bytes arena: each room's id, its orjson bytes, and its date paths.

A room lives in an int *slot*. ``ids[slot]`` is its ``_id`` (None once freed) and
``slot_of`` the reverse map. Its answer bytes (orjson, dates as ISO strings) live in one
``arena`` (a bytearray) at ``start[slot]`` for ``size[slot]`` bytes: a page is a few slices of
one buffer, not one Python object per room. A changed room appends its new bytes; the old ones
become garbage, and :meth:`Columns.compact` rewrites the arena once garbage passes half of it.

Slots are handed out in increasing order and never reused (a bulk build assigns them in
``ts`` order, so date ranges on ``ts`` are mostly runs of consecutive slots).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from service.core.ejson import Date

__all__ = ["Columns", "DatePaths", "date_paths", "restore_dates", "shared_paths"]

DatePaths = tuple[tuple[str | int, ...], ...]
_NO_DATES: DatePaths = ()
_SHAPES: dict[DatePaths, DatePaths] = {_NO_DATES: _NO_DATES}


def date_paths(room: dict[str, Any]) -> DatePaths:
    """The paths of every Date in a room, as one shared tuple per distinct shape: the stored
    bytes hold dates as strings, and these paths let checkpoints write them back as dates."""
    found: list[tuple[str | int, ...]] = []
    for key, value in room.items():  # rooms are shallow: the first two levels inline
        t = type(value)
        if t is Date:
            found.append((key,))
        elif t is dict:
            for sub, inner in value.items():
                u = type(inner)
                if u is Date:
                    found.append((key, sub))
                elif u is dict or u is list:
                    _deep_dates((key, sub), inner, found)
        elif t is list:
            _deep_dates((key,), value, found)
    return shared_paths(found)


def shared_paths(found: list[tuple[str | int, ...]]) -> DatePaths:
    """``found`` as a tuple shared by every room of the same shape."""
    if not found:
        return _NO_DATES
    paths = tuple(found)
    return _SHAPES.setdefault(paths, paths)


def _deep_dates(
    prefix: tuple[str | int, ...], node: Any, found: list[tuple[str | int, ...]]
) -> None:
    stack: list[tuple[tuple[str | int, ...], Any]] = [(prefix, node)]
    while stack:
        prefix, node = stack.pop()
        items = node.items() if type(node) is dict else enumerate(node)
        for key, value in items:
            t = type(value)
            if t is Date:
                found.append((*prefix, key))
            elif t is dict or t is list:
                stack.append(((*prefix, key), value))


def restore_dates(doc: Any, paths: DatePaths) -> Any:
    for path in paths:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = Date(node[path[-1]])
    return doc


class Columns:
    """Slots, ids and answer bytes; see the module docstring. Not thread-safe."""

    __slots__ = ("arena", "dates", "garbage", "ids", "size", "slot_of", "start")

    def __init__(self) -> None:
        self.ids: list[str | None] = []
        self.slot_of: dict[str, int] = {}
        self.arena = bytearray()
        self.start = np.empty(0, dtype=np.int64)
        self.size = np.empty(0, dtype=np.uint32)
        self.dates: list[DatePaths] = []
        self.garbage = 0  # bytes of the arena no slot refers to

    @property
    def capacity(self) -> int:
        return len(self.start)

    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` slots (columns reallocated, amortized O(1) a slot)."""
        old = len(self.start)
        if capacity <= old:
            return
        start = np.zeros(capacity, dtype=np.int64)
        start[:old] = self.start
        size = np.zeros(capacity, dtype=np.uint32)
        size[:old] = self.size
        self.start, self.size = start, size

    def new_slot(self, room_id: str) -> int:
        """A fresh slot for ``room_id`` (the caller grows the columns first). O(1)."""
        slot = len(self.ids)
        self.ids.append(room_id)
        self.dates.append(_NO_DATES)
        self.slot_of[room_id] = slot
        return slot

    def put(self, slot: int, doc: bytes, paths: DatePaths) -> None:
        """Store a slot's bytes (appended to the arena). O(len(doc)) amortized."""
        self.garbage += int(self.size[slot])
        self.start[slot] = len(self.arena)
        self.size[slot] = len(doc)
        self.arena += doc
        self.dates[slot] = paths
        if self.garbage > (1 << 20) and self.garbage * 2 > len(self.arena):
            self.compact()

    def free(self, slot: int) -> None:
        room_id = self.ids[slot]
        assert room_id is not None
        del self.slot_of[room_id]
        self.ids[slot] = None
        self.dates[slot] = _NO_DATES
        self.garbage += int(self.size[slot])
        self.size[slot] = 0

    def doc(self, slot: int) -> bytes:
        """A slot's bytes. O(len)."""
        a = int(self.start[slot])
        return bytes(self.arena[a : a + int(self.size[slot])])

    def docs(self, slots: list[int]) -> list[bytes]:
        arena, start, size = self.arena, self.start, self.size
        out = []
        for s in slots:
            a = int(start[s])
            out.append(bytes(arena[a : a + int(size[s])]))
        return out

    def compact(self) -> None:
        """Rewrite the arena without garbage, slots in order. O(arena)."""
        live = np.flatnonzero(self.size[: len(self.ids)]).tolist()
        arena, start, size = self.arena, self.start, self.size
        parts = []
        offset = 0
        new_start = np.zeros_like(start)
        for s in live:
            a = int(start[s])
            n = int(size[s])
            parts.append(arena[a : a + n])
            new_start[s] = offset
            offset += n
        self.arena = bytearray(b"".join(parts))
        self.start = new_start
        self.garbage = 0

    def load(
        self, arena: bytearray, start: np.ndarray[Any, Any], size: np.ndarray[Any, Any]
    ) -> None:
        """Take a bulk build's arena and each slot's (start, size) in it. O(n)."""
        self.grow(len(start))
        n = len(start)
        self.arena = arena
        self.start[:n] = start
        self.size[:n] = size
        self.garbage = len(arena) - int(size.sum(dtype=np.int64))

    def check(self) -> None:
        assert len(self.slot_of) == sum(1 for i in self.ids if i is not None), "ids: count"
        for room_id, slot in self.slot_of.items():
            assert self.ids[slot] == room_id, f"ids: {room_id} at the wrong slot"
        used = sum(int(self.size[s]) for s in self.slot_of.values())
        assert used + self.garbage == len(self.arena), "arena: garbage miscounted"
        for slot in self.slot_of.values():
            orjson.loads(self.doc(slot))
