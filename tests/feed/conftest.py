"""Feed fixtures: a real nats-server with JetStream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.feed.support import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()
