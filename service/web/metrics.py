"""Prometheus metrics: an injected object holding the registry and pre-bound label children."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from service.feed.replica import Replica

__all__ = ["AUTH_REASONS", "CLOSE_REASONS", "METHODS", "LiveCounts", "Metrics", "RequestMetric"]

# Latency buckets reach down to 100 µs: answers from memory are mostly sub-millisecond.
BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
AUTH_REASONS = ("missing_headers", "unknown_user", "bad_token", "expired", "inactive")
#: why a live-answer stream ended
CLOSE_REASONS = ("client", "auth", "slow", "shutdown")


class RequestMetric:
    """Requests of one (method, route): a count per status and a latency histogram.

    Plain numbers on the request path (no lock, no label lookup: the event loop is the only
    writer), exported by ``_RequestCollector`` at scrape time, which runs on the loop too.
    """

    __slots__ = ("buckets", "labels", "statuses", "sum")

    def __init__(self, method: str, route: str) -> None:
        self.labels = [method, route]
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # not cumulative; the last one is +Inf
        self.sum = 0.0

    def count(self, status: int) -> None:
        """A request counted without its duration (a stream: its length is the client's)."""
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1

    def observe(self, status: int, seconds: float) -> None:
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1  # the first bound >= seconds
        self.sum += seconds


_BUCKET_NAMES = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]


class _RequestCollector(Collector):
    """``voip_rooms_http_requests_total`` and ``..._request_duration_seconds`` at scrape time."""

    def __init__(self, bound: dict[tuple[str, str], RequestMetric]) -> None:
        self._bound = bound

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "voip_rooms_http_requests",
            "HTTP requests by method, route template and status",
            labels=["method", "route", "status"],
        )
        duration = HistogramMetricFamily(
            "voip_rooms_http_request_duration_seconds",
            "HTTP request duration by method and route template",
            labels=["method", "route"],
        )
        for metric in self._bound.values():
            for status, n in sorted(metric.statuses.items()):
                requests.add_metric([*metric.labels, str(status)], n)
            cumulative, total = [], 0
            for name, n in zip(_BUCKET_NAMES, metric.buckets, strict=True):
                total += n
                cumulative.append((name, float(total)))
            duration.add_metric(metric.labels, cumulative, metric.sum)
        yield requests
        yield duration


class LiveCounts:
    """Counts of the answer cache and the live-answer streams: plain numbers on the event loop,
    exported at scrape time."""

    __slots__ = ("closed", "error_events", "hits", "misses", "room_events", "streams")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.streams = 0
        self.room_events = 0
        self.error_events = 0
        self.closed = dict.fromkeys(CLOSE_REASONS, 0)


class _LiveCollector(Collector):
    """The cache and stream metrics, read from :class:`LiveCounts` at scrape time."""

    def __init__(self, counts: LiveCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        counts = self._counts
        yield GaugeMetricFamily(
            "voip_rooms_streams", "Open live-answer streams", value=counts.streams
        )
        events = CounterMetricFamily(
            "voip_rooms_stream_events", "Events sent on live-answer streams", labels=["event"]
        )
        events.add_metric(["rooms"], counts.room_events)
        events.add_metric(["error"], counts.error_events)
        yield events
        closed = CounterMetricFamily(
            "voip_rooms_streams_closed", "Live-answer streams ended, by reason", labels=["reason"]
        )
        for reason, n in counts.closed.items():
            closed.add_metric([reason], n)
        yield closed
        answers = CounterMetricFamily(
            "voip_rooms_cache_answers",
            "Answers served from memory (hit) or built from the store (miss)",
            labels=["result"],
        )
        answers.add_metric(["hit"], counts.hits)
        answers.add_metric(["miss"], counts.misses)
        yield answers


class _ReplicaCollector(Collector):
    """Reads the replica's state at scrape time, so the request path never updates gauges."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        replica = self._metrics.replica
        if replica is None:
            return
        store = replica.store
        total = len(store)
        opened = store.open_count()
        rooms = GaugeMetricFamily(
            "voip_rooms_store_rooms", "Rooms held, by state", labels=["state"]
        )
        rooms.add_metric(["open"], opened)
        rooms.add_metric(["closed"], total - opened)
        yield rooms
        yield GaugeMetricFamily("voip_rooms_store_users", "Users held", value=len(replica.users))
        yield GaugeMetricFamily(
            "voip_rooms_feed_position", "Last applied feed position", value=replica.position
        )
        events = CounterMetricFamily(
            "voip_rooms_feed_events",
            "Feed events by subject and result",
            labels=["subject", "result"],
        )
        for (subject, result), n in sorted(replica.events.items()):
            events.add_metric([subject, result], n)
        yield events
        yield GaugeMetricFamily(
            "voip_rooms_feed_staleness_seconds",
            "Seconds since the replica last knew it was up to date with its feed",
            value=replica.staleness_seconds(),
        )
        yield GaugeMetricFamily(
            "voip_rooms_snapshot_load_seconds",
            "Seconds the snapshot (or checkpoint) took to load",
            value=replica.load_seconds,
        )
        progress = replica.progress
        yield GaugeMetricFamily(
            "voip_rooms_snapshot_load_rooms",
            "Rooms loaded so far by the current (or last) snapshot or checkpoint load",
            value=progress.rooms if progress is not None else 0,
        )
        yield GaugeMetricFamily(
            "voip_rooms_ready", "1 when the replica is ready to serve", value=int(replica.ready)
        )
        yield GaugeMetricFamily(
            "voip_rooms_feed_gap",
            "1 while serving across a feed gap (stale until a covering snapshot is loaded)",
            value=int(replica.feed_gap),
        )


class Metrics:
    """Every metric of the service, in one registry (a fresh one per app, so tests are isolated)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._bound: dict[tuple[str, str], RequestMetric] = {}
        self.registry.register(_RequestCollector(self._bound))
        #: requests being served; a plain int on the request path, read by the gauge at scrape
        self.in_flight = 0
        Gauge(
            "voip_rooms_http_requests_in_flight",
            "HTTP requests being served",
            registry=self.registry,
        ).set_function(lambda: self.in_flight)
        auth = Counter(
            "voip_rooms_auth_failures",
            "Failed authentications by reason",
            ["reason"],
            registry=self.registry,
        )
        self.auth_failures = {reason: auth.labels(reason) for reason in AUTH_REASONS}
        self.replica: Replica | None = None
        self.registry.register(_ReplicaCollector(self))
        #: the answer cache's and the streams' counts
        self.live = LiveCounts()
        self.registry.register(_LiveCollector(self.live))

    def request(self, method: str, route: str) -> RequestMetric:
        """The children for (method, route), bound on first use; unknown methods are ``other``."""
        bound = self._bound.get((method, route))
        if bound is None:
            label = method if method in METHODS else "other"
            bound = self._bound.get((label, route))
            if bound is None:
                bound = RequestMetric(label, route)
                self._bound[(label, route)] = bound
        return bound

    #: the request clock (the C function itself: no Python frame per call)
    now = staticmethod(time.perf_counter)
