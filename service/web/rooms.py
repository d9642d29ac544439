"""GET /api/v1/voip/rooms: auth, rate limit, parameters, permission, then a page from memory."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
from aiohttp import hdrs, web

from service.core.errors import Forbidden, InvalidParams, TooManyRequests, Unauthorized
from service.core.projection import project_bytes
from service.core.query import QueryLimits, RoomQuery, parse
from service.core.ratelimit import RateLimiter
from service.feed.replica import Replica
from service.settings import Settings
from service.web.metrics import Metrics
from service.web.responses import status_error

__all__ = ["ROUTE", "RoomsHandler"]

ROUTE = "/api/v1/voip/rooms"
MAX_BODY = 1 << 20
CACHE_SIZE = 4096


def _etag_matches(header: str, etag: str) -> bool:
    if header == etag:
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class RoomsHandler:
    """The endpoint, with a response cache keyed by the normalized query for the current data.

    A cached entry holds the ETag and the whole body. The ETag is a digest of the feed position
    and the normalized query, so replicas at the same position agree on it, and answering a
    revalidation never touches the body.
    """

    def __init__(self, settings: Settings, replica: Replica, metrics: Metrics) -> None:
        self.replica = replica
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
        self._cache: dict[RoomQuery, tuple[str, bytes]] = {}
        self._cache_version: tuple[int, int] = (-1, -1)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        replica = self.replica
        if replica.loaded is None or not replica.caught_up:
            detail = replica.error or "loading the snapshot and catching up with the feed"
            return status_error(503, f"Service not ready: {detail}", {"Retry-After": "5"})
        headers = request.headers
        users = replica.users
        now_ms = int(time.time() * 1000)
        try:
            user = users.authenticate(headers.get("X-User-Id"), headers.get("X-Auth-Token"), now_ms)
        except Unauthorized as exc:
            self.metrics.auth_failures[exc.reason].inc()
            raise
        limit_headers: dict[str, str] | None = None
        if self.limiter is not None and not users.has_permission(user, "api-bypass-rate-limit"):
            allowed, remaining, reset = self.limiter.check(user.id, ROUTE, now_ms)
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
                    content_type="application/json",
                    headers=limit_headers,
                )
        body = await self._json_body(request) if request.body_exists else None
        query = parse(list(request.query.items()), body, self.limits)
        if not users.may_list_rooms(user, query.agents):
            raise Forbidden()
        etag, payload = self._answer(query)
        out_headers = {"ETag": etag}
        if limit_headers:
            out_headers.update(limit_headers)
        inm = headers.get(hdrs.IF_NONE_MATCH)
        if inm is not None and _etag_matches(inm, etag):
            return web.Response(status=304, headers=out_headers)
        return web.Response(body=payload, content_type="application/json", headers=out_headers)

    def _answer(self, query: RoomQuery) -> tuple[str, bytes]:
        """(ETag, body) for a query, from the cache while the data has not changed."""
        replica = self.replica
        version = (id(replica.store), replica.store.version)
        if version != self._cache_version:
            self._cache.clear()
            self._cache_version = version
        hit = self._cache.get(query)
        if hit is not None:
            return hit
        total, rooms = replica.store.page(query)
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
        digest = hashlib.blake2b(
            f"{replica.position}|{query!r}".encode(), digest_size=12
        ).hexdigest()
        answer = (f'"{digest}"', payload)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[query] = answer
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
