"""Failed-login throttling against a real server: per (client address, X-User-Id) pair, the
per-address cap that only turns failing requests into 429, client addresses through trusted
proxies, and bounded memory under a spray of user ids. The server's clock is moved by hand."""

from __future__ import annotations

import ipaddress
import secrets
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from service.cli import main
from service.settings import RateLimit, Settings, parse_settings
from service.web.app import GUARD
from service.web.guards import ClientAddress, LoginThrottle
from tests.conftest import ADMIN, MANAGER, headers, standard_rooms
from tests.factories import make_user, write_snapshot
from tests.web.support import Clock, Feed, eventually, get_from

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
ROOMS = "/api/v1/voip/rooms"
TOO_MANY = (
    "Error, too many requests. Please slow down. You must wait {} seconds before trying "
    "this endpoint again. [error-too-many-requests]"
)


def throttle_of(client: Client) -> LoginThrottle:
    app: web.Application | None = client.app
    assert app is not None
    throttle = app[GUARD].throttle
    assert throttle is not None
    return throttle


def wrong(user_id: str = MANAGER[0]) -> dict[str, str]:
    return {"X-User-Id": user_id, "X-Auth-Token": "a-guess"}


async def status(client: Client, user: dict[str, str], path: str = ROOMS) -> int:
    return (await client.get(path, headers=user)).status


# -- one user's failures never refuse another user ------------------------------------------------


async def test_a_revoked_dashboard_does_not_lock_out_30_users_behind_one_address(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """A dashboard keeps polling after a feed event revoked its token; 30 other users reach
    the service through the same address (an ingress). Default settings: 20 failures / 60 s."""
    clock = Clock()
    issued = clock() - 1000
    users = [make_user(f"user-{i}", ["livechat-manager"], {f"tok-{i}": issued}) for i in range(31)]
    snapshot = write_snapshot(tmp_path / "snap", standard_rooms(), users, position=0)
    feed = Feed(tmp_path / "events.jsonl")
    client = await make_client(snapshot=snapshot, feed=feed.url, now_ms=clock)
    dashboard, others = (
        headers(("user-0", "tok-0")),
        [headers((f"user-{i}", f"tok-{i}")) for i in range(1, 31)],
    )
    assert await status(client, dashboard) == 200
    feed.append(
        "watch.users",
        {
            "clientAction": "updated",
            "id": "user-0",
            "diff": {"services.resume.loginTokens": []},
        },
    )

    async def revoked() -> bool:
        return await status(client, dashboard) == 401

    await eventually(revoked, what="the token revocation")
    answers = []
    for _ in range(40):  # the dashboard keeps polling, every user keeps working
        resp = await client.get(ROOMS, headers=dashboard)
        answers.append(resp.status)
        for user in others:
            assert await status(client, user) == 200
        clock.advance(100)
    # One failure was seen while waiting for the revocation: 19 more, then the dashboard
    # itself (and only it) is throttled.
    assert answers == [401] * 19 + [429] * 21
    # The throttled dashboard's Retry-After counts down to the end of its window.
    resp = await client.get(ROOMS, headers=dashboard)
    assert resp.status == 429
    wait = int(resp.headers["Retry-After"])
    assert wait == 56  # 4 s of its window are gone
    assert await resp.json() == {"success": False, "error": TOO_MANY.format(wait)}


async def test_a_throttled_pair_gets_429_with_retry_after_until_its_window_ends(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    clock = Clock()
    client = await make_client(
        snapshot=snapshot_dir, login_failures=RateLimit(3, 60_000), now_ms=clock
    )
    for _ in range(3):
        assert await status(client, wrong()) == 401
        clock.advance(1000)
    resp = await client.get(ROOMS, headers=wrong())
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "57"  # the window opened at the first failure
    assert await resp.json() == {"success": False, "error": TOO_MANY.format(57)}
    # Whatever token it carries, until the window ends; not another user, not another address.
    assert await status(client, headers(MANAGER)) == 429
    assert await status(client, headers(ADMIN)) == 200
    assert await status(client, wrong(ADMIN[0])) == 401
    assert (await get_from("127.0.0.2", client, ROOMS, headers(MANAGER)))[0] == 200
    clock.advance(30_000)
    resp = await client.get(ROOMS, headers=headers(MANAGER))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "27"
    clock.advance(26_500)
    resp = await client.get(ROOMS, headers=headers(MANAGER))
    assert resp.headers["Retry-After"] == "1"  # half a second left, rounded up
    clock.advance(500)  # the window has ended
    assert await status(client, headers(MANAGER)) == 200
    assert await status(client, wrong()) == 401  # a fresh window


async def test_throttled_requests_are_not_counted_as_failures(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    clock = Clock()
    client = await make_client(
        snapshot=snapshot_dir, login_failures=RateLimit(2, 10_000), now_ms=clock
    )
    for _ in range(2):
        assert await status(client, wrong()) == 401
    for _ in range(50):  # refused before authentication: the window does not grow
        assert await status(client, wrong()) == 429
    clock.advance(10_000)
    assert await status(client, wrong()) == 401


# -- the per-address cap --------------------------------------------------------------------------


async def test_an_address_over_1000_failures_gets_429_only_for_failing_requests(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    clock = Clock()
    client = await make_client(snapshot=snapshot_dir, now_ms=clock)  # 20 failures / 60 s
    for _ in range(20):  # the manager's own pair is throttled first
        assert await status(client, wrong()) == 401
    for i in range(980):  # then a spray of user ids, each failing once: 1000 failures
        assert await status(client, wrong(f"sprayed-{i}")) == 401
    clock.advance(1000)
    resp = await client.get(ROOMS, headers=wrong("one-more"))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "59"  # until the address's window ends
    assert await resp.json() == {"success": False, "error": TOO_MANY.format(59)}
    assert await status(client, wrong(ADMIN[0])) == 429  # any failing request from it
    assert await status(client, headers(ADMIN)) == 200  # valid credentials still pass...
    assert await status(client, headers(MANAGER)) == 429  # ...unless their pair is throttled
    assert await status(client, {}) == 401  # no credentials: no login attempt
    # Another address is not capped.
    assert (await get_from("127.0.0.2", client, ROOMS, wrong(ADMIN[0])))[0] == 401
    clock.advance(59_000)  # both windows end
    assert await status(client, wrong(ADMIN[0])) == 401
    assert await status(client, headers(MANAGER)) == 200


# -- bounded memory -------------------------------------------------------------------------------


async def test_a_spray_of_user_ids_from_one_address_stays_bounded(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(snapshot=snapshot_dir)
    throttle = throttle_of(client)
    for _ in range(1500):
        resp = await client.get(ROOMS, headers=wrong(secrets.token_hex(2000)))  # 4,000 chars
        assert resp.status in (401, 429)
    # One address adds at most its cap of pairs, each user id kept as a short digest.
    assert len(throttle.pairs) == throttle.address_failures
    assert all(len(user) <= LoginThrottle.MAX_KEY for _, user in throttle.pairs)
    assert await status(client, headers(MANAGER)) == 200


def test_a_spray_from_many_addresses_stays_within_the_documented_bound() -> None:
    throttle = LoginThrottle(20, 60_000)  # the service's bounds
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for a in range(400):  # 400 addresses x 250 random user ids: twice the pair bound
            address = f"2001:db8:{a:x}::{a:x}:ffff"
            for _ in range(250):
                throttle.failed(address, secrets.token_urlsafe(48), 1000)
        for a in range(30_000):  # then more addresses than the address bound
            throttle.failed(f"198.{a >> 16}.{(a >> 8) & 255}.{a & 255}", "x" * 4000, 2000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(throttle.pairs) <= throttle.max_pairs
    assert len(throttle.addresses) <= throttle.max_addresses
    assert peak - base < 32 * 1024 * 1024, f"{(peak - base) / 1e6:.1f} MB"
    assert throttle.retry_after("any", "user", 2000 + 60_000) == 0  # all windows ended
    assert not throttle.pairs
    assert not throttle.addresses


# -- client addresses and trusted proxies ---------------------------------------------------------

PROXIES = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


def forwarded(chain: str, user: dict[str, str] | None = None) -> dict[str, str]:
    return {**(user or wrong()), "X-Forwarded-For": chain}


async def test_forwarded_for_is_ignored_without_trusted_proxies(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(snapshot=snapshot_dir, login_failures=RateLimit(2, 60_000))
    assert await status(client, forwarded("198.51.100.1")) == 401
    assert await status(client, forwarded("198.51.100.2")) == 401
    # A new X-Forwarded-For each time does not make a new client: the peer is the client.
    assert await status(client, forwarded("198.51.100.3", headers(MANAGER))) == 429


async def test_a_trusted_proxy_names_the_client_in_forwarded_for(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(
        snapshot=snapshot_dir, login_failures=RateLimit(2, 60_000), trusted_proxies=PROXIES
    )
    # The test client connects from 127.0.0.1, a trusted proxy, which appends the client.
    assert await status(client, forwarded("198.51.100.7")) == 401
    assert await status(client, forwarded("198.51.100.7, 10.1.2.3")) == 401  # two proxies
    assert await status(client, forwarded("198.51.100.7", headers(MANAGER))) == 429
    # The client cannot escape by prepending addresses of its own: the right-most untrusted
    # entry (the one the proxy wrote) is the client.
    spoofed = "203.0.113.9, 10.9.9.9, 198.51.100.7"
    assert await status(client, forwarded(spoofed, headers(MANAGER))) == 429
    # Other clients behind the same proxy, and the proxy itself, are served.
    assert await status(client, forwarded("198.51.100.8", headers(MANAGER))) == 200
    assert await status(client, forwarded("203.0.113.9, 198.51.100.8", headers(MANAGER))) == 200
    assert await status(client, headers(MANAGER)) == 200


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_client: MakeClient, snapshot_dir: Path
) -> None:
    client = await make_client(
        snapshot=snapshot_dir, login_failures=RateLimit(2, 60_000), trusted_proxies=PROXIES
    )
    for chain in ("198.51.100.1", "198.51.100.2"):  # 127.0.0.2 is no trusted proxy
        assert (await get_from("127.0.0.2", client, ROOMS, forwarded(chain)))[0] == 401
    answer = await get_from("127.0.0.2", client, ROOMS, forwarded("10.0.0.1", headers(MANAGER)))
    assert answer[0] == 429
    assert await status(client, headers(MANAGER)) == 200  # 127.0.0.1 is another client


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default


@pytest.mark.parametrize(
    ("peer", "chain", "client"),
    [
        ("198.51.100.1", "203.0.113.5", "198.51.100.1"),  # untrusted peer: header ignored
        ("127.0.0.1", None, "127.0.0.1"),  # a trusted peer without the header is the client
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "1.1.1.1, 203.0.113.5, 10.0.0.2", "203.0.113.5"),
        ("127.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # all trusted: the left-most
        ("127.0.0.1", "203.0.113.5:4711", "203.0.113.5"),  # with a port
        ("127.0.0.1", "[2001:db8::5]:443", "2001:db8::5"),
        ("127.0.0.1", "2001:DB8:0::5", "2001:db8::5"),  # written canonically
        ("127.0.0.1", "::ffff:203.0.113.5", "203.0.113.5"),  # IPv4-mapped
        ("::ffff:127.0.0.1", "203.0.113.5", "203.0.113.5"),  # a dual-stack peer
        ("127.0.0.1", "203.0.113.5, unknown", "127.0.0.1"),  # not an address: the last hop
        ("127.0.0.1", "garbage, 10.0.0.2", "10.0.0.2"),
        ("127.0.0.1", "x" * 5000, "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
    ],
)
def test_client_address(peer: str, chain: str | None, client: str) -> None:
    request = make_mocked_request(
        "GET",
        ROOMS,
        headers={"X-Forwarded-For": chain} if chain is not None else {},
        transport=_Transport(peer),
    )
    assert ClientAddress(PROXIES)(request) == client


def test_client_address_joins_repeated_forwarded_for_headers() -> None:
    from multidict import CIMultiDict

    chain = CIMultiDict([("X-Forwarded-For", "203.0.113.5"), ("X-Forwarded-For", "10.0.0.2")])
    request = make_mocked_request("GET", ROOMS, headers=chain, transport=_Transport("127.0.0.1"))
    assert ClientAddress(PROXIES)(request) == "203.0.113.5"
    assert ClientAddress(())(request) == "127.0.0.1"


# -- settings -------------------------------------------------------------------------------------


def test_throttle_settings() -> None:
    assert Settings().login_failures == RateLimit(20, 60_000)
    assert Settings().trusted_proxies == ()
    for off in ("0", "", "0/60000"):
        assert parse_settings(["--login-failures", off], {}).login_failures is None
    assert parse_settings([], {"VOIP_ROOMS_LOGIN_FAILURES": "0"}).login_failures is None
    parsed = parse_settings([], {"VOIP_ROOMS_TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8 192.0.2.1"})
    assert [str(n) for n in parsed.trusted_proxies] == ["10.0.0.0/8", "fd00::/8", "192.0.2.1/32"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.0/33", "'10.0.0.0/33' is not a CIDR"),
        ("proxy.local", "'proxy.local' is not a CIDR"),
        ("10.1.2.3/8", "host bits set, the network is 10.0.0.0/8"),
    ],
)
def test_an_invalid_trusted_proxy_stops_the_start(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--trusted-proxies", value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_settings([], {"VOIP_ROOMS_TRUSTED_PROXIES": value})
