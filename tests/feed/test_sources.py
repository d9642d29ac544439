"""The file source followed as it grows, and feed URL parsing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from service.feed.sources import (
    CAUGHT_UP,
    FeedError,
    FeedGap,
    FileSource,
    Item,
    Message,
    NatsSource,
    open_source,
    parse_nats_url,
)
from tests.feed.support import eventually, jsonl, room_event


async def take(items: AsyncIterator[Item], n: int, within: float = 5.0) -> list[Item]:
    out: list[Item] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            out.append(await anext(items))
    return out


def positions(items: list[Item]) -> list[int | None]:
    return [i.position if isinstance(i, Message) else None for i in items]


async def test_file_followed_across_appends_and_split_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl([room_event("a"), room_event("b")]))
    source = FileSource(path, poll_interval=0.01)
    items = source.messages(0)
    try:
        got = await take(items, 3)
        assert positions(got) == [1, 2, None]
        assert got[2] is CAUGHT_UP
        assert source.current
        first = got[0]
        assert isinstance(first, Message)
        assert first.subject == "watch.rooms"
        assert first.payload["room"]["_id"] == "a"

        # a line written in two pieces is only read once its newline arrives
        line = orjson.dumps(room_event("c")) + b"\n"
        with path.open("ab") as out:
            out.write(line[:10])
            out.flush()
            polls = source.polls
            pending = asyncio.ensure_future(anext(items))
            # two more passes: the second one began after the write
            await eventually(lambda: source.polls >= polls + 2, what="the partial line read")
            assert not pending.done()
            out.write(line[10:])
            out.flush()
            async with asyncio.timeout(5):
                third = await pending
        assert isinstance(third, Message)
        assert third.position == 3
        assert third.payload["room"]["_id"] == "c"
        assert await take(items, 1) == [CAUGHT_UP]

        # a malformed line still advances the position; a blank line is passed on too
        with path.open("ab") as out:
            out.write(b"{oops\n\n" + jsonl([room_event("d", "removed")]))
        got = await take(items, 4)
        assert positions(got) == [4, 5, 6, None]
        bad, blank, removed = got[0], got[1], got[2]
        assert isinstance(bad, Message)
        assert bad.error is not None
        assert "not JSON" in bad.error
        assert isinstance(blank, Message)
        assert blank.error is None
        assert blank.subject == ""
        assert isinstance(removed, Message)
        assert removed.payload["clientAction"] == "removed"
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    assert not source.current


async def test_file_starts_after_position_and_waits_for_the_file(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    source = FileSource(path, poll_interval=0.01)
    items = source.messages(2)
    try:
        pending = asyncio.ensure_future(anext(items))
        await eventually(lambda: source.polls >= 1, what="the missing file seen")
        assert not pending.done()  # missing file, and we need position 3 onwards
        assert not source.current
        path.write_bytes(jsonl([room_event("a"), room_event("b"), room_event("c")]))
        async with asyncio.timeout(5):
            item = await pending
        assert isinstance(item, Message)
        assert item.position == 3
        assert await take(items, 1) == [CAUGHT_UP]
    finally:
        await items.aclose()  # type: ignore[attr-defined]


async def test_file_that_shrinks_is_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl([room_event("a"), room_event("b")]))
    items = FileSource(path, poll_interval=0.01).messages(0)
    try:
        await take(items, 3)
        path.write_bytes(b"")
        with pytest.raises(FeedGap, match="shrank") as caught:
            await take(items, 1)
        assert caught.value.first == 1  # a rewritten file starts over at line 1
    finally:
        await items.aclose()  # type: ignore[attr-defined]


def test_urls() -> None:
    assert parse_nats_url("nats://h:4222?stream=RC") == ("nats://h:4222", "RC")
    with pytest.raises(FeedError, match="stream"):
        parse_nats_url("nats://h:4222")
    with pytest.raises(FeedError, match="scheme"):
        open_source("http://example.com/feed")
    source = open_source("file:///tmp/x/events.jsonl")
    assert isinstance(source, FileSource)
    assert source.path == Path("/tmp/x/events.jsonl")
    nats = open_source("nats://user:secret@h:4222?stream=RC")
    assert isinstance(nats, NatsSource)
    assert "secret" not in repr(nats)
