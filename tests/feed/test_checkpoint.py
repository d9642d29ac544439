"""Checkpoints: the store's format in a directory replicas share; names, order, prune, load."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.core import ejson
from service.core.query import RoomQuery
from service.core.store import RoomStore
from service.core.users import Directory
from service.feed.checkpoint import (
    VERSION,
    capture,
    dumps_line,
    encode,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    write_checkpoint,
)
from service.feed.snapshot import SnapshotError
from tests.factories import make_room, make_user


def room(room_id: str, **fields: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = ejson.decode(make_room(room_id, **fields))
    return decoded


def store_of(*room_ids: str) -> RoomStore:
    store = RoomStore()
    store.bulk_load([room(i) for i in room_ids])
    return store


def test_dates_in_users_round_trip_as_dates(tmp_path: Path) -> None:
    doc: dict[str, Any] = ejson.decode(
        {
            "_id": "r1",
            "ts": {"$date": 1_700_000_000_000},
            "v": {"lastMessageTs": {"$date": "2024-01-02T03:04:05.006Z"}},
            "list": [{"$date": 0}, "2024-01-02T03:04:05.006Z", 1, 2.5, None, True],
            "n": {"$numberLong": "9007199254740993"},
        }
    )
    line = dumps_line(doc)
    assert line == orjson.dumps(encode(doc)) + b"\n"
    assert orjson.loads(line)["ts"] == {"$date": "2023-11-14T22:13:20.000Z"}
    assert orjson.loads(line)["list"][1] == "2024-01-02T03:04:05.006Z"  # a plain string stays one

    users = Directory()
    users.upsert_user(ejson.decode(make_user("u1", ["admin"], {"tok": 1_700_000_000_000})))
    users.set_permission("view-l-room", ["x"])
    path = write_checkpoint(capture(store_of("a", "b"), users, 3), tmp_path)
    store, back, result = load_checkpoint(path)
    assert (result.position, result.rooms, result.users, result.permissions) == (3, 2, 1, 1)
    [user] = back.user_docs()
    assert [user] == list(users.user_docs())
    assert type(user["services"]["resume"]["loginTokens"][0]["when"]) is ejson.Date
    assert back.permission_roles("view-l-room") == frozenset({"x"})
    assert store.get("a") == store_of("a").get("a")
    assert store.page(RoomQuery(count=None)) == store_of("a", "b").page(RoomQuery(count=None))
    manifest = orjson.loads((path / "manifest.json").read_bytes())
    assert manifest["position"] == 3
    assert manifest["format"] == "voip-rooms-checkpoint"
    assert manifest["version"] == VERSION
    assert set(manifest["files"]) == {p.name for p in path.iterdir()} - {"manifest.json"}
    for name, size in manifest["files"].items():
        assert (path / name).stat().st_size == size


def test_names_never_collide(tmp_path: Path) -> None:
    """Two replicas (or one, twice) at the same position write two checkpoints."""
    view = capture(store_of("a"), Directory(), 4)
    paths = {
        write_checkpoint(view, tmp_path, host="pod-a"),
        write_checkpoint(view, tmp_path, host="pod-b"),
        write_checkpoint(view, tmp_path, host="pod-a"),
    }
    assert len(paths) == 3
    assert all(p.name.startswith("checkpoint-000000000004-pod-") for p in paths)
    assert {c.path for c in list_checkpoints(tmp_path)} == paths


def test_newest_by_position_then_time(tmp_path: Path) -> None:
    low = write_checkpoint(capture(store_of("a"), Directory(), 10), tmp_path, host="b")
    high = write_checkpoint(capture(store_of("a", "b"), Directory(), 12), tmp_path, host="a")
    again = write_checkpoint(capture(store_of("a", "b"), Directory(), 12), tmp_path, host="c")
    found = list_checkpoints(tmp_path)
    assert [c.position for c in found] == [12, 12, 10]
    assert found[-1].path == low
    first, second = found[0], found[1]
    assert first.written_ms >= second.written_ms
    assert {first.path, second.path} == {high, again}
    assert find_checkpoint(tmp_path) == (12, first.path)


@pytest.mark.parametrize("version", [1, VERSION + 1])  # an older layout, a newer one
def test_unknown_versions_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    good = write_checkpoint(capture(store_of("a"), Directory(), 1), tmp_path)
    other = tmp_path / "checkpoint-000000000099-pod-x-ab12cd34"
    other.mkdir()
    (other / "manifest.json").write_bytes(
        orjson.dumps({"format": "voip-rooms-checkpoint", "version": version, "position": 99})
    )
    with caplog.at_level(logging.WARNING):
        assert find_checkpoint(tmp_path) == (1, good)
    assert "checkpoint ignored" in caplog.text
    assert f"format version {version}" in caplog.text
    with pytest.raises(SnapshotError, match=f"format version {version}"):
        load_checkpoint(other)


def test_prune_keeps_the_newest_and_the_recent(tmp_path: Path) -> None:
    paths = []
    for position in range(1, 7):
        paths.append(
            write_checkpoint(
                capture(store_of("a"), Directory(), position), tmp_path, keep=100, min_age=0
            )
        )
    now = time.time()
    old = now - 3600
    for path in paths[:4]:
        os.utime(path, (old, old))  # written an hour ago
    # keep 2: the four old ones go except none of the two newest; the recent ones stay
    removed = prune_checkpoints(tmp_path, keep=2, min_age=600, now=now)
    assert sorted(removed) == sorted(paths[:4])
    assert [c.path for c in list_checkpoints(tmp_path)] == paths[:3:-1]
    # all old: only the newest two survive
    assert prune_checkpoints(tmp_path, keep=2, min_age=600, now=now + 7200) == []
    assert prune_checkpoints(tmp_path, keep=1, min_age=600, now=now + 7200) == [paths[4]]


async def test_capture_on_the_loop_write_in_a_thread_while_events_go_on(tmp_path: Path) -> None:
    store = store_of(*(f"r{i}" for i in range(300)))
    want = {q: store.page(q) for q in (RoomQuery(count=None), RoomQuery(sort=(("name", -1),)))}
    view = capture(store, Directory(), 7)
    writing = asyncio.create_task(asyncio.to_thread(write_checkpoint, view, tmp_path))
    i = 0
    while not writing.done() or i < 200:  # the loop goes on changing the store meanwhile
        store.upsert(room(f"n{i}", name=f"new {i}"))
        store.remove(f"r{i % 300}")
        i += 1
        await asyncio.sleep(0)
    path = await writing
    loaded, _, result = load_checkpoint(path)
    loaded._check()
    assert result.position == 7
    assert {q: loaded.page(q) for q in want} == want


def test_damaged_manifest_is_a_snapshot_error(tmp_path: Path) -> None:
    path = write_checkpoint(capture(store_of("a"), Directory(), 2), tmp_path)
    (path / "manifest.json").write_bytes(b"{broken")
    assert list_checkpoints(tmp_path) == []
    with pytest.raises(SnapshotError, match="not JSON"):
        load_checkpoint(path)
