"""Web test helpers: a clock moved by hand, waiting on a condition with a deadline, a file feed
the server follows, and requests from another loopback address."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestClient

__all__ = ["Clock", "Feed", "eventually", "get_from"]


class Clock:
    """Epoch milliseconds that only move when a test says so (starts at the real time)."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.ms = time.time_ns() // 1_000_000 if start_ms is None else start_ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 30.0, what: str = "the condition"
) -> None:
    """Return once ``check()`` is true; fail after ``within`` seconds (a deadline far beyond
    what the condition needs, so a slow machine only makes the test slower)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(0.02)


class Feed:
    """A file feed the server follows: events appended here are applied within a poll."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def append(self, subject: str, payload: dict[str, Any]) -> None:
        with self.path.open("ab") as out:
            out.write(orjson.dumps({"subject": subject, "payload": payload}) + b"\n")


async def get_from(
    source: str, client: TestClient[Any, Any], path: str, headers: Mapping[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from the loopback address ``source`` (127.0.0.2, ...): another client
    address, as the server sees it. Returns status, headers and body."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(client.make_url(path), headers=dict(headers)) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()
