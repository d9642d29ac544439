"""deploy/grafana/voip-rooms.json: an importable dashboard whose panels do not collide, and
its ConfigMap in the kustomize base, which Grafana's dashboard sidecar provisions."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.deploy.dashboard import CONFIGMAP, DASHBOARD, KEY, render_configmap
from tests.deploy.tools import BASE


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_identity_and_variables() -> None:
    board = dashboard()
    assert board["uid"] == "voip-rooms"
    assert board["title"] == "voip-rooms"
    assert board["id"] is None, "an exported id breaks import into another Grafana"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "pod"} <= set(variables)


def test_panels_have_unique_ids_queries_and_no_overlap() -> None:
    panels = dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for y in range(grid["y"], grid["y"] + grid["h"]):
            for x in range(grid["x"], grid["x"] + grid["w"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert 'job="voip-rooms"' in target["expr"], panel["title"]
            assert 'namespace="$namespace"' in target["expr"], panel["title"]


def test_configmap_holds_the_dashboard_for_the_grafana_sidecar() -> None:
    path = BASE / CONFIGMAP
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == "v1"
    assert document["kind"] == "ConfigMap"
    # kube-prometheus-stack's sidecar provisions every ConfigMap with this label and value.
    assert document["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(document["data"]) == {KEY}
    assert json.loads(document["data"][KEY]) == dashboard()
    assert document["data"][KEY] == DASHBOARD.read_text()
    assert path.read_text() == render_configmap(), (
        "regenerate: .venv/bin/python -m tests.deploy.dashboard > " + str(path)
    )
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert CONFIGMAP in kustomization["resources"]
