"""Answers of GET /api/v1/voip/rooms, built from the store and kept until a change affects them.

An answer's ETag is a digest of its body, so the same answer has the same ETag on every replica
and at every feed position. Cached answers survive the feed: each applied room change drops
only the answers whose query the room matched before or matches after the change
(:class:`service.core.live.QueryIndex`), and tells the streams' hub which of its queries
changed. A new store swapped in whole (a feed gap healed from a snapshot) drops everything.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Container

from aiohttp import hdrs
from multidict import CIMultiDict

from service.core.live import QueryIndex
from service.core.projection import project_bytes
from service.core.query import Parsed
from service.core.store import Change, RoomStore
from service.feed.replica import Replica
from service.web.metrics import LiveCounts

__all__ = ["ETAG", "JSON", "Answer", "Answers", "etag_of"]

JSON = "application/json"
ETAG = "ETag"  # spelled as before (aiohttp's hdrs.ETAG is "Etag")


def etag_of(body: bytes) -> str:
    """The ETag of an answer: a digest of its body, quoted."""
    return f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'


class Answer:
    """An answer ready to send: its ETag, body and the headers of a 200 and of a 304."""

    __slots__ = ("body", "etag", "not_modified", "ok")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.etag = etag = etag_of(body)
        self.ok = CIMultiDict({hdrs.CONTENT_TYPE: JSON, ETAG: etag})
        self.not_modified = CIMultiDict({ETAG: etag})


def build(store: RoomStore, parsed: Parsed) -> Answer:
    """The answer the store gives now."""
    query = parsed.query
    total, rooms = store.page(query)
    if query.fields is not None:
        rooms = [project_bytes(doc, query.fields) for doc in rooms]
    return Answer(
        b"".join(
            (
                b'{"rooms":[',
                b",".join(rooms),
                b'],"count":%d,"offset":%d,"total":%d,"success":true}'
                % (len(rooms), query.offset, total),
            )
        )
    )


class Answers:
    """Up to ``size`` answers by query identity (least recently used dropped first), each kept
    until a room change can affect it.

    ``pinned`` holds the identities the streams' hub follows: they stay in the query index
    whether cached or not, and ``on_change(ident)`` is called for each of them a change
    affects. Every read is on the event loop, as every change is.
    """

    def __init__(self, replica: Replica, size: int, counts: LiveCounts) -> None:
        self.replica = replica
        self.size = size
        self.counts = counts
        self.index = QueryIndex()
        #: query identity -> answer, least recently used first
        self.cache: OrderedDict[bytes, Answer] = OrderedDict()
        self.pinned: Container[bytes] = frozenset()
        self.on_change: Callable[[bytes], None] | None = None
        self.on_swap: Callable[[], None] | None = None
        self._store: RoomStore | None = None
        self._watch()
        replica.published.append(self._swapped)

    def _watch(self) -> None:
        store = self.replica.store
        if store is not self._store:
            self._store = store
            store.watch(self._changed)

    def get(self, parsed: Parsed) -> Answer:
        """The current answer to ``parsed``: from the cache, else built (and cached)."""
        answer = self.cache.get(parsed.ident)
        if answer is not None:
            self.cache.move_to_end(parsed.ident)
            self.counts.hits += 1
            return answer
        return self.build(parsed)

    def build(self, parsed: Parsed) -> Answer:
        """The answer built from the store now, cached when there is room for answers."""
        self.counts.misses += 1
        answer = build(self.replica.store, parsed)
        if self.size:
            cache = self.cache
            cache[parsed.ident] = answer
            self.index.add(parsed.ident, parsed.query)
            if len(cache) > self.size:
                ident, _ = cache.popitem(last=False)
                if ident not in self.pinned:
                    self.index.discard(ident)
        return answer

    def follow(self, parsed: Parsed) -> None:
        """Keep ``parsed`` in the query index (for the hub, which has pinned it)."""
        self.index.add(parsed.ident, parsed.query)

    def unfollow(self, ident: bytes) -> None:
        """The hub no longer follows ``ident``: out of the index unless still cached."""
        if ident not in self.cache:
            self.index.discard(ident)

    def _changed(self, change: Change) -> None:
        if not self.index:
            return
        cache, pinned = self.cache, self.pinned
        for ident in self.index.affected(change.before, change.after):
            cache.pop(ident, None)
            if ident in pinned:
                if self.on_change is not None:
                    self.on_change(ident)
            else:
                self.index.discard(ident)

    def _swapped(self) -> None:
        """A new state was swapped in whole: no answer of the old one holds."""
        self.cache.clear()
        self.index.clear()
        self._watch()
        if self.on_swap is not None:
            self.on_swap()
