"""Catch-up rate through a real transport: a replica reading EVENTS simple room events.

    .venv/bin/python -m tests.feed.bench_catchup [EVENTS]

Writes the events to a file and to a JetStream stream (a throwaway nats-server), then times a
fresh replica from start to caught up, for each transport.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from service.feed.replica import Replica
from service.feed.tools import publish_file
from tests.factories import write_snapshot
from tests.feed.support import NatsServer, eventually, jsonl, room_event


async def timed(replica: Replica, events: int) -> float:
    started = time.perf_counter()
    task = asyncio.create_task(replica.run())
    await eventually(lambda: replica.ready and replica.position == events, within=600)
    seconds = time.perf_counter() - started
    await replica.stop()
    await task
    return seconds


async def main(events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        snapshot = write_snapshot(root / "snapshot", [], position=0)
        feed = root / "events.jsonl"
        feed.write_bytes(
            jsonl([room_event(f"r{i % 5000}", queue=f"q{i % 7}", msgs=i) for i in range(events)])
        )
        seconds = await timed(Replica(snapshot, feed=f"file://{feed}"), events)
        print(f"file: {events} events caught up in {seconds:.2f}s: {events / seconds:,.0f}/s")
        server = NatsServer(root / "js")
        server.start()
        try:
            started = time.perf_counter()
            await publish_file(server.url(), feed)
            publish = time.perf_counter() - started
            print(f"publish_file: {events} events in {publish:.2f}s: {events / publish:,.0f}/s")
            seconds = await timed(Replica(snapshot, feed=server.url()), events)
            print(f"nats: {events} events caught up in {seconds:.2f}s: {events / seconds:,.0f}/s")
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000))
