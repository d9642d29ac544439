"""The contract's rate limit: per user and route, X-RateLimit-* headers, Rocket.Chat's 429,
the bypass permission."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.settings import RateLimit
from tests.conftest import ADMIN, AGENT, MANAGER, headers
from tests.web.support import Clock

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
ROOMS = "/api/v1/voip/rooms"
MESSAGE = re.compile(
    r"^Error, too many requests\. Please slow down\. You must wait (\d+) seconds before trying "
    r"this endpoint again\. \[error-too-many-requests\]$"
)


async def test_off_by_default(client: Client) -> None:
    for _ in range(30):
        resp = await client.get(ROOMS, headers=headers(MANAGER))
        assert resp.status == 200
        assert "X-RateLimit-Limit" not in resp.headers


async def test_window_headers_and_429(make_client: MakeClient, snapshot_dir: Path) -> None:
    clock = Clock()
    client = await make_client(snapshot=snapshot_dir, rate_limit=RateLimit(3, 60_000), now_ms=clock)
    started = clock()
    resets = set()
    for remaining in (2, 1, 0):
        resp = await client.get(ROOMS, headers=headers(MANAGER))
        assert resp.status == 200
        assert resp.headers["X-RateLimit-Limit"] == "3"
        assert resp.headers["X-RateLimit-Remaining"] == str(remaining)
        resets.add(int(resp.headers["X-RateLimit-Reset"]))
        clock.advance(1000)
    assert resets == {started + 60_000}  # one fixed window, its end in epoch milliseconds
    resp = await client.get(ROOMS, headers=headers(MANAGER))
    assert resp.status == 429
    assert resp.headers["X-RateLimit-Remaining"] == "0"
    body = await resp.json()
    assert set(body) == {"success", "error"}
    assert body["success"] is False
    match = MESSAGE.match(body["error"])
    assert match is not None
    assert int(match.group(1)) == 57  # 3 s of the window are gone
    # per user: another user has a window of their own
    other = await client.get(ROOMS + "?agents=agent-1", headers=headers(AGENT))
    assert other.status == 200
    assert other.headers["X-RateLimit-Remaining"] == "2"


async def test_rate_limit_comes_after_auth_and_before_parameters(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(snapshot=snapshot_dir, rate_limit=RateLimit(1, 60_000))
    assert (await client.get(ROOMS + "?bogus=1", headers=headers(MANAGER))).status == 400
    assert (await client.get(ROOMS + "?bogus=1", headers=headers(MANAGER))).status == 429
    assert (await client.get(ROOMS)).status == 401  # no user: no window to count in


async def test_window_resets(make_client: MakeClient, snapshot_dir: Path) -> None:
    clock = Clock()
    client = await make_client(snapshot=snapshot_dir, rate_limit=RateLimit(1, 300), now_ms=clock)
    assert (await client.get(ROOMS, headers=headers(MANAGER))).status == 200
    clock.advance(299)
    assert (await client.get(ROOMS, headers=headers(MANAGER))).status == 429
    clock.advance(1)
    assert (await client.get(ROOMS, headers=headers(MANAGER))).status == 200


async def test_bypass_role_is_exempt(make_client: MakeClient, snapshot_dir: Path) -> None:
    client = await make_client(snapshot=snapshot_dir, rate_limit=RateLimit(1, 60_000))
    for _ in range(5):
        resp = await client.get(ROOMS, headers=headers(ADMIN))  # admin holds api-bypass-rate-limit
        assert resp.status == 200
        assert "X-RateLimit-Limit" not in resp.headers
