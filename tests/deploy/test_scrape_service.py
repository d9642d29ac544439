"""A real Prometheus scrapes the real service: up == 1 and the request counter rises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MANAGER, headers
from tests.deploy.conftest import StartPrometheus
from tests.deploy.promql import CONTRACT_METRICS, exported_metric_names

REQUESTS = 'sum(voip_rooms_http_requests_total{route="/api/v1/voip/rooms",status="200"})'


@pytest.mark.timeout(60)
async def test_prometheus_scrapes_the_service(
    make_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    snapshot_dir: Path,
    prometheus_server: StartPrometheus,
) -> None:
    client = await make_client(snapshot=snapshot_dir)
    for _ in range(3):
        assert (await client.get("/api/v1/voip/rooms", headers=headers(MANAGER))).status == 200
    prometheus = await prometheus_server([f"127.0.0.1:{client.port}"])
    assert await prometheus.wait_for('up{job="voip-rooms"}', lambda v: v == 1.0) == 1.0
    first = await prometheus.wait_for(REQUESTS, lambda v: v >= 3)
    for _ in range(5):
        await client.get("/api/v1/voip/rooms", headers=headers(MANAGER))
    assert await prometheus.wait_for(REQUESTS, lambda v: v >= first + 5) >= first + 5
    ready = await prometheus.wait_for("voip_rooms_ready", lambda v: v == 1.0)
    assert ready == 1.0


async def test_service_exports_every_contract_metric(
    make_client: Callable[..., Awaitable[TestClient[Any, Any]]], snapshot_dir: Path
) -> None:
    client = await make_client(snapshot=snapshot_dir)
    await client.get("/api/v1/voip/rooms", headers=headers(MANAGER))
    text = await (await client.get("/metrics")).text()
    wanted = {
        name + "_bucket" if kind == "histogram" else name for name, kind in CONTRACT_METRICS.items()
    }
    missing = wanted - exported_metric_names(text)
    assert not missing, missing
