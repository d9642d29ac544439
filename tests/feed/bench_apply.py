"""Events applied per second in-process: decode + apply through Replica.handle, no I/O.

    .venv/bin/python -m tests.feed.bench_apply [ROOMS] [EVENTS]

Builds a demo snapshot (service.demo), loads it, generates Rocket.Chat events with
service.demo.Simulator, serializes them as the broker would, then times Replica.handle.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson

from service.demo import Simulator, write_snapshot
from service.feed.replica import Replica
from service.feed.sources import Message


def main(rooms: int, events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / "snapshot"
        write_snapshot(snapshot, rooms, seed=1)
        replica = Replica(snapshot)
        asyncio.run(replica.load())
        assert replica.loaded is not None, replica.error
        simulator = Simulator.from_snapshot(snapshot, calls_per_second=2000)
        now = int(time.time() * 1000)
        simulator.next_events(now)
        messages: list[Message] = []
        while len(messages) < events:
            now += 1000
            for subject, payload in simulator.next_events(now):
                messages.append(Message(len(messages) + 1, subject, orjson.dumps(payload)))
        messages = messages[:events]
        started = time.perf_counter()
        for message in messages:
            replica.handle(message)
        seconds = time.perf_counter() - started
        print(
            f"{len(messages)} events on {len(replica.store)} rooms in {seconds:.3f}s: "
            f"{len(messages) / seconds:,.0f} events/s, {seconds / len(messages) * 1e6:.1f} µs/event"
        )
        print(dict(replica.events))


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 50_000,
    )
