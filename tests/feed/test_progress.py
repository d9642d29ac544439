"""Load progress: rooms, rate and percent of bytes, in the log, /readyz?verbose and /metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from service.core.store import RoomStore
from service.core.users import Directory
from service.feed import replica as replica_module
from service.feed.progress import LoadProgress
from service.feed.replica import Replica
from service.feed.snapshot import load_snapshot
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import AiohttpClient
from tests.factories import make_room, write_snapshot
from tests.feed.support import eventually

ROOMS = 12_000
#: The load reports after each run of about WORK_BYTES of lines (rooms here are about 400 bytes):
#: the gate holds it at the first report of at least this many rooms.
AT = 4096


class Clock:
    """An injected monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gate(LoadProgress):
    """Holds the loading thread once it has reported ``at`` rooms, until ``release`` is set."""

    def __init__(self, path: Path, clock: Callable[[], float], at: int = AT) -> None:
        super().__init__(path, clock)
        self.at = at
        self.reached = threading.Event()
        self.release = threading.Event()

    def update(self, rooms: int) -> None:
        super().update(rooms)
        if rooms >= self.at and not self.release.is_set():
            self.reached.set()
            self.release.wait(60)


def big_snapshot(directory: Path, gz: bool) -> Path:
    rooms = [make_room(f"room-{i:06d}", queue=f"q{i % 7}", msgs=i) for i in range(ROOMS)]
    return write_snapshot(directory, rooms, position=3, gz=gz)


@pytest.mark.parametrize("gz", [False, True])
def test_progress_counts_rooms_and_bytes_during_the_load(tmp_path: Path, gz: bool) -> None:
    snap = big_snapshot(tmp_path / "snapshot", gz)
    clock = Clock()
    gate = Gate(snap, clock)
    thread = threading.Thread(
        target=load_snapshot, args=(snap, RoomStore(), Directory(90), None, gate)
    )
    thread.start()
    try:
        assert gate.reached.wait(60)
        rooms = gate.rooms
        assert AT <= rooms < ROOMS
        assert gate.phase == "reading rooms"
        percent = gate.percent()  # of compressed bytes for gzip: the files' size on disk
        assert 0 < percent < 100
        assert 0 < gate.bytes_read < gate.bytes_total
        clock.now += 2.0
        assert gate.rate() == rooms / 2
        assert gate.describe() == (
            f"loading {snap}: {rooms:,} rooms, {rooms / 2:,.0f} rooms/s, "
            f"{percent:.1f}% of bytes read (reading rooms)"
        )
    finally:
        gate.release.set()
        thread.join(60)
    assert gate.done
    assert gate.rooms == ROOMS
    assert gate.percent() == 100.0
    assert gate.bytes_read == gate.bytes_total
    assert gate.bytes_total == sum(p.stat().st_size for p in snap.iterdir() if "jsonl" in p.name)


async def test_progress_in_the_log_readyz_and_metrics(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="service.feed.progress")
    snap = big_snapshot(tmp_path / "snapshot", gz=True)
    clock = Clock()
    gates: list[Gate] = []

    def gated(path: Path, clock: Callable[[], float]) -> Gate:
        gates.append(Gate(path, clock))
        return gates[-1]

    monkeypatch.setattr(replica_module, "LoadProgress", gated)
    replica = Replica(snap, progress_interval=0.01, clock=clock)
    client = await aiohttp_client(create_app(Settings(snapshot=snap), replica=replica))
    await eventually(lambda: bool(gates) and gates[0].reached.is_set(), what="load under way")
    gate = gates[0]
    try:
        clock.now += 4.0
        rooms = gate.rooms
        expected = f"{rooms:,} rooms, {rooms / 4:,.0f} rooms/s"
        await eventually(
            lambda: any(expected in r.getMessage() for r in caplog.records), what="a progress line"
        )
        record = next(r for r in caplog.records if expected in r.getMessage())
        assert record.rooms == rooms  # type: ignore[attr-defined]
        assert record.rooms_per_second == rooms / 4  # type: ignore[attr-defined]
        assert 0 < record.percent_bytes < 100  # type: ignore[attr-defined]
        assert "% of bytes read" in record.getMessage()

        ready = await client.get("/readyz?verbose")
        assert ready.status == 503
        snapshot_check = (await ready.json())["checks"][0]
        assert not snapshot_check["ok"]
        assert snapshot_check["detail"].startswith(f"loading {snap}: {expected}")
        assert "% of bytes read (reading rooms)" in snapshot_check["detail"]
        metrics = await (await client.get("/metrics")).text()
        assert f"voip_rooms_snapshot_load_rooms {float(rooms)}" in metrics
    finally:
        gate.release.set()
    await eventually(lambda: replica.ready, what="ready")
    metrics = await (await client.get("/metrics")).text()
    assert f"voip_rooms_snapshot_load_rooms {float(ROOMS)}" in metrics


def test_default_intervals() -> None:
    replica = Replica(None)
    assert replica.progress_interval == 5.0  # a log line at least every 5 s
    assert replica.gap_check_interval == 10.0  # the snapshot directory checked every 10 s
