"""The ceiling: the least an aiohttp server can do to answer the benchmark's requests.

Same event loop (uvloop), same server settings (access log off, ``SERVER_LIMITS``, backlog) as
``voip-rooms serve``, but no authentication, no parameter parsing and no lookup: every request to
the rooms route gets the same prebuilt body, of the size of the real answers, with an ETag. The
one thing it looks at is whether ``If-None-Match`` is present, so that a mix's share of 304s
(and of bodies) is the same as the real service's.

    python -m tests.bench.ceiling --port 3001 --body-bytes 61234
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

__all__ = ["ETAG", "build_app", "main", "make_body", "server_limits"]

ROUTE = "/api/v1/voip/rooms"  # the contract's URL
SERVER_PY = Path(__file__).resolve().parents[2] / "service" / "web" / "server.py"

#: As long as the service's ETags: a quoted 24-digit hex digest.
ETAG = '"' + "c" * 24 + '"'


def make_body(size: int) -> bytes:
    """A valid JSON answer of exactly ``size`` bytes (at least the size of an empty page)."""
    head, tail = b'{"rooms":[],"count":0,"offset":0,"total":0,"pad":"', b'","success":true}'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


def build_app(body: bytes) -> web.Application:
    """The app: the rooms route and a /readyz, nothing else (no middleware)."""
    headers = {"ETag": ETAG}

    async def rooms(request: web.Request) -> web.Response:
        if hdrs.IF_NONE_MATCH in request.headers:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def ready(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ready"}', content_type="application/json")

    app = web.Application()
    app.router.add_get(ROUTE, rooms, allow_head=False)
    app.router.add_get("/readyz", ready, allow_head=False)
    return app


def server_limits() -> dict[str, Any]:
    """``SERVER_LIMITS`` of service/web/server.py; read from its source when the app does not
    import (a benchmark should not die of an unrelated module being edited)."""
    try:
        from service.web.server import SERVER_LIMITS
    except Exception as exc:  # any import failure: fall back to the source
        print(
            f"ceiling: service.web.server does not import ({exc!r}); reading its source",
            file=sys.stderr,
        )
    else:
        return dict(SERVER_LIMITS)
    namespace: dict[str, Any] = {}
    for node in ast.parse(SERVER_PY.read_text()).body:
        target: ast.expr
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id.isupper():
            with contextlib.suppress(Exception):
                code = compile(ast.Expression(value), str(SERVER_PY), "eval")
                namespace[target.id] = eval(code, {"__builtins__": {}}, namespace)
    limits = namespace.get("SERVER_LIMITS")
    if not isinstance(limits, dict):
        raise SystemExit(f"ceiling: no SERVER_LIMITS in {SERVER_PY}")
    return limits


async def _serve(host: str, port: int, body: bytes, port_file: Path | None) -> None:
    limits = server_limits()
    runner = web.AppRunner(build_app(body), handle_signals=False, access_log=None, **limits)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    if port_file is not None:  # the port bound (--port 0), written whole, as the service does
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(f"{runner.addresses[0][1]}\n")
        partial.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ceiling", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    parser.add_argument("--port-file", type=Path, help="once listening, write the port there")
    parser.add_argument("--body-bytes", type=int, required=True, metavar="N")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_serve(args.host, args.port, make_body(args.body_bytes), args.port_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
