"""The benchmark: the real service started, stopped and restarted, and under wrk against a
minimal aiohttp ceiling, in A/B rounds; then the in-process figures.

    python -m tests.bench.http [--rooms N] [--duration S] [--rounds R] [--events E] [--out FILE]

Generates (or reuses, under ``.bench-data/<rooms>-<seed>``) a demo snapshot and starts the
service (``python -m service serve``: the ``voip-rooms serve`` command line, without depending
on the venv's console script) with an empty checkpoint directory, on every core and alone: the
time to ``/readyz`` 200 and the RSS then are figures. Then it and the ceiling
(``tests/bench/ceiling.py``) run pinned to core 0, driven by wrk pinned to core 1. Mixes:
``polling`` (20 dashboard queries, ~20% revalidations), ``distinct`` (the classes of
``mix.py``, no request repeated, so no cache answers), ``paced`` (the distinct mix offered at
half the ceiling's distinct throughput, for its latency), and the revalidation cost runs
(``reval``: only matching ``If-None-Match``; ``build``: the same queries without it, on a second
service started with ``--response-cache 0``; ``full``: without it, on the normal service).
Rounds alternate the order of real and ceiling; medians of per-round ratios are reported.
Then SIGTERM to the service times its shutdown checkpoint, and a new service started from that
checkpoint alone times its readiness. Last, ``query_times.py`` gives the in-process figures
(query p99 per class, event apply, load, memory) as JSON. The target figures head
``tests/bench/RESULTS.md`` (``--out``), the others follow as informative. Every wait is
bounded; every process started is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.apply import feed_messages, merges_text
from tests.bench.data import (
    DATA_DIR,
    DAY_MS,
    ROOT,
    BenchError,
    Login,
    Sample,
    ensure_data,
    log,
    name_fragments,
    sample_rooms,
)
from tests.bench.mix import QueryMix, iso, js
from tests.net import wait_port_file

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
ROUTE = "/api/v1/voip/rooms"
HOST = "127.0.0.1"
SERVER_CPU, CLIENT_CPU = "0", "1"
CONNECTIONS = 64
PAGE = 50
DISTINCT_LINES = 200_000  # requests written for the distinct mix; runs take successive slices
SIZE_SAMPLE = 200  # distinct requests fetched once to learn answer sizes (never sent by wrk)
#: The targets of the main table.
TARGETS = {
    "ready_s": 10.0,  # service start to /readyz 200 from the snapshot, at most
    "ready_rooms_s": 100_000,  # ... and rooms per second of that, at least
    "restart_s": 3.0,  # from a checkpoint, at most
    "rss_bytes": 1.5 * 2**30,  # resident once ready, at most
    "shutdown_s": 3.0,  # SIGTERM to the checkpoint written, at most
    "events_s": 50_000,  # in process, at least
    "query_p99_ms": 1.0,  # in process, every class, at most
    "distinct_rps": 6_000,  # through HTTP on one core, at least
    "distinct_ratio": 0.2,  # ... and of the ceiling, at least
}
#: The targets of the informative figures (an earlier round's).
EARLIER_TARGETS = {
    "polling": 0.85,  # throughput / ceiling, at least
    "distinct": 0.5,
    "reval": 0.33,  # 304 cost / full answer cost, at most
    "p99_ms": 10.0,
    "load_rooms_s": 100_000,
    "bytes_per_room": 2048,
}
SHORT_OF_RATE = 0.8  # a paced run reaching less of its offered rate R is "well short" of it


# --- queries -------------------------------------------------------------------------------


_iso, _js = iso, js


def _path(params: Sequence[tuple[str, object]]) -> str:
    return ROUTE + "?" + urllib.parse.urlencode([(k, str(v)) for k, v in params])


@dataclass(frozen=True, slots=True)
class Query:
    user: str  # a login label
    path: str
    kind: str


def polling_queries(sample: Sample, logins: dict[str, Login]) -> list[Query]:
    """About 20 fixed dashboard queries, as a wallboard and a few agents' screens poll them."""
    now = sample.last_ms
    agent = logins["agent"].user_id
    busiest = [q for q, _ in sample.open_queues.most_common(8)] or [
        q for q, _ in sample.queues.most_common(8)
    ]
    others = [a for a, _ in sample.agents.most_common() if a != agent]
    tags = [t for t, _ in sample.tags.most_common()] or ["resolved"]
    names = name_fragments(sample, random.Random(7), 2)
    day = {"start": _iso(now - DAY_MS), "end": _iso(now)}
    week = {"start": _iso(now - 7 * DAY_MS), "end": _iso(now)}
    yesterday = {"start": _iso(now - 2 * DAY_MS), "end": _iso(now - DAY_MS)}
    by_ts, by_duration = _js({"ts": -1}), _js({"callDuration": -1})
    out = [
        Query("manager", _path([("open", "true"), ("queue", q), ("count", PAGE)]), "open/queue")
        for q in busiest
    ]
    out += [
        Query("monitor", _path([("open", "true"), ("count", PAGE), ("sort", by_ts)]), "open/all"),
        Query("agent", _path([("agents", agent), ("open", "true")]), "agent/own"),
        Query("agent", _path([("agents", agent), ("open", "false"), ("count", PAGE)]), "agent/own"),
        Query(
            "agent",
            _path([("agents", agent), ("createdAt", _js(week)), ("sort", by_ts)]),
            "agent/own",
        ),
        Query(
            "manager",
            _path([("agents", others[0]), ("open", "false"), ("count", PAGE)]),
            "agent/manager",
        ),
        Query(
            "manager",
            _path(
                [
                    ("open", "false"),
                    ("closedAt", _js(day)),
                    ("tags", tags[0]),
                    ("tags", tags[1 % len(tags)]),
                    ("sort", _js({"closedAt": -1})),
                ]
            ),
            "closed/tags",
        ),
        Query(
            "monitor",
            _path(
                [
                    ("open", "false"),
                    ("closedAt", _js(week)),
                    ("tags", tags[2 % len(tags)]),
                    ("tags", tags[3 % len(tags)]),
                    ("sort", by_duration),
                    ("count", PAGE),
                ]
            ),
            "closed/tags",
        ),
        Query(
            "manager",
            _path(
                [
                    ("closedAt[start]", yesterday["start"]),
                    ("closedAt[end]", yesterday["end"]),
                    ("tags[]", tags[4 % len(tags)]),
                    ("count", PAGE),
                ]
            ),
            "closed/tags",
        ),
        Query("manager", _path([("roomName", names[0]), ("count", PAGE)]), "name"),
        Query("monitor", _path([("roomName", names[1]), ("sort", by_ts)]), "name"),
        Query(
            "manager",
            _path(
                [
                    ("queue", busiest[1 % len(busiest)]),
                    ("open", "false"),
                    ("closedAt", _js(week)),
                    ("sort", by_duration),
                ]
            ),
            "duration",
        ),
        Query(
            "monitor",
            _path([("direction", "outbound"), ("closedAt", _js(day)), ("sort", by_duration)]),
            "duration",
        ),
    ]
    return out


def distinct_queries(
    sample: Sample, logins: dict[str, Login], count: int, seed: int
) -> Iterator[Query]:
    """``count`` pairwise different queries of the target classes (``mix.py``).

    Every query carries a date bound with its own millisecond, so no two are equal even after
    normalization, and no cache answers them.
    """
    mix = QueryMix(sample, logins["agent"].user_id, random.Random(f"distinct/{seed}"))
    seen: set[str] = set()
    n = 0
    while len(seen) < count:
        n += 1
        request = mix.any(unique=n % 1000)
        query = Query(request.user, _path(request.params), request.kind)
        if query.user + query.path not in seen:
            seen.add(query.user + query.path)
            yield query


# --- fetching answers once ------------------------------------------------------------------

_FIRST_ID = re.compile(rb'"_id":"([^"]*)"')
_TOTAL = re.compile(rb'"total":(\d+)')


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    etag: str | None
    ms: float  # wall time of the request, one at a time over one connection

    @property
    def fingerprint(self) -> str:
        """As fixed.lua computes it: the first "_id" and the "total" near the end."""
        first = _FIRST_ID.search(self.body[:200])
        total = _TOTAL.search(self.body[-120:])
        return (
            (first.group(1) if first else b"").decode()
            + "|"
            + (total.group(1) if total else b"").decode()
        )


def fetch(port: int, query: Query, logins: dict[str, Login], etag: str | None = None) -> Answer:
    login = logins[query.user]
    headers = {"X-User-Id": login.user_id, "X-Auth-Token": login.token}
    if etag is not None:
        headers["If-None-Match"] = etag
    request = urllib.request.Request(f"http://{HOST}:{port}{query.path}", headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
            status, etag = response.status, response.headers.get("ETag")
    except urllib.error.HTTPError as exc:
        body, status, etag = exc.read(), exc.code, exc.headers.get("ETag")
    return Answer(status, body, etag, (time.perf_counter() - started) * 1000)


# --- processes ------------------------------------------------------------------------------


class Process:
    """A child in its own process group, with its output in a log file; stop() kills the group."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        env: dict[str, str],
        port_file: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self.port_file = port_file
        self._port: int | None = None
        self.started = time.monotonic()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def port(self, timeout: float = 120.0) -> int:
        """The port the server bound: it listens on port 0 and writes the port it got."""
        if self._port is None:
            assert self.port_file is not None, f"{self.name} has no port file"
            try:
                self._port = wait_port_file(self.port_file, self.popen, timeout)
            except AssertionError as exc:
                raise BenchError(f"{self.name}: {exc}:\n{self.tail()}") from None
        return self._port

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return ""

    def cpu_seconds(self) -> float:
        """User + system CPU of the process so far (from /proc)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # anything the child left in its group
        self._log.close()


def wait_ready(proc: Process, port: int, timeout: float) -> float:
    """Seconds from the process's start until GET /readyz answers 200; BenchError if the process
    dies or time runs out."""
    started = proc.started
    delay = 0.01
    while time.monotonic() - started < timeout:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(delay)
        delay = min(0.05, delay * 1.5)  # the figure is this precise; the requests are cheap
    raise BenchError(f"{proc.name} not ready after {timeout:.0f} s:\n{proc.tail()}")


def ensure_wrk() -> str:
    """The wrk binary, installed with apt-get when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise BenchError("wrk is not installed and apt-get is not available: install wrk")
    log("wrk missing: apt-get install -y wrk")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"]):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(argv, env=env, capture_output=True, timeout=600, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )
    found = shutil.which("wrk")
    if not found:
        raise BenchError("could not install wrk with apt-get (try: apt-get install -y wrk)")
    return found


# --- wrk runs -------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """One wrk run's figures."""

    target: str  # "real", "ceiling", "metrics-off", ...
    mix: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    statuses: dict[str, int]
    errors: dict[str, int]
    server_cpu: float  # share of one core over the run
    client_cpu: float
    other_cpu: float  # CPU used by everything else on the machine, in cores
    unmatched: int
    offered: float = 0.0  # req/s a paced run offers (0: closed loop, as fast as answered)

    def status_share(self, status: str) -> float:
        total = sum(self.statuses.values())
        return self.statuses.get(status, 0) / total if total else 0.0


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for ASCII


def _lua_users(logins: dict[str, Login]) -> tuple[str, dict[str, int]]:
    index = {label: i + 1 for i, label in enumerate(logins)}
    rows = [
        f'  {{["X-User-Id"] = {_lua_string(x.user_id)}, '
        f'["X-Auth-Token"] = {_lua_string(x.token)}}},'
        for x in logins.values()
    ]
    return "USERS = {\n" + "\n".join(rows) + "\n}\n", index


def write_fixed_script(
    path: Path,
    queries: list[Query],
    logins: dict[str, Login],
    revalidate: float,
    fingerprints: dict[str, int],
    preset: dict[int, str],
) -> None:
    users, index = _lua_users(logins)
    data = [users, "QUERIES = {"]
    data += [f"  {{{index[q.user]}, {_lua_string(q.path)}}}," for q in queries]
    data += ["}", "FINGERPRINTS = {"]
    data += [f"  [{_lua_string(fp)}] = {i + 1}," for fp, i in fingerprints.items()]
    data += ["}", "PRESET = {"]
    data += [f"  [{i + 1}] = {_lua_string(e)}," for i, e in preset.items()]
    data += ["}", f"REVALIDATE = {revalidate!r}"]
    template = (HERE / "fixed.lua").read_text()
    path.write_text(template.replace("--@@DATA@@", "\n".join(data)))


def write_distinct_script(
    path: Path, requests_file: Path, logins: dict[str, Login], *, paced: bool
) -> None:
    """distinct.lua over the requests in ``requests_file`` (see write_requests); ``paced``: with
    a think time before each request (its mean is the run's third argument)."""
    users, _ = _lua_users(logins)
    data = users + f"REQUESTS_FILE = {_lua_string(str(requests_file))}\n"
    data += f"PACED = {'true' if paced else 'false'}\n"
    template = (HERE / "distinct.lua").read_text()
    path.write_text(template.replace("--@@DATA@@", data))


def write_requests(path: Path, queries: list[Query], logins: dict[str, Login]) -> None:
    """One request a line, ``<user index>\\t<path>``, as distinct.lua reads them."""
    _, index = _lua_users(logins)
    with open(path, "w") as out:
        for q in queries:
            out.write(f"{index[q.user]}\t{q.path}\n")


def run_wrk(
    wrk: str,
    script: Path,
    port: int,
    duration: float,
    server: Process,
    target: str,
    mix: str,
    args: Sequence[str] = (),
    offered: float = 0.0,
    threads: int = 1,
) -> Run:
    argv = [*NICE, "taskset", "-c", CLIENT_CPU, wrk, f"-t{threads}", f"-c{CONNECTIONS}"]
    argv += [f"-d{duration:g}s"]
    argv += ["--latency", "--timeout", "5s", "-s", str(script), f"http://{HOST}:{port}"]
    if args:
        argv += ["--", *args]
    if not server.alive():
        raise BenchError(f"{server.name} died before a {mix} run:\n{server.tail()}")
    cpu0, child0, busy0 = server.cpu_seconds(), _children_cpu(), _machine_busy()
    t0 = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish a {duration:g} s run within 60 s more") from exc
    elapsed = time.monotonic() - t0
    server_cpu = (server.cpu_seconds() - cpu0) / elapsed
    client_cpu = (_children_cpu() - child0) / elapsed
    other_cpu = max(0.0, (_machine_busy() - busy0) / elapsed - server_cpu - client_cpu)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    figures = json.loads(line[len("BENCH ") :])
    seconds = figures["duration_us"] / 1e6
    run = Run(
        target=target,
        mix=mix,
        rps=figures["requests"] / seconds if seconds else 0.0,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        requests=figures["requests"],
        statuses={str(k): int(v) for k, v in figures["statuses"].items()},
        errors={k: int(v) for k, v in figures["errors"].items()},
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        other_cpu=other_cpu,
        unmatched=int(figures["unmatched"]),
        offered=offered,
    )
    errs = sum(run.errors.values())
    log(
        f"{mix:<9} {target:<11} {run.rps:9.0f} req/s  "
        + (f"(of {offered:.0f} offered)  " if offered else "")
        + f"p50 {run.p50_ms:6.2f} ms  "
        f"p99 {run.p99_ms:6.2f} ms  cpu: server {server_cpu:4.0%} wrk {client_cpu:4.0%} "
        f"others {other_cpu:4.0%}"
        + (f"  304s {run.status_share('304'):.0%}" if run.statuses else "")
        + (f"  ERRORS {run.errors}" if errs else "")
    )
    return run


def _machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (from /proc/stat)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the benchmark --------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    inprocess: dict[str, Any] | None = None  # query_times.py's --json figures
    inprocess_note: str | None = None  # why they are missing, or the command that gave them
    metrics_note: str | None = None
    profiles: dict[str, str] = field(default_factory=dict)
    kind_times: dict[str, list[float]] = field(default_factory=dict)
    # ready_s, rooms, rss_bytes (the service from the snapshot); shutdown_s, write_s, exit_s,
    # checkpoint_error (its SIGTERM); restart_s, restart_rss, restart_from, restart_error,
    # restart_differ (the service started from that checkpoint)
    startup: dict[str, Any] = field(default_factory=dict)

    def of(self, target: str, mix: str) -> list[Run]:
        return [r for r in self.runs if r.target == target and r.mix == mix]


def python_cmd() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "python"
    return [str(venv) if venv.exists() else sys.executable]


NICE: list[str] = []  # ["nice", "-n", N] when --nice N is given


def start_service(
    name: str,
    snapshot: Path | None,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    cpu: str | None = SERVER_CPU,
) -> Process:
    """``python -m service serve`` on port 0 (read from its port file); ``cpu``: pinned to that
    core with taskset (None: free to use every core, as a load in worker processes does)."""
    port_file = log_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    argv = [*NICE, *(["taskset", "-c", cpu] if cpu is not None else [])]
    argv += [*python_cmd(), "-m", "service", "serve"]
    argv += ["--snapshot", str(snapshot)] if snapshot is not None else []
    argv += ["--host", HOST, "--port", "0", "--port-file", str(port_file)]
    argv += ["--log-level", "warning", "--drain-seconds", "0", "--shutdown-timeout", "2"]
    argv += extra_args
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIP_ROOMS_")}
    env.update(extra_env or {})
    return Process(name, argv, log_dir, env, port_file)


def output(argv: list[str], timeout: float) -> str:
    """What a command prints on stdout, within ``timeout`` seconds ("" if it cannot run)."""
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout


def serve_has_flag(flag: str) -> bool:
    """Whether ``python -m service serve --help`` lists ``flag``."""
    helped = output([*python_cmd(), "-m", "service", "serve", "--help"], 120)
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helped) is not None


def pin(proc: Process, cpu: str) -> None:
    """Move every thread of a running process, and of its children, to core ``cpu``."""
    pids = [proc.pid]
    while pids:
        pid = pids.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), {int(cpu)})
                with contextlib.suppress(OSError, ValueError):
                    pids += [int(x) for x in (task / "children").read_text().split()]


def start_ceiling(name: str, body_bytes: int, log_dir: Path) -> Process:
    port_file = log_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    argv = [*NICE, "taskset", "-c", SERVER_CPU, *python_cmd(), "-m", "tests.bench.ceiling"]
    argv += ["--host", HOST, "--port", "0", "--port-file", str(port_file)]
    argv += ["--body-bytes", str(body_bytes)]
    return Process(name, argv, log_dir, dict(os.environ), port_file)


def _check_answers(answers: list[Answer], queries: list[Query], what: str) -> None:
    bad = [(q, a) for q, a in zip(queries, answers, strict=True) if a.status != 200]
    if bad:
        q, a = bad[0]
        raise BenchError(
            f"{len(bad)} of the {what} queries fail, e.g. {a.status} for {q.user} "
            f"{q.path}: {a.body[:300]!r}"
        )


def _metrics_counted(port: int) -> bool | None:
    """Whether /metrics counts rooms requests (None when /metrics does not answer 200)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
            text = r.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None
    for line in text.splitlines():
        if line.startswith("voip_rooms_http_requests_total{") and ROUTE in line:
            with contextlib.suppress(ValueError):
                if float(line.rsplit(" ", 1)[1]) > 0:
                    return True
    return False


def bench(args: argparse.Namespace, results: Results, stack: contextlib.ExitStack) -> None:
    results.facts["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    wrk = ensure_wrk()
    results.facts["wrk"] = output([wrk, "-v"], 30).split("\n")[0] or "wrk"
    snapshot, logins = ensure_data(args.rooms, args.seed)
    for needed in ("manager", "monitor", "agent", "admin"):
        if needed not in logins:
            raise BenchError(f"the demo credentials have no {needed!r} login")
    sample = sample_rooms(snapshot, args.rooms)
    log(
        f"sampled {sample.rooms:,} rooms: {len(sample.queues)} queues, "
        f"{len(sample.agents)} agents, {len(sample.tags)} tags"
    )
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="voip-bench-")))
    log_dir = DATA_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    # The service under test loads on every core (as it would in production), alone, with a
    # checkpoint directory (empty: it loads the snapshot) for the shutdown measured at the end,
    # and a file feed, empty until just before the SIGTERM (see feed_before_shutdown), so that
    # the shutdown has a new state to write. No periodic checkpoint: an interval of a day.
    checkpoints = DATA_DIR / f"checkpoints-{args.rooms}-{args.seed}"
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True)
    stack.callback(shutil.rmtree, checkpoints, True)
    events = work / "events.jsonl"
    events.touch()
    real = start_service(
        "service",
        snapshot,
        log_dir,
        extra_args=[
            "--feed",
            f"file://{events}",
            "--checkpoint-dir",
            str(checkpoints),
            "--checkpoint-interval",
            "86400",
            "--log-level",
            "info",
        ],
        cpu=None,
    )
    stack.callback(real.stop)
    port = real.port()
    log(f"service pid {real.pid} on :{port} (every core), loading {args.rooms:,} rooms")
    ready_s = wait_ready(real, port, args.ready_timeout)
    rss = real.rss_bytes()
    results.startup.update(ready_s=ready_s, rooms=args.rooms, rss_bytes=rss)
    results.facts["ready"] = f"{ready_s:.2f} s to /readyz 200 ({args.rooms / ready_s:,.0f} rooms/s)"
    results.facts["rss"] = f"{rss / 2**20:,.0f} MiB RSS once ready"
    log(results.facts["ready"] + "; " + results.facts["rss"])
    # The service that builds every answer (no response cache) loads next, then both move to
    # the servers' core for the runs.
    uncached: tuple[Process, int] | None = None
    if serve_has_flag("--response-cache"):
        proc = start_service(
            "service-no-cache", snapshot, log_dir, None, ["--response-cache", "0"], None
        )
        stack.callback(proc.stop)
        try:
            uncached = (proc, proc.port())
            wait_ready(proc, uncached[1], args.ready_timeout)
        except BenchError as exc:
            results.notes.append(
                f"the service with `--response-cache 0` did not start ({exc}): the full answer "
                "cost falls back to the old definition (cached 200s of the same queries)"
            )
            proc.stop()
            uncached = None
        else:
            pin(proc, SERVER_CPU)
    else:
        results.notes.append(
            "`python -m service serve --help` lists no `--response-cache`: the full answer cost "
            "falls back to the old definition (cached 200s of the same queries)"
        )
    pin(real, SERVER_CPU)

    # Fixed queries: fetch once (validates them, learns sizes, ETags and fingerprints).
    fixed = polling_queries(sample, logins)
    answers = [fetch(port, q, logins) for q in fixed]
    _check_answers(answers, fixed, "polling")
    fingerprints: dict[str, int] = {}
    duplicates = set()
    for i, a in enumerate(answers):
        if a.fingerprint in fingerprints:
            duplicates.add(a.fingerprint)
        fingerprints[a.fingerprint] = i
    for fp in duplicates:
        del fingerprints[fp]
        results.notes.append(f"two polling answers share the fingerprint {fp!r}: not revalidated")
    etags = {i: a.etag for i, a in enumerate(answers) if a.etag}
    if len(etags) != len(answers):
        raise BenchError("a polling answer carries no ETag")
    for i, q in enumerate(fixed):
        check = fetch(port, q, logins, etags[i])
        if check.status != 304:
            raise BenchError(f"revalidating {q.path} gave {check.status}, not 304")
    if uncached is not None:
        built = [fetch(uncached[1], q, logins) for q in fixed]
        _check_answers(built, fixed, "polling (no response cache)")
        differ = sum(1 for a, b in zip(answers, built, strict=True) if a.body != b.body)
        if differ:
            results.notes.append(
                f"the service with `--response-cache 0` answers {differ} of the {len(fixed)} "
                "polling queries with other bodies than the service with its cache"
            )
    polling_bytes = round(statistics.fmean(len(a.body) for a in answers))
    results.facts["polling"] = (
        f"{len(fixed)} queries, answers {min(len(a.body) for a in answers):,}.."
        f"{max(len(a.body) for a in answers):,} bytes (mean {polling_bytes:,}), "
        f"totals {min(_total(a) for a in answers):,}..{max(_total(a) for a in answers):,}"
    )

    # Distinct queries: write them out, fetch a separate sample to learn the answer sizes.
    # Enough for every real distinct and paced run (and the warm-up) at 3,000 req/s; beyond
    # that, wrk wraps around (the response cache, 4096 entries, has long forgotten the first
    # ones by then).
    runs = 2 * args.rounds + 1
    lines = int(min(DISTINCT_LINES, max(20_000, 3000 * args.duration * runs)))
    generated = list(distinct_queries(sample, logins, lines + SIZE_SAMPLE, seed=args.seed))
    distinct, sizing = generated[:lines], generated[lines:]
    sized = [fetch(port, q, logins) for q in sizing]
    _check_answers(sized, sizing, "distinct")
    distinct_bytes = round(statistics.fmean(len(a.body) for a in sized))
    for q, a in zip(sizing, sized, strict=True):
        results.kind_times.setdefault(q.kind, []).append(a.ms)
    empty = sum(1 for a in sized if b'"count":0,' in a.body) / len(sized)
    results.facts["distinct"] = (
        f"{lines:,} requests, none repeated; a sample of {len(sized)}: mean answer "
        f"{distinct_bytes:,} bytes, {empty:.0%} empty pages (offset past the matches)"
    )

    scripts = {
        "polling": work / "polling.lua",
        "reval": work / "reval.lua",
        "full": work / "full.lua",
        "distinct": work / "distinct.lua",
        "paced": work / "paced.lua",
    }
    write_fixed_script(scripts["polling"], fixed, logins, 0.2, fingerprints, {})
    write_fixed_script(scripts["reval"], fixed, logins, 1.0, {}, etags)
    write_fixed_script(scripts["full"], fixed, logins, 0.0, {}, {})
    write_requests(work / "distinct.txt", distinct, logins)
    write_distinct_script(scripts["distinct"], work / "distinct.txt", logins, paced=False)
    write_distinct_script(scripts["paced"], work / "distinct.txt", logins, paced=True)

    ceilings: dict[str, tuple[Process, int]] = {}
    for mix, size in (("polling", polling_bytes), ("distinct", distinct_bytes)):
        proc = start_ceiling(f"ceiling-{mix}", size, log_dir)
        stack.callback(proc.stop)
        cport = proc.port(60)
        wait_ready(proc, cport, 60)
        ceilings[mix] = (proc, cport)
    servers = {"real": (real, port), **({"no-cache": uncached} if uncached else {})}
    next_line = 0

    def go(target: str, mix: str, duration: float, offered: float = 0.0) -> Run:
        nonlocal next_line
        if target == "ceiling":
            server, p = ceilings["distinct" if mix == "distinct" else "polling"]
        else:
            server, p = servers[target]
        extra: list[str] = [str(random.randrange(1 << 30))]
        if mix in ("distinct", "paced"):
            extra = [str(next_line if target == "real" else 0), extra[0]]
        if offered:
            extra.append(f"{CONNECTIONS * 1000 / offered:.3f}")  # mean think time, ms
        run = run_wrk(wrk, scripts[mix], p, duration, server, target, mix, extra, offered)
        if mix in ("distinct", "paced") and target == "real":
            next_line += run.requests + CONNECTIONS
        return run

    if args.warmup > 0:
        log(f"warm-up ({args.warmup:g} s per server and mix, not counted)")
        for mix in ("polling", "distinct"):
            for target in ("real", "ceiling"):
                go(target, mix, args.warmup)
        if uncached is not None:
            go("no-cache", "full", args.warmup)
    reval_runs = [("real", "reval"), ("real", "full")]
    if uncached is not None:
        reval_runs.insert(1, ("no-cache", "full"))
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}")
        order = ("real", "ceiling") if r % 2 == 0 else ("ceiling", "real")
        for mix in ("polling", "distinct"):
            for target in order:
                results.runs.append(go(target, mix, args.duration))
        # Latency at a fixed offered rate: half of what the ceiling answered just now, the rate
        # the distinct throughput target asks the service to sustain.
        ceiling_rps = results.of("ceiling", "distinct")[-1].rps
        results.runs.append(go("real", "paced", args.duration, offered=ceiling_rps / 2))
        for target, mix in reval_runs if r % 2 == 0 else reval_runs[::-1]:
            results.runs.append(go(target, mix, args.duration))

    if args.compare_metrics:
        compare_metrics(args, results, stack, snapshot, log_dir, wrk, scripts["polling"], real)
    if args.profile:
        for mix in ("polling", "distinct"):
            log(f"profiling the service over one more {mix} run")
            summary = profile(real, mix, functools.partial(go, "real", mix, args.duration), work)
            results.profiles[mix] = summary

    for proc, _ in [*ceilings.values(), *([uncached] if uncached else [])]:
        proc.stop()
    feed_before_shutdown(real, results, snapshot, events)
    answers = [fetch(real.port(), q, logins) for q in fixed]  # as the events left them
    shutdown(real, results)
    restart(args, results, checkpoints, log_dir, fixed, answers, logins)


def log_records(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a service's log file (other lines skipped)."""
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
    return out


def _epoch(ts: object) -> float | None:
    """Seconds since the epoch of a log line's ``ts`` (ISO 8601, UTC), else None."""
    try:
        return dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


#: Feed events applied just before the SIGTERM: a minute or so of a busy call center.
SHUTDOWN_EVENTS = 5_000


def _feed_position(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
            text = r.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return -1.0
    for line in text.splitlines():
        if line.startswith("voip_rooms_feed_position "):
            return float(line.split()[1])
    return -1.0


def feed_before_shutdown(
    real: Process, results: Results, snapshot: Path, events: Path, timeout: float = 120.0
) -> None:
    """Append SHUTDOWN_EVENTS realistic feed events (the demo simulator's, continuing the
    snapshot) to the service's file feed and wait until it has applied them, so that the
    checkpoint at shutdown holds a state no checkpoint holds yet."""
    _, messages, _ = feed_messages(snapshot, SHUTDOWN_EVENTS, 1)
    with open(events, "ab") as out:
        for message in messages:
            payload = json.loads(message.payload)
            out.write(json.dumps({"subject": message.subject, "payload": payload}).encode())
            out.write(b"\n")
    port = real.port()
    deadline = time.monotonic() + timeout
    while _feed_position(port) < len(messages):
        if time.monotonic() > deadline or not real.alive():
            results.startup["checkpoint_error"] = (
                f"the service did not apply the {len(messages):,} feed events within {timeout:g} s"
            )
            return
        time.sleep(0.2)
    results.startup["shutdown_events"] = len(messages)
    log(f"the service applied {len(messages):,} feed events; now the SIGTERM")


def shutdown(real: Process, results: Results, timeout: float = 60.0) -> None:
    """SIGTERM the service (drain 0 s) and time the checkpoint it writes on the way out: from the
    signal to its "checkpoint written" log line (the line's timestamp), the line's own
    ``seconds`` (the writing), and the time to exit."""
    out = results.startup
    if not real.alive():
        out["checkpoint_error"] = f"the service died before the SIGTERM:\n{real.tail()}"
        return
    log("SIGTERM to the service: timing its shutdown checkpoint")
    sent_wall, sent = time.time(), time.monotonic()
    os.kill(real.pid, signal.SIGTERM)
    try:
        real.popen.wait(timeout)
        out["exit_s"] = time.monotonic() - sent
    except subprocess.TimeoutExpired:
        out["checkpoint_error"] = f"the service had not exited {timeout:g} s after SIGTERM"
    real.stop()
    # Only a checkpoint written after the signal counts (one is written after the load, too).
    written = [
        r
        for r in log_records(real.log_path)
        if r.get("msg") == "checkpoint written" and (_epoch(r.get("ts")) or 0.0) >= sent_wall - 0.5
    ]
    if not written:
        failed = [r for r in log_records(real.log_path) if "checkpoint" in str(r.get("msg"))]
        out.setdefault(
            "checkpoint_error",
            'no "checkpoint written" in the service\'s log'
            + (f"; it logged: {failed[-1]}" if failed else ""),
        )
        return
    at = _epoch(written[-1].get("ts"))
    if at is not None:
        out["shutdown_s"] = max(0.0, at - sent_wall)  # log timestamps are to the millisecond
    with contextlib.suppress(TypeError, ValueError):
        out["write_s"] = float(written[-1]["seconds"])
    out["checkpoint_rooms"] = written[-1].get("rooms")
    log(
        f"checkpoint written {out.get('shutdown_s', float('nan')):.2f} s after SIGTERM "
        f"(writing took {out.get('write_s', float('nan')):.2f} s); exited after "
        f"{out.get('exit_s', float('nan')):.2f} s"
    )


def restart(
    args: argparse.Namespace,
    results: Results,
    checkpoints: Path,
    log_dir: Path,
    queries: list[Query],
    answers: list[Answer],
    logins: dict[str, Login],
) -> None:
    """A new service with only ``--checkpoint-dir``: the time to /readyz 200 from the checkpoint
    the first one wrote, on every core; then the polling queries must answer as before."""
    out = results.startup
    if "checkpoint_error" in out and "shutdown_s" not in out:
        out["restart_error"] = "no checkpoint to start from (see the shutdown)"
        return
    proc = start_service(
        "service-restarted",
        None,
        log_dir,
        extra_args=["--checkpoint-dir", str(checkpoints), "--log-level", "info"],
        cpu=None,
    )
    try:
        port = proc.port()
        log(f"restarted service pid {proc.pid} on :{port}, from the checkpoint")
        out["restart_s"] = wait_ready(proc, port, args.ready_timeout)
        out["restart_rss"] = proc.rss_bytes()
        log(
            f"ready from the checkpoint in {out['restart_s']:.2f} s, "
            f"{out['restart_rss'] / 2**20:,.0f} MiB RSS"
        )
        again = [fetch(port, q, logins) for q in queries]
        out["restart_differ"] = sum(
            1
            for a, b in zip(answers, again, strict=True)
            if (a.status, a.body) != (b.status, b.body)
        )
    except BenchError as exc:
        out["restart_error"] = str(exc)
    finally:
        proc.stop()
    loaded = [r for r in log_records(proc.log_path) if r.get("msg") == "snapshot loaded"]
    if loaded:
        out["restart_from"] = str(loaded[-1].get("snapshot", "?"))


def _total(answer: Answer) -> int:
    found = _TOTAL.search(answer.body[-120:])
    return int(found.group(1)) if found else 0


def compare_metrics(
    args: argparse.Namespace,
    results: Results,
    stack: contextlib.ExitStack,
    snapshot: Path,
    log_dir: Path,
    wrk: str,
    script: Path,
    real: Process,
) -> None:
    """The polling mix against a second service started with VOIP_ROOMS_METRICS=off."""
    off = start_service("service-metrics-off", snapshot, log_dir, {"VOIP_ROOMS_METRICS": "off"})
    stack.callback(off.stop)
    try:
        port = off.port(args.ready_timeout)
        wait_ready(off, port, args.ready_timeout)
    except BenchError as exc:
        results.metrics_note = (
            f"unavailable: the service did not start with VOIP_ROOMS_METRICS=off ({exc})"
        )
        log(results.metrics_note)
        return
    on_port = real.port()
    for r in range(args.rounds):
        order = (("on", real, on_port), ("off", off, port))
        for name, proc, p in order if r % 2 == 0 else order[::-1]:
            seed = str(random.randrange(1 << 30))
            run = run_wrk(wrk, script, p, args.duration, proc, f"metrics-{name}", "polling", [seed])
            results.runs.append(run)
    counted = _metrics_counted(port)
    if counted is None:
        results.metrics_note = "metrics off: /metrics does not answer (expected when off)"
    elif counted:
        results.metrics_note = (
            "unavailable: with VOIP_ROOMS_METRICS=off the service still counts requests in "
            "/metrics, so the setting is not implemented (the figures below compare two "
            "identical servers)"
        )
    else:
        results.metrics_note = "metrics off: /metrics holds no request counts (setting honored)"
    off.stop()


def profile(real: Process, mix: str, run: Callable[[], Run], work: Path) -> str:
    """py-spy over one more run of a mix: where the service's time goes."""
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not Path(spy).exists():
        return "py-spy not installed (pip install py-spy)"
    raw = work / f"profile-{mix}.txt"
    argv = [spy, "record", "--pid", str(real.pid), "--rate", "250", "--nonblocking"]
    recorder = subprocess.Popen(
        [*argv, "--format", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        time.sleep(1)
        done = run()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(recorder.pid, signal.SIGINT)
        try:
            _, err = recorder.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(recorder.pid, signal.SIGKILL)
            _, err = recorder.communicate(timeout=5)
    if not raw.exists():
        return f"py-spy failed: {err.decode(errors='replace')[-500:]}"
    kept = DATA_DIR / f"profile-{mix}.txt"
    shutil.copy(raw, kept)
    head = f"{done.rps:,.0f} req/s under py-spy (sampling slows the service). "
    return head + summarize_profile(raw.read_text(), kept)


def _area(path: str) -> str:
    """The part of the stack a file (as py-spy names it, e.g. ``aiohttp/web.py``) belongs to."""
    parts = path.split("/")
    if "service" in parts:
        return "/".join(parts[parts.index("service") :])
    for names, area in (
        (("aiohttp", "multidict", "yarl", "propcache"), "aiohttp (+ multidict, yarl)"),
        (("uvloop", "asyncio"), "event loop and socket I/O (uvloop, asyncio; C time shows here)"),
        (("prometheus_client",), "prometheus_client"),
        (("pyroaring",), "pyroaring"),
        (("orjson",), "orjson"),
    ):
        if any(name in parts for name in names):
            return area
    return "python stdlib / other" if path else "native / unknown"


def summarize_profile(collapsed: str, kept: Path) -> str:
    """Own time by area and by function, inclusive time by function, from collapsed stacks."""
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        own[_short(leaf)] += n
        areas[_area(leaf.partition(" (")[2].rstrip(")").rsplit(":", 1)[0])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    if not total:
        return "py-spy recorded no samples."
    rows = [
        f"{total:,} samples (collapsed stacks: `{kept.relative_to(ROOT)}`). Own time of a "
        "Python function includes the C it calls (socket writes show under aiohttp's "
        "`_writelines`, the loop's own C under `Runner.run`).",
        "",
    ]
    rows += ["| share | own time in area |", "|---:|---|"]
    rows += [f"| {n / total:.1%} | {a} |" for a, n in areas.most_common()]
    rows += ["", "| share | own time in function |", "|---:|---|"]
    rows += [f"| {n / total:.1%} | `{f}` |" for f, n in own.most_common(15)]
    rows += ["", "| share | inclusive time in function |", "|---:|---|"]
    # Leave out the frames every request sits under (runpy, cli, the event loop's run).
    loop = max((n for f, n in inclusive.items() if f.startswith("Runner.run ")), default=total)
    shown = [(f, n) for f, n in inclusive.most_common() if n < loop][:20]
    rows += [f"| {n / total:.1%} | `{f}` |" for f, n in shown]
    return "\n".join(rows)


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(where).name})" if where else name


def run_query_times(args: argparse.Namespace, results: Results, snapshot: Path) -> None:
    """The in-process figures: ``tests/bench/query_times.py --json`` on core 0 (the servers are
    stopped by then), into ``results.inprocess``; ``results.inprocess_note`` says why not."""
    with tempfile.TemporaryDirectory(prefix="voip-bench-") as tmp:
        out = Path(tmp) / "inprocess.json"
        argv = [*NICE, "taskset", "-c", SERVER_CPU, *python_cmd(), "-m", "tests.bench.query_times"]
        argv += ["--rooms", str(args.rooms), "--seed", str(args.seed), "--snapshot", str(snapshot)]
        argv += ["--events", str(args.events), "--runs", str(args.query_runs), "--json", str(out)]
        shown = "python -m tests.bench.query_times " + shlex.join(argv[argv.index("--rooms") :])
        shown = shown.replace(str(out), "FILE").replace(str(ROOT) + "/", "")
        log("running " + shown)
        try:
            done = subprocess.run(
                argv, cwd=ROOT, capture_output=True, text=True, timeout=args.query_times_timeout
            )
        except subprocess.TimeoutExpired:
            results.inprocess_note = (
                f"`{shown}` did not finish within {args.query_times_timeout:g} s"
            )
            return
        if done.returncode != 0 or not out.exists():
            tail = done.stderr[-1500:]
            results.inprocess_note = f"`{shown}` failed ({done.returncode}):\n\n```\n{tail}\n```"
            return
        results.inprocess = json.loads(out.read_text())
        results.inprocess_note = shown
        log(done.stdout.strip().rsplit("\n", 1)[-1])


# --- report ---------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _fmt(values: Sequence[float], spec: str) -> str:
    return " / ".join(format(v, spec) for v in values)


Row = tuple[str, str, str, str, str]


def _verdict(value: float, target: float, higher: bool) -> str:
    if value != value:  # NaN
        return "n/a"
    return "PASS" if (value >= target if higher else value <= target) else "FAIL"


def _row(label: str, measured: str, value: str, target: str = "", verdict: str = "") -> Row:
    return (label, measured, value, target, verdict)


def _judged(
    label: str, measured: str, value: float, spec: str, key: str, higher: bool, target: str
) -> Row:
    """An informative figure: its value against ``EARLIER_TARGETS[key]``, with the verdict."""
    verdict = _verdict(value, EARLIER_TARGETS[key], higher)
    return _row(label, measured, format(value, spec), target, verdict)


def _both(*verdicts: str) -> str:
    """PASS when every part passes; n/a when one is unknown."""
    if "n/a" in verdicts:
        return "n/a"
    return "PASS" if all(v == "PASS" for v in verdicts) else "FAIL"


NAN = float("nan")


def main_figures(results: Results) -> list[Row]:
    """(figure, measured, value, target, verdict): the target figures, one a row, in order."""
    up = results.startup
    rooms = int(up.get("rooms") or results.facts.get("rooms", "0"))
    rows: list[Row] = []

    ready = float(up.get("ready_s", NAN))
    rate = rooms / ready if ready == ready and ready > 0 else NAN
    rows.append(
        _row(
            "ready from the snapshot (s)",
            f"{rooms:,} rooms, service start to /readyz 200: {rate:,.0f} rooms/s",
            f"{ready:.2f}",
            f"<= {TARGETS['ready_s']:g} s and >= {TARGETS['ready_rooms_s']:,} rooms/s",
            _both(
                _verdict(ready, TARGETS["ready_s"], False),
                _verdict(rate, TARGETS["ready_rooms_s"], True),
            ),
        )
    )

    restart = float(up.get("restart_s", NAN))
    if "restart_error" in up:
        measured = "unavailable: " + str(up["restart_error"]).splitlines()[0][:200]
    else:
        source = Path(str(up.get("restart_from", "?"))).name
        differ = up.get("restart_differ", 0)
        measured = f"started with --checkpoint-dir only, loaded {source}; " + (
            f"{differ} polling answers DIFFER" if differ else "polling answers as before"
        )
    verdict = _verdict(restart, TARGETS["restart_s"], False)
    if up.get("restart_differ"):
        verdict = "FAIL"
    rows.append(
        _row(
            "ready from a checkpoint (s)",
            measured,
            f"{restart:.2f}",
            f"<= {TARGETS['restart_s']:g} s",
            verdict,
        )
    )

    rss = float(up.get("rss_bytes") or NAN)
    rows.append(
        _row(
            "resident memory once ready (GiB)",
            f"VmRSS after /readyz 200: {rss / 2**20:,.0f} MiB, {rss / max(1, rooms):,.0f} B/room",
            f"{rss / 2**30:.2f}",
            f"<= {TARGETS['rss_bytes'] / 2**30:g} GiB",
            _verdict(rss, TARGETS["rss_bytes"], False),
        )
    )

    shutdown_s = float(up.get("shutdown_s", NAN))
    if "shutdown_s" not in up and "checkpoint_error" in up:
        measured = "unavailable: " + str(up["checkpoint_error"]).splitlines()[0][:200]
    else:
        measured = (
            f"after {int(up.get('shutdown_events', 0)):,} feed events, "
            f'SIGTERM to "checkpoint written" (writing {float(up.get("write_s", NAN)):.2f} s); '
            f"exited after {float(up.get('exit_s', NAN)):.2f} s"
        )
    rows.append(
        _row(
            "shutdown checkpoint written (s)",
            measured,
            f"{shutdown_s:.2f}",
            f"<= {TARGETS['shutdown_s']:g} s",
            _verdict(shutdown_s, TARGETS["shutdown_s"], False),
        )
    )

    figures = results.inprocess
    if figures is None:
        for label, target in (
            ("events applied in process (events/s)", f">= {TARGETS['events_s']:,}"),
            ("in-process p99, every query class (ms)", f"<= {TARGETS['query_p99_ms']:g} ms"),
        ):
            rows.append(_row(label, "unavailable (see below)", "-", target, "n/a"))
    else:
        apply = figures["apply"]
        merges = apply.get("merges")
        merged = "merges not counted" if merges is None else f"{sum(merges.values()):,} merges"
        rows.append(
            _row(
                "events applied in process (events/s)",
                f"{apply['events']:,} events on {apply['rooms']:,} rooms; {merged}",
                f"{apply['events_per_s']:,.0f}",
                f">= {TARGETS['events_s']:,}",
                _verdict(apply["events_per_s"], TARGETS["events_s"], True),
            )
        )
        queries = figures["queries"]
        worst = max(queries, key=lambda q: float(q["p99_ms"]))
        within = sum(1 for q in queries if q["p99_ms"] <= TARGETS["query_p99_ms"])
        rows.append(
            _row(
                "in-process p99, every query class (ms)",
                f"worst: {worst['class'].removeprefix('* ')}; {within} of {len(queries)} "
                "classes within",
                f"{worst['p99_ms']:.3f}",
                f"<= {TARGETS['query_p99_ms']:g} ms",
                _verdict(worst["p99_ms"], TARGETS["query_p99_ms"], False),
            )
        )

    real, ceiling = results.of("real", "distinct"), results.of("ceiling", "distinct")
    ratios = [a.rps / b.rps for a, b in zip(real, ceiling, strict=False) if b.rps]
    rps, ratio = _median([r.rps for r in real]), _median(ratios)
    rows.append(
        _row(
            "distinct mix through HTTP, one core (req/s)",
            f"per round {_fmt([r.rps for r in real], ',.0f')} req/s; ceiling "
            f"{_fmt([c.rps for c in ceiling], ',.0f')}; ratio {_fmt(ratios, '.2f')}",
            f"{rps:,.0f} ({ratio:.2f} of ceiling)",
            f">= {TARGETS['distinct_rps']:,} req/s and >= {TARGETS['distinct_ratio']:g} of the "
            "ceiling",
            _both(
                _verdict(rps, TARGETS["distinct_rps"], True),
                _verdict(ratio, TARGETS["distinct_ratio"], True),
            ),
        )
    )
    return rows


def _pair(a: Sequence[float], b: Sequence[float], spec: str) -> tuple[str, str]:
    """'a1 / a2 ; b1 / b2' and 'median a ; median b'."""
    return (
        f"{_fmt(a, spec)} ; {_fmt(b, spec)}",
        f"{_median(a):{spec}} ; {_median(b):{spec}}",
    )


def earlier_figures(results: Results) -> list[Row]:
    """(figure, measured, value, target, verdict) rows of an earlier round's figures, against
    its targets: informative."""
    rows: list[Row] = []
    for mix in ("polling", "distinct"):
        real, ceiling = results.of("real", mix), results.of("ceiling", mix)
        ratios = [a.rps / b.rps for a, b in zip(real, ceiling, strict=False) if b.rps]
        label, med = f"{mix} mix throughput / ceiling", _median(ratios)
        rows.append(
            _judged(label, _fmt(ratios, ".2f"), med, ".2f", mix, True, f">= {EARLIER_TARGETS[mix]}")
        )
        per_cpu = [
            (a.rps / a.server_cpu) / (b.rps / b.server_cpu)
            for a, b in zip(real, ceiling, strict=False)
            if a.server_cpu > 0 and b.server_cpu > 0 and b.rps
        ]
        rows.append(
            _row(
                f"  {mix}: same per server CPU-second",
                _fmt(per_cpu, ".2f"),
                f"{_median(per_cpu):.2f}",
            )
        )
        rows.append(
            _row(
                f"  {mix}: real ; ceiling req/s",
                *_pair([r.rps for r in real], [c.rps for c in ceiling], ".0f"),
            )
        )
    rows += _revalidation_rows(results)
    rows += _latency_rows(results)
    rows += _inprocess_rows(results)
    on, off = results.of("metrics-on", "polling"), results.of("metrics-off", "polling")
    if on or results.metrics_note:
        ratios = [b.rps / a.rps for a, b in zip(on, off, strict=False) if a.rps]
        available = bool(ratios) and not (results.metrics_note or "").startswith("unavailable")
        rows.append(
            (
                "polling throughput, metrics off / on",
                _fmt(ratios, ".2f") if ratios else "-",
                f"{_median(ratios):.2f}" if available else "unavailable",
                "(informative)",
                "",
            )
        )
    return rows


def _revalidation_rows(results: Results) -> list[Row]:
    reval, cached = results.of("real", "reval"), results.of("real", "full")
    built = results.of("no-cache", "full")
    # Per-request time is 1 / throughput: the server is saturated on its core in these runs.
    old = [c.rps / r.rps for r, c in zip(reval, cached, strict=False) if r.rps]
    target = f"<= {EARLIER_TARGETS['reval']}"
    if not built:
        label = "304 revalidation cost / full answer cost (fallback: / cached 200)"
        return [
            _judged(label, _fmt(old, ".2f"), _median(old), ".2f", "reval", False, target),
            _row(
                "  304 ; cached 200 req/s",
                *_pair([r.rps for r in reval], [c.rps for c in cached], ".0f"),
            ),
        ]
    costs = [b.rps / r.rps for r, b in zip(reval, built, strict=False) if r.rps]
    per_cpu = [
        (r.server_cpu / r.rps) / (b.server_cpu / b.rps)
        for r, b in zip(reval, built, strict=False)
        if r.rps and b.rps and b.server_cpu > 0
    ]
    label = "304 revalidation cost / full answer cost"
    return [
        _judged(label, _fmt(costs, ".2f"), _median(costs), ".2f", "reval", False, target),
        _row(
            "  304: same in server CPU time per request",
            _fmt(per_cpu, ".2f"),
            f"{_median(per_cpu):.2f}",
        ),
        _row(
            "  304 ; full answer (no response cache) req/s",
            *_pair([r.rps for r in reval], [b.rps for b in built], ".0f"),
        ),
        _row(
            "  304 / cached 200 (the former definition)",
            _fmt(old, ".2f"),
            f"{_median(old):.2f}",
            "(informative)",
        ),
        _row(
            "  cached 200 req/s",
            _fmt([c.rps for c in cached], ".0f"),
            f"{_median([c.rps for c in cached]):.0f}",
        ),
    ]


def _latency_rows(results: Results) -> list[Row]:
    paced = results.of("real", "paced")
    p99 = [r.p99_ms for r in paced]
    label = f"p99 latency at {CONNECTIONS} connections, distinct mix, at R (ms)"
    headline = _judged(
        label,
        _fmt(p99, ".2f"),
        _median(p99),
        ".2f",
        "p99_ms",
        False,
        f"<= {EARLIER_TARGETS['p99_ms']:g} ms",
    )
    reached = _median([r.rps / r.offered for r in paced if r.offered])
    short = reached < SHORT_OF_RATE
    if short and headline[4] == "PASS":
        headline = (*headline[:4], "SHORT")  # within the target, but not at the rate it asks for
    closed = [r.p99_ms for r in results.of("real", "distinct")]
    return [
        headline,
        _row(
            "  R = ½ ceiling distinct req/s ; achieved req/s",
            *_pair([r.offered for r in paced], [r.rps for r in paced], ".0f"),
            f"achieved {reached:.0%} of R" if reached == reached else "",
            f"well short of R (< {SHORT_OF_RATE:.0%})" if short else "",
        ),
        _row(
            f"  closed-loop p99 at {CONNECTIONS} connections, distinct (ms)",
            _fmt(closed, ".2f"),
            f"{_median(closed):.2f}",
            "(informative)",
        ),
    ]


def _inprocess_rows(results: Results) -> list[Row]:
    figures = results.inprocess
    if figures is None:
        return []
    rooms, load, memory = figures["rooms"], figures["load"], figures["memory"]
    return [
        _judged(
            "snapshot load, in process (rooms/s)",
            f"{rooms:,} rooms in {load['seconds']:.2f} s",
            load["rooms_per_s"],
            ",.0f",
            "load_rooms_s",
            True,
            ">= 100,000",
        ),
        _judged(
            "resident memory added by the data, in process (B/room)",
            f"{memory['added_bytes'] / 2**20:,.0f} MiB for {rooms:,} rooms",
            memory["per_room_bytes"],
            ",.0f",
            "bytes_per_room",
            False,
            "<= 2 KB (2,048 B)",
        ),
    ]


def table(rows: list[Row], measured: str = "measured (per round)") -> str:
    head = ("figure", measured, "value (median)", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in [head, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def classes_table(queries: list[dict[str, Any]]) -> str:
    """The in-process query classes, one a row."""
    limit = TARGETS["query_p99_ms"]
    rows = [
        "| class | total (median) | median ms | p99 ms | max ms | cpu p99 ms | "
        f"p99 <= {limit:g} ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for q in queries:
        rows.append(
            f"| {q['class']} | {q['median_total']:,} | {q['median_ms']:.3f} | "
            f"{q['p99_ms']:.3f} | {q['max_ms']:.3f} | {q['cpu_p99_ms']:.3f} | "
            f"{_verdict(q['p99_ms'], limit, False)} |"
        )
    return "\n".join(rows)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return (
        f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), {cpu}, {mem} RAM; "
        f"Linux {platform.release()}; Python {platform.python_version()}"
    )


def _versions() -> str:
    out = []
    for name in ("aiohttp", "uvloop", "orjson"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            out.append(f"{name} {version(name)}")
    return ", ".join(out)


def _commit() -> str:
    commit = output(["git", "rev-parse", "--short", "HEAD"], 10).strip() or "unknown"
    dirty = output(["git", "--no-optional-locks", "status", "--porcelain", "-uno"], 10)
    return commit + (" + uncommitted changes" if dirty.strip() else "")


def report(args: argparse.Namespace, results: Results, command: str) -> str:
    out = [
        "# voip-rooms benchmark",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Load average at start: {results.facts.get('loadavg', '?')} (other engineers' "
        "jobs share the machine: see the `other cpu` column)",
        f"- Software: {_versions()}, {results.facts.get('wrk', 'wrk')}; commit {_commit()}",
        f"- Command: `{command}`",
        f"- Data: {args.rooms:,} demo rooms (seed {args.seed}), `.bench-data/{args.rooms}-"
        f"{args.seed}`",
        f"- Load: wrk -t1 -c{CONNECTIONS} --latency, {args.duration:g} s per run, "
        f"{args.rounds} rounds (real and ceiling alternate which goes first), "
        f"{args.warmup:g} s warm-up; server on core {SERVER_CPU}, wrk on core {CLIENT_CPU}",
        f"- Polling mix: {results.facts.get('polling', '')}; 20% of requests revalidate with "
        "the ETag recorded from that query's last 200",
        f"- Distinct mix: {results.facts.get('distinct', '')}",
        f"- In process: `{results.inprocess_note}`"
        if results.inprocess is not None
        else f"- In process: unavailable: {results.inprocess_note or 'skipped (--no-query-times)'}",
        "",
        table(main_figures(results), "measured"),
        "",
        *DEFINITIONS,
        "",
        "## Other figures (informative, against an earlier round's targets)",
        "",
        table(earlier_figures(results)),
        "",
        *EARLIER_DEFINITIONS,
        "",
    ]
    if results.notes:
        out += ["Notes:", "", *[f"- {n}" for n in results.notes], ""]
    if results.metrics_note:
        out += [f"Metrics comparison: {results.metrics_note}.", ""]
    if results.inprocess is not None:
        out += _inprocess_section(results.inprocess)
    if results.kind_times:
        out += [
            "## Distinct queries one at a time, by kind",
            "",
            "Wall time of the sizing sample (never sent by wrk), one request at a time over "
            "urllib, before any load: the service time of an uncached answer, plus ~0.3 ms of "
            "client and loopback.",
            "",
            "| kind | requests | p50 ms | p90 ms | max ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, times in sorted(results.kind_times.items()):
            ordered = sorted(times)
            p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
            out.append(
                f"| {kind} | {len(times)} | {statistics.median(times):.2f} | {p90:.2f} | "
                f"{ordered[-1]:.2f} |"
            )
        out.append("")
    out += ["## Every run", "", _runs_table(results.runs), ""]
    out += [
        "## Method",
        "",
        "- The real service: `python -m service serve --snapshot DIR --checkpoint-dir DIR2 "
        "--checkpoint-interval 86400 --port 0 --host 127.0.0.1 --drain-seconds 0 --log-level "
        "info` (its port read from `--port-file`), loading alone on every core; ready when "
        "`/readyz` answers 200. The second one, for the full answer cost, adds "
        "`--response-cache 0` (no checkpoints) and loads next. Then both move to core 0 "
        "(every thread, with `sched_setaffinity`), where the second idles except in its own "
        "runs. After the runs, the first is stopped with SIGTERM (its checkpoint is timed) and a "
        "third starts from that checkpoint alone (`--checkpoint-dir DIR2`, no `--snapshot`).",
        "- The ceiling (`tests/bench/ceiling.py`): aiohttp on uvloop with the service's "
        "`SERVER_LIMITS`, access log off, no middleware, no auth, no parsing, no lookup; one "
        "prebuilt body per mix of the mean size of the real answers (fetched once with urllib), "
        "an ETag, and a 304 when `If-None-Match` is present. Also under `taskset -c 0`.",
        "- Scripts: `tests/bench/fixed.lua` (polling, reval, full) and "
        "`tests/bench/distinct.lua` (distinct, paced), filled in by `tests/bench/http.py` with "
        "the demo credentials and with queues, agents, tags and name fragments sampled from the "
        "snapshot. Every wrk run is bounded (its duration plus 60 s, requests time out at 5 s).",
        "- `server cpu` is the service's CPU time over the run's wall time (1.00 = core 0 busy "
        "all along); when the ceiling is well below 1.00, wrk (core 1) is the limit instead. "
        "`other cpu` is what the rest of the machine used meanwhile, in cores: above ~0.3 it "
        "competes for the benchmark's cores. The `per server CPU-second` ratios divide each "
        "throughput by the server's CPU share, which is steadier when the machine is shared.",
        "- In process (`tests/bench/query_times.py`, after the servers stopped, on core 0): "
        "the same snapshot, loaded by `service.feed.snapshot.load_snapshot`; its figures come "
        "back as JSON (`--json`).",
        "",
    ]
    for mix, summary in results.profiles.items():
        out += [f"## Where the time goes: {mix} mix (py-spy over one extra run)", "", summary, ""]
    return "\n".join(out)


DEFINITIONS = [
    "How each figure is measured:",
    "",
    "- **ready from the snapshot**: `python -m service serve --snapshot DIR --checkpoint-dir "
    "EMPTY` on every core (not pinned, so a load in worker processes can use both), alone on "
    "the machine; seconds from the process's start (interpreter start and imports included) "
    "until `/readyz` answers 200, polled every 50 ms; rooms per second of that.",
    "- **ready from a checkpoint**: after the SIGTERM below, a new service with only the same "
    "`--checkpoint-dir` (no `--snapshot`, which it would prefer at an equal feed position), "
    "on every core: start to `/readyz` 200. Its log must name the checkpoint it loaded, and the "
    "polling queries must answer with the same bodies as the first service's.",
    "- **resident memory once ready**: `VmRSS` of the service (`/proc/PID/status`) right after "
    "its first `/readyz` 200, before any request.",
    "- **shutdown checkpoint written**: at the end of the HTTP runs, the service applies 5,000 "
    "feed events of the demo simulator (through a file feed, empty until then), so that it holds "
    "a state no checkpoint holds yet; then SIGTERM to that service "
    '(`--drain-seconds 0`); seconds from the signal to the timestamp of its "checkpoint '
    "written\" log line, with the line's own `seconds` (the writing) and the time to exit.",
    "- **events applied in process**: `Replica.handle` (decode + apply) on feed events "
    "continuing the demo snapshot, as JSON bytes, against the loaded store, after five "
    "simulated minutes of them applied untimed (`tests/bench/apply.py`); the merges are those "
    "of the sort orders' change buffers during the timed events.",
    "- **in-process p99, every query class**: `RoomStore.page` in a loop, per query class "
    "(table below), wall time; the figure is the worst class's p99. The classes marked `*` "
    "are those of the distinct mix (`tests/bench/mix.py`), each kind once per sort.",
    "- **distinct mix through HTTP, one core**: wrk (core 1) sending requests of the classes "
    "of `tests/bench/mix.py`, none repeated, to the service pinned to core 0; req/s, and over "
    "those of the ceiling (aiohttp serving one prebuilt answer of the mix's mean size, also on "
    "core 0) in the same round; the median of the rounds.",
]
EARLIER_DEFINITIONS = [
    "- **throughput / ceiling**: requests per second of the service over those of the ceiling "
    "on the same mix, each run against the ceiling run beside it in its round; the median of "
    "the rounds. The polling mix: 20 fixed dashboard queries, 20% of them revalidated.",
    "- **304 revalidation cost / full answer cost**: per-request time (1 / throughput; the "
    "server is saturated on its core) of the polling queries each sent with the ETag of its "
    "current answer (`reval`: answered 304 by the service), over that of the same queries "
    "without `If-None-Match` on a second service started with `--response-cache 0`, which "
    "builds every answer (`full` on `no-cache`). The informative row divides by cached 200s of "
    "the normal service instead: both come from the response cache, so it measures little more "
    "than the body write.",
    f"- **p99 latency at {CONNECTIONS} connections**: the distinct mix at a fixed offered "
    f"rate R, half of the ceiling's distinct throughput in the same round: each of the "
    f"{CONNECTIONS} connections waits an exponential think time of mean {CONNECTIONS}/R s "
    "before each request (wrk's `delay()`), so together they offer about R req/s; wrk times a "
    f"request from its send, after the wait. A paced run reaching under {SHORT_OF_RATE:.0%} of "
    "R is marked; one that also meets the latency target is SHORT, not PASS.",
    "- **snapshot load, in process**: rooms per second of `load_snapshot` into an empty store, "
    "in `query_times.py`'s process (pinned to core 0).",
    "- **resident memory added by the data, in process**: RSS after that load (and "
    "`gc.freeze()`, as the replica does) minus RSS before it, per room; 2 KB taken as 2,048 B.",
]


def _inprocess_section(figures: dict[str, Any]) -> list[str]:
    apply = figures["apply"]
    kinds = ", ".join(f"{k} {n:,}" for k, n in apply["kinds"].items())
    outcomes = ", ".join(f"{k} {n:,}" for k, n in apply["results"].items())
    return [
        "## In process, by query class",
        "",
        f"{figures['rooms']:,} rooms; each class {figures['queries'][0]['runs']} times, with "
        "values drawn from the snapshot; `*`: a class of the distinct mix (`mix.py`); `total` "
        "is the median match count; `cpu` is the thread's CPU time, a check on wall times when "
        "the machine is shared.",
        "",
        classes_table(figures["queries"]),
        "",
        f"Events applied: {apply['events']:,} after {apply['warmup_events']:,} untimed, "
        f"{apply['us_per_event']:.1f} us each: {kinds}; results: {outcomes}; "
        f"{merges_text(apply)}.",
        "",
    ]


def _runs_table(runs: list[Run]) -> str:
    rows = [
        "| mix | target | req/s | p50 ms | p99 ms | server cpu | wrk cpu | other cpu "
        "| statuses | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in runs:
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(r.statuses.items())) or "-"
        errors = ", ".join(f"{k} {v}" for k, v in r.errors.items() if v) or "-"
        rows.append(
            f"| {r.mix} | {r.target} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.server_cpu:.2f} | {r.client_cpu:.2f} | {r.other_cpu:.2f} | {statuses} | "
            f"{errors} |"
        )
    return "\n".join(rows)


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.http",
        description="Benchmark voip-rooms over HTTP against a minimal aiohttp ceiling.",
    )
    parser.add_argument("--rooms", type=int, default=1_000_000, help="demo rooms (1000000)")
    parser.add_argument("--seed", type=int, default=1, help="demo data seed (1)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (3)")
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds per server and mix (2, at most --duration)"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "RESULTS.md", help="report (tests/bench/RESULTS.md)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=1200, help="seconds to wait for /readyz (1200)"
    )
    parser.add_argument(
        "--compare-metrics",
        action="store_true",
        help="also compare the polling mix with VOIP_ROOMS_METRICS=off against on",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the service over one more distinct run"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="run servers and wrk under nice -n N (e.g. -10 on a shared machine; root only)",
    )
    parser.add_argument(
        "--no-query-times",
        action="store_true",
        help="skip the in-process figures (tests/bench/query_times.py)",
    )
    parser.add_argument(
        "--events", type=int, default=200_000, help="feed events applied in process (200000)"
    )
    parser.add_argument(
        "--query-runs", type=int, default=500, help="in-process queries per class (500)"
    )
    parser.add_argument(
        "--query-times-timeout",
        type=float,
        default=1800,
        help="seconds query_times.py may take (1800)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rooms < 1000 or args.duration <= 0 or args.rounds < 1:
        raise SystemExit("need --rooms >= 1000, --duration > 0, --rounds >= 1")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("the benchmark needs 2 cores (server on core 0, wrk on core 1)")
    if args.warmup is None:
        args.warmup = min(2.0, args.duration)
    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]
    command = "python -m tests.bench.http " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = Results(facts={"rooms": str(args.rooms)})
    try:
        with contextlib.ExitStack() as stack:
            # SIGTERM (e.g. make interrupted) unwinds like Ctrl-C, so the stack stops children.
            signal.signal(signal.SIGTERM, raise_interrupt)
            bench(args, results, stack)
        if not args.no_query_times:
            run_query_times(args, results, DATA_DIR / f"{args.rooms}-{args.seed}")
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    text = report(args, results, command)
    args.out.write_text(text)
    print()
    print(table(main_figures(results), "measured"))
    if results.metrics_note:
        print(f"\nMetrics comparison: {results.metrics_note}")
    print(f"\nwritten to {args.out}")
    return 0


def raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: the with-blocks stop every process started."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
