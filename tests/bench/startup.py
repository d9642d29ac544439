"""The startup and shutdown figures of ``http.py`` alone, without the load runs.

    python -m tests.bench.startup [--rooms N] [--seed S] [--json FILE]

As ``http.py`` measures them (its functions): the service started from the demo snapshot with
an empty checkpoint directory and an empty file feed, on every core: seconds to ``/readyz`` 200
and the memory then (``VmRSS``, with ``RssAnon`` and ``RssFile``: mapped answer bytes count in
the second once touched); the memory again once the checkpoint written after the load is done,
and after 5,000 feed events and the polling queries; SIGTERM and the shutdown checkpoint
(seconds to "checkpoint written", the writing, the bytes written rather than linked); then a
service with only the checkpoint directory: seconds to ready, its memory, the same answers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import http
from tests.bench.data import DATA_DIR, add_data_arguments, ensure_data, log, sample_rooms


def memory(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of a process, in MiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) >> 10
    return out


def _written(log_path: Path) -> list[dict[str, Any]]:
    keys = ("position", "seconds", "bytes", "linked_bytes")
    return [
        {k: r.get(k) for k in keys}
        for r in http.log_records(log_path)
        if r.get("msg") == "checkpoint written"
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, rooms=1_000_000)
    args = parser.parse_args(argv)
    args.ready_timeout = 600.0
    snapshot, logins = ensure_data(args.rooms, args.seed)
    queries = http.polling_queries(sample_rooms(snapshot, args.rooms), logins)
    results = http.Results()
    log_dir = DATA_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = DATA_DIR / f"checkpoints-{args.rooms}-{args.seed}"
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True)
    out: dict[str, Any] = {"rooms": args.rooms}
    with tempfile.TemporaryDirectory(prefix="voip-startup-") as tmp:
        events = Path(tmp) / "events.jsonl"
        events.touch()
        extra = ["--feed", f"file://{events}", "--checkpoint-dir", str(checkpoints)]
        extra += ["--checkpoint-interval", "86400", "--log-level", "info"]
        real = http.start_service("service", snapshot, log_dir, extra_args=extra, cpu=None)
        try:
            port = real.port()
            out["ready_s"] = round(http.wait_ready(real, port, args.ready_timeout), 2)
            out["memory_ready"] = memory(real.pid)
            deadline = time.monotonic() + 300
            while not _written(real.log_path) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3)  # the memory the checkpoint's copies took, given back
            out["memory_after_first_checkpoint"] = memory(real.pid)
            http.feed_before_shutdown(real, results, snapshot, events)
            answers = [http.fetch(port, q, logins) for q in queries]
            out["memory_after_events_and_queries"] = memory(real.pid)
            http.shutdown(real, results)
        finally:
            real.stop()
        out["checkpoints_written"] = _written(real.log_path)
        http.restart(args, results, checkpoints, log_dir, queries, answers, logins)
    startup = results.startup
    for key in ("shutdown_s", "write_s", "exit_s", "restart_s", "restart_differ"):
        value = startup.get(key)
        out[key] = round(value, 3) if isinstance(value, float) else value
    out["restart_rss_mib"] = int(startup.get("restart_rss", 0)) >> 20
    for key in ("checkpoint_error", "restart_error"):
        if key in startup:
            out[key] = startup[key]
    found = sorted(p for p in checkpoints.iterdir() if p.name.startswith("checkpoint-"))
    out["checkpoint_bytes"] = [sum(f.stat().st_size for f in p.iterdir()) for p in found]
    shutil.rmtree(checkpoints, ignore_errors=True)
    text = json.dumps(out, indent=2)
    log("done")
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
