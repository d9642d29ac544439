"""The replica's lifecycle: load the snapshot (or newest checkpoint), catch up, follow, checkpoint.

Loading happens off the event loop on objects nobody else sees yet; they are published whole
once complete. Feed events are applied on the event loop in position order, in batches (what the
source has received, up to ``Replica.BATCH``), each batch by one plain synchronous call, so a
request never sees half an event, nor half a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.core import events
from service.core.store import RoomStore
from service.core.store.columns import spilling_into
from service.core.users import Directory
from service.feed.checkpoint import (
    capture,
    find_checkpoint,
    is_checkpoint,
    list_checkpoints,
    load_checkpoint,
    manifest_position,
    spill_arena,
    spill_directory,
    write_checkpoint,
)
from service.feed.progress import LoadProgress, report_progress
from service.feed.snapshot import LoadResult, SnapshotError, load_snapshot
from service.feed.sources import (
    CAUGHT_UP,
    FeedError,
    FeedGap,
    Message,
    NatsAuth,
    Source,
    open_source,
)

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["STALE_FEED_GAP", "Check", "Replica"]

log = logging.getLogger(__name__)

#: the value of ``X-Replica-Stale`` while serving across a feed gap
STALE_FEED_GAP = "feed-gap"


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

    A feed gap found while serving keeps the replica ready on its last consistent state, with
    ``feed_gap`` set, until a snapshot covering the gap appears in the snapshot directory
    (looked for every ``gap_check_interval`` seconds): it is loaded in a worker thread while
    the old state keeps answering, swapped in whole, and the feed followed from its position.
    A gap found before the replica was ever ready keeps it not ready until then.
    """

    #: longest stretch of applying events without letting requests run (a batch is applied
    #: whole, so one batch may take longer)
    SLICE_SECONDS = 0.005
    #: most feed messages applied in one synchronous call (what has arrived, up to this)
    BATCH = 1024

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
        gap_check_interval: float = 10.0,
        progress_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        nats: NatsAuth | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.login_expiration_days = login_expiration_days
        self.feed = feed
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_events = checkpoint_events
        self.poll_interval = poll_interval
        self.gap_check_interval = gap_check_interval
        self.progress_interval = progress_interval
        self.clock = clock
        self.nats = nats
        self.store = RoomStore()
        self.users = Directory(login_expiration_days)
        self.position = 0
        self.loaded: LoadResult | None = None
        self.loaded_from: Path | None = None
        self.error: str | None = None
        #: set when the feed can no longer be followed (a gap before ready, a bad URL): not ready
        self.feed_error: str | None = None
        #: True while serving across a feed gap (a plain attribute: read on every API answer)
        self.feed_gap = False
        #: the gap not yet healed (while serving, or before ready), for logs and checks
        self.gap: FeedGap | None = None
        #: checks of the snapshot directory for a snapshot covering a gap, and gaps healed
        self.gap_checks = 0
        self.gaps_healed = 0
        #: the current (or last) load's progress
        self.progress: LoadProgress | None = None
        #: the snapshot manifest (inode, mtime, size) the state came from, and the last one
        #: that failed to load: neither is loaded again to heal a gap
        self._loaded_manifest: tuple[int, int, int] | None = None
        self._failed_manifest: tuple[int, int, int] | None = None
        #: why the last snapshot loaded to heal a gap was not used
        self.reload_error: str | None = None
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
        self._writing: asyncio.Future[Path] | None = None
        #: set by a healed gap: checkpoints above the new position are of the feed before it
        self._supersede = False
        #: temporary directories of answer bytes moved out of the heap, until a checkpoint
        #: links their files
        self._spilled: list[Path] = []
        self._tasks: list[asyncio.Task[None]] = []
        #: called right after a new store and directory are swapped in whole
        self.published: list[Callable[[], None]] = []

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
        progress = self.progress
        loading = progress is not None and not progress.ended
        if self.loaded is not None:
            snap = Check(
                "snapshot",
                True,
                f"{self.loaded.rooms} rooms, {self.loaded.users} users at position "
                f"{self.loaded.position} from {self.loaded_from} in {self.loaded.seconds:.2f}s",
            )
        elif loading and progress is not None:
            snap = Check("snapshot", False, progress.describe())
        else:
            snap = Check("snapshot", False, self.error or "loading")
        if self.feed_error is not None:
            feed = Check("feed", False, self.feed_error + self._healing())
        elif self.feed is None:
            feed = Check("feed", self.caught_up, "no feed configured")
        elif self.feed_gap and self.gap is not None:
            feed = Check(
                "feed",
                True,
                f"serving stale data from position {self.position} across a feed gap: "
                f"{self.gap}{self._healing()}",
            )
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

    def _healing(self) -> str:
        """How a pending gap is being healed, for the feed check ('' without a gap)."""
        gap = self.gap
        if gap is None:
            return ""
        progress = self.progress
        if progress is not None and not progress.ended:
            return f"; {progress.describe()}"
        if self.snapshot is None:
            return "; no snapshot directory to heal it from"
        waiting = (
            f"; waiting for a snapshot at position {max(0, gap.first - 1)} or later in "
            f"{self.snapshot}"
        )
        if self.reload_error is not None:
            waiting += f" (the last one failed: {self.reload_error})"
        return waiting

    # -- loading -----------------------------------------------------------------------------

    def _candidates(self) -> list[Path]:
        """Where to load from, best first: the checkpoints any replica wrote (newest first) at
        the snapshot's position or later, then the snapshot. A checkpoint at the snapshot's own
        position holds the same state and loads in seconds."""
        order: list[Path] = []
        if self.checkpoint_dir is not None:
            floor = manifest_position(self.snapshot) if self.snapshot is not None else 0
            order += [c.path for c in list_checkpoints(self.checkpoint_dir) if c.position >= floor]
        if self.snapshot is not None:
            order.append(self.snapshot)
        return order

    async def _load_from(self, path: Path) -> tuple[RoomStore, Directory, LoadResult] | str:
        """Load ``path`` into fresh objects in a worker thread, logging progress meanwhile.

        On failure, the reason (logged already).
        """
        store = RoomStore()
        users = Directory(self.login_expiration_days)
        progress = self.progress = LoadProgress(path, self.clock)
        log.info("snapshot loading", extra={"snapshot": str(path)})
        reporter = asyncio.create_task(report_progress(progress, self.progress_interval))
        try:
            if path != self.snapshot and is_checkpoint(path):
                store, users, result = await asyncio.to_thread(
                    load_checkpoint, path, self.login_expiration_days, progress
                )
            else:
                # The answer bytes (most of the state) out of the heap, into files the first
                # checkpoint links, written while the indexes are built; mapped in place, they
                # are read back as answers touch them.
                spill = (
                    None if self.checkpoint_dir is None else spill_directory(self.checkpoint_dir)
                )
                try:
                    with spilling_into(spill) if spill is not None else contextlib.nullcontext():
                        result = await asyncio.to_thread(
                            load_snapshot, path, store, users, None, progress
                        )
                except BaseException:
                    if spill is not None:
                        shutil.rmtree(spill, ignore_errors=True)
                    raise
                if spill is not None and await asyncio.to_thread(spill_arena, store, spill):
                    self._spilled.append(spill)
        except SnapshotError as exc:
            log.error("snapshot load failed: %s", exc)
            return str(exc)
        except Exception as exc:  # a bug must not leave /readyz saying "loading" forever
            log.exception("snapshot load failed")
            return f"{path}: load failed: {type(exc).__name__}: {exc}"
        finally:
            progress.ended = True
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        return store, users, result

    def _publish(
        self,
        path: Path,
        loaded: tuple[RoomStore, Directory, LoadResult],
        manifest: tuple[int, int, int] | None,
    ) -> None:
        """Serve a completely loaded state from now on (one synchronous swap).

        ``manifest`` is the snapshot manifest's signature taken before the load began.
        """
        store, users, result = loaded
        self.store, self.users = store, users
        self.position = self.checkpoint_position = result.position
        self.load_seconds = result.seconds
        self.loaded_from = path
        self.error = None
        self.loaded = result
        self._loaded_manifest = manifest if path == self.snapshot else None
        for callback in self.published:
            callback()
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

    async def load(self) -> None:
        """Load the best snapshot in a worker thread, then publish it; failures go to ``error``."""
        candidates = self._candidates()
        if not candidates:
            self.error = "no snapshot configured"
            return
        for path in candidates:
            manifest = _manifest_signature(path)
            loaded = await self._load_from(path)
            if isinstance(loaded, str):
                self.error = loaded
                continue
            # Millions of long-lived objects: keep them out of the cyclic collector's full passes,
            # which otherwise stall the event loop for about a second at 1M rooms.
            gc.collect()
            gc.freeze()
            release_free_memory()  # on this thread: measured to give back more than elsewhere
            self._publish(path, loaded, manifest)
            if path == self.snapshot and self.checkpoint_dir is not None:
                # A checkpoint soon: the next replica (or restart) loads it in seconds, and
                # later checkpoints link its answer bytes instead of writing them again.
                self._checkpoint_due.set()
            return

    # -- following ---------------------------------------------------------------------------

    def handle(self, message: Message) -> str:
        """Apply one feed message (synchronously); returns and counts its result.

        A message at or below ``position`` is a duplicate and ignored without counting.
        """
        return self.handle_batch((message,))[0]

    def handle_batch(self, messages: Sequence[Message]) -> list[str]:
        """Apply feed messages (in position order) in one synchronous call, as :meth:`handle`
        on each would: each is decoded alone (a bad one is counted, logged and skipped, the
        others apply), then all are applied at once (a run of room events in one store batch),
        so a request sees the state before the batch or after it. Returns each one's result.
        """
        results: list[str] = []
        decoded: list[events.Event] = []
        at: list[int] = []  # the result index of each decoded event
        labels: list[str] = []
        position = self.position
        decode = events.decode
        for message in messages:
            if message.position <= position:
                results.append("duplicate")
                labels.append("")
                continue
            position = message.position
            label = events.subject_label(message.subject)
            labels.append(label)
            if message.error is not None:
                results.append("rejected")
                log.warning(
                    "feed event at position %d rejected: %s", message.position, message.error
                )
                continue
            try:
                decoded.append(decode(message.subject, message.payload))
            except events.BadEvent as exc:
                results.append("rejected")
                log.warning(
                    "feed event at position %d (%s) rejected: %s", message.position, label, exc
                )
                continue
            except Exception:
                # A bug, not bad data: count it and go on rather than stop following.
                results.append("rejected")
                log.exception("feed event at position %d (%s) failed", message.position, label)
                continue
            at.append(len(results))
            results.append("")
        if decoded:
            applied = events.apply_many(decoded, self.store, self.users)
            for i, outcome in zip(at, applied, strict=True):
                if outcome is True:
                    results[i] = "applied"
                elif outcome is False:
                    results[i] = "skipped"
                else:
                    results[i] = "rejected"
                    pos, label = messages[i].position, labels[i]
                    if isinstance(outcome, events.BadEvent):
                        log.warning(
                            "feed event at position %d (%s) rejected: %s", pos, label, outcome
                        )
                    else:
                        log.error(
                            "feed event at position %d (%s) failed",
                            pos,
                            label,
                            exc_info=outcome,
                        )
        counts = self.events
        for label, result in zip(labels, results, strict=True):
            if result != "duplicate":
                counts[(label, result)] += 1
                self._since_checkpoint += 1
        self.position = position
        if self.checkpoint_dir is not None and self._since_checkpoint >= self.checkpoint_events:
            self._checkpoint_due.set()
        return results

    @property
    def checkpoint_due(self) -> bool:
        """True when enough events arrived since the last checkpoint to write the next one."""
        return self._checkpoint_due.is_set()

    async def follow(self) -> None:
        """Apply the feed from ``position`` on, forever; a bad URL sets ``feed_error``, a gap
        waits for a covering snapshot (see the class docstring)."""
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
            except FeedGap as exc:
                self._gap_found(exc)
                await self._heal(exc)
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

    def _gap_found(self, gap: FeedGap) -> None:
        """Serving: stay ready, marked stale. Not ready yet: stay so, with the error shown."""
        self.gap = gap
        need = max(0, gap.first - 1)
        if self.caught_up:
            self.feed_gap = True
            log.error(
                "feed gap while serving: %s; still serving from position %d, marked stale, "
                "until a snapshot at position %d or later appears in %s",
                gap,
                self.position,
                need,
                self.snapshot,
                extra={"position": self.position, "needed_position": need},
            )
        else:
            self.feed_error = self.error = str(gap)
            log.error(
                "feed stopped at position %d: %s",
                self.position,
                gap,
                extra={"position": self.position, "needed_position": need},
            )

    def _covering_snapshot(self, gap: FeedGap) -> bool:
        """Whether the snapshot directory now holds a snapshot that covers ``gap`` and that
        would bring something new (not the state held, nor one that failed to load)."""
        if self.snapshot is None:
            return False
        signature = _manifest_signature(self.snapshot)
        if signature is None or signature == self._failed_manifest:
            return False
        position = manifest_position(self.snapshot)
        if position < gap.first - 1:
            return False
        return position > self.position or signature != self._loaded_manifest

    async def _heal(self, gap: FeedGap) -> None:
        """Wait for a snapshot covering ``gap``, load it without blocking the event loop (the
        current state keeps answering) and swap it in; then the caller follows on from it."""
        while True:
            self.gap_checks += 1
            if self._covering_snapshot(gap) and await self._reload(gap):
                return
            await asyncio.sleep(self.gap_check_interval)

    async def _reload(self, gap: FeedGap) -> bool:
        """Load the snapshot directory and swap it in if it covers ``gap``; True when done."""
        assert self.snapshot is not None
        path = self.snapshot
        signature = _manifest_signature(path)
        log.info("loading a snapshot to heal the feed gap", extra={"snapshot": str(path)})
        # The collector's full passes over the growing new state would stall requests: keep it
        # off during the load, then freeze the new state as after the first load (without the
        # full collection, which would stall them too).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            loaded = await self._load_from(path)
            gc.freeze()
            release_free_memory()
        finally:
            if was_enabled:
                gc.enable()
        if isinstance(loaded, str):
            self.reload_error = loaded
            self._failed_manifest = signature
            return False
        position = loaded[2].position
        if position < gap.first - 1:
            self.reload_error = (
                f"{path}: position {position} does not cover the gap "
                f"(needs {gap.first - 1} or later)"
            )
            log.error("snapshot load refused: %s", self.reload_error)
            self._failed_manifest = signature
            return False
        self._publish(path, loaded, signature)
        self.reload_error = None
        self.gap = None
        self.feed_gap = False
        self.feed_error = None
        self.gaps_healed += 1
        self._since_checkpoint = 0
        if self.checkpoint_dir is not None:
            self._checkpoint_due.set()  # a restart should resume from the new state
            self._supersede = True  # and never from a checkpoint of the feed before the gap
        log.info(
            "feed gap healed: following the feed from position %d",
            self.position,
            extra={"position": self.position},
        )
        return True

    async def _consume(self, source: Source) -> None:
        slice_start = time.perf_counter()
        async for item in source.batches(self.position, self.BATCH):
            if item is CAUGHT_UP:
                if not self.caught_up:
                    self.caught_up = True
                    log.info("feed caught up", extra={"position": self.position})
            elif isinstance(item, list):
                self.handle_batch(item)
                # While catching up, a source may hand over many batches without waiting: let
                # requests in between, every few milliseconds of applying.
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
        writing = self._writing
        if writing is not None and not writing.done():
            await asyncio.wait([writing])  # a periodic checkpoint the cancel interrupted
        await self.checkpoint()

    # -- checkpoints -------------------------------------------------------------------------

    async def _checkpoints(self) -> None:
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._checkpoint_due.wait(), self.checkpoint_interval)
            # Python 3.11's wait_for can swallow a cancel that lands as the event is set: stop()
            # (which sets stopping first) would then wait for this task until the interval.
            if self.stopping:
                return  # stop() writes the last one
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
            # Taken with the view: a write of the state before a healed gap, still running when
            # the gap healed, must neither drop checkpoints for the new state nor remove the
            # new state's answer-bytes file before a checkpoint of that state links it.
            supersede, spilled = self._supersede, self._spilled
            try:
                existing = find_checkpoint(self.checkpoint_dir)
                if existing is not None and existing[0] == position and not supersede:
                    # nothing new since that checkpoint (ours, or one another replica wrote);
                    # after a healed gap one at this position is of the feed before the gap
                    self.checkpoint_position = position
                    self.last_checkpoint = existing[1]
                    return existing[1]
                view = capture(self.store, self.users, position)
                self._supersede, self._spilled = False, []
                self._since_checkpoint = 0
                # Shielded: a cancelled caller (stop() ends the periodic task) leaves the write
                # to finish, and stop() waits for it before its own.
                self._writing = asyncio.ensure_future(
                    asyncio.to_thread(write_checkpoint, view, self.checkpoint_dir)
                )
                path = await asyncio.shield(self._writing)
                del view  # its copies, then what glibc kept of them, back to the system
                if not self.stopping:
                    await asyncio.to_thread(release_free_memory)
                if supersede:
                    await asyncio.to_thread(_drop_above, self.checkpoint_dir, position)
            except Exception as exc:
                self.checkpoint_failures += 1
                if self._spilled is not spilled:  # taken with the view: the next one retries
                    self._supersede = self._supersede or supersede
                    self._spilled = spilled + self._spilled
                if isinstance(exc, OSError):
                    log.error("checkpoint at position %d failed: %s", position, exc)
                else:
                    log.exception("checkpoint at position %d failed", position)
                return None
            self.checkpoint_position = position
            self.last_checkpoint = path
            for directory in spilled:  # linked into the checkpoint now (or written)
                shutil.rmtree(directory, ignore_errors=True)
            return path


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the memory a load freed back to the system. A load builds and drops hundreds of
    megabytes of temporary objects (decoded rooms, parse buffers, row arrays); glibc keeps
    most of what they freed in its arenas, counted in the resident size until reused. O(heap)."""
    if _TRIM is not None:
        _TRIM(0)


def _drop_above(directory: Path, position: int) -> None:
    """Remove the checkpoints past ``position`` (taken from a feed that a gap replaced)."""
    for found in list_checkpoints(directory):
        if found.position > position:
            shutil.rmtree(found.path, ignore_errors=True)


def _manifest_signature(snapshot: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size) of a snapshot's manifest.json: changes whenever it is rewritten."""
    try:
        stat = (snapshot / "manifest.json").stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size
