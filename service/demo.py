"""Synthetic Rocket.Chat data: a snapshot directory, its demo logins, and a live event simulator.

Everything is derived from a seed and an anchor time (``now_ms``), so the same arguments give
byte-identical files and the same raw tokens. Rooms are streamed to disk and never held at once.
"""

from __future__ import annotations

import base64
import bisect
import gzip
import hashlib
import heapq
import io
import itertools
import multiprocessing
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "Credentials",
    "DemoLogin",
    "Payload",
    "Simulator",
    "format_credentials",
    "read_demo_state",
    "write_snapshot",
]

Payload = dict[str, Any] | list[dict[str, Any]]
"""An event payload as Rocket.Chat's broker sends it: an object, sometimes in a one-element list."""

_SECOND = 1000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
_HISTORY_DAYS = 180
_OPEN_SPAN = 3 * _DAY  # open calls (ringing, talking, not yet wrapped up) are recent
_LOGIN_EXPIRATION = 90 * _DAY
_INT32_MAX = 2**31 - 1

_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"  # Meteor's Random.id

QUEUES = (
    "sales",
    "support",
    "billing",
    "tech-support",
    "renewals",
    "retention",
    "onboarding",
    "returns",
    "shipping",
    "claims",
    "collections",
    "escalations",
    "vip",
    "partners",
    "spanish",
    "french",
    "after-hours",
    "enterprise",
    "sales-emea",
    "support-apac",
)
_QUEUE_WEIGHTS = tuple(1.0 / (i + 1) ** 0.8 for i in range(len(QUEUES)))  # sales, support busiest

TAGS = (
    "resolved",
    "callback",
    "escalated",
    "complaint",
    "refund",
    "new-customer",
    "upsell",
    "wrong-number",
    "voicemail",
    "follow-up",
    "billing-issue",
    "technical",
    "cancellation",
    "feedback",
    "spam",
)

# Rocket.Chat's defaults for the permissions this service reads, plus two it does not.
PERMISSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("view-livechat-rooms", ("livechat-manager", "livechat-monitor", "admin")),
    ("view-l-room", ("livechat-manager", "livechat-monitor", "livechat-agent", "admin")),
    ("api-bypass-rate-limit", ("admin", "bot", "app")),
    ("view-livechat-manager", ("livechat-manager", "livechat-monitor", "admin")),
    ("close-livechat-room", ("livechat-agent", "livechat-manager", "livechat-monitor", "admin")),
)

_FIRST = (
    "jane", "john", "maria", "ahmed", "li", "sofia", "lucas", "emma", "noah", "olivia", "liam",
    "ava", "mateo", "mia", "yuki", "aisha", "ivan", "chloe", "omar", "nina", "pedro", "sara",
    "tom", "leila", "ken", "ines", "raj", "anna", "diego", "zoe", "felix", "hana", "jonas",
    "priya", "marco", "elena", "samuel", "laura", "kofi", "julia",
)  # fmt: skip
_LAST = (
    "doe", "smith", "silva", "khan", "wang", "garcia", "muller", "rossi", "kim", "nguyen",
    "okafor", "novak", "tanaka", "costa", "dubois", "jensen", "lopez", "ahmed", "berg", "moreau",
    "santos", "ivanova", "patel", "cohen", "fischer", "larsen", "mendes", "sato", "walker", "reyes",
)  # fmt: skip


# --- small deterministic helpers ----------------------------------------------------------


_ID_PAIRS = [a + b for a in _ID_ALPHABET for b in _ID_ALPHABET]


def _rid(rng: random.Random) -> str:
    """A 17-character id in the style of Meteor's Random.id() (pairs drawn: it is a hot path)."""
    r, p, n = rng.random, _ID_PAIRS, len(_ID_PAIRS)
    return (
        f"{p[int(r() * n)]}{p[int(r() * n)]}{p[int(r() * n)]}{p[int(r() * n)]}"
        f"{p[int(r() * n)]}{p[int(r() * n)]}{p[int(r() * n)]}{p[int(r() * n)]}"
        f"{_ID_ALPHABET[int(r() * len(_ID_ALPHABET))]}"
    )


def _secret(seed: int, *parts: object) -> str:
    """A 43-character login token (like Random.secret()) derived from the seed: reproducible."""
    material = "/".join(["voip-rooms-demo", str(seed), *map(str, parts)]).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(material).digest()).decode().rstrip("=")


def hash_token(raw: str) -> str:
    """Rocket.Chat's ``hashedToken``: base64 (standard, padded) of SHA-256 of the raw token."""
    return base64.b64encode(hashlib.sha256(raw.encode()).digest()).decode()


_hour_prefixes: dict[int, str] = {}
_MINUTES = [f"{m:02d}:" for m in range(60)]
_SECONDS_MS: list[str] = []  # "SS.mmmZ" for each millisecond of a minute, built on first use


def _iso(ms: int) -> str:
    """ISO-8601 UTC with milliseconds, as mongoexport's relaxed mode writes a date.

    Table-driven because the writer formats some eight million dates per million rooms.
    """
    hour, rest = divmod(ms, _HOUR)
    prefix = _hour_prefixes.get(hour)
    if prefix is None:
        if not _SECONDS_MS:
            _SECONDS_MS.extend(f"{s:02d}.{m:03d}Z" for s in range(60) for m in range(1000))
        prefix = time.strftime("%Y-%m-%dT%H:", time.gmtime(hour * 3600))
        _hour_prefixes[hour] = prefix
    minute, millis = divmod(rest, _MINUTE)
    return prefix + _MINUTES[minute] + _SECONDS_MS[millis]


# Top-level fields of a room that hold dates (as int ms in the generator's own rooms).
_ROOM_DATES = frozenset(
    ("ts", "lm", "_updatedAt", "queuedAt", "callStarted", "callEndedAt", "closedAt")
)
_SOURCE_API = {"type": "api"}
_ROOM_INTS = frozenset(
    ("msgs", "usersCount", "callDuration", "callWaitingTime", "callTotalHoldTime")
)


def _canonical_int(n: int) -> dict[str, str]:
    return {"$numberInt" if -_INT32_MAX - 1 <= n <= _INT32_MAX else "$numberLong": str(n)}


def _export_room(room: dict[str, Any], canonical: bool) -> dict[str, Any]:
    """``room`` (dates as int ms) as mongoexport writes it: relaxed or canonical Extended JSON."""
    out: dict[str, Any] = {}
    dates: dict[int, dict[str, Any]] = {}  # a room repeats its dates (ts = queuedAt, lm = closedAt)

    def date(ms: int) -> dict[str, Any]:
        value = dates.get(ms)
        if value is None:
            value = {"$date": {"$numberLong": str(ms)} if canonical else _iso(ms)}
            dates[ms] = value
        return value

    for key, value in room.items():
        if key in _ROOM_DATES:
            out[key] = date(value)
        elif key == "servedBy":
            out[key] = {"_id": value["_id"], "ts": date(value["ts"]), "username": value["username"]}
        elif canonical and key in _ROOM_INTS:
            out[key] = _canonical_int(value)
        else:
            out[key] = value
    return out


def _broker_room(room: dict[str, Any]) -> dict[str, Any]:
    """``room`` as Rocket.Chat's broker sends it: dates as ``{"$date": <milliseconds>}``."""
    out: dict[str, Any] = {}
    for key, value in room.items():
        if key in _ROOM_DATES:
            out[key] = {"$date": value}
        elif key == "servedBy":
            out[key] = {**value, "ts": {"$date": value["ts"]}}
        elif isinstance(value, list):
            out[key] = list(value)
        elif isinstance(value, dict):
            out[key] = dict(value)
        else:
            out[key] = value
    return out


def _default_now() -> int:
    """Today's UTC midnight: files written on the same day are identical."""
    now = int(time.time() * 1000)
    return now - now % _DAY


# --- the world: users, visitors, queues -----------------------------------------------------


@dataclass(slots=True)
class _Person:
    id: str
    username: str
    name: str


@dataclass(slots=True)
class _Visitor:
    id: str
    username: str
    name: str
    doc: dict[str, Any]  # the room's ``v``
    json: str  # and serialized, for closed_line


@dataclass(frozen=True, slots=True)
class DemoLogin:
    """One demo login: what it is for, the user's ``_id`` and username, and the raw token."""

    label: str
    user_id: str
    username: str
    token: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """The demo logins of a snapshot. Labels: admin, manager, monitor, agent, user (no livechat
    permission), bot (personal access token), expired (an agent's expired token), inactive."""

    seed: int
    logins: tuple[DemoLogin, ...]

    def get(self, label: str) -> DemoLogin:
        """The login with this label; KeyError when there is none."""
        for login in self.logins:
            if login.label == label:
                return login
        raise KeyError(label)


class _World:
    """Everything but the rooms: users (with tokens), agents, visitors. O(rooms / 10)."""

    def __init__(self, rooms: int, seed: int, now_ms: int) -> None:
        self.seed = seed
        self.now_ms = now_ms
        rng = random.Random(f"{seed}/world")
        self.rng = rng
        self.users: list[dict[str, Any]] = []
        self.logins: list[DemoLogin] = []

        self.admin = self._staff("admin", "Administrator", ["admin", "user"], "admin")
        self.manager = self._staff(
            "manager.ana.costa", "Ana Costa", ["user", "livechat-manager"], "manager"
        )
        self.monitor = self._staff(
            "monitor.raj.patel", "Raj Patel", ["user", "livechat-monitor"], "monitor"
        )
        self.plain = self._staff("sam.lee", "Sam Lee", ["user"], "user")

        n_agents = rooms // 3000 + 10
        self.agents: list[_Person] = []
        taken: set[str] = set()
        for i in range(n_agents):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            username = f"agent.{first}.{last}"
            suffix = 2
            while username in taken:
                username = f"agent.{first}.{last}{suffix}"
                suffix += 1
            taken.add(username)
            roles = ["livechat-agent"] if rng.random() < 0.4 else ["user", "livechat-agent"]
            person = self._user(
                username,
                f"{first.title()} {last.title()}",
                roles,
                label="agent" if i == 0 else None,
                extension=str(8000 + i),
            )
            self.agents.append(person)
        self.agent_weights = list(itertools.accumulate(0.5 + rng.random() for _ in range(n_agents)))

        self.bot = self._bot()
        self.former = self._user(
            "agent.former.employee",
            "Former Employee",
            ["user", "livechat-agent"],
            label="inactive",
            active=False,
        )

        n_visitors = max(20, rooms // 10)
        self.visitors: list[_Visitor] = []
        for i in range(n_visitors):
            phone = (
                f"+{rng.choice((1, 1, 1, 44, 49, 33, 55, 34, 61))}{rng.randrange(10**9, 10**10)}"
            )
            if rng.random() < 0.3:
                name = phone  # unknown caller: Rocket.Chat names the guest after the number
            else:
                name = f"{rng.choice(_FIRST).title()} {rng.choice(_LAST).title()}"
            visitor_id, username = _rid(rng), f"guest-{1000 + i}"
            doc = {
                "_id": visitor_id,
                "token": _secret(seed, "visitor", i)[:24],
                "status": "online",
                "username": username,
                "phone": phone,
            }
            json = orjson.dumps(doc).decode()
            self.visitors.append(_Visitor(visitor_id, username, name, doc, json))
        self.queue_cum = list(itertools.accumulate(_QUEUE_WEIGHTS))
        self._hour_weights: list[float] | None = None

    def hour_weights(self) -> list[float]:
        """Cumulative call volume for each hour of the history, oldest first."""
        if self._hour_weights is None:
            hours = _HISTORY_DAYS * 24
            self._hour_weights = _hour_weights(self.now_ms - hours * _HOUR, hours)
        return self._hour_weights

    # users ----------------------------------------------------------------------------

    def _tokens(self, user_id: str, label: str | None) -> list[dict[str, Any]]:
        rng = self.rng
        tokens: list[dict[str, Any]] = []
        if label is not None or rng.random() < 0.3:
            # an old login from months ago, past the 90-day expiration
            raw = _secret(self.seed, user_id, "expired")
            when = self.now_ms - _LOGIN_EXPIRATION - rng.randrange(_DAY, 200 * _DAY)
            tokens.append({"when": when, "hashedToken": hash_token(raw)})
        for n in range(1 if label is not None else rng.randrange(0, 3)):
            raw = _secret(self.seed, user_id, "login", n)
            # recent enough to stay valid for two months after the anchor day
            when = self.now_ms - rng.randrange(_HOUR, 30 * _DAY)
            tokens.append({"when": when, "hashedToken": hash_token(raw)})
        return tokens

    def _user(
        self,
        username: str,
        name: str,
        roles: list[str],
        label: str | None,
        active: bool = True,
        extension: str | None = None,
        kind: str = "user",
    ) -> _Person:
        rng = self.rng
        user_id = _rid(rng)
        created = self.now_ms - _HISTORY_DAYS * _DAY - rng.randrange(0, 400 * _DAY)
        doc: dict[str, Any] = {
            "_id": user_id,
            "createdAt": created,
            "username": username,
            "name": name,
            "type": kind,
            "active": active,
            "roles": roles,
            "status": rng.choice(("online", "away", "offline", "offline")),
            "utcOffset": rng.choice((-5, -3, 0, 1, 2, 5.5)),
            "emails": [{"address": f"{username}@example.com", "verified": True}],
            "services": {"resume": {"loginTokens": self._tokens(user_id, label)}},
            "_updatedAt": self.now_ms - rng.randrange(0, 10 * _DAY),
        }
        if "livechat-agent" in roles:
            doc["statusLivechat"] = "available" if active else "not-available"
            doc["operator"] = True
            if extension is not None:
                doc["extension"] = extension
        self.users.append(doc)
        if label is not None:
            raw = _secret(self.seed, user_id, "login", 0)
            self.logins.append(DemoLogin(label, user_id, username, raw))
            if label == "agent":
                expired = _secret(self.seed, user_id, "expired")
                self.logins.append(DemoLogin("expired", user_id, username, expired))
        return _Person(user_id, username, name)

    def _staff(self, username: str, name: str, roles: list[str], label: str) -> _Person:
        return self._user(username, name, roles, label)

    def _bot(self) -> _Person:
        rng = self.rng
        user_id = _rid(rng)
        tokens: list[dict[str, Any]] = []
        raws = []
        for name in ("call-report", "crm-sync"):
            raw = _secret(self.seed, user_id, "pat", name)
            raws.append(raw)
            tokens.append(
                {
                    "hashedToken": hash_token(raw),
                    "type": "personalAccessToken",
                    "createdAt": self.now_ms - rng.randrange(200 * _DAY, 600 * _DAY),
                    "lastTokenPart": raw[-6:],
                    "name": name,
                    "bypassTwoFactor": True,
                }
            )
        self.users.append(
            {
                "_id": user_id,
                "createdAt": self.now_ms - 700 * _DAY,
                "username": "call.report.bot",
                "name": "Call Report Bot",
                "type": "bot",
                "active": True,
                "roles": ["bot"],
                "status": "online",
                "services": {"resume": {"loginTokens": tokens}},
                "_updatedAt": self.now_ms - 30 * _DAY,
            }
        )
        self.logins.append(DemoLogin("bot", user_id, "call.report.bot", raws[0]))
        return _Person(user_id, "call.report.bot", "Call Report Bot")

    # picks ------------------------------------------------------------------------------

    def pick_agent(self, rng: random.Random) -> _Person:
        x = rng.random() * self.agent_weights[-1]
        return self.agents[bisect.bisect_left(self.agent_weights, x)]

    def pick_queue(self, rng: random.Random) -> str:
        x = rng.random() * self.queue_cum[-1]
        return QUEUES[bisect.bisect_left(self.queue_cum, x)]

    def pick_visitor(self, rng: random.Random) -> _Visitor:
        # squared: a minority of callers call often, most call once or twice
        return self.visitors[int(len(self.visitors) * rng.random() ** 2)]


def _user_export(doc: dict[str, Any]) -> dict[str, Any]:
    """A user document (dates as int ms) in relaxed Extended JSON."""
    out = dict(doc)
    for key in ("createdAt", "_updatedAt"):
        out[key] = {"$date": _iso(doc[key])}
    tokens = []
    for entry in doc["services"]["resume"]["loginTokens"]:
        entry = dict(entry)
        for key in ("when", "createdAt"):
            if key in entry:
                entry[key] = {"$date": _iso(entry[key])}
        tokens.append(entry)
    out["services"] = {"resume": {"loginTokens": tokens}}
    return out


# --- calls ---------------------------------------------------------------------------------


def _hour_weights(start_ms: int, hours: int) -> list[float]:
    """Cumulative call volume per hour: business hours and weekdays are busier."""
    shape = (
        0.1, 0.05, 0.05, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 2.2, 2.5, 2.4,
        2.0, 2.2, 2.5, 2.4, 2.1, 1.6, 1.0, 0.7, 0.5, 0.4, 0.3, 0.2,
    )  # fmt: skip
    out: list[float] = []
    total = 0.0
    for h in range(hours):
        at = start_ms + h * _HOUR
        weekday = (at // _DAY + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        total += shape[(at // _HOUR) % 24] * (0.35 if weekday >= 5 else 1.0)
        out.append(total)
    return out


class _CallMaker:
    """Builds rooms (dates as int ms); a monotonic Asterisk channel counter names the calls."""

    def __init__(self, world: _World, rng: random.Random, counter: int) -> None:
        self.world = world
        self.rng = rng
        self.counter = counter

    def between(self, low: int, high: int) -> int:
        """An integer in [low, high): randrange's result, at a third of its cost."""
        return low + int(self.rng.random() * (high - low))

    def unique_id(self, ts: int) -> str:
        self.counter += self.between(1, 4)
        return f"{ts // 1000}.{self.counter}"

    def arrive(self, ts: int, served: bool) -> dict[str, Any]:
        """A call that just reached Rocket.Chat: open, waiting in a queue or already answered."""
        rng, world = self.rng, self.world
        visitor = world.pick_visitor(rng)
        inbound = rng.random() < 0.7
        unique = self.unique_id(ts)
        room: dict[str, Any] = {
            "_id": _rid(rng),
            "msgs": 0,
            "usersCount": 1,
            "lm": ts,
            "name": f"{visitor.name}-{unique}",
            "fname": visitor.name,
            "t": "v",
            "ts": ts,
            "v": visitor.doc,  # shared, never mutated: a visitor's rooms hold the same copy
            "open": True,
            "waitingResponse": True,
            "source": _SOURCE_API,
            "queuedAt": ts,
            "callUniqueId": unique,
            "uids": [],
            "autoTranslateLanguage": "",
            "livechatData": "",
            "direction": "inbound" if inbound else "outbound",
            "_updatedAt": ts,
        }
        if inbound:
            room["queue"] = world.pick_queue(rng)
        if served or not inbound:  # an outbound call is placed by its agent
            self.answer(room, ts if not inbound else ts + self.waiting_ms())
        return room

    def waiting_ms(self) -> int:
        return int(min(self.rng.expovariate(1 / 45_000), 900_000)) + self.between(0, 2000)

    def answer(self, room: dict[str, Any], at: int) -> None:
        """An agent picks the call up at ``at``."""
        agent = self.world.pick_agent(self.rng)
        room["servedBy"] = {"_id": agent.id, "ts": at, "username": agent.username}
        room["u"] = {"_id": agent.id, "username": agent.username}
        room["callStarted"] = at
        room["callWaitingTime"] = at - room["ts"]
        room["msgs"] += 1
        room["lm"] = at
        room["_updatedAt"] = at

    def talk_ms(self) -> int:
        return int(min(self.rng.lognormvariate(11.9, 0.8), 3 * _HOUR)) + 5000

    def close(self, room: dict[str, Any], ended: int, closed: int) -> None:
        """The call hung up at ``ended`` and was wrapped up at ``closed``."""
        rng = self.rng
        del room["open"]
        room.pop("waitingResponse", None)
        room["callEndedAt"] = ended
        room["closedAt"] = closed
        room["callDuration"] = closed - room["ts"]  # as Rocket.Chat computes it: since creation
        room["callTotalHoldTime"] = self.between(10, 300) if rng.random() < 0.2 else 0
        visitor_hung_up = "servedBy" in room and rng.random() < 0.45
        room["closer"] = "visitor" if visitor_hung_up else "user"
        if visitor_hung_up:
            room["closedBy"] = {"_id": room["v"]["_id"], "username": room["v"]["username"]}
        elif "servedBy" in room:
            served = room["servedBy"]
            room["closedBy"] = {"_id": served["_id"], "username": served["username"]}
        else:  # abandoned in the queue, closed by a supervisor
            room["closedBy"] = {
                "_id": self.world.manager.id,
                "username": self.world.manager.username,
            }
        if "callWaitingTime" not in room:
            room["callWaitingTime"] = ended - room["ts"]
        if rng.random() < 0.5:
            room["tags"] = rng.sample(TAGS, rng.choice((1, 1, 1, 2, 2, 3)))
        room["msgs"] += self.between(1, 4)
        room["lm"] = closed
        room["_updatedAt"] = closed

    def closed_line(self, ts: int) -> bytes:
        """``closed_call(ts)`` as a relaxed mongoexport line, unrolled for speed: closed calls are
        93% of a snapshot. Draws the same numbers in the same order, so for the same random state
        it equals ``orjson.dumps(_export_room(closed_call(ts), False))`` once parsed (tested)."""
        rng, world, between = self.rng, self.world, self.between
        r = rng.random
        served = r() < 0.97
        visitor = world.pick_visitor(rng)
        inbound = r() < 0.7
        unique = self.unique_id(ts)
        room_id = _rid(rng)
        queue = world.pick_queue(rng) if inbound else None
        agent: _Person | None = None
        started = ts
        if served or not inbound:
            if inbound:
                started = ts + self.waiting_ms()
            agent = world.pick_agent(rng)
            ended = started + self.talk_ms()
        else:
            ended = ts + self.waiting_ms()
        closed = ended + between(3000, 180_000)
        hold = between(10, 300) if r() < 0.2 else 0
        hung_up = agent is not None and r() < 0.45
        tags = rng.sample(TAGS, rng.choice((1, 1, 1, 2, 2, 3))) if r() < 0.5 else None
        msgs = between(1, 4) + (agent is not None)

        ts_iso, closed_iso = _iso(ts), _iso(closed)
        parts = [
            f'{{"_id":"{room_id}","msgs":{msgs},"usersCount":1,"lm":{{"$date":"{closed_iso}"}},'
            f'"name":"{visitor.name}-{unique}","fname":"{visitor.name}","t":"v",'
            f'"ts":{{"$date":"{ts_iso}"}},"v":{visitor.json},"source":{{"type":"api"}},'
            f'"queuedAt":{{"$date":"{ts_iso}"}},"callUniqueId":"{unique}","uids":[],'
            f'"autoTranslateLanguage":"","livechatData":"",'
            f'"direction":"{"inbound" if inbound else "outbound"}",'
            f'"_updatedAt":{{"$date":"{closed_iso}"}}'
        ]
        if queue is not None:
            parts.append(f',"queue":"{queue}"')
        if agent is not None:
            started_iso = _iso(started)
            parts.append(
                f',"servedBy":{{"_id":"{agent.id}","ts":{{"$date":"{started_iso}"}},'
                f'"username":"{agent.username}"}},'
                f'"u":{{"_id":"{agent.id}","username":"{agent.username}"}},'
                f'"callStarted":{{"$date":"{started_iso}"}},"callWaitingTime":{started - ts}'
            )
        if hung_up:
            closer = (
                f'"visitor","closedBy":{{"_id":"{visitor.id}","username":"{visitor.username}"}}'
            )
        else:
            by = agent or world.manager
            closer = f'"user","closedBy":{{"_id":"{by.id}","username":"{by.username}"}}'
        parts.append(
            f',"callEndedAt":{{"$date":"{_iso(ended)}"}},"closedAt":{{"$date":"{closed_iso}"}},'
            f'"callDuration":{closed - ts},"callTotalHoldTime":{hold},"closer":{closer}'
        )
        if agent is None:
            parts.append(f',"callWaitingTime":{ended - ts}')
        if tags is not None:
            parts.append(',"tags":["' + '","'.join(tags) + '"]')
        parts.append("}")
        return "".join(parts).encode()

    def closed_call(self, ts: int) -> dict[str, Any]:
        """A call of the history, from arrival to wrap-up (see closed_line)."""
        room = self.arrive(ts, served=self.rng.random() < 0.97)
        if "servedBy" in room:
            ended = room["callStarted"] + self.talk_ms()
        else:  # abandoned in the queue
            ended = ts + self.waiting_ms()
        self.close(room, ended, ended + self.between(3000, 180_000))
        return room


def _other_room(rng: random.Random, world: _World, ts: int, kind: str) -> dict[str, Any]:
    """A room the loaders must skip: a channel or an omnichannel chat."""
    if kind == "c":
        name = rng.choice(("general", "sales-team", "support-team", "random", "announcements"))
        return {
            "_id": "GENERAL" if name == "general" else _rid(rng),
            "ts": {"$date": _iso(ts)},
            "t": "c",
            "name": name,
            "fname": name,
            "usernames": [],
            "msgs": rng.randrange(0, 5000),
            "usersCount": rng.randrange(2, 400),
            "default": name == "general",
            "sysMes": True,
            "_updatedAt": {"$date": _iso(ts)},
        }
    visitor = world.pick_visitor(rng)
    agent = world.pick_agent(rng)
    return {
        "_id": _rid(rng),
        "msgs": rng.randrange(1, 40),
        "usersCount": 2,
        "lm": {"$date": _iso(ts + 600_000)},
        "fname": visitor.name,
        "t": "l",
        "ts": {"$date": _iso(ts)},
        "v": {"_id": visitor.id, "username": visitor.username, "token": visitor.doc["token"]},
        "servedBy": {"_id": agent.id, "username": agent.username, "ts": {"$date": _iso(ts)}},
        "cl": False,
        "open": True,
        "source": {"type": "widget"},
        "_updatedAt": {"$date": _iso(ts + 600_000)},
    }


def _open_rooms(world: _World, rooms: int) -> Iterator[dict[str, Any]]:
    """The calls still open at the anchor time (~7%): a stream of its own, so that a Simulator
    can rebuild them without generating the closed history."""
    rng = random.Random(f"{world.seed}/open")
    maker = _CallMaker(world, rng, counter=10_000 + 4 * rooms)
    n_open = round(rooms * 0.07)
    for _ in range(n_open):
        ts = world.now_ms - 1 - int(_OPEN_SPAN * rng.random() ** 3)
        waiting = rng.random() < 0.15
        room = maker.arrive(ts, served=not waiting)
        if not waiting and room["callStarted"] > world.now_ms:
            room["servedBy"]["ts"] = room["callStarted"] = room["lm"] = world.now_ms - 1
            room["_updatedAt"] = world.now_ms - 1
            room["callWaitingTime"] = room["callStarted"] - ts
        yield room


_CHUNK = 50_000  # closed calls per chunk; each chunk has its own random stream


def _closed_count(rooms: int) -> int:
    return rooms - round(rooms * 0.07)


def _closed_lines(world: _World, rooms: int, chunk: int) -> Iterator[tuple[int, bytes]]:
    """(ts, mongoexport line) for chunk ``chunk`` of the closed history, in time order.

    Chunks are independent (a random stream and a range of Asterisk channel numbers each), so
    they can be generated in parallel. 2% of the rooms are written in canonical Extended JSON.
    """
    rng = random.Random(f"{world.seed}/closed/{chunk}")
    maker = _CallMaker(world, rng, counter=10_000 + 3 * chunk * _CHUNK)
    hours = _HISTORY_DAYS * 24
    start = world.now_ms - hours * _HOUR
    cum = world.hour_weights()
    total = cum[-1]
    n_closed = _closed_count(rooms)
    limit = world.now_ms - 4 * _HOUR  # closed before the anchor
    for i in range(chunk * _CHUNK, min((chunk + 1) * _CHUNK, n_closed)):
        # stratified draws keep the stream in time order, as a collection's natural order is
        x = (i + rng.random()) / n_closed * total
        hour = bisect.bisect_left(cum, x)
        ts = min(start + hour * _HOUR + int(rng.random() * _HOUR), limit)
        if rng.random() < 0.02:
            yield ts, orjson.dumps(_export_room(maker.closed_call(ts), canonical=True))
        else:
            yield ts, maker.closed_line(ts)


def _open_lines(world: _World, rooms: int) -> Iterator[tuple[int, bytes]]:
    for n, room in enumerate(_open_rooms(world, rooms)):
        yield room["ts"], orjson.dumps(_export_room(room, canonical=n % 50 == 7))


def _rooms_member(world: _World, rooms: int, chunk: int) -> bytes:
    """One gzip member of ``rooms.jsonl.gz``: closed chunk ``chunk``, or (past the last one) the
    open calls; a few rooms of other types are mixed in, which loaders must skip."""
    n_chunks = -(-_closed_count(rooms) // _CHUNK)
    rng = random.Random(f"{world.seed}/other/{chunk}")
    dumps = orjson.dumps
    lines: list[bytes] = []
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=buffer, mtime=0) as gz:
        if chunk == 0:
            start = world.now_ms - _HISTORY_DAYS * _DAY
            lines.append(dumps(_other_room(rng, world, start - 400 * _DAY, "c")))
            lines.append(dumps(_other_room(rng, world, start + 3 * _HOUR, "l")))
        calls = (
            _closed_lines(world, rooms, chunk) if chunk < n_chunks else _open_lines(world, rooms)
        )
        for ts, line in calls:
            draw = rng.random()
            if draw < 0.004:
                lines.append(dumps(_other_room(rng, world, ts, "c" if draw < 0.001 else "l")))
            lines.append(line)
            if len(lines) >= 4096:
                lines.append(b"")
                gz.write(b"\n".join(lines))
                lines.clear()
        if lines:
            lines.append(b"")
            gz.write(b"\n".join(lines))
    return buffer.getvalue()


_worker_world: _World | None = None


def _worker_init(rooms: int, seed: int, now_ms: int) -> None:
    global _worker_world
    _worker_world = _World(rooms, seed, now_ms)


def _worker_member(rooms: int, chunk: int) -> bytes:
    assert _worker_world is not None
    return _rooms_member(_worker_world, rooms, chunk)


def _write_rooms(path: Path, world: _World, rooms: int, workers: int) -> None:
    """Write the gzip members in order; with workers, at most 2 per worker are in flight."""
    n_members = -(-_closed_count(rooms) // _CHUNK) + 1
    with open(path, "wb") as out:
        if workers <= 1:
            for chunk in range(n_members):
                out.write(_rooms_member(world, rooms, chunk))
            return
        context = multiprocessing.get_context("spawn")  # no fork of a possibly threaded parent
        with ProcessPoolExecutor(
            workers, context, initializer=_worker_init, initargs=(rooms, world.seed, world.now_ms)
        ) as pool:
            window: deque[Future[bytes]] = deque()
            for chunk in range(n_members):
                window.append(pool.submit(_worker_member, rooms, chunk))
                if len(window) >= 2 * workers:
                    out.write(window.popleft().result())
            while window:
                out.write(window.popleft().result())


# --- the snapshot writer -------------------------------------------------------------------


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_snapshot(
    out: Path, rooms: int, seed: int = 1, *, now_ms: int | None = None, workers: int | None = None
) -> Credentials:
    """Write a synthetic snapshot of ``rooms`` VoIP rooms to ``out``; return its demo logins.

    The history spans the 180 days before ``now_ms`` (default: today's UTC midnight, so a day's
    runs are identical). O(rooms) time, O(rooms / 10) memory: rooms are streamed to gzip, in
    chunks of 50,000 that ``workers`` processes generate in parallel (default: one per CPU from
    200,000 rooms). The bytes written do not depend on ``workers``.
    """
    if rooms < 0:
        raise ValueError("rooms must be >= 0")
    anchor = _default_now() if now_ms is None else now_ms
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("rooms.jsonl", "users.jsonl.gz", "permissions.jsonl.gz"):
        (out / stale).unlink(missing_ok=True)  # would clash with the files written here
    world = _World(rooms, seed, anchor)

    def users_file(path: Path) -> None:
        path.write_bytes(b"".join(orjson.dumps(_user_export(u)) + b"\n" for u in world.users))

    def permissions_file(path: Path) -> None:
        updated = {"$date": _iso(anchor - 365 * _DAY)}
        path.write_bytes(
            b"".join(
                orjson.dumps({"_id": name, "roles": list(roles), "_updatedAt": updated}) + b"\n"
                for name, roles in PERMISSIONS
            )
        )

    def state_file(path: Path) -> None:
        state = {
            "generator": "voip-rooms demo-data",
            "seed": seed,
            "rooms": rooms,
            "now_ms": anchor,
        }
        path.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2) + b"\n")

    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if rooms >= 200_000 else 1
    _replace(out / "rooms.jsonl.gz", lambda path: _write_rooms(path, world, rooms, workers))
    _replace(out / "users.jsonl", users_file)
    _replace(out / "permissions.jsonl", permissions_file)
    _replace(out / "demo.json", state_file)
    _replace(out / "manifest.json", lambda p: p.write_bytes(b'{"position": 0}\n'))
    return Credentials(seed=seed, logins=tuple(world.logins))


def read_demo_state(directory: Path) -> tuple[int, int, int]:
    """(rooms, seed, now_ms) of a snapshot written by write_snapshot, from its ``demo.json``."""
    state = orjson.loads((directory / "demo.json").read_bytes())
    return int(state["rooms"]), int(state["seed"]), int(state["now_ms"])


def format_credentials(c: Credentials, port: int = 3000) -> str:
    """Human-readable demo logins with ready-to-paste curl commands."""
    width = max(len(login.username) for login in c.logins)
    lines = [f"Demo logins (seed {c.seed}):"]
    notes = {
        "admin": "admin role: sees every room",
        "manager": "livechat-manager: sees every room",
        "monitor": "livechat-monitor: sees every room",
        "agent": "livechat-agent: only with agents=<own _id>",
        "user": "no livechat permission: 403",
        "bot": "bot, personal access token: 403, not rate limited",
        "expired": "the agent's login older than 90 days: 401",
        "inactive": "deactivated user: 401",
    }
    for login in c.logins:
        lines.append(
            f"  {login.label:<9}{login.username:<{width + 2}}X-User-Id: {login.user_id}  "
            f"X-Auth-Token: {login.token}   # {notes.get(login.label, '')}"
        )
    base = f"http://localhost:{port}/api/v1/voip/rooms"
    manager, agent = c.get("manager"), c.get("agent")
    lines += [
        "",
        "Try:",
        f"  curl -s -H 'X-User-Id: {manager.user_id}' -H 'X-Auth-Token: {manager.token}' "
        f"'{base}?count=5'",
        f"  curl -s -H 'X-User-Id: {agent.user_id}' -H 'X-Auth-Token: {agent.token}' "
        f"'{base}?agents={agent.user_id}&count=5'",
    ]
    return "\n".join(lines) + "\n"


# --- the live simulator ------------------------------------------------------------------


class Simulator:
    """Rocket.Chat's broadcast events for a call center continuing from a demo snapshot.

    Pure and deterministic: the same constructor arguments and the same sequence of ``now_ms``
    give the same events. It knows the snapshot's users, agents, visitors and open calls (rebuilt
    from the seed, O(rooms / 10)); it never re-reads the snapshot's closed history.
    """

    MAX_CATCH_UP_MS = 60_000  # a long pause is skipped rather than replayed in one burst

    def __init__(
        self,
        rooms: int,
        seed: int = 1,
        *,
        now_ms: int | None = None,
        calls_per_second: float = 1.0,
    ) -> None:
        anchor = _default_now() if now_ms is None else now_ms
        self._world = _World(rooms, seed, anchor)
        self._rng = random.Random(f"{seed}/simulate")
        self._maker = _CallMaker(self._world, self._rng, counter=20_000 + 8 * rooms)
        self._rate = calls_per_second
        self._open: dict[str, dict[str, Any]] = {
            r["_id"]: r for r in _open_rooms(self._world, rooms)
        }
        self._backlog = list(self._open)  # snapshot calls left open, wound down over time
        self._closed: deque[str] = deque(maxlen=500)
        self._users = {doc["_id"]: doc for doc in self._world.users}
        self._protected = {login.user_id for login in self._world.logins}
        self._permissions = {name: list(roles) for name, roles in PERMISSIONS}
        self._queue: list[tuple[int, int, str, str]] = []  # (due ms, seq, action, room id)
        self._seq = itertools.count()
        self._clock: int | None = None
        self._next_arrival = 0
        self._tokens_issued = 0

    @classmethod
    def from_snapshot(cls, directory: Path, calls_per_second: float = 1.0) -> Simulator:
        """A simulator for a snapshot directory written by write_snapshot."""
        rooms, seed, now_ms = read_demo_state(directory)
        return cls(rooms, seed, now_ms=now_ms, calls_per_second=calls_per_second)

    @property
    def open_rooms(self) -> int:
        """How many calls are open now."""
        return len(self._open)

    def _schedule(self, due: int, action: str, room_id: str) -> None:
        heapq.heappush(self._queue, (due, next(self._seq), action, room_id))

    def _room_event(self, action: str, room: dict[str, Any]) -> tuple[str, Payload]:
        payload: dict[str, Any] = {"clientAction": action, "room": _broker_room(room)}
        return "watch.rooms", [payload] if self._rng.random() < 0.25 else payload

    def next_events(self, now_ms: int) -> list[tuple[str, Payload]]:
        """The events that happened since the previous call, up to ``now_ms``, in order.

        The first call starts the clock; a gap longer than MAX_CATCH_UP_MS is skipped.
        """
        if self._clock is None:
            self._clock = now_ms
            self._next_arrival = now_ms + self._gap()
            return []
        if now_ms - self._clock > self.MAX_CATCH_UP_MS:
            self._clock = now_ms - self.MAX_CATCH_UP_MS
            self._next_arrival = max(self._next_arrival, self._clock)
        if now_ms <= self._clock:
            return []
        start, self._clock = self._clock, now_ms
        events: list[tuple[str, Payload]] = []
        while True:
            due_queue = self._queue[0][0] if self._queue else None
            if self._next_arrival <= now_ms and (
                due_queue is None or self._next_arrival <= due_queue
            ):
                at = self._next_arrival
                self._next_arrival += self._gap()
                events.extend(self._arrival(at))
            elif due_queue is not None and due_queue <= now_ms:
                due, _, action, room_id = heapq.heappop(self._queue)
                events.extend(self._act(due, action, room_id))
            else:
                break
        events.extend(self._background(start, now_ms))
        return events

    def _gap(self) -> int:
        return max(1, int(self._rng.expovariate(self._rate) * 1000))

    def _arrival(self, at: int) -> list[tuple[str, Payload]]:
        rng, maker = self._rng, self._maker
        room = maker.arrive(at, served=False)  # inbound: queued; outbound: placed by an agent
        self._open[room["_id"]] = room
        if "servedBy" in room:
            self._schedule(at + maker.talk_ms(), "end", room["_id"])
        else:
            self._schedule(at + maker.waiting_ms(), "take", room["_id"])
        events = [self._room_event("inserted", room)]
        # a supervisor winds down a call left open in the snapshot now and then
        if self._backlog and rng.random() < 0.3:
            old = self._backlog.pop(rng.randrange(len(self._backlog)))
            if old in self._open:
                events.extend(self._act(at, "end", old))
        return events

    def _act(self, at: int, action: str, room_id: str) -> list[tuple[str, Payload]]:
        room = self._open.get(room_id)
        if room is None:
            return []
        rng, maker = self._rng, self._maker
        if action == "take":
            if rng.random() < 0.08:  # abandoned: the caller hung up in the queue
                maker.close(room, at, at + rng.randrange(1000, 30_000))
            else:
                maker.answer(room, at)
                self._schedule(at + maker.talk_ms(), "end", room_id)
                return [self._room_event("updated", room)]
        else:
            if "servedBy" not in room:
                maker.answer(room, at)
            maker.close(room, at, at + rng.randrange(3000, 120_000))
        del self._open[room_id]
        self._closed.append(room_id)
        return [self._room_event("updated", room)]

    def _background(self, start: int, end: int) -> list[tuple[str, Payload]]:
        """Rare events, drawn once per elapsed second."""
        rng = self._rng
        events: list[tuple[str, Payload]] = []
        for _ in range((end - start + 999) // 1000):
            draw = rng.random()
            if draw < 0.004 and self._closed:
                room_id = self._closed.popleft()
                events.append(self._removed(room_id))
            elif draw < 0.014:
                events.append(self._user_event(end))
            elif draw < 0.016:
                events.append(self._permission_event())
        return events

    def _removed(self, room_id: str) -> tuple[str, Payload]:
        payload: dict[str, Any] = {"clientAction": "removed", "room": {"_id": room_id}}
        return "watch.rooms", [payload] if self._rng.random() < 0.25 else payload

    def _user_event(self, at: int) -> tuple[str, Payload]:
        rng = self._rng
        candidates = [a for a in self._world.agents if a.id not in self._protected]
        agent = rng.choice(candidates or self._world.agents)
        doc = self._users[agent.id]
        if rng.random() < 0.8 or agent.id in self._protected:
            self._tokens_issued += 1
            raw = _secret(self._world.seed, agent.id, "live", self._tokens_issued)
            tokens = doc["services"]["resume"]["loginTokens"]
            tokens.append({"when": at, "hashedToken": hash_token(raw)})
            del tokens[:-5]  # Rocket.Chat prunes old logins; keep the list bounded
            value = [
                {**t, **{k: {"$date": t[k]} for k in ("when", "createdAt") if k in t}}
                for t in tokens
            ]
            diff: dict[str, Any] = {
                "services.resume.loginTokens": value,
                "_updatedAt": {"$date": at},
            }
        else:
            doc["active"] = not doc["active"]
            diff = {"active": doc["active"], "_updatedAt": {"$date": at}}
        doc["_updatedAt"] = at
        return "watch.users", {"clientAction": "updated", "id": agent.id, "diff": diff}

    def _permission_event(self) -> tuple[str, Payload]:
        # toggles a role that does not change who may list rooms, so demo logins keep working
        roles = self._permissions["api-bypass-rate-limit"]
        if "livechat-monitor" in roles:
            roles.remove("livechat-monitor")
        else:
            roles.append("livechat-monitor")
        data = {"_id": "api-bypass-rate-limit", "roles": list(roles)}
        return "permission.changed", {"clientAction": "updated", "data": data}
