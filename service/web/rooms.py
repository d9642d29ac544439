"""GET /api/v1/voip/rooms: auth, rate limit, parameters, permission, then a page from memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import hdrs, web

from service.core.errors import Forbidden, InvalidParams, TooManyRequests, Unauthorized
from service.core.query import ParseCache, Parsed, QueryLimits, parse
from service.core.ratelimit import RateLimiter
from service.feed.replica import Replica
from service.settings import Settings
from service.web.answers import JSON, Answers
from service.web.metrics import Metrics
from service.web.responses import status_error
from service.web.streams import Hub, wants_stream

__all__ = ["ROUTE", "RoomsHandler"]

ROUTE = "/api/v1/voip/rooms"
MAX_BODY = 1 << 20


def _etag_matches(header: str, etag: str) -> bool:
    if header == etag:
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class RoomsHandler:
    """The endpoint, with caches for repeated requests.

    Parsed queries are remembered by raw query string, proven logins by the directory (until
    it changes or the token expires), and up to ``settings.response_cache`` answers (ETag,
    body, headers) until a room change affects them (:class:`Answers`). The ETag is a digest
    of the body, so every replica at every feed position gives the same answer the same ETag.
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
        self.answers = Answers(replica, settings.response_cache, metrics.live)
        self._cache = self.answers.cache
        self._counts = metrics.live
        #: the live-answer streams (Accept: text/event-stream); none: streams are plain GETs
        self.hub: Hub | None = None

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
        if self.hub is not None and wants_stream(request):
            return await self.hub.open(request, parsed, login, limit_headers)
        answer = self._cache.get(parsed.ident)
        if answer is None:
            answer = self.answers.build(parsed)
        else:
            self._cache.move_to_end(parsed.ident)
            self._counts.hits += 1
        inm = headers.get(hdrs.IF_NONE_MATCH)
        if inm is not None and _etag_matches(inm, answer.etag):
            return _not_modified(answer.not_modified, limit_headers)
        if limit_headers:
            return web.Response(body=answer.body, headers={**answer.ok, **limit_headers})
        return web.Response(body=answer.body, headers=answer.ok)

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
