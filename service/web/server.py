"""Run the app: listen, then on SIGTERM/SIGINT drain (not ready, still serving) and shut down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from service.settings import Settings
from service.web.app import REPLICA, create_app
from service.web.guards import HTTP_LOG

__all__ = ["SERVER_LIMITS", "serve", "write_port_file"]

log = logging.getLogger(__name__)

# Request lines up to 32 KiB so that 500-element lists fit; headers get the same room.
MAX_LINE = 32 * 1024
MAX_HEADERS = 128
#: Keyword arguments for aiohttp's server, shared with the tests' servers. Its logger keeps
#: the bytes of requests the HTTP parser refuses (they may hold a token) out of the logs.
SERVER_LIMITS: dict[str, Any] = {
    "max_line_size": MAX_LINE,
    "max_field_size": MAX_LINE,
    "max_headers": MAX_HEADERS,
    "logger": HTTP_LOG,
}


def write_port_file(path: Path, port: int) -> None:
    """Write ``port`` to ``path`` whole: a reader sees no file or the complete number."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{port}\n")
    os.replace(partial, path)


async def serve(settings: Settings, started: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain and exit within the shutdown timeout."""
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        **SERVER_LIMITS,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024, reuse_address=True)
    await site.start()
    # The port bound, which --port 0 leaves to the system: logged, and written for tools.
    port = int(runner.addresses[0][1])
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("listening on http://%s:%d", host, port, extra={"host": settings.host, "port": port})
    if settings.port_file is not None:
        write_port_file(settings.port_file, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if started is not None:
        started.set()
    try:
        await stop.wait()
        replica = app[REPLICA]
        replica.stopping = True  # /readyz says 503 from now on; the API keeps answering
        log.info("draining", extra={"seconds": settings.drain_seconds})
        await asyncio.sleep(settings.drain_seconds)
    finally:
        log.info("shutting down", extra={"timeout": settings.shutdown_timeout})
        await runner.cleanup()  # stops listening, lets in-flight requests finish, then cleanup_ctx
        if settings.port_file is not None:
            with contextlib.suppress(OSError):
                settings.port_file.unlink()
        log.info("stopped")
