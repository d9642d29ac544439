"""publish_file and simulate, checked by a replica that follows what they wrote."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.demo import write_snapshot
from service.feed.replica import Replica
from service.feed.sources import FeedError
from service.feed.tools import publish_file, read_events_file, simulate
from tests.feed.support import NatsServer, eventually, jsonl, room_event


def test_read_events_file_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl([room_event("a")]) + b"\n" + b'{"payload": {}}\n')
    with pytest.raises(FeedError, match=r"events.jsonl:3"):
        list(read_events_file(path))


async def test_publish_file_creates_the_stream(nats_server: NatsServer, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl([room_event("a"), room_event("b"), room_event("a", "removed")]))
    assert await publish_file(nats_server.url("NEW"), path) == 3
    assert await publish_file(nats_server.url("NEW"), path) == 3  # appends to the stream


@pytest.mark.parametrize("transport", ["file", "nats"])
async def test_simulated_events_all_apply(
    transport: str, tmp_path: Path, nats_server: NatsServer
) -> None:
    snapshot = tmp_path / "demo"
    write_snapshot(snapshot, 300, seed=3)
    url = f"file://{tmp_path}/events.jsonl" if transport == "file" else nats_server.url("SIM")
    written = await simulate(url, rate=200, seed=3, duration=0.6, snapshot_dir=snapshot, tick=0.05)
    assert written > 50
    replica = Replica(snapshot, feed=url, poll_interval=0.01)
    task = asyncio.create_task(replica.run())
    try:
        await eventually(lambda: replica.ready and replica.position == written, what="caught up")
        results = {result for (_, result) in replica.events}
        assert results == {"applied"}, replica.events
    finally:
        await replica.stop()
        await task


async def test_simulate_without_snapshot(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/events.jsonl"
    assert await simulate(url, rate=100, seed=1, duration=0.3, snapshot_dir=None, tick=0.05) > 0
