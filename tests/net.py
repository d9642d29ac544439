"""Servers started by tests, benchmarks and the soak bind port 0 and tell the port they got.

Picking a free port, releasing it and handing it to a server is a race (something else may bind
it in between). ``voip-rooms serve --port 0 --port-file FILE`` binds first, then writes the port:
``wait_port_file`` waits for that file.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

__all__ = ["wait_port_file"]


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
