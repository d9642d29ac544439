"""The replica against a real nats-server with JetStream: follow, outage, checkpoint, gap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from aiohttp.test_utils import TestClient

from service.feed.replica import Replica
from service.feed.sources import NatsSource
from service.feed.tools import ensure_stream, publish_file
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import MANAGER, AiohttpClient, headers, standard_users
from tests.factories import make_room, write_snapshot
from tests.feed.support import NatsServer, eventually, jsonl, room_event

STREAM = "ROCKETCHAT"


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    return write_snapshot(tmp_path / "snapshot", [make_room("s0"), make_room("s1")], position=0)


async def publish(server: NatsServer, entries: list[dict[str, Any]], tmp_path: Path) -> int:
    path = tmp_path / f"batch-{id(entries)}.jsonl"
    path.write_bytes(jsonl(entries))
    return await publish_file(server.url(STREAM), path)


async def publish_raw(server: NatsServer, messages: list[tuple[str, bytes]]) -> None:
    nc = await nats.connect(server.server)
    try:
        js = nc.jetstream()
        await ensure_stream(js, STREAM)
        for subject, payload in messages:
            await js.publish(subject, payload)
    finally:
        await nc.close()


async def last_seq(server: NatsServer) -> int:
    nc = await nats.connect(server.server)
    try:
        return int((await nc.jetstream().stream_info(STREAM)).state.last_seq)
    finally:
        await nc.close()


@pytest.fixture
async def running() -> AsyncIterator[list[tuple[Replica, asyncio.Task[None]]]]:
    started: list[tuple[Replica, asyncio.Task[None]]] = []
    yield started
    for replica, task in started:
        await replica.stop()
        await task


def nats_source(replica: Replica) -> NatsSource:
    source = replica.source
    assert isinstance(source, NatsSource)
    return source


def start(started: list[tuple[Replica, asyncio.Task[None]]], replica: Replica) -> Replica:
    started.append((replica, asyncio.create_task(replica.run())))
    return replica


async def test_events_applied_end_to_end(
    nats_server: NatsServer,
    snap: Path,
    tmp_path: Path,
    running: list[tuple[Replica, asyncio.Task[None]]],
) -> None:
    events = [room_event("s0", "removed"), room_event("n1"), room_event("n2", queue="sales")]
    assert await publish(nats_server, events, tmp_path) == 3
    replica = start(running, Replica(snap, feed=nats_server.url(STREAM)))
    await eventually(lambda: replica.ready, what="ready")
    await eventually(lambda: replica.position == 3)
    assert replica.store.get("s0") is None
    raw = replica.store.get("n2")
    assert raw is not None
    assert orjson.loads(raw)["queue"] == "sales"
    assert replica.events[("watch.rooms", "applied")] == 3
    # live events keep arriving
    await publish(nats_server, [room_event("n3"), room_event("n1", "removed")], tmp_path)
    await eventually(lambda: replica.position == 5)
    assert replica.store.get("n3") is not None
    assert replica.store.get("n1") is None
    assert replica.staleness_seconds() == 0.0


async def test_malformed_events_are_skipped_and_counted(
    nats_server: NatsServer, snap: Path, running: list[tuple[Replica, asyncio.Task[None]]]
) -> None:
    good = orjson.dumps([{"clientAction": "inserted", "room": {"_id": "ok", "t": "v"}}])
    await publish_raw(
        nats_server,
        [
            ("watch.rooms", b"{broken"),
            ("watch.rooms", orjson.dumps({"clientAction": "updated", "room": {"t": "v"}})),
            ("watch.users", orjson.dumps({"clientAction": "updated", "id": "u"})),
            ("permission.changed", orjson.dumps({"clientAction": "bogus", "data": {}})),
            ("watch.rooms", good),
        ],
    )
    replica = start(running, Replica(snap, feed=nats_server.url(STREAM)))
    await eventually(lambda: replica.ready and replica.position == 5)
    assert replica.events == {
        ("watch.rooms", "rejected"): 2,
        ("watch.users", "rejected"): 1,
        ("permission.changed", "skipped"): 1,
        ("watch.rooms", "applied"): 1,
    }
    assert replica.store.get("ok") is not None


async def test_broker_restart_loses_and_doubles_nothing(
    nats_server: NatsServer,
    snap: Path,
    tmp_path: Path,
    running: list[tuple[Replica, asyncio.Task[None]]],
) -> None:
    total = 10_000
    # Each room is written twice: first "queue a", then "queue b"; applying any event out of
    # order, twice, or not at all leaves some room on the wrong queue or missing.
    first = [room_event(f"r{i}", "inserted", queue="a") for i in range(total // 2)]
    second = [room_event(f"r{i}", queue="b") for i in range(total // 2)]
    await publish(nats_server, first + second, tmp_path)
    seen: list[int] = []
    replica = Replica(snap, feed=nats_server.url(STREAM))
    handle_batch = replica.handle_batch

    def spy(messages: Any) -> list[str]:
        seen.extend(message.position for message in messages)
        return handle_batch(messages)

    replica.handle_batch = spy  # type: ignore[method-assign]
    start(running, replica)

    # kill the broker in the middle of catching up
    await eventually(lambda: replica.position >= 500, what="catching up")
    source = nats_source(replica)
    reconnects = source.reconnects
    nats_server.stop(kill=True)
    at_kill = replica.position
    assert 0 < at_kill < total
    await eventually(lambda: source.reconnects > reconnects, what="the outage noticed")
    assert not replica.ready  # it had not caught up yet
    nats_server.start()  # same port, same store directory
    await eventually(lambda: replica.ready and replica.position == total, within=30)

    # a broker outage once ready keeps the replica ready, with growing staleness
    reconnects = source.reconnects
    nats_server.stop(kill=True)
    await eventually(lambda: source.reconnects > reconnects, what="the outage noticed")
    await eventually(lambda: replica.staleness_seconds() > 0.2, what="staleness")
    assert replica.ready
    assert not replica.feed_gap
    nats_server.start()
    await publish(nats_server, [room_event("late")], tmp_path)
    await eventually(lambda: replica.position == total + 1, within=20, what="resumed")
    await eventually(lambda: replica.staleness_seconds() == 0.0, what="fresh again")

    assert seen == list(range(1, total + 2))  # each position handed over exactly once, in order
    assert replica.events[("watch.rooms", "applied")] == total + 1
    assert len(replica.store) == 2 + total // 2 + 1
    for i in range(total // 2):
        raw = replica.store.get(f"r{i}")
        assert raw is not None
        assert orjson.loads(raw)["queue"] == "b"
    assert replica.ready


async def test_restart_from_checkpoint_resumes_at_its_position(
    nats_server: NatsServer,
    snap: Path,
    tmp_path: Path,
    running: list[tuple[Replica, asyncio.Task[None]]],
) -> None:
    checkpoints = tmp_path / "checkpoints"
    await publish(nats_server, [room_event(f"a{i}") for i in range(10)], tmp_path)
    first = Replica(snap, feed=nats_server.url(STREAM), checkpoint_dir=checkpoints)
    task = asyncio.create_task(first.run())
    await eventually(lambda: first.ready and first.position == 10)
    await first.stop()
    await task
    assert first.checkpoint_position == 10

    await publish(nats_server, [room_event("a0", "removed"), room_event("c1")], tmp_path)
    second = start(running, Replica(snap, feed=nats_server.url(STREAM), checkpoint_dir=checkpoints))
    await eventually(lambda: second.ready and second.position == 12)
    assert second.loaded is not None
    assert second.loaded.position == 10
    assert sum(second.events.values()) == 2  # only what came after the checkpoint
    assert second.store.get("a0") is None
    assert second.store.get("c1") is not None
    assert len(second.store) == 2 + 10 - 1 + 1


async def test_purged_stream_is_a_gap(
    nats_server: NatsServer,
    snap: Path,
    tmp_path: Path,
    running: list[tuple[Replica, asyncio.Task[None]]],
) -> None:
    await publish(nats_server, [room_event(f"a{i}") for i in range(5)], tmp_path)
    nc = await nats.connect(nats_server.server)
    await nc.jetstream().purge_stream(STREAM)
    await nc.close()
    await publish(nats_server, [room_event("after")], tmp_path)
    replica = start(running, Replica(snap, feed=nats_server.url(STREAM), gap_check_interval=0.02))
    await eventually(lambda: replica.feed_error is not None, what="gap detected")
    assert not replica.ready
    assert not replica.feed_gap  # never served: not ready rather than stale
    assert replica.position == 0
    assert "purged" in (replica.error or "")
    feed_check = replica.checks()[1]
    assert not feed_check.ok
    assert "position 1" in feed_check.detail
    assert "waiting for a snapshot at position 5 or later" in feed_check.detail
    assert await last_seq(nats_server) == 6

    # a covering snapshot makes it ready without a restart
    write_snapshot(snap, [make_room("fresh")], position=5)
    await eventually(lambda: replica.ready and replica.position == 6, what="healed")
    assert replica.feed_error is None
    assert replica.store.get("fresh") is not None
    assert replica.store.get("after") is not None
    assert replica.store.get("s0") is None


async def test_stream_behind_our_position_is_a_gap(
    nats_server: NatsServer,
    tmp_path: Path,
    running: list[tuple[Replica, asyncio.Task[None]]],
) -> None:
    await publish(nats_server, [room_event("a")], tmp_path)
    ahead = write_snapshot(tmp_path / "ahead", [make_room("s0")], position=40)
    replica = start(running, Replica(ahead, feed=nats_server.url(STREAM)))
    await eventually(lambda: replica.feed_error is not None, what="gap detected")
    assert "recreated" in (replica.feed_error or "")
    assert not replica.ready


async def test_broker_down_at_start_then_up(
    nats_server: NatsServer,
    snap: Path,
    tmp_path: Path,
    running: list[tuple[Replica, asyncio.Task[None]]],
) -> None:
    nats_server.stop()
    replica = start(running, Replica(snap, feed=nats_server.url(STREAM)))
    await eventually(
        lambda: "reconnecting" in replica.checks()[1].detail, what="a failed connection attempt"
    )
    assert nats_source(replica).reconnects >= 1
    assert replica.loaded is not None
    assert not replica.ready
    nats_server.start()
    await publish(nats_server, [room_event("n1")], tmp_path)
    await eventually(lambda: replica.ready and replica.position == 1, within=15)


async def scrape_gauge(client: TestClient[Any, Any], name: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def room_ids(client: TestClient[Any, Any]) -> set[str]:
    resp = await client.get("/api/v1/voip/rooms?count=100", headers=headers(MANAGER))
    assert resp.status == 200
    return {room["_id"] for room in (await resp.json())["rooms"]}


async def test_gap_while_serving_keeps_serving_stale_then_heals_from_a_covering_snapshot(
    nats_server: NatsServer, tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    snap = write_snapshot(tmp_path / "snapshot", [make_room("s0")], standard_users(), position=0)
    await publish(nats_server, [room_event(f"a{i}") for i in range(3)], tmp_path)
    replica = Replica(snap, feed=nats_server.url(STREAM), gap_check_interval=0.02)
    app = create_app(Settings(snapshot=snap, feed=nats_server.url(STREAM)), replica=replica)
    client = await aiohttp_client(app)
    await eventually(lambda: replica.ready and replica.position == 3, what="caught up")
    resp = await client.get("/api/v1/voip/rooms", headers=headers(MANAGER))
    assert resp.status == 200
    assert "X-Replica-Stale" not in resp.headers
    assert await scrape_gauge(client, "voip_rooms_feed_gap") == 0

    # Positions 4 to 9 are gone before the replica saw them: the stream now starts at 10.
    nc = await nats.connect(nats_server.server)
    try:
        assert await nc.jetstream().purge_stream(STREAM, seq=10)
    finally:
        await nc.close()
    await publish(nats_server, [room_event("after-gap")], tmp_path)  # sequence 10
    await eventually(lambda: replica.feed_gap, what="gap noticed")

    # Still ready, answering from the last consistent state, marked stale.
    assert replica.ready
    assert replica.position == 3
    assert (await client.get("/readyz")).status == 200
    resp = await client.get("/api/v1/voip/rooms?count=100", headers=headers(MANAGER))
    assert resp.status == 200
    assert resp.headers["X-Replica-Stale"] == "feed-gap"
    assert {r["_id"] for r in (await resp.json())["rooms"]} == {"s0", "a0", "a1", "a2"}
    # errors carry it too
    unauthorized = await client.get("/api/v1/voip/rooms")
    assert unauthorized.status == 401
    assert unauthorized.headers["X-Replica-Stale"] == "feed-gap"
    probes = await client.get("/readyz?verbose")
    feed = (await probes.json())["checks"][1]
    assert feed["ok"]
    assert "feed gap" in feed["detail"]
    assert "position 9 or later" in feed["detail"]
    assert await scrape_gauge(client, "voip_rooms_feed_gap") == 1

    # A snapshot that does not reach the gap is not loaded.
    short = write_snapshot(tmp_path / "short", [make_room("short")], standard_users(), position=5)
    checks = replica.gap_checks
    for name in ("rooms.jsonl", "users.jsonl", "permissions.jsonl", "manifest.json"):
        (short / name).replace(snap / name)  # manifest.json last, as the runbook says
    await eventually(lambda: replica.gap_checks >= checks + 2, what="the directory checked")
    assert replica.gaps_healed == 0
    assert replica.feed_gap
    assert replica.position == 3

    # A covering one (position 9: the stream holds 10) is swapped in whole, then followed.
    covering = write_snapshot(
        tmp_path / "covering", [make_room("c0"), make_room("c1")], standard_users(), position=9
    )
    for name in ("rooms.jsonl", "users.jsonl", "permissions.jsonl", "manifest.json"):
        (covering / name).replace(snap / name)
    await eventually(lambda: replica.gaps_healed == 1, what="gap healed")
    await eventually(lambda: replica.position == 10, what="following again")
    assert replica.ready
    assert not replica.feed_gap
    resp = await client.get("/api/v1/voip/rooms", headers=headers(MANAGER))
    assert "X-Replica-Stale" not in resp.headers
    assert await room_ids(client) == {"c0", "c1", "after-gap"}
    assert await scrape_gauge(client, "voip_rooms_feed_gap") == 0
    assert await scrape_gauge(client, "voip_rooms_snapshot_load_rooms") == 2
    feed = (await (await client.get("/readyz?verbose")).json())["checks"][1]
    assert feed["ok"]
    assert "caught up at position 10" in feed["detail"]

    await publish(nats_server, [room_event("c0", "removed"), room_event("later")], tmp_path)
    await eventually(lambda: replica.position == 12, what="live events again")
    assert await room_ids(client) == {"c1", "after-gap", "later"}
