"""The app factory: the one place that wires settings, replica, metrics and handlers together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler
from yarl import URL

from service.core.errors import ApiError
from service.feed.replica import STALE_FEED_GAP, Replica
from service.settings import Settings
from service.web import board, openapi
from service.web.guards import Guard, epoch_ms
from service.web.metrics import Metrics
from service.web.responses import api_error, json_response, status_error
from service.web.rooms import ROUTE, RoomsHandler
from service.web.streams import EventStream, Hub

__all__ = ["GUARD", "HUB", "METRICS", "REPLICA", "SETTINGS", "create_app"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("voip_rooms.access")

SETTINGS = web.AppKey("settings", Settings)
REPLICA = web.AppKey("replica", Replica)
METRICS = web.AppKey("metrics", Metrics)
GUARD = web.AppKey("guard", Guard)
HUB = web.AppKey("hub", Hub)
_REPLICA_TASK = web.AppKey("replica_task", asyncio.Task[None])

_SLASHES = re.compile(r"/{2,}")
_UNMATCHED = "unmatched"  # the route label of requests no route took
CORS_HEADERS = "X-User-Id, X-Auth-Token, Content-Type, If-None-Match, Last-Event-ID"
CORS_EXPOSE = (
    "ETag, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, "
    "X-Replica-Stale"
)
STALE = "X-Replica-Stale"


class FrontDoor:
    """What every request goes through: errors in Rocket.Chat's shapes, CORS, metrics and the
    sampled access log, plus the answers for unmatched requests (404, 405, CORS preflights)
    and merged slashes.

    It wraps each route's handler rather than being an app middleware: aiohttp then calls the
    handler directly (a middleware costs a partial, aiohttp's own current-app middleware and
    two more coroutines on every request), and each wrapper knows its route label in advance.
    Unmatched requests reach ``fallback``, a catch-all route registered last.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.record = settings.metrics
        self.access_sample = settings.access_log
        self.origins = frozenset(settings.cors_origins)
        self.any_origin = "*" in self.origins
        self.catch_all: web.AbstractResource | None = None
        self._unmatched = self.wrap(_UNMATCHED, self._refuse)

    def wrap(
        self,
        route: str,
        handler: Handler,
        method: str | None = None,
        replica: Replica | None = None,
    ) -> Handler:
        """``handler`` as the front door serves it, counted under ``route`` (and ``method``,
        when the route answers only that one; else the request's). With ``replica``, its
        answers (errors too) carry ``X-Replica-Stale`` while it serves across a feed gap."""
        metrics, record, access_sample = self.metrics, self.record, self.access_sample
        now = metrics.now
        metric = metrics.request(method, route) if method is not None else None
        cors = self._cors if self.origins else None

        async def front_door(request: web.Request) -> web.StreamResponse:
            started = now()
            if record:
                metrics.in_flight += 1
            try:
                try:
                    response = await handler(request)
                except ApiError as exc:
                    response = api_error(exc)
                except web.HTTPException as exc:
                    if exc.status < 400:
                        raise
                    response = status_error(exc.status, headers=_allow_header(exc))
                except (asyncio.CancelledError, ConnectionResetError):
                    raise
                except Exception:
                    log.exception(
                        "request failed", extra={"route": route, "method": request.method}
                    )
                    response = status_error(500)
            finally:
                if record:
                    metrics.in_flight -= 1
            prepared = response.prepared  # a stream: its headers are sent (see stream_headers)
            if replica is not None and replica.feed_gap and not prepared:
                response.headers[STALE] = STALE_FEED_GAP
            if cors is not None and not prepared:
                cors(request, response)
            elapsed = now() - started
            if record:
                bound = metric or metrics.request(request.method, route)
                if isinstance(response, EventStream):
                    bound.count(response.status)  # lasts as long as the client wants
                else:
                    bound.observe(response.status, elapsed)
            if access_sample and random.random() < access_sample:
                access_log.info(
                    "request",
                    extra={
                        "method": request.method,
                        "route": route,
                        "status": response.status,
                        "ms": round(elapsed * 1000, 3),
                    },
                )
            return response

        return front_door

    def stream_headers(self, replica: Replica) -> Callable[[web.Request, web.StreamResponse], None]:
        """What the front door adds to an answer (staleness, CORS), for a stream to add before
        it sends its headers."""
        cors = self._cors if self.origins else None

        def add(request: web.Request, response: web.StreamResponse) -> None:
            if replica.feed_gap:
                response.headers[STALE] = STALE_FEED_GAP
            if cors is not None:
                cors(request, response)

        return add

    def add_get(
        self,
        app: web.Application,
        path: str,
        handler: Handler,
        replica: Replica | None = None,
    ) -> None:
        """Route GET and HEAD ``path`` to ``handler`` behind the front door, each counted under
        its own method (aiohttp sends a HEAD answer's status and headers, without the body);
        ``replica`` as for :meth:`wrap`."""
        resource = app.router.add_resource(path)
        for method in (hdrs.METH_GET, hdrs.METH_HEAD):
            resource.add_route(method, self.wrap(path, handler, method, replica))

    def add_fallback(self, app: web.Application) -> None:
        """The catch-all route; after every other route, since the router tries routes in order."""
        self.catch_all = _Anything("/{tail}")
        app.router.register_resource(self.catch_all)
        self.catch_all.add_route(hdrs.METH_ANY, self.fallback)

    async def fallback(self, request: web.Request) -> web.StreamResponse:
        """A request no route took: repeated slashes merged (served by the route they name, no
        redirect, as the contract asks), else 404, 405 or a CORS preflight."""
        raw_path = request.rel_url.raw_path
        if "//" in raw_path:
            merged = _SLASHES.sub("/", raw_path)
            query = request.rel_url.raw_query_string
            target = URL(merged + ("?" + query if query else ""), encoded=True)
            clone = request.clone(rel_url=target)
            found = await request.app.router.resolve(clone)
            if found.http_exception is None and found.route.resource is not self.catch_all:
                return await found.handler(clone)
        return await self._unmatched(request)

    async def _refuse(self, request: web.Request) -> web.StreamResponse:
        preflight = (
            request.method == "OPTIONS" and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        )
        if self.origins and preflight:
            return self._preflight(request)
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource is not self.catch_all:
                allowed |= (await resource.resolve(request))[1]
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    def _allowed_origin(self, request: web.Request) -> str | None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and (self.any_origin or origin in self.origins):
            return origin
        return None

    def _preflight(self, request: web.Request) -> web.Response:
        origin = self._allowed_origin(request)
        if origin is None:
            return status_error(403, "CORS origin not allowed")
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, OPTIONS",
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: CORS_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: "600",
                hdrs.VARY: "Origin",
            },
        )

    def _cors(self, request: web.Request, response: web.StreamResponse) -> None:
        """CORS headers on an answer to an allowed origin (errors too, so a browser reads them)."""
        origin = self._allowed_origin(request)
        if origin is not None and hdrs.ACCESS_CONTROL_ALLOW_ORIGIN not in response.headers:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = CORS_EXPOSE
            response.headers[hdrs.VARY] = "Origin"


class _Anything(web.DynamicResource):
    """A resource that takes every path: with any character (a pattern's ``.`` misses a decoded
    ``%0A``), and not starting with ``/`` (``OPTIONS *``), which no pattern can match."""

    def _match(self, path: str) -> dict[str, str] | None:
        return {"tail": path}


def _allow_header(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get(hdrs.ALLOW)
    return {hdrs.ALLOW: allow} if allow else None


async def livez(request: web.Request) -> web.Response:
    """200 while the process and its event loop answer; depends on nothing shared."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 once loaded and caught up (and not shutting down), else 503; ?verbose lists checks."""
    replica = request.app[REPLICA]
    ready = replica.ready
    body: dict[str, object] = {"status": "ready" if ready else "not ready"}
    if "verbose" in request.query:
        body["checks"] = [
            {"name": c.name, "ok": c.ok, "detail": c.detail} for c in replica.checks()
        ]
    return json_response(body, 200 if ready else 503)


def create_app(
    settings: Settings,
    replica: Replica | None = None,
    metrics: Metrics | None = None,
    now_ms: Callable[[], int] = epoch_ms,
    *,
    stream_keepalive: float = 15.0,
    stream_tick: float = 1.0,
    stream_buffer: int = 1 << 20,
) -> web.Application:
    """Build the application; the replica loads in a background task once the app starts.
    ``now_ms`` is the clock of login expiry, the rate limit and the failed-login throttle.
    Live-answer streams send a keep-alive after ``stream_keepalive`` quiet seconds, check
    their connections and logins every ``stream_tick`` seconds, and drop a client once its
    unsent data would pass ``stream_buffer`` bytes."""
    if replica is None:
        replica = Replica.from_settings(settings)
    metrics = metrics if metrics is not None else Metrics()
    metrics.replica = replica
    app = web.Application(client_max_size=1 << 20)  # no middlewares: see FrontDoor
    app[SETTINGS] = settings
    app[REPLICA] = replica
    app[METRICS] = metrics
    front = FrontDoor(settings, metrics)
    rooms = RoomsHandler(settings, replica, metrics, now_ms)
    guard = app[GUARD] = Guard(settings, now_ms)
    hub = app[HUB] = Hub(
        replica,
        rooms.answers,
        metrics,
        max_streams=settings.max_streams,
        interval_ms=settings.stream_interval,
        now_ms=now_ms,
        guard=guard,
        record=settings.metrics,
        keepalive=stream_keepalive,
        tick=stream_tick,
        buffer_limit=stream_buffer,
    )
    hub.prepare_headers = front.stream_headers(replica)
    rooms.hub = hub
    app.on_shutdown.append(hub.shutdown)  # after the drain: streams end, clients reconnect
    front.add_get(app, ROUTE, guard.wrap(rooms.handle), replica)
    front.add_get(app, "/livez", livez)
    front.add_get(app, "/healthz", livez)
    front.add_get(app, "/readyz", readyz)
    front.add_get(app, "/metrics", make_aiohttp_handler(metrics.registry))
    front.add_get(app, openapi.ROUTE, openapi.handle)
    for path in (*board.INDEX_ROUTES, board.ROUTE):
        front.add_get(app, path, board.handle)
    front.add_fallback(app)
    app.cleanup_ctx.append(_replica_lifecycle)
    return app


async def _replica_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Run the replica beside the server: the socket listens while the snapshot loads."""
    replica = app[REPLICA]
    task = asyncio.create_task(replica.run(), name="replica")
    app[_REPLICA_TASK] = task
    yield
    replica.stopping = True
    await replica.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
