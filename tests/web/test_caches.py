"""Caches of repeated requests: parsed queries, proven logins and ready answers (with ETags)
are dropped when the data changes or a token expires, and change no answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.settings import RateLimit
from tests.conftest import ADMIN, DAY_MS, MANAGER, headers, standard_rooms, standard_users
from tests.factories import make_room, make_user, write_snapshot
from tests.web.support import Clock, Feed, eventually

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
ROOMS = "/api/v1/voip/rooms"


@pytest.fixture
async def live(make_client: MakeClient, tmp_path: Path) -> tuple[Client, Feed]:
    """A server on a snapshot at position 0, following an (empty) events file."""
    snapshot = write_snapshot(tmp_path / "snap", standard_rooms(), standard_users(), position=0)
    feed = Feed(tmp_path / "events.jsonl")
    return await make_client(snapshot=snapshot, feed=feed.url), feed


async def test_answer_and_etag_change_when_the_rooms_do(live: tuple[Client, Feed]) -> None:
    client, feed = live
    url = ROOMS + "?queue=sales&count=100"
    first = await client.get(url, headers=headers(MANAGER))
    etag, total = first.headers["ETag"], (await first.json())["total"]
    assert (b"ETag", etag.encode()) in first.raw_headers  # spelled as ever
    cached = await client.get(url, headers=headers(MANAGER))
    assert cached.headers["ETag"] == etag
    assert await cached.read() == await first.read()
    feed.append(
        "watch.rooms", {"clientAction": "inserted", "room": make_room("new", queue="sales")}
    )

    async def grown() -> bool:
        resp = await client.get(url, headers=headers(MANAGER))
        return bool((await resp.json())["total"] == total + 1)

    await eventually(grown, what="the inserted room")
    stale = await client.get(url, headers={**headers(MANAGER), "If-None-Match": etag})
    assert stale.status == 200
    assert stale.headers["ETag"] != etag
    fresh = await client.get(
        url, headers={**headers(MANAGER), "If-None-Match": stale.headers["ETag"]}
    )
    assert fresh.status == 304


async def test_logins_follow_user_and_permission_changes(live: tuple[Client, Feed]) -> None:
    client, feed = live
    assert (await client.get(ROOMS, headers=headers(MANAGER))).status == 200
    feed.append(
        "permission.changed",
        {"clientAction": "updated", "data": {"_id": "view-livechat-rooms", "roles": ["admin"]}},
    )

    async def forbidden() -> bool:
        return (await client.get(ROOMS, headers=headers(MANAGER))).status == 403

    await eventually(forbidden, what="the permission change")
    assert (await client.get(ROOMS, headers=headers(ADMIN))).status == 200
    feed.append("watch.users", {"clientAction": "removed", "id": ADMIN[0]})

    async def unknown() -> bool:
        return (await client.get(ROOMS, headers=headers(ADMIN))).status == 401

    await eventually(unknown, what="the user removal")


async def test_a_remembered_login_expires_on_time(make_client: MakeClient, tmp_path: Path) -> None:
    clock = Clock()
    issued = clock() - DAY_MS + 1500  # valid for another 1.5 s of the server's clock
    users = [make_user("u", ["admin"], {"tok": issued})]
    snapshot = write_snapshot(tmp_path / "snap", standard_rooms(), users)
    client = await make_client(snapshot=snapshot, login_expiration_days=1, now_ms=clock)
    assert (await client.get(ROOMS, headers=headers(("u", "tok")))).status == 200
    clock.advance(1499)
    assert (await client.get(ROOMS, headers=headers(("u", "tok")))).status == 200  # remembered
    clock.advance(1)
    assert (await client.get(ROOMS, headers=headers(("u", "tok")))).status == 401


async def test_repeated_bad_queries_get_the_same_error(client: Client) -> None:
    for url in ("?bogus=1", "?sort={", "?createdAt[start]=nope", "?open=maybe"):
        answers = [await client.get(ROOMS + url, headers=headers(MANAGER)) for _ in range(2)]
        assert [a.status for a in answers] == [400, 400]
        assert await answers[0].read() == await answers[1].read()


async def test_spellings_of_one_query_share_answer_and_etag(client: Client) -> None:
    one = await client.get(ROOMS + "?agents=agent-1&count=5", headers=headers(MANAGER))
    other = await client.get(ROOMS + "?count=5&agents[]=agent-1", headers=headers(MANAGER))
    assert one.headers["ETag"] == other.headers["ETag"]
    assert await one.read() == await other.read()
    body = await client.get(
        ROOMS, headers=headers(MANAGER), json={"agents": ["agent-1"], "count": 5}
    )
    assert body.headers["ETag"] == one.headers["ETag"]


async def test_without_response_cache_answers_and_etags_are_the_same(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    cached = await make_client(snapshot=snapshot_dir)
    built = await make_client(snapshot=snapshot_dir, response_cache=0)
    for url in ("?count=3", '?queue=sales&sort={"ts":1}', '?fields={"queue":1}&open=true'):
        a = await cached.get(ROOMS + url, headers=headers(MANAGER))
        b = await built.get(ROOMS + url, headers=headers(MANAGER))
        assert (a.status, a.headers["ETag"], await a.read()) == (
            b.status,
            b.headers["ETag"],
            await b.read(),
        )  # replicas at one position agree, whatever their cache
        again = await built.get(
            ROOMS + url, headers={**headers(MANAGER), "If-None-Match": a.headers["ETag"]}
        )
        assert again.status == 304
        assert again.headers["ETag"] == a.headers["ETag"]
        assert await again.read() == b""


@pytest.mark.parametrize("response_cache", [0, 4096])
async def test_revalidation_carries_rate_limit_headers(
    make_client: MakeClient, snapshot_dir: Path, response_cache: int
) -> None:
    client = await make_client(
        snapshot=snapshot_dir, response_cache=response_cache, rate_limit=RateLimit(100, 60_000)
    )
    first = await client.get(ROOMS + "?count=2", headers=headers(MANAGER))
    etag = first.headers["ETag"]
    again = await client.get(
        ROOMS + "?count=2", headers={**headers(MANAGER), "If-None-Match": f'"x", W/{etag}'}
    )
    assert again.status == 304
    assert again.headers["ETag"] == etag
    assert again.headers["X-RateLimit-Remaining"] == "98"
