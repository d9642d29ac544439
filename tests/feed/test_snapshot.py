"""Snapshot loading: both encodings, both Extended JSON modes, and errors naming file and line."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core import ejson
from service.core.store import RoomStore
from service.core.users import Directory
from service.feed import snapshot
from service.feed.snapshot import SnapshotError, load_snapshot, read_jsonl
from tests.factories import make_room, make_user, write_snapshot


def load(directory: Path) -> tuple[RoomStore, Directory, int, int]:
    store, users = RoomStore(), Directory()
    result = load_snapshot(directory, store, users)
    return store, users, result.position, result.skipped_rooms


@pytest.mark.parametrize("gz", [False, True])
def test_loads_rooms_users_permissions_and_position(tmp_path: Path, gz: bool) -> None:
    rooms = [
        make_room("a", ts={"$date": "2021-07-09T20:12:19.795Z"}),  # relaxed
        make_room("b", ts={"$date": {"$numberLong": "1625861539795"}}, msgs={"$numberInt": "3"}),
        {"_id": "c", "t": "c", "name": "general"},
        {"_id": "d", "t": "l", "name": "livechat"},
    ]
    users = [make_user("u1", ["admin"], {"tok": 1_700_000_000_000})]
    perms = [{"_id": "view-livechat-rooms", "roles": ["admin"]}]
    write_snapshot(tmp_path, rooms, users, perms, position=42, gz=gz)
    store, directory, position, skipped = load(tmp_path)
    assert len(store) == 2
    assert skipped == 2
    assert position == 42
    assert len(directory) == 1
    assert directory.permission_roles("view-livechat-rooms") == {"admin"}
    a, b = (orjson.loads(store.get(i) or b"") for i in ("a", "b"))
    assert a["ts"] == b["ts"] == "2021-07-09T20:12:19.795Z"
    assert b["msgs"] == 3


def test_users_and_permissions_optional(tmp_path: Path) -> None:
    (tmp_path / "rooms.jsonl").write_bytes(orjson.dumps(make_room("a")) + b"\n")
    store, directory, position, _ = load(tmp_path)
    assert (len(store), len(directory), position) == (1, 0, 0)
    assert "admin" in directory.permission_roles("view-livechat-rooms")  # the default


def test_password_hashes_are_not_kept(tmp_path: Path) -> None:
    write_snapshot(tmp_path, [make_room("a")], [make_user("u1", ["admin"], {"t": 1})])
    _, directory, _, _ = load(tmp_path)
    (doc,) = list(directory.user_docs())
    assert "password" not in doc["services"]


def _rooms_file(tmp_path: Path, lines: list[bytes], gz: bool = False) -> Path:
    data = b"\n".join(lines) + b"\n"
    if gz:
        (tmp_path / "rooms.jsonl.gz").write_bytes(gzip.compress(data))
    else:
        (tmp_path / "rooms.jsonl").write_bytes(data)
    return tmp_path


GOOD = orjson.dumps(make_room("a"))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"t": "v"}', "without a string _id"),
        (b'{"_id": "x", "t": "v", "ts": {"$date": "yesterday"}}', "bad Extended JSON"),
        (b'{"_id": "x", "t": "v", "n": {"$numberLong": "1.5"}}', "bad Extended JSON"),
        (b'{"_id": {"$oid": "zz"}, "t": "v"}', "bad Extended JSON"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_line_names_file_and_line(
    tmp_path: Path, bad: bytes, reason: str, gz: bool
) -> None:
    _rooms_file(tmp_path, [GOOD, GOOD, bad, GOOD], gz)
    with pytest.raises(SnapshotError) as info:
        load(tmp_path)
    name = "rooms.jsonl.gz" if gz else "rooms.jsonl"
    assert f"{name}:3:" in str(info.value)
    assert reason in str(info.value)
    assert info.value.line == 3


def test_malformed_user_line(tmp_path: Path) -> None:
    _rooms_file(tmp_path, [GOOD])
    (tmp_path / "users.jsonl").write_bytes(b'{"_id": "u"}\n\n{"_id": 5}\n')
    with pytest.raises(SnapshotError, match=r"users\.jsonl:3:"):
        load(tmp_path)


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"\n".join([GOOD] * 200) + b"\n")
    (tmp_path / "rooms.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotError, match=r"rooms\.jsonl\.gz.*damaged gzip"):
        load(tmp_path)


def test_missing_rooms_file(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"missing rooms\.jsonl"):
        load(tmp_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="not a directory"):
        load(tmp_path / "nope")


def test_both_encodings_is_ambiguous(tmp_path: Path) -> None:
    _rooms_file(tmp_path, [GOOD])
    _rooms_file(tmp_path, [GOOD], gz=True)
    with pytest.raises(SnapshotError, match="both"):
        load(tmp_path)


@pytest.mark.parametrize("manifest", [b"nope", b'{"position": -1}', b'{"position": "7"}'])
def test_bad_manifest(tmp_path: Path, manifest: bytes) -> None:
    _rooms_file(tmp_path, [GOOD])
    (tmp_path / "manifest.json").write_bytes(manifest)
    with pytest.raises(SnapshotError, match=r"manifest\.json"):
        load(tmp_path)


# Lines as a file may hold them: documents with and without wrappers, blank lines, \r\n ends.
jsonl_lines = st.lists(
    st.one_of(
        st.builds(
            lambda i, ms: orjson.dumps({"_id": f"r{i}", "ts": {"$date": ms}, "s": "x" * (i % 50)}),
            st.integers(0, 10**6),
            st.integers(0, 2 * 10**12),
        ),
        st.builds(lambda i: orjson.dumps({"_id": f"p{i}", "n": i}), st.integers(0, 10**6)),
        st.sampled_from([b"", b"  ", b"\r", b'{"_id": "w"}\r']),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(jsonl_lines, st.integers(1, 300), st.booleans(), st.booleans())
def test_read_jsonl_whatever_the_chunk_size(
    lines: list[bytes], chunk: int, newline_at_end: bool, gz: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    expected = [
        (number, ejson.decode(orjson.loads(line)))
        for number, line in enumerate(data.split(b"\n"), 1)
        if line.strip()
    ]
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        path = Path(tmp) / ("rooms.jsonl.gz" if gz else "rooms.jsonl")
        path.write_bytes(gzip.compress(data) if gz else data)
        patch.setattr(snapshot, "_CHUNK", chunk)
        assert list(read_jsonl(path)) == expected


def test_bad_line_after_a_chunk_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "_CHUNK", 7)
    _rooms_file(tmp_path, [GOOD, b"", GOOD, b"{bad"])
    with pytest.raises(SnapshotError, match=r"rooms\.jsonl:4: not JSON"):
        load(tmp_path)


@pytest.mark.parametrize(("workers", "run_bytes"), [(0, 1), (0, 300), (2, 2000)])
def test_rooms_decoded_in_runs_and_workers_load_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, run_bytes: int
) -> None:
    """Whatever the runs the lines are cut into, in this thread or in worker processes: the
    same rooms, the same skipped lines, and a store whose invariants hold."""
    rooms = [
        make_room(f"r{i:03d}", ts={"$date": f"2021-07-{1 + i % 28:02d}T20:12:19.795Z"})
        if i % 3
        else make_room(f"r{i:03d}", ts={"$date": {"$numberLong": str(1625861539795 + i)}})
        for i in range(60)
    ]
    rooms[7] = {"_id": "c7", "t": "c", "name": "general"}
    write_snapshot(tmp_path, rooms, gz=True)
    monkeypatch.setattr(snapshot, "WORK_BYTES", run_bytes)
    store, users = RoomStore(), Directory()
    skipped: list[int] = []
    result = load_snapshot(tmp_path, store, users, skipped, workers=workers)
    assert result.rooms == 59
    assert skipped == [8]
    store._check()
    for room in rooms:
        if room["t"] == "v":
            want = orjson.dumps(ejson.decode(room))
            assert store.get(room["_id"]) == want


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_line_is_named_whichever_run_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setattr(snapshot, "WORK_BYTES", 100)
    _rooms_file(tmp_path, [GOOD, b"", GOOD, GOOD, GOOD, b"{bad", GOOD])
    with pytest.raises(SnapshotError, match=r"rooms\.jsonl:6: not JSON"):
        load_snapshot(tmp_path, RoomStore(), Directory(), workers=workers)
