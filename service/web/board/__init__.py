"""The live call board: a static page (HTML, CSS, JavaScript beside this module) served at
``/board``, read once at import and answered from memory with a strict Content-Security-Policy.

The page reads the live-answer stream of the rooms route itself, with the user's own login, so
serving it needs no authentication and no state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from aiohttp import hdrs, web

__all__ = ["CSP", "FILES", "INDEX_ROUTES", "ROUTE", "handle"]

ROUTE = "/board/{name}"
INDEX_ROUTES = ("/board", "/board/")

#: Everything from this host, nothing inline, nothing framed: the page's script, its stylesheet,
#: its icon and its stream requests are all same-origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_INDEX = "index.html"


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    headers: dict[str, str]


def _load() -> dict[str, _File]:
    """The page's files by name: only these are ever served (no path reaches the disk)."""
    loaded = {}
    for entry in files(__package__).iterdir():
        suffix = entry.name[entry.name.rfind(".") :] if "." in entry.name else ""
        if suffix not in _TYPES or not entry.is_file():
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        loaded[entry.name] = _File(
            body,
            {
                hdrs.CONTENT_TYPE: _TYPES[suffix],
                "ETag": etag,
                # Revalidated on each load (a 304 while unchanged), so a new version shows at
                # the next reload of a wall screen.
                hdrs.CACHE_CONTROL: "no-cache",
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY",
            },
        )
    return loaded


FILES = _load()
assert _INDEX in FILES, "the board's index.html is missing"  # fails at import, not per request


async def handle(request: web.Request) -> web.Response:
    """GET /board (the page) and /board/<file> (its script, stylesheet and icon)."""
    name = request.match_info.get("name", _INDEX)
    found = FILES.get(name)
    if found is None:
        raise web.HTTPNotFound()
    if request.headers.get(hdrs.IF_NONE_MATCH) == found.headers["ETag"]:
        return web.Response(status=304, headers=found.headers)
    return web.Response(body=found.body, headers=found.headers)
