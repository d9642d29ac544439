"""The store's own checkpoint format: a whole RoomStore as files in a directory, loaded in seconds.

:func:`capture` takes an :class:`Image` of the store between two changes (on the event loop):
copies of the numpy columns, shallow copies of the lists and dicts of values, every bitmap
serialized (faster than copying it), and an :class:`~service.core.store.columns.ArenaView` of the
answer bytes (no copy: bytes once written never move). Nothing in an image is changed by the
store afterwards, so :func:`save` may write it in a worker thread while events keep being
applied.

Files (every one listed with its size in the section :func:`save` returns). Most are named by
their content, so that a later checkpoint hard-links an unchanged one from an earlier checkpoint
(``reuse``) instead of writing it again, and writes only what changed:

- ``piece-<sha256>-<length>.bin``: a piece of PIECE_BYTES of a numpy array (slot columns
  ``start``/``size``, each order's ``code`` and ``main``, the arrays of the value columns below),
  or a JSON list of up to PIECE_VALUES values (``ids``, ``texts``, value columns). The section
  lists each array's dtype, length and pieces (``arrays``) and each list's pieces (``values``);
  an array is read back piece by piece into one writable array (the store goes on changing
  it). Slots follow creation time and a new room takes the next slot, so most changes fall into
  the last pieces; equal pieces (runs of NULL codes) are one file;
- ``arena-<token>-<end>.bin``: the written bytes of each arena chunk, so every saved address
  stays valid; named by the chunk's token and length, which fix its content. A chunk mapped from
  a file (a checkpoint's, or one :meth:`~service.core.store.columns.Columns.spill` wrote) is
  linked from that file first;
- ``bitmaps-<family>.json``: the keys, ends and pieces of a family of bitmaps (``sets``, ``eq``,
  ``buckets``, ``tris``, ``quads``, ``reps``, ``buffers``, and ``merged``: each order's merged
  slots and block bitmaps, cut into pieces per order: only an order that merged since has new
  ones), the pieces holding pyroaring's portable serializations one after another;
- JSON lists are orjson, or for the rare values JSON cannot hold exactly (non-finite floats)
  the standard json module;
- value columns (an order's ``vals``): the slots holding one, and their values in slot order when
  most are distinct (names), else the distinct values once (by order code: equal codes, equal
  values) and per slot an int32 index.

Derived parts are rebuilt on load rather than saved: ``slot_of`` from ``ids``, each order's
``mcode`` (``code[main]``, but for the stale slots' entries, whose old codes are saved). Buffers
of recent changes are kept as buffers, neither merged at capture (on the event loop) nor at load:
``main`` with the ``pending`` and ``stale`` bitmaps, the stale slots' values as merged
(``shadow``), and the codes of values coded since the merge rebuilt from the pending slots. The
saved block bitmaps are taken as they are (rebuilt when the block size differs). Capture holds
``merged`` and ``blocks`` by reference: a merge replaces them whole, never changes them.

Complexity: capture O(n) memory copies plus O(bitmaps); save and load O(size of the state), with
Python work per distinct value or bitmap, never per room except C-level list building.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pyroaring import BitMap

from service.core.store.columns import ArenaView, Chunk, map_chunk
from service.core.store.keys import DICT_HI, NAN, NUM_MAX, rank_key

if TYPE_CHECKING:
    from service.core.store import RoomStore

__all__ = ["VERSION", "FormatError", "Image", "capture", "fsync_path", "load", "save"]

#: The layout written by :func:`save`; :func:`load` reads only this one.
VERSION = 3
#: Arrays are saved in pieces of this many bytes, lists of values in pieces of this many values.
PIECE_BYTES = 1 << 20
PIECE_VALUES = 1 << 16

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
    merged: BitMap  # main's slots and its blocks: replaced whole by every merge, never changed
    blocks: list[BitMap]
    vals: list[Any] | dict[int, Any] | None  # None: the ids (the _id order's values)
    # The buffer kept as it is (a load does not merge it): main's codes where stale slots sit
    # (None without stale slots), the stale slots, and their values as merged (``shadow``).
    mcode: Array | None
    stale: Array
    shadow: dict[int, Any]


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
    texts: dict[int, str]  # the name index's kept lower-cased names
    orders: list[OrderImage]
    block: int


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
        "reps": _family(names.reps.items()),
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
        code = order.code[:n].copy()
        stale = np.frombuffer(order.stale.to_array(), dtype=np.uint32).copy()
        orders.append(
            OrderImage(
                name,
                code,
                order.main.copy(),
                order.merged,
                list(order.blocks),
                kept,
                order.mcode.copy() if len(stale) else None,
                stale,
                dict(order.shadow),
            )
        )
    return Image(
        version=store.version,
        rooms=len(columns.slot_of),
        ids=columns.ids[:],
        start=columns.start[:n].copy(),
        size=columns.size[:n].copy(),
        arena=columns.view(),
        garbage=columns.garbage,
        bitmaps=bitmaps,
        texts=names.texts.copy(),
        orders=orders,
        block=store.block,
    )


# -- writing ---------------------------------------------------------------------------------


class _Writer:
    """Files of one saved store: each written whole and listed with its size; :meth:`sync`
    makes them durable at the end, all at once."""

    def __init__(self, directory: Path, reuse: Callable[[str], Path | None]) -> None:
        self.directory = directory
        self.reuse = reuse
        self.files: dict[str, int] = {}
        self.arrays: dict[str, list[Any]] = {}  # name -> [dtype, length, pieces]
        self.lists: dict[str, list[str]] = {}  # name -> pieces of a list of values
        self.linked = 0
        self.linked_names: set[str] = set()
        self.unsynced: list[Path] = []  # written here, or linked from a file never fsynced
        self.hashing = ThreadPoolExecutor(2, thread_name_prefix="checkpoint-hash")

    def write(self, name: str, parts: Iterable[bytes | memoryview]) -> None:
        path = self.directory / name
        with open(path, "wb") as out:
            for part in parts:
                out.write(part)
        self.files[name] = path.stat().st_size
        self.unsynced.append(path)

    def link_or_write(self, name: str, part: memoryview, own: Path | None = None) -> None:
        """A file whose name says its content: hard-linked from ``own`` (the file a mapped
        chunk came from: fsynced with the rest, as a spilled chunk's file never was) or from an
        earlier checkpoint that has it (durable already), else written."""
        for source in (own, self.reuse(name)):
            if source is None:
                continue
            try:
                os.link(source, self.directory / name)
            except OSError:
                continue  # gone meanwhile, or no hard links on this volume
            if source is own:
                self.unsynced.append(self.directory / name)
            self.files[name] = len(part)
            self.linked += len(part)
            self.linked_names.add(name)
            return
        self.write(name, _pieces(part))

    def sync(self) -> None:
        """fsync every file written (or linked from an unsynced one), several at a time: the
        file system commits concurrent fsyncs together rather than one journal commit each."""
        if not self.unsynced:
            return
        with ThreadPoolExecutor(min(8, len(self.unsynced))) as pool:
            list(pool.map(fsync_path, self.unsynced))

    def piece(self, part: memoryview | bytes, name: str | None = None) -> str:
        """A piece of an array or of a list of values, in a file named by its content (a hash
        and the length; ``name`` when computed already): linked when an earlier checkpoint has
        it, written else; once per checkpoint however often it occurs. Its file name."""
        name = name or _piece_name(part)
        if name not in self.files:
            self.link_or_write(name, memoryview(part))
        return name

    def array(self, name: str, array: Array) -> None:
        """Raw little-endian bytes in pieces of PIECE_BYTES; dtype, length and the pieces go in
        the manifest. A piece no change touched since the last checkpoint is linked. The pieces
        are hashed two at a time (hashlib lets go of the GIL)."""
        array = np.ascontiguousarray(array)
        raw = array.data.cast("B") if array.size else memoryview(b"")
        parts = [raw[at : at + PIECE_BYTES] for at in range(0, len(raw), PIECE_BYTES)]
        names = self.hashing.map(_piece_name, parts) if len(parts) > 1 else map(_piece_name, parts)
        pieces = [self.piece(part, n) for part, n in zip(parts, names, strict=True)]
        self.arrays[name] = [array.dtype.str, len(array), pieces]

    def values(self, name: str, values: list[Any]) -> None:
        """A list of JSON values (strings, None, numbers, lists, dicts), in pieces of
        PIECE_VALUES values each (JSON lists), listed in the manifest's ``values``."""
        self.lists[name] = [
            self.piece(_dump_values(values[at : at + PIECE_VALUES]))
            for at in range(0, len(values), PIECE_VALUES)
        ]

    def bitmaps(
        self,
        family: str,
        keys: list[Any],
        blobs: list[bytes],
        group: Callable[[Any], Any] | None = None,
    ) -> None:
        """A family's serialized bitmaps, concatenated, in pieces cut between bitmaps (past
        PIECE_BYTES, and wherever ``group(key)`` changes, so that an unchanged group's pieces
        are linked from the last checkpoint); keys, ends and pieces in an index file."""
        ends = np.cumsum([len(b) for b in blobs], dtype=np.int64).tolist() if blobs else []
        pieces: list[str] = []
        run: list[bytes] = []
        size = 0
        last = object()
        for key, blob in zip(keys, blobs, strict=True):
            mark = group(key) if group is not None else None
            if run and (size >= PIECE_BYTES or mark != last):
                pieces.append(self.piece(b"".join(run)))
                run, size = [], 0
            run.append(blob)
            size += len(blob)
            last = mark
        if run:
            pieces.append(self.piece(b"".join(run)))
        index = {"keys": keys, "ends": ends, "pieces": pieces}
        self.write(f"bitmaps-{family}.json", [orjson.dumps(index)])

    def column(self, name: str, slots: Array, codes: Array, value: Callable[[int], Any]) -> None:
        """The values of ``slots`` (``value(slot)``, their codes ``codes``). Mostly distinct
        values (judged from a sample) go in slot order; else each distinct value once (values
        of equal order code are equal: one stands for all) in the order of the first slot
        holding it, and per slot an int32 index. Either way a new room's value lands in the
        last pieces, so the others are linked from the last checkpoint."""
        self.array(f"{name}-slots", slots.astype(np.uint32))
        sample = codes[:: max(1, len(codes) // 4096)]
        if 2 * len(np.unique(sample)) > len(sample):
            self.values(name, list(map(value, slots.tolist())))
            return
        _, first, index = np.unique(codes, return_index=True, return_inverse=True)
        by_first = np.argsort(first)  # distinct values by first slot holding them
        rank = np.empty_like(by_first)
        rank[by_first] = np.arange(len(by_first))
        self.values(name, list(map(value, slots[first[by_first]].tolist())))
        self.array(f"{name}-index", rank[index.ravel()].astype(np.int32))


def _piece_name(part: memoryview | bytes) -> str:
    return f"piece-{hashlib.sha256(part).hexdigest()[:40]}-{len(part)}.bin"


def _pieces(part: memoryview, size: int = 1 << 24) -> Iterable[memoryview]:
    return (part[at : at + size] for at in range(0, len(part), size))


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory: the names in it) by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dump_values(values: list[Any]) -> bytes:
    if set(map(type, values)) <= {str, type(None)}:
        return orjson.dumps(values)
    # Exact for every value a room can hold: bools, ints beyond 64 bits, non-finite floats.
    return json.dumps(values, ensure_ascii=False).encode()


def _dictionary_coded(code: Array) -> Array:
    """Which codes are dictionary codes (the slot's value is in ``vals``)."""
    return ((code > NAN) & (code < -NUM_MAX)) | ((code > NUM_MAX) & (code < DICT_HI))


def _objects(values: list[Any]) -> Array:
    """``values`` as a 1-d object array (lists stay list objects, never unpacked)."""
    table = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        table[i] = value
    return table


def _never(name: str) -> Path | None:
    return None


def save(
    image: Image, directory: Path, reuse: Callable[[str], Path | None] = _never
) -> dict[str, Any]:
    """Write ``image`` into ``directory`` (existing, empty); the section of the manifest that
    describes it (counts, chunks, arrays, files with sizes). Blocking: run it in a thread.

    Arena chunks go to files named by chunk token and length (``arena-<token>-<end>.bin``):
    ``reuse(name)`` may give an earlier checkpoint's file of that name, which is hard-linked
    instead of written again (the bulk of the bytes, unchanged since). Every file written is
    fsynced (at the end, together); the caller fsyncs the directory and renames it into place."""
    out = _Writer(directory, reuse)
    try:
        return _save(image, out)
    finally:
        out.hashing.shutdown()


def _save(image: Image, out: _Writer) -> dict[str, Any]:
    arena = image.arena
    chunks = []
    for part, end, token, chunk, own in zip(
        arena.parts(), arena.ends, arena.tokens, arena.chunks, arena.files, strict=True
    ):
        name = f"arena-{token}-{end}.bin"
        out.link_or_write(name, part, own)
        if isinstance(chunk, mmap.mmap) and name not in out.linked_names:
            chunk.madvise(mmap.MADV_DONTNEED)  # written from the map: drop the pages it read
        chunks.append({"file": name, "token": token, "capacity": len(chunk), "end": end})
    out.array("start", image.start)
    out.array("size", image.size)
    out.values("ids", image.ids)
    for family, (keys, blobs) in image.bitmaps.items():
        out.bitmaps(family, keys, blobs)
    out.bitmaps(
        "merged",
        *_family(
            ((order.name, i), bm)
            for order in image.orders
            for i, bm in enumerate([order.merged, *order.blocks])
        ),
        group=lambda key: key[0],  # an order's bitmaps change only when it merges
    )
    texts = image.texts
    out.array("texts-slots", np.fromiter(texts.keys(), np.uint32, len(texts)))
    out.values("texts", list(texts.values()))
    orders = []
    for i, order in enumerate(image.orders):
        out.array(f"order-{i}-code", order.code)
        out.array(f"order-{i}-main", order.main)
        vals = order.vals
        if vals is None:
            kind = "ids"
        elif isinstance(vals, dict):
            kind = "sparse"
            slots = np.fromiter(vals.keys(), np.int64, len(vals))
            out.column(f"order-{i}-vals", slots, order.code[slots], vals.__getitem__)
        else:
            kind = "dense"
            slots = np.flatnonzero(_dictionary_coded(order.code))
            out.column(f"order-{i}-vals", slots, order.code[slots], vals.__getitem__)
        if order.mcode is not None:  # where stale slots sit in main, and their codes there
            at = np.flatnonzero(np.isin(order.main, order.stale)).astype(np.uint32)
            out.array(f"order-{i}-stale-at", at)
            out.array(f"order-{i}-stale-code", order.mcode[at])
        shadow = order.shadow
        out.array(f"order-{i}-shadow-slots", np.fromiter(shadow, np.uint32, len(shadow)))
        out.values(f"order-{i}-shadow", list(shadow.values()))
        orders.append({"name": order.name, "vals": kind})
    out.sync()
    return {
        "version": VERSION,
        "rooms": image.rooms,
        "slots": len(image.ids),
        "store_version": image.version,
        "block": image.block,
        "garbage": image.garbage,
        "chunks": chunks,
        "orders": orders,
        "arrays": out.arrays,
        "values": out.lists,
        "files": out.files,
        "linked_bytes": out.linked,
    }


# -- reading ---------------------------------------------------------------------------------


class _Reader:
    def __init__(self, directory: Path, section: dict[str, Any]) -> None:
        self.directory = directory
        files, arrays = section.get("files"), section.get("arrays")
        lists = section.get("values")
        if (
            not isinstance(files, dict)
            or not isinstance(arrays, dict)
            or not isinstance(lists, dict)
        ):
            raise FormatError("no file list")
        self.files: dict[str, int] = files
        self.arrays: dict[str, list[Any]] = arrays
        self.lists: dict[str, list[str]] = lists
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

    def read_bytes(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def array(self, name: str, dtype: Any) -> Array:
        """A writable array (the store may change it), read from its pieces in place."""
        if name not in self.arrays:
            raise FormatError(f"{name}: not in the manifest")
        saved, length, pieces = self.arrays[name]
        if np.dtype(saved) != np.dtype(dtype):
            raise FormatError(f"{name}: {saved}, not {np.dtype(dtype).str}")
        array: Array = np.empty(length, dtype=np.dtype(saved))
        raw = array.data.cast("B") if array.size else memoryview(bytearray())
        at = 0
        for piece in pieces:
            size = self.files.get(piece, -1)
            if size < 0 or at + size > len(raw):
                raise FormatError(f"{name}: pieces longer than {length} entries")
            with open(self.path(piece), "rb", buffering=0) as f:
                got = f.readinto(raw[at : at + size])
            if got != size:
                raise FormatError(f"{piece}: short")
            at += size
        if at != len(raw):
            raise FormatError(f"{name}: {at} bytes in pieces, {len(raw)} expected")
        return array

    def values(self, name: str) -> list[Any]:
        if name not in self.lists:
            raise FormatError(f"{name}: not in the manifest")
        out: list[Any] = []
        for piece in self.lists[name]:
            raw = self.read_bytes(piece)
            try:
                values = orjson.loads(raw)
            except orjson.JSONDecodeError:  # written by the json module (non-finite floats)
                values = json.loads(raw)
            if not isinstance(values, list):
                raise FormatError(f"{piece}: not a list")
            out += values
        return out

    def bitmaps(self, family: str) -> list[tuple[Any, BitMap]]:
        index = orjson.loads(self.read_bytes(f"bitmaps-{family}.json"))
        keys, ends, pieces = index["keys"], index["ends"], index["pieces"]
        blob = memoryview(b"".join(map(self.read_bytes, pieces)))
        if len(keys) != len(ends) or (ends and ends[-1] != len(blob)):
            raise FormatError(f"bitmaps-{family}: index and blob disagree")
        deserialize = BitMap.deserialize
        starts = [0, *ends[:-1]] if ends else []
        return [
            (key, deserialize(blob[a:b]))  # type: ignore[arg-type]
            for key, a, b in zip(keys, starts, ends, strict=True)
        ]

    def column(self, name: str) -> tuple[Array, Array]:
        """(slots, their values as an object array)."""
        slots = self.array(f"{name}-slots", np.uint32)
        saved = self.values(name)
        if list in set(map(type, saved)):
            table = _objects(saved)  # (assigning the list would unpack the lists in it)
        else:
            table = np.empty(len(saved), dtype=object)
            table[:] = saved
        if f"{name}-index" not in self.arrays:  # in slot order
            if len(saved) != len(slots):
                raise FormatError(f"{name}: {len(saved)} values for {len(slots)} slots")
            return slots, table
        index = self.array(f"{name}-index", np.int32)
        if len(index) != len(slots):
            raise FormatError(f"{name}: {len(index)} values for {len(slots)} slots")
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(saved)):
            raise FormatError(f"{name}: index out of range")
        return slots, table[index]

    def arena(
        self, chunks: list[dict[str, Any]]
    ) -> tuple[list[Chunk], list[int], list[Path | None]]:
        out: list[Chunk] = []
        ends: list[int] = []
        files: list[Path | None] = []
        for i, chunk in enumerate(chunks):
            capacity, end = int(chunk["capacity"]), int(chunk["end"])
            path = self.path(chunk["file"])
            mapped = None
            if i == len(chunks) - 1 and capacity > end:  # the chunk appends go on into
                data: Chunk = bytearray(capacity)
                with open(path, "rb") as f:
                    got = f.readinto(memoryview(data)[:end])
            else:  # never written again: mapped, read from the file only as answers need it
                with open(path, "rb") as f:
                    got = os.fstat(f.fileno()).st_size
                    data = map_chunk(f.fileno()) if got else b""
                mapped = path if got else None
            if got != end:
                raise FormatError(f"{chunk['file']}: {got} bytes, not {end}")
            out.append(data)
            ends.append(end)
            files.append(mapped)
        return out, ends, files


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
    chunks, ends, files = read.arena(section["chunks"])
    tokens = [c["token"] for c in section["chunks"]]
    store.columns.restore(ids, start, size, chunks, ends, tokens, int(section["garbage"]), files)
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
    names.reps = dict(read.bitmaps("reps"))
    texts = read.values("texts")
    names.texts = dict(zip(read.array("texts-slots", np.uint32).tolist(), texts, strict=True))
    buffers = {tuple(k): bm for k, bm in read.bitmaps("buffers")}
    merged: dict[str, list[BitMap]] = {}
    for (name, _), bm in read.bitmaps("merged"):
        merged.setdefault(name, []).append(bm)
    saved = section["orders"]
    if [o["name"] for o in saved] != list(store.orders):
        raise FormatError("sort orders differ from this version's")
    for i, (name, order) in enumerate(store.orders.items()):
        order.code = read.array(f"order-{i}-code", np.int64)
        if len(order.code) != n:
            raise FormatError(f"order {name}: {len(order.code)} codes, expected {n}")
        kind = saved[i]["vals"]
        if kind == "ids":
            order.vals = list(ids)
        elif kind == "dense":
            slots, values = read.column(f"order-{i}-vals")
            dense = np.full(n, None, dtype=object)
            dense[slots] = values
            order.vals = dense.tolist()
        else:
            slots, values = read.column(f"order-{i}-vals")
            order.vals = dict(zip(slots.tolist(), values.tolist(), strict=True))
        if isinstance(order.vals, list) is not order.dense:
            raise FormatError(f"order {name}: values saved as {kind}")
    same_blocks = section["block"] == block_size
    for i, (name, order) in enumerate(store.orders.items()):  # codes first: ties need _id's
        main = read.array(f"order-{i}-main", np.uint32)
        order.pending, order.stale = buffers[(name, "pending")], buffers[(name, "stale")]
        order.main, order.mcode = main, order.code[main]
        if f"order-{i}-stale-at" in read.arrays:  # stale slots: main keeps their old codes
            at = read.array(f"order-{i}-stale-at", np.uint32)
            order.mcode[at] = read.array(f"order-{i}-stale-code", np.int64)
        shadow_slots = read.array(f"order-{i}-shadow-slots", np.uint32).tolist()
        order.shadow = dict(zip(shadow_slots, read.values(f"order-{i}-shadow"), strict=True))
        if same_blocks:  # what build(main) would compute, as saved
            order.merged, *order.blocks = merged[name]
        else:
            order.merged = merged[name][0]
            order._blocks()
        # The buffer stays a buffer: no merge at load. The values coded since the last merge
        # are the pending slots' dictionary-coded ones.
        order.coder.clear_recent()
        recent = order.coder.recent
        for slot in order.pending:
            value = order.value(slot)
            if value is not None:
                recent[rank_key(value)] = int(order.code[slot])
        order.coder.recent_keys = sorted(recent)
    store.version = int(section["store_version"])
    store.headroom()
    return store
