"""Fixtures of the JavaScript client's tests: Node, and the package built by tsc."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT

TSC = ROOT / "node_modules" / ".bin" / "tsc"


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("Node.js is required for the JavaScript client's tests (scripts/setup)")
    return path


@pytest.fixture(scope="session")
def js_client_built(node: str) -> None:
    """clients/js/dist/ from the current sources (what `import "supaworker"` loads in Node)."""
    if not TSC.exists():
        pytest.fail("node_modules/.bin/tsc is missing: run `npm ci` (scripts/setup does)")
    result = subprocess.run(
        [str(TSC), "-p", "clients/js"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
