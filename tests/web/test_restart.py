"""A real `voip-rooms serve` stopped by SIGTERM writes a checkpoint, and restarts from it."""

from __future__ import annotations

from pathlib import Path

from service.demo import write_snapshot
from tests.bench.restart import run


def test_restart_from_the_shutdown_checkpoint_answers_as_before(tmp_path: Path) -> None:
    credentials = write_snapshot(tmp_path / "snapshot", 3000, seed=3)
    admin = credentials.get("admin")
    figures = run(
        tmp_path / "snapshot",
        (admin.user_id, admin.token),
        tmp_path,
        events=150,
        ready_within=120,
    )
    assert figures["queries_compared"] >= 20
    assert figures["checkpoint_write_seconds"] is not None
