"""CORS: off by default; when origins are configured, preflights and answers allow exactly them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MANAGER, headers

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
ROOMS = "/api/v1/voip/rooms"
ALLOWED = "https://dash.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "X-User-Id, X-Auth-Token",
}


async def test_off_by_default(client: Client) -> None:
    resp = await client.options(ROOMS, headers={"Origin": ALLOWED, **PREFLIGHT})
    assert resp.status == 405
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.get(ROOMS, headers={"Origin": ALLOWED, **headers(MANAGER)})
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.fixture
async def cors_client(make_client: MakeClient, snapshot_dir: Path) -> Client:
    return await make_client(snapshot=snapshot_dir, cors_origins=(ALLOWED, "http://other.test"))


async def test_preflight_allowed_origin(cors_client: Client) -> None:
    resp = await cors_client.options(ROOMS, headers={"Origin": ALLOWED, **PREFLIGHT})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    allowed_headers = {h.strip() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"X-User-Id", "X-Auth-Token"} <= allowed_headers
    assert resp.headers["Vary"] == "Origin"
    assert int(resp.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "https://dash.example.com.evil.test", "null", ""]
)
async def test_preflight_denied_origin(cors_client: Client, origin: str) -> None:
    resp = await cors_client.options(ROOMS, headers={"Origin": origin, **PREFLIGHT})
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert (await resp.json())["success"] is False


async def test_answers_carry_cors_headers_for_allowed_origins_only(cors_client: Client) -> None:
    ok = await cors_client.get(ROOMS, headers={"Origin": ALLOWED, **headers(MANAGER)})
    assert ok.status == 200
    assert ok.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = {h.strip() for h in ok.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"ETag", "X-RateLimit-Remaining", "Retry-After"} <= exposed
    # errors too, so that a browser can read them
    unauthorized = await cors_client.get(ROOMS, headers={"Origin": ALLOWED})
    assert unauthorized.status == 401
    assert unauthorized.headers["Access-Control-Allow-Origin"] == ALLOWED
    other = await cors_client.get(
        ROOMS, headers={"Origin": "https://evil.test", **headers(MANAGER)}
    )
    assert other.status == 200  # CORS is the browser's guard; the server only withholds headers
    assert "Access-Control-Allow-Origin" not in other.headers
    no_origin = await cors_client.get(ROOMS, headers=headers(MANAGER))
    assert "Access-Control-Allow-Origin" not in no_origin.headers


async def test_any_origin(make_client: MakeClient, snapshot_dir: Path) -> None:
    client = await make_client(snapshot=snapshot_dir, cors_origins=("*",))
    resp = await client.options(ROOMS, headers={"Origin": "https://any.test", **PREFLIGHT})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://any.test"


async def test_plain_options_without_preflight_headers_is_405(cors_client: Client) -> None:
    resp = await cors_client.options(ROOMS, headers={"Origin": ALLOWED})
    assert resp.status == 405
