"""The rule groups of deploy/prometheus, and their PrometheusRule wrapper in the kustomize base.

Regenerate the wrapper after editing a rule file:
    .venv/bin/python -m tests.deploy.rules > deploy/kubernetes/base/prometheusrule.yaml
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from tests.deploy.tools import RULES

RULE_FILES = ("recording.yaml", "alerts.yaml")

HEADER = """\
# Prometheus Operator wrapper of deploy/prometheus/recording.yaml + alerts.yaml (same groups,
# in that order). Do not edit by hand: regenerate with the command in deploy/README.md;
# tests/deploy checks the three files agree. Your Prometheus must select it
# (ruleSelector, often a `release: <name>` label: add it in an overlay).
"""


def rule_groups() -> list[dict[str, Any]]:
    """Every group of the rule files, recording rules first."""
    groups: list[dict[str, Any]] = []
    for name in RULE_FILES:
        groups.extend(yaml.safe_load((RULES / name).read_text())["groups"])
    return groups


class Dumper(yaml.SafeDumper):
    """YAML as the generated manifests are written: multi-line strings as literal blocks."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _string)


def render_prometheusrule() -> str:
    """The text of deploy/kubernetes/base/prometheusrule.yaml."""
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "voip-rooms", "labels": {"app.kubernetes.io/name": "voip-rooms"}},
        "spec": {"groups": rule_groups()},
    }
    return HEADER + yaml.dump(document, Dumper=Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_prometheusrule())
