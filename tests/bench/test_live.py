"""The live-answers benchmark end to end at a tiny size: its section holds every figure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.live import SECTION, replace_section

ROOT = Path(__file__).resolve().parents[2]

#: The figures of the "Live answers" table, in order (its first column starts so).
FIGURES = (
    "polling throughput, 50 events/s arriving / none",
    "same per server CPU-second",
    "polling throughput, 200 events/s arriving / none",
    "same per server CPU-second",
    "revalidation of an unchanged answer, 200 events/s arriving: 304s",
    "publish to SSE receipt, 20 streams, 100 events/s, p99 (ms)",
    "memory per open stream (KiB)",
    "200 idle streams held, RSS added (MiB)",
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


def test_the_section_replaces_its_older_self_and_keeps_the_rest() -> None:
    report = "# benchmark\n\n| main |\n\n## Other figures (informative)\n\n| x |\n"
    once = replace_section(report, f"{SECTION}\n\nfirst\n")
    assert once.index(SECTION) < once.index("## Other figures")
    assert once.startswith("# benchmark\n\n| main |\n\n")
    twice = replace_section(once, f"{SECTION}\n\nsecond\n")
    assert "first" not in twice
    assert twice.count(SECTION) == 1
    assert twice.endswith("## Other figures (informative)\n\n| x |\n")
    assert replace_section("", f"{SECTION}\n\nonly\n") == f"{SECTION}\n\nonly\n"


@pytest.mark.slow
@pytest.mark.skipif(_runnable() is not None, reason=_runnable() or "")
def test_a_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# voip-rooms benchmark\n\n## Other figures\n\nkept\n")
    argv = [sys.executable, "-m", "tests.bench.live", "--rooms", "2000", "--duration", "1"]
    argv += ["--rounds", "1", "--warmup", "0", "--streams", "20", "--stream-seconds", "2"]
    argv += ["--idle-streams", "200", "--hold", "1", "--open-timeout", "60", "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# voip-rooms benchmark\n")
    assert text.endswith("kept\n")
    assert text.index(SECTION) < text.index("## Other figures")
    lines = text[text.index(SECTION) :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| figure "))
    end = lines.index("", first)
    rows = [row.split("|") for row in lines[first + 2 : end]]
    assert [r[1].strip() for r in rows] == list(FIGURES), [r[1] for r in rows]
    for row in rows:
        label, verdict = row[1].strip(), row[5].strip()
        if label.startswith(("memory per open stream", "same per server")):
            assert re.fullmatch(r"[\d,.]+", row[3].strip()), row
        else:
            assert verdict in ("PASS", "FAIL"), row  # measured, even at 2,000 rooms
    assert "| 1 | 200 events/s |" in text  # the table of runs
    assert "Revalidation: " in text
    assert "Streams: 20 of 20 opened" in text
    assert "Idle streams: 200 of 200 opened" in text
