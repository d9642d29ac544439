"""The Grafana dashboard's ConfigMap in the kustomize base (the Grafana sidecar provisions it).

Regenerate it after editing deploy/grafana/voip-rooms.json:
    .venv/bin/python -m tests.deploy.dashboard > deploy/kubernetes/base/grafana-dashboard.yaml
"""

from __future__ import annotations

import sys

import yaml

from tests.deploy.rules import Dumper
from tests.deploy.tools import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "voip-rooms.json"
CONFIGMAP = "grafana-dashboard.yaml"
KEY = "voip-rooms.json"

HEADER = """\
# deploy/grafana/voip-rooms.json as a ConfigMap that Grafana's dashboard sidecar (the
# kube-prometheus-stack default) finds by its grafana_dashboard label and provisions. Do not
# edit by hand: regenerate with the command in deploy/README.md; tests/deploy checks the two
# files agree.
"""


def render_configmap() -> str:
    """The text of deploy/kubernetes/base/grafana-dashboard.yaml."""
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "voip-rooms-dashboard",
            "labels": {"app.kubernetes.io/name": "voip-rooms", "grafana_dashboard": "1"},
        },
        "data": {KEY: DASHBOARD.read_text()},
    }
    return HEADER + yaml.dump(document, Dumper=Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_configmap())
