"""Columns and the chunked arena, against a plain dict of bytes (seeded stress)."""

from __future__ import annotations

import mmap
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service.core.store.columns import SHIFT, Columns, spilling_into


def _doc(rng: random.Random, room_id: str) -> bytes:
    return orjson.dumps({"_id": room_id, "pad": "x" * rng.choice([0, 10, 500, 5000, 70_000])})


def _same(columns: Columns, want: dict[str, bytes]) -> None:
    columns.check()
    assert set(columns.slot_of) == set(want)
    for room_id, doc in want.items():
        assert columns.doc(columns.slot_of[room_id]) == doc
    slots = list(columns.slot_of.values())
    assert columns.docs(slots) == [want[columns.ids[s] or ""] for s in slots]


View = tuple[Any, Any, dict[str, int], dict[str, bytes]]


def _put_or_free(
    columns: Columns, want: dict[str, bytes], rng: random.Random, room_id: str, put: bool
) -> None:
    """One step of a stress test: store a new document for ``room_id`` (``put``), or free its
    slot if it has one; ``want`` follows."""
    slot = columns.slot_of.get(room_id)
    if put:
        doc = _doc(rng, room_id)
        if slot is None:
            columns.grow(len(columns.ids) + 1)
            slot = columns.new_slot(room_id)
        columns.put(slot, doc)
        want[room_id] = doc
    elif slot is not None:
        columns.free(slot)
        del want[room_id]


def _views_still_read(views: list[View]) -> None:
    """Every view reads the bytes it saw when taken: nothing written moved or changed since."""
    for view, start, slot_of, then in views:
        parts = view.parts()
        for room_id, doc in then.items():
            a = int(start[slot_of[room_id]])
            p = a & ((1 << SHIFT) - 1)
            assert parts[a >> SHIFT][p : p + len(doc)].tobytes() == doc


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stress_against_a_dict(seed: int) -> None:
    rng = random.Random(seed)
    columns = Columns()
    want: dict[str, bytes] = {}
    views: list[View] = []
    for step in range(1500):
        room_id = f"r{rng.randrange(200)}"
        action = rng.random()
        if action < 0.95:
            _put_or_free(columns, want, rng, room_id, put=action < 0.7)
        else:
            columns.compact()
            assert columns.garbage == 0
        if step % 100 == 0:
            views.append((columns.view(), columns.start.copy(), dict(columns.slot_of), dict(want)))
            _same(columns, want)
    _same(columns, want)
    assert len(columns.chunks) > 2  # rooms spread over several chunks
    _views_still_read(views)


def test_load_takes_one_bytearray() -> None:
    docs = [orjson.dumps({"_id": f"r{i}", "n": i}) for i in range(50)]
    arena = bytearray(b"".join(docs))
    sizes = np.array([len(d) for d in docs], dtype=np.uint32)
    starts = np.concatenate(([0], np.cumsum(sizes[:-1]))).astype(np.int64)
    order = np.arange(50)[::-1]  # slots in any order of the bytes
    columns = Columns()
    for i in order.tolist():
        columns.new_slot(f"r{i}")
    columns.load(arena, starts[order], sizes[order])
    assert columns.chunks[0] is arena  # taken, not copied
    _same(columns, {f"r{i}": d for i, d in enumerate(docs)})
    slot = columns.slot_of["r3"]
    columns.put(slot, b'{"_id":"r3","n":-3}')
    assert columns.garbage == len(docs[3])
    _same(columns, {**{f"r{i}": d for i, d in enumerate(docs)}, "r3": b'{"_id":"r3","n":-3}'})


def test_a_view_is_read_in_a_thread_while_rooms_are_appended() -> None:
    columns = Columns()
    columns.grow(4000)
    for i in range(2000):
        columns.put(columns.new_slot(f"r{i}"), orjson.dumps({"_id": f"r{i}", "pad": "y" * 100}))
    view = columns.view()
    expected = b"".join(p.tobytes() for p in view.parts())
    read: list[bytes] = []
    go = threading.Event()

    def reader() -> None:
        go.wait()
        for _ in range(20):
            read.append(b"".join(p.tobytes() for p in view.parts()))

    thread = threading.Thread(target=reader)
    thread.start()
    go.set()
    for i in range(2000, 4000):  # appends into the chunk the view also holds: no BufferError
        columns.put(columns.new_slot(f"r{i}"), orjson.dumps({"_id": f"r{i}", "pad": "z" * 100}))
    for i in range(0, 4000, 2):
        columns.free(columns.slot_of[f"r{i}"])
    columns.compact()
    thread.join()
    assert read
    assert all(r == expected for r in read)
    columns.check()


@pytest.mark.parametrize("seed", [1, 2])
def test_stress_spill_against_a_dict(seed: int, tmp_path: Path) -> None:
    """Puts, frees and compactions with the full chunks moved to mapped files now and then:
    every room reads back as stored, views taken before still read what they saw."""
    rng = random.Random(seed)
    columns = Columns()
    want: dict[str, bytes] = {}
    views: list[View] = []
    for step in range(600):
        room_id = f"r{rng.randrange(150)}"
        action = rng.random()
        if action < 0.9:
            _put_or_free(columns, want, rng, room_id, put=action < 0.75)
        elif action < 0.95:
            views.append((columns.view(), columns.start.copy(), dict(columns.slot_of), dict(want)))
            directory = tmp_path / f"s{step}"
            directory.mkdir()
            last = len(columns.chunks) - 1
            full = [  # every chunk in memory but the one appends go into
                i
                for i, (c, e) in enumerate(zip(columns.chunks, columns.ends, strict=True))
                if isinstance(c, bytearray) and e and (i < last or e == len(c))
            ]
            moved = columns.spill(directory)
            assert moved == sum(columns.ends[i] for i in full)
            for i in full:
                file = columns.files[i]
                assert file is not None
                assert file.name == f"arena-{columns.tokens[i]}-{columns.ends[i]}.bin"
                assert file.read_bytes() == columns.views[i][: columns.ends[i]].tobytes()
        else:
            columns.compact()
        columns.check()
        if step % 50 == 0:
            _same(columns, want)
    _same(columns, want)
    assert views  # the seeds spill several times
    _views_still_read(views)


def test_spill_leaves_the_chunk_still_written_in_memory(tmp_path: Path) -> None:
    columns = Columns()
    docs = [orjson.dumps({"_id": f"r{i}", "n": i}) for i in range(20)]
    arena = bytearray(b"".join(docs))
    sizes = np.array([len(d) for d in docs], dtype=np.uint32)
    starts = np.concatenate(([0], np.cumsum(sizes[:-1]))).astype(np.int64)
    for i in range(20):
        columns.new_slot(f"r{i}")
    columns.load(arena, starts, sizes)
    columns.put(3, b'{"_id":"r3","n":-3}')  # a new chunk, not full: it stays in memory
    assert columns.spill(tmp_path) == len(arena)
    assert isinstance(columns.chunks[0], mmap.mmap)
    assert isinstance(columns.chunks[1], bytearray)
    assert columns.files == [tmp_path / f"arena-{columns.tokens[0]}-{len(arena)}.bin", None]
    assert columns.spill(tmp_path) == 0  # nothing left to move
    want = {f"r{i}": d for i, d in enumerate(docs)}
    want["r3"] = b'{"_id":"r3","n":-3}'
    _same(columns, want)


def test_a_bulk_load_spilling_writes_its_arena_meanwhile(tmp_path: Path) -> None:
    docs = [orjson.dumps({"_id": f"r{i}", "n": i}) for i in range(30)]
    arena = bytearray(b"".join(docs))
    sizes = np.array([len(d) for d in docs], dtype=np.uint32)
    starts = np.concatenate(([0], np.cumsum(sizes[:-1]))).astype(np.int64)
    columns = Columns()
    for i in range(30):
        columns.new_slot(f"r{i}")
    with spilling_into(tmp_path):
        columns.load(arena, starts, sizes)
    pending = columns.pending_spill
    assert pending is not None
    pending.thread.join()
    path = tmp_path / f"arena-{columns.tokens[0]}-{len(arena)}.bin"
    assert path.read_bytes() == bytes(arena)  # written by the thread, before spill()
    assert columns.spill(tmp_path) == len(arena)
    assert columns.pending_spill is None
    assert columns.files == [path]
    assert isinstance(columns.chunks[0], mmap.mmap)
    _same(columns, {f"r{i}": d for i, d in enumerate(docs)})
    other = Columns()  # outside the context: nothing started
    other.new_slot("r0")
    other.load(bytearray(docs[0]), starts[:1], sizes[:1])
    assert other.pending_spill is None
