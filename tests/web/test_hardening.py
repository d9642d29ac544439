"""Bad input, overload and attack against a real server: limits, timeouts, shedding, throttling,
secrets and damaged snapshots. docs/bad-inputs.md lists what each bad input gets, by test name."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.settings import RateLimit, Settings
from service.web.app import REPLICA, create_app
from service.web.guards import LoginThrottle
from service.web.server import SERVER_LIMITS
from tests.conftest import ADMIN, MANAGER, AiohttpClient, headers, wait_ready
from tests.factories import make_room, write_snapshot
from tests.web.support import eventually, get_from

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
ROOMS = "/api/v1/voip/rooms"
INTERNAL = {"success": False, "error": "Internal server error"}
TOO_MANY = (
    "Error, too many requests. Please slow down. You must wait {} seconds before trying "
    "this endpoint again. [error-too-many-requests]"
)


def app(client: Client) -> web.Application:
    application: web.Application | None = client.app
    assert application is not None
    return application


async def raw(client: Client, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the test server, having sent ``data``."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


def head(path: str = ROOMS, extra: str = "") -> bytes:
    auth = "".join(f"{k}: {v}\r\n" for k, v in headers(MANAGER).items())
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{auth}{extra}".encode()


async def status_of(reader: asyncio.StreamReader, within: float = 30.0) -> tuple[int, bytes]:
    """The status and body of the response on a raw connection."""
    data = await asyncio.wait_for(reader.read(1 << 16), within)
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# -- sizes ---------------------------------------------------------------------------------------


async def test_request_line_over_32_kib_is_refused(client: Client) -> None:
    resp = await client.get(ROOMS + "?queue=" + "x" * (33 * 1024), headers=headers(MANAGER))
    assert resp.status == 400  # the HTTP parser's answer, before the application


async def test_query_string_just_under_the_limit_is_served(client: Client) -> None:
    resp = await client.get(ROOMS + "?query=" + "x" * (31 * 1024), headers=headers(MANAGER))
    assert resp.status == 200


async def test_header_line_over_32_kib_is_refused(client: Client) -> None:
    resp = await client.get(ROOMS, headers={**headers(MANAGER), "X-Big": "x" * (33 * 1024)})
    assert resp.status in (400, 431)


async def test_too_many_headers_are_refused(client: Client) -> None:
    many = "".join(f"X-H{i}: v\r\n" for i in range(200))
    reader, writer = await raw(client, head(extra=many) + b"\r\n")
    try:
        status, _ = await status_of(reader)
        assert status in (400, 431)
    finally:
        writer.close()


async def test_huge_token_header_is_a_401_not_a_crash(client: Client) -> None:
    resp = await client.get(ROOMS, headers={"X-User-Id": "manager", "X-Auth-Token": "t" * 30_000})
    assert resp.status == 401


async def test_body_over_1_mib_is_413(client: Client) -> None:
    body = b'{"queue": "' + b"x" * (1 << 20) + b'"}'
    json_headers = {**headers(MANAGER), "Content-Type": "application/json"}
    resp = await client.get(ROOMS, headers=json_headers, data=io.BytesIO(body))
    assert resp.status == 413
    assert (await resp.json())["success"] is False


async def test_chunked_body_over_1_mib_is_413(client: Client) -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 65536

    json_headers = {**headers(MANAGER), "Content-Type": "application/json"}
    resp = await client.get(ROOMS, headers=json_headers, data=chunks())
    assert resp.status == 413


# -- malformed parameters and bodies --------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("?queue=%zz", 200),  # a bad percent-escape stays literal text
        ("?queue=%ff%fe", 200),  # bytes that are not UTF-8 become U+FFFD
        ("?queue=a%00b", 200),  # NUL is just a character
        ("?roomName=.*(%5B", 200),  # regex characters are literal
        ("?count=" + "9" * 100, 200),  # a huge count is clamped
        ("?offset=" + "9" * 100, 400),
        ("?count=1e3", 400),
        ("?count=%20", 400),
        ("?sort=" + DEEP, 400),  # nesting deeper than the JSON parser allows
        ("?fields=" + DEEP, 400),
        ("?agents=" + DEEP, 400),
        ("?createdAt=" + DEEP, 400),
        ("?sort={" + ",".join(f'"k{i}":1' for i in range(2000)) + "}", 400),
        ('?createdAt={"start":"99999-01-01"}', 400),
        ('?createdAt={"start":"0000-01-01"}', 400),
        ("?closedAt[start]=" + "2" * 1000, 400),
        ("?agents[99999999999999999999]=a", 200),
        ("?agents[x]=a", 400),
        ("?agents[][]=a", 400),
        ("?%5B%5D=1", 400),
        ("?=&&=&", 400),
        ("?open=true&open=true", 400),
        ("?roomName=" + "\u202e\U0001f600" * 100, 200),
    ],
)
async def test_malformed_query(client: Client, query: str, status: int) -> None:
    resp = await client.get(ROOMS + query, headers=headers(MANAGER))
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["success"] is (status == 200)


@pytest.mark.parametrize(
    "body",
    [b"{", b"null", b'"text"', b"[" * 5000, b'{"count": -1}', b'{"sort": 5}', b"\xff\xfe"],
    ids=["truncated", "null", "string", "deep", "negative", "sort-not-string", "not-utf8"],
)
async def test_malformed_json_body_is_400(client: Client, body: bytes) -> None:
    json_headers = {**headers(MANAGER), "Content-Type": "application/json"}
    resp = await client.get(ROOMS, headers=json_headers, data=body)
    assert resp.status == 400
    assert (await resp.json())["success"] is False


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_are_405(client: Client, method: str) -> None:
    resp = await client.request(method, ROOMS, headers=headers(MANAGER))
    assert resp.status == 405
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    assert (await resp.json())["success"] is False


@pytest.mark.parametrize(
    "path", ["/../etc/passwd", "/api/v1/voip/rooms/x", "/%2e%2e/", "/a%0Ab", "/a" * 500]
)
async def test_unknown_paths_are_json_404(client: Client, path: str) -> None:
    resp = await client.get(path, headers=headers(MANAGER))
    assert resp.status == 404
    assert (await resp.json())["success"] is False


async def test_asterisk_form_request_is_json_404(client: Client) -> None:
    reader, writer = await raw(
        client, b"OPTIONS * HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    try:
        status, body = await status_of(reader)
    finally:
        writer.close()
    assert status == 404
    assert body.endswith(orjson.dumps({"success": False, "error": "Not found"}))


async def test_garbage_instead_of_http_is_400(client: Client) -> None:
    reader, writer = await raw(client, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
    try:
        status, _ = await status_of(reader)
        assert status == 400
    finally:
        writer.close()


async def test_conflicting_content_length_and_chunked_is_400(client: Client) -> None:
    extra = "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    reader, writer = await raw(client, head(extra=extra))
    try:
        status, _ = await status_of(reader)
        assert status == 400
    finally:
        writer.close()


# -- slow clients ---------------------------------------------------------------------------------


async def test_slow_body_gets_408_and_the_connection_closes(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(snapshot=snapshot_dir, body_timeout=0.3)
    extra = "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"  # no byte of it
    reader, writer = await raw(client, head(extra=extra))
    try:
        status, body = await status_of(reader)  # 408 is the body deadline's answer, no other
        assert status == 408
        assert orjson.loads(body) == {
            "success": False,
            "error": "Request body not received in time",
        }
    finally:
        writer.close()


async def test_slowloris_head_is_cut_by_the_keepalive_timeout(
    aiohttp_client: AiohttpClient, snapshot_dir: Path
) -> None:
    server = TestServer(create_app(Settings(snapshot=snapshot_dir)))
    await server.start_server(**SERVER_LIMITS, keepalive_timeout=0.5)
    client = await aiohttp_client(server)
    await wait_ready(client)
    reader, writer = await raw(client, b"GET / HTTP/1.1\r\n")
    # One header line every 0.1 s, never the end of the head, for far longer than the timeout
    # (and far fewer lines than the header limit): only the timeout can end the connection.
    deadline = time.monotonic() + 30
    try:
        for i in itertools.count():
            if reader.at_eof() or time.monotonic() > deadline:
                break
            writer.write(f"X-Slow-{i}: 1\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed without an answer
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    assert time.monotonic() <= deadline, "the server kept the dribbling head open"


# -- overload: the in-flight limit ----------------------------------------------------------------


async def test_in_flight_limit_sheds_the_api_but_not_the_probes(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(snapshot=snapshot_dir, max_in_flight=2, body_timeout=30)
    extra = "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    held = [await raw(client, head(extra=extra)) for _ in range(2)]  # bodies that never end
    shed: list[aiohttp.ClientResponse] = []

    async def sheds() -> bool:
        resp = await client.get(ROOMS, headers=headers(MANAGER))
        shed[:] = [resp]
        return resp.status == 503

    try:
        await eventually(sheds, what="shedding while two requests are held")
        (resp,) = shed
        assert resp.headers["Retry-After"] == "1"
        body = await resp.json()
        assert body["success"] is False
        assert "busy" in body["error"]
        for path in ("/livez", "/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert (await client.get(path)).status == 200, path
        metrics = await (await client.get("/metrics")).text()
        assert 'route="/api/v1/voip/rooms",status="503"' in metrics
    finally:
        for _, writer in held:
            writer.close()

    async def back() -> bool:  # the held requests end with their connections
        return (await client.get(ROOMS, headers=headers(MANAGER))).status == 200

    await eventually(back, what="the API back after the held requests ended")


# -- failed-login throttling ----------------------------------------------------------------------


async def test_failed_logins_are_throttled_per_address_and_user(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(snapshot=snapshot_dir, login_failures=RateLimit(3, 60_000))
    wrong = {"X-User-Id": "manager", "X-Auth-Token": "guess"}
    for _ in range(5):  # requests without credentials are no guesses and do not count
        assert (await client.get(ROOMS)).status == 401
    for _ in range(3):
        assert (await client.get(ROOMS, headers=wrong)).status == 401
    resp = await client.get(ROOMS, headers=wrong)
    assert resp.status == 429
    wait = int(resp.headers["Retry-After"])
    assert 1 <= wait <= 60
    assert await resp.json() == {"success": False, "error": TOO_MANY.format(wait)}
    # For this pair even the right token waits: guessing gains nothing.
    assert (await client.get(ROOMS, headers=headers(MANAGER))).status == 429
    assert (await client.get("/livez")).status == 200
    # Another user from the same address, and the same user from another address, are served.
    assert (await client.get(ROOMS, headers=headers(ADMIN))).status == 200
    status, _, _ = await get_from("127.0.0.2", client, ROOMS, headers(MANAGER))
    assert status == 200


def test_login_throttle_window_and_memory_bound() -> None:
    throttle = LoginThrottle(2, 10_000, max_pairs=4)
    assert not throttle
    assert throttle.failed("a", "u", 0) == 0
    assert throttle.retry_after("a", "u", 1_000) == 0
    assert throttle.failed("a", "u", 1_000) == 0
    assert throttle.retry_after("a", "u", 2_000) == 8_000
    assert throttle.retry_after("a", "v", 2_000) == 0  # another user id
    assert throttle.retry_after("b", "u", 2_000) == 0  # another address
    assert throttle.retry_after("a", "u", 10_000) == 0  # the window ended
    for i in range(50):  # many addresses: memory stays bounded
        throttle.failed(f"10.0.0.{i}", "u", 20_000)
    assert len(throttle.pairs) <= 4
    assert throttle.retry_after("a", "u", 40_000) == 0  # every window ended: all forgotten
    assert not throttle
    assert not throttle.addresses


async def test_login_throttle_off(make_client: MakeClient, snapshot_dir: Path) -> None:
    client = await make_client(snapshot=snapshot_dir, login_failures=None)
    wrong = {"X-User-Id": "manager", "X-Auth-Token": "guess"}
    for _ in range(30):
        assert (await client.get(ROOMS, headers=wrong)).status == 401


# -- secrets and internal errors ------------------------------------------------------------------


async def test_internal_error_is_generic_and_leaks_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = app(client)[REPLICA].store

    def broken(query: Any) -> Any:
        raise RuntimeError("the store is broken")

    monkeypatch.setattr(store, "page", broken)
    caplog.set_level(logging.DEBUG)
    resp = await client.get(ROOMS + "?count=7", headers=headers(MANAGER))
    assert resp.status == 500
    assert await resp.read() == orjson.dumps(INTERNAL)
    assert resp.content_type == "application/json"
    assert "the store is broken" in caplog.text  # logged for the operator...
    assert MANAGER[1] not in caplog.text  # ...without the token
    metrics = await (await client.get("/metrics")).text()
    assert MANAGER[1] not in metrics


async def test_tokens_never_in_answers_metrics_or_logs(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-token-value"
    for user in ("manager", "nobody", "x" * 300):
        resp = await client.get(ROOMS, headers={"X-User-Id": user, "X-Auth-Token": secret})
        assert secret not in await resp.text()
    resp = await client.get(ROOMS + "?bogus=1", headers=headers(MANAGER))
    assert MANAGER[1] not in await resp.text()
    metrics = await (await client.get("/metrics")).text()
    assert secret not in metrics
    assert MANAGER[1] not in metrics
    assert "nobody" not in metrics  # no user in a label
    assert secret not in caplog.text
    assert MANAGER[1] not in caplog.text


# -- damaged snapshots: no partial state ----------------------------------------------------------


async def test_snapshot_with_a_bad_line_is_never_served(
    make_client: MakeClient, tmp_path: Path
) -> None:
    directory = write_snapshot(tmp_path / "snap", [make_room(f"r{i}") for i in range(50)])
    path = directory / "rooms.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:40], b'{"_id": "bad", "t": "v", "ts": {"$date": "x"}}\n']))
    client = await make_client(ready=False, snapshot=directory)

    async def named() -> bool:
        ready = await client.get("/readyz?verbose")
        assert ready.status == 503
        checks = (await ready.json())["checks"]
        return "rooms.jsonl:41" in checks[0]["detail"]

    await eventually(named, what="the bad line named in /readyz?verbose")
    assert len(app(client)[REPLICA].store) == 0  # nothing of the 40 good lines is kept
    resp = await client.get(ROOMS, headers=headers(MANAGER))
    assert resp.status == 503
    assert resp.headers["Retry-After"]


async def test_snapshot_with_an_integer_beyond_64_bits_names_the_line(
    make_client: MakeClient, tmp_path: Path
) -> None:
    room = make_room("big", msgs={"$numberLong": "99999999999999999999"})
    directory = write_snapshot(tmp_path / "snap", [make_room("a"), room])
    client = await make_client(ready=False, snapshot=directory)

    async def named() -> bool:
        ready = await client.get("/readyz?verbose")
        return "rooms.jsonl:2" in (await ready.json())["checks"][0]["detail"]

    await eventually(named, what="the bad line named in /readyz?verbose")


def test_bad_inputs_table_names_real_tests() -> None:
    tests = Path(__file__).parent.parent
    table = (tests.parent / "docs" / "bad-inputs.md").read_text()
    rows = [line for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= 30
    for row in rows:
        named = re.findall(r"`([\w/]+\.py)::(\w+)`", row)
        assert named, row
        for path, name in named:
            source = (tests / path).read_text()
            assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name}"


@pytest.mark.parametrize(
    "bad",
    [
        b"X-Auth-Token: manager-token\x01\r\n",  # a control character in the value
        b"X-Auth-Token manager-token\r\n",  # no colon
    ],
    ids=["control-char", "no-colon"],
)
async def test_malformed_header_holding_a_token_is_not_logged(
    client: Client, caplog: pytest.LogCaptureFixture, bad: bytes
) -> None:
    for level in (logging.INFO, logging.DEBUG):
        caplog.clear()
        caplog.set_level(level)
        request = b"GET /api/v1/voip/rooms HTTP/1.1\r\nHost: t\r\nX-User-Id: manager\r\n"
        reader, writer = await raw(client, request + bad + b"\r\n")
        try:
            status, _ = await status_of(reader)
        finally:
            writer.close()
        assert status == 400
        assert MANAGER[1] not in caplog.text
        assert not any(r.levelno >= logging.WARNING for r in caplog.records), caplog.text
    assert "bad HTTP request from" in caplog.text  # at debug level, one line


async def test_guards_also_cover_the_merged_slash_path(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(snapshot=snapshot_dir, login_failures=RateLimit(2, 60_000))
    wrong = {"X-User-Id": "manager", "X-Auth-Token": "guess"}
    for _ in range(2):
        assert (await client.get("/api//v1/voip//rooms", headers=wrong)).status == 401
    assert (await client.get("/api//v1/voip//rooms", headers=wrong)).status == 429
    assert (await client.get(ROOMS, headers=headers(MANAGER))).status == 429
