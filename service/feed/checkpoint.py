"""Checkpoints: the replica's own state in the store's format, in a directory replicas share.

A checkpoint is a directory ``checkpoint-<position, 12 digits>-<host>-<random>`` inside the
checkpoint directory (``host``: the pod name), so that replicas sharing the directory (a
ReadWriteMany volume) never write the same name. It holds the store's files
(:mod:`service.core.store.snapshot`), ``users.jsonl.gz`` and ``permissions.jsonl.gz`` (Extended
JSON lines, as in a snapshot) and ``manifest.json``: the format and its version, the feed
position, when and where it was written, the counts, and every file with its size.

Writing: into ``.tmp-checkpoint-<host>-<random>`` next to it, every file and the directory
fsynced, ``manifest.json`` last, then renamed into place (atomic), and the parent fsynced: a
crash while writing leaves no checkpoint behind, only a temporary directory that a later prune
removes once it is an hour old (another replica may be writing it). The answer bytes (most of a
checkpoint) are append-only: a chunk file an earlier checkpoint holds is hard-linked rather than
written again, so a checkpoint writes mostly what changed.

Reading: :func:`list_checkpoints` lists the complete ones any replica wrote, newest first (by
position, then by the time written); one whose format or version this service does not know is
skipped with a warning, and one that fails to load is skipped by the caller for the next.

Pruning (:func:`prune_checkpoints`, after each write): every checkpoint but the newest ``keep``,
and only once older than ``min_age`` seconds, so that a replica that just found one has time
to load it before another replica removes it.

:func:`capture` takes a consistent view on the event loop (cheap copies); :func:`write_checkpoint`
does the encoding and I/O, meant for a worker thread.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from service.core.ejson import Date
from service.core.store import RoomStore, snapshot
from service.core.users import Directory
from service.feed.progress import LoadProgress
from service.feed.snapshot import LoadResult, SnapshotError, read_jsonl

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "CheckpointView",
    "capture",
    "dumps_line",
    "encode",
    "find_checkpoint",
    "is_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "manifest_position",
    "prune_checkpoints",
    "spill_arena",
    "spill_directory",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

#: What ``manifest.json`` says a checkpoint is, and the version of its layout.
FORMAT = "voip-rooms-checkpoint"
VERSION = 2
#: Checkpoints kept by a prune (the newest ones), and the age below which none is removed.
KEEP = 3
MIN_AGE_SECONDS = 600.0
#: A temporary directory this old is a crashed write, not one in progress.
TMP_AGE_SECONDS = 3600.0

_NAME = re.compile(r"^checkpoint-(\d{12,})(?:-[A-Za-z0-9._-]+)?$")
_TMP_PREFIX = ".tmp-checkpoint-"
_HOST = re.compile(r"[^A-Za-z0-9.-]+")


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
    """A consistent state at ``position``: the store's image, users and permissions.

    Nothing it holds is changed by the store or the directory afterwards, so a worker thread
    may write it while the event loop goes on applying events.
    """

    position: int
    store: snapshot.Image
    users: list[dict[str, Any]]
    permissions: list[dict[str, Any]]


def capture(store: RoomStore, users: Directory, position: int) -> CheckpointView:
    """Take the view on the event loop, between two events. O(rooms) memory copies (about
    0.1 s at 1,000,000 rooms) plus O(users)."""
    return CheckpointView(
        position=position,
        store=snapshot.capture(store),
        users=list(users.user_docs()),
        permissions=list(users.permission_docs()),
    )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A complete checkpoint found in the directory."""

    position: int
    written_ms: int
    path: Path
    manifest: dict[str, Any]


def host_name() -> str:
    """This replica's name in checkpoint names: the pod name (``HOSTNAME``), else the host's."""
    name = os.environ.get("HOSTNAME") or socket.gethostname() or "host"
    return _HOST.sub("-", name).strip("-")[:63] or "host"


def checkpoint_name(position: int, host: str, token: str) -> str:
    return f"checkpoint-{position:012d}-{host}-{token}"


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is named as a checkpoint (not a snapshot directory)."""
    return _NAME.match(path.name) is not None


def _read_manifest(path: Path) -> dict[str, Any]:
    """A checkpoint's manifest; SnapshotError when unreadable or of a format not known here."""
    file = path / "manifest.json"
    try:
        data = orjson.loads(file.read_bytes())
    except OSError as exc:
        raise SnapshotError(file, f"cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(file, f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(file, f"not a {FORMAT} manifest (an older or foreign format)")
    if data.get("version") != VERSION:
        raise SnapshotError(file, f"format version {data.get('version')!r}, not {VERSION}")
    position = data.get("position")
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise SnapshotError(file, f"position must be an integer >= 0, got {position!r}")
    return data


def list_checkpoints(directory: Path) -> list[Checkpoint]:
    """Complete checkpoints of a known format in ``directory``, newest first (position, then
    time written); others are skipped with a warning. O(checkpoints)."""
    found: list[Checkpoint] = []
    if not directory.is_dir():
        return found
    for entry in directory.iterdir():
        if not _NAME.match(entry.name) or not (entry / "manifest.json").is_file():
            continue  # not a checkpoint, or one being removed
        try:
            manifest = _read_manifest(entry)
        except SnapshotError as exc:
            log.warning("checkpoint ignored: %s", exc, extra={"checkpoint": str(entry)})
            continue
        written = manifest.get("written_ms")
        found.append(
            Checkpoint(
                manifest["position"],
                written if isinstance(written, int) else 0,
                entry,
                manifest,
            )
        )
    found.sort(key=lambda c: (c.position, c.written_ms, c.path.name), reverse=True)
    return found


def find_checkpoint(directory: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint as (position, path), or None."""
    found = list_checkpoints(directory)
    return (found[0].position, found[0].path) if found else None


def manifest_position(snapshot_dir: Path) -> int:
    """The position a snapshot directory's manifest says it includes (0 when there is none).

    Unreadable manifests count as 0 here; loading the snapshot reports them properly.
    """
    try:
        data = orjson.loads((snapshot_dir / "manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return 0
    position = data.get("position") if isinstance(data, dict) else None
    if isinstance(position, int) and not isinstance(position, bool) and position > 0:
        return position
    return 0


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


def write_checkpoint(
    view: CheckpointView,
    directory: Path,
    *,
    host: str | None = None,
    keep: int = KEEP,
    min_age: float = MIN_AGE_SECONDS,
) -> Path:
    """Write ``view`` as a new checkpoint in ``directory``, atomically, and return its path;
    then prune old checkpoints. Blocking (run it in a thread). O(size of the state)."""
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    host = host or host_name()
    token = secrets.token_hex(4)
    tmp = directory / f"{_TMP_PREFIX}{host}-{token}"
    target = directory / checkpoint_name(view.position, host, token)
    tmp.mkdir()
    shared = {  # files named by their content, from the newest checkpoint holding each
        name: found.path / name
        for found in reversed(list_checkpoints(directory))
        for name in found.manifest.get("files", {})
        if name.startswith(("arena-", "piece-"))
    }
    try:
        section = snapshot.save(view.store, tmp, shared.get)
        users = _write_jsonl_gz(tmp / "users.jsonl.gz", view.users, 1)
        permissions = _write_jsonl_gz(tmp / "permissions.jsonl.gz", view.permissions, 1)
        files = dict(section["files"])
        for name in ("users.jsonl.gz", "permissions.jsonl.gz"):
            files[name] = (tmp / name).stat().st_size
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "position": view.position,
            "written_ms": int(time.time() * 1000),
            "host": host,
            "rooms": section["rooms"],
            "users": users,
            "permissions": permissions,
            "bytes": sum(files.values()),
            "files": files,
            "store": section,
        }
        with open(tmp / "manifest.json", "wb") as out:
            out.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            out.flush()
            os.fsync(out.fileno())
        snapshot.fsync_path(tmp)
        os.rename(tmp, target)
        snapshot.fsync_path(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_checkpoints(directory, keep=keep, min_age=min_age)
    log.info(
        "checkpoint written",
        extra={
            "position": view.position,
            "rooms": manifest["rooms"],
            "bytes": manifest["bytes"],
            "linked_bytes": section["linked_bytes"],
            "path": str(target),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return target


def spill_directory(directory: Path, host: str | None = None) -> Path | None:
    """A new temporary directory of the checkpoint directory for answer bytes moved out of the
    heap (see :func:`spill_arena`); None when it cannot be made (logged: they stay in memory).
    A crash leaves it to the prune of temporary directories."""
    spill = directory / f"{_TMP_PREFIX}{host or host_name()}-{secrets.token_hex(4)}-arena"
    try:
        spill.mkdir(parents=True)
    except OSError as exc:
        log.warning("answer bytes kept in memory: %s", exc)
        return None
    return spill


def spill_arena(store: RoomStore, spill: Path) -> bool:
    """Move the store's answer bytes out of the heap into files of ``spill`` (from
    :func:`spill_directory`), mapped read-only in their place (see
    :meth:`~service.core.store.columns.Columns.spill`): the next checkpoint hard-links them,
    and then the directory can go (the mapping keeps the files' data). False (and the
    directory removed) when nothing was moved, or on failure (logged: the bytes then stay in
    memory). Blocking. O(bytes moved)."""
    started = time.perf_counter()
    try:
        moved = store.columns.spill(spill)
    except OSError as exc:
        log.warning("answer bytes kept in memory: %s", exc)
        moved = 0
    if not moved:
        shutil.rmtree(spill, ignore_errors=True)
        return False
    log.info(
        "answer bytes mapped from files",
        extra={
            "bytes": moved,
            "path": str(spill),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return True


def prune_checkpoints(
    directory: Path,
    keep: int = KEEP,
    min_age: float = MIN_AGE_SECONDS,
    now: float | None = None,
) -> list[Path]:
    """Remove the checkpoints older than the newest ``keep`` (by position, then modification
    time) and older than ``min_age`` seconds, and temporary directories older than an hour;
    the paths removed. Never raises: another replica may be pruning at the same time."""
    now = time.time() if now is None else now
    named: list[tuple[int, float, Path]] = []
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        try:
            mtime = entry.stat().st_mtime
        except OSError:
            continue  # removed meanwhile
        match = _NAME.match(entry.name)
        if match:
            named.append((int(match.group(1)), mtime, entry))
        elif entry.name.startswith(_TMP_PREFIX) and now - mtime > TMP_AGE_SECONDS:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    named.sort(key=lambda t: (t[0], t[1], t[2].name), reverse=True)
    for _, mtime, entry in named[keep:]:
        if now - mtime > min_age:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def load_checkpoint(
    path: Path,
    login_expiration_days: int = 90,
    progress: LoadProgress | None = None,
) -> tuple[RoomStore, Directory, LoadResult]:
    """Load a checkpoint into a new store and directory; SnapshotError when it cannot be (an
    unknown format, a missing, short or malformed file). O(size of the state)."""
    started = time.perf_counter()
    manifest = _read_manifest(path)
    files = manifest.get("files")
    if progress is not None:
        progress.phase = "reading the checkpoint"
        if isinstance(files, dict):
            progress.bytes_total = sum(v for v in files.values() if isinstance(v, int))
    try:
        store = snapshot.load(path, manifest["store"])
    except snapshot.FormatError as exc:
        raise SnapshotError(path, f"damaged checkpoint: {exc}") from None
    except KeyError as exc:
        raise SnapshotError(path / "manifest.json", f"missing {exc}") from None
    users = Directory(login_expiration_days)
    user_count = 0
    for _, doc in read_jsonl(path / "users.jsonl.gz"):
        users.upsert_user(doc)
        user_count += 1
    permission_count = 0
    for number, doc in read_jsonl(path / "permissions.jsonl.gz"):
        roles = doc.get("roles", [])
        if not isinstance(roles, list):
            raise SnapshotError(path / "permissions.jsonl.gz", "roles must be a list", number)
        users.set_permission(doc["_id"], roles)
        permission_count += 1
    if progress is not None:
        progress.bytes_read = progress.bytes_total
        progress.update(len(store))
        progress.phase = "done"
        progress.done = True
    result = LoadResult(
        position=manifest["position"],
        rooms=len(store),
        skipped_rooms=0,
        users=user_count,
        permissions=permission_count,
        seconds=time.perf_counter() - started,
    )
    return store, users, result
