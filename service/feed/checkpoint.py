"""Checkpoints: the replica's own snapshot (contract section 2 format), written atomically.

A checkpoint is a directory ``checkpoint-<position>`` inside the checkpoint directory, holding
``rooms.jsonl.gz``, ``users.jsonl.gz``, ``permissions.jsonl.gz`` and ``manifest.json``. It is
written into a temporary directory next to it, every file and the directory fsynced, then
renamed into place, so a crash while writing leaves the previous checkpoint as it was. Older
checkpoints are deleted only after the new one is in place.

:func:`capture` takes a consistent view on the event loop (cheap: references to immutable
documents); :func:`write_checkpoint` does the encoding, compression and I/O, meant for a thread.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from service.core.ejson import Date
from service.core.users import Directory

__all__ = [
    "CheckpointView",
    "capture",
    "dumps_line",
    "encode",
    "find_checkpoint",
    "manifest_position",
    "prune_checkpoints",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d{12,})$")
_TMP_PREFIX = ".tmp-checkpoint-"


class DocumentStore(Protocol):
    """What a checkpoint needs of the RoomStore.

    ``iter_documents()`` must take its consistent view when called (cheap reference copies on
    the event loop), so that the iterator it returns can be consumed in a worker thread while
    the loop goes on changing the store.
    """

    def iter_documents(self) -> Iterator[dict[str, Any]]: ...


def encode(value: Any) -> Any:
    """Extended JSON for a decoded document: every :class:`Date` becomes ``{"$date": iso}``.

    The other values are plain JSON already. O(size of the value).
    """
    if isinstance(value, Date):
        return {"$date": str(value)}
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encode(v) for v in value]
    return value


def _default(value: Any) -> Any:
    if isinstance(value, Date):
        return {"$date": str(value)}
    # another subclass of a JSON type: write it as its base type
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"cannot write {type(value).__name__} to a checkpoint")


_OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_APPEND_NEWLINE


def dumps_line(doc: dict[str, Any]) -> bytes:
    """One Extended JSON line for a decoded document; the same as ``orjson.dumps(encode(doc))``
    plus a newline, but without walking the document in Python."""
    return orjson.dumps(doc, default=_default, option=_OPTIONS)


@dataclass(frozen=True, slots=True)
class CheckpointView:
    """A consistent state at ``position``; ``rooms`` yields room documents (Dates restored).

    Every object it holds is never mutated by the store or the directory afterwards, so a
    worker thread may read it while the event loop goes on applying events.
    """

    position: int
    rooms: Callable[[], Iterable[dict[str, Any]]]
    users: list[dict[str, Any]]
    permissions: list[dict[str, Any]]


def capture(store: DocumentStore, users: Directory, position: int) -> CheckpointView:
    """Take the view on the event loop, between two events. O(rooms + users)."""
    rooms = store.iter_documents()
    return CheckpointView(
        position=position,
        rooms=lambda: rooms,
        users=list(users.user_docs()),
        permissions=list(users.permission_docs()),
    )


def checkpoint_name(position: int) -> str:
    return f"checkpoint-{position:012d}"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``directory`` as (position, path), newest first."""
    found: list[tuple[int, Path]] = []
    if not directory.is_dir():
        return found
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_dir() and (entry / "manifest.json").is_file():
            found.append((int(match.group(1)), entry))
    found.sort(reverse=True)
    return found


def find_checkpoint(directory: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint as (position, path), or None."""
    found = list_checkpoints(directory)
    return found[0] if found else None


def manifest_position(snapshot: Path) -> int:
    """The position a snapshot directory's manifest says it includes (0 when there is none).

    Unreadable manifests count as 0 here; loading the snapshot reports them properly.
    """
    try:
        data = orjson.loads((snapshot / "manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return 0
    position = data.get("position") if isinstance(data, dict) else None
    if isinstance(position, int) and not isinstance(position, bool) and position > 0:
        return position
    return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_jsonl_gz(path: Path, docs: Iterable[dict[str, Any]], level: int) -> int:
    count = 0
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as packed:
            chunk: list[bytes] = []
            for doc in docs:
                chunk.append(dumps_line(doc))
                count += 1
                if len(chunk) >= 1024:
                    packed.write(b"".join(chunk))
                    chunk.clear()
            packed.write(b"".join(chunk))
        raw.flush()
        os.fsync(raw.fileno())
    return count


def write_checkpoint(view: CheckpointView, directory: Path, *, level: int = 3) -> Path:
    """Write ``view`` as ``directory/checkpoint-<position>`` atomically and return its path.

    Blocking (run it in a thread). An existing checkpoint at the same position is kept as it
    is. Older checkpoints and leftover temporary directories are removed afterwards.
    O(size of the state).
    """
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / checkpoint_name(view.position)
    if (target / "manifest.json").is_file():
        prune_checkpoints(directory, keep=target)
        return target
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=directory))
    try:
        rooms = _write_jsonl_gz(tmp / "rooms.jsonl.gz", view.rooms(), level)
        _write_jsonl_gz(tmp / "users.jsonl.gz", view.users, level)
        _write_jsonl_gz(tmp / "permissions.jsonl.gz", view.permissions, level)
        manifest = orjson.dumps({"position": view.position, "rooms": rooms})
        with open(tmp / "manifest.json", "wb") as out:
            out.write(manifest)
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, target)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_checkpoints(directory, keep=target)
    log.info(
        "checkpoint written",
        extra={
            "position": view.position,
            "rooms": rooms,
            "path": str(target),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return target


def prune_checkpoints(directory: Path, keep: Path) -> None:
    """Remove every checkpoint other than ``keep`` and every leftover temporary directory."""
    for entry in directory.iterdir():
        if entry == keep:
            continue
        if _NAME.match(entry.name) or entry.name.startswith(_TMP_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
