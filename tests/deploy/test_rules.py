"""deploy/prometheus: promtool accepts the rule files, their unit tests pass, the wrapper agrees."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import PROMETHEUS_HINT
from tests.deploy.rules import RULE_FILES, render_prometheusrule, rule_groups
from tests.deploy.tools import BASE, RULES, require_binary

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", PROMETHEUS_HINT)
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("name", RULE_FILES)
def test_promtool_check_rules(name: str) -> None:
    result = promtool("check", "rules", RULES / name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_rule_file(tmp_path: Path) -> None:
    # The check above can fail: promtool does reject a bad expression.
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n- name: g\n  rules:\n  - record: a:b\n    expr: sum(rate(x[5m])\n")
    assert promtool("check", "rules", broken).returncode != 0


def test_promtool_unit_tests_of_the_alerts() -> None:
    # alerts_test.yaml names the rule files relative to itself.
    result = promtool("test", "rules", RULES / "alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_groups_are_well_formed() -> None:
    groups = rule_groups()
    names = [group["name"] for group in groups]
    assert len(names) == len(set(names)), names
    alerts: list[dict[str, Any]] = []
    for group in groups:
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule), rule
            assert isinstance(rule["expr"], str), rule
            assert rule["expr"].strip(), rule
            if "alert" in rule:
                alerts.append(rule)
            else:
                # Recording rules follow level:metric:operations.
                assert rule["record"].count(":") == 2, rule["record"]
                assert rule["record"].startswith("voip_rooms:"), rule["record"]
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        if "for" in alert:
            assert DURATION.match(alert["for"]), alert
    alert_names = {alert["alert"] for alert in alerts}
    assert len(alert_names) == len(alerts)
    # The brief's minimum: not ready, feed stale, 5xx ratio, p99 latency.
    assert {
        "VoipRoomsReplicaNotReady",
        "VoipRoomsFeedStale",
        "VoipRoomsHigh5xxRatio",
        "VoipRoomsHighLatencyP99",
    } <= alert_names


def test_unit_tests_name_existing_alerts() -> None:
    tested = set(re.findall(r"alertname:\s*(\w+)", (RULES / "alerts_test.yaml").read_text()))
    alerts = {
        rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule
    }
    assert tested <= alerts, tested - alerts


def test_prometheusrule_wrapper_matches_the_rule_files() -> None:
    path = BASE / "prometheusrule.yaml"
    document = yaml.safe_load(path.read_text())
    # Structure of the monitoring.coreos.com/v1 CRD (no offline schema for it).
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["name"]
    assert set(document) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(document["spec"]) == {"groups"}
    assert document["spec"]["groups"] == rule_groups()
    assert path.read_text() == render_prometheusrule(), (
        "regenerate: .venv/bin/python -m tests.deploy.rules > " + str(path)
    )
