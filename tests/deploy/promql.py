"""Metric names: those a PromQL expression reads, and those a /metrics exposition offers."""

from __future__ import annotations

import re

__all__ = [
    "CONTRACT_METRICS",
    "exported_metric_names",
    "metric_names_in_expr",
    "series_names",
]

# CONTRACT.md section 5, plus the process_* collector prometheus_client adds on Linux:
# family name -> type.
CONTRACT_METRICS: dict[str, str] = {
    "voip_rooms_http_requests_total": "counter",
    "voip_rooms_http_request_duration_seconds": "histogram",
    "voip_rooms_http_requests_in_flight": "gauge",
    "voip_rooms_store_rooms": "gauge",
    "voip_rooms_store_users": "gauge",
    "voip_rooms_feed_position": "gauge",
    "voip_rooms_feed_events_total": "counter",
    "voip_rooms_feed_staleness_seconds": "gauge",
    "voip_rooms_snapshot_load_seconds": "gauge",
    "voip_rooms_auth_failures_total": "counter",
    "voip_rooms_ready": "gauge",
    "voip_rooms_feed_gap": "gauge",
    "voip_rooms_snapshot_load_rooms": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
}

_SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def series_names(families: dict[str, str]) -> set[str]:
    """The sample names PromQL can select for metric families given as name -> type."""
    names: set[str] = set()
    for name, kind in families.items():
        if kind == "counter":
            names.add(name if name.endswith("_total") else name + "_total")
        else:
            names.update(name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\s)")
_TYPE = re.compile(r"^#\s+TYPE\s+([a-zA-Z_:][a-zA-Z0-9_:]*)\s+(\w+)\s*$")


def exported_metric_names(text: str) -> set[str]:
    """Every sample name a Prometheus text (0.0.4) or OpenMetrics exposition offers.

    Families declared by ``# TYPE`` count even when they have no sample yet (a labelled
    counter nothing has incremented), expanded to their sample names (``_bucket``, ``_sum``,
    ``_count`` for a histogram; ``_total`` for a counter).
    """
    names: set[str] = set()
    families: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            declared = _TYPE.match(line)
            if declared:
                families[declared.group(1)] = declared.group(2).lower()
            continue
        sample = _SAMPLE.match(line + " ")
        if sample:
            names.add(sample.group(1))
    names.update(series_names(families))
    return names


# PromQL lexing, just enough to find metric names: strings, label matchers, ranges and
# grouping label lists are dropped; what remains is functions (followed by "("),
# keywords, numbers, and metric names.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_TEMPLATE_VARIABLES = re.compile(r"\$(?:\{[^}]*\}|\w+)")  # Grafana's $__rate_interval, ${pod}
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
# Grafana's template-variable functions: label_values([selector,] label) reads the selector only.
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),)?\s*[a-zA-Z_]\w*\s*\)\s*$", re.DOTALL)
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "bool", "by", "without", "on", "ignoring",
        "group_left", "group_right", "offset", "inf", "nan", "atan2",
    }
)  # fmt: skip


def metric_names_in_expr(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression selects.

    Also takes Grafana's ``label_values(selector, label)`` and ``$variables``.
    """
    text = _STRINGS.sub('""', expr)
    label_values = _LABEL_VALUES.match(text)
    if label_values:
        text = label_values.group(1) or ""
    text = _TEMPLATE_VARIABLES.sub("1", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names
