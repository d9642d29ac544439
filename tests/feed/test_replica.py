"""The replica's life with a file feed: catch up, follow, count, checkpoint and restart."""

from __future__ import annotations

import asyncio
import mmap
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.core.ejson import Date
from service.core.query import DateRange, RoomQuery
from service.core.store import RoomStore
from service.core.users import Directory
from service.feed import checkpoint as checkpoint_module
from service.feed.checkpoint import find_checkpoint, list_checkpoints, write_checkpoint
from service.feed.replica import Replica
from service.feed.snapshot import load_snapshot
from tests.factories import make_room, make_user, write_snapshot
from tests.feed.support import eventually, jsonl, room_event


def snapshot(tmp_path: Path, position: int = 0) -> Path:
    rooms = [make_room(f"s{i}") for i in range(5)] + [{"_id": "chat", "t": "c"}]
    users = [make_user("u1", ["admin"], {"tok": 1_700_000_000_000})]
    perms = [{"_id": "view-l-room", "roles": ["x"]}]
    return write_snapshot(tmp_path / "snapshot", rooms, users, perms, position=position)


async def start(replica: Replica) -> asyncio.Task[None]:
    task = asyncio.create_task(replica.run())
    await eventually(lambda: replica.ready or replica.error is not None, what="ready")
    return task


async def finish(replica: Replica, task: asyncio.Task[None]) -> None:
    await replica.stop()
    await task


def user_event(user_id: str, roles: list[str]) -> dict[str, Any]:
    data = {"_id": user_id, "username": user_id, "roles": roles}
    return {
        "subject": "watch.users",
        "payload": {"clientAction": "inserted", "id": user_id, "data": data},
    }


async def test_follows_a_file_counts_and_skips_bad_events(tmp_path: Path) -> None:
    feed = tmp_path / "events.jsonl"
    feed.write_bytes(jsonl([room_event("s0", "removed"), room_event("n1")]))
    replica = Replica(snapshot(tmp_path), feed=f"file://{feed}", poll_interval=0.01)
    task = await start(replica)
    try:
        assert replica.ready
        assert replica.position == 2
        assert replica.store.get("s0") is None
        assert replica.store.get("n1") is not None
        assert replica.staleness_seconds() == 0.0
        bad = [
            b"not json\n",
            orjson.dumps({"subject": "watch.rooms", "payload": {"clientAction": "updated"}}),
            b"\n",
            orjson.dumps({"subject": "watch.other", "payload": {}}) + b"\n",
            jsonl([user_event("u2", ["livechat-agent"])]),
        ]
        with feed.open("ab") as out:
            out.write(b"".join(bad[:1]) + bad[1] + b"\n" + b"".join(bad[2:]))
        await eventually(lambda: replica.position == 7, what="position 7")
        assert replica.events[("watch.rooms", "applied")] == 2
        assert replica.events[("other", "rejected")] == 1  # the non-JSON line
        assert replica.events[("watch.rooms", "rejected")] == 1
        assert replica.events[("other", "skipped")] == 2  # blank line, unknown subject
        assert replica.events[("watch.users", "applied")] == 1
        assert replica.users.user("u2") is not None
        assert replica.ready
        assert [c.ok for c in replica.checks()] == [True, True, True]
    finally:
        await finish(replica, task)
    assert not replica.ready


async def test_no_feed_is_ready_at_once(tmp_path: Path) -> None:
    replica = Replica(snapshot(tmp_path, position=4))
    task = await start(replica)
    assert replica.ready
    assert replica.position == 4
    assert replica.staleness_seconds() == 0.0
    await finish(replica, task)


async def test_bad_feed_url_is_not_ready(tmp_path: Path) -> None:
    replica = Replica(snapshot(tmp_path), feed="ftp://nowhere")
    task = asyncio.create_task(replica.run())
    await eventually(lambda: replica.feed_error is not None)
    assert not replica.ready
    assert "scheme" in (replica.error or "")
    await finish(replica, task)


async def test_checkpoint_restart_resumes_at_its_position(tmp_path: Path) -> None:
    feed = tmp_path / "events.jsonl"
    feed.write_bytes(jsonl([room_event(f"n{i}") for i in range(3)]))
    checkpoints = tmp_path / "checkpoints"
    snap = snapshot(tmp_path)

    first = Replica(snap, feed=f"file://{feed}", checkpoint_dir=checkpoints, poll_interval=0.01)
    task = await start(first)
    await eventually(lambda: first.position == 3)
    await finish(first, task)  # writes the final checkpoint
    found = find_checkpoint(checkpoints)
    assert found is not None
    assert found[0] == 3
    manifest = orjson.loads((found[1] / "manifest.json").read_bytes())
    assert manifest["position"] == 3
    assert manifest["format"] == "voip-rooms-checkpoint"
    assert manifest["rooms"] == 8

    # meanwhile the feed moved on; a restart loads the checkpoint, not the older snapshot
    with feed.open("ab") as out:
        out.write(jsonl([room_event("s1", "removed"), room_event("n9")]))
    second = Replica(snap, feed=f"file://{feed}", checkpoint_dir=checkpoints, poll_interval=0.01)
    task = await start(second)
    try:
        await eventually(lambda: second.position == 5)
        assert second.loaded is not None
        assert second.loaded.position == 3
        assert second.loaded_from == found[1]
        # only the two new events were applied, nothing twice
        assert sum(second.events.values()) == 2
        assert len(second.store) == len(first.store) - 1 + 1
        assert second.store.get("s1") is None
        # dates survived the checkpoint as dates: a date range still finds the rooms
        query = RoomQuery(created=DateRange(Date("2023-11-14T00:00:00.000Z"), None), count=None)
        assert second.store.page(query)[0] == len(second.store)
        assert second.users.user("u1") is not None
        assert second.users.permission_roles("view-l-room") == frozenset({"x"})
    finally:
        await finish(second, task)
    found = find_checkpoint(checkpoints)
    assert found is not None
    assert found[0] == 5
    # the older one stays a while: another replica may be loading it right now
    assert [c.position for c in list_checkpoints(checkpoints)] == [5, 3]


async def test_answer_bytes_of_a_snapshot_load_are_mapped_then_linked(tmp_path: Path) -> None:
    """With a checkpoint directory, a snapshot load moves the answer bytes out of the heap into
    a file mapped in their place before it is served; the first checkpoint links that file and
    its temporary directory goes."""
    checkpoints = tmp_path / "checkpoints"
    snap = snapshot(tmp_path)
    plain = RoomStore()
    load_snapshot(snap, plain, Directory())
    replica = Replica(snap, checkpoint_dir=checkpoints)
    task = await start(replica)
    try:
        columns = replica.store.columns
        assert isinstance(columns.chunks[0], mmap.mmap)
        spilled = columns.files[0]
        assert spilled is not None
        assert spilled.parent.name.startswith(".tmp-checkpoint-")
        query = RoomQuery(count=None)
        assert replica.store.page(query) == plain.page(query)
        await eventually(lambda: replica.last_checkpoint is not None, what="a checkpoint")
        assert replica.last_checkpoint is not None
        linked = replica.last_checkpoint / spilled.name
        assert linked.read_bytes() == bytes(columns.views[0])
        await eventually(lambda: not spilled.parent.exists(), what="the spill removed")
        assert replica.store.page(query) == plain.page(query)  # the map still reads it
    finally:
        await finish(replica, task)


async def test_snapshot_newer_than_checkpoint_wins(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    old = Replica(snapshot(tmp_path / "a", position=2), checkpoint_dir=checkpoints)
    task = await start(old)
    await finish(old, task)
    assert find_checkpoint(checkpoints) is not None
    newer = snapshot(tmp_path / "b", position=10)
    replica = Replica(newer, checkpoint_dir=checkpoints)
    task = await start(replica)
    assert replica.loaded_from == newer
    assert replica.position == 10
    await finish(replica, task)


async def test_periodic_checkpoint_by_event_count(tmp_path: Path) -> None:
    feed = tmp_path / "events.jsonl"
    feed.write_bytes(jsonl([room_event(f"n{i}") for i in range(5)]))
    checkpoints = tmp_path / "checkpoints"
    replica = Replica(
        snapshot(tmp_path),
        feed=f"file://{feed}",
        checkpoint_dir=checkpoints,
        checkpoint_events=5,
        checkpoint_interval=3600,
        poll_interval=0.01,
    )
    task = await start(replica)
    try:
        await eventually(lambda: replica.checkpoint_position == 5, what="checkpoint")
        with feed.open("ab") as out:
            out.write(jsonl([room_event("late")]))
        await eventually(lambda: replica.position == 6)
        # handle() decides synchronously whether a checkpoint is due: one event is not enough
        assert not replica.checkpoint_due
        assert replica.checkpoint_position == 5
    finally:
        await finish(replica, task)
    assert replica.checkpoint_position == 6


async def test_crash_while_writing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoints = tmp_path / "checkpoints"
    feed = tmp_path / "events.jsonl"
    feed.write_bytes(jsonl([room_event("n1")]))
    replica = Replica(
        snapshot(tmp_path), feed=f"file://{feed}", checkpoint_dir=checkpoints, poll_interval=0.01
    )
    task = await start(replica)
    await eventually(lambda: replica.position == 1)
    assert await replica.checkpoint() is not None
    before = find_checkpoint(checkpoints)
    with feed.open("ab") as out:
        out.write(jsonl([room_event("n2")]))
    await eventually(lambda: replica.position == 2)

    real = checkpoint_module._write_jsonl_gz
    calls = 0

    def failing(path: Path, docs: Any, level: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        return real(path, docs, level)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "_write_jsonl_gz", failing)
        assert await replica.checkpoint() is None
    assert replica.checkpoint_failures == 1
    assert before is not None
    assert find_checkpoint(checkpoints) == before
    assert [p.name for p in checkpoints.iterdir()] == [before[1].name]
    await finish(replica, task)
    after = find_checkpoint(checkpoints)
    assert after is not None
    assert after[0] == 2


def test_leftover_temporary_directory_is_ignored_and_removed(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    crashed = checkpoints / ".tmp-checkpoint-other-pod-1234"
    crashed.mkdir(parents=True)
    (crashed / "arena.bin").write_bytes(b"partial")
    writing = checkpoints / ".tmp-checkpoint-other-pod-5678"  # another replica, writing now
    writing.mkdir()
    hours_ago = time.time() - 2 * 3600
    os.utime(crashed, (hours_ago, hours_ago))
    assert find_checkpoint(checkpoints) is None
    view = checkpoint_module.capture(RoomStore(), Directory(), 7)
    path = write_checkpoint(view, checkpoints)
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted([path.name, writing.name])


def write_store_checkpoint(directory: Path, position: int, room_ids: list[str]) -> Path:
    store = RoomStore()
    store.bulk_load([make_room(i) for i in room_ids])
    return write_checkpoint(checkpoint_module.capture(store, Directory(), position), directory)


async def test_damaged_checkpoint_falls_back_to_the_next_then_the_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoints = tmp_path / "checkpoints"
    good = write_store_checkpoint(checkpoints, 5, ["c1", "c2"])
    damaged = write_store_checkpoint(checkpoints, 9, ["c1", "c2", "c3"])
    [arena] = damaged.glob("arena-*.bin")
    arena.write_bytes(arena.read_bytes()[:-1])
    older_format = checkpoints / "checkpoint-000000000012"
    older_format.mkdir()
    (older_format / "rooms.jsonl.gz").write_bytes(b"not gzip at all")
    (older_format / "manifest.json").write_bytes(b'{"position": 12}')
    snap = snapshot(tmp_path, position=3)
    replica = Replica(snap, checkpoint_dir=checkpoints)
    task = asyncio.create_task(replica.run())
    await eventually(lambda: replica.ready, what="ready from the older checkpoint")
    assert replica.loaded_from == good
    assert replica.position == 5
    assert sorted(orjson.loads(b)["_id"] for b in replica.store.iter_rooms()) == ["c1", "c2"]
    assert "damaged checkpoint" in caplog.text
    assert arena.name in caplog.text
    assert "checkpoint ignored" in caplog.text  # the older format, with a warning
    await finish(replica, task)

    # without a loadable checkpoint at or past its position, the snapshot
    for path in checkpoints.iterdir():
        if path.name.startswith("checkpoint-") and path != damaged:
            shutil.rmtree(path)
    replica = Replica(snap, checkpoint_dir=checkpoints)
    task = asyncio.create_task(replica.run())
    await eventually(lambda: replica.ready, what="ready from the snapshot")
    assert replica.loaded_from == snap
    assert replica.position == 3
    replica.stopping = True
    await replica._cancel_tasks()
    await task


async def test_gap_while_serving_survives_a_broken_snapshot_then_heals(tmp_path: Path) -> None:
    feed = tmp_path / "events.jsonl"
    feed.write_bytes(jsonl([room_event("n1"), room_event("n2")]))
    checkpoints = tmp_path / "checkpoints"
    snap = snapshot(tmp_path)
    replica = Replica(
        snap,
        feed=f"file://{feed}",
        checkpoint_dir=checkpoints,
        checkpoint_interval=3600,
        poll_interval=0.01,
        gap_check_interval=0.01,
    )
    task = await start(replica)
    try:
        await eventually(lambda: replica.position == 2)
        feed.write_bytes(b"")  # the feed was rewritten: what we read is gone
        await eventually(lambda: replica.feed_gap, what="gap noticed")
        assert replica.ready
        assert replica.gap is not None
        assert replica.gap.first == 1

        # a broken snapshot: logged and shown, the state held stays in service
        (snap / "rooms.jsonl").write_bytes(b'{"_id": "x", "t": "v"}\n{broken\n')
        (snap / "manifest.json").write_bytes(b'{"position": 0}')
        await eventually(lambda: replica.reload_error is not None, what="the failed load")
        assert "rooms.jsonl:2" in (replica.reload_error or "")
        assert replica.ready
        assert replica.feed_gap
        assert replica.store.get("n2") is not None
        assert "the last one failed" in replica.checks()[1].detail
        checks = replica.gap_checks
        await eventually(lambda: replica.gap_checks >= checks + 2, what="checked again")
        assert replica.reload_error is not None  # the same broken snapshot is not retried

        # a good one at the position the rewritten feed starts from
        feed.write_bytes(jsonl([room_event("m1")]))
        write_snapshot(snap, [make_room("fresh")], [make_user("u9", ["admin"])], position=0)
        await eventually(lambda: replica.gaps_healed == 1, what="healed")
        await eventually(lambda: replica.position == 1, what="following the new feed")
        assert not replica.feed_gap
        assert replica.reload_error is None
        assert replica.store.get("n2") is None
        assert replica.store.get("fresh") is not None
        assert replica.store.get("m1") is not None
        assert replica.users.user("u9") is not None
        assert replica.users.user("u1") is None

        # the next checkpoint holds the new state
        # (and the one written before the gap, at position 2 of the old feed, is gone)
        def newest() -> int | None:
            found = find_checkpoint(checkpoints)
            return None if found is None else found[0]

        await eventually(lambda: newest() in (0, 1), what="the new state's checkpoint")
    finally:
        await finish(replica, task)
