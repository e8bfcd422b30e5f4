"""A fresh virtual environment with supaworker installed from its built wheel, WITHOUT extras,
as `pip install supaworker` does on a VPS. Built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT


@dataclass
class Installed:
    venv: Path
    wheel: Path

    @property
    def supaworker(self) -> str:
        return str(self.venv / "bin" / "supaworker")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("supaworker-*.whl")
    return wheel


@pytest.fixture(scope="session")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("plain-install")
    wheel = build_wheel(base / "dist")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
    )
    yield Installed(venv, wheel)


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a VPS shell: nothing of this repository's venv or checkout."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **extra}
