"""Event feed sources: a JSON-lines file followed as it grows, or a NATS JetStream stream.

A source yields :class:`Message` items in position order, starting after a given position,
and :data:`CAUGHT_UP` whenever it has delivered everything it knows of. Its ``current`` and
``current_at`` attributes tell the replica how fresh it is (for staleness).

``batches`` yields the messages as lists instead: all that have arrived (read from the file,
or fetched from the stream), up to a limit, so the replica applies them in one call.
The consumer (the replica) applies each message (or batch) before asking for the next one, so
the position of the last message yielded is the last applied position whenever a source runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

__all__ = [
    "CAUGHT_UP",
    "Batched",
    "CaughtUp",
    "FeedError",
    "FeedGap",
    "FileSource",
    "Item",
    "Message",
    "NatsAuth",
    "NatsConnection",
    "NatsSource",
    "Source",
    "open_source",
    "parse_nats_url",
    "redact_url",
]

log = logging.getLogger(__name__)


class FeedError(Exception):
    """A feed URL or feed state the replica cannot work with."""


class FeedGap(FeedError):
    """The feed no longer holds the position right after ours: serving on would hide changes.

    ``first`` is the first position the feed still holds: a snapshot at ``first - 1`` or later
    covers the gap (the feed holds the position right after it).
    """

    def __init__(self, message: str, first: int) -> None:
        super().__init__(message)
        self.first = first


class Message(NamedTuple):
    """One feed entry. ``payload`` is JSON bytes or an already-parsed JSON value.

    ``error`` is set when the entry itself is malformed (e.g. a file line that is not JSON); the
    position still advances past it.
    """

    position: int
    subject: str
    payload: Any  # bytes, or a parsed JSON value
    error: str | None = None


class CaughtUp:
    """Marker: everything the source holds up to now has been yielded."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CAUGHT_UP"


CAUGHT_UP: Final = CaughtUp()
Item = Message | CaughtUp
Batched = list[Message] | CaughtUp


class Source(Protocol):
    """What the replica needs of a feed source."""

    #: True while connected and everything known has been delivered (staleness 0).
    current: bool
    #: ``time.monotonic()`` when the source last knew it was current; None before that.
    current_at: float | None
    #: A short human-readable state for ``/readyz?verbose`` and logs (never a credential).
    status: str

    def messages(self, after: int) -> AsyncIterator[Item]:
        """Messages with position > ``after``, in order, forever (until cancelled)."""
        ...

    def batches(self, after: int, limit: int = 1024) -> AsyncIterator[Batched]:
        """As :meth:`messages`, the messages in non-empty lists of at most ``limit``: those
        that have arrived, without waiting for more."""
        ...


async def _each(batches: AsyncIterator[Batched]) -> AsyncIterator[Item]:
    """The messages of ``batches`` one by one (CAUGHT_UP where it comes); closing this closes
    ``batches``."""
    try:
        async for batch in batches:
            if isinstance(batch, list):
                for message in batch:
                    yield message
            else:
                yield batch
    finally:
        await batches.aclose()  # type: ignore[attr-defined]


def open_source(url: str, *, poll_interval: float = 0.2, nats: NatsAuth | None = None) -> Source:
    """The source for a feed URL: ``file:///path`` or ``nats://host:port?stream=NAME``.

    ``nats`` holds the files that secure a NATS connection; they are read here, so a missing
    or malformed one is a FeedError before anything connects.
    """
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return FileSource(file_url_path(url), poll_interval=poll_interval)
    if scheme in ("nats", "tls"):
        return NatsSource(NatsConnection(url, nats))
    raise FeedError(f"unsupported feed URL scheme {scheme!r}: use file://, nats:// or tls://")


def file_url_path(url: str) -> Path:
    """The path of a ``file://`` URL (``file:///abs/path``, or ``file://relative/path``)."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise FeedError(f"not a file:// URL: {url!r}")
    path = unquote(parts.netloc + parts.path)
    if not path:
        raise FeedError(f"file URL without a path: {url!r}")
    return Path(path)


def parse_nats_url(url: str) -> tuple[str, str]:
    """(server URL without userinfo or query, stream name) from ``nats://host:port?stream=NAME``."""
    connection = NatsConnection(url)
    return connection.server, connection.stream


def redact_url(url: str) -> str:
    """``url`` with its userinfo (``user:password@`` or ``token@``) replaced by ``***@``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


# -- file ------------------------------------------------------------------------------------


class FileSource:
    """Follows a JSON-lines file of ``{"subject": ..., "payload": ...}``; position = line number.

    Polls the file with a short sleep once it reaches the end (no busy loop). A last line
    without its newline is held back until the newline arrives. A line that is not such an
    object is yielded with ``error`` set. A missing file counts as empty; a file that shrinks
    below what was read is a :class:`FeedGap`.
    """

    BATCH = 512  # lines between yields to the event loop while catching up

    def __init__(self, path: Path, *, poll_interval: float = 0.2) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self.current = False
        self.current_at: float | None = None
        self.status = "not started"
        #: passes over the file (or its absence) that found nothing more to read
        self.polls = 0

    def messages(self, after: int) -> AsyncIterator[Item]:
        return _each(self.batches(after))

    async def batches(self, after: int, limit: int = 1024) -> AsyncIterator[Batched]:
        position = 0
        offset = 0  # bytes of complete lines consumed
        stream = None
        was_current = False
        try:
            while True:
                if stream is None:
                    if not self.path.exists():
                        self.status = f"waiting for {self.path}"
                        if after > 0:
                            self.current = False
                        else:  # no file yet is an empty feed
                            first = not was_current
                            was_current = self._mark_current()
                            if first:
                                yield CAUGHT_UP
                        self.polls += 1
                        await asyncio.sleep(self.poll_interval)
                        continue
                    stream = open(self.path, "rb")  # noqa: SIM115, ASYNC230 - local file, held open
                    self.status = f"following {self.path}"
                lines = 0
                batch: list[Message] = []
                while True:
                    raw = stream.readline()
                    if not raw.endswith(b"\n"):
                        stream.seek(offset)  # partial or no line: read it again when complete
                        break
                    offset += len(raw)
                    position += 1
                    lines += 1
                    if position <= after:
                        if lines % self.BATCH == 0:
                            await asyncio.sleep(0)  # skipping a long backlog
                        continue
                    self.current = False
                    was_current = False
                    batch.append(_parse_line(position, raw))
                    if len(batch) >= limit:
                        yield batch
                        batch = []
                if batch:
                    yield batch
                size = os.fstat(stream.fileno()).st_size
                if size < offset:
                    raise FeedGap(
                        f"{self.path} shrank to {size} bytes below read offset {offset}", first=1
                    )
                if position < after:
                    self.current = False
                    self.status = f"{self.path} holds {position} lines, waiting for {after}"
                else:
                    first = not was_current
                    was_current = self._mark_current()
                    if first:
                        yield CAUGHT_UP
                self.polls += 1
                await asyncio.sleep(self.poll_interval)
        finally:
            self.current = False
            if stream is not None:
                stream.close()

    def _mark_current(self) -> bool:
        self.current = True
        self.current_at = time.monotonic()
        return True


def _parse_line(position: int, raw: bytes) -> Message:
    if not raw.strip():
        return Message(position, "", None)  # blank line: skipped, like an unknown subject
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Message(position, "", raw, f"line is not JSON: {exc}")
    if not isinstance(entry, dict):
        return Message(position, "", raw, "line is not a JSON object")
    subject = entry.get("subject")
    if not isinstance(subject, str):
        return Message(position, "", raw, "line has no string subject")
    if "payload" not in entry:
        return Message(position, subject, raw, "line has no payload")
    return Message(position, subject, entry["payload"])


# -- NATS JetStream --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """Files that secure a NATS connection (``--nats-creds``, ``--nats-ca``, ``--nats-cert``,
    ``--nats-key``). Paths only: nothing here is a secret until the files are read."""

    #: a NATS ``.creds`` file: the user JWT and its NKey seed
    creds: Path | None = None
    #: PEM certificates that verify the server (else the system's trust store)
    ca: Path | None = None
    #: PEM client certificate, and its key (``key`` may be left out when ``cert`` holds both)
    cert: Path | None = None
    key: Path | None = None


def _read_file(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FeedError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None


def _no_key_password() -> bytes:
    raise FeedError("the key is encrypted; give an unencrypted PEM key")


class NatsConnection:
    """How to reach a feed's NATS server, through nats-py's own options.

    The URL's userinfo (``user:password@`` or ``token@``, percent-decoded) is taken out of the
    URL and handed to nats-py as ``user``/``password`` or ``token``, so the URL kept, shown and
    logged (``server``) never holds a secret. ``tls://``, ``--nats-ca`` or ``--nats-cert`` make
    an SSL context (server certificate and host name verified); ``--nats-creds`` goes to
    ``user_credentials`` (nats-py reads the file at each connection, so it may be rotated).
    Every file is read once here, so a missing or malformed one is a FeedError at start.
    """

    __slots__ = ("_secrets", "creds", "server", "stream", "tls")

    def __init__(self, url: str, auth: NatsAuth | None = None) -> None:
        auth = auth or NatsAuth()
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls"):
            raise FeedError(f"not a nats:// or tls:// URL: {redact_url(url)!r}")
        streams = parse_qs(parts.query).get("stream", [])
        if len(streams) != 1 or not streams[0]:
            raise FeedError("a nats:// feed URL needs exactly one ?stream=NAME")
        if not parts.hostname:
            raise FeedError("a nats:// feed URL needs a host")
        self.stream: str = streams[0]
        host = parts.netloc.rpartition("@")[2]
        #: the server URL without userinfo, query or fragment: safe to show
        self.server: str = parts._replace(netloc=host, query="", fragment="").geturl()
        self._secrets: dict[str, str] = {}
        if parts.username is not None:
            user = unquote(parts.username)
            if parts.password is None:
                self._secrets["token"] = user
            else:
                self._secrets["user"] = user
                self._secrets["password"] = unquote(parts.password)
        self.creds: str | None = None
        if auth.creds is not None:
            text = _read_file("--nats-creds", auth.creds)
            if b"BEGIN NATS USER JWT" not in text or b"BEGIN USER NKEY SEED" not in text:
                raise FeedError(
                    f"--nats-creds {auth.creds}: not a NATS .creds file (a user JWT and NKey seed)"
                )
            self.creds = str(auth.creds)
        self.tls: ssl.SSLContext | None = None
        if auth.key is not None and auth.cert is None:
            raise FeedError("--nats-key needs --nats-cert (the client certificate)")
        if parts.scheme == "tls" or auth.ca is not None or auth.cert is not None:
            self.tls = self._ssl_context(auth)

    @staticmethod
    def _ssl_context(auth: NatsAuth) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if auth.ca is not None:
            pem = _read_file("--nats-ca", auth.ca)
            try:
                context.load_verify_locations(cadata=pem.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise FeedError(f"--nats-ca {auth.ca}: no PEM certificate in it ({exc})") from None
        if auth.cert is not None:
            _read_file("--nats-cert", auth.cert)
            if auth.key is not None:
                _read_file("--nats-key", auth.key)
            try:
                context.load_cert_chain(auth.cert, auth.key, password=_no_key_password)
            except FeedError as exc:
                raise FeedError(f"--nats-key {auth.key or auth.cert}: {exc}") from None
            except ssl.SSLError as exc:
                raise FeedError(
                    f"--nats-cert {auth.cert} / --nats-key {auth.key}: "
                    f"not a PEM certificate and its key ({exc.reason or exc})"
                ) from None
        return context

    def __repr__(self) -> str:
        return f"NatsConnection({self.server!r}, stream={self.stream!r})"

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (they hold secrets: never log them)."""
        options: dict[str, Any] = dict(self._secrets)
        if self.tls is not None:
            options["tls"] = self.tls
        if self.creds is not None:
            options["user_credentials"] = self.creds
        return options

    async def connect(self, **kwargs: Any) -> Any:
        """A connected ``nats.aio.client.Client`` (``kwargs``: more ``connect`` options)."""
        from nats.aio.client import Client

        async def error(exc: Exception) -> None:
            log.debug("nats client error: %s", exc)

        kwargs.setdefault("error_cb", error)
        nc = Client()
        try:
            await nc.connect(self.server, **self.options(), **kwargs)
        except BaseException:
            # nats-py leaves the socket of a refused first connection open (e.g. the server
            # refused the client certificate after the handshake): close it, or each retry
            # leaks a file descriptor. After a failed TLS handshake the socket is closed
            # already, and nats-py's close would wait forever for it: bound that wait.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1.0)
            raise
        return nc


class NatsSource:
    """Reads a JetStream stream from a sequence on, through its own ephemeral pull consumer.

    No durable server state: on every (re)connection it checks that the stream still holds the
    next sequence (else :class:`FeedGap`), then creates a consumer starting there. Messages at
    or below the last yielded sequence are dropped, so a redelivery is never applied twice.
    Connection problems are retried forever with a capped backoff.
    """

    BATCH = 256
    FETCH_TIMEOUT = 1.0
    MAX_BACKOFF = 5.0

    def __init__(self, connection: NatsConnection, *, connect_timeout: float = 2.0) -> None:
        self.connection = connection
        self.server = connection.server  # without userinfo: safe to show
        self.stream = connection.stream
        self.connect_timeout = connect_timeout
        self.current = False
        self.current_at: float | None = None
        self.status = "not started"
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"NatsSource({self.server!r}, stream={self.stream!r})"

    async def _connect(self) -> Any:
        async def disconnected() -> None:
            self.current = False

        return await self.connection.connect(
            allow_reconnect=False,  # this source reconnects itself, then re-checks for gaps
            # nats-py retries even a first connection; keep that short, our loop backs off
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            connect_timeout=max(1, int(self.connect_timeout)),
            disconnected_cb=disconnected,
            name="voip-rooms",
        )

    async def _check(self, js: Any, position: int) -> int | None:
        """The stream's last sequence after checking it still holds ``position + 1``.

        None when the stream does not exist (yet). Raises FeedGap.
        """
        import nats.js.errors

        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            return None
        first, last = int(info.state.first_seq), int(info.state.last_seq)
        if last < position:
            raise FeedGap(
                f"stream {self.stream} ends at sequence {last}, before our position {position} "
                "(was it recreated?); load a newer snapshot",
                first=first,
            )
        if last > position and first > position + 1:
            raise FeedGap(
                f"stream {self.stream} starts at sequence {first}, but position {position + 1} "
                "is needed (purged or aged out); load a newer snapshot",
                first=first,
            )
        return last

    def messages(self, after: int) -> AsyncIterator[Item]:
        return _each(self.batches(after))

    async def batches(self, after: int, limit: int = 1024) -> AsyncIterator[Batched]:
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        position = after
        backoff = 0.1
        was_current = False
        while True:
            nc: Any = None
            try:
                self.status = f"connecting to {self.server}"
                nc = await self._connect()
                js = nc.jetstream()
                last = await self._check(js, position)
                if last is None:
                    self.status = f"stream {self.stream} not found"
                    raise _Retry(self.status)
                config = ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=position + 1,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=30.0,
                    mem_storage=True,
                    max_ack_pending=-1,
                )
                sub = await js.pull_subscribe(">", stream=self.stream, config=config)
                self.status = f"following stream {self.stream} at {self.server}"
                backoff = 0.1
                idle_with_pending = 0
                while True:
                    try:
                        fetched = await sub.fetch(
                            min(self.BATCH, limit), timeout=self.FETCH_TIMEOUT
                        )
                    except nats.errors.TimeoutError:
                        if nc.is_closed:
                            raise _Retry("connection closed") from None
                        last = await self._check(js, position)
                        if last is None:
                            raise _Retry(f"stream {self.stream} disappeared") from None
                        if last <= position:
                            self._mark_current()
                            if not was_current:
                                was_current = True
                                yield CAUGHT_UP
                            continue
                        idle_with_pending += 1
                        if idle_with_pending >= 2:  # our consumer is gone: make a new one
                            raise _Retry("consumer lost") from None
                        continue
                    idle_with_pending = 0
                    batch: list[Message] = []
                    for msg in fetched:
                        meta = msg.metadata
                        seq = int(meta.sequence.stream)
                        if seq <= position:
                            continue  # redelivered after a reconnect: applied already
                        if seq != position + 1:
                            if batch:
                                yield batch  # what came before the jump is applied first
                            raise FeedGap(
                                f"stream {self.stream} jumped from sequence {position} to {seq}",
                                first=seq,
                            )
                        if was_current and meta.num_pending:
                            self.current = was_current = False
                        batch.append(Message(seq, msg.subject, msg.data))
                        position = seq
                        if meta.num_pending == 0:
                            yield batch
                            batch = []
                            self._mark_current()
                            if not was_current:
                                was_current = True
                                yield CAUGHT_UP
                    if batch:
                        yield batch
            except FeedGap as exc:
                self.status = str(exc)
                raise
            except (TimeoutError, _Retry, nats.errors.Error, OSError) as exc:
                self.current = was_current = False
                self.reconnects += 1
                self.status = f"reconnecting: {exc or type(exc).__name__}"
                log.warning(
                    "feed %s: %s; retrying in %.1fs from position %d",
                    self,
                    exc or type(exc).__name__,
                    backoff,
                    position,
                )
            finally:
                # The try block only ends by an exception: this connection is done with.
                self.current = False
                if nc is not None and not nc.is_closed:
                    with contextlib.suppress(Exception):
                        await nc.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.MAX_BACKOFF)

    def _mark_current(self) -> None:
        self.current = True
        self.current_at = time.monotonic()


class _Retry(Exception):
    """Internal: drop the connection and start over."""
