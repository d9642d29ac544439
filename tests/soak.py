"""Soak: the service at full request rate while feed events arrive, bounded to 60 s.

    .venv/bin/python -m tests.soak [--seconds 60] [--rooms 5000] [--connections 64]

Starts ``voip-rooms serve`` (pinned to CPU 0) on a snapshot and a ``file://`` feed, drives it with
wrk (pinned to the other CPU; an aiohttp load generator when wrk is absent) while this process
appends room events to the feed and probes /livez, /readyz and /metrics. It checks: no 5xx but
deliberate 503 shedding, resident memory growth under 5% after warm-up, every probe answered
within 1 s, and every event applied. Prints the figures; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.conftest import MANAGER, standard_users
from tests.factories import iso, make_room, write_snapshot
from tests.net import wait_port_file

ROOT = Path(__file__).parent.parent
QUERIES = [
    "?count=25",
    "?count=50&offset=100",
    "?queue=support&open=false",
    '?sort={"callDuration":-1}&count=10',
    "?tags=vip&tags=new",
    "?roomName=guest-1",
    '?createdAt={"start":"2023-11-14T22:00:00Z"}&count=100',
    '?fields={"queue":1,"servedBy.username":1}',
]
WRK_SCRIPT = """
statuses = {}
local threads = {}
local queries = {QUERIES}
local i = 0
function setup(thread) table.insert(threads, thread) end
function request()
  i = i + 1
  return wrk.format("GET", "/api/v1/voip/rooms" .. queries[(i % #queries) + 1],
    {["X-User-Id"] = "USER", ["X-Auth-Token"] = "TOKEN"})
end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local parts = {}
  local all = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do all[s] = (all[s] or 0) + n end
  end
  for s, n in pairs(all) do table.insert(parts, string.format('"%d":%d', s, n)) end
  local e = summary.errors
  io.write(string.format('SOAK {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,'
    .. '"max_us":%d,"socket_errors":%d,"statuses":{%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def room(i: int, rng: random.Random) -> dict[str, Any]:
    return make_room(
        f"room-{i:06d}",
        name=f"guest-{i}",
        ts={"$date": iso(1_700_000_000_000 + i * 1000)},
        queue=rng.choice(["support", "sales", "billing"]),
        tags=rng.sample(["vip", "new", "callback"], rng.randint(0, 2)),
        callDuration=rng.randint(1, 3_600_000),
        msgs=rng.randint(0, 50),
        open=True if rng.random() < 0.1 else None,
    )


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.port_file = workdir / "port"
        self.base = ""  # once the server has written the port it bound
        self.rng = random.Random(1)
        self.feed = workdir / "events.jsonl"
        self.events_written = 0
        self.probe_worst: dict[str, float] = {}
        self.probe_failures: list[str] = []
        self.rss: list[tuple[float, int]] = []
        self.stop = asyncio.Event()

    def start_server(self) -> subprocess.Popen[bytes]:
        rooms = [room(i, self.rng) for i in range(self.args.rooms)]
        snapshot = write_snapshot(self.workdir / "snapshot", rooms, standard_users(), position=0)
        self.feed.write_bytes(b"")
        argv = [sys.executable, "-m", "service", "serve", "--snapshot", str(snapshot)]
        argv += ["--feed", f"file://{self.feed}", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--port-file", str(self.port_file)]
        argv += ["--log-level", "warning", "--drain-seconds", "0"]
        if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            argv = ["taskset", "-c", "0", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOIP_ROOMS_")}
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                async with session.get(self.base + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise SystemExit("the server did not get ready")

    async def write_events(self) -> None:
        """Room events at a steady rate: mostly updates of existing rooms, some new rooms."""
        next_new = self.args.rooms
        with self.feed.open("ab") as out:
            while not self.stop.is_set():
                lines = []
                for _ in range(self.args.events_per_second // 10):
                    if self.rng.random() < 0.05:
                        doc, next_new = room(next_new, self.rng), next_new + 1
                    else:
                        doc = room(self.rng.randrange(self.args.rooms), self.rng)
                    action = (
                        "inserted" if doc["_id"] >= f"room-{self.args.rooms:06d}" else "updated"
                    )
                    event = {"clientAction": action, "room": doc}
                    lines.append(orjson.dumps({"subject": "watch.rooms", "payload": event}))
                if self.rng.random() < 0.05:  # now and then a bad event: skipped and counted
                    lines.append(b'{"subject": "watch.rooms", "payload": {"clientAction": 5}}')
                out.write(b"\n".join(lines) + b"\n")
                out.flush()
                self.events_written += len(lines)
                await asyncio.sleep(0.1)

    async def probe(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            for path in ("/livez", "/readyz", "/metrics"):
                started = time.monotonic()
                try:
                    async with session.get(
                        self.base + path, timeout=aiohttp.ClientTimeout(total=5)
                    ) as resp:
                        await resp.read()
                        if resp.status != 200:
                            self.probe_failures.append(f"{path}: {resp.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.probe_failures.append(f"{path}: {exc!r}")
                took = time.monotonic() - started
                self.probe_worst[path] = max(self.probe_worst.get(path, 0.0), took)
            await asyncio.sleep(0.25)

    async def sample_rss(self, pid: int) -> None:
        started = time.monotonic()
        while not self.stop.is_set():
            self.rss.append((time.monotonic() - started, rss_kib(pid)))
            await asyncio.sleep(1)

    async def load_wrk(self, seconds: float) -> dict[str, Any]:
        script = WRK_SCRIPT.replace("USER", MANAGER[0]).replace("TOKEN", MANAGER[1])
        script = script.replace("{QUERIES}", "{" + ",".join(f"[[{q}]]" for q in QUERIES) + "}")
        path = self.workdir / "soak.lua"
        path.write_text(script)
        argv = ["wrk", "-t", "1", "-c", str(self.args.connections), "-d", f"{int(seconds)}s"]
        argv += ["-s", str(path), self.base + "/"]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        match = re.search(rb"^SOAK (.*)$", out, re.M)
        if match is None:
            raise SystemExit(f"wrk said: {out.decode(errors='replace')}")
        result: dict[str, Any] = orjson.loads(match.group(1))
        result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
        return result

    async def load_aiohttp(self, seconds: float) -> dict[str, Any]:
        statuses: Counter[int] = Counter()
        errors = 0
        latencies: list[float] = []
        deadline = time.monotonic() + seconds
        headers = {"X-User-Id": MANAGER[0], "X-Auth-Token": MANAGER[1]}
        connector = aiohttp.TCPConnector(limit=self.args.connections)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker(n: int) -> None:
                nonlocal errors
                i = n
                while time.monotonic() < deadline:
                    i += 1
                    url = self.base + "/api/v1/voip/rooms" + QUERIES[i % len(QUERIES)]
                    started = time.perf_counter()
                    try:
                        async with session.get(url, headers=headers) as resp:
                            await resp.read()
                            statuses[resp.status] += 1
                    except aiohttp.ClientError:
                        errors += 1
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(worker(n) for n in range(self.args.connections)))
        latencies.sort()
        return {
            "requests": sum(statuses.values()),
            "duration_us": int(seconds * 1e6),
            "p50_us": int(latencies[len(latencies) // 2] * 1e6) if latencies else 0,
            "p99_us": int(latencies[int(len(latencies) * 0.99)] * 1e6) if latencies else 0,
            "max_us": int(latencies[-1] * 1e6) if latencies else 0,
            "socket_errors": errors,
            "statuses": dict(statuses),
        }

    async def feed_position(self, session: aiohttp.ClientSession) -> int:
        async with session.get(self.base + "/metrics") as resp:
            text = await resp.text()
        match = re.search(r"^voip_rooms_feed_position (\S+)$", text, re.M)
        return int(float(match.group(1))) if match else -1

    async def run(self) -> int:
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})  # this process and the load generator: the other core
        server = self.start_server()
        try:
            port = await asyncio.to_thread(wait_port_file, self.port_file, server)
            self.base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                await self.wait_ready(session)
                load_seconds = max(10.0, self.args.seconds - 10)
                tasks = [
                    asyncio.create_task(self.write_events()),
                    asyncio.create_task(self.probe(session)),
                    asyncio.create_task(self.sample_rss(server.pid)),
                ]
                tool = "wrk" if shutil.which("wrk") else "aiohttp"
                load = self.load_wrk if tool == "wrk" else self.load_aiohttp
                result = await load(load_seconds)
                self.stop.set()
                await asyncio.gather(*tasks)
                deadline = time.monotonic() + 5
                position = await self.feed_position(session)
                while position < self.events_written and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    position = await self.feed_position(session)
                return self.report(tool, load_seconds, result, position)
        finally:
            server.terminate()
            server.wait(15)

    def report(self, tool: str, seconds: float, result: dict[str, Any], position: int) -> int:
        warm = self.args.warmup
        after = [kib for t, kib in self.rss if t >= warm]
        baseline, final = (after[0], after[-1]) if after else (0, 0)
        peak = max(after, default=0)
        growth = (final - baseline) / baseline * 100 if baseline else 0.0
        statuses: dict[int, int] = result["statuses"]
        server_errors = {s: n for s, n in statuses.items() if s >= 500 and s != 503}
        rate = result["requests"] / (result["duration_us"] / 1e6)
        print(f"soak: {tool}, {self.args.connections} connections, {seconds:.0f} s of load")
        print(f"  requests        {result['requests']} ({rate:,.0f}/s)")
        print(f"  statuses        {dict(sorted(statuses.items()))}")
        print(f"  socket errors   {result['socket_errors']}")
        print(
            f"  latency         p50 {result['p50_us'] / 1000:.2f} ms, "
            f"p99 {result['p99_us'] / 1000:.2f} ms, max {result['max_us'] / 1000:.2f} ms"
        )
        print(f"  feed events     {self.events_written} written, position {position} applied")
        print(
            f"  RSS             {baseline / 1024:.1f} MiB after {warm:.0f} s warm-up, "
            f"{final / 1024:.1f} MiB at the end (peak {peak / 1024:.1f}), growth {growth:+.2f}%"
        )
        worst = ", ".join(f"{p} {s * 1000:.0f} ms" for p, s in sorted(self.probe_worst.items()))
        print(f"  slowest probes  {worst}")
        failures = []
        if server_errors:
            failures.append(f"5xx other than 503: {server_errors}")
        if growth >= 5:
            failures.append(f"RSS grew {growth:.2f}% after warm-up")
        if any(s > 1.0 for s in self.probe_worst.values()) or self.probe_failures:
            failures.append(f"probes: {self.probe_failures[:5]} worst {self.probe_worst}")
        if position < self.events_written:
            failures.append(f"feed behind: {position} < {self.events_written}")
        if result["socket_errors"]:
            failures.append(f"{result['socket_errors']} socket errors")
        for failure in failures:
            print("FAIL", failure)
        print("soak: OK" if not failures else "soak: FAILED")
        return 1 if failures else 0


def guard_cost(rounds: int = 7, calls: int = 100_000) -> None:
    """Print the in-process cost of the API guards per request: the guarded handler against the
    bare one, on a real aiohttp request object, best of ``rounds`` (robust to a busy machine)."""
    from aiohttp import web
    from aiohttp.streams import EMPTY_PAYLOAD
    from aiohttp.test_utils import make_mocked_request

    from service.settings import Settings
    from service.web.guards import Guard

    ok = web.Response(text="ok")

    async def bare(request: web.Request) -> web.StreamResponse:
        return ok

    guarded = Guard(Settings()).wrap(bare)
    request = make_mocked_request("GET", "/api/v1/voip/rooms", payload=EMPTY_PAYLOAD)

    async def timed(handler: Any) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await handler(request)
        return (time.perf_counter() - started) / calls

    async def measure() -> tuple[float, float]:
        best_bare = best_guarded = float("inf")
        for _ in range(rounds):
            best_bare = min(best_bare, await timed(bare))
            best_guarded = min(best_guarded, await timed(guarded))
        return best_bare, best_guarded

    best_bare, best_guarded = asyncio.run(measure())
    print(
        f"guard cost: bare handler {best_bare * 1e9:.0f} ns, guarded {best_guarded * 1e9:.0f} ns, "
        f"added {(best_guarded - best_bare) * 1e9:.0f} ns per API request"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60, help="whole run, at most (60)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds before RSS counts")
    parser.add_argument("--rooms", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--events-per-second", type=int, default=200)
    parser.add_argument(
        "--guard-cost", action="store_true", help="only measure the API guards' cost per request"
    )
    args = parser.parse_args()
    if args.guard_cost:
        guard_cost()
        return 0
    with tempfile.TemporaryDirectory(prefix="voip-soak-") as tmp:
        return asyncio.run(Soak(args, Path(tmp)).run())


if __name__ == "__main__":
    sys.exit(main())
