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

#: The issue's figures, as the first column of RESULTS.md's table starts.
FIGURES = (
    "polling mix throughput / ceiling",
    "distinct mix throughput / ceiling",
    "in-process query p99, worst class",
    "snapshot load, in process",
    "resident memory added by the data",
    "event apply, in process",
    "304 revalidation cost / full answer cost",
    "p99 latency at 64 connections, distinct mix",
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
    argv += ["--rounds", "1", "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for line in ("- Date: ", "- Machine: ", "- Command: `python -m tests.bench.http --rooms 2000"):
        assert f"\n{line}" in text
    rows = {row.split("|")[1].strip(): row for row in text.splitlines() if row.startswith("| ")}
    for figure in FIGURES:
        found = [row for label, row in rows.items() if label.startswith(figure)]
        assert found, f"no row for {figure!r}"
        assert re.search(r"\| (PASS|FAIL|SHORT) +\|$", found[0]), found[0]
    classes = [label for label in rows if label.startswith(("roomName", "offset 10000"))]
    assert any(c.startswith("roomName") for c in classes), classes
    assert any(c.startswith("offset 10000") for c in classes), classes
