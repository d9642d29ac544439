"""Servers started by tests, benchmarks and the soak bind port 0 and tell the port they got.

Picking a free port, releasing it and handing it to a server is a race (something else may bind
it in between). ``voip-rooms serve --port 0 --port-file FILE`` binds first, then writes the port:
``wait_port_file`` waits for that file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["serve_process", "wait_port_file"]


def serve_process(
    snapshot: Path,
    port_file: Path,
    *extra: str,
    port: int = 0,
    output: int | None = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """``voip-rooms serve --snapshot SNAPSHOT`` on 127.0.0.1 (``port`` 0: any free one, written
    to ``port_file``), with ``extra`` flags, logging at info level to ``output`` (stdout and
    stderr together). Wait for its port with :func:`wait_port_file`."""
    port_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "service", "serve", "--snapshot", str(snapshot)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--port-file", str(port_file), *extra]
    return subprocess.Popen(
        argv,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        env={**os.environ, "VOIP_ROOMS_LOG_LEVEL": "info"},
    )


def wait_port_file(path: Path, proc: subprocess.Popen[bytes], within: float = 60.0) -> int:
    """The port in ``path`` once the server ``proc`` has written it (it binds, then writes).

    Raises AssertionError if ``proc`` exits first or nothing comes within ``within`` seconds.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        if text.endswith("\n"):
            return int(text)
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}) before listening")
        if time.monotonic() > deadline:
            raise AssertionError(f"the server wrote no port to {path} in {within:g} s")
        time.sleep(0.02)
