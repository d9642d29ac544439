"""SIGTERM on a real `voip-rooms serve` process under traffic: drain, then a clean, timely exit."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import aiohttp

from tests.conftest import MANAGER, headers, standard_rooms, standard_users
from tests.factories import write_snapshot
from tests.net import serve_process, wait_port_file


async def wait_ready(base: str, proc: subprocess.Popen[bytes], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "server exited early"
            try:
                async with session.get(base + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("server never became ready")


async def test_sigterm_drains_then_exits(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snap", standard_rooms(), standard_users())
    port_file = tmp_path / "port"
    # A drain and a timeout far longer than each step needs: a slow machine makes the test
    # slower, never wrong.
    drain, timeout = 3.0, 20.0
    proc = serve_process(
        snapshot, port_file, "--drain-seconds", str(drain), "--shutdown-timeout", str(timeout)
    )
    try:
        port = await asyncio.to_thread(wait_port_file, port_file, proc)
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, proc)
        ok = failed = 0
        stopped = asyncio.Event()

        async def traffic() -> None:
            nonlocal ok, failed
            # A new connection per request: a refused connection then means "no longer
            # listening", never a request lost in flight.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                while not stopped.is_set():
                    try:
                        async with session.get(
                            base + "/api/v1/voip/rooms?count=5", headers=headers(MANAGER)
                        ) as resp:
                            await resp.read()
                            if resp.status == 200:
                                ok += 1
                            else:
                                failed += 1
                    except aiohttp.ClientConnectorError:
                        return  # the listener is closed: the drain is over
                    except aiohttp.ClientError:
                        failed += 1

        async def answered(more_than: int) -> None:
            deadline = time.monotonic() + 30
            while ok <= more_than:
                assert time.monotonic() < deadline, "the API stopped answering"
                await asyncio.sleep(0.01)

        workers = [asyncio.create_task(traffic()) for _ in range(4)]
        await answered(0)  # traffic flows
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        async with aiohttp.ClientSession() as session:
            while True:  # readiness flips first (any failure here fails the test)
                async with session.get(base + "/readyz") as resp:
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.01)
        flipped = ok
        await answered(flipped)  # not ready, and the API still answers: the drain
        code = await asyncio.to_thread(proc.wait, drain + timeout + 30)
        exited = time.monotonic() - sent
        stopped.set()
        await asyncio.gather(*workers)
        assert code == 0
        assert exited < drain + timeout  # a clean exit, well before the shutdown timeout ends
        assert failed == 0, f"{failed} requests failed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        output = proc.stdout.read().decode()
        proc.stdout.close()
    assert '"msg":"draining"' in output
