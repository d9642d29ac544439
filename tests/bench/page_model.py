"""Fit RoomStore's cost model for a page: gathering the matches versus walking the sort order.

    python -m tests.bench.page_model [--rooms N] [--queries Q]

Loads the benchmark's demo snapshot (``.bench-data/<rooms>-<seed>``), then times
``RoomStore.page`` for random filtered queries (queue, open, closed, an agent, a tag, queue and
closed; sorted by ts either way, callDuration, name or queue; offsets from 0 to 10,000) once
forced to gather and once forced to walk, in CPU time (best of 5). It prints least-squares fits

    gather µs = a + b * matches + c * (offset + count)
    walk µs   = d + e * blocks visited (estimated as RoomStore._gathers estimates it)

and the total time each policy would have taken: the model in service/core/rooms.py, the fit,
the best choice per query, always gathering and always walking. The constants in rooms.py
(_GATHER_US, _WALK_US) come from this script at 1,000,000 rooms.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import numpy as np

from service.core import rooms
from service.core.query import RoomQuery
from service.core.rooms import RoomStore
from service.core.users import Directory
from service.feed.snapshot import load_snapshot
from tests.bench.data import add_data_arguments, ensure_data, log, sample_rooms


def _queries(sample: Any, rng: random.Random, n: int) -> list[RoomQuery]:
    queues, tags, agents = list(sample.queues), list(sample.tags), list(sample.agents)

    def pick_filter() -> dict[str, Any]:
        kind = rng.randrange(6)
        if kind == 0:
            return {"queue": rng.choice(queues)}
        if kind in (1, 2):
            return {"open": kind == 1}
        if kind == 3:
            return {"agents": (rng.choice(agents),)}
        if kind == 4:
            return {"tags": (rng.choice(tags),)}
        return {"queue": rng.choice(queues), "open": False}

    sorts = [("ts", -1), ("ts", 1), ("callDuration", -1), ("name", 1), ("queue", 1)]
    return [
        RoomQuery(
            offset=rng.choice((0, 0, 50, 500, 2000, 10_000)),
            sort=(rng.choice(sorts),),
            **pick_filter(),
        )
        for _ in range(n)
    ]


def _cpu_us(store: RoomStore, q: RoomQuery) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        store.page(q)
        best = min(best, time.process_time() - started)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, 1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    directory, _ = ensure_data(args.rooms, args.seed)
    store = RoomStore()
    log(f"loading {directory}")
    load_snapshot(directory, store, Directory())
    rng = random.Random(args.seed)
    rows: list[tuple[float, float, float, float, float]] = []
    for q in _queries(sample_rooms(directory, args.rooms), rng, args.queries):
        matches, _ = store._matches(q)
        total = len(store) if matches is None else len(matches)
        if total == 0 or q.offset >= total:
            continue
        reach = q.offset + min(q.count or total, total - q.offset)
        nb = len(store._index[q.sort[0][0]].blocks)
        visits = min(nb, reach / max(total / nb, 1e-9) + 1)
        times = {}
        for gather in (True, False):
            store._gather = gather
            times[gather] = _cpu_us(store, q)
        rows.append((total, reach, visits, times[True], times[False]))
    store._gather = None
    data = np.array(rows)
    total, reach, visits, gathered, walked = data.T
    a, b, c = np.linalg.lstsq(np.vstack([np.ones_like(total), total, reach]).T, gathered)[0]
    d, e = np.linalg.lstsq(np.vstack([np.ones_like(visits), visits]).T, walked)[0]
    print(f"{len(rows)} queries on {len(store):,} rooms (CPU time, best of 5 each)")
    print(f"gather µs = {a:.1f} + {b:.4f} * matches + {c:.4f} * (offset + count)")
    print(f"walk µs   = {d:.1f} + {e:.3f} * blocks visited")
    model = (rooms._GATHER_US[0] + rooms._GATHER_US[1] * total + rooms._GATHER_US[2] * reach) < (
        rooms._WALK_US[0] + rooms._WALK_US[1] * visits
    )
    fitted = (a + b * total + c * reach) < (d + e * visits)
    for name, pick in (
        ("rooms.py model", np.where(model, gathered, walked)),
        ("this fit", np.where(fitted, gathered, walked)),
        ("best per query", np.minimum(gathered, walked)),
        ("always gather", gathered),
        ("always walk", walked),
    ):
        print(f"  {name:<16} {pick.sum() / 1000:8.1f} ms in all")


if __name__ == "__main__":
    main()
