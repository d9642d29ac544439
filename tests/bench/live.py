"""Live answers under a feed: polling while events arrive, 304s for unchanged answers, the
publish-to-SSE latency of 1,000 streams, and 10,000 idle streams held by one process.

    python -m tests.bench.live [--rooms N] [--duration S] [--rounds R] [--streams N]
        [--idle-streams N] [--out FILE]

A real nats-server (JetStream, loopback) is the service's feed. The service runs pinned to core
0; this process (the publisher and the clients), wrk and nats-server run on core 1. Each part
starts a service of its own from the same snapshot, on a new nats-server, so that no part
measures memory or caches another part left behind:

1. ``polling``: the polling mix of ``http.py`` (20 dashboard queries, 20% revalidated) under wrk
   with no events, with events at 50/s and with events at 200/s (the demo simulator's calls,
   continuing the snapshot, published at a steady rate while wrk runs); rounds alternate the
   order; the median over rounds of each rate's req/s over the no-event run of its round.
   Then ``reval``: one client per polling query revalidates its answer with the ETag of the
   last 200 it got, over and over, while events arrive at 200/s; a 200 whose body equals the
   previous one is an unchanged answer that was not answered 304.
2. ``streams``: 1,000 streams (``Accept: text/event-stream``), each watching one visitor's
   calls, then 100 events/s, each changing one call of one visitor, stamped (the call's
   ``callWaitingTime`` holds the event's number) so that the client knows which publish an
   SSE event answers: the time from just before the publish to the receipt of the ``rooms``
   event holding it, on this process's clock; and the service's RSS added per stream.
3. ``idle``: 10,000 streams over the polling queries and visitors' calls, no events: every one
   must get its first answer and stay open through a keep-alive period; the RSS added.

The section "Live answers" goes into ``--out`` (``tests/bench/RESULTS.md``), replacing an older
one; ``make bench`` runs this after ``http.py``. Every load step is bounded in time and count;
every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import math
import os
import random
import re
import resource
import shlex
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.bench.apply import feed_messages
from tests.bench.data import (
    DATA_DIR,
    BenchError,
    Login,
    Sample,
    ensure_data,
    log,
    sample_rooms,
)
from tests.bench.http import (
    CLIENT_CPU,
    CONNECTIONS,
    HOST,
    ROUTE,
    SERVER_CPU,
    Process,
    Query,
    Row,
    Run,
    ensure_wrk,
    fetch,
    pin,
    polling_queries,
    python_cmd,
    raise_interrupt,
    run_wrk,
    start_service,
    table,
    wait_ready,
)
from tests.feed.support import NatsServer

__all__ = ["main", "replace_section"]

HERE = Path(__file__).resolve().parent
STREAM = "ROCKETCHAT"
SECTION = "## Live answers"
#: The targets (a 2-core machine, 1,000,000 rooms).
TARGETS = {
    "ratio_50": 0.9,  # polling req/s with 50 events/s arriving over none, at least
    "ratio_200": 0.75,  # ... with 200 events/s, at least
    "reval_304": 1.0,  # share of 304s among revalidations of unchanged answers, at least
    "stream_p99_ms": 50.0,  # publish to SSE receipt, p99, at most
    "idle_mib": 300.0,  # RSS added by the idle streams, at most
}
POLLING_RATES = (50, 200)  # events per second arriving during the polling runs
REVAL_RATE = 200
STREAM_RATE = 100
OPEN_AT_ONCE = 100  # streams being opened at a time (the listen backlog is 128)
FIRST_EVENT_S = 30.0  # longest wait for a stream's first event once connected
LATE_S = 5.0  # after the last publish, how long the streams may take to deliver the rest
REVAL_MAX = 500_000  # revalidations at most in one reval run


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


# --- the SSE client ---------------------------------------------------------------------------

_EVENT_END = re.compile(rb"\r?\n\r?\n")


@dataclass(slots=True)
class SseEvent:
    event: str
    id: str | None
    data: bytes
    received: float  # time.perf_counter() when its last bytes arrived


class SseStream(asyncio.Protocol):
    """One ``Accept: text/event-stream`` request on its own connection, parsed as it arrives:
    the response head, chunked transfer coding (or a plain body), then SSE events. Every event
    goes to ``on_event``; comments (keep-alives) are counted."""

    def __init__(
        self, index: int, request: bytes, on_event: Callable[[SseStream, SseEvent], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        self.index = index
        self.request = request
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.events = 0
        self.comments = 0
        self.first: asyncio.Future[SseEvent] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._head = True
        self._chunked = False
        self._chunk_left = 0
        self._ended = False
        self._raw = bytearray()
        self._text = bytearray()
        self._scanned = 0  # _text before this offset holds no event end

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._raw += data
        if self._head:
            end = self._raw.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self._raw[:end]).decode("latin-1").split("\r\n")
            del self._raw[: end + 4]
            self._head = False
            parts = lines[0].split(" ", 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
            if self.status != 200 or "text/event-stream" not in self.headers.get(
                "content-type", ""
            ):
                self._fail(f"HTTP {self.status} {self.headers.get('content-type', '')}")
                return
        self._decode()
        self._parse(now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("closed by the server" if exc is None else f"connection lost: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)

    # parsing

    def _decode(self) -> None:
        raw = self._raw
        if not self._chunked:
            self._text += raw
            raw.clear()
            return
        while not self._ended:
            if self._chunk_left == 0:
                end = raw.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(raw[:end])
                del raw[: end + 2]
                if not line:
                    continue  # the CRLF that ends a chunk's data
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    self._ended = True
                    return
                self._chunk_left = size
            take = min(self._chunk_left, len(raw))
            if take == 0:
                return
            self._text += raw[:take]
            del raw[:take]
            self._chunk_left -= take

    def _parse(self, now: float) -> None:
        while True:
            found = _EVENT_END.search(self._text, self._scanned)
            if found is None:
                self._scanned = max(0, len(self._text) - 3)
                return
            block = bytes(self._text[: found.start()])
            del self._text[: found.end()]
            self._scanned = 0
            kind, ident, data = "message", None, []
            for raw_line in block.split(b"\n"):
                line = raw_line.rstrip(b"\r")
                if line.startswith(b":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if name == b"event":
                    kind = value.decode()
                elif name == b"id":
                    ident = value.decode()
                elif name == b"data":
                    data.append(value)
            if not data:
                continue
            event = SseEvent(kind, ident, b"\n".join(data), now)
            self.events += 1
            if not self.first.done():
                self.first.set_result(event)
            self.on_event(self, event)

    def _fail(self, why: str) -> None:
        if not self.first.done():
            self.first.set_exception(BenchError(f"stream {self.index}: {why}"))
            self.first.exception()  # retrieved: a stream that never opens is counted, not raised
        if self.transport is not None and self.status != 200:
            self.transport.close()

    @property
    def open(self) -> bool:
        return not self.closed.done()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def sse_request(port: int, query: Query, login: Login) -> bytes:
    return (
        f"GET {query.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n"
        f"X-User-Id: {login.user_id}\r\nX-Auth-Token: {login.token}\r\n\r\n"
    ).encode()


async def open_streams(
    port: int,
    queries: Sequence[Query],
    logins: dict[str, Login],
    on_event: Callable[[SseStream, SseEvent], None],
    within: float,
) -> tuple[list[SseStream], Counter[str], float]:
    """One stream per query, OPEN_AT_ONCE being opened at a time, each until its first event;
    the streams that got it, the failures by cause, and the seconds it all took."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    failures: Counter[str] = Counter()
    opened: list[SseStream] = []
    started = time.monotonic()
    deadline = started + within

    async def one(i: int, query: Query) -> None:
        async with gate:
            left = deadline - time.monotonic()
            if left <= 0:
                failures["not tried in time"] += 1
                return
            request = sse_request(port, query, logins[query.user])
            made: list[SseStream] = []

            def protocol() -> SseStream:
                made.append(SseStream(i, request, on_event))
                return made[0]

            try:
                async with asyncio.timeout(min(left, FIRST_EVENT_S)):
                    await loop.create_connection(protocol, HOST, port)
                    await made[0].first
            except TimeoutError:
                failures["no first event in time"] += 1
            except OSError as exc:
                failures[f"connect: {exc.strerror or exc}"] += 1
            except BenchError as exc:
                failures[str(exc).split(": ", 1)[1]] += 1
            else:
                opened.append(made[0])
                return
            for stream in made:
                stream.close()

    await asyncio.gather(*(one(i, q) for i, q in enumerate(queries)))
    opened.sort(key=lambda s: s.index)
    return opened, failures, time.monotonic() - started


async def close_streams(streams: Sequence[SseStream]) -> None:
    for stream in streams:
        stream.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await asyncio.gather(*(s.closed for s in streams))


# --- the feed -----------------------------------------------------------------------------------


class Publisher:
    """A NATS connection publishing into the feed's JetStream stream, in order."""

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self.nc: Any = None
        self.js: Any = None
        self.sent = 0

    async def __aenter__(self) -> Publisher:
        import nats

        from service.feed.tools import ensure_stream

        self.nc = await nats.connect(self.server.server, name="voip-rooms-bench")
        self.js = self.nc.jetstream()
        await ensure_stream(self.js, STREAM)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()

    async def publish(self, subject: str, payload: bytes) -> None:
        await self.nc.publish(subject, payload)
        self.sent += 1

    async def confirm(self, within: float = 30.0) -> int:
        """The stream's last sequence once it holds every message sent."""
        await self.nc.flush()
        deadline = time.monotonic() + within
        while True:
            last = int((await self.js.stream_info(STREAM)).state.last_seq)
            if last >= self.sent or time.monotonic() > deadline:
                if last < self.sent:
                    raise BenchError(f"the stream stored {last} of {self.sent} messages")
                return last

            await asyncio.sleep(0.05)

    async def paced(
        self,
        messages: Iterator[tuple[str, bytes]],
        rate: float,
        seconds: float,
        before: Callable[[int], None] | None = None,
    ) -> int:
        """Publish at ``rate`` a second, evenly, for at most ``seconds`` (and at most as many as
        ``messages`` holds); ``before(k)`` runs just before the k-th publish. The count sent."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        count = int(rate * seconds)
        sent = 0
        for k in range(count):
            due = started + k / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            item = next(messages, None)
            if item is None:
                break
            if before is not None:
                before(k)
            await self.publish(*item)
            sent += 1
        return sent


def start_nats(work: Path, name: str) -> NatsServer:
    """A new nats-server with JetStream on loopback, on this process's core (the clients')."""
    server = NatsServer(work / f"nats-{name}")
    server.start()
    return server


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on /metrics (NaN when it does not answer or lacks it)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
            text = r.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return math.nan
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            with contextlib.suppress(ValueError):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
    return total if seen else math.nan


async def wait_position(port: int, position: int, proc: Process, within: float) -> None:
    """Until the service has applied the feed up to ``position``."""
    deadline = time.monotonic() + within
    while metric(port, "voip_rooms_feed_position") < position:
        if time.monotonic() > deadline or not proc.alive():
            raise BenchError(
                f"the service did not apply the feed up to {position} within {within:g} s:\n"
                + proc.tail()
            )
        await asyncio.sleep(0.1)


# --- the parts ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    polling: list[dict[str, Any]] = field(default_factory=list)  # one per wrk run
    reval: dict[str, Any] = field(default_factory=dict)
    streams: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)  # service name: its summary


@dataclass(slots=True)
class Context:
    args: argparse.Namespace
    snapshot: Path
    logins: dict[str, Login]
    sample: Sample
    work: Path
    log_dir: Path
    stack: contextlib.AsyncExitStack
    profile: set[str] = field(default_factory=set)  # the parts whose service runs under cProfile
    profiles: dict[str, Path] = field(default_factory=dict)  # service name: its cProfile dump


async def start_live_service(
    ctx: Context, name: str, nats: NatsServer | None, max_streams: int
) -> tuple[Process, int]:
    """The service from the snapshot, reading ``nats`` (if any), loaded on both cores, then
    pinned to core 0; under cProfile when ``--profile`` names its part."""
    extra = ["--max-streams", str(max_streams), *ctx.args.serve_args]
    if nats is not None:
        extra += ["--feed", nats.url(STREAM)]
    profile = ctx.work / f"{name}.pstats" if name.removeprefix("live-") in ctx.profile else None
    if profile is None:
        proc = start_service(name, ctx.snapshot, ctx.log_dir, extra_args=extra, cpu="0,1")
    else:
        port_file = ctx.log_dir / f"{name}.port"
        port_file.unlink(missing_ok=True)
        argv = ["taskset", "-c", "0,1", *python_cmd(), "-m", "cProfile", "-o"]
        argv += [str(profile), "-m", "service", "serve", "--snapshot", str(ctx.snapshot)]
        argv += ["--host", HOST, "--port", "0", "--port-file", str(port_file)]
        argv += ["--log-level", "warning", "--drain-seconds", "0", "--shutdown-timeout", "2"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOIP_ROOMS_")}
        proc = Process(name, [*argv, *extra], ctx.log_dir, env, port_file)
        ctx.profiles[name] = profile
    ctx.stack.callback(proc.stop)
    port = await asyncio.to_thread(proc.port)
    await asyncio.to_thread(wait_ready, proc, port, ctx.args.ready_timeout)
    pin(proc, SERVER_CPU)
    log(f"{name}: pid {proc.pid} on :{port}, ready, pinned to core {SERVER_CPU}")
    return proc, port


def profile_summary(path: Path, top: int = 25) -> str:
    """The functions with the most own time and the most cumulative time in a cProfile dump
    (written when the service exits), as Markdown."""
    import io
    import pstats

    if not path.exists():
        return "cProfile wrote nothing (the service did not exit cleanly)."
    out = []
    for key, what in (("tottime", "own time"), ("cumulative", "cumulative time")):
        text = io.StringIO()
        stats = pstats.Stats(str(path), stream=text)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        body = text.getvalue()
        start = body.find("   ncalls")
        out += [f"By {what}:", "", "```", body[start:].rstrip(), "```", ""]
    return "\n".join(out)


def write_dashboards_script(
    path: Path, queries: list[Query], logins: dict[str, Login], revalidate: float
) -> None:
    """``dashboards.lua`` with the logins and queries (a JSON string is a Lua string literal
    for ASCII)."""
    index = {label: i + 1 for i, label in enumerate(logins)}
    data = ["USERS = {"]
    data += [
        f'  {{["X-User-Id"] = {json.dumps(x.user_id)}, ["X-Auth-Token"] = {json.dumps(x.token)}}},'
        for x in logins.values()
    ]
    data += ["}", "QUERIES = {"]
    data += [f"  {{{index[q.user]}, {json.dumps(q.path)}}}," for q in queries]
    data += ["}", f"REVALIDATE = {revalidate!r}"]
    template = (HERE / "dashboards.lua").read_text()
    path.write_text(template.replace("--@@DATA@@", "\n".join(data)))


def _simulated(ctx: Context, count: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """The demo simulator's events continuing the snapshot: the warm-up's (five simulated
    minutes), then ``count`` more."""
    warmup, timed, _ = feed_messages(ctx.snapshot, count, 1)
    as_pairs = [(m.subject, bytes(m.payload)) for m in warmup]
    return as_pairs, [(m.subject, bytes(m.payload)) for m in timed]


async def part_polling(ctx: Context, figures: Figures, wrk: str) -> None:
    """Polling throughput with events arriving at each of POLLING_RATES against none, then the
    revalidation of unchanged answers under REVAL_RATE."""
    args = ctx.args
    events_needed = int((sum(POLLING_RATES) * args.rounds + REVAL_RATE) * (args.duration + 3))
    warmup, timed = await asyncio.to_thread(_simulated, ctx, events_needed + 1000)
    nats = start_nats(ctx.work, "polling")
    ctx.stack.callback(nats.stop)
    async with Publisher(nats) as publisher:
        proc, port = await start_live_service(ctx, "live-polling", nats, 1000)
        for subject, payload in warmup:
            await publisher.publish(subject, payload)
        await wait_position(port, await publisher.confirm(), proc, 120)
        log(f"the service applied {len(warmup):,} warm-up events (five simulated minutes)")

        queries = polling_queries(ctx.sample, ctx.logins)
        answers = [await asyncio.to_thread(fetch, port, q, ctx.logins) for q in queries]
        bad = [(q, a) for q, a in zip(queries, answers, strict=True) if a.status != 200]
        if bad or any(a.etag is None for a in answers):
            raise BenchError(f"a polling query fails or has no ETag: {bad[:1]}")
        script = ctx.work / "dashboards.lua"
        write_dashboards_script(script, queries, ctx.logins, 0.2)
        stream = iter(timed)

        async def run(rate: int, seconds: float, label: str) -> Run:
            publishing: asyncio.Task[int] | None = None
            if rate:
                publishing = asyncio.create_task(publisher.paced(stream, rate, seconds + 60))
                await asyncio.sleep(0.5)  # the feed is flowing before wrk starts
            position = metric(port, "voip_rooms_feed_position")
            sent = publisher.sent
            started = time.monotonic()
            seed = str(random.randrange(1 << 30))
            result = await asyncio.to_thread(
                functools.partial(
                    run_wrk,
                    wrk,
                    script,
                    port,
                    seconds,
                    proc,
                    label,
                    "polling",
                    [seed],
                    threads=CONNECTIONS,
                )
            )
            elapsed = time.monotonic() - started
            sent = publisher.sent - sent
            applied = metric(port, "voip_rooms_feed_position") - position
            if publishing is not None:
                publishing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publishing
            if rate:
                log(f"  events: {sent / elapsed:.0f}/s sent, {applied / elapsed:.0f}/s applied")
            figures.polling.append(
                {
                    "rate": rate,
                    "label": label,
                    "rps": result.rps,
                    "p99_ms": result.p99_ms,
                    "server_cpu": result.server_cpu,
                    "client_cpu": result.client_cpu,
                    "other_cpu": result.other_cpu,
                    "statuses": result.statuses,
                    "errors": sum(result.errors.values()),
                    "sent_per_s": sent / elapsed,
                    "applied_per_s": applied / elapsed,
                }
            )
            return result

        if args.warmup > 0:
            log(f"warm-up ({args.warmup:g} s, not counted)")
            await run(0, args.warmup, "warm-up")
            figures.polling.clear()
        labels = {0: "no events", **{r: f"{r} events/s" for r in POLLING_RATES}}
        order = [0, *POLLING_RATES]
        for r in range(args.rounds):
            log(f"polling round {r + 1}/{args.rounds}")
            turn = order[r % len(order) :] + order[: r % len(order)]
            for rate in turn:
                await run(rate, args.duration, labels[rate])
                figures.polling[-1]["round"] = r

        log(f"revalidation of unchanged answers with {REVAL_RATE} events/s arriving")
        figures.reval = await revalidate(ctx, port, publisher, stream, queries, answers)
        figures.reval["applied"] = metric(port, "voip_rooms_feed_position")
        figures.facts["polling_rss"] = f"{proc.rss_bytes() / 2**20:,.0f} MiB"
        proc.stop()
    nats.stop()


async def revalidate(
    ctx: Context,
    port: int,
    publisher: Publisher,
    stream: Iterator[tuple[str, bytes]],
    queries: list[Query],
    answers: list[Any],
) -> dict[str, Any]:
    """One client per polling query, each revalidating with the ETag of the last 200 it got,
    while events arrive at REVAL_RATE: 304s, 200s with the same body as before (misses), 200s
    with another body (the answer changed)."""
    import aiohttp

    seconds = ctx.args.duration
    counts: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    last: dict[int, tuple[str, bytes]] = {i: (str(a.etag), a.body) for i, a in enumerate(answers)}
    publishing = asyncio.create_task(publisher.paced(stream, REVAL_RATE, seconds + 60))
    await asyncio.sleep(0.5)
    applied0 = metric(port, "voip_rooms_feed_position")
    sent0 = publisher.sent
    started = time.monotonic()
    deadline = started + seconds

    async def client(session: aiohttp.ClientSession, i: int, query: Query) -> None:
        login = ctx.logins[query.user]
        url = f"http://{HOST}:{port}{query.path}"
        kind = by_kind.setdefault(query.kind, Counter())
        while time.monotonic() < deadline and counts["revalidations"] < REVAL_MAX:
            etag, body = last[i]
            headers = {
                "X-User-Id": login.user_id,
                "X-Auth-Token": login.token,
                "If-None-Match": etag,
            }
            async with session.get(url, headers=headers) as response:
                got = await response.read()
                status, new_etag = response.status, response.headers.get("ETag")
            counts["revalidations"] += 1
            if status == 304:
                counts["unchanged 304"] += 1
                kind["unchanged 304"] += 1
            elif status == 200 and got == body:
                counts["unchanged 200"] += 1
                kind["unchanged 200"] += 1
                if new_etag == etag:
                    counts["200 with the same ETag"] += 1
                last[i] = (str(new_etag), got)
            elif status == 200:
                counts["changed 200"] += 1
                kind["changed 200"] += 1
                if new_etag == etag:
                    counts["changed body, same ETag"] += 1
                last[i] = (str(new_etag), got)
            else:
                counts[f"status {status}"] += 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session, i, q) for i, q in enumerate(queries)))
    elapsed = time.monotonic() - started
    sent = publisher.sent - sent0
    applied = metric(port, "voip_rooms_feed_position") - applied0
    publishing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publishing
    unchanged = counts["unchanged 304"] + counts["unchanged 200"]
    share = counts["unchanged 304"] / unchanged if unchanged else math.nan
    log(
        f"  {counts['revalidations']:,} revalidations in {elapsed:.1f} s: {dict(counts)}; "
        f"304 share of unchanged {share:.2%}; events {sent / elapsed:.0f}/s sent, "
        f"{applied / elapsed:.0f}/s applied"
    )
    return {
        "counts": dict(counts),
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "share": share,
        "seconds": elapsed,
        "clients": len(queries),
        "sent_per_s": sent / elapsed,
        "applied_per_s": applied / elapsed,
    }


def watched_visitors(sample: Sample, count: int) -> list[str]:
    """``count`` visitor ids: the sample's, most calls first, then made-up ones (no calls yet)."""
    real = [v for v, _ in sample.visitors.most_common(count)]
    return real + [f"bench-visitor-{i}" for i in range(count - len(real))]


def visitor_query(visitor: str) -> Query:
    import urllib.parse

    return Query("manager", ROUTE + "?" + urllib.parse.urlencode({"visitorId": visitor}), "visitor")


def stamped_room(i: int, visitor: str, queue: str, seq: int, ts_ms: int) -> dict[str, Any]:
    """Stream ``i``'s call: a new inbound call of its visitor, its ``callWaitingTime`` the
    number of the event that carries it."""
    date = {"$date": ts_ms}
    return {
        "_id": f"bench-live-{i}",
        "msgs": 0,
        "usersCount": 1,
        "lm": {"$date": ts_ms + seq},
        "name": f"bench-live-{i}",
        "fname": f"Bench live {i}",
        "t": "v",
        "ts": date,
        "v": {"_id": visitor, "username": f"guest-live-{i}", "token": f"live-{i}"},
        "open": True,
        "waitingResponse": True,
        "source": {"type": "api"},
        "queuedAt": date,
        "callUniqueId": f"bench-live-call-{i}",
        "uids": [],
        "direction": "inbound",
        "queue": queue,
        "callWaitingTime": seq,
        "_updatedAt": {"$date": ts_ms + seq},
    }


def rss_of(proc: Process) -> int:
    return proc.rss_bytes()


async def settle_rss(proc: Process) -> int:
    """The RSS half a second on (what the last requests allocated is counted)."""
    await asyncio.sleep(0.5)
    return rss_of(proc)


LAG = [0.0]  # the latest loop_lag's worst lateness, in ms


async def loop_lag(tick: float = 0.01) -> float:
    """Until cancelled: the worst lateness (ms) of this event loop waking for a ``tick`` sleep."""
    LAG[0] = 0.0
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + tick
        await asyncio.sleep(tick)
        LAG[0] = max(LAG[0], (loop.time() - due) * 1000)


async def part_streams(ctx: Context, figures: Figures) -> None:
    """STREAM_RATE isolated changes a second over ``--streams`` open streams: publish to
    receipt, and the RSS added per stream."""
    args = ctx.args
    n = args.streams
    visitors = watched_visitors(ctx.sample, n)
    queue = next(iter(ctx.sample.queues), "bench")
    nats = start_nats(ctx.work, "streams")
    ctx.stack.callback(nats.stop)
    sent_at: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    unmatched = Counter[str]()
    published, all_in = asyncio.Event(), asyncio.Event()  # every publish sent; every one received

    def on_event(stream: SseStream, event: SseEvent) -> None:
        if event.event != "rooms" or stream.events == 1:
            return  # the first answer, or an error event (counted by the stream)
        i = stream.index
        wanted = f"bench-live-{i}"
        rooms = orjson.loads(event.data).get("rooms") or []
        room = next((r for r in rooms if isinstance(r, dict) and r.get("_id") == wanted), None)
        if room is None:
            unmatched["no stamped call in the answer"] += 1
            return
        seq = room.get("callWaitingTime")
        if not isinstance(seq, int):
            unmatched["no stamp"] += 1
            return
        sent = sent_at.pop((i, seq), None)
        if sent is None:
            unmatched["stamp already seen or never sent"] += 1
            return
        latencies.append((event.received - sent) * 1000)
        if published.is_set() and not sent_at:
            all_in.set()

    async with Publisher(nats) as publisher:
        proc, port = await start_live_service(ctx, "live-streams", nats, n + 100)
        rss0 = await settle_rss(proc)
        log(f"opening {n:,} streams, one visitor's calls each")
        queries = [visitor_query(v) for v in visitors]
        streams, failures, open_s = await open_streams(
            port, queries, ctx.logins, on_event, args.open_timeout
        )
        rss1 = await settle_rss(proc)
        log(
            f"  {len(streams):,} open in {open_s:.1f} s"
            + (f"; failed: {dict(failures)}" if failures else "")
            + f"; RSS {rss0 / 2**20:,.0f} -> {rss1 / 2**20:,.0f} MiB"
        )
        gauge = metric(port, "voip_rooms_streams")
        order = list(range(n))
        random.Random(11).shuffle(order)
        ts_ms = int(time.time() * 1000)

        def events() -> Iterator[tuple[str, bytes]]:
            for k in range(10**9):
                i = order[k % n]
                room = stamped_room(i, visitors[i], queue, k, ts_ms)
                yield "watch.rooms", orjson.dumps({"clientAction": "updated", "room": room})

        made = events()
        pending: list[tuple[str, bytes]] = []

        def stamp(k: int) -> None:
            sent_at[(order[k % n], k)] = time.perf_counter()

        def ahead() -> Iterator[tuple[str, bytes]]:
            # The payloads are made before their time stamp is taken, so encoding is not timed.
            while True:
                if not pending:
                    pending.append(next(made))
                yield pending.pop()

        log(f"publishing {STREAM_RATE} events/s for {args.stream_seconds:g} s")
        position0 = metric(port, "voip_rooms_feed_position")
        # This process is the clock: what the earlier parts left on its heap stays out of the
        # collector's passes, and its own loop's lateness is recorded (a late client reads a
        # frame late, which would count against the service).
        gc.collect()
        gc.freeze()
        lag = asyncio.ensure_future(loop_lag())
        sent = await publisher.paced(ahead(), STREAM_RATE, args.stream_seconds, before=stamp)
        published.set()
        if sent_at:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_in.wait(), LATE_S)
        lag.cancel()
        client_lag_ms = LAG[0]
        gc.unfreeze()
        log(f"  this client's event loop was late by up to {client_lag_ms:.1f} ms")
        applied = metric(port, "voip_rooms_feed_position") - position0
        rss2 = rss_of(proc)
        still_open = sum(1 for s in streams if s.open)
        stream_events = metric(port, "voip_rooms_stream_events_total")
        await close_streams(streams)
        proc.stop()
    nats.stop()
    ordered = sorted(latencies)
    figures.streams = {
        "streams": n,
        "opened": len(streams),
        "failures": dict(failures),
        "open_s": open_s,
        "gauge": gauge,
        "published": sent,
        "applied": applied,
        "received": len(latencies),
        "missing": len(sent_at),
        "unmatched": dict(unmatched),
        "median_ms": statistics.median(ordered) if ordered else math.nan,
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else math.nan,
        "client_lag_ms": client_lag_ms,
        "rss_before": rss0,
        "rss_open": rss1,
        "rss_after": rss2,
        "per_stream_bytes": (rss1 - rss0) / len(streams) if streams else math.nan,
        "still_open": still_open,
        "stream_events": stream_events,
        "keepalives": sum(s.comments for s in streams),
        "seconds": args.stream_seconds,
    }
    log(
        f"  publish to receipt: {len(latencies):,} of {sent:,} received, median "
        f"{figures.streams['median_ms']:.1f} ms, p99 {figures.streams['p99_ms']:.1f} ms, "
        f"max {figures.streams['max_ms']:.1f} ms; {len(sent_at)} missing"
    )


def idle_queries(ctx: Context, n: int) -> tuple[list[Query], int]:
    """``n`` stream queries: the polling queries and visitors' calls, in turn; and how many
    distinct queries that is."""
    distinct = polling_queries(ctx.sample, ctx.logins)
    distinct += [visitor_query(v) for v in watched_visitors(ctx.sample, max(0, n // 10))]
    return [distinct[k % len(distinct)] for k in range(n)], min(n, len(distinct))


async def part_idle(ctx: Context, figures: Figures) -> None:
    """``--idle-streams`` streams opened and held with no events: every one must get its first
    answer and stay open; the RSS added."""
    args = ctx.args
    n = args.idle_streams
    nats = start_nats(ctx.work, "idle")
    ctx.stack.callback(nats.stop)
    async with Publisher(nats):  # the stream exists, and stays empty
        proc, port = await start_live_service(ctx, "live-idle", nats, n + 100)
    rss0 = await settle_rss(proc)
    queries, distinct = idle_queries(ctx, n)
    log(f"opening {n:,} idle streams over {distinct:,} distinct queries")

    def ignore(stream: SseStream, event: SseEvent) -> None:
        return None

    streams, failures, open_s = await open_streams(
        port, queries, ctx.logins, ignore, args.open_timeout
    )
    rss1 = await settle_rss(proc)
    log(
        f"  {len(streams):,} open in {open_s:.1f} s"
        + (f"; failed: {dict(failures)}" if failures else "")
        + f"; RSS {rss0 / 2**20:,.0f} -> {rss1 / 2**20:,.0f} MiB; holding {args.hold:g} s"
    )
    await asyncio.sleep(args.hold)
    still_open = sum(1 for s in streams if s.open)
    gauge = metric(port, "voip_rooms_streams")
    rss2 = rss_of(proc)
    extra = sum(max(0, s.events - 1) for s in streams)
    keepalives = sum(s.comments for s in streams)
    await close_streams(streams)
    proc.stop()
    nats.stop()
    figures.idle = {
        "streams": n,
        "distinct": distinct,
        "opened": len(streams),
        "failures": dict(failures),
        "open_s": open_s,
        "hold_s": args.hold,
        "still_open": still_open,
        "gauge": gauge,
        "rss_before": rss0,
        "rss_open": rss1,
        "rss_after": rss2,
        "added_bytes": max(rss1, rss2) - rss0,
        "events_after_first": extra,
        "keepalives": keepalives,
    }
    log(
        f"  after {args.hold:g} s: {still_open:,} still open (the service counts {gauge:.0f}); "
        f"RSS added {figures.idle['added_bytes'] / 2**20:,.0f} MiB"
    )


# --- the report ---------------------------------------------------------------------------------


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratios(figures: Figures, rate: int, per_cpu: bool = False) -> list[float]:
    """Per round: req/s with ``rate`` events/s arriving over req/s with none; ``per_cpu``:
    each divided by the server's CPU share first (steadier on a shared machine)."""
    out = []
    for r in sorted({x["round"] for x in figures.polling if "round" in x}):
        runs = {x["rate"]: x for x in figures.polling if x.get("round") == r}
        if rate not in runs or 0 not in runs or not runs[0]["rps"]:
            continue
        a, b = runs[rate], runs[0]
        if not per_cpu:
            out.append(a["rps"] / b["rps"])
        elif a["server_cpu"] > 0 and b["server_cpu"] > 0:
            out.append((a["rps"] / a["server_cpu"]) / (b["rps"] / b["server_cpu"]))
    return out


def rows(figures: Figures) -> list[Row]:
    """(figure, measured, value, target, verdict), the targets in order."""
    out: list[Row] = []
    for rate, key in zip(POLLING_RATES, ("ratio_50", "ratio_200"), strict=True):
        values = ratios(figures, rate)
        value = _median(values)
        applied = [x["applied_per_s"] for x in figures.polling if x["rate"] == rate]
        measured = " / ".join(f"{v:.2f}" for v in values) or "-"
        if applied:
            measured += f" (events applied {min(applied):.0f}-{max(applied):.0f}/s)"
        out.append(
            (
                f"polling throughput, {rate} events/s arriving / none",
                measured,
                f"{value:.3f}",
                f">= {TARGETS[key]:g}",
                _verdict(None if value != value else value >= TARGETS[key]),
            )
        )
        per_cpu = ratios(figures, rate, per_cpu=True)
        out.append(
            (
                "  same per server CPU-second",
                " / ".join(f"{v:.2f}" for v in per_cpu) or "-",
                f"{_median(per_cpu):.2f}",
                "(informative)",
                "",
            )
        )
    reval = figures.reval
    counts = reval.get("counts", {})
    share = float(reval.get("share", math.nan))
    unchanged = counts.get("unchanged 304", 0) + counts.get("unchanged 200", 0)
    out.append(
        (
            f"revalidation of an unchanged answer, {REVAL_RATE} events/s arriving: 304s",
            f"{counts.get('unchanged 304', 0):,} of {unchanged:,} unchanged "
            f"({counts.get('changed 200', 0):,} changed)",
            f"{share:.2%}" if share == share else "n/a",
            "100%",
            _verdict(None if share != share else share >= TARGETS["reval_304"]),
        )
    )
    s = figures.streams
    if s:
        p99 = float(s["p99_ms"])
        complete = s["opened"] == s["streams"] and s["missing"] == 0 and s["received"] > 0
        out.append(
            (
                f"publish to SSE receipt, {s['streams']:,} streams, {STREAM_RATE} events/s, "
                "p99 (ms)",
                f"median {s['median_ms']:.1f}, max {s['max_ms']:.1f}; "
                f"{s['received']:,} of {s['published']:,} received, {s['missing']} missing; "
                f"client loop late by up to {s.get('client_lag_ms', math.nan):.1f}",
                f"{p99:.1f}",
                f"<= {TARGETS['stream_p99_ms']:g} ms",
                _verdict(None if p99 != p99 else p99 <= TARGETS["stream_p99_ms"] and complete),
            )
        )
        out.append(
            (
                "  memory per open stream (KiB)",
                f"{(s['rss_open'] - s['rss_before']) / 2**20:,.1f} MiB for {s['opened']:,}",
                f"{s['per_stream_bytes'] / 1024:,.1f}",
                "(informative)",
                "",
            )
        )
    i = figures.idle
    if i:
        added = i["added_bytes"] / 2**20
        held = i["opened"] == i["streams"] and i["still_open"] == i["streams"]
        out.append(
            (
                f"{i['streams']:,} idle streams held, RSS added (MiB)",
                f"{i['opened']:,} opened, {i['still_open']:,} open after {i['hold_s']:g} s; "
                f"{i['added_bytes'] / max(1, i['opened']) / 1024:,.1f} KiB per stream",
                f"{added:,.0f}",
                f"held, <= {TARGETS['idle_mib']:g} MiB",
                _verdict(held and added <= TARGETS["idle_mib"]),
            )
        )
    return out


def section(args: argparse.Namespace, figures: Figures, command: str) -> str:
    out = [
        SECTION,
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `{command}`: "
        f"{args.rooms:,} demo rooms (seed {args.seed}); the service on core "
        f"{SERVER_CPU} (taskset), this process (the publisher and the clients), wrk and "
        f"nats-server (JetStream, loopback) on core {CLIENT_CPU}; a new service and "
        "nats-server for each part. Load average at start: "
        f"{figures.facts.get('loadavg', '?')}.",
        "",
        table(rows(figures), "measured"),
        "",
        "How each figure is measured:",
        "",
        f"- **polling throughput, N events/s arriving / none**: wrk -t{CONNECTIONS} "
        f"-c{CONNECTIONS} on the 20 queries of the polling mix of the main table, picked at "
        "random, 20% of them revalidated with the ETag of the last 200 that connection got for "
        "that query (`tests/bench/dashboards.lua`: one connection per wrk thread, so that a "
        "response is known to answer the thread's last request and an ETag is recorded for its "
        "query however the answer changed; the main table's mix recognizes answers by a "
        "fingerprint of the body, which events change), "
        f"{args.duration:g} s a run, after five simulated minutes of feed events applied; in "
        "each of "
        f"{args.rounds} rounds one run with no events, one with 50/s and one with 200/s "
        "arriving (the demo simulator's events continuing the snapshot: new calls, answers, "
        "closes, now and then a user or permission change, published to NATS at a steady "
        "rate from 0.5 s before wrk starts until it ends), in an order that turns each round; "
        "the median over rounds of each run's req/s over the no-event run's (and the same with "
        "each req/s divided by the server's CPU share, steadier when other jobs share the "
        "machine). `events applied` is the service's `voip_rooms_feed_position` over the run.",
        f"- **revalidation of an unchanged answer**: {figures.reval.get('clients', 20)} "
        "clients (aiohttp, one per polling query) each send `If-None-Match` with the ETag of "
        f"the last 200 they got for it, over and over for {args.duration:g} s, while events "
        f"arrive at {REVAL_RATE}/s; an answer is unchanged when the service answers 304 or "
        "a 200 whose body equals the previous one (a miss); the figure is the share of 304s "
        "among the unchanged. 200s with another body are changed answers, not counted.",
        f"- **publish to SSE receipt**: {args.streams:,} streams (`Accept: text/event-stream`,"
        " one connection each, parsed by a raw asyncio client), each watching one visitor's "
        "calls (`visitorId=`; the visitors with the most calls in the snapshot's sample); "
        f"then {STREAM_RATE} events/s for {args.stream_seconds:g} s, each a `watch.rooms` "
        "update of one call of one watched visitor, the streams in turn (an isolated change: "
        "one stream's answer changes), its `callWaitingTime` the event's number. The time "
        "from just before the publish to the arrival of the `rooms` event whose data holds "
        "that number, both on this process's `perf_counter`; median and p99 over every "
        "event; a publish never received within "
        f"{LATE_S:g} s of the last is `missing` and fails the figure. Memory per stream: "
        "the service's VmRSS once every stream got its first answer, minus before (at a "
        "large snapshot the load leaves freed heap that the streams reuse first, so the RSS "
        "delta then understates what a stream holds).",
        f"- **idle streams held**: a fresh service; {args.idle_streams:,} streams over the "
        "20 polling queries and visitors' calls in turn "
        f"({figures.idle.get('distinct', '?')} distinct queries), opened "
        f"{OPEN_AT_ONCE} at a time, each until its first answer, then held {args.hold:g} s "
        "with no events (a keep-alive period is 15 s); every one must still be open. RSS "
        "added: the service's VmRSS after (the larger of once opened and after the hold) "
        "minus before (understated at a large snapshot, as above). The client and the "
        "service run with RLIMIT_NOFILE raised.",
        "",
    ]
    polling_runs = [x for x in figures.polling if "round" in x]
    if polling_runs:
        out += [
            "| round | events | req/s | p99 ms | server cpu | wrk cpu | other cpu | events "
            "sent/s | applied/s | statuses |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for x in polling_runs:
            statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(x["statuses"].items()))
            out.append(
                f"| {x['round'] + 1} | {x['label']} | {x['rps']:,.0f} | {x['p99_ms']:.2f} | "
                f"{x['server_cpu']:.2f} | {x['client_cpu']:.2f} | {x['other_cpu']:.2f} | "
                f"{x['sent_per_s']:.0f} | {x['applied_per_s']:.0f} | {statuses} |"
            )
        out.append("")
    if figures.reval:
        r = figures.reval
        kinds = "; ".join(
            f"{k}: " + ", ".join(f"{n:,} {what}" for what, n in sorted(v.items()))
            for k, v in sorted(r["by_kind"].items())
        )
        out += [
            f"Revalidation: {r['counts'].get('revalidations', 0):,} requests in "
            f"{r['seconds']:.1f} s ({', '.join(f'{k} {v:,}' for k, v in r['counts'].items())}); "
            f"events {r['sent_per_s']:.0f}/s sent, {r['applied_per_s']:.0f}/s applied. By "
            f"query kind: {kinds}.",
            "",
        ]
    if figures.streams:
        s = figures.streams
        out += [
            f"Streams: {s['opened']:,} of {s['streams']:,} opened in {s['open_s']:.1f} s"
            + (f" (failed: {s['failures']})" if s["failures"] else "")
            + f", the service counting {s['gauge']:.0f}; {s['published']:,} events published, "
            f"{s['applied']:.0f} applied, {s['received']:,} received"
            + (f", unmatched: {s['unmatched']}" if s["unmatched"] else "")
            + f"; `voip_rooms_stream_events_total` {s['stream_events']:.0f}; "
            f"{s['still_open']:,} streams open at the end; RSS {s['rss_before'] / 2**20:,.0f} "
            f"MiB before, {s['rss_open'] / 2**20:,.0f} once open, "
            f"{s['rss_after'] / 2**20:,.0f} at the end.",
            "",
        ]
    if figures.idle:
        i = figures.idle
        out += [
            f"Idle streams: {i['opened']:,} of {i['streams']:,} opened in {i['open_s']:.1f} s"
            + (f" (failed: {i['failures']})" if i["failures"] else "")
            + f"; after {i['hold_s']:g} s {i['still_open']:,} open, the service counting "
            f"{i['gauge']:.0f}; {i['keepalives']:,} keep-alives and {i['events_after_first']:,} "
            f"events after the first received; RSS {i['rss_before'] / 2**20:,.0f} MiB before, "
            f"{i['rss_open'] / 2**20:,.0f} once open, {i['rss_after'] / 2**20:,.0f} after the "
            "hold.",
            "",
        ]
    if figures.notes:
        out += ["Notes:", "", *[f"- {n}" for n in figures.notes], ""]
    for name, summary in figures.profiles.items():
        out += [
            f"Where the time goes in `{name}` (`--profile`: the service under cProfile, which "
            "slows it several times, so the figures above are not comparable):",
            "",
            summary,
        ]
    return "\n".join(out)


def replace_section(text: str, new: str) -> str:
    """``text`` with its "Live answers" section (up to the next ``## `` heading) replaced by
    ``new``; without one, ``new`` goes before "## Other figures", else at the end."""
    lines = text.splitlines()
    if SECTION in lines:
        start = lines.index(SECTION)
        end = next(
            (k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines)
        )
        lines[start:end] = [*new.rstrip("\n").splitlines(), ""]
        return "\n".join(lines).rstrip("\n") + "\n"
    at = next((k for k, line in enumerate(lines) if line.startswith("## Other figures")), None)
    if at is None:
        return (text.rstrip("\n") + "\n\n" if text.strip() else "") + new.rstrip("\n") + "\n"
    lines[at:at] = [*new.rstrip("\n").splitlines(), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- entry point --------------------------------------------------------------------------------


def raise_nofile(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE (inherited by the service and nats-server) towards
    ``wanted``, up to the hard limit; the soft limit it ends with."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def load_data(args: argparse.Namespace) -> tuple[Path, dict[str, Login]]:
    if args.snapshot is None:
        return ensure_data(args.rooms, args.seed)
    creds = args.credentials or args.snapshot.with_name(args.snapshot.name + ".credentials.json")
    raw = json.loads(creds.read_text())
    return args.snapshot, {k: Login(k, v["user_id"], v["token"]) for k, v in raw.items()}


async def bench(args: argparse.Namespace, figures: Figures) -> None:
    figures.facts["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    wrk = ensure_wrk()
    snapshot, logins = await asyncio.to_thread(load_data, args)
    for needed in ("manager", "monitor", "agent"):
        if needed not in logins:
            raise BenchError(f"the demo credentials have no {needed!r} login")
    sample = await asyncio.to_thread(sample_rooms, snapshot, args.rooms)
    log_dir = DATA_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="voip-live-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            ctx = Context(args, snapshot, logins, sample, Path(tmp), log_dir, stack)
            ctx.profile = {p.strip() for p in args.profile.split(",") if p.strip()}
            parts = [p.strip() for p in args.parts.split(",") if p.strip()]
            try:
                if "polling" in parts:
                    await part_polling(ctx, figures, wrk)
                if "streams" in parts:
                    await part_streams(ctx, figures)
                if "idle" in parts:
                    await part_idle(ctx, figures)
            finally:
                for name, dump in ctx.profiles.items():
                    figures.profiles[name] = profile_summary(dump)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.live",
        description="Benchmark voip-rooms' live answers under a NATS feed.",
    )
    parser.add_argument("--rooms", type=int, default=1_000_000, help="demo rooms (1000000)")
    parser.add_argument("--seed", type=int, default=1, help="demo data seed (1)")
    parser.add_argument(
        "--snapshot",
        type=Path,
        help="an existing demo snapshot, read only (its logins in DIR.credentials.json)",
    )
    parser.add_argument("--credentials", type=Path, help="the logins of --snapshot")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="polling rounds (3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (2, at most --duration)")
    parser.add_argument("--streams", type=int, default=1000, help="streams with events (1000)")
    parser.add_argument(
        "--stream-seconds", type=float, default=20, help="seconds of 100 events/s (20)"
    )
    parser.add_argument("--idle-streams", type=int, default=10_000, help="idle streams (10000)")
    parser.add_argument("--hold", type=float, default=20, help="seconds idle streams are held")
    parser.add_argument(
        "--open-timeout", type=float, default=300, help="seconds to open all streams (300)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=1200, help="seconds to wait for /readyz (1200)"
    )
    parser.add_argument(
        "--parts", default="polling,streams,idle", help="parts to run (polling,streams,idle)"
    )
    parser.add_argument(
        "--profile",
        default="",
        metavar="PARTS",
        help="run these parts' services under cProfile and summarize it (e.g. polling,streams)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="run everything (this process, the service, wrk, nats-server) at niceness N (e.g. "
        "-10 on a shared machine; root only)",
    )
    parser.add_argument(
        "--serve-arg",
        dest="serve_args",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `serve` (repeatable)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "RESULTS.md",
        help="report: its Live answers section is replaced (tests/bench/RESULTS.md)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rooms < 1000 or args.duration <= 0 or args.rounds < 1 or args.streams < 1:
        raise SystemExit("need --rooms >= 1000, --duration > 0, --rounds >= 1, --streams >= 1")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("the benchmark needs 2 cores (service on core 0, clients on core 1)")
    if args.warmup is None:
        args.warmup = min(2.0, args.duration)
    if args.nice:
        os.nice(args.nice)  # the service, wrk and nats-server inherit it
    nofile = raise_nofile(max(args.streams, args.idle_streams) + 1000)
    if nofile < args.idle_streams + 200:
        raise SystemExit(f"RLIMIT_NOFILE is {nofile}: too low for {args.idle_streams} streams")
    os.sched_setaffinity(0, {int(CLIENT_CPU)})  # children inherit it; the service is moved
    command = "python -m tests.bench.live " + shlex.join(sys.argv[1:] if argv is None else argv)
    figures = Figures()
    # SIGTERM (make interrupted, timeout) unwinds like Ctrl-C, so the stack stops children.
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        asyncio.run(bench(args, figures))
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    text = section(args, figures, command)
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(replace_section(old, text))
    print()
    print(table(rows(figures), "measured"))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
