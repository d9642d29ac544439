"""Tests for service.core.projection: MongoDB find projections on rooms."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.projection import project, project_bytes
from service.core.query import Projection

ROOM: dict[str, Any] = {
    "_id": "r1",
    "t": "v",
    "name": "Room 1",
    "ts": "2021-07-09T20:12:19.795Z",
    "v": {"_id": "v1", "username": "guest", "token": "secret"},
    "servedBy": {"_id": "a1", "username": "agent"},
    "tags": ["x", "y"],
    "open": True,
    "transcript": [
        {"u": {"_id": "a1", "name": "A"}, "msg": "hi"},
        {"u": {"_id": "v1"}, "msg": "hello"},
        "note",
        [{"u": {"_id": "n"}, "msg": "nested"}, 7],
        {"msg": "no u"},
    ],
}


def inc(*paths: str, keep_id: bool = True) -> Projection:
    return Projection(include=True, paths=paths, keep_id=keep_id)


def exc(*paths: str, keep_id: bool = True) -> Projection:
    return Projection(include=False, paths=paths, keep_id=keep_id)


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (inc("name"), {"_id": "r1", "name": "Room 1"}),
        (inc("name", keep_id=False), {"name": "Room 1"}),
        (inc("name", "ts"), {"_id": "r1", "name": "Room 1", "ts": ROOM["ts"]}),
        # output follows the document's order, not the projection's
        (inc("ts", "name"), {"_id": "r1", "name": "Room 1", "ts": ROOM["ts"]}),
        (inc("v.username"), {"_id": "r1", "v": {"username": "guest"}}),
        (
            inc("v.username", "v._id", "servedBy"),
            {"_id": "r1", "v": {"_id": "v1", "username": "guest"}, "servedBy": ROOM["servedBy"]},
        ),
        # missing paths are left out; an object missing the rest of the path stays, empty
        (inc("missing", "name.deeper", "v.missing"), {"_id": "r1", "v": {}}),
        (inc("tags"), {"_id": "r1", "tags": ["x", "y"]}),
        # a path through an array of scalars matches nothing in it
        (inc("tags.length"), {"_id": "r1", "tags": []}),
        (inc(), {"_id": "r1"}),
        (inc(keep_id=False), {}),
        (inc("_id.x", keep_id=True), {"_id": "r1"}),
    ],
)
def test_inclusion(p: Projection, expected: dict[str, Any]) -> None:
    assert project(ROOM, p) == expected
    assert list(project(ROOM, p)) == list(expected)


def test_inclusion_through_arrays_of_objects() -> None:
    assert project(ROOM, inc("transcript.msg", keep_id=False)) == {
        "transcript": [
            {"msg": "hi"},
            {"msg": "hello"},
            [{"msg": "nested"}],
            {"msg": "no u"},
        ]
    }
    assert project(ROOM, inc("transcript.u._id", keep_id=False)) == {
        "transcript": [{"u": {"_id": "a1"}}, {"u": {"_id": "v1"}}, [{"u": {"_id": "n"}}], {}]
    }


@pytest.mark.parametrize(
    ("p", "removed"),
    [
        (exc("name"), {"name"}),
        (exc("name", "tags"), {"name", "tags"}),
        (exc(keep_id=False), {"_id"}),
        (exc("name", keep_id=False), {"_id", "name"}),
        (exc("missing"), set()),
    ],
)
def test_exclusion_of_top_level_fields(p: Projection, removed: set[str]) -> None:
    expected = {k: v for k, v in ROOM.items() if k not in removed}
    assert project(ROOM, p) == expected
    assert list(project(ROOM, p)) == list(expected)


def test_exclusion_of_nested_paths() -> None:
    result = project(ROOM, exc("v.token", "servedBy.missing", "name.deeper"))
    assert result["v"] == {"_id": "v1", "username": "guest"}
    assert result["servedBy"] == ROOM["servedBy"]
    assert result["name"] == "Room 1"
    assert {k: v for k, v in result.items() if k != "v"} == {
        k: v for k, v in ROOM.items() if k != "v"
    }


def test_exclusion_through_arrays_of_objects() -> None:
    result = project(ROOM, exc("transcript.u"))
    assert result["transcript"] == [
        {"msg": "hi"},
        {"msg": "hello"},
        "note",
        [{"msg": "nested"}, 7],
        {"msg": "no u"},
    ]


def test_exclusion_keeps_id_unless_told() -> None:
    assert "_id" in project(ROOM, exc("name"))
    assert "_id" in project(ROOM, exc("name", keep_id=True))
    assert "_id" not in project(ROOM, exc("name", keep_id=False))
    # an _id subpath never brings back a dropped _id
    assert "_id" not in project({"_id": {"x": 1, "y": 2}}, exc("_id.x", keep_id=False))


def test_a_shorter_path_covers_a_longer_one() -> None:
    # parse refuses such projections, but project stays well defined on them
    assert project(ROOM, inc("v", "v.username", keep_id=False)) == {"v": ROOM["v"]}
    assert project(ROOM, inc("v.username", "v", keep_id=False)) == {"v": ROOM["v"]}
    assert "v" not in project(ROOM, exc("v.username", "v"))


def test_project_leaves_the_room_unchanged() -> None:
    before = copy.deepcopy(ROOM)
    for p in (inc("v.username", "transcript.msg"), exc("v.token", "transcript.u._id")):
        project(ROOM, p)
    assert before == ROOM


def test_project_bytes() -> None:
    doc = orjson.dumps(ROOM)
    assert orjson.loads(project_bytes(doc, inc("v.username"))) == {
        "_id": "r1",
        "v": {"username": "guest"},
    }
    assert project_bytes(doc, exc("missing")) == doc
    with pytest.raises(TypeError):
        project_bytes(b"[1]", inc("a"))


# --- properties -----------------------------------------------------------------------------

SEGMENTS = st.sampled_from(["_id", "a", "b", "c", "v", "u"])
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=4)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SEGMENTS, inner, max_size=4),
    max_leaves=20,
)
DOCS = st.dictionaries(SEGMENTS, VALUES, max_size=6)
PATHS = st.lists(SEGMENTS, min_size=1, max_size=3).map(".".join)


def is_subset(small: Any, big: Any) -> bool:
    """``small`` keeps only (parts of) what ``big`` holds: objects lose keys, arrays elements."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and is_subset(v, big[k]) for k, v in small.items()
        )
    if isinstance(small, list):
        if not isinstance(big, list):
            return False
        rest = iter(big)  # each element of small matches a later element of big, in order
        return all(any(is_subset(x, y) for y in rest) for x in small)
    return bool(small == big)


@settings(max_examples=300, deadline=None)
@given(doc=DOCS, paths=st.lists(PATHS, max_size=4), keep_id=st.booleans())
def test_inclusion_result_is_part_of_the_input(
    doc: dict[str, Any], paths: list[str], keep_id: bool
) -> None:
    result = project(doc, Projection(include=True, paths=tuple(paths), keep_id=keep_id))
    assert is_subset(result, doc)
    assert ("_id" in result) == ("_id" in doc and keep_id)
    tops = {p.split(".")[0] for p in paths} | ({"_id"} if keep_id else set())
    assert set(result) <= tops


@settings(max_examples=300, deadline=None)
@given(doc=DOCS, paths=st.lists(PATHS, max_size=4))
def test_exclusion_of_paths_that_match_nothing_is_identity(
    doc: dict[str, Any], paths: list[str]
) -> None:
    absent = (*("zz." + p for p in paths), "q")
    assert project(doc, Projection(include=False, paths=absent)) == doc


@settings(max_examples=300, deadline=None)
@given(doc=DOCS, paths=st.lists(PATHS, max_size=4))
def test_exclusion_result_is_part_of_the_input_and_drops_top_level_paths(
    doc: dict[str, Any], paths: list[str]
) -> None:
    result = project(doc, Projection(include=False, paths=tuple(paths)))
    assert is_subset(result, doc)
    for path in paths:
        if "." not in path and path != "_id":
            assert path not in result
