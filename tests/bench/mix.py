"""The benchmark's query classes: hard, realistic room-list requests with values from the data.

Both the HTTP distinct mix (``http.py``) and the in-process timings (``query_times.py``) build
their requests here, as query-string pairs; in process they go through the service's own
``parse`` to a RoomQuery, so both measure the same requests.

The classes (``KINDS``), each with the sorts it draws from (``SORTS``):

- ``open/queue``: open calls in a queue within a 30-365-day ``createdAt`` range ending in the
  last three days (where the open calls are), sorted by ``ts``, ``callStarted`` or ``lm``,
  offset 0..5,000;
- ``agent``: an agent's calls within 7-120 days, sorted by ``ts``, ``callDuration`` or
  ``closedAt``, half of them with ``open=false``, offset 0..5,000; one in five asked by the
  agent itself (its own calls), the others by a manager, a monitor or an admin;
- ``closed/tags``: closed calls within 1-90 days of ``closedAt`` with 1-3 tags, sorted by any
  of ``ts``, ``closedAt``, ``callDuration``, ``callWaitingTime``, ascending or descending,
  offset 0..5,000;
- ``name``: a name fragment of 3-8 characters (letters, a digit run such as ``90417``, a
  span across the space, mixed case) within a 60-360-day range, sorted by ``ts``, ``name`` or
  ``callDuration``, one of the first five pages;
- ``visitor``: a visitor's calls within a 180-720-day range, one of the first five pages.

Date ranges overlap the data (180 days of history in the demo snapshot), so wide ones match
most rooms. ``unique`` (0..999) is added to a date bound's milliseconds: with a different one,
a request differs from every other even after normalization (the HTTP mix needs no repeats).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.bench.data import DAY_MS, Sample

__all__ = [
    "KINDS",
    "SORTS",
    "MixRequest",
    "QueryMix",
    "iso",
    "js",
    "name_fragment",
]

PAGE = 50
MAX_OFFSET = 5_000
KINDS: tuple[str, ...] = ("open/queue", "agent", "closed/tags", "name", "visitor")
#: The sorts each class draws from: (field, direction) pairs.
SORTS: dict[str, tuple[tuple[str, int], ...]] = {
    "open/queue": (("ts", -1), ("callStarted", -1), ("lm", -1)),
    "agent": (("ts", -1), ("callDuration", -1), ("closedAt", -1)),
    "closed/tags": tuple(
        (f, d) for f in ("ts", "closedAt", "callDuration", "callWaitingTime") for d in (1, -1)
    ),
    "name": (("ts", -1), ("name", 1), ("callDuration", -1)),
    "visitor": (("ts", -1),),
}
#: How often each class comes in the HTTP mix.
WEIGHTS: dict[str, int] = {
    "open/queue": 20,
    "agent": 25,
    "closed/tags": 25,
    "name": 20,
    "visitor": 10,
}

Params = list[tuple[str, object]]


def iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def js(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def name_fragment(rng: random.Random, names: Sequence[str]) -> str:
    """3 to 8 characters of a real room name: letters of a word, a digit run, a span across
    the space between first and last name, or any of these in mixed case."""
    while True:
        name = rng.choice(names)
        caller = name.rsplit("-", 1)[0]
        size = rng.randint(3, 8)
        style = rng.choice(("letters", "digits", "space", "mixed"))
        fragment = ""
        if style == "digits":
            runs = [r for r in "".join(c if c.isdigit() else " " for c in name).split() if r]
            runs = [r for r in runs if len(r) >= 3]
            if runs:
                run = rng.choice(runs)
                size = min(size, len(run))
                start = rng.randrange(len(run) - size + 1)
                fragment = run[start : start + size]
        elif style == "space" and " " in caller:
            space = caller.index(" ")
            size = min(size, len(caller))
            low = max(0, space - size + 1)
            high = min(space, len(caller) - size)
            if high >= low:
                start = rng.randint(low, high)
                fragment = caller[start : start + size]
        elif caller.replace(" ", "").isalpha():
            word = rng.choice(caller.split())
            size = min(size, len(word))
            start = rng.randrange(len(word) - size + 1)
            fragment = word[start : start + size]
        if style == "mixed":
            fragment = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in fragment)
        elif fragment.isalpha() and rng.random() < 0.3:
            fragment = rng.choice((fragment.lower(), fragment.upper(), fragment.title()))
        if len(fragment) >= 3:
            return fragment


@dataclass(frozen=True, slots=True)
class MixRequest:
    kind: str
    user: str  # a login label of the demo credentials
    params: Params
    sort: tuple[str, int]


class QueryMix:
    """Makes requests of the classes above from a sample of the snapshot.

    ``agent_id`` is the demo agent login's user id (its own calls are asked with its login).
    """

    def __init__(self, sample: Sample, agent_id: str, rng: random.Random) -> None:
        self.rng = rng
        self.now, self.first = sample.last_ms, sample.first_ms
        self.span = max(DAY_MS, self.now - self.first)
        self.agent_id = agent_id
        self.queues = [q for q, _ in sample.open_queues.most_common()] or list(sample.queues)
        self.agents = list(sample.agents)
        self.tags = list(sample.tags) or ["resolved"]
        self.visitors = [v for v, n in sample.visitors.most_common() if n > 1] or list(
            sample.visitors
        )
        self.names = sample.names
        self.makers: dict[str, Callable[[tuple[str, int], int], tuple[str, Params]]] = {
            "open/queue": self._open_queue,
            "agent": self._agent,
            "closed/tags": self._closed_tags,
            "name": self._name,
            "visitor": self._visitor,
        }

    def make(self, kind: str, sort: tuple[str, int] | None = None, unique: int = 0) -> MixRequest:
        """A request of class ``kind``, with ``sort`` (else one drawn from ``SORTS[kind]``)."""
        chosen = sort or self.rng.choice(SORTS[kind])
        user, params = self.makers[kind](chosen, unique)
        params += [("sort", js({chosen[0]: chosen[1]})), ("count", PAGE)]
        return MixRequest(kind, user, params, chosen)

    def any(self, unique: int = 0) -> MixRequest:
        """A request of a class drawn by ``WEIGHTS``."""
        kind = self.rng.choices(KINDS, [WEIGHTS[k] for k in KINDS])[0]
        return self.make(kind, None, unique)

    # -- pieces ------------------------------------------------------------------------------

    def _range(self, low_days: int, high_days: int, unique: int, recent: bool = False) -> str:
        """A range of ``low_days``..``high_days`` days (to the second, plus ``unique`` ms) that
        overlaps the data; ``recent``: ending in the last three days."""
        width = self.rng.randint(low_days * 86_400, high_days * 86_400) * 1000
        if recent:
            end = self.now - self.rng.randrange(3 * 86_400) * 1000
        else:
            lowest = self.first + min(width, self.span) // 2
            end = lowest + self.rng.randrange(max(1, (self.now + DAY_MS - lowest) // 1000)) * 1000
        end += unique
        return js({"start": iso(end - width), "end": iso(end)})

    def _offset(self) -> int:
        return self.rng.randint(0, MAX_OFFSET)

    def _first_pages(self) -> int:
        return PAGE * self.rng.randrange(5)

    def _staff(self) -> str:
        return self.rng.choice(("manager", "monitor", "admin"))

    # -- classes -----------------------------------------------------------------------------

    def _open_queue(self, sort: tuple[str, int], unique: int) -> tuple[str, Params]:
        params: Params = [("open", "true"), ("queue", self.rng.choice(self.queues))]
        params += [("createdAt", self._range(30, 365, unique, recent=True))]
        return self._staff(), [*params, ("offset", self._offset())]

    def _agent(self, sort: tuple[str, int], unique: int) -> tuple[str, Params]:
        who, user = self.rng.choice(self.agents), self._staff()
        if who == self.agent_id or self.rng.random() < 0.2:
            who, user = self.agent_id, "agent"
        params: Params = [("agents", who)]
        if self.rng.random() < 0.5:
            params.append(("open", "false"))
        params += [("createdAt", self._range(7, 120, unique))]
        return user, [*params, ("offset", self._offset())]

    def _closed_tags(self, sort: tuple[str, int], unique: int) -> tuple[str, Params]:
        picked = self.rng.sample(self.tags, min(len(self.tags), self.rng.randint(1, 3)))
        params: Params = [("open", "false"), ("closedAt", self._range(1, 90, unique))]
        params += [("tags", t) for t in picked]
        return self._staff(), [*params, ("offset", self._offset())]

    def _name(self, sort: tuple[str, int], unique: int) -> tuple[str, Params]:
        params: Params = [("roomName", name_fragment(self.rng, self.names))]
        params += [("createdAt", self._range(60, 360, unique))]
        return self._staff(), [*params, ("offset", self._first_pages())]

    def _visitor(self, sort: tuple[str, int], unique: int) -> tuple[str, Params]:
        params: Params = [("visitorId", self.rng.choice(self.visitors))]
        params += [("createdAt", self._range(180, 720, unique))]
        return self._staff(), [*params, ("offset", self._first_pages())]
