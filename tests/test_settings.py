"""Settings: flags win over VOIP_ROOMS_* variables, which win over defaults; README stays true."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser
from service.settings import SETTINGS, RateLimit, Settings, parse_settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_defaults() -> None:
    assert parse_settings([], {}) == Settings()
    assert Settings().host == "0.0.0.0"
    assert Settings().port == 3000


def test_environment_then_flags() -> None:
    env = {
        "VOIP_ROOMS_PORT": "8080",
        "VOIP_ROOMS_SNAPSHOT": "/data",
        "VOIP_ROOMS_RATE_LIMIT": "5/1000",
    }
    from_env = parse_settings([], env)
    assert from_env.port == 8080
    assert from_env.snapshot == Path("/data")
    assert from_env.rate_limit == RateLimit(5, 1000)
    assert parse_settings(["--port", "9090"], env).port == 9090


@pytest.mark.parametrize(
    "argv",
    [["--port", "x"], ["--rate-limit", "10"], ["--log-level", "loud"], ["--max-count", "-1"]],
)
def test_bad_flags_exit(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(argv, {})


def test_bad_environment_exits() -> None:
    with pytest.raises(SystemExit):
        parse_settings([], {"VOIP_ROOMS_ALLOW_INFINITE_COUNT": "maybe"})


def test_readme_lists_every_setting() -> None:
    for spec in SETTINGS:
        assert f"`{spec.flag}`" in README, spec.flag
        assert f"`{spec.env}`" in README, spec.env


def test_readme_lists_every_command() -> None:
    import argparse

    (group,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in group.choices:
        assert f"voip-rooms {name}" in README, name


def test_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for spec in SETTINGS:
        assert spec.flag in out
        assert spec.env in out
