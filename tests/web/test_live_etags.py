"""Content ETags and an answer cache that survives the feed: the same answer has the same ETag
at any feed position and on any replica, and revalidations get 304 while unrelated events
arrive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from service.core.ejson import decode as decode_room
from service.core.query import Parsed, RoomQuery
from service.core.store import RoomStore
from service.core.users import Directory
from service.feed.replica import Replica
from service.feed.snapshot import LoadResult
from service.web.answers import Answers
from service.web.metrics import LiveCounts
from tests.conftest import MANAGER, headers, standard_rooms, standard_users
from tests.factories import make_room, write_snapshot
from tests.web.support import Feed, eventually

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
ROOMS = "/api/v1/voip/rooms"
SALES = ROOMS + "?queue=sales&count=100"


@pytest.fixture
async def live(make_client: MakeClient, tmp_path: Path) -> tuple[Client, Feed]:
    """A server on a snapshot at position 0, following an (empty) events file."""
    snapshot = write_snapshot(tmp_path / "snap", standard_rooms(), standard_users(), position=0)
    feed = Feed(tmp_path / "events.jsonl")
    return await make_client(snapshot=snapshot, feed=feed.url), feed


async def position(client: Client) -> int:
    text = await (await client.get("/metrics")).text()
    line = next(x for x in text.splitlines() if x.startswith("voip_rooms_feed_position "))
    return int(float(line.split()[1]))


async def cache_count(client: Client, result: str) -> int:
    text = await (await client.get("/metrics")).text()
    prefix = f'voip_rooms_cache_answers_total{{result="{result}"}} '
    line = next(x for x in text.splitlines() if x.startswith(prefix))
    return int(float(line.split()[1]))


async def test_same_answer_same_etag_on_two_replicas_at_two_positions(
    live: tuple[Client, Feed], make_client: MakeClient, tmp_path: Path
) -> None:
    client, feed = live
    other = await make_client(
        snapshot=write_snapshot(tmp_path / "other", standard_rooms(), standard_users(), position=5)
    )
    feed.append(
        "watch.rooms", {"clientAction": "inserted", "room": make_room("x1", queue="support")}
    )
    await eventually(_at(client, 1), what="the event")
    a = await client.get(SALES, headers=headers(MANAGER))
    b = await other.get(SALES, headers=headers(MANAGER))
    assert a.headers["ETag"] == b.headers["ETag"]
    assert await a.read() == await b.read()
    assert a.headers["ETag"].startswith('"')
    assert len(a.headers["ETag"]) == 26


def _at(client: Client, wanted: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await position(client) >= wanted

    return check


async def test_revalidation_gets_304_while_unrelated_events_arrive(
    live: tuple[Client, Feed],
) -> None:
    client, feed = live
    first = await client.get(SALES, headers=headers(MANAGER))
    etag = first.headers["ETag"]
    misses = await cache_count(client, "miss")
    for i in range(5):
        room = make_room(f"support-{i}", queue="support")
        feed.append("watch.rooms", {"clientAction": "inserted", "room": room})
        await eventually(_at(client, i + 1), what=f"event {i + 1}")
        again = await client.get(SALES, headers={**headers(MANAGER), "If-None-Match": etag})
        assert again.status == 304
        assert again.headers["ETag"] == etag
    assert await cache_count(client, "miss") == misses  # never rebuilt: kept across events
    assert await cache_count(client, "hit") >= 5
    # a related event: the answer changes, and with it the ETag
    feed.append(
        "watch.rooms", {"clientAction": "inserted", "room": make_room("sale-1", queue="sales")}
    )
    await eventually(_at(client, 6), what="the related event")
    changed = await client.get(SALES, headers={**headers(MANAGER), "If-None-Match": etag})
    assert changed.status == 200
    assert changed.headers["ETag"] != etag
    assert (await changed.json())["total"] == (await first.json())["total"] + 1
    # a room leaving the query changes it back: the same content, the same ETag as at first
    feed.append("watch.rooms", {"clientAction": "removed", "room": {"_id": "sale-1"}})
    await eventually(_at(client, 7), what="the removal")
    back = await client.get(SALES, headers={**headers(MANAGER), "If-None-Match": etag})
    assert back.status == 304


async def test_users_events_keep_answers(live: tuple[Client, Feed]) -> None:
    client, feed = live
    await client.get(SALES, headers=headers(MANAGER))
    misses = await cache_count(client, "miss")
    feed.append(
        "watch.users",
        {"clientAction": "updated", "id": "agent-1", "diff": {"statusLivechat": "available"}},
    )
    await eventually(_at(client, 1), what="the users event")
    assert (await client.get(SALES, headers=headers(MANAGER))).status == 200
    assert await cache_count(client, "miss") == misses


async def test_the_cache_keeps_the_most_recently_used(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(snapshot=snapshot_dir, response_cache=2)
    for url in ("?count=1", "?count=2", "?count=1", "?count=3"):  # count=2 is dropped
        assert (await client.get(ROOMS + url, headers=headers(MANAGER))).status == 200
    misses = await cache_count(client, "miss")
    await client.get(ROOMS + "?count=1", headers=headers(MANAGER))
    assert await cache_count(client, "miss") == misses
    await client.get(ROOMS + "?count=2", headers=headers(MANAGER))
    assert await cache_count(client, "miss") == misses + 1


def test_a_state_swapped_in_whole_drops_every_answer_and_is_followed(tmp_path: Path) -> None:
    replica = Replica(tmp_path)
    answers = Answers(replica, 16, LiveCounts())
    replica.store.upsert(decode_room(make_room("a", queue="sales")))
    sales = Parsed.of(RoomQuery(queue="sales"))
    assert orjson.loads(answers.get(sales).body)["total"] == 1
    store = RoomStore()
    for room_id in ("a", "b"):
        store.upsert(decode_room(make_room(room_id, queue="sales")))
    result = LoadResult(position=9, rooms=2, skipped_rooms=0, users=0, permissions=0, seconds=0)
    replica._publish(tmp_path, (store, Directory(), result), None)
    assert orjson.loads(answers.get(sales).body)["total"] == 2
    store.upsert(decode_room(make_room("c", queue="sales")))  # the new store is watched
    assert orjson.loads(answers.get(sales).body)["total"] == 3
