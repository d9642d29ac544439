"""The replica's lifecycle: load the snapshot (or newest checkpoint), catch up, follow, checkpoint.

Loading happens off the event loop on objects nobody else sees yet; they are published whole
once complete. Feed events are applied on the event loop, one at a time, in position order,
each by a plain synchronous call, so a request never sees half an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.core import events
from service.core.rooms import RoomStore
from service.core.users import Directory
from service.feed.checkpoint import (
    capture,
    find_checkpoint,
    manifest_position,
    write_checkpoint,
)
from service.feed.snapshot import LoadResult, SnapshotError, load_snapshot
from service.feed.sources import (
    CAUGHT_UP,
    FeedError,
    Message,
    NatsAuth,
    Source,
    open_source,
)

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["Check", "Replica"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check as ``/readyz?verbose`` lists it."""

    name: str
    ok: bool
    detail: str


class Replica:
    """Holds the current store and directory and knows whether they may be served.

    ``store`` and ``users`` are replaced as a whole once a snapshot has loaded completely, so a
    request sees either nothing (not ready) or a complete state. ``position`` is the last feed
    position applied (the snapshot's own position right after loading).
    """

    #: longest stretch of applying events without letting requests run
    SLICE_SECONDS = 0.005

    def __init__(
        self,
        snapshot: Path | None,
        login_expiration_days: int = 90,
        *,
        feed: str | None = None,
        checkpoint_dir: Path | None = None,
        checkpoint_interval: float = 300.0,
        checkpoint_events: int = 100_000,
        poll_interval: float = 0.2,
        nats: NatsAuth | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.login_expiration_days = login_expiration_days
        self.feed = feed
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_events = checkpoint_events
        self.poll_interval = poll_interval
        self.nats = nats
        self.store = RoomStore()
        self.users = Directory(login_expiration_days)
        self.position = 0
        self.loaded: LoadResult | None = None
        self.loaded_from: Path | None = None
        self.error: str | None = None
        #: set when the feed can no longer be followed (a gap, a bad URL): not ready
        self.feed_error: str | None = None
        self.caught_up = False
        self.stopping = False
        self.load_seconds = 0.0
        #: feed event counts by (subject, result), result in applied / skipped / rejected
        self.events: Counter[tuple[str, str]] = Counter()
        self.started = time.monotonic()
        self.source: Source | None = None
        self.checkpoint_position = 0
        self.checkpoint_failures = 0
        self.last_checkpoint: Path | None = None
        self._since_checkpoint = 0
        self._checkpoint_due = asyncio.Event()
        self._checkpoint_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Replica:
        """The replica ``voip-rooms serve`` runs for these settings."""
        return cls(
            settings.snapshot,
            settings.login_expiration_days,
            feed=settings.feed,
            checkpoint_dir=settings.checkpoint_dir,
            checkpoint_interval=settings.checkpoint_interval,
            checkpoint_events=settings.checkpoint_events,
            nats=NatsAuth(
                settings.nats_creds, settings.nats_ca, settings.nats_cert, settings.nats_key
            ),
        )

    # -- readiness ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Snapshot loaded, the feed caught up once and still followable, not shutting down."""
        return (
            self.loaded is not None
            and self.caught_up
            and self.feed_error is None
            and not self.stopping
        )

    def staleness_seconds(self) -> float:
        """Seconds since the replica last knew it was up to date with its feed.

        0 while connected and caught up, and always 0 without a feed.
        """
        source = self.source
        if self.feed is None or (source is not None and source.current):
            return 0.0
        since = self.started
        if source is not None and source.current_at is not None:
            since = source.current_at
        return max(0.0, time.monotonic() - since)

    def checks(self) -> list[Check]:
        """Each readiness condition with a human-readable detail."""
        if self.loaded is not None:
            snap = Check(
                "snapshot",
                True,
                f"{self.loaded.rooms} rooms, {self.loaded.users} users at position "
                f"{self.loaded.position} from {self.loaded_from} in {self.loaded.seconds:.2f}s",
            )
        else:
            snap = Check("snapshot", False, self.error or "loading")
        if self.feed_error is not None:
            feed = Check("feed", False, self.feed_error)
        elif self.feed is None:
            feed = Check("feed", self.caught_up, "no feed configured")
        else:
            status = self.source.status if self.source is not None else "not started"
            state = "caught up" if self.caught_up else "catching up"
            feed = Check(
                "feed",
                self.caught_up,
                f"{state} at position {self.position}, staleness "
                f"{self.staleness_seconds():.1f}s; {status}",
            )
        shutdown = Check("shutdown", not self.stopping, "stopping" if self.stopping else "running")
        return [snap, feed, shutdown]

    # -- loading -----------------------------------------------------------------------------

    def _candidates(self) -> list[Path]:
        """Where to load from, best first: the checkpoint if its position is higher."""
        checkpoint = find_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        order: list[Path] = []
        if checkpoint is not None and (
            self.snapshot is None or checkpoint[0] > manifest_position(self.snapshot)
        ):
            order.append(checkpoint[1])
        if self.snapshot is not None:
            order.append(self.snapshot)
        return order

    async def load(self) -> None:
        """Load the best snapshot in a worker thread, then publish it; failures go to ``error``."""
        candidates = self._candidates()
        if not candidates:
            self.error = "no snapshot configured"
            return
        for path in candidates:
            store = RoomStore()
            users = Directory(self.login_expiration_days)
            log.info("snapshot loading", extra={"snapshot": str(path)})
            try:
                result = await asyncio.to_thread(load_snapshot, path, store, users)
            except SnapshotError as exc:
                self.error = str(exc)
                log.error("snapshot load failed: %s", exc)
                continue
            except Exception as exc:  # a bug must not leave /readyz saying "loading" forever
                self.error = f"{path}: load failed: {type(exc).__name__}: {exc}"
                log.exception("snapshot load failed")
                continue
            self.store, self.users = store, users
            # Millions of long-lived objects: keep them out of the cyclic collector's full passes,
            # which otherwise stall the event loop for about a second at 1M rooms.
            gc.collect()
            gc.freeze()
            self.position = self.checkpoint_position = result.position
            self.load_seconds = result.seconds
            self.loaded_from = path
            self.error = None
            self.loaded = result
            log.info(
                "snapshot loaded",
                extra={
                    "snapshot": str(path),
                    "rooms": result.rooms,
                    "skipped_rooms": result.skipped_rooms,
                    "users": result.users,
                    "position": result.position,
                    "seconds": round(result.seconds, 3),
                },
            )
            return

    # -- following ---------------------------------------------------------------------------

    def handle(self, message: Message) -> str:
        """Apply one feed message (synchronously); returns and counts its result.

        A message at or below ``position`` is a duplicate and ignored without counting.
        """
        if message.position <= self.position:
            return "duplicate"
        label = events.subject_label(message.subject)
        if message.error is not None:
            result = "rejected"
            log.warning("feed event at position %d rejected: %s", message.position, message.error)
        else:
            try:
                event = events.decode(message.subject, message.payload)
                result = "applied" if events.apply(event, self.store, self.users) else "skipped"
            except events.BadEvent as exc:
                result = "rejected"
                log.warning(
                    "feed event at position %d (%s) rejected: %s", message.position, label, exc
                )
            except Exception:
                # A bug, not bad data: count it and go on rather than stop following.
                result = "rejected"
                log.exception("feed event at position %d (%s) failed", message.position, label)
        self.position = message.position
        self.events[(label, result)] += 1
        self._since_checkpoint += 1
        if self.checkpoint_dir is not None and self._since_checkpoint >= self.checkpoint_events:
            self._checkpoint_due.set()
        return result

    async def follow(self) -> None:
        """Apply the feed from ``position`` on, forever; a gap or bad URL sets ``feed_error``."""
        if self.feed is None:
            self.caught_up = True
            return
        try:
            source = open_source(self.feed, poll_interval=self.poll_interval, nats=self.nats)
        except FeedError as exc:
            self.feed_error = self.error = str(exc)
            log.error("feed unusable: %s", exc)
            return
        self.source = source
        while True:
            try:
                await self._consume(source)
            except FeedError as exc:
                # The state can no longer be brought up to date: stop presenting it as current.
                self.feed_error = self.error = str(exc)
                self.caught_up = False
                log.error("feed stopped at position %d: %s", self.position, exc)
                return
            except Exception:
                # A bug rather than a feed problem: start the source over from where we are.
                log.exception("feed source failed at position %d; restarting", self.position)
                await asyncio.sleep(1.0)

    async def _consume(self, source: Source) -> None:
        slice_start = time.perf_counter()
        async for item in source.messages(self.position):
            if item is CAUGHT_UP:
                if not self.caught_up:
                    self.caught_up = True
                    log.info("feed caught up", extra={"position": self.position})
            elif isinstance(item, Message):
                self.handle(item)
                # While catching up, a source may hand over thousands of events without
                # waiting: let requests in between, every few milliseconds of applying.
                if time.perf_counter() - slice_start > self.SLICE_SECONDS:
                    await asyncio.sleep(0)
                    slice_start = time.perf_counter()

    async def run(self) -> None:
        """The replica's whole life: load, then follow the feed and write checkpoints."""
        await self.load()
        if self.loaded is None or self.stopping:
            return
        if self.checkpoint_dir is not None:
            self._tasks.append(asyncio.create_task(self._checkpoints()))
        self._tasks.append(asyncio.create_task(self.follow()))
        try:
            # Without a feed (or after it stopped) checkpoints still run until stop().
            await asyncio.gather(*self._tasks)
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if self.stopping and this is not None and not this.cancelling():
                return  # stop() ended the children: a normal end
            raise
        finally:
            await self._cancel_tasks()

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """Stop following and write a final checkpoint (when a checkpoint directory is set)."""
        self.stopping = True
        await self._cancel_tasks()
        await self.checkpoint()

    # -- checkpoints -------------------------------------------------------------------------

    async def _checkpoints(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._checkpoint_due.wait(), self.checkpoint_interval)
            self._checkpoint_due.clear()
            await self.checkpoint()

    async def checkpoint(self) -> Path | None:
        """Write a checkpoint if anything changed since the last one; its path, or None.

        The view is taken on the event loop between two events; compression and writing run in
        a worker thread. A failure is logged and counted, never raised.
        """
        if self.checkpoint_dir is None or self.loaded is None:
            return None
        async with self._checkpoint_lock:
            position = self.position
            try:
                existing = find_checkpoint(self.checkpoint_dir)
                if existing is not None and existing[0] == position:
                    return existing[1]  # nothing new since (or loaded from) that checkpoint
                view = capture(self.store, self.users, position)
                self._since_checkpoint = 0
                path = await asyncio.to_thread(write_checkpoint, view, self.checkpoint_dir)
            except OSError as exc:
                self.checkpoint_failures += 1
                log.error("checkpoint at position %d failed: %s", position, exc)
                return None
            except Exception:
                self.checkpoint_failures += 1
                log.exception("checkpoint at position %d failed", position)
                return None
            self.checkpoint_position = view.position
            self.last_checkpoint = path
            return path
