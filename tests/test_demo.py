"""service.demo: the synthetic snapshot, its demo logins, and the event simulator."""

from __future__ import annotations

import base64
import gzip
import hashlib
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.core import ejson
from service.demo import (
    QUEUES,
    TAGS,
    Credentials,
    Simulator,
    _CallMaker,
    _export_room,
    _World,
    format_credentials,
    read_demo_state,
    write_snapshot,
)

NOW = 1_764_000_000_000  # 2025-11-24T16:00:00Z, the anchor of every snapshot here
ROOMS = 2000
DAY = 86_400_000


def _lines(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = [line for line in stream.read().split(b"\n") if line]
    docs = [orjson.loads(line) for line in raw]
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def _ms(value: Any) -> int:
    """Milliseconds of an Extended JSON date in any of its three forms."""
    assert isinstance(value, dict)
    assert list(value) == ["$date"]
    inner = value["$date"]
    if isinstance(inner, int):
        return inner
    if isinstance(inner, dict):
        return int(inner["$numberLong"])
    assert isinstance(inner, str)
    assert ejson.date_from_iso(inner) == inner  # the one form: 2021-07-09T20:12:19.795Z
    return round(datetime.fromisoformat(inner).timestamp() * 1000)


def _int(value: Any) -> int:
    if isinstance(value, dict):
        (key, text), *rest = value.items()
        assert not rest
        assert key in ("$numberInt", "$numberLong")
        return int(text)
    assert isinstance(value, int)
    assert not isinstance(value, bool)
    return value


def _hashed(raw: str) -> str:
    return base64.b64encode(hashlib.sha256(raw.encode()).digest()).decode()


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Credentials]:
    out = tmp_path_factory.mktemp("demo")
    return out, write_snapshot(out, ROOMS, seed=7, now_ms=NOW)


@pytest.fixture(scope="module")
def rooms(snapshot: tuple[Path, Credentials]) -> list[dict[str, Any]]:
    return _lines(snapshot[0] / "rooms.jsonl.gz")


def _check_voip_room(room: dict[str, Any]) -> None:
    for key in ("_id", "name", "fname", "callUniqueId"):
        assert isinstance(room[key], str)
    assert room["t"] == "v"
    assert _int(room["msgs"]) >= 0
    assert _int(room["usersCount"]) == 1
    ts = _ms(room["ts"])
    assert NOW - 181 * DAY < ts < NOW
    assert _ms(room["_updatedAt"]) >= ts
    assert _ms(room["lm"]) >= ts
    assert room["name"] == f"{room['fname']}-{room['callUniqueId']}"
    seconds, counter = room["callUniqueId"].split(".")
    assert int(seconds) == ts // 1000
    assert int(counter) > 0
    visitor = room["v"]
    assert visitor["username"].startswith("guest-")
    assert visitor["phone"].startswith("+")
    assert isinstance(visitor["_id"], str)
    assert isinstance(visitor["token"], str)
    assert room["direction"] in ("inbound", "outbound")
    if room["direction"] == "inbound":
        assert room["queue"] in QUEUES
    else:
        assert "queue" not in room
        assert "servedBy" in room
    if "servedBy" in room:
        served = room["servedBy"]
        assert served["username"].startswith("agent.")
        assert _ms(served["ts"]) == _ms(room["callStarted"]) >= ts
        assert _int(room["callWaitingTime"]) == _ms(room["callStarted"]) - ts
    if room.get("open") is True:
        for key in ("closedAt", "callEndedAt", "callDuration", "closer", "closedBy", "tags"):
            assert key not in room
    else:
        assert "open" not in room
        closed, ended = _ms(room["closedAt"]), _ms(room["callEndedAt"])
        assert ts <= ended <= closed < NOW
        assert _int(room["callDuration"]) == closed - ts
        assert _int(room["callWaitingTime"]) >= 0
        assert 0 <= _int(room["callTotalHoldTime"]) < 300
        assert room["closer"] in ("user", "visitor")
        assert isinstance(room["closedBy"]["_id"], str)
        if "tags" in room:
            assert 1 <= len(room["tags"]) <= 3
            assert set(room["tags"]) <= set(TAGS)


def test_rooms_are_mongoexport_lines_with_consistent_fields(rooms: list[dict[str, Any]]) -> None:
    voip = [room for room in rooms if room.get("t") == "v"]
    others = [room for room in rooms if room.get("t") != "v"]
    assert len(voip) == ROOMS
    assert {room["t"] for room in others} == {"c", "l"}
    assert len({room["_id"] for room in rooms}) == len(rooms)
    assert len({room["callUniqueId"] for room in voip}) == ROOMS
    for room in voip:
        _check_voip_room(room)
        ejson.decode(room)  # the project's own decoder accepts every line


def test_rooms_look_like_a_call_center(rooms: list[dict[str, Any]]) -> None:
    voip = [room for room in rooms if room.get("t") == "v"]
    open_rooms = [room for room in voip if "open" in room]
    closed = [room for room in voip if "open" not in room]
    assert 0.05 <= len(open_rooms) / ROOMS <= 0.10
    assert any("servedBy" not in room for room in open_rooms)  # still waiting in a queue
    inbound = sum(room["direction"] == "inbound" for room in voip) / ROOMS
    assert 0.62 <= inbound <= 0.78
    tagged = sum("tags" in room for room in closed) / len(closed)
    assert 0.4 <= tagged <= 0.6
    assert len({room["queue"] for room in voip if "queue" in room}) >= 15
    assert len({room["servedBy"]["_id"] for room in voip if "servedBy" in room}) == 10
    assert len({room["v"]["_id"] for room in voip}) < ROOMS * 0.2  # callers call again
    assert {room["closer"] for room in closed} == {"user", "visitor"}
    spread = [_ms(room["ts"]) for room in closed]
    assert max(spread) - min(spread) > 170 * DAY
    # both date forms of mongoexport appear
    canonical = [room for room in voip if isinstance(room["ts"]["$date"], dict)]
    assert 0 < len(canonical) < ROOMS * 0.1
    assert all(isinstance(room["msgs"], dict) for room in canonical)


def test_users_tokens_match_the_credentials(snapshot: tuple[Path, Credentials]) -> None:
    out, credentials = snapshot
    users = {doc["_id"]: doc for doc in _lines(out / "users.jsonl")}
    labels = {login.label for login in credentials.logins}
    assert {"admin", "manager", "agent", "user", "bot", "expired", "inactive"} <= labels
    for login in credentials.logins:
        doc = users[login.user_id]
        assert doc["username"] == login.username
        entries = [
            entry
            for entry in doc["services"]["resume"]["loginTokens"]
            if entry["hashedToken"] == _hashed(login.token)
        ]
        assert len(entries) == 1, login.label
        entry = entries[0]
        if login.label == "bot":
            assert entry["type"] == "personalAccessToken"
            assert "bot" in doc["roles"]
            continue
        age = NOW - _ms(entry["when"])
        if login.label == "expired":
            assert age > 90 * DAY
        else:
            assert 0 < age < 31 * DAY
    roles = {label: users[credentials.get(label).user_id]["roles"] for label in labels}
    assert "admin" in roles["admin"]
    assert "livechat-manager" in roles["manager"]
    assert "livechat-agent" in roles["agent"]
    assert roles["user"] == ["user"]
    assert users[credentials.get("inactive").user_id]["active"] is False
    agents = [doc for doc in users.values() if "livechat-agent" in doc["roles"]]
    assert len(agents) == 11  # 10 working agents and the deactivated one
    assert all(doc["username"].startswith("agent.") for doc in agents)


def test_permissions_and_manifest(snapshot: tuple[Path, Credentials]) -> None:
    out, _ = snapshot
    permissions = {doc["_id"]: doc["roles"] for doc in _lines(out / "permissions.jsonl")}
    assert set(permissions["view-livechat-rooms"]) == {
        "livechat-manager",
        "livechat-monitor",
        "admin",
    }
    assert "livechat-agent" in permissions["view-l-room"]
    assert set(permissions["api-bypass-rate-limit"]) == {"admin", "bot", "app"}
    assert orjson.loads((out / "manifest.json").read_bytes()) == {"position": 0}
    assert read_demo_state(out) == (ROOMS, 7, NOW)


def test_same_seed_same_bytes(tmp_path: Path, snapshot: tuple[Path, Credentials]) -> None:
    first, credentials = snapshot
    again = write_snapshot(tmp_path / "again", ROOMS, seed=7, now_ms=NOW)
    assert again == credentials
    for name in ("rooms.jsonl.gz", "users.jsonl", "permissions.jsonl", "manifest.json"):
        assert (tmp_path / "again" / name).read_bytes() == (first / name).read_bytes(), name
    other = write_snapshot(tmp_path / "other", 50, seed=8, now_ms=NOW)
    assert other.get("manager").token != credentials.get("manager").token


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    # the closed history and the open calls are two gzip members, made in two processes
    write_snapshot(tmp_path / "one", 3000, seed=3, now_ms=NOW, workers=1)
    write_snapshot(tmp_path / "two", 3000, seed=3, now_ms=NOW, workers=2)
    one = (tmp_path / "one" / "rooms.jsonl.gz").read_bytes()
    assert (tmp_path / "two" / "rooms.jsonl.gz").read_bytes() == one


def test_fast_line_matches_the_reference_room() -> None:
    world = _World(500, 5, NOW)
    for i in range(300):
        reference = _CallMaker(world, random.Random(i), 100)
        fast = _CallMaker(world, random.Random(i), 100)
        ts = NOW - i * 3_600_000
        expected = orjson.loads(orjson.dumps(_export_room(reference.closed_call(ts), False)))
        assert orjson.loads(fast.closed_line(ts)) == expected
        assert fast.rng.random() == reference.rng.random()  # same draws


def test_format_credentials(snapshot: tuple[Path, Credentials]) -> None:
    _, credentials = snapshot
    text = format_credentials(credentials, port=3111)
    manager = credentials.get("manager")
    assert (
        f"curl -s -H 'X-User-Id: {manager.user_id}' -H 'X-Auth-Token: {manager.token}' "
        "'http://localhost:3111/api/v1/voip/rooms?count=5'"
    ) in text
    for login in credentials.logins:
        assert login.token in text


# --- the simulator ------------------------------------------------------------------------


def _unwrap(payload: Any) -> dict[str, Any]:
    if isinstance(payload, list):
        assert len(payload) == 1
        payload = payload[0]
    assert isinstance(payload, dict)
    return payload


def _run(simulator: Simulator, start: int, seconds: int, step: int = 5) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    for t in range(0, seconds + 1, step):
        events.extend(simulator.next_events(start + t * 1000))
    return events


def test_simulator_keeps_a_consistent_state(
    snapshot: tuple[Path, Credentials], rooms: list[dict[str, Any]]
) -> None:
    out, credentials = snapshot
    simulator = Simulator.from_snapshot(out, calls_per_second=0.5)
    start = NOW + 3_600_000
    events = _run(simulator, start, 3 * 3600)
    # state: every room known to the snapshot, with whether it is open
    state: dict[str, bool] = {r["_id"]: "open" in r for r in rooms if r.get("t") == "v"}
    users = {login.user_id for login in credentials.logins}
    seen: dict[str, int] = {}
    wrapped = 0
    for subject, raw in events:
        wrapped += isinstance(raw, list)
        payload = _unwrap(raw)
        orjson.dumps(raw)
        action = payload["clientAction"]
        seen[f"{subject}:{action}"] = seen.get(f"{subject}:{action}", 0) + 1
        if subject == "watch.rooms":
            room = payload["room"]
            if action == "removed":
                assert list(room) == ["_id"]
                assert state.pop(room["_id"]) is False  # only closed calls are removed
                continue
            for key in ("ts", "_updatedAt", "lm"):
                assert isinstance(room[key]["$date"], int)  # as Rocket.Chat's broker writes dates
            assert start <= room["_updatedAt"]["$date"] <= start + 3 * 3_600_000 + 200_000
            _check_voip_room_live(room)
            if action == "inserted":
                assert room["_id"] not in state
                assert room["open"] is True
            else:
                assert state[room["_id"]] is True  # updates only touch known, open calls
            state[room["_id"]] = room.get("open") is True
        elif subject == "watch.users":
            assert action == "updated"
            assert payload["id"] not in users or "active" not in payload["diff"]
            diff = payload["diff"]
            assert set(diff) - {"_updatedAt"} in ({"active"}, {"services.resume.loginTokens"})
        else:
            assert subject == "permission.changed"
            assert payload["data"]["_id"] == "api-bypass-rate-limit"
    for kind in (
        "watch.rooms:inserted",
        "watch.rooms:updated",
        "watch.rooms:removed",
        "watch.users:updated",
        "permission.changed:updated",
    ):
        assert seen.get(kind, 0) > 0, kind
    assert 0 < wrapped < len(events)
    assert seen["watch.rooms:inserted"] > 3000
    assert simulator.open_rooms == sum(state.values())  # it rebuilt the snapshot's open calls


def _check_voip_room_live(room: dict[str, Any]) -> None:
    assert room["t"] == "v"
    assert room["name"] == f"{room['fname']}-{room['callUniqueId']}"
    ts = room["ts"]["$date"]
    if "servedBy" in room:
        assert room["callStarted"]["$date"] == room["servedBy"]["ts"]["$date"] >= ts
        assert room["callWaitingTime"] == room["callStarted"]["$date"] - ts
    if room.get("open") is True:
        assert "closedAt" not in room
    else:
        assert "open" not in room
        assert room["closedAt"]["$date"] >= room["callEndedAt"]["$date"] >= ts
        assert room["callDuration"] == room["closedAt"]["$date"] - ts
        assert room["closer"] in ("user", "visitor")


def test_simulator_is_deterministic(snapshot: tuple[Path, Credentials]) -> None:
    out, _ = snapshot
    start = NOW + 10_000
    first = _run(Simulator.from_snapshot(out), start, 600, step=3)
    second = _run(Simulator(ROOMS, 7, now_ms=NOW), start, 600, step=3)
    assert first
    assert orjson.dumps(first) == orjson.dumps(second)


def test_simulator_skips_a_long_pause() -> None:
    simulator = Simulator(100, 1, now_ms=NOW, calls_per_second=1.0)
    assert simulator.next_events(NOW) == []  # the first call starts the clock
    events = simulator.next_events(NOW + 10 * 3_600_000)  # ten hours later: one minute replayed
    inserted = [e for e in events if _unwrap(e[1])["clientAction"] == "inserted"]
    assert 20 < len(inserted) < 120
