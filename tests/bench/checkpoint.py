"""In-process checkpoint figures: capture, write and load of the store's own format.

    python -m tests.bench.checkpoint [--rooms N] [--seed S] [--dir DIR] [--json FILE]

Loads the demo snapshot ``.bench-data/<rooms>-<seed>`` once (as ``query_times`` does), then:
capture (on the calling thread: what the event loop pays), write (what the worker thread
does, fsync included), load (to a store ready to answer, merged and indexed), and checks a few
pages of the loaded store against the original.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from service.core.store import RoomStore
from service.core.users import Directory
from service.feed.checkpoint import capture, load_checkpoint, write_checkpoint
from service.feed.snapshot import load_snapshot
from tests.bench.data import add_data_arguments, ensure_data, log, sample_rooms
from tests.bench.query_times import query_classes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, rooms=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="checkpoint directory (temp)")
    args = parser.parse_args(argv)
    snapshot, _ = ensure_data(args.rooms, args.seed)
    log(f"loading {snapshot}")
    store, users = RoomStore(), Directory()
    started = time.perf_counter()
    load_snapshot(snapshot, store, users)
    gc.collect()
    gc.freeze()
    figures: dict[str, float] = {"snapshot_load_seconds": time.perf_counter() - started}
    directory = args.dir or Path(tempfile.mkdtemp(prefix="voip-rooms-checkpoint-bench-"))
    try:
        started = time.perf_counter()
        view = capture(store, users, 1)
        figures["capture_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        path = write_checkpoint(view, directory)
        figures["write_seconds"] = time.perf_counter() - started
        figures["checkpoint_bytes"] = sum(p.stat().st_size for p in path.iterdir())
        gc.collect()
        started = time.perf_counter()
        loaded, _, result = load_checkpoint(path)
        figures["load_seconds"] = time.perf_counter() - started
        assert result.rooms == len(store)
        rng = random.Random(1)
        makers = query_classes(sample_rooms(snapshot, args.rooms), rng)
        for make in makers.values():
            for _ in range(20):
                q = make()
                assert loaded.page(q) == store.page(q), q
        figures["rooms"] = len(store)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    for key, value in figures.items():
        log(f"{key}: {value:,.3f}" if isinstance(value, float) else f"{key}: {value:,}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
