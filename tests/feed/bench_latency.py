"""End-to-end feed latency: JetStream publish to the room being visible through the HTTP API.

    .venv/bin/python -m tests.feed.bench_latency [--events 1000] [--rooms 20000]

Writes a demo snapshot, starts a throwaway nats-server (JetStream) and the real service as a
subprocess reading it, then for each event publishes one ``watch.rooms`` ``updated`` event for a
new room and times from just before the publish until an authenticated
``GET /api/v1/voip/rooms?roomName=...`` (tight polling, one keep-alive connection) returns it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from service.demo import write_snapshot
from service.feed.tools import ensure_stream
from tests.feed.support import NatsServer
from tests.net import wait_port_file

STREAM = "ROCKETCHAT"
READY_WITHIN = 120.0  # seconds for the service to load the snapshot and report ready
EVENT_WITHIN = 10.0  # seconds one event may take to become visible before the run fails


def latency_room(i: int, tag: str, now_ms: int) -> dict[str, Any]:
    """A full open VoIP room as Rocket.Chat's broker sends it (dates as ``{"$date": ms}``)."""
    date = {"$date": now_ms}
    return {
        "_id": f"lat-{i}",
        "msgs": 0,
        "usersCount": 1,
        "lm": date,
        "name": f"latency-{i}-{tag}",
        "fname": f"Latency {i}",
        "t": "v",
        "ts": date,
        "v": {
            "_id": f"lat-visitor-{i}",
            "username": f"guest-lat-{i}",
            "token": f"lat-token-{i}",
            "status": "online",
        },
        "open": True,
        "waitingResponse": True,
        "source": {"type": "api"},
        "queuedAt": date,
        "callUniqueId": f"lat-call-{i}-{tag}",
        "uids": [],
        "autoTranslateLanguage": "",
        "livechatData": "",
        "direction": "inbound",
        "queue": "latency",
        "_updatedAt": date,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


async def wait_ready(
    session: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]
) -> float:
    started = time.perf_counter()
    deadline = time.monotonic() + READY_WITHIN
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode} before ready")
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"service not ready within {READY_WITHIN:.0f}s")
        await asyncio.sleep(0.05)


async def measure(
    js: Any,
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    events: int,
) -> tuple[list[float], list[float], int]:
    """(publish-to-visible ms, publish-ack ms, GETs made) over ``events`` events."""
    latencies: list[float] = []
    acks: list[float] = []
    gets = 0
    url = f"{base}/api/v1/voip/rooms"
    for i in range(events):
        tag = secrets.token_hex(6)
        name = f"latency-{i}-{tag}"
        payload = orjson.dumps(
            {"clientAction": "updated", "room": latency_room(i, tag, int(time.time() * 1000))}
        )
        started = time.perf_counter()
        await js.publish("watch.rooms", payload, stream=STREAM)
        acks.append((time.perf_counter() - started) * 1000)
        deadline = time.monotonic() + EVENT_WITHIN
        while True:
            gets += 1
            async with session.get(url, params={"roomName": name}, headers=headers) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET {url}?roomName={name}: {response.status} {body!r}")
            if orjson.loads(body)["total"] == 1:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"event {i} not visible within {EVENT_WITHIN:.0f}s")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, acks, gets


def start(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def main(events: int, rooms: int) -> None:
    import nats

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        credentials = write_snapshot(root / "snapshot", rooms)
        print(f"snapshot: {rooms} rooms written in {time.perf_counter() - started:.2f}s")
        manager = credentials.get("manager")
        headers = {"X-User-Id": manager.user_id, "X-Auth-Token": manager.token}

        server = NatsServer(root / "js")
        server.start()
        service: subprocess.Popen[bytes] | None = None
        nc: Any = None
        try:
            nc = await nats.connect(server.server, name="bench-latency")
            js = nc.jetstream()
            await ensure_stream(js, STREAM)

            port_file = root / "port"
            command = [
                *(sys.executable, "-m", "service", "serve"),
                *("--snapshot", str(root / "snapshot")),
                *("--feed", server.url(STREAM)),
                *("--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)),
                *("--log-level", "warning"),
            ]
            service = start(command)
            base = f"http://127.0.0.1:{await asyncio.to_thread(wait_port_file, port_file, service)}"
            connector = aiohttp.TCPConnector(limit=1)
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                ready = await wait_ready(session, base, service)
                print(f"service: ready in {ready:.2f}s")
                latencies, acks, gets = await measure(js, session, base, headers, events)
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 10)
            if service is not None:
                stop(service)
            server.stop()

    ordered = sorted(latencies)
    print(
        f"command: {shlex.join([sys.executable, '-m', 'tests.feed.bench_latency', *sys.argv[1:]])}"
    )
    print(
        f"machine: nproc={os.cpu_count()} {platform.platform()} python {platform.python_version()}"
    )
    print(
        f"publish -> visible via GET /api/v1/voip/rooms, {len(ordered)} events, {rooms} rooms: "
        f"median {statistics.median(ordered):.2f} ms, p90 {percentile(ordered, 90):.2f} ms, "
        f"p99 {percentile(ordered, 99):.2f} ms, max {ordered[-1]:.2f} ms "
        f"(min {ordered[0]:.2f} ms, mean {statistics.fmean(ordered):.2f} ms)"
    )
    print(
        f"of which JetStream publish+ack: median {statistics.median(acks):.2f} ms; "
        f"GETs per event: {gets / len(ordered):.2f} (resolution ~ one GET round trip)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000, help="events to time (default 1000)")
    parser.add_argument("--rooms", type=int, default=20_000, help="snapshot rooms (default 20000)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rooms))
