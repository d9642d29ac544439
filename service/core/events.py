"""Rocket.Chat broadcast payloads -> Event (decode), and Event -> store and directory (apply).

Pure: no asyncio, no I/O. ``decode`` validates everything an event needs, so ``apply`` can
mutate without failing halfway; an event is either applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from service.core import ejson
from service.core.users import Directory

__all__ = [
    "SUBJECTS",
    "BadEvent",
    "Event",
    "Ignored",
    "PermissionRemove",
    "PermissionSet",
    "RoomRemove",
    "RoomUpsert",
    "UserRemove",
    "UserReplace",
    "UserUpdate",
    "apply",
    "apply_many",
    "decode",
    "subject_label",
]

ROOMS: Final = "watch.rooms"
USERS: Final = "watch.users"
PERMISSIONS: Final = "permission.changed"
#: The subjects the feed carries; any other subject is skipped.
SUBJECTS: Final = (ROOMS, USERS, PERMISSIONS)

_UPSERT_ACTIONS = frozenset({"inserted", "updated"})
_ACTIONS = frozenset({"inserted", "updated", "removed"})


class BadEvent(ValueError):
    """A malformed event: the reason says what is wrong with it."""


class Rooms(Protocol):
    """What ``apply`` needs of the RoomStore."""

    def upsert(self, room: dict[str, Any]) -> bool: ...

    def remove(self, room_id: str) -> bool: ...

    def apply_batch(self, ops: Sequence[tuple[bool, Any]]) -> list[bool | Exception]: ...


@dataclass(frozen=True, slots=True)
class RoomUpsert:
    """Replace the whole room (a room whose ``t`` is not ``v`` is removed instead)."""

    room: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RoomRemove:
    room_id: str


@dataclass(frozen=True, slots=True)
class UserReplace:
    """Replace the whole user (``doc`` is complete and already merged with any diff)."""

    doc: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UserUpdate:
    """Set the dotted paths of ``diff``, then remove those of ``unset``."""

    user_id: str
    diff: dict[str, Any]
    unset: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UserRemove:
    user_id: str


@dataclass(frozen=True, slots=True)
class PermissionSet:
    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PermissionRemove:
    name: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed event this replica does not act on (unknown subject or clientAction)."""

    reason: str


Event = (
    RoomUpsert
    | RoomRemove
    | UserReplace
    | UserUpdate
    | UserRemove
    | PermissionSet
    | PermissionRemove
    | Ignored
)


def subject_label(subject: str) -> str:
    """A bounded metric label for a subject: the known ones, else ``other``."""
    return subject if subject in SUBJECTS else "other"


# -- decode ----------------------------------------------------------------------------------


def _body(payload: Any) -> dict[str, Any]:
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise BadEvent(f"payload is not JSON: {exc}") from None
    if isinstance(payload, list):
        # Rocket.Chat's broker sends a broadcast's arguments as an array: exactly one here.
        if len(payload) != 1:
            raise BadEvent(f"payload array must hold exactly one object, it holds {len(payload)}")
        payload = payload[0]
    if not isinstance(payload, dict):
        raise BadEvent(f"payload must be a JSON object, got {type(payload).__name__}")
    try:
        decoded = ejson.decode(payload)
    except ejson.EJsonError as exc:
        raise BadEvent(f"bad Extended JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise BadEvent("payload must be a JSON object, got an Extended JSON value")
    return decoded


def _action(body: Mapping[str, Any]) -> str:
    action = body.get("clientAction")
    if not isinstance(action, str):
        raise BadEvent(f"clientAction must be a string, got {action!r}")
    return action


def _id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadEvent(f"{what} must be a non-empty string, got {value!r}")
    return value


def _paths(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadEvent(f"{what} must be an object of dotted paths, got {type(value).__name__}")
    for path in value:
        parts = path.split(".")
        if any(not part or part.startswith("$") for part in parts):
            raise BadEvent(f"{what} holds a bad dotted path {path!r}")
        if parts[0] == "_id":
            raise BadEvent(f"{what} may not change _id")
    return value


def _rooms(body: dict[str, Any]) -> Event:
    action = _action(body)
    if action not in _ACTIONS:
        return Ignored(f"clientAction {action!r}")
    room = body.get("room")
    if not isinstance(room, dict):
        if action == "removed" and "id" in body:  # tolerate the users-style shape
            return RoomRemove(_id(body["id"], "id"))
        raise BadEvent(f"room must be an object, got {type(room).__name__}")
    room_id = _id(room.get("_id"), "room._id")
    if action == "removed":
        return RoomRemove(room_id)
    return RoomUpsert(room)


def _users(body: dict[str, Any]) -> Event:
    action = _action(body)
    if action not in _ACTIONS:
        return Ignored(f"clientAction {action!r}")
    data = body.get("data")
    raw_id = body.get("id")
    if raw_id is None and isinstance(data, dict):
        raw_id = data.get("_id")
    user_id = _id(raw_id, "id")
    if action == "removed":
        return UserRemove(user_id)
    diff = _paths(body.get("diff"), "diff")
    unset = _paths(body.get("unset"), "unset")
    if data is None:
        if not diff and not unset:
            raise BadEvent(f"{action} user event needs data, diff or unset")
        return UserUpdate(user_id, diff, tuple(unset))
    if not isinstance(data, dict):
        raise BadEvent(f"data must be an object, got {type(data).__name__}")
    if data.get("_id", user_id) != user_id:
        raise BadEvent(f"data._id {data.get('_id')!r} differs from id {user_id!r}")
    doc = {**data, "_id": user_id}
    if diff or unset:
        # Merge here, on a scratch directory, so that applying stays a single replacement.
        scratch = Directory()
        scratch.upsert_user(doc)
        try:
            scratch.update_user(user_id, diff, unset)
        except ValueError as exc:
            raise BadEvent(str(exc)) from None
        doc = next(scratch.user_docs())
    return UserReplace(doc)


def _permissions(body: dict[str, Any]) -> Event:
    action = _action(body)
    if action not in _ACTIONS:
        return Ignored(f"clientAction {action!r}")
    data = body.get("data")
    if not isinstance(data, dict):
        if action == "removed" and "id" in body:
            return PermissionRemove(_id(body["id"], "id"))
        raise BadEvent(f"data must be an object, got {type(data).__name__}")
    name = _id(data.get("_id"), "data._id")
    if action == "removed":
        return PermissionRemove(name)
    roles = data.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise BadEvent(f"data.roles must be a list of strings, got {roles!r}")
    return PermissionSet(name, tuple(roles))


_DECODERS = {ROOMS: _rooms, USERS: _users, PERMISSIONS: _permissions}


def decode(subject: str, payload: bytes | Any) -> Event:
    """Validate one feed message: ``payload`` is JSON bytes or an already-parsed JSON value.

    Accepts a one-element array around the object and Extended JSON anywhere in it (dates also
    as ``{"$date": <ms>}``). An unknown subject or clientAction gives :class:`Ignored`; anything
    malformed raises :class:`BadEvent`. O(size of the payload).
    """
    decoder = _DECODERS.get(subject)
    if decoder is None:
        return Ignored(f"subject {subject[:64]!r}")
    return decoder(_body(payload))


# -- apply -----------------------------------------------------------------------------------


def apply(event: Event, store: Rooms, users: Directory) -> bool:
    """Apply a decoded event; True when it was acted on, False for :class:`Ignored`.

    Synchronous and idempotent: applying an event twice leaves the same state as once. A room
    update for an unknown room inserts it; removing an unknown room or user is a no-op.
    Raises :class:`BadEvent` (having changed nothing) only if the event cannot apply to the
    current state, e.g. a diff path that indexes a list with a name.
    """
    match event:
        case RoomUpsert(room):
            if room.get("t") == "v":
                store.upsert(room)
            else:
                store.remove(room["_id"])  # a room that stops being a VoIP room leaves the API
        case RoomRemove(room_id):
            store.remove(room_id)
        case UserReplace(doc):
            users.upsert_user(doc)
        case UserUpdate(user_id, diff, unset):
            try:
                users.update_user(user_id, diff, dict.fromkeys(unset, 1))
            except ValueError as exc:  # the directory checks before it stores: nothing changed
                raise BadEvent(str(exc)) from None
        case UserRemove(user_id):
            users.remove_user(user_id)
        case PermissionSet(name, roles):
            users.set_permission(name, roles)
        case PermissionRemove(name):
            users.remove_permission(name)
        case Ignored():
            return False
    return True


def _room_op(event: Event) -> tuple[bool, Any] | None:
    """A room event as a RoomStore batch op ((True, room) upsert, (False, id) remove)."""
    if type(event) is RoomUpsert:
        room = event.room
        return (True, room) if room.get("t") == "v" else (False, room["_id"])
    if type(event) is RoomRemove:
        return (False, event.room_id)
    return None


def apply_many(events: Sequence[Event], store: Rooms, users: Directory) -> list[bool | Exception]:
    """Apply decoded events in order, as :func:`apply` on each would; per event its result
    (True, False for :class:`Ignored`) or the exception that kept it from applying (it changed
    nothing; the others apply). Each run of room events goes to the store in one
    ``apply_batch`` call; a user or permission event ends the run before it applies, so the
    order between them holds. Synchronous and idempotent, like :func:`apply`."""
    results: list[bool | Exception] = []
    run: list[tuple[bool, Any]] = []
    at: list[int] = []

    def flush() -> None:
        for i, result in zip(at, store.apply_batch(run), strict=True):
            if isinstance(result, Exception):
                results[i] = result
        run.clear()
        at.clear()

    for event in events:
        op = _room_op(event)
        if op is not None:
            at.append(len(results))
            run.append(op)
            results.append(True)
            continue
        if type(event) is Ignored:
            results.append(False)
            continue
        if run:
            flush()
        try:
            results.append(apply(event, store, users))
        except Exception as exc:
            results.append(exc)
    if run:
        flush()
    return results
