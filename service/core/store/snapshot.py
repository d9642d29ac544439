"""The store's own checkpoint format: a whole RoomStore as files in a directory, loaded in seconds.

:func:`capture` takes an :class:`Image` of the store between two changes (on the event loop):
copies of the numpy columns, shallow copies of the lists and dicts of values, every bitmap
serialized (faster than copying it), and an :class:`~service.core.store.columns.ArenaView` of the
answer bytes (no copy: bytes once written never move). Nothing in an image is changed by the
store afterwards, so :func:`save` may write it in a worker thread while events keep being
applied.

Files (every one listed with its size in the section :func:`save` returns):

- ``<name>.npy``: numpy arrays (slot columns ``start``/``size``, each order's ``code`` and
  ``main``, and the index arrays of the value columns below), read back with ``np.load``;
- ``arena.bin``: the written bytes of each arena chunk, one after the other (chunk capacities
  and written lengths in the section), so every saved address stays valid;
- ``bitmaps-<family>.bin`` + ``bitmaps-<family>.json``: pyroaring's portable serialization of
  each bitmap of a family (``sets``, ``eq``, ``buckets``, ``tris``, ``quads``, ``buffers``),
  one after the other, and the family's keys and end offsets;
- ``strings-<name>.json``: lists of strings and other JSON values (orjson; the rare values
  JSON cannot hold exactly, such as non-finite floats, through the standard json module);
- value columns (an order's ``vals``): the distinct values once, and per slot an int32 index.

Derived parts are rebuilt on load rather than saved: ``slot_of`` from ``ids``, each order's
``mcode`` (``code[main]``), ``merged`` and per-block bitmaps (:meth:`SortOrder.build`). Buffers
of recent changes are saved as they are (``main`` plus the ``pending`` and ``stale`` bitmaps)
and merged on load, so that capture need not merge on the event loop.

Complexity: capture O(n) memory copies plus O(bitmaps); save and load O(size of the state), with
Python work per distinct value or bitmap, never per room except C-level list building.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pyroaring import BitMap

from service.core.store.columns import ArenaView

if TYPE_CHECKING:
    from service.core.store import RoomStore

__all__ = ["VERSION", "FormatError", "Image", "capture", "load", "save"]

#: The layout written by :func:`save`; :func:`load` reads only this one.
VERSION = 1

Array = np.ndarray[Any, Any]


class FormatError(Exception):
    """A saved store that cannot be loaded: a file missing, short, or not what it should be."""


@dataclass(frozen=True, slots=True)
class OrderImage:
    """One sort order: codes per slot, the merged order, and the values (its buffer's bitmaps
    are in the image's ``buffers`` family)."""

    name: str
    code: Array
    main: Array
    vals: list[Any] | dict[int, Any] | None  # None: the ids (the _id order's values)


#: A family of bitmaps, serialized: (keys, pyroaring's portable bytes of each).
Family = tuple[list[Any], list[bytes]]


@dataclass(frozen=True, slots=True)
class Image:
    """A RoomStore's state at one moment, owned by nobody else (see the module docstring)."""

    version: int
    rooms: int
    ids: list[str | None]
    start: Array
    size: Array
    arena: ArenaView
    garbage: int
    bitmaps: dict[str, Family]
    lows: dict[int, str]
    orders: list[OrderImage]


def _family(items: Iterable[tuple[Any, BitMap]]) -> Family:
    keys: list[Any] = []
    blobs: list[bytes] = []
    for key, bm in items:
        keys.append(key)
        blobs.append(bm.serialize())
    return keys, blobs


def capture(store: RoomStore) -> Image:
    """The store's state now, for :func:`save` in another thread. Call it between two changes
    (on the event loop). O(n) memory copies and O(bitmaps) serializations; no merge."""
    columns = store.columns
    n = len(columns.ids)
    post, names = store.postings, store.names
    sets = {
        "live": store.live,
        "opened": post.opened,
        "closed": post.closed,
        "short": names.short,
        "named": names.named,
    }
    bitmaps = {
        "sets": _family(sets.items()),
        "eq": _family(((f, v), bm) for f, d in post.eq.items() for v, bm in d.items()),
        "buckets": _family(
            ((f, level, k), bm)
            for f, levels in post.buckets.items()
            for level, d in enumerate(levels)
            for k, bm in d.items()
        ),
        "tris": _family(names.tris.items()),
        "quads": _family(names.quads.items()),
        "buffers": _family(
            ((name, part), bm)
            for name, order in store.orders.items()
            for part, bm in (("pending", order.pending), ("stale", order.stale))
        ),
    }
    orders = []
    for name, order in store.orders.items():
        vals = order.vals
        if name == "_id":
            kept: list[Any] | dict[int, Any] | None = None  # the same as the ids
        else:
            kept = vals[:n] if isinstance(vals, list) else dict(vals)
        orders.append(OrderImage(name, order.code[:n].copy(), order.main.copy(), kept))
    return Image(
        version=store.version,
        rooms=len(columns.slot_of),
        ids=columns.ids[:],
        start=columns.start[:n].copy(),
        size=columns.size[:n].copy(),
        arena=columns.view(),
        garbage=columns.garbage,
        bitmaps=bitmaps,
        lows=names.lows.copy(),
        orders=orders,
    )


# -- writing ---------------------------------------------------------------------------------


class _Writer:
    """Files of one saved store: each written whole, fsynced, and listed with its size."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[str, int] = {}

    def write(self, name: str, parts: Iterable[bytes | memoryview]) -> None:
        path = self.directory / name
        with open(path, "wb") as out:
            for part in parts:
                out.write(part)
            out.flush()
            os.fsync(out.fileno())
        self.files[name] = path.stat().st_size

    def array(self, name: str, array: Array) -> None:
        path = self.directory / f"{name}.npy"
        with open(path, "wb") as out:
            np.save(out, np.ascontiguousarray(array), allow_pickle=False)
            out.flush()
            os.fsync(out.fileno())
        self.files[path.name] = path.stat().st_size

    def values(self, name: str, values: list[Any]) -> None:
        """A list of JSON values (strings, None, numbers, lists, dicts)."""
        self.write(f"strings-{name}.json", [_dump_values(values)])

    def bitmaps(self, family: str, keys: list[Any], blobs: list[bytes]) -> None:
        ends = np.cumsum([len(b) for b in blobs], dtype=np.int64).tolist() if blobs else []
        self.write(f"bitmaps-{family}.bin", blobs)
        self.write(f"bitmaps-{family}.json", [orjson.dumps({"keys": keys, "ends": ends})])

    def column(self, name: str, values: list[Any]) -> None:
        """A value column: the distinct values once, an int32 index per entry."""
        try:
            distinct = list(dict.fromkeys(values))  # C speed when every value is hashable
            position = {v: i for i, v in enumerate(distinct)}
            index = np.fromiter(map(position.__getitem__, values), np.int32, len(values))
        except TypeError:  # lists or dicts among the values: by their canonical JSON
            keys = [_hashable(v) for v in values]
            first = dict(zip(keys, values, strict=True))
            spot = {k: i for i, k in enumerate(dict.fromkeys(keys))}
            distinct = list(first.values())
            index = np.fromiter(map(spot.__getitem__, keys), np.int32, len(keys))
        self.values(name, distinct)
        self.array(f"{name}-index", index)


def _hashable(value: Any) -> Any:
    if isinstance(value, list | dict):
        return (type(value).__name__, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    return value


def _dump_values(values: list[Any]) -> bytes:
    if all(type(v) is str for v in values):
        return orjson.dumps(values)
    # Exact for every value a room can hold: bools, ints beyond 64 bits, non-finite floats.
    return json.dumps(values, ensure_ascii=False).encode()


def save(image: Image, directory: Path) -> dict[str, Any]:
    """Write ``image`` into ``directory`` (existing, empty); the section of the manifest that
    describes it (counts, chunks, files with sizes). Blocking: run it in a worker thread.
    Every file is fsynced; the caller fsyncs the directory and renames it into place."""
    out = _Writer(directory)
    out.write("arena.bin", image.arena.parts())
    out.array("start", image.start)
    out.array("size", image.size)
    out.values("ids", image.ids)
    for family, (keys, blobs) in image.bitmaps.items():
        out.bitmaps(family, keys, blobs)
    lows = image.lows
    out.array("lows-slots", np.fromiter(lows.keys(), np.uint32, len(lows)))
    out.values("lows", list(lows.values()))
    orders = []
    for i, order in enumerate(image.orders):
        out.array(f"order-{i}-code", order.code)
        out.array(f"order-{i}-main", order.main)
        vals = order.vals
        if vals is None:
            kind = "ids"
        elif isinstance(vals, dict):
            kind = "sparse"
            out.array(f"order-{i}-slots", np.fromiter(vals.keys(), np.uint32, len(vals)))
            out.column(f"order-{i}-vals", list(vals.values()))
        else:
            kind = "dense"
            out.column(f"order-{i}-vals", vals)
        orders.append({"name": order.name, "vals": kind})
    arena = image.arena
    return {
        "version": VERSION,
        "rooms": image.rooms,
        "slots": len(image.ids),
        "store_version": image.version,
        "garbage": image.garbage,
        "chunks": [[len(c), e] for c, e in zip(arena.chunks, arena.ends, strict=True)],
        "orders": orders,
        "files": out.files,
    }


# -- reading ---------------------------------------------------------------------------------


class _Reader:
    def __init__(self, directory: Path, section: dict[str, Any]) -> None:
        self.directory = directory
        files = section.get("files")
        if not isinstance(files, dict):
            raise FormatError("no file list")
        self.files: dict[str, int] = files
        for name, size in files.items():
            try:
                found = (directory / name).stat().st_size
            except OSError as exc:
                raise FormatError(f"{name}: {exc.strerror or exc}") from None
            if found != size:
                raise FormatError(f"{name}: {found} bytes, the manifest says {size}")

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise FormatError(f"{name}: not in the manifest")
        return self.directory / name

    def bytes(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def array(self, name: str, dtype: Any) -> Array:
        array: Array = np.load(self.path(f"{name}.npy"), allow_pickle=False)
        if array.dtype != dtype or array.ndim != 1:
            raise FormatError(f"{name}.npy: {array.dtype} {array.shape}, not 1-d {dtype}")
        return array

    def values(self, name: str) -> list[Any]:
        raw = self.bytes(f"strings-{name}.json")
        try:
            values = orjson.loads(raw)
        except orjson.JSONDecodeError:  # written by the json module (non-finite floats)
            values = json.loads(raw)
        if not isinstance(values, list):
            raise FormatError(f"strings-{name}.json: not a list")
        return values

    def bitmaps(self, family: str) -> list[tuple[Any, BitMap]]:
        index = orjson.loads(self.bytes(f"bitmaps-{family}.json"))
        blob = memoryview(self.bytes(f"bitmaps-{family}.bin"))
        keys, ends = index["keys"], index["ends"]
        if len(keys) != len(ends) or (ends and ends[-1] != len(blob)):
            raise FormatError(f"bitmaps-{family}: index and blob disagree")
        out = []
        begin = 0
        deserialize = BitMap.deserialize
        for key, end in zip(keys, ends, strict=True):
            out.append((key, deserialize(blob[begin:end])))  # type: ignore[arg-type]
            begin = end
        return out

    def column(self, name: str, length: int) -> list[Any]:
        distinct = self.values(name)
        index = self.array(f"{name}-index", np.int32)
        if len(index) != length:
            raise FormatError(f"{name}: {len(index)} entries, expected {length}")
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(distinct)):
            raise FormatError(f"{name}: index out of range")
        return list(map(distinct.__getitem__, index.tolist()))

    def arena(self, chunks: list[list[int]]) -> tuple[list[bytearray], list[int]]:
        out: list[bytearray] = []
        ends: list[int] = []
        with open(self.path("arena.bin"), "rb") as f:
            for i, (capacity, end) in enumerate(chunks):
                last = i == len(chunks) - 1
                chunk = bytearray(capacity if last else end)
                if _read_into(f, memoryview(chunk)[:end]) != end:
                    raise FormatError("arena.bin: shorter than its chunks")
                out.append(chunk)
                ends.append(end)
        return out, ends


def _read_into(f: io.BufferedReader, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def load(
    directory: Path,
    section: dict[str, Any],
    block_size: int = 4096,
    gather: bool | None = None,
    fold_at: int | None = None,
) -> RoomStore:
    """A new RoomStore from what :func:`save` wrote into ``directory`` (``section``: what it
    returned). FormatError when a file is missing, short or malformed. O(size of the state)."""
    try:
        return _load(directory, section, block_size, gather, fold_at)
    except FormatError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError) as exc:
        raise FormatError(f"{type(exc).__name__}: {exc}") from None


def _load(
    directory: Path,
    section: dict[str, Any],
    block_size: int,
    gather: bool | None,
    fold_at: int | None,
) -> RoomStore:
    from service.core.store import RoomStore

    if section.get("version") != VERSION:
        raise FormatError(f"store format {section.get('version')!r}, not {VERSION}")
    read = _Reader(directory, section)
    store = RoomStore(block_size, gather, fold_at)
    n = int(section["slots"])
    ids: list[str | None] = read.values("ids")
    start = read.array("start", np.int64)
    size = read.array("size", np.uint32)
    if not len(ids) == len(start) == len(size) == n:
        raise FormatError("ids, start and size differ in length")
    chunks, ends = read.arena(section["chunks"])
    store.columns.restore(ids, start, size, chunks, ends, int(section["garbage"]))
    if len(store.columns.slot_of) != section["rooms"]:
        raise FormatError("ids: rooms miscounted")
    sets = dict(read.bitmaps("sets"))
    post, names = store.postings, store.names
    store.live = sets["live"]
    post.opened, post.closed = sets["opened"], sets["closed"]
    names.short, names.named = sets["short"], sets["named"]
    for (field, value), bm in read.bitmaps("eq"):
        post.eq[field][value] = bm
    for (field, level, k), bm in read.bitmaps("buckets"):
        post.buckets[field][level][k] = bm
    names.tris = dict(read.bitmaps("tris"))
    names.quads = dict(read.bitmaps("quads"))
    lows = read.values("lows")
    names.lows = dict(zip(read.array("lows-slots", np.uint32).tolist(), lows, strict=True))
    buffers = {tuple(k): bm for k, bm in read.bitmaps("buffers")}
    saved = section["orders"]
    if [o["name"] for o in saved] != list(store.orders):
        raise FormatError("sort orders differ from this version's")
    for i, (name, order) in enumerate(store.orders.items()):
        order.code = read.array(f"order-{i}-code", np.int64).copy()  # the store writes it
        if len(order.code) != n:
            raise FormatError(f"order {name}: {len(order.code)} codes, expected {n}")
        kind = saved[i]["vals"]
        if kind == "ids":
            order.vals = list(ids)
        elif kind == "dense":
            order.vals = read.column(f"order-{i}-vals", n)
        else:
            slots = read.array(f"order-{i}-slots", np.uint32).tolist()
            order.vals = dict(zip(slots, read.column(f"order-{i}-vals", len(slots)), strict=True))
        if isinstance(order.vals, list) is not order.dense:
            raise FormatError(f"order {name}: values saved as {kind}")
    for i, (name, order) in enumerate(store.orders.items()):  # codes first: ties need _id's
        main = read.array(f"order-{i}-main", np.uint32)
        order.pending, order.stale = buffers[(name, "pending")], buffers[(name, "stale")]
        order.main, order.mcode = main, order.code[main]
        if order.pending or order.stale:
            order.merge()
        else:
            order.build(main)
    store.version = int(section["store_version"])
    return store
