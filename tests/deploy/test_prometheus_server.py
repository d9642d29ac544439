"""A real Prometheus scrapes a real exposition endpoint and loads the deploy rule files."""

from __future__ import annotations

import pytest
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pytest_aiohttp import AiohttpServer

from tests.deploy.conftest import StartPrometheus
from tests.deploy.tools import RULES


@pytest.mark.timeout(30)
async def test_prometheus_scrapes_a_counter_that_rises(
    aiohttp_server: AiohttpServer, prometheus_server: StartPrometheus
) -> None:
    registry = CollectorRegistry()
    counter = Counter("deploy_test_increments", "Increments made by the test", registry=registry)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    target = await aiohttp_server(app)
    counter.inc(3)

    prometheus = await prometheus_server([f"127.0.0.1:{target.port}"])

    assert await prometheus.wait_for('up{job="voip-rooms"}', lambda v: v == 1.0) == 1.0
    first = await prometheus.wait_for("deploy_test_increments_total", lambda v: v >= 3)
    assert first == 3
    counter.inc(10)
    later = await prometheus.wait_for("deploy_test_increments_total", lambda v: v > first)
    assert later == first + 10


@pytest.mark.timeout(30)
async def test_prometheus_loads_the_rule_files(prometheus_server: StartPrometheus) -> None:
    prometheus = await prometheus_server(
        [], rule_files=[RULES / "recording.yaml", RULES / "alerts.yaml"]
    )
    data = await prometheus.api("/api/v1/rules")
    groups = {group["name"]: group for group in data["groups"]}
    assert set(groups) == {"voip-rooms.recording", "voip-rooms.alerts"}
    assert len(groups["voip-rooms.alerts"]["rules"]) >= 10
    assert all(rule["type"] == "recording" for rule in groups["voip-rooms.recording"]["rules"])
    # The alerts evaluate: with no target at all, "no voip-rooms target" goes pending at once.
    pending = 'ALERTS{alertname="VoipRoomsTargetMissing", alertstate="pending"}'
    assert await prometheus.wait_for(pending, lambda v: v == 1.0) == 1.0
