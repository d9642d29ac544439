"""Paths of the deploy/ tree and the external programs its tests run."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
RULES = DEPLOY / "prometheus"


def require_binary(name: str, hint: str) -> str:
    """The path of ``name`` (the venv's bin first, then PATH).

    Absent: the test skips, naming ``hint`` (how to install it), except under CI=true, where
    a missing tool is a broken CI setup and fails the test.
    """
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name, path=os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]))
    if found:
        return found
    message = f"{name} not found (install it: {hint})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)
