"""GET /api/v1/voip/rooms through a real server: every 400/401/403 case and the success shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, AGENT, MANAGER, PLAIN, headers
from tests.web.support import eventually

Client = TestClient[Any, Any]
ROOMS = "/api/v1/voip/rooms"
UNAUTHORIZED = {
    "success": False,
    "error": "You must be logged in to do this.",
    "status": "error",
    "message": "You must be logged in to do this.",
}


async def get(client: Client, query: str = "", user: tuple[str, str] = MANAGER, **kw: Any) -> Any:
    resp = await client.get(ROOMS + query, headers=kw.pop("headers", headers(user)), **kw)
    return resp.status, await resp.json()


async def test_success_shape(client: Client) -> None:
    status, body = await get(client, "?count=5")
    assert status == 200
    assert list(body) == ["rooms", "count", "offset", "total", "success"]
    assert body["success"] is True
    assert body["count"] == 5
    assert body["offset"] == 0
    assert body["total"] == 30  # the t:"c" room is not a voip room
    # default sort: ts descending; dates as ISO strings with milliseconds
    assert [r["_id"] for r in body["rooms"]] == [f"room-{i:03d}" for i in range(29, 24, -1)]
    assert body["rooms"][0]["ts"] == "2023-11-14T22:42:20.000Z"


async def test_filters_and_paging(client: Client) -> None:
    status, body = await get(client, '?queue=sales&open=false&sort={"ts":1}&offset=1&count=2')
    assert status == 200
    expected = [f"room-{i:03d}" for i in range(30) if i % 3 == 1 and i % 6 != 0]
    assert body["total"] == len(expected)
    assert [r["_id"] for r in body["rooms"]] == expected[1:3]
    assert body["offset"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "?agents=agent-2&agents=agent.3",
        "?agents[]=agent-2&agents[]=agent.3",
        "?agents[0]=agent-2&agents[1]=agent.3",
        '?agents=["agent-2","agent.3"]',
    ],
)
async def test_list_forms(client: Client, query: str) -> None:
    status, body = await get(client, query + "&count=100")
    assert status == 200
    assert body["total"] == 20


async def test_single_value_list_and_open_key(client: Client) -> None:
    _, one = await get(client, "?tags=vip")
    assert one["total"] == 6
    _, opened = await get(client, "?Open=true")
    assert opened["total"] == 5


async def test_date_range_forms(client: Client) -> None:
    start, end = "2023-11-14T22:13:20.000Z", "2023-11-14T22:15:20Z"
    _, as_json = await get(client, f'?createdAt={{"start":"{start}","end":"{end}"}}')
    _, as_keys = await get(client, f"?createdAt[start]={start}&createdAt[end]={end}")
    assert as_json["total"] == as_keys["total"] == 3


async def test_json_body_on_get(client: Client) -> None:
    json_headers = {**headers(MANAGER), "Content-Type": "application/json"}
    resp = await client.get(
        ROOMS + "?count=3",
        headers=json_headers,
        data=orjson.dumps({"queue": "billing", "count": 50}),
    )
    body = await resp.json()
    assert resp.status == 200
    assert body["count"] == 3  # the query string wins over the body
    assert body["total"] == 10
    resp = await client.get(
        ROOMS, headers=json_headers, data=orjson.dumps({"queue": "sales", "open": False})
    )
    assert resp.status == 200
    assert (await resp.json())["total"] == 10
    resp = await client.get(ROOMS, headers=json_headers, data=b"[1, 2]")
    assert resp.status == 400
    resp = await client.get(
        ROOMS, headers={**headers(MANAGER), "Content-Type": "text/plain"}, data=b"queue=sales"
    )
    assert (await resp.json())["total"] == 30  # only JSON bodies are parameters


async def test_double_slash_path(client: Client) -> None:
    resp = await client.get(
        "/api//v1/voip//rooms?count=1", headers=headers(MANAGER), allow_redirects=False
    )
    assert resp.status == 200
    assert (await resp.json())["count"] == 1


async def test_fields_projection(client: Client) -> None:
    _, body = await get(client, '?fields={"queue":1,"v.username":1}&count=1')
    assert body["rooms"] == [{"_id": "room-029", "queue": "billing", "v": {"username": "guest-1"}}]


async def test_etag_and_304(client: Client) -> None:
    first = await client.get(ROOMS + "?count=2", headers=headers(MANAGER))
    etag = first.headers["ETag"]
    again = await client.get(
        ROOMS + "?count=2", headers={**headers(MANAGER), "If-None-Match": etag}
    )
    assert again.status == 304
    assert await again.read() == b""
    other = await client.get(
        ROOMS + "?count=3", headers={**headers(MANAGER), "If-None-Match": etag}
    )
    assert other.status == 200
    assert other.headers["ETag"] != etag


# -- 401 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hdrs",
    [
        {},
        {"X-User-Id": "manager"},
        {"X-Auth-Token": "manager-token"},
        {"X-User-Id": "nobody", "X-Auth-Token": "manager-token"},
        {"X-User-Id": "manager", "X-Auth-Token": "wrong"},
        {"X-User-Id": "manager", "X-Auth-Token": "agent-token"},
        {"X-User-Id": "old", "X-Auth-Token": "old-token"},
        {"X-User-Id": "gone", "X-Auth-Token": "gone-token"},
    ],
    ids=["none", "no-token", "no-user", "unknown", "wrong", "other-users", "expired", "inactive"],
)
async def test_unauthorized(client: Client, hdrs: dict[str, str]) -> None:
    resp = await client.get(ROOMS, headers=hdrs)
    assert resp.status == 401
    assert await resp.json() == UNAUTHORIZED


async def test_personal_access_token_never_expires(client: Client) -> None:
    status, _ = await get(client, user=("bot", "bot-pat"))
    assert status == 403  # authenticated; bots hold no livechat permission


async def test_auth_comes_before_parameters(client: Client) -> None:
    resp = await client.get(ROOMS + "?bogus=1")
    assert resp.status == 401


# -- 403 ----------------------------------------------------------------------------------------


async def test_forbidden_without_permission(client: Client) -> None:
    status, body = await get(client, user=PLAIN)
    assert (status, body) == (403, {"success": False, "error": "unauthorized"})


async def test_agent_only_own_calls(client: Client) -> None:
    status, body = await get(client, "?agents=agent-1", user=AGENT)
    assert status == 200
    assert body["total"] == 10
    for query in ("", "?agents=agent-2", "?agents=agent-1&agents=agent-2", "?agents=agent.one"):
        status, body = await get(client, query, user=AGENT)
        assert (status, body) == (403, {"success": False, "error": "unauthorized"}), query


async def test_parameters_checked_before_permission(client: Client) -> None:
    status, body = await get(client, "?open=maybe", user=PLAIN)
    assert status == 400
    assert body["errorType"] == "invalid-params"


async def test_admin_allowed(client: Client) -> None:
    status, _ = await get(client, user=ADMIN)
    assert status == 200


# -- 400 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("?bogus=1", "bogus"),
        ("?open=yes", "open"),
        ("?direction=sideways", "direction"),
        ("?offset=-1", "offset"),
        ("?offset=abc", "offset"),
        ("?count=-5", "count"),
        ("?count=1.5", "count"),
        ("?agents=" + "&agents=".join(str(i) for i in range(501)), "agents"),
        ("?tags[]=" + "&tags[]=".join(str(i) for i in range(501)), "tags"),
    ],
)
async def test_invalid_params(client: Client, query: str, param: str) -> None:
    status, body = await get(client, query)
    assert status == 400
    assert body["success"] is False
    assert body["errorType"] == "invalid-params"
    assert body["error"].endswith(" [invalid-params]")
    assert param in body["error"]


@pytest.mark.parametrize("raw", ["notjson", "[1]", '{"ts":2}', '{"secret":1}', '{"ts":"asc"}'])
async def test_invalid_sort(client: Client, raw: str) -> None:
    status, body = await get(client, "", params={"sort": raw})
    assert status == 400
    assert body == {
        "success": False,
        "error": f'Invalid sort parameter provided: "{raw}" [error-invalid-sort]',
        "errorType": "error-invalid-sort",
        "details": {"helperMethod": "parseJsonQuery"},
    }


@pytest.mark.parametrize("raw", ["nope", '{"a":1,"b":0}', '{"a":2}', "[]"])
async def test_invalid_fields(client: Client, raw: str) -> None:
    status, body = await get(client, "", params={"fields": raw})
    assert status == 400
    assert body == {
        "success": False,
        "error": f'Invalid fields parameter provided: "{raw}" [error-invalid-fields]',
        "errorType": "error-invalid-fields",
        "details": {"helperMethod": "parseJsonQuery"},
    }


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"createdAt": '{"start":"yesterday"}'}, "createdAt.start"),
        ({"createdAt": '{"end":"2021-13-01"}'}, "createdAt.end"),
        ({"closedAt[start]": "x"}, "closedAt.start"),
        ({"closedAt[end]": "2021-01-01T25:00:00Z"}, "closedAt.end"),
    ],
)
async def test_invalid_date(client: Client, params: dict[str, str], name: str) -> None:
    status, body = await get(client, "", params=params)
    assert status == 400
    assert body == {
        "success": False,
        "error": f'The "{name}" query parameter must be a valid date.',
    }


async def test_long_request_line_accepted(client: Client) -> None:
    agents = ["agent-1"] + [f"agent-{i:05d}" for i in range(499)]
    status, body = await get(client, "?" + "&".join(f"agents={a}" for a in agents))
    assert status == 200
    assert body["total"] == 10  # only agent-1 serves rooms


async def test_compressed_body_refused(client: Client) -> None:
    resp = await client.get(
        ROOMS,
        headers={
            **headers(MANAGER),
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
        data=b"\x1f\x8b",
    )
    assert resp.status == 415
    assert (await resp.json())["success"] is False


# -- other answers ------------------------------------------------------------------------------


async def test_unknown_route_is_json_404(client: Client) -> None:
    resp = await client.get("/api/v1/nope")
    assert resp.status == 404
    assert (await resp.json())["success"] is False


async def test_not_ready_is_503(
    make_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    client = await make_client(ready=False, snapshot=tmp_path / "missing")

    async def not_ready() -> None:
        resp = await client.get(ROOMS, headers=headers(MANAGER))
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        assert (await resp.json())["success"] is False

    await not_ready()  # while loading (or already failed)

    async def load_failed() -> bool:
        ready = await client.get("/readyz?verbose")
        assert ready.status == 503
        checks = (await ready.json())["checks"]
        return any("missing" in c["detail"] for c in checks)

    await eventually(load_failed, what="the failed load showing in /readyz?verbose")
    await not_ready()  # and after the load failed


async def test_probes(client: Client) -> None:
    for path in ("/livez", "/healthz", "/readyz"):
        resp = await client.get(path)
        assert resp.status == 200, path
