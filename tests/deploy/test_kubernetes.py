"""deploy/kubernetes/base: schema-valid manifests that agree with each other and the service."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from service.settings import SETTINGS
from tests.deploy.tools import BASE, require_binary

# Oldest Kubernetes the base supports (lifecycle.preStop.sleep is on by default from 1.30),
# and the newest schema kubernetes-validate ships (its default).
KUBERNETES_VERSIONS = ("1.30.0", None)

# Custom resources: no schema offline, so their structure is checked by the tests below.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("jetstream.nats.io/v1beta2", "Stream"),
}

MANIFESTS = sorted(path.name for path in BASE.glob("*.yaml") if path.name != "kustomization.yaml")


@cache
def documents(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc)


def resource(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for manifest in MANIFESTS
        for doc in documents(manifest)
        if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def kubernetes_validate(path: Path, version: str | None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kubernetes_validate", "--strict"]
    if version:
        command += ["--kubernetes-version", version]
    return subprocess.run(
        [*command, str(path)], capture_output=True, text=True, timeout=120, check=False
    )


def validated(result: subprocess.CompletedProcess[str], docs: tuple[dict[str, Any], ...]) -> None:
    """Each resource either passed its schema, or is a custom resource without one."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for doc in docs:
        ident = f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            assert f"Couldn't find schema for kind {doc['kind']}" in output, output
        else:
            assert re.search(rf"passed for resource {re.escape(ident)} against", output), output


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda v: v or "latest")
@pytest.mark.parametrize("name", MANIFESTS)
def test_kubernetes_validate_strict(name: str, version: str | None) -> None:
    validated(kubernetes_validate(BASE / name, version), documents(name))


def test_kubernetes_validate_strict_rejects_an_unknown_field(tmp_path: Path) -> None:
    deployment = resource("Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = kubernetes_validate(path, None)
    assert result.returncode != 0
    assert "'replica' was unexpected" in result.stdout + result.stderr


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == MANIFESTS
    files = {path.name for path in BASE.iterdir()} - {"kustomization.yaml"}
    assert files == set(MANIFESTS), "only manifests belong in the base directory"


def test_kustomize_build_renders_and_validates(tmp_path: Path) -> None:
    kubectl = require_binary(
        "kubectl",
        "kubectl >= 1.27 (the machine image ships one); kubectl kustomize renders the base",
    )
    build = subprocess.run(
        [kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert build.returncode == 0, build.stderr
    rendered = tuple(doc for doc in yaml.safe_load_all(build.stdout) if doc)
    expected = {(doc["kind"], doc["metadata"]["name"]) for n in MANIFESTS for doc in documents(n)}
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in rendered} == expected
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "voip-rooms", doc["kind"]
    path = tmp_path / "rendered.yaml"
    path.write_text(build.stdout)
    validated(kubernetes_validate(path, KUBERNETES_VERSIONS[0]), rendered)


# ---- the pieces agree with each other and with the service --------------------------------


def config() -> dict[str, str]:
    data: dict[str, str] = resource("ConfigMap", "voip-rooms")["data"]
    return data


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = resource("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec()["containers"]
    assert len(containers) == 1
    return containers[0]


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = resource("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_configmap_names_only_real_settings() -> None:
    known = {spec.env for spec in SETTINGS}
    assert set(config()) <= known, set(config()) - known
    assert all(isinstance(value, str) for value in config().values())
    env_from = container()["envFrom"]
    assert env_from == [{"configMapRef": {"name": "voip-rooms"}}]


def test_port_3000_everywhere() -> None:
    assert config()["VOIP_ROOMS_PORT"] == "3000"
    assert container()["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    service_ports = resource("Service")["spec"]["ports"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service_ports] == [
        ("http", 3000, "http")
    ]


def test_probes() -> None:
    c = container()
    startup, liveness, readiness = c["startupProbe"], c["livenessProbe"], c["readinessProbe"]
    assert startup["httpGet"] == {"path": "/readyz", "port": "http"}
    assert liveness["httpGet"] == {"path": "/livez", "port": "http"}
    assert readiness["httpGet"] == {"path": "/readyz", "port": "http"}
    # Room for a 1,000,000-room snapshot (~30 s) with a wide margin.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 240
    # Liveness must not kill a replica for one slow answer.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 20


def test_termination_grace_covers_prestop_drain_and_shutdown() -> None:
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(config()["VOIP_ROOMS_DRAIN_SECONDS"])
    shutdown = float(config()["VOIP_ROOMS_SHUTDOWN_TIMEOUT"])
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert pre_stop >= 1
    # Kubernetes counts the preStop hook inside the grace period; keep headroom for the final
    # checkpoint write and interpreter exit.
    assert grace >= pre_stop + drain + shutdown + 10, (grace, pre_stop, drain, shutdown)
    assert grace == 45, "update the arithmetic in deployment.yaml and README.md too"


def test_security_context() -> None:
    pod = pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001, "the image's USER"
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container()["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec()["automountServiceAccountToken"] is False


def test_resources_sized_for_a_million_rooms() -> None:
    resources = container()["resources"]
    gib = {"3Gi": 3, "4Gi": 4}
    assert gib[resources["requests"]["memory"]] >= 3
    assert gib[resources["limits"]["memory"]] >= gib[resources["requests"]["memory"]]
    assert resources["requests"]["cpu"], "the HPA's CPU utilization needs a CPU request"


def test_volumes_match_the_settings() -> None:
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    snapshot = mounts[config()["VOIP_ROOMS_SNAPSHOT"]]
    assert snapshot["readOnly"] is True
    claim = volumes[snapshot["name"]]["persistentVolumeClaim"]
    assert resource("PersistentVolumeClaim", claim["claimName"])
    # Checkpoints: one volume every replica writes and reads (the newest any replica wrote).
    checkpoints = mounts[config()["VOIP_ROOMS_CHECKPOINT_DIR"]]
    assert not checkpoints.get("readOnly", False)
    shared = volumes[checkpoints["name"]]["persistentVolumeClaim"]
    assert not shared.get("readOnly", False)
    pvc = resource("PersistentVolumeClaim", shared["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert shared["claimName"] != claim["claimName"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_selectors_match_the_pods() -> None:
    labels = pod_labels()
    deployment = resource("Deployment")
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        resource("Service")["spec"]["selector"],
        resource("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        resource("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items(), selector


def test_hpa_scales_the_deployment() -> None:
    hpa, deployment = resource("HorizontalPodAutoscaler"), resource("Deployment")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] == 3
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def test_network_policy_ports() -> None:
    spec = resource("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    ingress = [(p["port"], p["protocol"]) for rule in spec["ingress"] for p in rule["ports"]]
    assert ingress == [(3000, "TCP")]
    egress = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress == {(4222, "TCP"), (53, "UDP"), (53, "TCP")}
    feed = urlsplit(config()["VOIP_ROOMS_FEED"])
    assert (feed.scheme, feed.port) == ("nats", 4222)


def test_servicemonitor_structure() -> None:
    # monitoring.coreos.com/v1 has no offline schema: check what Prometheus Operator needs.
    monitor, service = resource("ServiceMonitor"), resource("Service")
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    port_names = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", endpoint["interval"])
        assert int(endpoint["scrapeTimeout"][:-1]) <= int(endpoint["interval"][:-1])
    # The rules and dashboard select job="voip-rooms": the Service's name becomes the job label.
    assert service["metadata"]["name"] == "voip-rooms"


def test_feed_stream_name_matches_the_stream_resource() -> None:
    stream = resource("Stream")
    query = parse_qs(urlsplit(config()["VOIP_ROOMS_FEED"]).query)
    assert query["stream"] == [stream["spec"]["name"]]
