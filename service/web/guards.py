"""Guards around the API handler: the in-flight limit, failed-login throttling, body timeout.

They wrap the rooms handler itself rather than being app middlewares, so that they apply to
every path that reaches it (the front door re-resolves ``/api//v1/...`` straight to the
handler), cost nothing on the probes and /metrics, and keep those answering while the API
sheds load. On the common path (no body, no recent failed login) a request pays a comparison,
an increment and a decrement, a dict-emptiness test and one more coroutine: about 0.3 µs
(``python -m tests.soak --guard-cost``).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from service.core.errors import TooManyRequests, Unauthorized
from service.settings import Network, Settings
from service.web.responses import status_error

__all__ = ["BODY_DEADLINE", "HTTP_LOG", "ClientAddress", "Guard", "LoginThrottle", "epoch_ms"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Seconds a shed client is asked to wait (the overload is expected to be short).
SHED_RETRY_AFTER = "1"
SHED_MESSAGE = "Server busy: too many requests in progress, retry shortly"
BODY_TIMEOUT_MESSAGE = "Request body not received in time"
#: the deadline of a request with a body, which a handler that outlives its body (a live-answer
#: stream) lifts once the body is read
BODY_DEADLINE = web.RequestKey("body_deadline", asyncio.Timeout)


def epoch_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class LoginThrottle:
    """Failed logins counted in fixed windows of ``window_ms``, per pair (client address,
    ``X-User-Id`` as sent) and per client address.

    A pair with ``failures`` failures in its window is refused (``retry_after``) until the window
    ends, whatever token it brings; other user ids from the same address are not. An address
    with more than ``address_failures`` failures in its window has its further failing requests
    refused (``failed`` returns the wait) while valid logins from it still pass.

    Every operation is O(1) amortized. Memory is bounded: at most ``max_pairs`` pairs and
    ``max_addresses`` addresses (when a table is full, ended windows are dropped, then the oldest
    entries until it is half full), a user id longer than ``MAX_KEY`` is kept as a 16-byte digest,
    and an address over its cap adds no new pairs (so one address fills at most ``address_failures``
    pairs a window). At the defaults that is about 25 MB at most, measured under a spray of
    random user ids from many addresses (``tests/web/test_throttle.py``).
    """

    #: user ids longer than this are keyed by a digest (a real one is 17 characters)
    MAX_KEY = 64

    def __init__(
        self,
        failures: int,
        window_ms: int,
        address_failures: int = 1000,
        max_pairs: int = 50_000,
        max_addresses: int = 20_000,
    ) -> None:
        self.failures = failures
        self.window_ms = window_ms
        self.address_failures = address_failures
        self.max_pairs = max_pairs
        self.max_addresses = max_addresses
        #: (address, user id key) -> [window start ms, failures]; read by the guard for emptiness
        self.pairs: dict[tuple[str, str | bytes], list[int]] = {}
        self.addresses: dict[str, list[int]] = {}  # address -> [window start ms, failures]
        self._all_ended_at = 0  # every window has ended by then: the tables can be emptied

    def __bool__(self) -> bool:
        """True while some pair has a window open (the request path skips it otherwise)."""
        return bool(self.pairs)

    def retry_after(self, address: str, user_id: str, now_ms: int) -> int:
        """Milliseconds until the pair (``address``, ``user_id``) may try again; 0 when now."""
        if now_ms >= self._all_ended_at:
            self.pairs.clear()  # in place: the guard holds this very dict
            self.addresses.clear()
            return 0
        key = (address, _user_key(user_id))
        window = self.pairs.get(key)
        if window is None:
            return 0
        end = window[0] + self.window_ms
        if now_ms >= end:
            del self.pairs[key]
            return 0
        return end - now_ms if window[1] >= self.failures else 0

    def failed(self, address: str, user_id: str, now_ms: int) -> int:
        """Count one failed login of (``address``, ``user_id``); return the milliseconds the
        address must wait when it is over its own cap (its failing requests get 429), else 0."""
        window_ms = self.window_ms
        self._all_ended_at = now_ms + window_ms
        addresses = self.addresses
        at = addresses.get(address)
        if at is None or now_ms >= at[0] + window_ms:
            if at is None and len(addresses) >= self.max_addresses:
                _make_room(addresses, self.max_addresses, window_ms, now_ms)
            at = addresses[address] = [now_ms, 0]
        at[1] += 1
        capped = at[1] > self.address_failures
        if at[1] == self.address_failures + 1:
            log.warning(
                "failed logins capped for a client address",
                extra={"client": address, "failures": self.address_failures},
            )
        pairs = self.pairs
        key = (address, _user_key(user_id))
        pair = pairs.get(key)
        if pair is None or now_ms >= pair[0] + window_ms:
            if pair is None:
                if capped:  # its failures are refused anyway: no new pair for it to fill memory
                    return at[0] + window_ms - now_ms
                if len(pairs) >= self.max_pairs:
                    _make_room(pairs, self.max_pairs, window_ms, now_ms)
            pair = pairs[key] = [now_ms, 0]
        pair[1] += 1
        if pair[1] == self.failures:
            log.warning(
                "failed logins throttled",
                extra={
                    "client": address,
                    "user": user_id[:40],
                    "failures": self.failures,
                    "window_ms": window_ms,
                },
            )
        return at[0] + window_ms - now_ms if capped else 0


def _user_key(user_id: str) -> str | bytes:
    if len(user_id) <= LoginThrottle.MAX_KEY:
        return user_id
    return hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _make_room(windows: dict[Any, list[int]], bound: int, window_ms: int, now_ms: int) -> None:
    """Drop ended windows, then the oldest ones (insertion order) down to half of ``bound``;
    in place, since the guard holds the dict. O(entries), once per ``bound / 2`` insertions."""
    for key in [k for k, w in windows.items() if now_ms >= w[0] + window_ms]:
        del windows[key]
    excess = len(windows) - bound // 2
    if excess > 0:
        for key in list(itertools.islice(windows, excess)):
            del windows[key]


class ClientAddress:
    """The client's address: the TCP peer, or, when the peer is a trusted proxy, the right-most
    ``X-Forwarded-For`` address outside the trusted networks.

    When every forwarded address is trusted, the left-most one is the client; a forwarded entry
    that is not an address ends the walk at the last trusted hop (so a client cannot put an
    arbitrary string in a throttle key, and memory per key stays bounded).
    """

    def __init__(self, trusted: Sequence[Network]) -> None:
        self.trusted = tuple(trusted)

    def __call__(self, request: web.Request) -> str:
        peer = request.remote or ""
        if not self.trusted:
            return peer
        address = _parse_address(peer)
        if address is None or not self._is_trusted(address):
            return peer
        client = str(address)
        hops = [
            hop
            for header in request.headers.getall(hdrs.X_FORWARDED_FOR, ())
            for hop in header.split(",")
        ]
        for hop in reversed(hops):
            address = _parse_address(hop)
            if address is None:
                break
            client = str(address)
            if not self._is_trusted(address):
                break
        return client

    def _is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.trusted)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``), with
    IPv4-mapped IPv6 addresses as plain IPv4; None when it is none of these."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Guard:
    """Wraps a handler with the limits of ``settings`` (see ``wrap``); ``now_ms`` is the clock
    of the failed-login windows (epoch milliseconds; tests move it by hand)."""

    def __init__(self, settings: Settings, now_ms: Callable[[], int] = epoch_ms) -> None:
        self.max_in_flight = settings.max_in_flight or math.inf
        self.body_timeout = settings.body_timeout
        failures = settings.login_failures
        self.throttle = (
            LoginThrottle(failures.requests, failures.window_ms) if failures is not None else None
        )
        self.client_address = ClientAddress(settings.trusted_proxies)
        self.now_ms = now_ms
        self.in_flight = 0

    def wrap(self, handler: Handler) -> Handler:
        """``handler`` behind the in-flight limit (503 + Retry-After), the failed-login throttle
        (Rocket.Chat's 429 before authentication is even tried for a throttled pair, and
        instead of the 401 for an address over its cap) and, for requests that carry a body, a
        deadline on the whole handler (408), which is the time to read the body since the
        handler does nothing else that waits."""
        throttle = self.throttle
        # Read on every request: the dict itself (never rebound), not a method call.
        recent_failures = throttle.pairs if throttle is not None else {}
        client_address = self.client_address
        now_ms = self.now_ms
        body_timeout = self.body_timeout
        limit = self.max_in_flight

        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.in_flight >= limit:
                return status_error(503, SHED_MESSAGE, {"Retry-After": SHED_RETRY_AFTER})
            if recent_failures:  # some pair failed recently: only then look this one up
                assert throttle is not None
                user_id = request.headers.get("X-User-Id") or ""
                wait = throttle.retry_after(client_address(request), user_id, now_ms())
                if wait:
                    return _too_many(wait)
            self.in_flight += 1
            try:
                if request.body_exists:
                    return await _with_deadline(handler, request, body_timeout)
                return await handler(request)
            except Unauthorized as exc:
                # A request without credentials cannot guess a token: only attempts count.
                if throttle is not None and exc.reason != "missing_headers":
                    user_id = request.headers.get("X-User-Id") or ""
                    wait = throttle.failed(client_address(request), user_id, now_ms())
                    if wait:
                        return _too_many(wait)
                raise
            finally:
                self.in_flight -= 1

        return guarded


async def _with_deadline(
    handler: Handler, request: web.Request, seconds: float
) -> web.StreamResponse:
    try:
        async with asyncio.timeout(seconds) as deadline:
            request[BODY_DEADLINE] = deadline
            return await handler(request)
    except TimeoutError:
        response = status_error(408, BODY_TIMEOUT_MESSAGE)
        response.force_close()  # the rest of the body may still be trickling in
        return response


def _too_many(wait_ms: int) -> web.Response:
    seconds = max(1, -(-wait_ms // 1000))
    return web.Response(
        body=orjson.dumps(TooManyRequests(seconds).body()),
        status=429,
        content_type="application/json",
        headers={"Retry-After": str(seconds)},
    )


class _QuietParserErrors(logging.Filter):
    """aiohttp logs a request its HTTP parser refuses as an error with a traceback whose text
    quotes the offending bytes, which can be a header holding a token. Such a request is the
    client's fault and cheap to repeat: log it as one line at debug level, without the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not HTTP_LOG.isEnabledFor(logging.DEBUG):
            return False
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg = "bad HTTP request from %s: %s (%s)"
        record.args = (remote, type(exc).__name__, exc.code)
        record.exc_info = None
        record.exc_text = None
        return True


#: The logger for aiohttp's server (``logger=`` of its request handler), parser errors quieted.
HTTP_LOG = logging.getLogger("voip_rooms.http")
HTTP_LOG.addFilter(_QuietParserErrors())
