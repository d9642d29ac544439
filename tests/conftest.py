"""Shared fixtures: a snapshot on disk and a real aiohttp server answering from it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.settings import Settings
from service.web.app import create_app
from service.web.server import SERVER_LIMITS
from tests.factories import make_room, make_user, write_snapshot

NOW_MS = int(time.time() * 1000)
DAY_MS = 86_400_000

#: (user id, raw token) pairs of the standard test users.
MANAGER = ("manager", "manager-token")
AGENT = ("agent-1", "agent-token")
PLAIN = ("plain", "plain-token")
ADMIN = ("admin", "admin-token")

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def headers(user: tuple[str, str]) -> dict[str, str]:
    """Auth headers for a (user id, token) pair."""
    return {"X-User-Id": user[0], "X-Auth-Token": user[1]}


def standard_users() -> list[dict[str, Any]]:
    fresh = NOW_MS - DAY_MS
    return [
        make_user(MANAGER[0], ["livechat-manager"], {MANAGER[1]: fresh}),
        make_user(AGENT[0], ["livechat-agent"], {AGENT[1]: fresh}, username="agent.one"),
        make_user(PLAIN[0], ["user"], {PLAIN[1]: fresh}),
        make_user(ADMIN[0], ["admin"], {ADMIN[1]: fresh}),
        make_user("old", ["admin"], {"old-token": NOW_MS - 91 * DAY_MS}),
        make_user("gone", ["admin"], {"gone-token": fresh}, active=False),
        make_user("bot", ["bot"], personal=["bot-pat"]),
    ]


def standard_rooms() -> list[dict[str, Any]]:
    rooms = []
    for i in range(30):
        rooms.append(
            make_room(
                f"room-{i:03d}",
                name=f"Guest-{i}-{1625861539 + i}.{i}",
                ts={"$date": {"$numberLong": str(1_700_000_000_000 + i * 60_000)}},
                queue=["support", "sales", "billing"][i % 3],
                direction="outbound" if i % 4 == 0 else "inbound",
                servedBy={"_id": f"agent-{i % 3 + 1}", "username": f"agent.{i % 3 + 1}"},
                tags=["vip"] if i % 5 == 0 else [],
                open=True if i % 6 == 0 else None,
                closedAt=None if i % 6 == 0 else {"$date": "2023-11-15T00:00:00.000Z"},
            )
        )
    rooms.append({"_id": "chat-1", "t": "c", "name": "general"})
    return rooms


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Path:
    return write_snapshot(tmp_path / "snapshot", standard_rooms(), standard_users(), position=7)


async def wait_ready(client: TestClient[Any, Any], within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        resp = await client.get("/readyz")
        if resp.status == 200:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not ready: {await resp.text()}")
        await asyncio.sleep(0.02)


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    """Start a real server for Settings(**overrides) and wait until it is ready; ``now_ms``
    replaces the server's clock (epoch milliseconds) so that a test moves time by hand."""

    async def start(
        ready: bool = True, now_ms: Callable[[], int] | None = None, **overrides: Any
    ) -> TestClient[Any, Any]:
        settings = Settings(**overrides)
        app = create_app(settings) if now_ms is None else create_app(settings, now_ms=now_ms)
        server = TestServer(app)
        await server.start_server(**SERVER_LIMITS)  # the production limits, not aiohttp's defaults
        client = await aiohttp_client(server)
        if ready:
            await wait_ready(client)
        return client

    return start


@pytest.fixture
async def client(
    make_client: Callable[..., Awaitable[TestClient[Any, Any]]], snapshot_dir: Path
) -> TestClient[Any, Any]:
    return await make_client(snapshot=snapshot_dir)
