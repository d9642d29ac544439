"""Restart: SIGTERM, exit with a checkpoint written, restart from it, ready, the same answers.

    python -m tests.bench.restart [--rooms N] [--seed S] [--events E] [--json FILE]

On the demo snapshot ``.bench-data/<rooms>-<seed>`` (as ``http.py`` uses it), with a file feed
of ``--events`` room events after it and a fresh checkpoint directory:

1. ``voip-rooms serve`` (a real process, port 0) loads the snapshot, applies the feed, is ready;
   a set of queries (every sort, filters, name fragments, offsets) is answered and kept;
2. SIGTERM: the process must exit (status 0) within its drain + shutdown timeout, having written
   a checkpoint at the feed position it reached;
3. the same command again starts from that checkpoint (not the snapshot), becomes ready, and
   answers every query with the same status, body and ETag.

Prints one JSON object (and writes it to ``--json FILE``): ``shutdown_to_exit_seconds``,
``checkpoint_write_seconds`` (the shutdown checkpoint, from the service's log),
``restart_to_ready_seconds``, ``first_ready_seconds``, and the checkpoint's size.
``run`` is also what the ``make test`` restart test calls, at a few thousand rooms.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from service.core.query import SORTABLE_FIELDS
from service.feed.checkpoint import find_checkpoint
from tests.net import wait_port_file

__all__ = ["Server", "main", "queries", "run"]

ROUTE = "/api/v1/voip/rooms"


def queries() -> list[str]:
    """Query strings covering every sort, filters, name fragments and offsets."""
    out = [""]
    for field in SORTABLE_FIELDS:
        for direction in (1, -1):
            out.append(f'sort={{"{field}":{direction}}}&count=25&offset=7')
    out += [
        "open=true&count=50",
        "open=false&count=50&offset=100",
        "roomName=guest&count=20",
        "roomName=1&count=20&offset=3",
        "roomName=Sales%20Q&count=10",
        'createdAt={"start":"2020-01-01T00:00:00.000Z"}&count=30',
        'closedAt={"end":"2030-01-01T00:00:00.000Z"}&sort={"closedAt":-1}&count=30',
        "direction=inbound&count=40&offset=2000",
        "count=100&offset=5000",
    ]
    return out


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    etag: str | None
    body: bytes


def fetch(port: int, query: str, user: tuple[str, str]) -> Answer:
    url = f"http://127.0.0.1:{port}{ROUTE}" + (f"?{query}" if query else "")
    request = urllib.request.Request(
        url.replace(" ", "%20"), headers={"X-User-Id": user[0], "X-Auth-Token": user[1]}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return Answer(resp.status, resp.headers.get("ETag"), resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers.get("ETag"), exc.read())


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class Server:
    """One ``voip-rooms serve`` process on port 0, its log in a file."""

    def __init__(self, argv: list[str], work: Path, name: str) -> None:
        self.port_file = work / f"{name}.port"
        self.log_path = work / f"{name}.log"
        self.port_file.unlink(missing_ok=True)
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*argv, "--port", "0", "--port-file", str(self.port_file)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VOIP_ROOMS_LOG_LEVEL": "info"},
        )
        self.port = 0

    def wait_ready(self, within: float) -> float:
        """Seconds from the start to /readyz 200."""
        self.port = wait_port_file(self.port_file, self.proc, within)
        deadline = self.started + within
        while True:
            if _get(self.port, "/readyz")[0] == 200:
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready within {within:g} s:\n{self.tail()}")
            time.sleep(0.05)

    def verbose(self) -> str:
        return _get(self.port, "/readyz?verbose")[1].decode()

    def terminate(self, within: float) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds to exit)."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"no exit within {within:g} s of SIGTERM:\n{self.tail()}"
            ) from None
        self._log.close()
        return code, time.monotonic() - sent

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def write_events(path: Path, events: int) -> None:
    """``events`` room events: new rooms, updates of them, and a few removals."""
    lines = []
    for i in range(events):
        room_id = f"restart-{i % max(1, events // 2)}"
        if i % 10 == 9:
            payload: dict[str, Any] = {"clientAction": "removed", "room": {"_id": room_id}}
        else:
            room = {
                "_id": room_id,
                "t": "v",
                "name": f"Restart guest {i}",
                "ts": {"$date": 1_700_000_000_000 + i * 60_000},
                "queue": "sales",
                "direction": "inbound",
                "callDuration": i % 300,
                "open": True,
            }
            payload = {"clientAction": "updated", "room": room}
        lines.append(orjson.dumps({"subject": "watch.rooms", "payload": payload}) + b"\n")
    path.write_bytes(b"".join(lines))


def run(
    snapshot: Path,
    user: tuple[str, str],
    work: Path,
    *,
    events: int = 200,
    drain: float = 0.5,
    shutdown_timeout: float = 20.0,
    ready_within: float = 600.0,
) -> dict[str, Any]:
    """The whole restart (see the module docstring); the figures. AssertionError on a miss."""
    feed = work / "events.jsonl"
    write_events(feed, events)
    checkpoints = work / "checkpoints"
    argv = [
        sys.executable,
        "-m",
        "service",
        "serve",
        "--snapshot",
        str(snapshot),
        "--feed",
        f"file://{feed}",
        "--checkpoint-dir",
        str(checkpoints),
        "--host",
        "127.0.0.1",
        "--drain-seconds",
        str(drain),
        "--shutdown-timeout",
        str(shutdown_timeout),
    ]
    figures: dict[str, Any] = {"events": events}
    first = Server(argv, work, "first")
    try:
        figures["first_ready_seconds"] = round(first.wait_ready(ready_within), 3)
        qs = queries()
        before = [fetch(first.port, q, user) for q in qs]
        assert all(a.status == 200 for a in before), [a.status for a in before]
        assert sum(1 for a in before if b'"total":0,' not in a.body) > len(qs) // 2, "empty"
        code, seconds = first.terminate(drain + shutdown_timeout + 30)
    finally:
        first.kill()
    figures["shutdown_to_exit_seconds"] = round(seconds, 3)
    assert code == 0, f"exit status {code}:\n{first.tail()}"
    assert seconds < drain + shutdown_timeout, f"exited after {seconds:.1f} s"
    written = [e for e in first.logs() if e.get("msg") == "checkpoint written"]
    assert written, f"no checkpoint written:\n{first.tail()}"
    figures["checkpoint_write_seconds"] = written[-1].get("seconds")
    found = find_checkpoint(checkpoints)
    assert found is not None, "no checkpoint in the directory"
    assert found[0] == events, f"checkpoint at position {found[0]}, not {events}"
    figures["checkpoint_bytes"] = sum(p.stat().st_size for p in found[1].iterdir())

    second = Server(argv, work, "second")
    try:
        figures["restart_to_ready_seconds"] = round(second.wait_ready(ready_within), 3)
        verbose = second.verbose()
        assert str(found[1]) in verbose, f"not loaded from the checkpoint:\n{verbose}"
        after = [fetch(second.port, q, user) for q in qs]
        for q, a, b in zip(qs, before, after, strict=True):
            assert (a.status, a.etag) == (b.status, b.etag), q
            assert a.body == b.body, f"a different answer to {q!r}"
        second.terminate(drain + shutdown_timeout + 30)
    finally:
        second.kill()
    figures["queries_compared"] = len(qs)
    return figures


def main(argv: list[str] | None = None) -> None:
    from tests.bench.data import add_data_arguments, ensure_data, log

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, rooms=1_000_000)
    parser.add_argument("--events", type=int, default=1000, help="feed events (1000)")
    parser.add_argument("--shutdown-timeout", type=float, default=20.0, help="seconds (20)")
    args = parser.parse_args(argv)
    if args.snapshot is not None:
        raise SystemExit("--snapshot: this benchmark needs the demo data's logins; use --rooms")
    snapshot, logins = ensure_data(args.rooms, args.seed)
    admin = logins["admin"]
    with tempfile.TemporaryDirectory(prefix="voip-rooms-restart-") as tmp:
        log(f"restart at {args.rooms:,} rooms in {tmp}")
        figures = run(
            snapshot,
            (admin.user_id, admin.token),
            Path(tmp),
            events=args.events,
            shutdown_timeout=args.shutdown_timeout,
        )
    figures["rooms"] = args.rooms
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
