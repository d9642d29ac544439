"""HEAD on every GET route: the status and headers of the GET, no body; counted as HEAD."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import hdrs, web
from aiohttp.test_utils import TestClient

from service.web.rooms import ROUTE
from tests.conftest import MANAGER, headers

Client = TestClient[Any, Any]
#: headers that differ between two answers of the same route for reasons other than HEAD
VARYING = {"Date"}


def get_routes(client: Client) -> list[str]:
    """The path of every route that answers GET (the catch-all excepted)."""
    app: web.Application | None = client.app
    assert app is not None
    paths = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if route.method == hdrs.METH_GET and "path" in info:
            paths.append(info["path"])
    return paths


def comparable(resp: Any, path: str) -> dict[str, str]:
    kept = {k: v for k, v in resp.headers.items() if k not in VARYING}
    if path == "/metrics":  # the counters move between two scrapes, so the length may too
        kept.pop("Content-Length", None)
    return kept


async def test_every_get_route_answers_head_with_the_same_status_and_headers(
    client: Client,
) -> None:
    paths = get_routes(client)
    assert set(paths) >= {ROUTE, "/livez", "/healthz", "/readyz", "/metrics", "/openapi.json"}
    for path in paths:
        for auth in (headers(MANAGER), {}):  # the API's 200 and its 401
            got = await client.get(path, headers=auth)
            body = await got.read()
            head = await client.head(path, headers=auth)
            assert head.status == got.status, path
            assert comparable(head, path) == comparable(got, path), path
            assert await head.read() == b"", path
            if path != "/metrics":
                assert int(head.headers["Content-Length"]) == len(body), path


async def test_head_sends_no_body_bytes(client: Client) -> None:
    """On the wire: a HEAD answer followed at once by the next answer on the connection."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    auth = "".join(f"{k}: {v}\r\n" for k, v in headers(MANAGER).items())
    writer.write(
        f"HEAD {ROUTE}?count=3 HTTP/1.1\r\nHost: t\r\n{auth}\r\n"
        f"GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    )
    try:
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 0" not in first  # the GET's length, announced
    assert rest.startswith(b"HTTP/1.1 200")  # the next answer, no body in between


async def test_head_revalidation_is_304(client: Client) -> None:
    etag = (await client.get(ROUTE + "?count=2", headers=headers(MANAGER))).headers["ETag"]
    head = await client.head(
        ROUTE + "?count=2", headers={**headers(MANAGER), "If-None-Match": etag}
    )
    assert head.status == 304
    assert head.headers["ETag"] == etag
    fresh = await client.head(ROUTE + "?count=2", headers=headers(MANAGER))
    assert fresh.status == 200
    assert fresh.headers["ETag"] == etag


async def test_head_on_merged_slashes_and_errors(client: Client) -> None:
    assert (await client.head("/api//v1/voip//rooms", headers=headers(MANAGER))).status == 200
    assert (await client.head(ROUTE + "?bogus=1", headers=headers(MANAGER))).status == 400
    missing = await client.head("/no/such/path")
    assert missing.status == 404
    assert await missing.read() == b""


async def test_head_is_counted_under_its_own_method(client: Client) -> None:
    for _ in range(2):
        await client.head(ROUTE, headers=headers(MANAGER))
    await client.head("/livez")
    await client.get(ROUTE, headers=headers(MANAGER))
    metrics = await (await client.get("/metrics")).text()
    assert f'method="HEAD",route="{ROUTE}",status="200"}} 2.0' in metrics
    assert f'method="GET",route="{ROUTE}",status="200"}} 1.0' in metrics
    assert 'method="HEAD",route="/livez",status="200"} 1.0' in metrics
    assert 'voip_rooms_http_request_duration_seconds_count{method="HEAD",route="/livez"} 1.0' in (
        metrics
    )
