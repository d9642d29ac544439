"""/metrics: contract names and labels, route templates, no _created series, OpenMetrics."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MANAGER, headers

Client = TestClient[Any, Any]


async def scrape(client: Client) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_contract_metrics_are_exported(client: Client) -> None:
    await client.get("/api/v1/voip/rooms?count=1", headers=headers(MANAGER))
    names = set(await scrape(client))
    for name in (
        "voip_rooms_http_requests_total",
        "voip_rooms_http_request_duration_seconds_bucket",
        "voip_rooms_http_requests_in_flight",
        "voip_rooms_store_rooms",
        "voip_rooms_store_users",
        "voip_rooms_feed_position",
        "voip_rooms_feed_staleness_seconds",
        "voip_rooms_snapshot_load_seconds",
        "voip_rooms_auth_failures_total",
        "voip_rooms_ready",
        "process_resident_memory_bytes",
    ):
        assert name in names, name
    assert not any(n.endswith("_created") for n in names)


async def test_requests_counted_by_route_template_and_status(client: Client) -> None:
    for _ in range(3):
        await client.get("/api/v1/voip/rooms", headers=headers(MANAGER))
    await client.get("/api/v1/voip/rooms")
    await client.get("/no/such/path/12345")
    await client.get("/api//v1/voip/rooms", headers=headers(MANAGER))
    samples = await scrape(client)
    requests = samples["voip_rooms_http_requests_total"]
    route = "/api/v1/voip/rooms"
    assert requests[(("method", "GET"), ("route", route), ("status", "200"))] == 4
    assert requests[(("method", "GET"), ("route", route), ("status", "401"))] == 1
    assert requests[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1
    assert not any("12345" in value for labels in requests for _, value in labels)
    failures = samples["voip_rooms_auth_failures_total"]
    assert failures[(("reason", "missing_headers"),)] == 1
    rooms = samples["voip_rooms_store_rooms"]
    assert rooms[(("state", "open"),)] == 5
    assert rooms[(("state", "closed"),)] == 25
    assert samples["voip_rooms_ready"][()] == 1
    assert samples["voip_rooms_feed_position"][()] == 7


async def test_openmetrics_on_request(client: Client) -> None:
    resp = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).rstrip().endswith("# EOF")
