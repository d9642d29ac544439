"""Live answers: GET /api/v1/voip/rooms with ``Accept: text/event-stream`` (Server-Sent Events).

Streams of one query share a :class:`Topic`. A room change marks the topics it can affect
(:class:`service.web.answers.Answers` tells which); once the events of one loop iteration are
applied, each marked topic is built once (from the answer cache, which a poll may have filled
already), and when its ETag changed the new answer goes to every stream of the topic: one build
and one shared frame for 1,000 wall screens on one query.

Per stream: at most one event per ``interval`` (the first change after a quiet interval is sent
at once, later ones wait for the interval's end and send the newest answer then), nothing when
the answer did not change. Frames are written straight to the connection's transport (one
shared bytes object, chunk-encoded like aiohttp's own writer does), so that a change costs no
coroutine per stream; a stream whose client does not read keeps no queue: while its transport
still holds unsent data the newest answer waits (one reference), and once the unsent data
would pass ``buffer_limit`` the client is dropped.

One shared timer (``tick`` seconds, only while streams are open) finds closed connections,
sends keep-alives, ends streams whose login expired (the injected clock) and, after users or
permissions events, re-checks the logins that changed: ``event: error`` with the JSON body of
the 401 or 403 a GET would now get, then the end. On shutdown every stream gets a ``retry:``
hint and ends, so the drain's end is not held up.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from service.core.errors import ApiError, Forbidden, Unauthorized
from service.core.query import Parsed
from service.core.users import Directory, Login, User
from service.feed.replica import Replica
from service.web.answers import Answer, Answers
from service.web.guards import BODY_DEADLINE
from service.web.metrics import LiveCounts, Metrics
from service.web.responses import status_error

if TYPE_CHECKING:
    from service.web.guards import Guard

__all__ = ["EVENT_STREAM", "EventStream", "Hub", "wants_stream"]

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
KEEP_ALIVE = b": keep-alive\n\n"
#: permissions whose change can change what a login may see
_PERMISSIONS = ("view-livechat-rooms", "view-l-room")
TOO_MANY = "Too many live-answer streams open, retry shortly"


def wants_stream(request: web.Request) -> bool:
    """Whether the request asks for a live-answer stream."""
    accept = request.headers.get(hdrs.ACCEPT)
    return accept is not None and EVENT_STREAM in accept and request.method == hdrs.METH_GET


def _chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk, as aiohttp's writer frames it."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class EventStream(web.StreamResponse):
    """The response of a live-answer stream (the front door counts it without a duration)."""


class Topic:
    """The streams of one query and the query's newest answer, as an SSE frame."""

    __slots__ = ("chunked", "etag", "frame", "parsed", "streams")

    def __init__(self, parsed: Parsed, answer: Answer) -> None:
        self.parsed = parsed
        self.streams: set[Stream] = set()
        self.etag = ""
        self.frame = self.chunked = b""
        self.update(answer)

    def update(self, answer: Answer) -> None:
        if answer.etag == self.etag:
            return
        self.etag = answer.etag
        self.frame = b"id: %b\nevent: rooms\ndata: %b\n\n" % (
            answer.etag[1:-1].encode(),
            answer.body,
        )
        self.chunked = _chunk(self.frame)


class Stream:
    """One open stream: a few references and numbers (no task of its own beyond its handler)."""

    __slots__ = (
        "chunked",
        "done",
        "expires",
        "last_sent",
        "last_write",
        "response",
        "sent",
        "timer",
        "token",
        "topic",
        "transport",
        "user",
        "user_id",
    )

    def __init__(
        self,
        topic: Topic,
        transport: asyncio.Transport,
        chunked: bool,
        login: Login,
        token: str,
        done: asyncio.Future[str],
        response: EventStream,
    ) -> None:
        self.topic = topic
        self.transport = transport
        self.chunked = chunked
        self.user_id = login.user.id
        self.user: User | None = login.user
        self.expires = login.expires
        # The raw token stays in memory as long as the request it came with (never logged):
        # a login is re-checked exactly as a GET would check it.
        self.token = token
        self.done = done
        self.response = response
        self.sent = ""  # ETag of the last answer sent (or that the client said it has)
        self.last_sent = -1e18  # loop time of the last rooms event
        self.last_write = 0.0  # loop time of the last bytes written
        self.timer: asyncio.TimerHandle | None = None


class Hub:
    """Every open stream, grouped in topics; see the module docstring.

    ``now_ms`` is the login-expiry clock (epoch ms), ``keepalive`` and ``tick`` are seconds,
    ``buffer_limit`` bytes of unsent data per stream.
    """

    def __init__(
        self,
        replica: Replica,
        answers: Answers,
        metrics: Metrics,
        *,
        max_streams: int,
        interval_ms: int,
        now_ms: Callable[[], int],
        guard: Guard | None = None,
        record: bool = True,
        keepalive: float = 15.0,
        tick: float = 1.0,
        buffer_limit: int = 1 << 20,
    ) -> None:
        self.replica = replica
        self.answers = answers
        self.metrics = metrics
        self.counts: LiveCounts = metrics.live
        self.max_streams = max_streams
        self.interval = interval_ms / 1000
        self.now_ms = now_ms
        self.guard = guard
        self.record = record
        self.keepalive = keepalive
        self.tick = min(tick, keepalive)
        self.buffer_limit = buffer_limit
        #: set by the app: headers the front door would add (CORS, staleness), before sending
        self.prepare_headers: Callable[[web.Request, web.StreamResponse], None] | None = None
        self.topics: dict[bytes, Topic] = {}
        self.streams: set[Stream] = set()
        self.closing = False
        self._opening = 0
        self._dirty: set[bytes] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users: tuple[Directory, int] | None = None
        self._grants: tuple[frozenset[str], ...] = ()
        answers.pinned = self.topics
        answers.on_change = self._changed
        answers.on_swap = self._swapped

    # -- opening and closing -----------------------------------------------------------------

    async def open(
        self,
        request: web.Request,
        parsed: Parsed,
        login: Login,
        extra_headers: dict[str, str] | None,
    ) -> web.StreamResponse:
        """Serve a stream until it ends (client gone, login ended, too slow, shutdown)."""
        if self.closing or len(self.streams) + self._opening >= self.max_streams:
            return status_error(503, TOO_MANY, {"Retry-After": "5"})
        deadline = request.get(BODY_DEADLINE)
        if deadline is not None:
            deadline.reschedule(None)  # the body is read: the stream lasts as long as it lasts
        loop = self._loop = asyncio.get_running_loop()
        if self._users is None:
            self._seen(self.replica.users)
        users = self.replica.users
        checked = (users, users.version)  # what the login was proven against
        response = EventStream(
            headers={
                hdrs.CONTENT_TYPE: EVENT_STREAM,
                hdrs.CACHE_CONTROL: "no-cache",
                "X-Accel-Buffering": "no",  # nginx: pass events through at once
                **(extra_headers or {}),
            }
        )
        chunked = request.version >= HttpVersion11
        if chunked:
            response.enable_chunked_encoding()
        if self.prepare_headers is not None:
            self.prepare_headers(request, response)
        self._opening += 1  # counted against the limit while its headers are sent
        try:
            await response.prepare(request)
        finally:
            self._opening -= 1
        transport = request.transport
        if transport is None or transport.is_closing() or self.closing:
            return response
        # The answer taken and the topic joined with no await in between: no change is missed.
        answer = self.answers.get(parsed)
        ident = parsed.ident
        topic = self.topics.get(ident)
        if topic is None:
            topic = self.topics[ident] = Topic(parsed, answer)
            self.answers.follow(parsed)
        else:
            topic.update(answer)  # the newest answer (the topic may be due for a rebuild)
        done: asyncio.Future[str] = loop.create_future()
        token = request.headers.get("X-Auth-Token") or ""
        stream = Stream(topic, transport, chunked, login, token, done, response)
        topic.streams.add(stream)
        self.streams.add(stream)
        self.counts.streams += 1
        self._release_slots()
        try:
            users = self.replica.users
            if (users, users.version) != checked and not self._recheck(
                stream, users, self.now_ms()
            ):
                return response  # users changed while the headers were sent: it ended
            if request.headers.get("Last-Event-ID") == topic.etag[1:-1]:
                stream.sent = topic.etag  # the client has it: a quiet start
                stream.last_write = loop.time()
            else:
                self._send(stream)
            if self._ticker is None:
                self._ticker = loop.call_later(self.tick, self._tick)
            await done
        finally:
            self._close(stream, "client")  # a no-op unless the handler was cancelled
            self._take_slots()
        return response

    def _release_slots(self) -> None:
        """A stream is no request in flight: it gives back its in-flight slot (the shedding
        limit and the gauge) while it lasts, so that open streams never shed polls."""
        if self.guard is not None:
            self.guard.in_flight -= 1
        if self.record:
            self.metrics.in_flight -= 1

    def _take_slots(self) -> None:
        if self.guard is not None:
            self.guard.in_flight += 1
        if self.record:
            self.metrics.in_flight += 1

    def _close(self, stream: Stream, reason: str, last: bytes = b"") -> None:
        """End ``stream`` (once): ``last`` written first when the connection is still open."""
        if stream not in self.streams:
            return
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        transport = stream.transport
        if reason == "slow":
            transport.abort()  # its unsent data goes too
        elif last and not transport.is_closing():
            transport.write(_chunk(last) if stream.chunked else last)
        if reason != "client":
            stream.response.force_close()  # the connection ends with the stream
        topic = stream.topic
        topic.streams.discard(stream)
        if not topic.streams:
            ident = topic.parsed.ident
            del self.topics[ident]
            self._dirty.discard(ident)
            self.answers.unfollow(ident)
        self.streams.discard(stream)
        self.counts.streams -= 1
        self.counts.closed[reason] += 1
        if not stream.done.done():  # (cancelled with its handler when the client went away)
            stream.done.set_result(reason)

    def _fail(self, stream: Stream, error: ApiError) -> None:
        """End ``stream`` with ``event: error`` and the body of the error a GET would get."""
        self.counts.error_events += 1
        self._close(stream, "auth", b"event: error\ndata: %b\n\n" % orjson.dumps(error.body()))

    async def shutdown(self, app: web.Application | None = None) -> None:
        """End every stream with a ``retry:`` hint (reconnect elsewhere, spread over a few
        seconds); new streams are refused from now on."""
        self.closing = True
        for stream in list(self.streams):
            hint = b"retry: %d\n\n" % random.randint(1000, 5000)
            self._close(stream, "shutdown", hint)
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    # -- changes -----------------------------------------------------------------------------

    def _changed(self, ident: bytes) -> None:
        """A room change can have changed the answer of the topic ``ident``."""
        self._dirty.add(ident)
        if self._flush_handle is None and self._loop is not None:
            # after the events applied in this loop iteration: one build per topic for all
            self._flush_handle = self._loop.call_soon(self._flush)

    def _swapped(self) -> None:
        """A new state was swapped in: every topic is followed again and rebuilt."""
        for topic in self.topics.values():
            self.answers.follow(topic.parsed)
            self._changed(topic.parsed.ident)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for ident in dirty:
            topic = self.topics.get(ident)
            if topic is None:
                continue
            topic.update(self.answers.get(topic.parsed))
            etag = topic.etag
            for stream in list(topic.streams):
                if stream.sent != etag:  # an unchanged answer sends nothing
                    self._offer(stream)

    def _offer(self, stream: Stream) -> None:
        """The topic has a new answer: send it now, or at the end of the stream's interval."""
        if stream.timer is not None:
            return  # due already: it sends the newest answer then
        assert self._loop is not None
        due = stream.last_sent + self.interval
        if due <= self._loop.time():
            self._send(stream)
        else:
            stream.timer = self._loop.call_at(due, self._due, stream)

    def _due(self, stream: Stream) -> None:
        stream.timer = None
        if stream in self.streams:
            self._send(stream)

    def _send(self, stream: Stream) -> None:
        """Write the topic's newest answer unless the client has it; when the connection still
        holds unsent data, wait an interval (or drop a client past the bound)."""
        topic = stream.topic
        if topic.etag == stream.sent:
            return
        transport = stream.transport
        if transport.is_closing():
            self._close(stream, "client")
            return
        frame = topic.chunked if stream.chunked else topic.frame
        queued = transport.get_write_buffer_size()
        if queued:
            if queued + len(frame) > self.buffer_limit:
                self._close(stream, "slow")
                return
            assert self._loop is not None
            stream.timer = self._loop.call_later(self.interval or self.tick, self._due, stream)
            return
        transport.write(frame)
        assert self._loop is not None
        stream.last_sent = stream.last_write = self._loop.time()
        stream.sent = topic.etag
        self.counts.room_events += 1

    # -- the shared timer --------------------------------------------------------------------

    def _tick(self) -> None:
        """Closed connections, keep-alives, expired logins, changed users and permissions."""
        self._ticker = None
        if not self.streams:
            return
        assert self._loop is not None
        now = self._loop.time()
        now_ms = self.now_ms()
        users = self.replica.users
        recheck = (users, users.version) != self._users
        regrant = recheck and self._seen(users)
        quiet_since = now - self.keepalive + self.tick  # the next tick would be too late
        keepalive = _chunk(KEEP_ALIVE)
        for stream in list(self.streams):
            transport = stream.transport
            if transport.is_closing():
                self._close(stream, "client")
                continue
            if (
                now_ms >= stream.expires
                or (recheck and (regrant or users.user(stream.user_id) is not stream.user))
            ) and not self._recheck(stream, users, now_ms):
                continue
            if stream.last_write <= quiet_since:
                queued = transport.get_write_buffer_size()
                if queued > self.buffer_limit:
                    self._close(stream, "slow")
                    continue
                if not queued:
                    transport.write(keepalive if stream.chunked else KEEP_ALIVE)
                    stream.last_write = now
        if self.streams:
            self._ticker = self._loop.call_later(self.tick, self._tick)

    def _seen(self, users: Directory) -> bool:
        """Note the directory's state; True when the permissions that grant streams changed."""
        self._users = (users, users.version)
        grants = tuple(users.permission_roles(p) for p in _PERMISSIONS)
        changed = grants != self._grants
        self._grants = grants
        return changed

    def _recheck(self, stream: Stream, users: Directory, now_ms: int) -> bool:
        """Check the stream's login and permission as a GET would now; False when it ended."""
        try:
            login = users.login(stream.user_id, stream.token, now_ms)
        except Unauthorized as exc:
            self._fail(stream, exc)
            return False
        if not login.grants.may_list_rooms(login.user.id, stream.topic.parsed.query.agents):
            self._fail(stream, Forbidden())
            return False
        stream.user = login.user
        stream.expires = login.expires
        return True
