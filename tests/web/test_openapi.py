"""The OpenAPI document against the running service: schemathesis finds no 5xx and no answer the
document does not describe (status, content type, headers, body schema)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.web import openapi
from tests.conftest import MANAGER, standard_rooms, standard_users
from tests.factories import write_snapshot
from tests.net import wait_port_file

SCHEMA = schemathesis.openapi.from_dict(openapi.document())
SCHEMA.config.generation.update(max_examples=100, deterministic=True)
SCHEMA.config.phases.update(phases=["examples", "coverage", "fuzzing"])
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTH = {"X-User-Id": MANAGER[0], "X-Auth-Token": MANAGER[1]}
ROOT = Path(__file__).parent.parent.parent


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``voip-rooms serve`` in a subprocess on port 0, with the rate limit on."""
    snapshot = write_snapshot(
        tmp_path_factory.mktemp("openapi") / "snapshot", standard_rooms(), standard_users()
    )
    port_file = snapshot.parent / "port"
    argv = [sys.executable, "-m", "service", "serve", "--snapshot", str(snapshot)]
    argv += ["--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)]
    argv += ["--rate-limit", "400/1000", "--log-level", "error", "--drain-seconds", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIP_ROOMS_")}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{wait_port_file(port_file, proc)}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_document_is_served(base_url: str) -> None:
    resp = requests.get(base_url + "/openapi.json", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == openapi.document()


def test_document_names_every_parameter() -> None:
    from service.core.query import _KNOWN_KEYS, SORTABLE_FIELDS

    operation = openapi.document()["paths"]["/api/v1/voip/rooms"]["get"]
    names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert names >= _KNOWN_KEYS
    sort = next(p for p in operation["parameters"] if p["name"] == "sort")
    assert sort["content"]["application/json"]["schema"]["propertyNames"]["enum"] == list(
        SORTABLE_FIELDS
    )


_session = requests.Session()


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: Any, base_url: str) -> None:
    if case.path == "/api/v1/voip/rooms" and "X-User-Id" in (case.headers or {}):
        # A user allowed to list rooms, so that the parameters are exercised; the cases
        # generated without the auth headers still meet the 401 answer.
        case.headers = {**case.headers, **AUTH}
    case.call_and_validate(base_url=base_url, session=_session, checks=CHECKS)
