"""The store's checkpoint format: save, load, and the loaded store answers as the original."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.query import SORTABLE_FIELDS, RoomQuery
from service.core.store import RoomStore, snapshot
from tests.core.test_rooms import (
    _date,
    _random_query,
    _random_room,
    assert_same,
    build,
    queries,
    room_sets,
    rooms,
)


def save_load(store: RoomStore, directory: Path, **options: Any) -> RoomStore:
    directory.mkdir(exist_ok=True)
    section = snapshot.save(snapshot.capture(store), directory)
    json.dumps(section)  # the manifest's section is plain JSON
    loaded = snapshot.load(directory, section, **options)
    loaded._check()
    return loaded


def same_answers(a: RoomStore, b: RoomStore, qs: list[RoomQuery]) -> None:
    for q in qs:
        assert a.page(q) == b.page(q), q


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    room_sets(),
    st.lists(st.tuples(st.sampled_from(["upsert", "remove"]), st.integers(0, 60)), max_size=20),
    st.lists(queries(), min_size=1, max_size=6),
    st.booleans(),
    st.sampled_from([1, 3, 8]),
    st.sampled_from([1, 5, None]),
    st.data(),
)
def test_loaded_store_answers_as_the_original(
    rooms_: list[dict[str, Any]],
    changes: list[tuple[str, int]],
    qs: list[RoomQuery],
    bulk: bool,
    block_size: int,
    fold_at: int | None,
    data: st.DataObject,
) -> None:
    """Random rooms, random changes (buffers left unmerged), save, load; the same pages as the
    original and the oracle, and the same again after further changes to both."""
    store = build(rooms_, block_size, bulk, fold_at=fold_at)
    stored = {r["_id"]: r for r in rooms_}

    def change(target: list[RoomStore], kind: str, n: int) -> None:
        rid = f"r{n:03d}"
        if kind == "upsert":
            room = data.draw(rooms(rid))
            for s in target:
                s.upsert(room)
            stored[rid] = room
        else:
            for s in target:
                s.remove(rid)
            stored.pop(rid, None)

    for kind, n in changes:
        change([store], kind, n)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = save_load(store, Path(tmp), block_size=block_size, fold_at=fold_at)
    assert loaded.version == store.version
    assert len(loaded) == len(store)
    for q in qs:
        assert_same(loaded, stored, q)
    same_answers(store, loaded, qs)
    for kind, n in data.draw(
        st.lists(st.tuples(st.sampled_from(["upsert", "remove"]), st.integers(0, 60)), max_size=10)
    ):
        change([store, loaded], kind, n)
    loaded._check()
    for q in qs:
        assert_same(loaded, stored, q)


@pytest.mark.parametrize("seed", [1, 2])
def test_stress_save_load_and_go_on(seed: int, tmp_path: Path) -> None:
    """Save and load every so often while rooms change; the loaded copy goes on from there."""
    rng = random.Random(seed)
    store = RoomStore(block_size=rng.choice([2, 16]), fold_at=rng.choice([7, 100]))
    store.bulk_load([_random_room(rng, f"id{i:03d}") for i in range(300)])
    stored = {r["_id"]: r for r in (orjson.loads(b) for b in store.iter_rooms())}
    ids = [f"id{i:03d}" for i in range(400)]
    for step in range(400):
        rid = rng.choice(ids)
        if rng.random() < 0.75:
            room = _random_room(rng, rid)
            store.upsert(room)
            stored[rid] = orjson.loads(orjson.dumps(room))
        else:
            store.remove(rid)
            stored.pop(rid, None)
        if step % 80 == 79:
            loaded = save_load(
                store, tmp_path / f"s{step}", block_size=store.block, fold_at=store.fold_at
            )
            qs = [_random_query(rng) for _ in range(30)]
            qs += [RoomQuery(sort=((f, 1),), count=50, offset=7) for f in SORTABLE_FIELDS]
            same_answers(store, loaded, qs)
            store = loaded  # go on with the loaded one
    store._check()
    assert sorted(orjson.loads(b)["_id"] for b in store.iter_rooms()) == sorted(stored)


def test_capture_is_the_state_of_its_moment(tmp_path: Path) -> None:
    """Changes after capture, while the image is written, do not reach it."""
    rng = random.Random(5)
    rooms_ = [_random_room(rng, f"a{i}") for i in range(200)]
    store = RoomStore(block_size=4)
    store.bulk_load(rooms_)
    before = RoomStore(block_size=4)
    before.bulk_load(rooms_)
    image = snapshot.capture(store)
    for i in range(0, 200, 3):
        store.remove(f"a{i}")
    for i in range(300):  # enough to fill the arena's chunk and compact it
        store.upsert({**_random_room(rng, f"a{i % 250}"), "pad": "p" * 3000})
    store.merge()
    section = snapshot.save(image, tmp_path)
    loaded = snapshot.load(tmp_path, section, block_size=4)
    loaded._check()
    qs = [_random_query(rng) for _ in range(50)]
    same_answers(before, loaded, qs)


def test_values_json_cannot_hold_exactly(tmp_path: Path) -> None:
    """Non-finite floats, huge integers, booleans, lists and objects as sort values."""
    store = RoomStore()
    odd: list[Any] = [
        float("inf"),
        -float("inf"),
        2**60,
        -(2**62),
        2.0**60,
        True,
        False,
        [1, "x"],
        {"a": [1]},
        "s\x00t",
        "é",
        None,
    ]
    for i, value in enumerate(odd):
        store.upsert(
            {
                "_id": f"o{i}",
                "t": "v",
                "callDuration": value,
                "name": value,
                "queue": value,
                "ts": _date(i),
            }
        )
    loaded = save_load(store, tmp_path)
    for field in ("callDuration", "name", "queue"):
        for direction in (1, -1):
            q = RoomQuery(sort=((field, direction),))
            assert loaded.page(q) == store.page(q)
    assert loaded.orders["callDuration"].value(0) == float("inf")
    assert type(loaded.orders["name"].value(5)) is bool


def test_empty_store(tmp_path: Path) -> None:
    loaded = save_load(RoomStore(), tmp_path)
    assert len(loaded) == 0
    assert loaded.page(RoomQuery()) == (0, [])
    assert loaded.upsert({"_id": "x", "t": "v", "name": "guest"})
    loaded._check()


def test_damaged_files_are_format_errors(tmp_path: Path) -> None:
    store = RoomStore()
    store.bulk_load([_random_room(random.Random(1), f"d{i}") for i in range(50)])
    section = snapshot.save(snapshot.capture(store), tmp_path)
    [arena] = tmp_path.glob("arena-*.bin")
    whole = arena.read_bytes()
    arena.write_bytes(whole[:-10])
    with pytest.raises(snapshot.FormatError, match=r"arena-"):
        snapshot.load(tmp_path, section)
    arena.write_bytes(whole)
    snapshot.load(tmp_path, section)._check()
    [piece] = section["arrays"]["start"][2]  # the start array's one piece
    (tmp_path / piece).unlink()
    with pytest.raises(snapshot.FormatError, match=piece):
        snapshot.load(tmp_path, section)
    with pytest.raises(snapshot.FormatError, match="store format"):
        snapshot.load(tmp_path, {**section, "version": 99})


def test_garbage_inside_a_file_is_a_format_error(tmp_path: Path) -> None:
    store = RoomStore()
    store.bulk_load([_random_room(random.Random(2), f"d{i}") for i in range(50)])
    section = snapshot.save(snapshot.capture(store), tmp_path)
    [piece] = orjson.loads((tmp_path / "bitmaps-sets.json").read_bytes())["pieces"]
    blob = tmp_path / piece
    blob.write_bytes(b"\xff" * blob.stat().st_size)  # same size, not a bitmap
    with pytest.raises(snapshot.FormatError):
        snapshot.load(tmp_path, section)


def test_a_second_save_links_what_did_not_change(tmp_path: Path) -> None:
    """Pieces of arrays and lists and the arena's chunks are named by their content: a save
    after a few changes links the untouched ones from the first (spilled chunks from their
    own file), writes the rest, and loads as the store."""
    rng = random.Random(7)
    store = RoomStore()
    store.bulk_load([_random_room(rng, f"p{i:05d}") for i in range(3000)])
    spill = tmp_path / "spill"
    spill.mkdir()
    moved = store.columns.spill(spill)
    assert moved > 0
    first = tmp_path / "first"
    first.mkdir()
    section = snapshot.save(snapshot.capture(store), first)
    assert section["linked_bytes"] == moved  # the spilled chunk, from its own file
    for i in range(20):
        store.upsert(_random_room(rng, f"p{2990 + i:05d}"))  # the last slots, and new ones
    shared = {name: first / name for name in section["files"]}
    second = tmp_path / "second"
    second.mkdir()
    again = snapshot.save(snapshot.capture(store), second, shared.get)
    written = sum(size for name, size in again["files"].items() if name not in section["files"])
    assert again["linked_bytes"] > moved  # the arena and untouched pieces
    assert written < sum(again["files"].values()) - moved
    for name in again["files"]:
        if name in section["files"] and not name.startswith("bitmaps-"):
            assert (second / name).stat().st_ino == (first / name).stat().st_ino, name
    loaded = snapshot.load(second, again)
    loaded._check()
    qs = [_random_query(rng) for _ in range(40)]
    qs += [RoomQuery(sort=((f, -1),), count=30, offset=3) for f in SORTABLE_FIELDS]
    same_answers(store, loaded, qs)


def test_a_spilled_chunk_whose_file_went_is_written_from_its_map(tmp_path: Path) -> None:
    store = RoomStore()
    store.bulk_load([_random_room(random.Random(8), f"q{i}") for i in range(200)])
    spill = tmp_path / "spill"
    spill.mkdir()
    assert store.columns.spill(spill) > 0
    for file in spill.iterdir():
        file.unlink()  # e.g. a prune removed it: the map still holds the bytes
    out = tmp_path / "out"
    out.mkdir()
    section = snapshot.save(snapshot.capture(store), out)
    assert section["linked_bytes"] == 0
    loaded = snapshot.load(out, section)
    loaded._check()
    same_answers(store, loaded, [RoomQuery(count=None)])
