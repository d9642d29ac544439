"""Builders of rooms, users and snapshot directories for tests."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from service.core.users import hash_token

__all__ = ["iso", "make_room", "make_user", "write_snapshot"]


def iso(ms: int) -> str:
    """Extended-JSON-relaxed style ISO string for a millisecond timestamp (UTC)."""
    from service.core.ejson import date_from_ms

    return str(date_from_ms(ms))


def make_room(room_id: str, **fields: Any) -> dict[str, Any]:
    """A closed inbound voip room in Extended JSON (relaxed), with ``fields`` overriding."""
    base: dict[str, Any] = {
        "_id": room_id,
        "t": "v",
        "name": f"guest-1-{room_id}",
        "fname": "guest-1",
        "ts": {"$date": iso(1_700_000_000_000)},
        "_updatedAt": {"$date": iso(1_700_000_100_000)},
        "closedAt": {"$date": iso(1_700_000_100_000)},
        "queue": "support",
        "direction": "inbound",
        "v": {"_id": "visitor-1", "username": "guest-1", "token": "tok"},
        "servedBy": {"_id": "agent-1", "username": "agent.one"},
        "callDuration": 60_000,
        "msgs": 0,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def make_user(
    user_id: str,
    roles: Iterable[str],
    tokens: Mapping[str, int] | None = None,
    *,
    username: str | None = None,
    active: bool = True,
    personal: Iterable[str] = (),
) -> dict[str, Any]:
    """A user document: ``tokens`` maps raw token -> issue time (epoch ms); ``personal`` lists
    raw personal access tokens."""
    entries: list[dict[str, Any]] = [
        {"hashedToken": hash_token(raw), "when": {"$date": iso(when)}}
        for raw, when in (tokens or {}).items()
    ]
    entries += [
        {"hashedToken": hash_token(raw), "when": {"$date": iso(0)}, "type": "personalAccessToken"}
        for raw in personal
    ]
    return {
        "_id": user_id,
        "username": username or user_id,
        "roles": list(roles),
        "active": active,
        "services": {"password": {"bcrypt": "secret"}, "resume": {"loginTokens": entries}},
    }


def _write(path: Path, docs: Iterable[Mapping[str, Any]]) -> None:
    data = b"".join(orjson.dumps(d) + b"\n" for d in docs)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_snapshot(
    directory: Path,
    rooms: Iterable[Mapping[str, Any]],
    users: Iterable[Mapping[str, Any]] = (),
    permissions: Iterable[Mapping[str, Any]] = (),
    position: int | None = None,
    gz: bool = False,
) -> Path:
    """Write a snapshot directory in the contract's format; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if gz else ".jsonl"
    _write(directory / f"rooms{suffix}", rooms)
    _write(directory / f"users{suffix}", users)
    _write(directory / f"permissions{suffix}", permissions)
    if position is not None:
        (directory / "manifest.json").write_bytes(orjson.dumps({"position": position}))
    return directory
