"""Checkpoint encoding: dates written back as Extended JSON dates, read back as dates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from service.core import ejson
from service.feed.checkpoint import CheckpointView, dumps_line, encode, write_checkpoint
from service.feed.snapshot import read_jsonl


def test_dates_round_trip_as_dates(tmp_path: Path) -> None:
    doc: dict[str, Any] = ejson.decode(
        {
            "_id": "r1",
            "ts": {"$date": 1_700_000_000_000},
            "v": {"lastMessageTs": {"$date": "2024-01-02T03:04:05.006Z"}},
            "list": [{"$date": 0}, "2024-01-02T03:04:05.006Z", 1, 2.5, None, True],
            "n": {"$numberLong": "9007199254740993"},
        }
    )
    line = dumps_line(doc)
    assert line == orjson.dumps(encode(doc)) + b"\n"
    assert orjson.loads(line)["ts"] == {"$date": "2023-11-14T22:13:20.000Z"}
    assert orjson.loads(line)["list"][1] == "2024-01-02T03:04:05.006Z"  # a plain string stays one

    view = CheckpointView(3, lambda: [doc], [], [])
    path = write_checkpoint(view, tmp_path)
    [(_, back)] = list(read_jsonl(path / "rooms.jsonl.gz"))
    assert back == doc
    assert type(back["ts"]) is ejson.Date
    assert type(back["v"]["lastMessageTs"]) is ejson.Date
    assert type(back["list"][0]) is ejson.Date
    assert type(back["list"][1]) is str
    assert orjson.loads((path / "manifest.json").read_bytes())["position"] == 3
