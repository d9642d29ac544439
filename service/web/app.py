"""The app factory: the one place that wires settings, replica, metrics and handlers together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler
from yarl import URL

from service.core.errors import ApiError
from service.feed.replica import Replica
from service.settings import Settings
from service.web import openapi
from service.web.guards import Guard
from service.web.metrics import Metrics
from service.web.responses import api_error, json_response, status_error
from service.web.rooms import ROUTE, RoomsHandler

__all__ = ["METRICS", "REPLICA", "SETTINGS", "create_app"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("voip_rooms.access")

SETTINGS = web.AppKey("settings", Settings)
REPLICA = web.AppKey("replica", Replica)
METRICS = web.AppKey("metrics", Metrics)
_REPLICA_TASK = web.AppKey("replica_task", asyncio.Task[None])

_SLASHES = re.compile(r"/{2,}")
CORS_HEADERS = "X-User-Id, X-Auth-Token, Content-Type, If-None-Match"
CORS_EXPOSE = "ETag, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"


def _front_door(metrics: Metrics, access_sample: float, record: bool = True) -> web.middleware:  # type: ignore[valid-type]
    """Route label, merged slashes, errors in Rocket.Chat's shapes, metrics, sampled access log."""

    @web.middleware
    async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = metrics.now()
        info = request.match_info
        if info.http_exception is None:
            route = info.route.resource.canonical if info.route.resource else "unmatched"
        else:
            route = "unmatched"
            if "//" in request.rel_url.raw_path:
                # Repeated slashes are merged without a redirect, as the contract asks.
                merged = _SLASHES.sub("/", request.rel_url.raw_path)
                query = request.rel_url.raw_query_string
                target = URL(merged + ("?" + query if query else ""), encoded=True)
                clone = request.clone(rel_url=target)
                found = await request.app.router.resolve(clone)
                if found.http_exception is None and found.route.resource is not None:
                    request, handler, route = clone, found.handler, found.route.resource.canonical
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
                log.exception("request failed", extra={"route": route, "method": request.method})
                response = status_error(500)
        finally:
            if record:
                metrics.in_flight -= 1
        elapsed = metrics.now() - started
        if record:
            metrics.request(request.method, route).observe(response.status, elapsed)
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


def _allow_header(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get(hdrs.ALLOW)
    return {hdrs.ALLOW: allow} if allow else None


def _cors(origins: tuple[str, ...]) -> web.middleware:  # type: ignore[valid-type]
    """CORS for the configured origins ("*" allows any): preflights and response headers."""
    any_origin = "*" in origins
    allowed = frozenset(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        ok = origin is not None and (any_origin or origin in allowed)
        if request.method == "OPTIONS" and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            if not ok:
                return status_error(403, "CORS origin not allowed")
            assert origin is not None
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
        try:
            response = await handler(request)
        except ApiError as exc:  # translated here too, so that a browser can read errors
            response = api_error(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = status_error(exc.status, headers=_allow_header(exc))
        if ok:
            assert origin is not None
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = CORS_EXPOSE
            response.headers[hdrs.VARY] = "Origin"
        return response

    return cors


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
    settings: Settings, replica: Replica | None = None, metrics: Metrics | None = None
) -> web.Application:
    """Build the application; the replica loads in a background task once the app starts."""
    if replica is None:
        replica = Replica.from_settings(settings)
    metrics = metrics if metrics is not None else Metrics()
    metrics.replica = replica
    middlewares = [_front_door(metrics, settings.access_log, settings.metrics)]
    if settings.cors_origins:
        middlewares.append(_cors(settings.cors_origins))
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
    app[SETTINGS] = settings
    app[REPLICA] = replica
    app[METRICS] = metrics
    rooms = RoomsHandler(settings, replica, metrics)
    app.router.add_get(ROUTE, Guard(settings).wrap(rooms.handle), allow_head=False)
    app.router.add_get("/livez", livez, allow_head=False)
    app.router.add_get("/healthz", livez, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry), allow_head=False)
    app.router.add_get(openapi.ROUTE, openapi.handle, allow_head=False)
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
