"""In-process figures: snapshot load rate, memory per room, query p99 per class, event apply rate.

    python -m tests.bench.query_times [--rooms N | --snapshot DIR] [--runs R] [--events E]
                                      [--json FILE]

On the benchmark's demo snapshot (``.bench-data/<rooms>-<seed>``, as ``http.py`` serves it):

1. Load: ``service.feed.snapshot.load_snapshot`` into an empty RoomStore and Directory, as the
   replica does (gzip read, JSON and Extended JSON decode, index build), then ``gc.freeze()``
   as the replica does after a load. Rooms per second of that call.
2. Memory: resident set size after the load minus before it, per room.
3. Queries: ``RoomStore.page`` per query class, ``--runs`` times each with values drawn from
   the snapshot; wall-clock percentiles, and the thread's CPU time as a check on a shared
   machine. First the target classes of ``mix.py`` (one class per kind and sort, each request
   through the service's ``parse``), then simpler ones (no filter, each filter alone, name
   searches from a common fragment to a word, offset 10,000, every sort).
4. Events: ``tests.bench.apply.measure_apply`` on the loaded store (decode + apply), with how
   many times the sort orders' buffers were merged meanwhile.

``--json FILE`` writes the figures for ``http.py``, which tabulates them in RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from service.core.ejson import date_from_ms
from service.core.query import SORTABLE_FIELDS, DateRange, RoomQuery, parse
from service.core.store import RoomStore
from service.core.users import Directory
from service.feed.snapshot import load_snapshot
from tests.bench.apply import describe, measure_apply
from tests.bench.data import (
    DAY_MS,
    Sample,
    add_data_arguments,
    common_fragment,
    ensure_data,
    log,
    name_fragments,
    sample_rooms,
)
from tests.bench.mix import KINDS, SORTS, QueryMix

__all__ = ["main", "mix_classes", "query_classes", "time_queries"]

#: What each class of mix.py is called in the tables.
MIX_LABELS = {
    "open/queue": "open calls in a queue, createdAt 30-365 d, offset <= 5000",
    "agent": "an agent's calls, 7-120 d, with or without open=false, offset <= 5000",
    "closed/tags": "closed calls, closedAt 1-90 d, 1-3 tags, offset <= 5000",
    "name": "name fragment 3-8 chars, 60-360 d",
    "visitor": "a visitor's calls, 180-720 d",
}
#: The label of every class of mix.py starts so (query_times.py's JSON marks them too).
MIX_PREFIX = "* "


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0  # pragma: no cover


def mix_classes(
    sample: Sample, rng: random.Random, agent_id: str = ""
) -> dict[str, Callable[[], RoomQuery]]:
    """The target classes (``mix.py``): one per kind and sort, through ``parse`` as the
    service reads a request."""
    mix = QueryMix(sample, agent_id or next(iter(sample.agents)), rng)

    def maker(kind: str, sort: tuple[str, int]) -> Callable[[], RoomQuery]:
        def make() -> RoomQuery:
            request = mix.make(kind, sort, rng.randrange(1000))
            return parse([(k, str(v)) for k, v in request.params])

        return make

    out: dict[str, Callable[[], RoomQuery]] = {}
    for kind in KINDS:
        for field, direction in SORTS[kind]:
            way = "asc" if direction > 0 else "desc"
            out[f"{MIX_PREFIX}{MIX_LABELS[kind]}, by {field} {way}"] = maker(
                kind, (field, direction)
            )
    return out


def query_classes(sample: Sample, rng: random.Random) -> dict[str, Callable[[], RoomQuery]]:
    """The simpler query classes, each a maker of queries with values drawn from the snapshot's
    sample."""
    queues, tags = list(sample.queues), list(sample.tags) or ["none"]
    agent_ids, agent_names = list(sample.agents), list(sample.agent_names) or list(sample.agents)
    visitors = list(sample.visitors) or ["none"]
    span = max(DAY_MS, sample.last_ms - sample.first_ms)
    words = name_fragments(sample, rng, 500)
    wide3, wide2 = common_fragment(sample, 3), common_fragment(sample, 2)

    def window(days: int) -> DateRange:
        start = sample.first_ms + rng.randrange(max(1, span - days * DAY_MS))
        return DateRange(date_from_ms(start), date_from_ms(start + days * DAY_MS))

    def since() -> DateRange:
        return DateRange(date_from_ms(sample.first_ms + rng.randrange(span)), None)

    def agent() -> str:
        return rng.choice(agent_ids)

    classes: dict[str, Callable[[], RoomQuery]] = {
        "no filter": lambda: RoomQuery(),
        "agents (id)": lambda: RoomQuery(agents=(agent(),)),
        "agents (username)": lambda: RoomQuery(agents=(rng.choice(agent_names),)),
        "agents x3": lambda: RoomQuery(agents=(agent(), agent(), agent())),
        "open=true": lambda: RoomQuery(open=True),
        "open=false": lambda: RoomQuery(open=False),
        "createdAt 7d": lambda: RoomQuery(created=window(7)),
        "createdAt from": lambda: RoomQuery(created=since()),
        "closedAt 7d": lambda: RoomQuery(closed=window(7)),
        "tags": lambda: RoomQuery(tags=(rng.choice(tags),)),
        "tags x2": lambda: RoomQuery(tags=(rng.choice(tags), rng.choice(tags))),
        "queue": lambda: RoomQuery(queue=rng.choice(queues)),
        "queue open=true": lambda: RoomQuery(queue=rng.choice(queues), open=True),
        "visitorId": lambda: RoomQuery(visitor_id=rng.choice(visitors)),
        "direction": lambda: RoomQuery(direction=rng.choice(("inbound", "outbound"))),
        "roomName word": lambda: RoomQuery(room_name=rng.choice(words)),
        f"roomName {wide3!r} (common)": lambda: RoomQuery(room_name=wide3),
        f"roomName {wide2!r} (2 letters)": lambda: RoomQuery(room_name=wide2),
        "roomName word + createdAt 30d": lambda: RoomQuery(
            room_name=rng.choice(words), created=window(30)
        ),
        "3 filters": lambda: RoomQuery(queue=rng.choice(queues), open=False, created=since()),
        "3 filters b": lambda: RoomQuery(
            agents=(agent(),), direction="inbound", tags=(rng.choice(tags), rng.choice(tags))
        ),
        "offset 10000": lambda: RoomQuery(offset=10_000),
        "offset 10000 queue": lambda: RoomQuery(offset=10_000, queue=rng.choice(queues)),
        "offset 10000 open=false by callDuration": lambda: RoomQuery(
            offset=10_000, open=False, sort=(("callDuration", -1),)
        ),
        f"offset 10000 roomName {wide3!r}": lambda: RoomQuery(offset=10_000, room_name=wide3),
        "2-key sort": lambda: RoomQuery(
            sort=(("queue", 1), ("ts", -1)), offset=rng.randrange(1000)
        ),
    }

    def sorted_by(field: str, direction: int) -> Callable[[], RoomQuery]:
        return lambda: RoomQuery(sort=((field, direction),), offset=rng.randrange(200))

    for field in SORTABLE_FIELDS:
        for direction in (1, -1):
            label = f"sort {field} {'asc' if direction > 0 else 'desc'}"
            classes[label] = sorted_by(field, direction)
    return classes


def _percentile(ordered: Sequence[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def time_queries(
    store: RoomStore, classes: dict[str, Callable[[], RoomQuery]], runs: int
) -> list[dict[str, Any]]:
    """Per class: median, p99 and max wall milliseconds of ``store.page``, p99 CPU
    milliseconds, and the last query's total."""
    out = []
    for label, make in classes.items():
        wall: list[float] = []
        cpu: list[float] = []
        totals: list[int] = []
        for _ in range(runs):
            q = make()
            c0 = time.thread_time()
            t0 = time.perf_counter()
            total, _page = store.page(q)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.thread_time() - c0) * 1000)
            totals.append(total)
        wall.sort()
        cpu.sort()
        out.append(
            {
                "class": label,
                "target": label.startswith(MIX_PREFIX),
                "runs": runs,
                "median_total": int(statistics.median(totals)),
                "median_ms": statistics.median(wall),
                "p99_ms": _percentile(wall, 0.99),
                "max_ms": wall[-1],
                "cpu_p99_ms": _percentile(cpu, 0.99),
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.query_times", description=__doc__)
    add_data_arguments(parser, rooms=1_000_000)
    parser.add_argument("--runs", type=int, default=500, help="queries per class (500)")
    parser.add_argument(
        "--events",
        type=int,
        default=200_000,
        help="feed events to time (200000: the sort orders' buffers merge several times)",
    )
    args = parser.parse_args(argv)
    snapshot = args.snapshot or ensure_data(args.rooms, args.seed)[0]
    events = args.events
    sample = sample_rooms(snapshot, args.rooms)

    gc.collect()
    before = rss_kb()
    store, users = RoomStore(), Directory()
    log(f"loading {snapshot}")
    started = time.perf_counter()
    loaded = load_snapshot(snapshot, store, users)
    load_s = time.perf_counter() - started
    gc.collect()
    gc.freeze()  # as the replica does after a load
    added_kb = rss_kb() - before
    rooms = len(store)
    rate, per_room = rooms / load_s, added_kb * 1024 / max(1, rooms)
    figures: dict[str, Any] = {
        "snapshot": str(snapshot),
        "rooms": rooms,
        "load": {"seconds": load_s, "rooms_per_s": rate, "users": loaded.users},
        "memory": {"added_bytes": added_kb * 1024, "per_room_bytes": per_room},
    }
    print(f"rooms: {rooms:,}  open: {store.open_count():,}  users: {loaded.users:,}")
    print(f"snapshot load: {load_s:.2f} s = {rate:,.0f} rooms/s")
    print(f"resident memory added: {added_kb / 1024:,.0f} MiB = {per_room:,.0f} B/room")

    log(f"timing queries ({args.runs} per class)")
    rng = random.Random(args.seed)
    classes = {**mix_classes(sample, rng), **query_classes(sample, rng)}
    figures["queries"] = time_queries(store, classes, args.runs)
    print("\nwall = elapsed time; cpu = this thread's CPU time (excludes time the OS ran others)")
    head = f"{'query class':<80}{'total':>10}{'median ms':>11}{'p99 ms':>9}{'max ms':>9}"
    print(f"{head}{'cpu p99 ms':>12}")
    for row in figures["queries"]:
        print(
            f"{row['class']:<80}{row['median_total']:>10,}{row['median_ms']:>11.3f}"
            f"{row['p99_ms']:>9.3f}{row['max_ms']:>9.3f}{row['cpu_p99_ms']:>12.3f}"
        )

    log(f"applying {events:,} feed events")
    figures["apply"] = measure_apply(snapshot, store, users, loaded.position, events)
    print()
    print(describe(figures["apply"]))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
