"""GET /api/v1/voip/rooms: auth, rate limit, parameters, permission, then a page from memory."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import hdrs, web
from multidict import CIMultiDict

from service.core.errors import Forbidden, InvalidParams, TooManyRequests, Unauthorized
from service.core.projection import project_bytes
from service.core.query import ParseCache, Parsed, QueryLimits, parse
from service.core.ratelimit import RateLimiter
from service.feed.replica import Replica
from service.settings import Settings
from service.web.metrics import Metrics
from service.web.responses import status_error

__all__ = ["ROUTE", "RoomsHandler"]

ROUTE = "/api/v1/voip/rooms"
MAX_BODY = 1 << 20
JSON = "application/json"
ETAG = "ETag"  # spelled as before (aiohttp's hdrs.ETAG is "Etag")


def _etag_matches(header: str, etag: str) -> bool:
    if header == etag:
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class _Answer:
    """An answer ready to send: its ETag, body and the headers of a 200 and of a 304."""

    __slots__ = ("body", "etag", "not_modified", "ok")

    def __init__(self, etag: str, body: bytes) -> None:
        self.etag = etag
        self.body = body
        self.ok = CIMultiDict({hdrs.CONTENT_TYPE: JSON, ETAG: etag})
        self.not_modified = CIMultiDict({ETAG: etag})


class RoomsHandler:
    """The endpoint, with caches for repeated requests.

    Parsed queries are remembered by raw query string, proven logins by the directory (until
    it changes or the token expires), and up to ``settings.response_cache`` answers (ETag,
    body, headers) for the current data (store, its version and the feed position). The ETag
    is a digest of the feed position and the query's identity, so replicas at the same
    position agree on it, and a revalidation never builds or touches the body.
    """

    def __init__(
        self,
        settings: Settings,
        replica: Replica,
        metrics: Metrics,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.replica = replica
        self.now_ms = now_ms  # epoch milliseconds: login expiry and rate-limit windows
        self.metrics = metrics
        self.limits = QueryLimits(
            default_count=settings.default_count,
            max_count=settings.max_count,
            allow_infinite_count=settings.allow_infinite_count,
        )
        self.limiter = (
            RateLimiter(settings.rate_limit.requests, settings.rate_limit.window_ms)
            if settings.rate_limit is not None
            else None
        )
        self.parsed = ParseCache(self.limits)
        self.cache_size = settings.response_cache
        self._cache: dict[bytes, _Answer] = {}
        self._cache_version: tuple[int, int, int] = (-1, -1, -1)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        replica = self.replica
        if replica.loaded is None or not replica.caught_up:
            detail = replica.error or "loading the snapshot and catching up with the feed"
            return status_error(503, f"Service not ready: {detail}", {"Retry-After": "5"})
        headers = request.headers
        now_ms = self.now_ms()
        try:
            login = replica.users.login(
                headers.get("X-User-Id"), headers.get("X-Auth-Token"), now_ms
            )
        except Unauthorized as exc:
            self.metrics.auth_failures[exc.reason].inc()
            raise
        limit_headers: dict[str, str] | None = None
        if self.limiter is not None and not login.grants.bypass_rate_limit:
            allowed, remaining, reset = self.limiter.check(login.user.id, ROUTE, now_ms)
            limit_headers = {
                "X-RateLimit-Limit": str(self.limiter.requests),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(reset),
            }
            if not allowed:
                wait = max(1, -(-(reset - now_ms) // 1000))
                error = TooManyRequests(wait)
                return web.Response(
                    body=orjson.dumps(error.body()),
                    status=429,
                    content_type=JSON,
                    headers=limit_headers,
                )
        if request.body_exists:
            body = await self._json_body(request)
            parsed = Parsed.of(parse(list(request.query.items()), body, self.limits))
        else:
            raw = request.rel_url.raw_query_string
            parsed = self.parsed.get(raw) or self.parsed.parse(raw, list(request.query.items()))
        if not login.grants.may_list_rooms(login.user.id, parsed.query.agents):
            raise Forbidden()
        inm = headers.get(hdrs.IF_NONE_MATCH)
        answer = self._cached(parsed)
        if answer is None:
            etag = self._etag(parsed)
            if inm is not None and _etag_matches(inm, etag):  # revalidated: no body needed
                return _not_modified({ETAG: etag}, limit_headers)
            answer = self._build(parsed, etag)
        elif inm is not None and _etag_matches(inm, answer.etag):
            return _not_modified(answer.not_modified, limit_headers)
        if limit_headers:
            return web.Response(body=answer.body, headers={**answer.ok, **limit_headers})
        return web.Response(body=answer.body, headers=answer.ok)

    def _cached(self, parsed: Parsed) -> _Answer | None:
        """The cached answer to this query for the current data, if any."""
        replica = self.replica
        store = replica.store
        version = (id(store), store.version, replica.position)
        if version != self._cache_version:
            self._cache.clear()
            self._cache_version = version
        return self._cache.get(parsed.ident)

    def _etag(self, parsed: Parsed) -> str:
        """The answer's name: the same on every replica at this feed position."""
        position = b"%d|" % self.replica.position
        return f'"{hashlib.blake2b(position + parsed.ident, digest_size=12).hexdigest()}"'

    def _build(self, parsed: Parsed, etag: str) -> _Answer:
        """The answer from the store, kept in the cache when there is one."""
        query = parsed.query
        total, rooms = self.replica.store.page(query)
        if query.fields is not None:
            rooms = [project_bytes(doc, query.fields) for doc in rooms]
        payload = b"".join(
            (
                b'{"rooms":[',
                b",".join(rooms),
                b'],"count":%d,"offset":%d,"total":%d,"success":true}'
                % (len(rooms), query.offset, total),
            )
        )
        answer = _Answer(etag, payload)
        if self.cache_size:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[parsed.ident] = answer
        return answer

    async def _json_body(self, request: web.Request) -> dict[str, Any] | None:
        """A GET's JSON object body as parameters; other content types are ignored."""
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise web.HTTPUnsupportedMediaType()
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_BODY, actual_size=request.content_length
            )
        parts: list[bytes] = []
        size = 0
        while chunk := await request.content.read(MAX_BODY + 1 - size):
            parts.append(chunk)
            size += len(chunk)
            if size > MAX_BODY:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=size)
        raw = b"".join(parts)
        if request.content_type != "application/json" or not raw.strip():
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidParams("the request body must be a JSON object") from None
        if not isinstance(data, dict):
            raise InvalidParams("the request body must be a JSON object")
        return data


def _not_modified(etag: Mapping[str, str], limit_headers: dict[str, str] | None) -> web.Response:
    return web.Response(status=304, headers={**etag, **limit_headers} if limit_headers else etag)
