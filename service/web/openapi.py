"""The OpenAPI 3.1 document of the service (``openapi.json`` beside this module), served as is."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import orjson
from aiohttp import web

__all__ = ["DOCUMENT", "ROUTE", "document", "handle"]

ROUTE = "/openapi.json"
#: The document's bytes, read once at import; checked to be a JSON object then.
DOCUMENT: bytes = files(__package__).joinpath("openapi.json").read_bytes()


def document() -> dict[str, Any]:
    """The parsed document (a fresh copy)."""
    parsed = orjson.loads(DOCUMENT)
    assert isinstance(parsed, dict)
    return parsed


document()  # a broken document fails at import, not at the first request


async def handle(request: web.Request) -> web.Response:
    """GET /openapi.json, without authentication."""
    return web.Response(body=DOCUMENT, content_type="application/json")
