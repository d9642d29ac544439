"""Read a snapshot directory (mongoexport JSON lines, plain or gzip) into a store and directory."""

from __future__ import annotations

import contextlib
import gzip
import io
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from service.core import ejson
from service.core.store import RoomStore
from service.core.users import Directory
from service.feed.progress import LoadProgress

__all__ = ["LoadResult", "SnapshotError", "find_collection", "load_snapshot", "read_jsonl"]


class SnapshotError(Exception):
    """A snapshot that cannot be loaded; names the file and, where there is one, the line."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load found: the feed position it includes and what it counted."""

    position: int
    rooms: int
    skipped_rooms: int
    users: int
    permissions: int
    seconds: float


def find_collection(directory: Path, name: str, required: bool) -> Path | None:
    """``name.jsonl`` or ``name.jsonl.gz`` in ``directory``; SnapshotError when both or (if
    required) neither exists."""
    plain = directory / f"{name}.jsonl"
    packed = directory / f"{name}.jsonl.gz"
    if plain.exists() and packed.exists():
        raise SnapshotError(directory, f"both {plain.name} and {packed.name} exist; keep one")
    if plain.exists():
        return plain
    if packed.exists():
        return packed
    if required:
        raise SnapshotError(directory, f"missing {plain.name} (or {packed.name})")
    return None


_CHUNK = 1 << 20  # bytes read at a time: fewer, larger reads than one per line


def _lines(path: Path, progress: LoadProgress | None = None) -> Iterator[bytes]:
    """The lines of ``path`` (gunzipped when it ends in ``.gz``), without their b"\\n".

    ``progress.bytes_read`` advances by the bytes taken from the file (compressed ones for gzip).
    """
    rest = b""
    base = progress.bytes_read if progress is not None else 0
    with open(path, "rb") as raw, contextlib.ExitStack() as stack:
        stream: io.BufferedIOBase = raw
        if path.name.endswith(".gz"):
            stream = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        while chunk := stream.read(_CHUNK):
            if progress is not None:
                progress.bytes_read = base + raw.tell()
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        if progress is not None:
            progress.bytes_read = base + raw.tell()
    if rest:
        yield rest


def read_jsonl(
    path: Path, progress: LoadProgress | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, decoded document) for each non-blank line of a JSON-lines file.

    Extended JSON is converted. A line that is not a JSON object with a string ``_id``, bad
    Extended JSON, or a damaged gzip stream raises SnapshotError naming the file and line.
    ``progress`` (if given) follows the bytes read.
    """
    number = 0
    loads, decode, may_hold_wrappers = orjson.loads, ejson.decode, ejson.may_hold_wrappers
    try:
        for number, raw in enumerate(_lines(path, progress), 1):
            try:
                doc = loads(raw)
            except orjson.JSONDecodeError as exc:
                if not raw.strip():
                    continue
                raise SnapshotError(path, f"not JSON: {exc}", number) from None
            if type(doc) is not dict:
                raise SnapshotError(path, "not a JSON object", number)
            if may_hold_wrappers(raw):  # else decoding would change nothing
                try:
                    doc = decode(doc)
                except ejson.EJsonError as exc:
                    raise SnapshotError(path, f"bad Extended JSON: {exc}", number) from None
            if not isinstance(doc.get("_id"), str):
                raise SnapshotError(path, "document without a string _id", number)
            yield number, doc
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise SnapshotError(path, f"damaged gzip stream after line {number}: {exc}") from None
    except OSError as exc:
        raise SnapshotError(path, f"cannot read: {exc.strerror or exc}") from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reading it reports the problem


def _read_manifest(directory: Path) -> int:
    path = directory / "manifest.json"
    if not path.exists():
        return 0
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(path, f"not JSON: {exc}") from None
    except OSError as exc:
        raise SnapshotError(path, f"cannot read: {exc.strerror or exc}") from None
    position = data.get("position", 0) if isinstance(data, dict) else None
    if position is None:
        position = 0
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise SnapshotError(path, f"position must be an integer >= 0, got {position!r}")
    return position


#: rooms between two progress updates
PROGRESS_EVERY = 4096


def load_snapshot(
    directory: Path,
    store: RoomStore,
    users: Directory,
    skipped: list[int] | None = None,
    progress: LoadProgress | None = None,
) -> LoadResult:
    """Load a snapshot directory into an empty ``store`` and ``users``.

    Runs in O(documents). Meant for a worker thread: it touches only the objects it is given,
    which the caller publishes once the whole load succeeded, so a partial snapshot is never
    served. ``skipped`` (if given) collects the line numbers of non-``v`` rooms; ``progress``
    (if given) follows the rooms and bytes read.
    """
    started = time.perf_counter()
    if not directory.is_dir():
        raise SnapshotError(directory, "not a directory")
    position = _read_manifest(directory)
    rooms_path = find_collection(directory, "rooms", required=True)
    assert rooms_path is not None
    users_path = find_collection(directory, "users", required=False)
    permissions_path = find_collection(directory, "permissions", required=False)
    if progress is not None:
        progress.bytes_total = sum(
            _size(path) for path in (rooms_path, users_path, permissions_path) if path is not None
        )
        progress.phase = "reading rooms"

    not_v = 0

    def voip_rooms() -> Iterator[dict[str, Any]]:
        nonlocal not_v
        kept = 0
        for number, doc in read_jsonl(rooms_path, progress):
            if doc.get("t") == "v":
                yield doc
                kept += 1
                if progress is not None and kept % PROGRESS_EVERY == 0:
                    progress.update(kept)
            else:
                not_v += 1
                if skipped is not None:
                    skipped.append(number)
        if progress is not None:
            progress.update(kept)
            progress.phase = "building indexes"

    rooms = store.bulk_load(voip_rooms())
    user_count = 0
    if users_path is not None:
        if progress is not None:
            progress.phase = "reading users"
        for _, doc in read_jsonl(users_path, progress):
            users.upsert_user(doc)
            user_count += 1
    permission_count = 0
    if permissions_path is not None:
        if progress is not None:
            progress.phase = "reading permissions"
        for number, doc in read_jsonl(permissions_path, progress):
            roles = doc.get("roles", [])
            if not isinstance(roles, list):
                raise SnapshotError(permissions_path, "roles must be a list", number)
            users.set_permission(doc["_id"], roles)
            permission_count += 1
    if progress is not None:
        progress.update(rooms)
        progress.phase = "done"
        progress.done = True
    return LoadResult(
        position=position,
        rooms=rooms,
        skipped_rooms=not_v,
        users=user_count,
        permissions=permission_count,
        seconds=time.perf_counter() - started,
    )
