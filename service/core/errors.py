"""The ApiError family: one class per Rocket.Chat error shape, translated once by the web layer."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "Forbidden",
    "InvalidDate",
    "InvalidFields",
    "InvalidParams",
    "InvalidSort",
    "TooManyRequests",
    "Unauthorized",
]


class ApiError(Exception):
    """An error with an HTTP status and Rocket.Chat's JSON body."""

    status = 400

    def body(self) -> dict[str, Any]:
        raise NotImplementedError


class InvalidParams(ApiError):
    """A parameter Rocket.Chat's validator rejects; ``message`` names the parameter."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "success": False,
            "error": f"{self.message} [invalid-params]",
            "errorType": "invalid-params",
        }


class _InvalidJsonQuery(ApiError):
    what = ""

    def __init__(self, raw: str) -> None:
        super().__init__(raw)
        self.raw = raw

    def body(self) -> dict[str, Any]:
        kind = f"error-invalid-{self.what}"
        return {
            "success": False,
            "error": f'Invalid {self.what} parameter provided: "{self.raw}" [{kind}]',
            "errorType": kind,
            "details": {"helperMethod": "parseJsonQuery"},
        }


class InvalidSort(_InvalidJsonQuery):
    """A ``sort`` that is not a JSON object of sortable fields to 1 or -1."""

    what = "sort"


class InvalidFields(_InvalidJsonQuery):
    """A ``fields`` projection that is not all 1s or all 0s on valid paths."""

    what = "fields"


class InvalidDate(ApiError):
    """A ``createdAt``/``closedAt`` date that is not ISO-8601 (``param``: e.g. createdAt.start)."""

    def __init__(self, param: str) -> None:
        super().__init__(param)
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "success": False,
            "error": f'The "{self.param}" query parameter must be a valid date.',
        }


class Unauthorized(ApiError):
    """Authentication failed; ``reason`` is for the metric label only, never the body."""

    status = 401
    MESSAGE = "You must be logged in to do this."

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return {"success": False, "error": self.MESSAGE, "status": "error", "message": self.MESSAGE}


class Forbidden(ApiError):
    """The caller lacks the permission."""

    status = 403

    def body(self) -> dict[str, Any]:
        return {"success": False, "error": "unauthorized"}


class TooManyRequests(ApiError):
    """Over the rate limit; ``wait_seconds`` goes into Rocket.Chat's message."""

    status = 429

    def __init__(self, wait_seconds: int) -> None:
        super().__init__(wait_seconds)
        self.wait_seconds = wait_seconds

    def body(self) -> dict[str, Any]:
        return {
            "success": False,
            "error": (
                "Error, too many requests. Please slow down. You must wait "
                f"{self.wait_seconds} seconds before trying this endpoint again. "
                "[error-too-many-requests]"
            ),
        }
