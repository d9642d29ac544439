"""In-process RoomStore benchmark: bulk load, memory, and per query class latency percentiles.

Run: python -m tests.bench.query_times --rooms 1000000
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from service.core.ejson import Date, date_from_ms
from service.core.query import SORTABLE_FIELDS, DateRange, RoomQuery
from service.core.rooms import RoomStore

START_MS = 1_625_000_000_000  # 2021-06-29
SPAN_MS = 2 * 365 * 86_400_000
QUEUES = [f"queue-{i:02d}" for i in range(20)]
AGENTS = [(f"agent{i:03d}id{i * 7919 % 1000:03d}xx", f"agent.{i:03d}") for i in range(300)]
TAGS = ["vip", "sales", "support", "billing", "callback", "spam", "escalated", "refund",
        "complaint", "new", "returning", "priority", "survey", "voicemail", "transfer"]  # fmt: skip
VISITORS = 100_000


def _rid(rng: random.Random) -> str:
    return "".join(rng.choices("23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz", k=17))


def synthetic_rooms(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """Realistic decoded voip rooms (as ``ejson.decode`` gives them)."""
    rng = random.Random(seed)
    for i in range(n):
        ts_ms = START_MS + int(SPAN_MS * i / max(n, 1)) + rng.randrange(60_000)
        visitor = rng.randrange(VISITORS)
        agent_id, agent_name = rng.choice(AGENTS)
        is_open = rng.random() < 0.1
        wait = rng.randrange(1, 120_000)
        started = ts_ms + wait
        duration = rng.randrange(5_000, 1_800_000)
        room: dict[str, Any] = {
            "_id": _rid(rng),
            "t": "v",
            "name": f"guest-{visitor:06d}-{ts_ms // 1000}.{rng.randrange(10_000):04d}",
            "fname": f"Guest {visitor:06d}",
            "ts": date_from_ms(ts_ms),
            "msgs": rng.randrange(0, 30),
            "usersCount": 2,
            "lm": date_from_ms(started + 1000),
            "queue": rng.choice(QUEUES),
            "direction": "inbound" if rng.random() < 0.8 else "outbound",
            "v": {
                "_id": f"visitor-{visitor:06d}",
                "username": f"guest-{visitor:06d}",
                "token": f"tok{visitor:010d}",
                "status": "online",
                "phone": [{"phoneNumber": f"+1555{visitor:07d}"}],
            },
            "servedBy": {"_id": agent_id, "username": agent_name, "ts": date_from_ms(started)},
            "callStarted": date_from_ms(started),
            "callWaitingTime": wait,
            "tags": rng.sample(TAGS, rng.choice([0, 1, 1, 2, 3])),
            "_updatedAt": date_from_ms(started + (0 if is_open else duration)),
        }
        if is_open:
            room["open"] = True
        else:
            room["closedAt"] = date_from_ms(started + duration)
            room["closedBy"] = {"_id": agent_id, "username": agent_name}
            room["closer"] = "user"
            room["callDuration"] = duration
            room["callTotalHoldTime"] = rng.choice([0, 0, 0, rng.randrange(1000, 60_000)])
            room["callEndedBy"] = agent_id
        yield room


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0  # pragma: no cover


def day(offset_days: float) -> Date:
    return date_from_ms(START_MS + int(offset_days * 86_400_000))


def query_classes(rng: random.Random, n: int) -> dict[str, Callable[[], RoomQuery]]:
    def agent() -> str:
        return rng.choice(AGENTS)[rng.randrange(2)]

    def window() -> DateRange:
        start = rng.uniform(0, 700)
        return DateRange(day(start), day(start + 7))

    def name_part() -> str:
        visitor = rng.randrange(VISITORS)
        return rng.choice([f"{visitor:06d}", f"guest-{visitor:06d}", f"GUEST-{visitor:05d}"])

    classes: dict[str, Callable[[], RoomQuery]] = {
        "no filter": lambda: RoomQuery(),
        "agents": lambda: RoomQuery(agents=(agent(),)),
        "agents x3": lambda: RoomQuery(agents=(agent(), agent(), agent())),
        "open=true": lambda: RoomQuery(open=True),
        "open=false": lambda: RoomQuery(open=False),
        "createdAt 7d": lambda: RoomQuery(created=window()),
        "createdAt from": lambda: RoomQuery(created=DateRange(day(rng.uniform(0, 700)), None)),
        "closedAt 7d": lambda: RoomQuery(closed=window()),
        "tags": lambda: RoomQuery(tags=(rng.choice(TAGS),)),
        "queue": lambda: RoomQuery(queue=rng.choice(QUEUES)),
        "visitorId": lambda: RoomQuery(visitor_id=f"visitor-{rng.randrange(VISITORS):06d}"),
        "direction": lambda: RoomQuery(direction=rng.choice(["inbound", "outbound"])),
        "roomName": lambda: RoomQuery(room_name=name_part()),
        "3 filters": lambda: RoomQuery(
            queue=rng.choice(QUEUES), open=False, created=DateRange(day(rng.uniform(0, 600)), None)
        ),
        "3 filters b": lambda: RoomQuery(
            agents=(agent(),), direction="inbound", tags=(rng.choice(TAGS), rng.choice(TAGS))
        ),
        "offset 10000": lambda: RoomQuery(offset=10_000),
        "offset 10000 queue": lambda: RoomQuery(offset=10_000, queue=rng.choice(QUEUES)),
        "2-key sort": lambda: RoomQuery(
            sort=(("queue", 1), ("ts", -1)), offset=rng.randrange(1000)
        ),
    }

    def sorted_by(field: str, direction: int) -> Callable[[], RoomQuery]:
        return lambda: RoomQuery(sort=((field, direction),), offset=rng.randrange(200))

    for field in SORTABLE_FIELDS:
        for direction in (1, -1):
            classes[f"sort {field} {'asc' if direction > 0 else 'desc'}"] = sorted_by(
                field, direction
            )
    return classes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=20_000, help="upserts to time")
    args = parser.parse_args(argv)

    rooms = list(synthetic_rooms(args.rooms, args.seed))
    gc.collect()
    gc.freeze()
    before = rss_kb()
    store = RoomStore()
    started = time.perf_counter()
    store.bulk_load(rooms)
    load_s = time.perf_counter() - started
    gc.collect()
    gc.freeze()  # as the service should after a load: a full GC pass over 10^7 objects is a pause
    added = rss_kb() - before
    print(f"rooms: {len(store):,}  open: {store.open_count():,}")
    print(f"bulk load: {load_s:.2f} s = {len(store) / load_s:,.0f} rooms/s")
    per_room = added * 1024 / max(len(store), 1)
    print(f"resident memory added: {added / 1024:,.0f} MiB = {per_room:,.0f} B/room")

    rng = random.Random(args.seed + 1)
    updates = [dict(rng.choice(rooms)) for _ in range(args.events)]
    for i, room in enumerate(updates):
        room["_updatedAt"] = date_from_ms(START_MS + SPAN_MS + i)
        room["msgs"] = room["msgs"] + 1
        if "open" in room and i % 2:
            del room["open"]
            room["closedAt"] = room["_updatedAt"]
    started = time.perf_counter()
    for room in updates:
        store.upsert(room)
    up_s = time.perf_counter() - started
    each_us = up_s / len(updates) * 1e6
    print(f"upsert (update of 2-4 fields): {len(updates) / up_s:,.0f} /s, {each_us:.1f} us each")
    del rooms, updates
    gc.collect()

    print("\nwall = elapsed time; cpu = this thread's CPU time (excludes time the OS ran others)")
    head = f"{'query class':<28}{'total':>10}{'median ms':>11}{'p99 ms':>9}{'max ms':>9}"
    print(f"{head}{'cpu p99 ms':>12}")
    for label, make in query_classes(rng, len(store)).items():
        times = []
        cpu = []
        total = 0
        for _ in range(args.runs):
            q = make()
            c0 = time.thread_time()
            t0 = time.perf_counter()
            total, _page = store.page(q)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.thread_time() - c0) * 1000)
        times.sort()
        cpu.sort()
        at = min(len(times) - 1, int(len(times) * 0.99))
        print(
            f"{label:<28}{total:>10,}{statistics.median(times):>11.3f}{times[at]:>9.3f}"
            f"{times[-1]:>9.3f}{cpu[at]:>12.3f}"
        )


if __name__ == "__main__":
    main()
