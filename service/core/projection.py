"""MongoDB find projections (inclusion or exclusion of dotted paths) applied to one room."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from service.core.query import Projection

__all__ = ["project", "project_bytes"]

# A path tree: segment -> subtree, or _LEAF where a path ends (the whole value is meant).
_Tree = dict[str, Any]
_LEAF: Any = None


@lru_cache(maxsize=512)
def _tree(p: Projection) -> _Tree:
    """The projection's paths as a tree; ``_id`` added as a leaf where the projection wants it."""
    root: _Tree = {}
    paths = list(p.paths)
    if p.keep_id == p.include:  # inclusion keeping _id, or exclusion dropping it
        paths.append("_id")
    for path in paths:
        node = root
        *parents, last = path.split(".")
        for seg in parents:
            child = node.get(seg, {})
            if child is _LEAF:  # a prefix is already wholly meant: it covers this path
                break
            node[seg] = child
            node = child
        else:
            node[last] = _LEAF  # the whole value is meant, whatever was below
    if not p.include and not p.keep_id:
        root["_id"] = _LEAF  # an ``_id.x`` path must not survive a dropped _id
    elif p.include and not p.keep_id:
        root.pop("_id", None)
    return root


def _include(doc: dict[str, Any], tree: _Tree) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():  # document order, as MongoDB returns fields
        if key not in tree:
            continue
        sub = tree[key]
        if sub is _LEAF:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = _include(value, sub)
        elif isinstance(value, list):
            out[key] = _include_array(value, sub)
        # a scalar where the path goes deeper: the path is missing, left out
    return out


def _include_array(items: list[Any], tree: _Tree) -> list[Any]:
    # MongoDB applies the rest of the path to each element; scalars in the array are dropped.
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            out.append(_include(item, tree))
        elif isinstance(item, list):
            out.append(_include_array(item, tree))
    return out


def _exclude(doc: dict[str, Any], tree: _Tree) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in tree:
            out[key] = value
            continue
        sub = tree[key]
        if sub is _LEAF:
            continue
        if isinstance(value, dict):
            out[key] = _exclude(value, sub)
        elif isinstance(value, list):
            out[key] = _exclude_array(value, sub)
        else:
            out[key] = value
    return out


def _exclude_array(items: list[Any], tree: _Tree) -> list[Any]:
    # Each document element loses the rest of the path; other elements stay as they are.
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            out.append(_exclude(item, tree))
        elif isinstance(item, list):
            out.append(_exclude_array(item, tree))
        else:
            out.append(item)
    return out


def project(room: dict[str, Any], p: Projection) -> dict[str, Any]:
    """``room`` as a MongoDB find with projection ``p`` returns it; ``room`` is not modified.

    Output keeps the document's field order. Unchanged values are shared, not copied.
    O(size of the projected part of the room).
    """
    tree = _tree(p)
    return _include(room, tree) if p.include else _exclude(room, tree)


def project_bytes(doc: bytes, p: Projection) -> bytes:
    """:func:`project` on a JSON-serialized room, returning JSON bytes."""
    room = orjson.loads(doc)
    if not isinstance(room, dict):
        raise TypeError("a room must be a JSON object")
    return orjson.dumps(project(room, p))
