"""SIGTERM on a real `voip-rooms serve` process with open live-answer streams: they last through
the drain, then get a ``retry:`` hint and end, without holding up the exit."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp

from tests.conftest import MANAGER, headers, standard_rooms, standard_users
from tests.factories import write_snapshot
from tests.net import serve_process, wait_port_file
from tests.web.test_shutdown import wait_ready
from tests.web.test_streams import SSE, Events


async def test_sigterm_closes_streams_at_the_end_of_the_drain(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snap", standard_rooms(), standard_users())
    port_file = tmp_path / "port"
    drain, timeout = 1.0, 30.0
    proc = serve_process(
        snapshot, port_file, "--drain-seconds", str(drain), "--shutdown-timeout", str(timeout)
    )
    try:
        port = await asyncio.to_thread(wait_port_file, port_file, proc)
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, proc)
        async with aiohttp.ClientSession() as session:
            opened = [
                await session.get(
                    base + "/api/v1/voip/rooms?queue=sales", headers={**headers(MANAGER), **SSE}
                )
                for _ in range(3)
            ]
            streams = [Events(resp) for resp in opened]
            for stream in streams:
                assert (await stream.next())["event"] == "rooms"
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            while True:  # not ready at once, the streams still open
                async with session.get(base + "/readyz") as resp:
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.01)
            for stream in streams:
                hint = await stream.next()
                assert set(hint) == {"retry"}
                assert 1000 <= int(hint["retry"]) <= 5000
                await stream.ended()
            assert time.monotonic() - sent >= drain  # not before the drain ended
            for resp in opened:
                resp.close()
        code = await asyncio.to_thread(proc.wait, timeout + 30)
        exited = time.monotonic() - sent
        assert code == 0
        assert exited < timeout  # the streams did not hold the shutdown up to its timeout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        output = proc.stdout.read().decode()
        proc.stdout.close()
    assert "Traceback" not in output
