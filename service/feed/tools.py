"""Feed tools behind ``voip-rooms publish`` and ``voip-rooms simulate``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from service.core.events import SUBJECTS
from service.feed.sources import FeedError, NatsAuth, NatsConnection, file_url_path

__all__ = ["ensure_stream", "publish_file", "read_events_file", "simulate"]

log = logging.getLogger(__name__)


def read_events_file(path: Path) -> Iterator[tuple[str, bytes]]:
    """(subject, payload bytes) for each line ``{"subject": ..., "payload": ...}`` of a file.

    Blank lines are skipped; any other line that is not such an object raises FeedError
    naming the line.
    """
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, 1):
            if not raw.strip():
                continue
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise FeedError(f"{path}:{number}: not JSON: {exc}") from None
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("subject"), str)
                or "payload" not in entry
            ):
                raise FeedError(f'{path}:{number}: expected {{"subject": ..., "payload": ...}}')
            yield entry["subject"], orjson.dumps(entry["payload"])


async def ensure_stream(js: Any, stream: str) -> None:
    """Create ``stream`` holding the feed's three subjects unless it exists."""
    import nats.js.errors

    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(name=stream, subjects=list(SUBJECTS))


class _Publisher:
    """Publishes in order on one connection and checks the stream stored every message."""

    def __init__(self, feed_url: str, nats: NatsAuth | None, *, reconnect: bool) -> None:
        self.connection = NatsConnection(feed_url, nats)
        self.reconnect = reconnect
        self.stream = self.connection.stream
        self.nc: Any = None
        self.js: Any = None
        self.start_seq = 0
        self.sent = 0

    async def __aenter__(self) -> _Publisher:
        import nats.errors

        # Without reconnect, one try: a wrong password or certificate is reported at once.
        options: dict[str, Any] = {} if self.reconnect else {"allow_reconnect": False}
        try:
            self.nc = await self.connection.connect(name="voip-rooms-publish", **options)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise FeedError(
                f"cannot connect to {self.connection.server}: {exc or type(exc).__name__}"
            ) from None
        self.js = self.nc.jetstream()
        await ensure_stream(self.js, self.stream)
        self.start_seq = int((await self.js.stream_info(self.stream)).state.last_seq)
        return self

    async def publish(self, subject: str, payload: bytes) -> None:
        # Plain publishes on one connection keep their order; the count is checked at the end
        # rather than waiting for an acknowledgement per message.
        await self.nc.publish(subject, payload)
        self.sent += 1
        if self.sent % 1000 == 0:
            await self.nc.flush()

    async def confirm(self) -> int:
        """The stream's last sequence once it holds everything sent; FeedError if it never does."""
        await self.nc.flush()
        deadline = time.monotonic() + 10.0
        while True:
            last = int((await self.js.stream_info(self.stream)).state.last_seq)
            if last - self.start_seq >= self.sent:
                return last
            if time.monotonic() > deadline:
                raise FeedError(
                    f"stream {self.stream} stored {last - self.start_seq} of {self.sent} messages"
                )
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()


async def publish_file(feed_url: str, path: Path, *, nats: NatsAuth | None = None) -> int:
    """Publish an events file into the JetStream stream of ``feed_url``, in order.

    Creates the stream (subjects watch.rooms, watch.users, permission.changed) if missing.
    ``nats`` secures the connection as for ``serve``. Returns the number of events published.
    """
    async with _Publisher(feed_url, nats, reconnect=False) as publisher:
        for subject, payload in read_events_file(path):
            await publisher.publish(subject, payload)
        await publisher.confirm()
        return publisher.sent


async def simulate(
    feed_url: str,
    rate: float,
    seed: int,
    duration: float | None,
    snapshot_dir: Path | None,
    *,
    tick: float = 0.1,
    nats: NatsAuth | None = None,
) -> int:
    """Generate live call-center events and publish them (``nats://``) or append them (``file://``).

    ``rate`` is new calls per second (each call makes several events). With ``snapshot_dir``
    (a demo snapshot) the events continue that snapshot, whose own seed is used; without it a
    world is made from ``seed``. Runs for ``duration`` seconds, or until cancelled when None.
    Returns the number of events written.
    """
    from service.demo import Simulator

    if snapshot_dir is not None:
        simulator = Simulator.from_snapshot(snapshot_dir, calls_per_second=rate)
    else:
        simulator = Simulator(0, seed, calls_per_second=rate)
    scheme = feed_url.partition(":")[0]
    deadline = None if duration is None else time.monotonic() + duration
    written = 0
    if scheme == "file":
        path = file_url_path(feed_url)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as out:  # noqa: ASYNC230 - appends of a few lines a tick
            while deadline is None or time.monotonic() < deadline:
                lines = [
                    orjson.dumps({"subject": s, "payload": p}, option=orjson.OPT_APPEND_NEWLINE)
                    for s, p in simulator.next_events(int(time.time() * 1000))
                ]
                if lines:
                    out.write(b"".join(lines))  # whole lines only: readers never see half one
                    out.flush()
                    written += len(lines)
                await asyncio.sleep(tick)
        return written
    if scheme not in ("nats", "tls"):
        raise FeedError(f"unsupported feed URL scheme {scheme!r}: use file://, nats:// or tls://")
    async with _Publisher(feed_url, nats, reconnect=True) as publisher:
        while deadline is None or time.monotonic() < deadline:
            for subject, payload in simulator.next_events(int(time.time() * 1000)):
                await publisher.publish(subject, orjson.dumps(payload))
            await publisher.nc.flush()
            await asyncio.sleep(tick)
        await publisher.confirm()
        return publisher.sent
