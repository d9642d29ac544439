"""How far a snapshot or checkpoint load has come, and its periodic report to the log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["LoadProgress", "report_progress"]

log = logging.getLogger(__name__)


class LoadProgress:
    """Counters a load updates from its worker thread and the event loop reads.

    Each update is a plain attribute write, atomic under the GIL, so there is no lock: a reader
    may see the room count of one moment and the byte count of the next, which a progress
    report can live with. ``bytes_read`` counts the bytes taken from the files (for gzip files,
    compressed bytes), against ``bytes_total``, the size of every file the load reads.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.started = clock()
        #: voip rooms read so far
        self.rooms = 0
        self.bytes_read = 0
        self.bytes_total = 0
        #: what the load does now: reading rooms, building indexes, reading users, ...
        self.phase = "starting"
        #: set by the load once it completed; ``ended`` once it stopped, completed or not
        self.done = False
        self.ended = False

    def update(self, rooms: int) -> None:
        """Called by the loading thread every few thousand rooms, and once at the end."""
        self.rooms = rooms

    def percent(self) -> float:
        """Percent of the files' bytes read (100 once done; 0 before the sizes are known)."""
        if self.done:
            return 100.0
        if self.bytes_total <= 0:
            return 0.0
        return min(100.0, 100.0 * self.bytes_read / self.bytes_total)

    def rate(self) -> float:
        """Rooms per second since the load started, on the injected clock."""
        elapsed = self.clock() - self.started
        return self.rooms / elapsed if elapsed > 0 else 0.0

    def describe(self) -> str:
        """One line for the log and ``/readyz?verbose``."""
        return (
            f"loading {self.path}: {self.rooms:,} rooms, {self.rate():,.0f} rooms/s, "
            f"{self.percent():.1f}% of bytes read ({self.phase})"
        )

    def fields(self) -> dict[str, object]:
        """The same as structured log fields."""
        return {
            "snapshot": str(self.path),
            "rooms": self.rooms,
            "rooms_per_second": round(self.rate(), 1),
            "percent_bytes": round(self.percent(), 1),
            "phase": self.phase,
        }


async def report_progress(progress: LoadProgress, interval: float) -> None:
    """Log ``progress`` every ``interval`` seconds until cancelled (the load's end)."""
    while True:
        await asyncio.sleep(interval)
        log.info("snapshot %s", progress.describe(), extra=progress.fields())
