"""Every metric the dashboard and the rules read is one the service exports (CONTRACT.md §5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder

from tests.deploy.promql import (
    CONTRACT_METRICS,
    exported_metric_names,
    metric_names_in_expr,
    series_names,
)
from tests.deploy.rules import rule_groups
from tests.deploy.tools import DEPLOY

# Series from other exporters the rules may use: Prometheus itself and kube-state-metrics.
EXTERNAL = {"up", "ALERTS", "kube_pod_container_status_restarts_total"}


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    """(where, expr) for every query of the Grafana dashboard, template variables included."""
    dashboard = json.loads((DEPLOY / "grafana" / "voip-rooms.json").read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield (
                f"variable {variable['name']}",
                query["query"] if isinstance(query, dict) else query,
            )


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in rule_groups():
        for rule in group["rules"]:
            yield rule.get("record") or rule["alert"], rule["expr"]


def recording_rule_names() -> set[str]:
    return {
        rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule
    }


def contract_exposition() -> str:
    """What a service exporting exactly the contract's metrics serves on /metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    for name, kind in CONTRACT_METRICS.items():
        if name.startswith("process_"):
            continue
        if kind == "counter":
            Counter(name.removesuffix("_total"), name, ["label"], registry=registry)
        elif kind == "histogram":
            Histogram(name, name, ["label"], registry=registry).labels("x").observe(0.1)
        else:
            Gauge(name, name, registry=registry).set(1)
    return generate_latest(registry).decode()


def used_names() -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for source, expr in [*dashboard_exprs(), *rule_exprs()]:
        for name in metric_names_in_expr(expr):
            where.setdefault(name, set()).add(source)
    return where


def check_against(exported: set[str]) -> dict[str, set[str]]:
    """The names used but neither exported, recorded, nor from another exporter."""
    allowed = exported | recording_rule_names() | EXTERNAL
    return {name: sources for name, sources in used_names().items() if name not in allowed}


def test_dashboard_and_rules_read_only_contract_metrics() -> None:
    unknown = check_against(series_names(CONTRACT_METRICS))
    assert not unknown, unknown


def test_same_check_against_a_real_exposition() -> None:
    # The path the real service's /metrics will take: exposition text -> exported_metric_names.
    unknown = check_against(exported_metric_names(contract_exposition()))
    assert not unknown, unknown


def test_the_check_catches_a_wrong_name() -> None:
    exported = series_names(CONTRACT_METRICS) - {"voip_rooms_feed_staleness_seconds"}
    assert "voip_rooms_feed_staleness_seconds" in check_against(exported)


def test_the_dashboard_covers_the_contract() -> None:
    dashboard = {name for _, expr in dashboard_exprs() for name in metric_names_in_expr(expr)}
    families = {
        name.removesuffix(suffix)
        for name in dashboard
        for suffix in ("_bucket", "_sum", "_count")
        if name.endswith(suffix)
    } | dashboard
    missing = {name for name in CONTRACT_METRICS if name.startswith("voip_rooms_")} - families
    assert not missing, missing


def test_recording_rules_are_used() -> None:
    used = used_names()
    unused = {name for name in recording_rule_names() if name not in used}
    # Recorded for dashboards and ad-hoc queries rather than alerts.
    assert unused <= {
        "voip_rooms:http_requests:rate5m",
        "voip_rooms:http_request_duration_seconds:p50_5m",
        "voip_rooms:feed_events:rate5m",
    }, unused


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="voip-rooms"} == 0', {"up"}),
        (
            'sum by (status) (rate(voip_rooms_http_requests_total{job="a", route=~"/x{1,2}"}[5m]))',
            {"voip_rooms_http_requests_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(foo_seconds_bucket[$__rate_interval])))",
            {"foo_seconds_bucket"},
        ),
        (
            "a - on (namespace) group_left max by (namespace) (b) < -1e3 and on(pod) c == 1",
            {"a", "b", "c"},
        ),
        ("sum(x) without (instance) / ignoring(le) group_right(pod) y", {"x", "y"}),
        ("level:metric:rate5m offset 5m > bool 0.5", {"level:metric:rate5m"}),
        ('time() - process_start_time_seconds{pod=~"$pod"}', {"process_start_time_seconds"}),
        ('label_values(voip_rooms_ready{namespace="$namespace"}, pod)', {"voip_rooms_ready"}),
        ("label_values(namespace)", set()),
        ("absent(up{job='x'}) or vector(0) * 0x1F + Inf", {"up"}),
        ('count_values("v", m) unless n @ start()', {"m", "n"}),
        ("rate(m[5m:30s])", {"m"}),
    ],
)
def test_metric_names_in_expr(expr: str, names: set[str]) -> None:
    assert metric_names_in_expr(expr) == names


def test_exported_metric_names_from_text_and_openmetrics() -> None:
    registry = CollectorRegistry()
    Counter("c", "a counter", ["l"], registry=registry)  # labelled, never incremented: no sample
    Counter("d", "a counter", registry=registry).inc()
    Histogram("h_seconds", "a histogram", registry=registry).observe(0.2)
    Gauge("g", "a gauge", registry=registry).set(2)
    expected = {"c_total", "d_total", "h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "g"}
    # What the service's content negotiation serves: text 0.0.4, or OpenMetrics when asked.
    openmetrics, _ = choose_encoder("application/openmetrics-text; version=1.0.0")
    for text in (generate_latest(registry), openmetrics(registry)):
        names = exported_metric_names(text.decode())
        assert expected <= names
        assert not {"c", "d", "h_seconds"} & names
    assert exported_metric_names('# HELP x y\n\nfoo 1\nbar{a="b c"} 2 123\n') == {"foo", "bar"}
