"""Slots and the answer-bytes arena: each room's id, its orjson bytes, and its date paths.

A room lives in an int *slot*. ``ids[slot]`` is its ``_id`` (None once freed) and
``slot_of`` the reverse map. Its answer bytes (orjson, dates as ISO strings) live in the arena
at *address* ``start[slot]`` for ``size[slot]`` bytes: a page is a few slices of a few buffers,
not one Python object per room.

The arena is a list of ``chunks``, each a bytearray allocated at its full size and never
resized; ``ends[i]`` bytes of chunk ``i`` are written. An address is ``chunk << SHIFT |
position``. A room's bytes are written once by slice assignment into the last chunk (a new chunk
when they do not fit: 64 KiB, doubling up to ``CHUNK``) and never move: so a checkpoint writer
in another thread may read ``chunks[:k]`` up to the ``ends`` it captured while the event loop
goes on appending (:meth:`Columns.view`). A changed room appends its new bytes; the old ones
become garbage, and :meth:`Columns.compact` writes the live bytes into new chunks (and swaps the
list) once garbage passes half of what was written.

A full chunk (never written again) may live in a file instead of the heap: :meth:`Columns.spill`
writes it out and maps it read-only, and a checkpoint's chunks are mapped as loaded. ``files[i]``
is then the file's path, so that the next checkpoint hard-links it rather than writing it again.
A mapped chunk's pages are read from the file (or the page cache) as answers touch them, count
in the resident size once touched, and can be dropped by the OS under memory pressure (they are
clean) rather than swapped.

Slots are handed out in increasing order and never reused (a bulk build assigns them in
``ts`` order, so date ranges on ``ts`` are mostly runs of consecutive slots).
"""

from __future__ import annotations

import contextlib
import mmap
import secrets
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = ["CHUNK", "SHIFT", "ArenaView", "Chunk", "Columns", "map_chunk", "spilling_into"]

#: An address is ``chunk << SHIFT | position``.
#: A chunk of the arena: written ones are bytearrays; a checkpoint's, bytes or a read-only
#: memory map of its file (pages read from the file as answers touch them).
Chunk = bytearray | bytes | mmap.mmap
SHIFT = 32
_POS = (1 << SHIFT) - 1
#: Chunks grow from _FIRST bytes, doubling, up to CHUNK (a room larger gets a chunk its size).
CHUNK = 1 << 26
_FIRST = 1 << 16


_SPILL: ContextVar[Path | None] = ContextVar("spill", default=None)


@contextlib.contextmanager
def spilling_into(directory: Path) -> Iterator[None]:
    """Within it (this context, and threads started with a copy of it, as asyncio.to_thread
    does), a bulk load (:meth:`Columns.load`) starts writing its arena into files of
    ``directory`` in a thread of its own, while the rest of the store is built; the
    :meth:`Columns.spill` that follows maps them instead of writing them."""
    token = _SPILL.set(directory)
    try:
        yield
    finally:
        _SPILL.reset(token)


class _Spill:
    """Chunks being written to their files by a thread (see :func:`spilling_into`)."""

    def __init__(self, directory: Path, chunks: list[tuple[int, bytearray, Path]]) -> None:
        self.directory = directory
        self.chunks = chunks
        self.written: set[int] = set()
        self.thread = threading.Thread(target=self._run, name="arena-spill", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i, chunk, path in self.chunks:
            try:
                _write(path, memoryview(chunk))
            except OSError:
                return  # spill() writes it again, and reports the error
            self.written.add(i)


def map_chunk(fd: int) -> mmap.mmap:
    """A read-only map of a chunk's file. Answers read rooms here and there, not in file order:
    no read-ahead, so a touch maps (and counts in the resident size) only the page it needs."""
    mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_RANDOM"):
        mapped.madvise(mmap.MADV_RANDOM)
    return mapped


def _write(path: Path, data: memoryview) -> None:
    with open(path, "wb") as out:
        for at in range(0, len(data), 1 << 24):
            out.write(data[at : at + (1 << 24)])


@dataclass(frozen=True, slots=True)
class ArenaView:
    """The arena's bytes as of a moment: ``ends[i]`` bytes of ``chunks[i]``. Those bytes are
    never written again, so another thread may read them while the owner goes on. ``tokens``
    name the chunks: a chunk's first ``end`` bytes are the same wherever its token is."""

    chunks: list[Chunk]
    ends: list[int]
    tokens: list[str]
    files: list[Path | None]  # the file a mapped chunk was read from (None: in memory)

    def parts(self) -> list[memoryview]:
        """The written bytes of each chunk (views, no copies)."""
        return [memoryview(c)[:e] for c, e in zip(self.chunks, self.ends, strict=True)]


class Columns:
    """Slots, ids and answer bytes; see the module docstring. Not thread-safe, except that an
    :class:`ArenaView` may be read in another thread."""

    __slots__ = (
        "chunks",
        "ends",
        "files",
        "garbage",
        "ids",
        "pending_spill",
        "size",
        "slot_of",
        "start",
        "tokens",
        "used",
        "views",
    )

    def __init__(self) -> None:
        self.ids: list[str | None] = []
        self.slot_of: dict[str, int] = {}
        # Chunks loaded from a checkpoint are bytes (never written again), the others bytearrays.
        self.chunks: list[Chunk] = []
        self.views: list[memoryview] = []  # one per chunk: slices without a copy
        self.ends: list[int] = []
        self.tokens: list[str] = []  # a random name per chunk (checkpoints share chunk files)
        self.files: list[Path | None] = []  # the file behind a mapped chunk (None: in memory)
        self.pending_spill: _Spill | None = None  # chunks a thread writes out (spilling_into)
        self.start = np.empty(0, dtype=np.int64)
        self.size = np.empty(0, dtype=np.uint32)
        self.used = 0  # bytes written into the chunks, garbage included
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
        self.slot_of[room_id] = slot
        return slot

    def _add_chunk(
        self, chunk: Chunk, end: int, token: str | None = None, file: Path | None = None
    ) -> None:
        self.chunks.append(chunk)
        self.views.append(memoryview(chunk))
        self.ends.append(end)
        self.tokens.append(token or secrets.token_hex(8))
        self.files.append(file)

    def _append(self, doc: bytes | memoryview) -> int:
        """Write ``doc`` after the last bytes written; its address. O(len(doc))."""
        n = len(doc)
        chunk = self.chunks[-1] if self.chunks else b""
        if not isinstance(chunk, bytearray) or self.ends[-1] + n > len(chunk):
            room = min(CHUNK, _FIRST << len(self.chunks))
            chunk = bytearray(max(room, n))
            self._add_chunk(chunk, 0)
        at = self.ends[-1]
        chunk[at : at + n] = doc  # same length: the chunk never moves
        self.ends[-1] = at + n
        self.used += n
        return (len(self.chunks) - 1) << SHIFT | at

    def put(self, slot: int, doc: bytes) -> None:
        """Store a slot's bytes (appended to the arena). O(len(doc)) amortized."""
        self.garbage += int(self.size[slot])
        self.start[slot] = self._append(doc)
        self.size[slot] = len(doc)
        if self.garbage > (1 << 20) and self.garbage * 2 > self.used:
            self.compact()

    def free(self, slot: int) -> None:
        room_id = self.ids[slot]
        assert room_id is not None
        del self.slot_of[room_id]
        self.ids[slot] = None
        self.garbage += int(self.size[slot])
        self.size[slot] = 0

    def doc(self, slot: int) -> bytes:
        """A slot's bytes. O(len)."""
        a = int(self.start[slot])
        p = a & _POS
        return self.views[a >> SHIFT][p : p + int(self.size[slot])].tobytes()

    def docs(self, slots: list[int]) -> list[bytes]:
        """The bytes of each slot, in order. O(total length)."""
        views = self.views
        starts = self.start[slots].tolist()
        sizes = self.size[slots].tolist()
        out = []
        for a, n in zip(starts, sizes, strict=True):
            p = a & _POS
            out.append(views[a >> SHIFT][p : p + n].tobytes())
        return out

    def view(self) -> ArenaView:
        """The arena as of now, for a reader in another thread. O(chunks)."""
        return ArenaView(list(self.chunks), list(self.ends), list(self.tokens), list(self.files))

    def spill(self, directory: Path) -> int:
        """Move every chunk held in memory but the one appends go into (the others are never
        written again) to a file in ``directory``, ``arena-<token>-<end>.bin`` (the name a
        checkpoint gives it), mapped read-only in its place; the bytes moved. The files are not
        fsynced: a checkpoint that links one does. O(bytes moved), in large writes.

        Views taken before keep the old chunks; readers on this thread see the same bytes."""
        moved = 0
        last = len(self.chunks) - 1
        pending, self.pending_spill = self.pending_spill, None
        if pending is not None:
            pending.thread.join()
            pending.chunks.clear()  # its references to the chunks
        for i, chunk in enumerate(self.chunks):
            end = self.ends[i]
            if not isinstance(chunk, bytearray) or end == 0 or (i == last and end < len(chunk)):
                continue  # mapped already, empty, or still taking appends
            path = directory / f"arena-{self.tokens[i]}-{end}.bin"
            if pending is None or i not in pending.written or pending.directory != directory:
                _write(path, memoryview(chunk)[:end])
            with open(path, "rb") as f:
                if f.seek(0, 2) != end:
                    raise OSError(f"{path}: short")
                mapped = map_chunk(f.fileno())
            self.chunks[i] = mapped
            self.views[i] = memoryview(mapped)
            self.files[i] = path
            moved += end
        return moved

    def compact(self) -> None:
        """Write the live bytes into new chunks, slots in order, and swap them in. O(arena).

        The old chunks are left as they are: views taken before still read them."""
        live = np.flatnonzero(self.size[: len(self.ids)]).tolist()
        views, start, size = self.views, self.start, self.size
        self.chunks, self.views, self.ends, self.tokens = [], [], [], []
        self.files = []
        self.used = 0
        new_start = np.zeros_like(start)
        for s in live:
            a = int(start[s])
            p = a & _POS
            new_start[s] = self._append(views[a >> SHIFT][p : p + int(size[s])])
        self.start = new_start
        self.garbage = 0

    def load(
        self, arena: bytearray, start: np.ndarray[Any, Any], size: np.ndarray[Any, Any]
    ) -> None:
        """Take a bulk build's arena (one bytearray, not resized afterwards) and each slot's
        (offset, size) in it, into an empty arena. O(n); no copy below 4 GiB."""
        assert not self.chunks, "load needs an empty arena"
        n = len(start)
        self.grow(n)
        offsets = np.asarray(start, dtype=np.int64)
        if len(arena) <= _POS:
            self._add_chunk(arena, len(arena))
            self.start[:n] = offsets
        else:  # positions must fit SHIFT bits: cut at room boundaries, each piece copied
            group = offsets >> (SHIFT - 1)
            addresses = np.zeros(n, dtype=np.int64)
            for g in np.unique(group).tolist():
                inside = group == g
                lo = int(offsets[inside].min())
                hi = int((offsets[inside] + size[inside]).max())
                addresses[inside] = (len(self.chunks) << SHIFT) | (offsets[inside] - lo)
                self._add_chunk(bytearray(memoryview(arena)[lo:hi]), hi - lo)
            self.start[:n] = addresses
        self.size[:n] = size
        self.used = sum(self.ends)
        self.garbage = self.used - int(np.asarray(size).sum(dtype=np.int64))
        directory = _SPILL.get()
        if directory is not None:  # written out meanwhile, mapped by spill()
            full = [
                (i, c, directory / f"arena-{self.tokens[i]}-{len(c)}.bin")
                for i, c in enumerate(self.chunks)
                if isinstance(c, bytearray) and len(c) == self.ends[i] and len(c)
            ]
            self.pending_spill = _Spill(directory, full) if full else None

    def restore(
        self,
        ids: list[str | None],
        start: np.ndarray[Any, Any],
        size: np.ndarray[Any, Any],
        chunks: list[Chunk],
        ends: list[int],
        tokens: list[str],
        garbage: int,
        files: list[Path | None] | None = None,
    ) -> None:
        """Take a saved state (a checkpoint's) into empty columns. O(n)."""
        assert not self.ids, "restore needs empty columns"
        assert not self.chunks, "restore needs an empty arena"
        self.ids = ids
        slot_of: dict[str | None, int] = dict(zip(ids, range(len(ids)), strict=True))
        slot_of.pop(None, None)  # freed slots
        self.slot_of = slot_of  # type: ignore[assignment]
        self.start = np.array(start, dtype=np.int64)
        self.size = np.array(size, dtype=np.uint32)
        files = files if files is not None else [None] * len(chunks)
        for chunk, end, token, file in zip(chunks, ends, tokens, files, strict=True):
            self._add_chunk(chunk, end, token, file)
        self.used = sum(ends)
        self.garbage = garbage

    def check(self) -> None:
        assert len(self.slot_of) == sum(1 for i in self.ids if i is not None), "ids: count"
        for room_id, slot in self.slot_of.items():
            assert self.ids[slot] == room_id, f"ids: {room_id} at the wrong slot"
        n = len(self.chunks)
        assert len(self.views) == len(self.ends) == len(self.tokens) == n, "chunks: lists differ"
        assert len(self.files) == n, "chunks: files miscounted"
        for chunk, file in zip(self.chunks, self.files, strict=True):
            assert file is None or isinstance(chunk, mmap.mmap), "chunks: a file, not mapped"
        assert len(set(self.tokens)) == n, "chunks: a token twice"
        for chunk, end in zip(self.chunks, self.ends, strict=True):
            assert 0 <= end <= len(chunk), "chunks: written past the end"
        assert sum(self.ends) == self.used, "arena: bytes written miscounted"
        used = sum(int(self.size[s]) for s in self.slot_of.values())
        assert used + self.garbage == self.used, "arena: garbage miscounted"
        for slot in self.slot_of.values():
            a = int(self.start[slot])
            assert (a & _POS) + int(self.size[slot]) <= self.ends[a >> SHIFT], "arena: past end"
            orjson.loads(self.doc(slot))
