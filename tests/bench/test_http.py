"""The benchmark end to end at a tiny size: the report holds every figure with its verdict."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The target figures, in the order of RESULTS.md's main table (its first column starts so).
FIGURES = (
    "ready from the snapshot",
    "ready from a checkpoint",
    "resident memory once ready",
    "shutdown checkpoint written",
    "events applied in process",
    "in-process p99, every query class",
    "distinct mix through HTTP, one core",
)
#: Informative figures, in the table under it.
INFORMATIVE = (
    "polling mix throughput / ceiling",
    "304 revalidation cost / full answer cost",
    "p99 latency at 64 connections, distinct mix",
)
#: The query classes of the distinct mix, as the per-class table names them.
MIX_CLASSES = (
    "* open calls in a queue, createdAt 30-365 d",
    "* an agent's calls, 7-120 d",
    "* closed calls, closedAt 1-90 d, 1-3 tags",
    "* name fragment 3-8 chars, 60-360 d",
    "* a visitor's calls",
)


def _runnable() -> str | None:
    """Why the harness cannot run here, or None."""
    if len(os.sched_getaffinity(0)) < 2:
        return "needs 2 cores"
    if shutil.which("taskset") is None:
        return "needs taskset"
    if shutil.which("wrk") is None and (shutil.which("apt-get") is None or os.geteuid() != 0):
        return "needs wrk (or apt-get as root to install it)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_runnable() is not None, reason=_runnable() or "")
def test_a_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    argv = [sys.executable, "-m", "tests.bench.http", "--rooms", "2000", "--duration", "1"]
    argv += ["--rounds", "1", "--events", "5000", "--query-runs", "50", "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for line in ("- Date: ", "- Machine: ", "- Command: `python -m tests.bench.http --rooms 2000"):
        assert f"\n{line}" in text
    lines = text.splitlines()
    rows = {row.split("|")[1].strip(): row for row in lines if row.startswith("| ")}
    first = next(i for i, line in enumerate(lines) if line.startswith("| figure "))
    end = lines.index("", first)
    main = [row.split("|")[1].strip() for row in lines[first + 2 : end]]
    assert len(main) == len(FIGURES), main
    for label, figure in zip(main, FIGURES, strict=True):
        assert label.startswith(figure), main
    for figure in FIGURES:
        found = [row for label, row in rows.items() if label.startswith(figure)]
        assert found, f"no row for {figure!r}"
        # Every one measured (n/a: a part failed to run), even at 2,000 rooms.
        assert re.search(r"\| (PASS|FAIL) +\|$", found[0]), found[0]
    for figure in INFORMATIVE:
        found = [row for label, row in rows.items() if label.startswith(figure)]
        assert found, f"no row for {figure!r}"
        assert re.search(r"\| (PASS|FAIL|SHORT) +\|$", found[0]), found[0]
    assert "polling answers as before" in rows["ready from a checkpoint (s)"]
    assert re.search(r"\d+ merges", rows["events applied in process (events/s)"])
    for kind in MIX_CLASSES:
        assert any(label.startswith(kind) for label in rows), kind
    classes = [label for label in rows if label.startswith(("roomName", "offset 10000"))]
    assert any(c.startswith("roomName") for c in classes), classes
    assert any(c.startswith("offset 10000") for c in classes), classes
