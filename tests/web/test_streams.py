"""Live answers over Server-Sent Events, on a real server with real client sockets: framing, the
first answer and resume, coalescing, events that change nothing, auth and permission ending a
stream, limits, slow readers, disconnects."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.core.ejson import decode
from service.core.store import RoomStore
from service.feed.snapshot import LoadResult
from service.settings import Settings
from service.web.app import REPLICA, create_app
from service.web.server import SERVER_LIMITS
from tests.conftest import (
    AGENT,
    DAY_MS,
    MANAGER,
    AiohttpClient,
    headers,
    standard_rooms,
    standard_users,
    wait_ready,
)
from tests.factories import make_room, make_user, write_snapshot
from tests.web.support import Clock, Feed, eventually

Client = TestClient[Any, Any]
ROOMS = "/api/v1/voip/rooms"
SALES = ROOMS + "?queue=sales&count=100"
SSE = {"Accept": "text/event-stream"}


class Events:
    """An SSE reader over a real connection: events as dicts of their fields."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, within: float = 30.0) -> dict[str, str]:
        """The next event or comment block (a comment as ``{"comment": text}``)."""
        event: dict[str, str] = {}
        async with asyncio.timeout(within):
            while True:
                line = await self.resp.content.readline()
                if not line:
                    raise EOFError("the stream ended")
                text = line.decode().rstrip("\n")
                if text == "":
                    if event:
                        return event
                    continue
                if text.startswith(":"):
                    event["comment"] = text[1:].strip()
                    continue
                name, _, value = text.partition(":")
                event[name] = value.removeprefix(" ")

    async def rooms(self, within: float = 30.0) -> dict[str, str]:
        """The next ``rooms`` (or ``error``) event, keep-alives skipped."""
        while True:
            event = await self.next(within)
            if "event" in event:
                return event

    async def ended(self, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            assert await self.resp.content.read() == b""


Opened = Callable[..., Awaitable[Events]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Server:
    """A real server (and its feed, its clock) for stream tests."""

    def __init__(
        self, client: Client, feed: Feed, clock: Clock, session: aiohttp.ClientSession
    ) -> None:
        self.client, self.feed, self.clock, self.session = client, feed, clock, session
        self.position = 0
        self.opened: list[aiohttp.ClientResponse] = []

    async def open(
        self,
        url: str = SALES,
        user: tuple[str, str] = MANAGER,
        extra: dict[str, str] | None = None,
    ) -> Events:
        resp = await self.session.get(
            self.client.make_url(url), headers={**headers(user), **SSE, **(extra or {})}
        )
        self.opened.append(resp)
        assert resp.status == 200, await resp.text()
        return Events(resp)

    async def get(self, url: str = SALES) -> tuple[str, bytes]:
        resp = await self.client.get(url, headers=headers(MANAGER))
        return resp.headers["ETag"], await resp.read()

    async def publish(self, subject: str, payload: dict[str, Any]) -> None:
        """Append an event and wait until the server applied it."""
        self.feed.append(subject, payload)
        self.position += 1
        wanted = self.position

        async def applied() -> bool:
            return await self.metric("voip_rooms_feed_position") >= wanted

        await eventually(applied, what=f"event {wanted}")

    async def room(self, room: dict[str, Any]) -> None:
        await self.publish("watch.rooms", {"clientAction": "updated", "room": room})

    async def metric(self, name: str) -> float:
        text = await (await self.client.get("/metrics")).text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    async def streams(self, wanted: int) -> None:
        async def reached() -> bool:
            return await self.metric("voip_rooms_streams") == wanted

        await eventually(reached, what=f"{wanted} open streams")


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server(
    aiohttp_client: AiohttpClient, tmp_path: Path, session: aiohttp.ClientSession
) -> AsyncIterator[MakeServer]:
    made = 0
    servers: list[Server] = []

    async def make(
        rooms: list[dict[str, Any]] | None = None,
        users: list[dict[str, Any]] | None = None,
        clock: Clock | None = None,
        keepalive: float = 15.0,
        tick: float = 0.05,
        buffer: int = 1 << 20,
        **overrides: Any,
    ) -> Server:
        nonlocal made
        made += 1
        base = tmp_path / f"server-{made}"
        snapshot = write_snapshot(
            base / "snap",
            standard_rooms() if rooms is None else rooms,
            standard_users() if users is None else users,
            position=0,
        )
        feed = Feed(base.with_suffix(".jsonl"))
        clock = clock or Clock()
        overrides.setdefault("stream_interval", 0)
        settings = Settings(snapshot=snapshot, feed=feed.url, **overrides)
        app = create_app(
            settings,
            now_ms=clock,
            stream_keepalive=keepalive,
            stream_tick=tick,
            stream_buffer=buffer,
        )
        server = TestServer(app)
        await server.start_server(**SERVER_LIMITS)
        client = await aiohttp_client(server)
        await wait_ready(client)
        servers.append(Server(client, feed, clock, session))
        return servers[-1]

    yield make
    for server in servers:
        for resp in server.opened:
            resp.close()


def sale(room_id: str, **fields: Any) -> dict[str, Any]:
    return make_room(room_id, queue="sales", **fields)


async def test_framing_and_the_first_answer(make_server: MakeServer) -> None:
    server = await make_server()
    etag, body = await server.get()
    resp = await server.session.get(
        server.client.make_url(SALES), headers={**headers(MANAGER), **SSE}
    )
    server.opened.append(resp)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    events = Events(resp)
    first = await events.next()
    assert first == {"id": etag.strip('"'), "event": "rooms", "data": body.decode()}
    assert b"\n" not in body
    await server.room(sale("new-sale"))
    second = await events.next()
    etag2, body2 = await server.get()
    assert second == {"id": etag2.strip('"'), "event": "rooms", "data": body2.decode()}
    assert orjson.loads(second["data"])["total"] == orjson.loads(body)["total"] + 1


async def test_errors_come_first_as_json(make_server: MakeServer) -> None:
    server = await make_server()
    cases = [
        ({**SSE}, SALES, 401),
        ({**SSE, **headers(MANAGER)}, ROOMS + "?open=maybe", 400),
        ({**SSE, **headers(AGENT)}, SALES, 403),
    ]
    for sent, url, status in cases:
        resp = await server.session.get(server.client.make_url(url), headers=sent)
        assert resp.status == status
        assert resp.headers["Content-Type"].startswith("application/json")
        assert (await resp.json())["success"] is False
    # an agent may follow their own calls
    events = await server.open(ROOMS + f"?agents={AGENT[0]}", user=AGENT)
    assert (await events.next())["event"] == "rooms"


async def test_resume_starts_quiet_and_an_isolated_change_is_sent_at_once(
    make_server: MakeServer,
) -> None:
    # An interval of a minute: were the change held for the interval, the test would time out.
    server = await make_server(stream_interval=60_000)
    etag, _ = await server.get()
    events = await server.open(extra={"Last-Event-ID": etag.strip('"')})
    await server.streams(1)
    await server.room(sale("resumed"))
    event = await events.next()
    assert event["event"] == "rooms"
    assert event["id"] != etag.strip('"')
    assert await server.metric('voip_rooms_stream_events_total{event="rooms"}') == 1
    # an outdated Last-Event-ID gets the current answer at once
    stale = await server.open(extra={"Last-Event-ID": etag.strip('"')})
    assert (await stale.next())["id"] == event["id"]


async def test_events_that_change_nothing_send_nothing(make_server: MakeServer) -> None:
    server = await make_server()
    events = await server.open()
    first = orjson.loads((await events.next())["data"])
    await server.room(make_room("elsewhere", queue="support"))
    await server.publish(
        "watch.users",
        {"clientAction": "updated", "id": "agent-1", "diff": {"statusLivechat": "away"}},
    )
    same = sale("room-001-copy")
    await server.room(same)
    await server.room(same)  # applied twice: the second changes nothing
    event = orjson.loads((await events.next())["data"])
    assert event["total"] == first["total"] + 1
    assert await server.metric('voip_rooms_stream_events_total{event="rooms"}') == 2


async def test_changes_within_the_interval_are_coalesced_into_the_newest(
    make_server: MakeServer,
) -> None:
    # Long enough for three events to be applied within it on a slow machine.
    server = await make_server(stream_interval=4000)
    events = await server.open()
    first = orjson.loads((await events.next())["data"])
    for i in range(3):
        await server.room(sale(f"burst-{i}"))
    newest = await events.next()
    assert orjson.loads(newest["data"])["total"] == first["total"] + 3
    assert newest["id"] == (await server.get())[0].strip('"')
    assert await server.metric('voip_rooms_stream_events_total{event="rooms"}') == 2


async def test_one_build_per_change_for_every_stream_of_a_query(make_server: MakeServer) -> None:
    server = await make_server()
    streams = [await server.open() for _ in range(20)]
    for events in streams:
        await events.next()
    misses = await server.metric('voip_rooms_cache_answers_total{result="miss"}')
    await server.room(sale("shared"))
    ids = {(await events.next())["id"] for events in streams}
    assert len(ids) == 1
    assert await server.metric('voip_rooms_cache_answers_total{result="miss"}') == misses + 1


async def test_keep_alives_on_a_quiet_stream(make_server: MakeServer) -> None:
    server = await make_server(keepalive=0.2)
    events = await server.open()
    await events.next()
    assert await events.next() == {"comment": "keep-alive"}
    assert await events.next() == {"comment": "keep-alive"}


async def test_a_removed_token_ends_the_stream_with_a_401_body(make_server: MakeServer) -> None:
    server = await make_server()
    events = await server.open()
    await events.next()
    other = await server.open(ROOMS + "?queue=support")
    await other.next()
    await server.publish(
        "watch.users",
        {
            "clientAction": "updated",
            "id": MANAGER[0],
            "unset": {"services.resume.loginTokens": 1},
        },
    )
    for stream in (events, other):
        error = await stream.rooms()
        assert error["event"] == "error"
        assert orjson.loads(error["data"]) == {
            "success": False,
            "error": "You must be logged in to do this.",
            "status": "error",
            "message": "You must be logged in to do this.",
        }
        await stream.ended()
    await server.streams(0)
    assert await server.metric('voip_rooms_streams_closed_total{reason="auth"}') == 2
    assert await server.metric('voip_rooms_stream_events_total{event="error"}') == 2


async def test_a_deactivated_user_and_a_withdrawn_permission(make_server: MakeServer) -> None:
    server = await make_server()
    manager = await server.open()
    await manager.next()
    agent = await server.open(ROOMS + f"?agents={AGENT[0]}", user=AGENT)
    await agent.next()
    await server.publish(
        "permission.changed",
        {"clientAction": "updated", "data": {"_id": "view-livechat-rooms", "roles": ["admin"]}},
    )
    error = await manager.rooms()
    assert error["event"] == "error"
    assert orjson.loads(error["data"]) == {"success": False, "error": "unauthorized"}
    await manager.ended()
    await server.publish(
        "watch.users", {"clientAction": "updated", "id": AGENT[0], "diff": {"active": False}}
    )
    error = await agent.rooms()
    assert error["event"] == "error"
    assert orjson.loads(error["data"])["error"] == "You must be logged in to do this."
    await agent.ended()


async def test_an_expired_login_ends_the_stream(make_server: MakeServer) -> None:
    clock = Clock()
    issued = clock() - DAY_MS + 60_000  # valid for another minute of the server's clock
    users = [*standard_users(), make_user("soon", ["admin"], {"soon-token": issued})]
    server = await make_server(users=users, clock=clock, login_expiration_days=1)
    events = await server.open(user=("soon", "soon-token"))
    await events.next()
    await server.streams(1)
    clock.advance(60_000)
    error = await events.rooms()
    assert error["event"] == "error"
    assert orjson.loads(error["data"])["error"] == "You must be logged in to do this."
    await events.ended()


async def test_max_streams(make_server: MakeServer) -> None:
    server = await make_server(max_streams=1)
    first = await server.open()
    await first.next()
    resp = await server.session.get(
        server.client.make_url(SALES), headers={**headers(MANAGER), **SSE}
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"]
    assert (await resp.json())["success"] is False
    assert (await server.client.get(SALES, headers=headers(MANAGER))).status == 200  # polls pass
    first.resp.close()
    await server.streams(0)
    again = await server.open()
    assert (await again.next())["event"] == "rooms"


async def test_disconnects_leave_nothing_behind(make_server: MakeServer) -> None:
    server = await make_server()
    await server.metric("voip_rooms_streams")
    tasks = len(asyncio.all_tasks())  # the server's and the test clients' own
    events = [await server.open() for _ in range(3)]
    for stream in events:
        await stream.next()
    await server.streams(3)
    for stream in events:
        stream.resp.close()
    # a half-closed socket: the client says it is done sending
    port = server.client.port
    raw = socket.create_connection(("127.0.0.1", port))
    try:
        raw.sendall(
            b"GET " + SALES.encode() + b" HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            b"X-User-Id: manager\r\nX-Auth-Token: manager-token\r\n\r\n"
        )
        await server.streams(1)
        raw.shutdown(socket.SHUT_WR)
        await server.streams(0)
    finally:
        raw.close()
    assert await server.metric('voip_rooms_streams_closed_total{reason="client"}') == 4
    assert await server.metric("voip_rooms_http_requests_in_flight") == 1  # this scrape
    # the topic is gone: a change now builds nothing
    misses = await server.metric('voip_rooms_cache_answers_total{result="miss"}')
    await server.room(sale("after"))
    assert await server.metric('voip_rooms_cache_answers_total{result="miss"}') == misses

    async def no_task_left() -> bool:
        return len(asyncio.all_tasks()) <= tasks

    await eventually(no_task_left, what="the streams' tasks to end")


async def test_a_client_that_does_not_read_is_dropped(make_server: MakeServer) -> None:
    # Big answers (20 rooms of 50 kB each) and a small bound on unsent data.
    rooms = [sale(f"big-{i:02d}", notes="x" * 50_000) for i in range(20)]
    server = await make_server(rooms=rooms, buffer=256 * 1024)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.client.port))
    try:
        raw.sendall(
            b"GET " + SALES.encode() + b" HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            b"X-User-Id: manager\r\nX-Auth-Token: manager-token\r\n\r\n"
        )
        await server.streams(1)
        for i in range(200):  # each changes the answer; the client never reads
            await server.room(sale(f"big-{i % 20:02d}", notes=f"{i}" * 50_000))
            if await server.metric('voip_rooms_streams_closed_total{reason="slow"}') == 1:
                break
        else:
            raise AssertionError("the client that does not read was never dropped")
        await server.streams(0)
    finally:
        raw.close()
    assert (await server.client.get(SALES, headers=headers(MANAGER))).status == 200


async def test_a_stream_asked_with_a_json_body_outlives_the_body_deadline(
    make_server: MakeServer,
) -> None:
    server = await make_server(keepalive=1.0, body_timeout=0.3)
    resp = await server.session.get(
        server.client.make_url(ROOMS),
        headers={**headers(MANAGER), **SSE},
        json={"queue": "sales", "count": 100},
    )
    server.opened.append(resp)
    assert resp.status == 200
    events = Events(resp)
    etag, body = await server.get()
    assert await events.next() == {"id": etag.strip('"'), "event": "rooms", "data": body.decode()}
    # a keep-alive a second later: the stream outlived the 0.3 s deadline of its body
    assert await events.next() == {"comment": "keep-alive"}


async def test_head_with_accept_event_stream_is_a_plain_head(make_server: MakeServer) -> None:
    server = await make_server()
    etag, _ = await server.get()
    resp = await server.client.head(SALES, headers={**headers(MANAGER), **SSE})
    assert resp.status == 200
    assert resp.headers["ETag"] == etag
    assert await server.metric("voip_rooms_streams") == 0


async def test_a_state_swapped_in_whole_reaches_the_streams(make_server: MakeServer) -> None:
    server = await make_server()
    events = await server.open()
    first = orjson.loads((await events.next())["data"])
    app = server.client.app
    assert app is not None
    replica = app[REPLICA]
    store = RoomStore()
    for room in [*standard_rooms(), sale("from-the-new-snapshot")]:
        if room.get("t") == "v":
            store.upsert(decode(room))
    result = LoadResult(
        position=replica.position,
        rooms=len(store),
        skipped_rooms=0,
        users=0,
        permissions=0,
        seconds=0,
    )
    replica._publish(replica.snapshot or Path(), (store, replica.users, result), None)
    event = orjson.loads((await events.next())["data"])
    assert event["total"] == first["total"] + 1
    await server.room(sale("after-the-swap"))  # the new store's changes reach the stream
    assert orjson.loads((await events.next())["data"])["total"] == first["total"] + 2
