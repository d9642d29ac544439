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
import logging
import math
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from service.core.errors import TooManyRequests, Unauthorized
from service.settings import Settings
from service.web.responses import status_error

__all__ = ["HTTP_LOG", "Guard", "LoginThrottle"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Seconds a shed client is asked to wait (the overload is expected to be short).
SHED_RETRY_AFTER = "1"
SHED_MESSAGE = "Server busy: too many requests in progress, retry shortly"
BODY_TIMEOUT_MESSAGE = "Request body not received in time"


class LoginThrottle:
    """At most ``failures`` failed logins per client address in a fixed window of ``window_s``.

    ``retry_after`` and ``failed`` are O(1); memory is bounded by ``max_addresses`` (ended
    windows are swept when it is reached, then the oldest addresses are forgotten).
    """

    def __init__(self, failures: int, window_s: float, max_addresses: int = 100_000) -> None:
        self.failures = failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._windows: dict[str, list[float]] = {}  # address -> [window start, failures]

    def __bool__(self) -> bool:
        """True while some address has a window open (the request path skips it otherwise)."""
        return bool(self._windows)

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again; 0 when it may try now."""
        window = self._windows.get(address)
        if window is None:
            return 0.0
        end = window[0] + self.window_s
        if now >= end:
            del self._windows[address]
            return 0.0
        return end - now if window[1] >= self.failures else 0.0

    def failed(self, address: str, now: float) -> None:
        """Count one failed login from ``address``."""
        window = self._windows.get(address)
        if window is None or now >= window[0] + self.window_s:
            if window is None and len(self._windows) >= self.max_addresses:
                self._make_room(now)
            window = self._windows[address] = [now, 0.0]
        window[1] += 1
        if window[1] == self.failures:
            log.warning(
                "failed logins throttled",
                extra={"client": address, "failures": self.failures, "window_s": self.window_s},
            )

    def _make_room(self, now: float) -> None:
        # In place: the guard holds this very dict to test it for emptiness cheaply.
        windows = self._windows
        for address in [a for a, w in windows.items() if now >= w[0] + self.window_s]:
            del windows[address]
        excess = len(windows) - self.max_addresses // 2
        if excess > 0:  # still full of live windows: forget the oldest (insertion order)
            for address in list(windows)[:excess]:
                del windows[address]


class Guard:
    """Wraps a handler with the limits of ``settings`` (see ``wrap``)."""

    def __init__(self, settings: Settings) -> None:
        self.max_in_flight = settings.max_in_flight or math.inf
        self.body_timeout = settings.body_timeout
        failures = settings.login_failures
        self.throttle = (
            LoginThrottle(failures.requests, failures.window_ms / 1000)
            if failures is not None
            else None
        )
        self.in_flight = 0

    def wrap(self, handler: Handler) -> Handler:
        """``handler`` behind the in-flight limit (503 + Retry-After), the failed-login throttle
        (Rocket.Chat's 429 before authentication is even tried) and, for requests that carry a
        body, a deadline on the whole handler (408), which is the time to read the body since
        the handler does nothing else that waits."""
        throttle = self.throttle
        # Read on every request: the dict itself (never rebound), not a method call.
        recent_failures = throttle._windows if throttle is not None else {}
        body_timeout = self.body_timeout
        limit = self.max_in_flight

        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.in_flight >= limit:
                return status_error(503, SHED_MESSAGE, {"Retry-After": SHED_RETRY_AFTER})
            if recent_failures:  # some address failed recently: only then look the client up
                assert throttle is not None
                wait = throttle.retry_after(request.remote or "", time.monotonic())
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
                    throttle.failed(request.remote or "", time.monotonic())
                raise
            finally:
                self.in_flight -= 1

        return guarded


async def _with_deadline(
    handler: Handler, request: web.Request, seconds: float
) -> web.StreamResponse:
    try:
        async with asyncio.timeout(seconds):
            return await handler(request)
    except TimeoutError:
        response = status_error(408, BODY_TIMEOUT_MESSAGE)
        response.force_close()  # the rest of the body may still be trickling in
        return response


def _too_many(wait: float) -> web.Response:
    seconds = max(1, math.ceil(wait))
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
