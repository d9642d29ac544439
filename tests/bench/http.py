"""HTTP benchmark: the real service against a minimal aiohttp ceiling, under wrk, in A/B rounds.

    python -m tests.bench.http [--rooms N] [--duration S] [--rounds R] [--out FILE]

Generates (or reuses, under ``.bench-data/<rooms>-<seed>``) a demo snapshot, starts the service
(``python -m service serve``: the ``voip-rooms serve`` command line, without depending on the
venv's console script) and the ceiling (``tests/bench/ceiling.py``) pinned to core 0, and drives
them with wrk pinned to core 1. Mixes: ``polling`` (20 dashboard queries, ~20% revalidations),
``distinct`` (no request repeats, so no cache answers), and the revalidation cost pair
(``reval``: only matching ``If-None-Match``, against ``full``: the same queries without it).
Rounds alternate the order of real and ceiling; medians of per-round ratios are reported and
written to ``tests/bench/RESULTS.md``. Every wait is bounded; every process started is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import gzip
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

from tests.net import free_port

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DATA_DIR = ROOT / ".bench-data"
ROUTE = "/api/v1/voip/rooms"
HOST = "127.0.0.1"
SERVER_CPU, CLIENT_CPU = "0", "1"
CONNECTIONS = 64
PAGE = 50
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DISTINCT_LINES = 200_000  # requests written for the distinct mix; runs take successive slices
SIZE_SAMPLE = 200  # distinct requests fetched once to learn answer sizes (never sent by wrk)
TARGETS = {
    "polling": 0.85,
    "distinct": 0.5,
    "reval": 0.33,
    "p99_ms": 10.0,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure the harness reports in one line and exits on."""


# --- data ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    label: str
    user_id: str
    token: str


def ensure_data(rooms: int, seed: int) -> tuple[Path, dict[str, Login]]:
    """The cached snapshot ``.bench-data/<rooms>-<seed>`` and its logins; generated if absent,
    incomplete or so old that its login tokens are near expiry."""
    from service.demo import read_demo_state, write_snapshot

    directory = DATA_DIR / f"{rooms}-{seed}"
    creds_file = DATA_DIR / f"{rooms}-{seed}.credentials.json"
    if (directory / "manifest.json").exists() and creds_file.exists():
        try:
            _, _, now_ms = read_demo_state(directory)
            age_days = (time.time() * 1000 - now_ms) / DAY_MS
        except (OSError, ValueError, KeyError):
            age_days = 1e9
        if age_days < 45:  # demo login tokens are valid for 60 days after the anchor at least
            raw = json.loads(creds_file.read_text())
            log(f"reusing {directory.relative_to(ROOT)}")
            return directory, {k: Login(k, v["user_id"], v["token"]) for k, v in raw.items()}
    log(f"generating {rooms:,} rooms into {directory.relative_to(ROOT)} (once; reused later)")
    shutil.rmtree(directory, ignore_errors=True)
    creds_file.unlink(missing_ok=True)
    started = time.monotonic()
    credentials = write_snapshot(directory, rooms, seed=seed)
    log(f"generated in {time.monotonic() - started:.0f} s")
    logins = {x.label: Login(x.label, x.user_id, x.token) for x in credentials.logins}
    logins.pop("expired", None)  # same user as "agent": keep the valid token
    creds_file.write_text(
        json.dumps({k: {"user_id": v.user_id, "token": v.token} for k, v in logins.items()})
    )
    return directory, logins


def _date_ms(value: Any) -> int | None:
    """Milliseconds of an Extended JSON date (relaxed or canonical), else None."""
    if not isinstance(value, dict) or "$date" not in value:
        return None
    inner = value["$date"]
    if isinstance(inner, dict):
        inner = inner.get("$numberLong", 0)
    if isinstance(inner, int | float):
        return int(inner)
    if isinstance(inner, str) and inner[:1].isdigit() and "-" not in inner:
        return int(inner)
    parsed = dt.datetime.fromisoformat(str(inner).replace("Z", "+00:00"))
    return int(parsed.timestamp() * 1000)


@dataclass(slots=True)
class Sample:
    """What the snapshot holds, from every n-th room: queues, agents, tags, names, the span."""

    queues: Counter[str] = field(default_factory=Counter)
    open_queues: Counter[str] = field(default_factory=Counter)
    agents: Counter[str] = field(default_factory=Counter)
    tags: Counter[str] = field(default_factory=Counter)
    names: list[str] = field(default_factory=list)
    first_ms: int = 2**62
    last_ms: int = 0
    rooms: int = 0


def sample_rooms(directory: Path, rooms: int, target: int = 5000) -> Sample:
    """Parse about ``target`` rooms spread over the whole file (it is in time order)."""
    import orjson

    files = [directory / "rooms.jsonl.gz", directory / "rooms.jsonl"]
    path = next((p for p in files if p.exists()), None)
    if path is None:
        raise BenchError(f"no rooms file in {directory}")
    stride = max(1, rooms // target)
    sample = Sample()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as lines:
        for n, line in enumerate(lines):
            if n % stride:
                continue
            doc = orjson.loads(line)
            if doc.get("t") != "v":
                continue
            sample.rooms += 1
            queue = doc.get("queue")
            if isinstance(queue, str):
                sample.queues[queue] += 1
                if "open" in doc:
                    sample.open_queues[queue] += 1
            served = doc.get("servedBy")
            if isinstance(served, dict) and isinstance(served.get("_id"), str):
                sample.agents[served["_id"]] += 1
            for tag in doc.get("tags") or ():
                if isinstance(tag, str):
                    sample.tags[tag] += 1
            if isinstance(doc.get("name"), str):
                sample.names.append(doc["name"])
            ts = _date_ms(doc.get("ts"))
            if ts is not None:
                sample.first_ms = min(sample.first_ms, ts)
                sample.last_ms = max(sample.last_ms, ts)
    if not sample.queues or not sample.agents or not sample.names:
        raise BenchError(f"the sample of {path} holds no queues, agents or names")
    return sample


# --- queries -------------------------------------------------------------------------------


def _iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _js(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


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
    names = _name_fragments(sample, random.Random(7), 2)
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


def _name_fragments(sample: Sample, rng: random.Random, n: int) -> list[str]:
    """Substrings of real room names: a word of the caller's name, or digits of the number."""
    out: list[str] = []
    while len(out) < n:
        name = rng.choice(sample.names)
        caller = name.rsplit("-", 1)[0]
        if caller.startswith("+"):
            start = rng.randrange(1, max(2, len(caller) - 5))
            fragment = caller[start : start + rng.choice((4, 5, 6))]
        else:
            word = rng.choice(caller.split() or [caller])
            fragment = word[: rng.choice((3, 4, 5, len(word)))]
            fragment = fragment.lower() if rng.random() < 0.7 else fragment.upper()
        if len(fragment) >= 3:
            out.append(fragment)
    return out


def distinct_queries(
    sample: Sample, logins: dict[str, Login], count: int, seed: int
) -> Iterator[Query]:
    """``count`` pairwise different queries over the same kinds as the polling mix.

    Every query carries a date bound with its own millisecond, so no two are equal even after
    normalization; offsets are first pages half the time, else uniform in 0..10000.
    """
    rng = random.Random(f"distinct/{seed}")
    now, first = sample.last_ms, sample.first_ms
    span = max(DAY_MS, now - first)
    agent = logins["agent"].user_id
    queues = list(sample.queues)
    agents = list(sample.agents)
    tags = list(sample.tags) or ["resolved"]
    fragments = _name_fragments(sample, rng, 3000)
    sorts = [_js({"ts": -1}), _js({"ts": 1}), _js({"callDuration": -1}), _js({"callStarted": -1})]
    seen: set[str] = set()
    n = 0
    while len(seen) < count:
        n += 1
        unique = n % 1000  # with the second drawn below, a bound hardly any other query has
        offset = PAGE * rng.randrange(5) if rng.random() < 0.5 else rng.randrange(10_001)
        kind = rng.choices(("open", "agent", "closed", "name", "duration"), (25, 20, 25, 15, 15))[0]
        width = rng.choice((1, 1, 2, 7, 7, 14, 30)) * DAY_MS
        end = now - rng.randrange(0, max(1, span - width)) // 1000 * 1000 + unique
        rng_range = {"start": _iso(end - width), "end": _iso(end)}
        user = rng.choice(("manager", "monitor", "admin"))
        params: list[tuple[str, object]]
        if kind == "open":
            start = now - rng.randrange(HOUR_MS, 3 * DAY_MS) // 1000 * 1000 - unique
            params = [("open", "true"), ("queue", rng.choice(queues))]
            params += [("createdAt", _js({"start": _iso(start)}))]
            params += [("sort", rng.choice(sorts[:2] + sorts[3:]))]
        elif kind == "agent":
            who = rng.choice(agents)
            if who == agent or rng.random() < 0.2:
                who, user = agent, "agent"
            params = [("agents", who), ("open", rng.choice(("false", "true")))]
            params += [("createdAt", _js(rng_range)), ("sort", rng.choice(sorts))]
        elif kind == "closed":
            picked = rng.sample(tags, min(len(tags), rng.choice((1, 1, 2, 3))))
            params = [("open", "false"), ("closedAt", _js(rng_range))]
            params += [("tags", t) for t in picked] + [("sort", rng.choice(sorts))]
        elif kind == "name":
            params = [("roomName", rng.choice(fragments)), ("createdAt", _js(rng_range))]
            params += [("sort", rng.choice(sorts))]
        else:
            params = [("queue", rng.choice(queues)), ("closedAt", _js(rng_range))]
            if rng.random() < 0.5:
                params.append(("direction", rng.choice(("inbound", "outbound"))))
            params.append(("sort", _js({"callDuration": rng.choice((-1, 1))})))
        params += [("offset", offset), ("count", PAGE)]
        query = Query(user, _path(params), kind)
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

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
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
    """Seconds until GET /readyz answers 200; BenchError if the process dies or time runs out."""
    started = time.monotonic()
    delay = 0.05
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
        delay = min(1.0, delay * 1.5)
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
    path: Path, requests_file: Path, queries: list[Query], logins: dict[str, Login]
) -> None:
    users, index = _lua_users(logins)
    with open(requests_file, "w") as out:
        for q in queries:
            out.write(f"{index[q.user]}\t{q.path}\n")
    data = users + f"REQUESTS_FILE = {_lua_string(str(requests_file))}\n"
    template = (HERE / "distinct.lua").read_text()
    path.write_text(template.replace("--@@DATA@@", data))


def run_wrk(
    wrk: str,
    script: Path,
    port: int,
    duration: float,
    server: Process,
    target: str,
    mix: str,
    args: Sequence[str] = (),
) -> Run:
    argv = [*NICE, "taskset", "-c", CLIENT_CPU, wrk, "-t1", f"-c{CONNECTIONS}"]
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
    )
    errs = sum(run.errors.values())
    log(
        f"{mix:<9} {target:<11} {run.rps:9.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
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
    query_times: str | None = None
    metrics_note: str | None = None
    profiles: dict[str, str] = field(default_factory=dict)
    kind_times: dict[str, list[float]] = field(default_factory=dict)

    def of(self, target: str, mix: str) -> list[Run]:
        return [r for r in self.runs if r.target == target and r.mix == mix]


def python_cmd() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "python"
    return [str(venv) if venv.exists() else sys.executable]


NICE: list[str] = []  # ["nice", "-n", N] when --nice N is given


def start_service(
    name: str, snapshot: Path, port: int, log_dir: Path, extra_env: dict[str, str] | None = None
) -> Process:
    argv = [*NICE, "taskset", "-c", SERVER_CPU, *python_cmd(), "-m", "service", "serve"]
    argv += ["--snapshot", str(snapshot), "--port", str(port), "--host", HOST]
    argv += ["--log-level", "warning", "--drain-seconds", "0", "--shutdown-timeout", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIP_ROOMS_")}
    env.update(extra_env or {})
    return Process(name, argv, log_dir, env)


def start_ceiling(name: str, port: int, body_bytes: int, log_dir: Path) -> Process:
    argv = [*NICE, "taskset", "-c", SERVER_CPU, *python_cmd(), "-m", "tests.bench.ceiling"]
    argv += ["--host", HOST, "--port", str(port), "--body-bytes", str(body_bytes)]
    return Process(name, argv, log_dir, dict(os.environ))


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
    results.facts["wrk"] = (
        subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[
            0
        ]
        or "wrk"
    )
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

    port = free_port(HOST)
    real = start_service("service", snapshot, port, log_dir)
    stack.callback(real.stop)
    log(f"service pid {real.pid} on :{port} (core {SERVER_CPU}), loading {args.rooms:,} rooms")
    ready_s = wait_ready(real, port, args.ready_timeout)
    results.facts["ready"] = f"{ready_s:.1f} s to /readyz 200 ({args.rooms / ready_s:,.0f} rooms/s)"
    results.facts["rss"] = f"{real.rss_bytes() / 2**20:,.0f} MiB RSS after load"
    log(results.facts["ready"] + "; " + results.facts["rss"])

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
    polling_bytes = round(statistics.fmean(len(a.body) for a in answers))
    results.facts["polling"] = (
        f"{len(fixed)} queries, answers {min(len(a.body) for a in answers):,}.."
        f"{max(len(a.body) for a in answers):,} bytes (mean {polling_bytes:,}), "
        f"totals {min(_total(a) for a in answers):,}..{max(_total(a) for a in answers):,}"
    )

    # Distinct queries: write them out, fetch a separate sample to learn the answer sizes.
    # Enough for every real run at 3,000 req/s; beyond that, wrk wraps around (the response
    # cache, 4096 entries, has long forgotten the first ones by then).
    lines = int(min(DISTINCT_LINES, max(20_000, 3000 * args.duration * (args.rounds + 1))))
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
    }
    write_fixed_script(scripts["polling"], fixed, logins, 0.2, fingerprints, {})
    write_fixed_script(scripts["reval"], fixed, logins, 1.0, {}, etags)
    write_fixed_script(scripts["full"], fixed, logins, 0.0, {}, {})
    write_distinct_script(scripts["distinct"], work / "distinct.txt", distinct, logins)

    ceilings: dict[str, tuple[Process, int]] = {}
    for mix, size in (("polling", polling_bytes), ("distinct", distinct_bytes)):
        cport = free_port(HOST)
        proc = start_ceiling(f"ceiling-{mix}", cport, size, log_dir)
        stack.callback(proc.stop)
        wait_ready(proc, cport, 60)
        ceilings[mix] = (proc, cport)
    next_line = 0

    def go(target: str, mix: str, duration: float) -> Run:
        nonlocal next_line
        if target == "real":
            server, p = real, port
        else:
            server, p = ceilings["distinct" if mix == "distinct" else "polling"]
        extra: list[str] = [str(random.randrange(1 << 30))]
        if mix == "distinct":
            extra = [str(next_line if target == "real" else 0), extra[0]]
        run = run_wrk(wrk, scripts[mix], p, duration, server, target, mix, extra)
        if mix == "distinct" and target == "real":
            next_line += run.requests + CONNECTIONS
        return run

    if args.warmup > 0:
        log(f"warm-up ({args.warmup:g} s per server and mix, not counted)")
        for mix in ("polling", "distinct"):
            for target in ("real", "ceiling"):
                go(target, mix, args.warmup)
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}")
        order = ("real", "ceiling") if r % 2 == 0 else ("ceiling", "real")
        for mix in ("polling", "distinct"):
            for target in order:
                results.runs.append(go(target, mix, args.duration))
        for mix in ("reval", "full") if r % 2 == 0 else ("full", "reval"):
            results.runs.append(go("real", mix, args.duration))

    if args.compare_metrics:
        compare_metrics(args, results, stack, snapshot, log_dir, wrk, scripts["polling"], real)
    if args.profile:
        for mix in ("polling", "distinct"):
            log(f"profiling the service over one more {mix} run")
            summary = profile(real, mix, functools.partial(go, "real", mix, args.duration), work)
            results.profiles[mix] = summary


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
    port = free_port(HOST)
    off = start_service(
        "service-metrics-off", snapshot, port, log_dir, {"VOIP_ROOMS_METRICS": "off"}
    )
    stack.callback(off.stop)
    try:
        wait_ready(off, port, args.ready_timeout)
    except BenchError as exc:
        results.metrics_note = (
            f"unavailable: the service did not start with VOIP_ROOMS_METRICS=off ({exc})"
        )
        log(results.metrics_note)
        return
    on_port = int(real.argv[real.argv.index("--port") + 1])
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


def run_query_times(args: argparse.Namespace, snapshot: Path | None) -> str | None:
    """The in-process figures of tests/bench/query_times.py, when it exists, as it prints them."""
    if not (HERE / "query_times.py").exists():
        return None
    base = [*python_cmd(), "-m", "tests.bench.query_times"]
    try:
        helped = subprocess.run(
            [*base, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return "query_times.py --help did not answer within 120 s"
    if helped.returncode != 0:
        return f"query_times.py --help failed:\n{helped.stderr[-800:]}"
    argv = list(base)
    if "--rooms" in helped.stdout:
        argv += ["--rooms", str(args.rooms)]
    if "--seed" in helped.stdout:
        argv += ["--seed", str(args.seed)]
    if "--snapshot" in helped.stdout and snapshot is not None:
        argv += ["--snapshot", str(snapshot)]
    log("running " + shlex.join(argv[1:]))
    try:
        done = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=args.query_times_timeout
        )
    except subprocess.TimeoutExpired:
        return f"`{shlex.join(argv[1:])}` did not finish within {args.query_times_timeout:g} s"
    if done.returncode != 0:
        return f"`{shlex.join(argv[1:])}` failed ({done.returncode}):\n{done.stderr[-1500:]}"
    fence = "```"
    return f"`{shlex.join(argv[1:])}`:\n\n{fence}\n{done.stdout.strip()}\n{fence}"


# --- report ---------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _fmt(values: Sequence[float], spec: str) -> str:
    return " / ".join(format(v, spec) for v in values)


def figures(results: Results) -> list[tuple[str, str, str, str, str]]:
    """(figure, per round, median, target, verdict) rows."""
    rows: list[tuple[str, str, str, str, str]] = []

    def verdict(value: float, target: float, higher: bool) -> str:
        if value != value:  # NaN
            return "n/a"
        return "PASS" if (value >= target if higher else value <= target) else "FAIL"

    for mix in ("polling", "distinct"):
        real, ceiling = results.of("real", mix), results.of("ceiling", mix)
        ratios = [a.rps / b.rps for a, b in zip(real, ceiling, strict=False) if b.rps]
        med = _median(ratios)
        rows.append(
            (
                f"{mix} mix throughput / ceiling",
                _fmt(ratios, ".2f"),
                f"{med:.2f}",
                f">= {TARGETS[mix]}",
                verdict(med, TARGETS[mix], True),
            )
        )
        per_cpu = [
            (a.rps / a.server_cpu) / (b.rps / b.server_cpu)
            for a, b in zip(real, ceiling, strict=False)
            if a.server_cpu > 0 and b.server_cpu > 0 and b.rps
        ]
        rows.append(
            (
                f"  {mix}: same per server CPU-second",
                _fmt(per_cpu, ".2f"),
                f"{_median(per_cpu):.2f}",
                "",
                "",
            )
        )
        rows.append(
            (
                f"  {mix}: real, ceiling req/s",
                _fmt([r.rps for r in real], ".0f") + " ; " + _fmt([c.rps for c in ceiling], ".0f"),
                f"{_median([r.rps for r in real]):.0f} ; {_median([c.rps for c in ceiling]):.0f}",
                "",
                "",
            )
        )
    reval, full = results.of("real", "reval"), results.of("real", "full")
    costs = [f.rps / r.rps for r, f in zip(reval, full, strict=False) if r.rps]
    med = _median(costs)
    rows.append(
        (
            "304 revalidation cost / full answer cost",
            _fmt(costs, ".2f"),
            f"{med:.2f}",
            f"<= {TARGETS['reval']}",
            verdict(med, TARGETS["reval"], False),
        )
    )
    rows.append(
        (
            "  304-only, full-only req/s",
            _fmt([r.rps for r in reval], ".0f") + " ; " + _fmt([f.rps for f in full], ".0f"),
            f"{_median([r.rps for r in reval]):.0f} ; {_median([f.rps for f in full]):.0f}",
            "",
            "",
        )
    )
    p99 = [r.p99_ms for r in results.of("real", "distinct")]
    med = _median(p99)
    rows.append(
        (
            f"p99 latency at {CONNECTIONS} connections, distinct mix (ms)",
            _fmt(p99, ".2f"),
            f"{med:.2f}",
            f"<= {TARGETS['p99_ms']:g} ms",
            verdict(med, TARGETS["p99_ms"], False),
        )
    )
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


def table(rows: list[tuple[str, str, str, str, str]]) -> str:
    head = ("figure", "per round", "median", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in [head, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


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
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = done.stdout.strip() or "unknown"
    return commit + (" + uncommitted changes" if dirty.stdout.strip() else "")


def report(args: argparse.Namespace, results: Results, command: str) -> str:
    rows = figures(results)
    out = [
        "# voip-rooms HTTP benchmark",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Load average at start: {results.facts.get('loadavg', '?')} (other engineers' "
        "jobs share the machine: see the `other cpu` column)",
        f"- Software: {_versions()}, {results.facts.get('wrk', 'wrk')}; commit {_commit()}",
        f"- Command: `{command}`",
        f"- Data: {args.rooms:,} demo rooms (seed {args.seed}), `.bench-data/{args.rooms}-"
        f"{args.seed}`; {results.facts.get('ready', '')}; {results.facts.get('rss', '')}",
        f"- Load: wrk -t1 -c{CONNECTIONS} --latency, {args.duration:g} s per run, "
        f"{args.rounds} rounds (real and ceiling alternate which goes first), "
        f"{args.warmup:g} s warm-up; server on core {SERVER_CPU}, wrk on core {CLIENT_CPU}",
        f"- Polling mix: {results.facts.get('polling', '')}; 20% of requests revalidate with "
        "the ETag recorded from that query's last 200",
        f"- Distinct mix: {results.facts.get('distinct', '')}",
        "",
        table(rows),
        "",
        "Ratios are per round (each real run against the ceiling run beside it), then the median. "
        "The revalidation cost is per-request time of a mix of only matching `If-None-Match` "
        "requests over the same queries without it (the inverse of the throughput ratio).",
        "",
    ]
    if results.metrics_note:
        out += [f"Metrics comparison: {results.metrics_note}.", ""]
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
        "- The real service: `python -m service serve --snapshot DIR --port P --host 127.0.0.1 "
        "--log-level warning` under `taskset -c 0`; ready when `/readyz` answers 200.",
        "- The ceiling (`tests/bench/ceiling.py`): aiohttp on uvloop with the service's "
        "`SERVER_LIMITS`, access log off, no middleware, no auth, no parsing, no lookup; one "
        "prebuilt body per mix of the mean size of the real answers (fetched once with urllib), "
        "an ETag, and a 304 when `If-None-Match` is present. Also under `taskset -c 0`.",
        "- Scripts: `tests/bench/fixed.lua` (polling, 304-only, full-only) and "
        "`tests/bench/distinct.lua`, filled in by `tests/bench/http.py` with the demo "
        "credentials and with queues, agents, tags and name fragments sampled from the snapshot.",
        "- `server cpu` is the service's CPU time over the run's wall time (1.00 = core 0 busy "
        "all along); when the ceiling is well below 1.00, wrk (core 1) is the limit instead. "
        "`other cpu` is what the rest of the machine used meanwhile, in cores: above ~0.3 it "
        "competes for the benchmark's cores. The `per server CPU-second` ratios divide each "
        "throughput by the server's CPU share, which is steadier when the machine is shared.",
        "",
    ]
    if results.notes:
        out += ["Notes:", "", *[f"- {n}" for n in results.notes], ""]
    for mix, summary in results.profiles.items():
        out += [f"## Where the time goes: {mix} mix (py-spy over one extra run)", "", summary, ""]
    if results.query_times:
        out += ["## In-process figures (tests/bench/query_times.py)", "", results.query_times, ""]
    return "\n".join(out)


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
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds per server (2)")
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
        "--no-query-times", action="store_true", help="skip tests/bench/query_times.py"
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
    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]
    command = "python -m tests.bench.http " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = Results()
    snapshot: Path | None = None
    try:
        with contextlib.ExitStack() as stack:
            # SIGTERM (e.g. make interrupted) unwinds like Ctrl-C, so the stack stops children.
            signal.signal(signal.SIGTERM, _raise_interrupt)
            bench(args, results, stack)
            snapshot = DATA_DIR / f"{args.rooms}-{args.seed}"
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    if not args.no_query_times:
        results.query_times = run_query_times(args, snapshot)
    text = report(args, results, command)
    args.out.write_text(text)
    print()
    print(table(figures(results)))
    if results.metrics_note:
        print(f"\nMetrics comparison: {results.metrics_note}")
    print(f"\nwritten to {args.out}")
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
