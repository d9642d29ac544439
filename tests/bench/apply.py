"""Feed events applied per second in process: decode + apply, as the replica does them.

    python -m tests.bench.apply [--rooms N | --snapshot DIR] [--events E] [--batch B] [--json FILE]

The events continue the demo snapshot (``service.demo.Simulator``: calls arriving, answered,
ended, abandoned, snapshot calls wound down, now and then a room removed, a user or permission
changed), serialized as the broker carries them (JSON bytes, a quarter of them wrapped in a
one-element array). Five simulated minutes of them are applied untimed, then the timed ones:
``Replica.handle_batch`` on each run of ``--batch`` messages (1,024 by default, the most the
replica applies in one call; 1 is one event at a time), that is ``events.decode`` of the bytes,
``events.apply_many`` to the store and directory loaded from the snapshot, the position and the
result counters. No I/O.
Each sort order keeps a buffer of recent changes and folds it in (a merge) when it fills up;
the timed stretch is long enough (200,000 events by default) that every busy order merges
several times, and the merges are counted (``merges``: per order, and in all).
``query_times.py`` calls :func:`measure_apply` on the store it has loaded; run alone, this loads
the snapshot first.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from service.core.store import RoomStore
from service.core.users import Directory
from service.demo import Simulator, read_demo_state
from service.feed.replica import Replica
from service.feed.snapshot import load_snapshot
from service.feed.sources import Message
from tests.bench.data import add_data_arguments, ensure_data, log

__all__ = ["feed_messages", "main", "measure_apply"]

#: New calls per second of simulated time: a large call center. A call makes 2 or 3 events over
#: about four minutes (waiting, talking), so the mix settles at about one new room to two updates.
CALLS_PER_SECOND = 10
#: Simulated seconds of events applied, untimed, before the timed ones: the calls open in the
#: timed stretch are then of every age, as in a replica that has been following for a while.
WARMUP_SECONDS = 300


def feed_messages(
    snapshot: Path, count: int, first_position: int
) -> tuple[list[Message], list[Message], Counter[str]]:
    """Feed messages continuing a demo snapshot from position ``first_position`` on: those of
    the warm-up, then ``count`` more, and how many of these there are of each kind (subject and
    clientAction)."""
    _, _, now_ms = read_demo_state(snapshot)
    simulator = Simulator.from_snapshot(snapshot, calls_per_second=CALLS_PER_SECOND)
    simulator.next_events(now_ms)  # starts the clock
    warm_until = now_ms + WARMUP_SECONDS * 1000
    warmup: list[Message] = []
    timed: list[Message] = []
    kinds: Counter[str] = Counter()
    while len(timed) < count:
        now_ms += 1000
        into = warmup if now_ms <= warm_until else timed
        for subject, payload in simulator.next_events(now_ms):
            position = first_position + len(warmup) + len(timed)
            into.append(Message(position, subject, orjson.dumps(payload)))
            if into is timed:
                body = payload[0] if isinstance(payload, list) else payload
                kinds[f"{subject} {body.get('clientAction')}"] += 1
                if len(timed) == count:
                    break
    return warmup, timed, kinds


@contextlib.contextmanager
def counting_merges(store: RoomStore) -> Iterator[Counter[str] | None]:
    """Counts, per sort order (by field), the merges that fold a non-empty buffer in while the
    block runs; None when the store's sort orders have no ``merge`` to count."""
    orders = getattr(store, "orders", None)
    kinds = {type(order) for order in orders.values()} if isinstance(orders, dict) else set()
    if len(kinds) != 1 or not callable(getattr(next(iter(kinds)), "merge", None)):
        yield None
        return
    cls = next(iter(kinds))
    original = cls.merge
    counts: Counter[str] = Counter()

    def merge(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(getattr(self, "pending", ())) or len(getattr(self, "stale", ())):
            counts[str(getattr(self, "name", "?"))] += 1
        return original(self, *args, **kwargs)

    setattr(cls, "merge", merge)  # noqa: B010 - a method, put back below
    try:
        yield counts
    finally:
        setattr(cls, "merge", original)  # noqa: B010


def measure_apply(
    snapshot: Path,
    store: RoomStore,
    users: Directory,
    position: int,
    count: int,
    batch: int = Replica.BATCH,
) -> dict[str, Any]:
    """Events per second of ``Replica.handle_batch`` over ``count`` messages, ``batch`` at a
    time, on ``store`` and ``users`` (loaded from ``snapshot`` at feed ``position``), after the
    warm-up's; the figures as a JSON-ready dict."""
    warmup, messages, kinds = feed_messages(snapshot, count, position + 1)
    # As the replica does once a load is published: the loaded state out of the collector's
    # full passes (each would walk millions of objects).
    gc.collect()
    gc.freeze()
    replica = Replica(None)
    replica.store, replica.users, replica.position = store, users, position
    for i in range(0, len(warmup), batch):
        replica.handle_batch(warmup[i : i + batch])
    replica.events.clear()
    runs = [messages[i : i + batch] for i in range(0, len(messages), batch)]
    with counting_merges(store) as merges:
        started = time.perf_counter()
        cpu = time.process_time()
        for run in runs:
            replica.handle_batch(run)
        cpu = time.process_time() - cpu
        seconds = time.perf_counter() - started
    results: Counter[str] = Counter()
    for (_, result), n in replica.events.items():
        results[result] += n
    return {
        "events": len(messages),
        "batch": batch,
        "cpu_seconds": cpu,
        "warmup_events": len(warmup),
        "rooms": len(store),
        "seconds": seconds,
        "events_per_s": len(messages) / seconds if seconds else 0.0,
        "us_per_event": seconds / len(messages) * 1e6 if messages else 0.0,
        "kinds": dict(kinds.most_common()),
        "results": dict(results.most_common()),
        "merges": None if merges is None else dict(sorted(merges.items())),
    }


def merges_text(figures: dict[str, Any]) -> str:
    """How many merges the timed stretch made, in words."""
    merges = figures.get("merges")
    if merges is None:
        return "merges of the sort orders' buffers: not counted (no SortOrder.merge)"
    total = sum(merges.values())
    busiest = ", ".join(f"{k} {n}" for k, n in sorted(merges.items(), key=lambda x: -x[1])[:5])
    return (
        f"{total:,} merges of the sort orders' buffers in all, over {len(merges)} of the "
        f"orders" + (f" (most: {busiest})" if busiest else "")
    )


def describe(figures: dict[str, Any]) -> str:
    """One line of the figures, as the command prints them."""
    kinds = ", ".join(f"{k} {n:,}" for k, n in figures["kinds"].items())
    results = ", ".join(f"{k} {n:,}" for k, n in figures["results"].items())
    return (
        f"event apply: {figures['events']:,} events on {figures['rooms']:,} rooms in "
        f"{figures['seconds']:.3f} s = {figures['events_per_s']:,.0f} events/s "
        f"({figures['us_per_event']:.1f} us each, {figures['cpu_seconds']:.3f} s CPU; in batches "
        f"of {figures['batch']:,}, after {figures['warmup_events']:,} untimed); "
        f"{kinds}; results: {results}; {merges_text(figures)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.apply", description=__doc__)
    add_data_arguments(parser, rooms=100_000)
    parser.add_argument("--events", type=int, default=200_000, help="events to apply (200000)")
    parser.add_argument(
        "--batch", type=int, default=Replica.BATCH, help="messages applied per call (1024)"
    )
    args = parser.parse_args(argv)
    snapshot = args.snapshot or ensure_data(args.rooms, args.seed)[0]
    store, users = RoomStore(), Directory()
    log(f"loading {snapshot}")
    loaded = load_snapshot(snapshot, store, users)
    figures = measure_apply(snapshot, store, users, loaded.position, args.events, args.batch)
    print(describe(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
