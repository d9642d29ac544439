"""JSON responses in Rocket.Chat's shapes."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from service.core.errors import ApiError

__all__ = ["api_error", "json_response", "status_error"]

_STATUS_TEXT = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported Content-Encoding: only identity is accepted",
    431: "Request headers too large",
    500: "Internal server error",
}


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def api_error(exc: ApiError) -> web.Response:
    """The response for an ApiError."""
    return json_response(exc.body(), exc.status)


def status_error(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """``{"success": false, "error": ...}`` for a plain HTTP status."""
    text = message or _STATUS_TEXT.get(status) or "Error"
    return json_response({"success": False, "error": text}, status, headers)
