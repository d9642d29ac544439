"""Read a snapshot directory (mongoexport JSON lines, plain or gzip) into a store and directory."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from isal import igzip
from isal.igzip_lib import IsalError

from service.core import ejson
from service.core.store import RoomStore
from service.core.store.bulk import Chunk, Extracted, LineError, extract_lines
from service.core.users import Directory
from service.feed.progress import LoadProgress
from service.feed.workers import context as workers_context

__all__ = [
    "LoadResult",
    "SnapshotError",
    "find_collection",
    "load_snapshot",
    "read_jsonl",
    "read_rooms",
]


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


#: bytes of whole lines handed to a worker at a time; progress is updated after each run
WORK_BYTES = 1 << 20
#: below this many bytes (on disk) the rooms are decoded in the loading thread
_POOL_FROM = 8 << 20


class _SmallReads:
    """A file whose reads return at most 16 KiB, so that the bytes read of a gzip file (which
    the decompressor otherwise reads ahead in large blocks) follow the lines handed out."""

    def __init__(self, file: io.BufferedReader) -> None:
        self.file = file

    def read(self, n: int = -1) -> bytes:
        return self.file.read(16384 if n < 0 or n > 16384 else n)

    def readinto(self, buffer: Any) -> int | None:
        with memoryview(buffer) as view:
            return self.file.readinto(view[:16384])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _runs(path: Path, progress: LoadProgress | None) -> Iterator[tuple[bytes, int]]:
    """(whole lines, number of the first) of ``path``, about WORK_BYTES bytes at a time."""
    rest = b""
    line = 1
    base = progress.bytes_read if progress is not None else 0
    with open(path, "rb") as raw, contextlib.ExitStack() as stack:
        stream: io.BufferedIOBase = raw
        if path.name.endswith(".gz"):
            packed = igzip.GzipFile(fileobj=_SmallReads(raw), mode="rb")  # type: ignore[no-untyped-call]
            stream = stack.enter_context(packed)
        while chunk := stream.read(WORK_BYTES):
            if progress is not None:
                progress.bytes_read = base + raw.tell()
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            data = data[:cut]
            yield data, line
            line += data.count(b"\n") + 1
    if rest:
        yield rest, line


def _pool_size(path: Path, workers: int | None) -> int:
    if workers is not None:
        return workers
    if _size(path) < _POOL_FROM:
        return 0
    return min(8, len(os.sched_getaffinity(0)))


def read_rooms(
    path: Path, progress: LoadProgress | None = None, workers: int | None = None
) -> tuple[Extracted, list[int]]:
    """Every voip room of a rooms file, reduced for the bulk build (store/bulk.py), and the
    line numbers of the documents skipped for their ``t``.

    Lines are decoded in ``workers`` processes (see load_snapshot), runs of about 1 MiB each,
    at most two runs a worker in flight; results are taken in file order. A bad line raises
    SnapshotError naming it."""
    size = _pool_size(path, workers)
    out = Extracted()
    not_v: list[int] = []

    def take(chunk: Chunk) -> None:
        out.extend(chunk.extracted)
        not_v.extend(chunk.not_v)
        if progress is not None:
            progress.update(len(out.ids))

    try:
        if size <= 1:
            for data, first in _runs(path, progress):
                take(extract_lines(data, first))
        else:
            with ProcessPoolExecutor(size, mp_context=workers_context()) as pool:
                pending: list[Future[Chunk]] = []
                for data, first in _runs(path, progress):
                    pending.append(pool.submit(extract_lines, data, first))
                    if len(pending) >= 2 * size:
                        take(pending.pop(0).result())
                for future in pending:
                    take(future.result())
    except LineError as exc:
        raise SnapshotError(path, exc.reason, exc.line) from None
    except (EOFError, gzip.BadGzipFile, zlib.error, IsalError) as exc:  # type: ignore[misc]
        raise SnapshotError(path, f"damaged gzip stream: {exc}") from None
    except OSError as exc:
        raise SnapshotError(path, f"cannot read: {exc.strerror or exc}") from None
    return out, not_v


def load_snapshot(
    directory: Path,
    store: RoomStore,
    users: Directory,
    skipped: list[int] | None = None,
    progress: LoadProgress | None = None,
    workers: int | None = None,
) -> LoadResult:
    """Load a snapshot directory into an empty ``store`` and ``users``.

    Runs in O(documents). Meant for a worker thread: it touches only the objects it is given,
    which the caller publishes once the whole load succeeded, so a partial snapshot is never
    served. ``skipped`` (if given) collects the line numbers of non-``v`` rooms; ``progress``
    (if given) follows the rooms and bytes read; ``workers`` decode rooms in that many
    processes (None: one per core, for files worth it; 0 or 1: in this thread).
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

    extracted, not_v_lines = read_rooms(rooms_path, progress, workers)
    if skipped is not None:
        skipped.extend(not_v_lines)
    not_v = len(not_v_lines)
    if progress is not None:
        progress.update(len(extracted.ids))
        progress.phase = "building indexes"
    rooms = store.load_extracted(extracted)
    del extracted
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
