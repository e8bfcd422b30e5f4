"""Fresh virtual environments with supaworker installed from its built wheel, outside this
repository: WITHOUT extras, as `pip install supaworker` does on a VPS, and with the `[local]`
extra, as a developer installs it for `supaworker dev` and `supaworker demo`. Built once per
test session."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from supaworker_local import tools
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


def build_wheel(out: Path, source: Path = ROOT) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("supaworker-*.whl")
    return wheel


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


def _install(base: Path, requirement: str, wheel: Path) -> Installed:
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", requirement],
        check=True,
        capture_output=True,
    )
    return Installed(venv, wheel)


@pytest.fixture(scope="session")
def plain_install(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Installed]:
    yield _install(tmp_path_factory.mktemp("plain-install"), str(wheel), wheel)


@pytest.fixture(scope="session")
def local_install(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Installed]:
    """`pip install 'supaworker[local]'` from the wheel."""
    yield _install(tmp_path_factory.mktemp("local-install"), f"{wheel}[local]", wheel)


@pytest.fixture(scope="session")
def seeded_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-user tool cache (SUPAWORKER_TOOLS_DIR) holding this repository's pinned npm
    tools, so that each stack does not download them again. The download itself, into an
    empty cache, is tested once (test_local_install.py)."""
    base = tmp_path_factory.mktemp("tools")
    with mock.patch.dict(os.environ, {"SUPAWORKER_TOOLS_DIR": str(base)}):
        target = tools.cache_dir()
    target.mkdir(parents=True)
    (target / "node_modules").symlink_to(ROOT / "node_modules")
    return base


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports() -> list[str]:
    """`--db-port N --api-port N --postgrest-port N` for a stack of its own, on ports free to
    listen on (and the REST port + 1, PostgREST's admin port), below the ephemeral range
    (32768+) where outgoing connections could take one between this check and the bind."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < 3:
        port = rng.randrange(20000, 32000)
        taken = {q for p in ports for q in (p, p + 1)}
        if not {port, port + 1} & taken and _bindable(port) and _bindable(port + 1):
            ports.append(port)
    db, api, rest = ports
    return ["--db-port", str(db), "--api-port", str(api), "--postgrest-port", str(rest)]


# What the machine itself needs to reach package registries (a TLS-inspecting proxy's CA,
# proxies): a VPS shell behind such a proxy has them too. Without them a first `dev up` on a
# clean Deno cache cannot download the functions' npm packages.
MACHINE_NETWORK_ENV = (
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a VPS shell: nothing of this repository's venv or checkout."""
    names = ("PATH", "HOME", "LANG", "TMPDIR", *MACHINE_NETWORK_ENV)
    keep = {k: v for k, v in os.environ.items() if k in names}
    return {**keep, **extra}
