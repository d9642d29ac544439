"""decode and apply of feed events: unit by unit, and against a brute-force model."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core import ejson
from service.core.events import (
    BadEvent,
    Event,
    Ignored,
    PermissionRemove,
    PermissionSet,
    RoomRemove,
    RoomUpsert,
    UserRemove,
    UserReplace,
    UserUpdate,
    apply,
    decode,
    subject_label,
)
from service.core.query import RoomQuery
from service.core.store import RoomStore
from service.core.users import Directory, hash_token

try:
    from tests.oracle import reference_page
except ImportError:  # pragma: no cover - the oracle is optional
    reference_page = None  # type: ignore[assignment]

ROOM = {
    "_id": "r1",
    "t": "v",
    "name": "guest-1",
    "ts": {"$date": 1_700_000_000_000},
    "closedAt": {"$date": "2023-11-14T22:13:20.000Z"},
    "msgs": {"$numberInt": "3"},
}


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


# -- decode: rooms ---------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["inserted", "updated"])
def test_room_upsert_converts_extended_json(action: str) -> None:
    event = decode("watch.rooms", dumps({"clientAction": action, "room": ROOM}))
    assert isinstance(event, RoomUpsert)
    assert event.room["ts"] == "2023-11-14T22:13:20.000Z"
    assert isinstance(event.room["ts"], ejson.Date)
    assert isinstance(event.room["closedAt"], ejson.Date)
    assert event.room["msgs"] == 3


def test_room_removed() -> None:
    event = decode("watch.rooms", dumps({"clientAction": "removed", "room": {"_id": "r1"}}))
    assert event == RoomRemove("r1")


def test_one_element_array_is_unwrapped() -> None:
    plain = decode("watch.rooms", dumps({"clientAction": "updated", "room": ROOM}))
    wrapped = decode("watch.rooms", dumps([{"clientAction": "updated", "room": ROOM}]))
    assert plain == wrapped


def test_parsed_payload_is_accepted() -> None:
    event = decode("watch.rooms", [{"clientAction": "removed", "room": {"_id": "x"}}])
    assert event == RoomRemove("x")


@pytest.mark.parametrize(
    ("subject", "payload", "reason"),
    [
        ("watch.rooms", b"{not json", "not JSON"),
        ("watch.rooms", b"[]", "exactly one"),
        ("watch.rooms", dumps([{}, {}]), "exactly one"),
        ("watch.rooms", b'"text"', "JSON object"),
        ("watch.rooms", b"42", "JSON object"),
        ("watch.rooms", dumps({"room": ROOM}), "clientAction"),
        ("watch.rooms", dumps({"clientAction": 1, "room": ROOM}), "clientAction"),
        ("watch.rooms", dumps({"clientAction": "updated"}), "room must be an object"),
        ("watch.rooms", dumps({"clientAction": "updated", "room": []}), "room must be"),
        ("watch.rooms", dumps({"clientAction": "updated", "room": {"t": "v"}}), "room._id"),
        ("watch.rooms", dumps({"clientAction": "removed", "room": {"_id": 5}}), "room._id"),
        (
            "watch.rooms",
            dumps({"clientAction": "updated", "room": {"_id": "a", "ts": {"$date": "nope"}}}),
            "Extended JSON",
        ),
        ("watch.users", dumps({"clientAction": "removed"}), "id must be"),
        ("watch.users", dumps({"clientAction": "updated", "id": "u"}), "needs data, diff"),
        ("watch.users", dumps({"clientAction": "updated", "id": "u", "diff": []}), "diff must"),
        ("watch.users", dumps({"clientAction": "updated", "id": "u", "diff": {"a..b": 1}}), "path"),
        ("watch.users", dumps({"clientAction": "updated", "id": "u", "diff": {"_id": 1}}), "_id"),
        ("watch.users", dumps({"clientAction": "updated", "id": "u", "unset": {"$x": 1}}), "path"),
        ("watch.users", dumps({"clientAction": "inserted", "id": "u", "data": 3}), "data must"),
        (
            "watch.users",
            dumps({"clientAction": "inserted", "id": "u", "data": {"_id": "v"}}),
            "differs",
        ),
        ("permission.changed", dumps({"clientAction": "updated"}), "data must"),
        ("permission.changed", dumps({"clientAction": "updated", "data": {"_id": "p"}}), "roles"),
        (
            "permission.changed",
            dumps({"clientAction": "updated", "data": {"_id": "p", "roles": [1]}}),
            "roles",
        ),
        ("permission.changed", dumps({"clientAction": "removed", "data": {}}), "data._id"),
    ],
)
def test_malformed_events_are_rejected(subject: str, payload: bytes, reason: str) -> None:
    with pytest.raises(BadEvent, match=reason):
        decode(subject, payload)


def test_unknown_subject_and_action_are_ignored() -> None:
    assert isinstance(decode("watch.messages", b"not even json"), Ignored)
    event = decode("watch.rooms", dumps({"clientAction": "archived", "room": ROOM}))
    assert isinstance(event, Ignored)
    assert isinstance(decode("watch.users", dumps({"clientAction": "x", "id": "u"})), Ignored)
    assert isinstance(decode("permission.changed", dumps({"clientAction": "x"})), Ignored)
    assert apply(event, RoomStore(), Directory()) is False


def test_subject_label_is_bounded() -> None:
    assert subject_label("watch.rooms") == "watch.rooms"
    assert subject_label("anything-else") == "other"


# -- decode: users and permissions -----------------------------------------------------------


def test_user_inserted_with_data() -> None:
    payload = {"clientAction": "inserted", "id": "u1", "data": {"_id": "u1", "username": "a"}}
    assert decode("watch.users", dumps(payload)) == UserReplace({"_id": "u1", "username": "a"})


def test_user_data_without_id_takes_the_event_id() -> None:
    payload = {"clientAction": "inserted", "id": "u1", "data": {"username": "a"}}
    assert decode("watch.users", dumps(payload)) == UserReplace({"username": "a", "_id": "u1"})


def test_user_data_merged_with_diff() -> None:
    payload = {
        "clientAction": "updated",
        "id": "u1",
        "data": {"_id": "u1", "username": "a", "active": True},
        "diff": {"roles": ["admin"]},
        "unset": {"active": 1},
    }
    event = decode("watch.users", dumps(payload))
    assert event == UserReplace({"_id": "u1", "username": "a", "roles": ["admin"]})


def test_user_diff_and_unset() -> None:
    when = {"$date": 1_700_000_000_000}
    payload = {
        "clientAction": "updated",
        "id": "u1",
        "diff": {"services.resume.loginTokens": [{"hashedToken": "h", "when": when}]},
        "unset": {"active": 1},
    }
    event = decode("watch.users", [payload])
    assert isinstance(event, UserUpdate)
    assert event.user_id == "u1"
    assert event.unset == ("active",)
    token = event.diff["services.resume.loginTokens"][0]
    assert token["when"] == "2023-11-14T22:13:20.000Z"


def test_user_removed() -> None:
    assert decode("watch.users", dumps({"clientAction": "removed", "id": "u1"})) == UserRemove("u1")


def test_permissions() -> None:
    data = {"_id": "view-l-room", "roles": ["admin", "livechat-agent"]}
    for action in ("inserted", "updated"):
        event = decode("permission.changed", dumps({"clientAction": action, "data": data}))
        assert event == PermissionSet("view-l-room", ("admin", "livechat-agent"))
    removed = decode("permission.changed", dumps({"clientAction": "removed", "data": data}))
    assert removed == PermissionRemove("view-l-room")


# -- apply -----------------------------------------------------------------------------------


def test_apply_rooms() -> None:
    store, users = RoomStore(), Directory()
    room = decode("watch.rooms", dumps({"clientAction": "updated", "room": ROOM}))
    assert apply(room, store, users)
    stored = store.get("r1")
    assert stored is not None
    assert orjson.loads(stored)["ts"] == "2023-11-14T22:13:20.000Z"
    # a room that stops being a voip room leaves the store
    chat = decode("watch.rooms", dumps({"clientAction": "updated", "room": {**ROOM, "t": "c"}}))
    apply(chat, store, users)
    assert store.get("r1") is None
    assert len(store) == 0
    # removing an unknown room is a no-op
    apply(RoomRemove("nope"), store, users)
    assert len(store) == 0


def test_apply_users_new_login_token_authenticates() -> None:
    store, users = RoomStore(), Directory()
    now = 1_700_000_000_000
    insert = {"clientAction": "inserted", "id": "u1", "data": {"_id": "u1", "roles": ["admin"]}}
    apply(decode("watch.users", dumps(insert)), store, users)
    login = {
        "clientAction": "updated",
        "id": "u1",
        "diff": {
            "services.resume.loginTokens": [
                {"hashedToken": hash_token("raw"), "when": {"$date": now}}
            ]
        },
    }
    event = decode("watch.users", dumps(login))
    apply(event, store, users)
    apply(event, store, users)  # idempotent
    assert users.authenticate("u1", "raw", now + 1000).id == "u1"
    apply(decode("watch.users", dumps({"clientAction": "removed", "id": "u1"})), store, users)
    assert users.user("u1") is None


def test_apply_state_dependent_bad_diff_changes_nothing() -> None:
    store, users = RoomStore(), Directory()
    tokens = [{"hashedToken": "h", "when": "2023-01-01T00:00:00.000Z"}]
    users.upsert_user(
        {"_id": "u1", "roles": ["a"], "services": {"resume": {"loginTokens": tokens}}}
    )
    before = list(users.user_docs())
    bad = UserUpdate("u1", {"roles": ["b"], "services.resume.loginTokens.first.when": 1}, ())
    with pytest.raises(BadEvent):
        apply(bad, store, users)
    assert list(users.user_docs()) == before


def test_apply_permissions() -> None:
    store, users = RoomStore(), Directory()
    apply(PermissionSet("view-l-room", ("x",)), store, users)
    assert users.permission_roles("view-l-room") == frozenset({"x"})
    apply(PermissionRemove("view-l-room"), store, users)
    assert "admin" in users.permission_roles("view-l-room")  # back to the default


# -- property: idempotent and equal to a brute-force model -----------------------------------

IDS = [f"r{i}" for i in range(6)]

dates = st.one_of(
    st.integers(0, 2_000_000_000_000).map(lambda ms: {"$date": ms}),
    st.integers(0, 2_000_000_000_000).map(lambda ms: {"$date": str(ejson.date_from_ms(ms))}),
)
rooms = st.fixed_dictionaries(
    {
        "_id": st.sampled_from(IDS),
        "t": st.sampled_from(["v", "v", "v", "c"]),
        "ts": dates,
    },
    optional={
        "name": st.text(max_size=8),
        "open": st.just(True),
        "closedAt": dates,
        "queue": st.sampled_from(["a", "b"]),
        "tags": st.lists(st.sampled_from(["x", "y", "z"]), max_size=2),
        "servedBy": st.fixed_dictionaries({"_id": st.sampled_from(["a1", "a2"])}),
        "msgs": st.integers(0, 10) | st.integers(0, 10).map(lambda n: {"$numberInt": str(n)}),
    },
)
room_events = st.one_of(
    st.builds(
        lambda action, room, wrap: (
            [{"clientAction": action, "room": room}]
            if wrap
            else {"clientAction": action, "room": room}
        ),
        st.sampled_from(["inserted", "updated"]),
        rooms,
        st.booleans(),
    ),
    st.builds(lambda rid: {"clientAction": "removed", "room": {"_id": rid}}, st.sampled_from(IDS)),
    st.sampled_from(
        [{"clientAction": "updated", "room": {"t": "v"}}, {"clientAction": "nope"}, "garbage"]
    ),
)


def model_apply(model: dict[str, Any], payload: Any) -> None:
    """The obvious meaning of a watch.rooms payload, written independently of events.py."""
    body = payload[0] if isinstance(payload, list) else payload
    if not isinstance(body, dict):
        return
    room = body.get("room")
    if not isinstance(room, dict) or "_id" not in room:
        return
    if body.get("clientAction") == "removed":
        model.pop(room["_id"], None)
    elif body.get("clientAction") in ("inserted", "updated"):
        if room.get("t") == "v":
            model[room["_id"]] = ejson.decode(room)
        else:
            model.pop(room["_id"], None)


def run(payloads: list[Any], times: int) -> RoomStore:
    store, users = RoomStore(block_size=2), Directory()
    for payload in payloads:
        for _ in range(times):
            try:
                event: Event = decode("watch.rooms", dumps(payload))
            except BadEvent:
                continue
            apply(event, store, users)
    return store


def contents(store: RoomStore) -> dict[str, Any]:
    out = {}
    for rid in IDS:
        raw = store.get(rid)
        if raw is not None:
            out[rid] = orjson.loads(raw)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(room_events, max_size=40))
def test_events_are_idempotent_and_match_the_model(payloads: list[Any]) -> None:
    once = run(payloads, 1)
    twice = run(payloads, 2)  # every event applied twice in a row
    replayed = run(payloads + payloads, 1)  # the whole sequence delivered again
    once._check()
    twice._check()
    replayed._check()
    model: dict[str, Any] = {}
    for payload in payloads:
        model_apply(model, payload)
    expected = {rid: orjson.loads(orjson.dumps(room)) for rid, room in model.items()}
    assert contents(once) == expected
    assert contents(twice) == expected
    assert contents(replayed) == expected
    assert len(once) == len(twice) == len(replayed) == len(model)
    if reference_page is not None:
        query = RoomQuery(count=None, sort=(("ts", -1),))
        total, page = once.page(query)
        ref_total, ref_page = reference_page(list(model.values()), query)
        assert total == ref_total
        assert [orjson.loads(b) for b in page] == [orjson.loads(orjson.dumps(r)) for r in ref_page]
