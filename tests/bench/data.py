"""The benchmarks' data: a cached demo snapshot with its logins, and a sample of what it holds.

Shared by the HTTP benchmark (``http.py``) and the in-process one (``query_times.py``), so that both
measure the same rooms and build their queries from the same queues, agents, tags and names.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DATA_DIR",
    "DAY_MS",
    "ROOT",
    "BenchError",
    "Login",
    "Sample",
    "add_data_arguments",
    "common_fragment",
    "date_ms",
    "ensure_data",
    "log",
    "name_fragments",
    "sample_rooms",
]

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / ".bench-data"
DAY_MS = 86_400_000


def add_data_arguments(parser: argparse.ArgumentParser, rooms: int) -> None:
    """--rooms, --seed, --snapshot (a snapshot given instead of the cached demo one) and --json,
    as the in-process benchmarks take them."""
    parser.add_argument("--rooms", type=int, default=rooms, help=f"demo rooms ({rooms})")
    parser.add_argument("--seed", type=int, default=1, help="demo data seed (1)")
    parser.add_argument("--snapshot", type=Path, help="a demo snapshot (default: generated)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure the harness reports in one line and exits on."""


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


def date_ms(value: Any) -> int | None:
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
    """What the snapshot holds, from every n-th room: queues, agents, visitors, tags, names, the
    span of ``ts``."""

    queues: Counter[str] = field(default_factory=Counter)
    open_queues: Counter[str] = field(default_factory=Counter)
    agents: Counter[str] = field(default_factory=Counter)  # servedBy._id
    agent_names: Counter[str] = field(default_factory=Counter)  # servedBy.username
    visitors: Counter[str] = field(default_factory=Counter)  # v._id
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
                if isinstance(served.get("username"), str):
                    sample.agent_names[served["username"]] += 1
            visitor = doc.get("v")
            if isinstance(visitor, dict) and isinstance(visitor.get("_id"), str):
                sample.visitors[visitor["_id"]] += 1
            for tag in doc.get("tags") or ():
                if isinstance(tag, str):
                    sample.tags[tag] += 1
            if isinstance(doc.get("name"), str):
                sample.names.append(doc["name"])
            ts = date_ms(doc.get("ts"))
            if ts is not None:
                sample.first_ms = min(sample.first_ms, ts)
                sample.last_ms = max(sample.last_ms, ts)
    if not sample.queues or not sample.agents or not sample.names:
        raise BenchError(f"the sample of {path} holds no queues, agents or names")
    return sample


def name_fragments(sample: Sample, rng: random.Random, n: int) -> list[str]:
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


def common_fragment(sample: Sample, length: int) -> str:
    """The most frequent run of ``length`` letters in the callers' names (lower case): what a
    user typing a name into a search box sends first, and a search matching many rooms."""
    counts: Counter[str] = Counter()
    for name in sample.names:
        caller = name.rsplit("-", 1)[0].lower()
        # a set: a name counts once per fragment
        counts.update({caller[i : i + length] for i in range(len(caller) - length + 1)})
    letters = [(f, n) for f, n in counts.most_common() if f.isalpha()]
    if not letters:
        raise BenchError(f"no room name holds {length} letters in a row")
    return letters[0][0]
