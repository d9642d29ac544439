"""Fixtures for deploy/ tests: a real Prometheus server scraping given targets."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import yaml

from tests.deploy.tools import require_binary

PROMETHEUS_HINT = "apt-get install -y prometheus"
# Prometheus's web server logs the address it bound, the port included when given port 0.
LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')


@dataclass
class PrometheusServer:
    """A running Prometheus, queried through its HTTP API."""

    url: str
    session: aiohttp.ClientSession
    log: Path

    async def api(self, path: str, **params: str) -> Any:
        async with self.session.get(self.url + path, params=params) as response:
            body = await response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    async def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's vector: (labels, value) per series."""
        data = await self.api("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    async def wait_for(
        self, promql: str, predicate: Callable[[float], bool], within: float = 10.0
    ) -> float:
        """Poll ``promql`` until a series' value satisfies ``predicate``; return that value."""
        deadline = time.monotonic() + within
        seen: list[tuple[dict[str, str], float]] = []
        while time.monotonic() < deadline:
            seen = await self.query(promql)
            for _labels, value in seen:
                if not math.isnan(value) and predicate(value):
                    return value
            await asyncio.sleep(0.25)
        log = self.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"{promql!r} never matched in {within} s; last: {seen}\n{log}")


class StartPrometheus(Protocol):
    def __call__(
        self,
        targets: Sequence[str],
        *,
        job: str = ...,
        scrape_interval: str = ...,
        metrics_path: str = ...,
        rule_files: Sequence[Path] = ...,
    ) -> Awaitable[PrometheusServer]: ...


@pytest.fixture
async def prometheus_server(tmp_path: Path) -> AsyncIterator[StartPrometheus]:
    """``await prometheus_server(["127.0.0.1:3000"])`` starts a Prometheus scraping those targets.

    Its own config and data dir under tmp_path (never the system service's), port 0 (the port
    it got is read from its log), one scrape job (default ``voip-rooms``, as in production, so
    the deploy rules apply), optional rule files. Stopped at teardown.
    """
    binary = require_binary("prometheus", PROMETHEUS_HINT)
    processes: list[asyncio.subprocess.Process] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        targets: Sequence[str],
        *,
        job: str = "voip-rooms",
        scrape_interval: str = "1s",
        metrics_path: str = "/metrics",
        rule_files: Sequence[Path] = (),
    ) -> PrometheusServer:
        home = tmp_path / f"prometheus-{len(processes)}"
        home.mkdir()
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": metrics_path,
                    "scrape_timeout": scrape_interval,
                    "static_configs": [{"targets": list(targets)}],
                }
            ],
        }
        (home / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = home / "prometheus.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                "--web.listen-address=127.0.0.1:0",  # its log names the port it got
                "--log.level=info",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        processes.append(process)
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        sessions.append(session)
        deadline = time.monotonic() + 15
        server: PrometheusServer | None = None
        while time.monotonic() < deadline and process.returncode is None:
            if server is None:
                found = LISTENING.search(log.read_text(errors="replace"))
                if found:
                    server = PrometheusServer(f"http://127.0.0.1:{found[1]}", session, log)
            if server is not None:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(server.url + "/-/ready") as response:
                        if response.status == 200:
                            return server
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"prometheus did not become ready (exit {process.returncode}):\n{log.read_text()}"
        )

    yield start

    for session in sessions:
        await session.close()
    for process in processes:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
