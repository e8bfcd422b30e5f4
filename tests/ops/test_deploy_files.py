"""deploy/: the systemd unit must run as written on a fresh VPS (issue 19: it named a
`supaworker` user that nothing created, so `systemctl start` failed with 217/USER)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supaworker.config import WorkerSettings
from tests.conftest import ROOT

UNIT = ROOT / "deploy" / "supaworker.service"
GUIDE = ROOT / "deploy" / "README.md"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_runs_as_a_user_that_exists_or_is_created() -> None:
    service = _service()
    dynamic = service.get("DynamicUser", "no").lower() in ("yes", "true", "1", "on")
    user = service.get("User")
    if dynamic:
        # A dynamic user can write only where the unit says: the state folder is $HOME.
        state = service.get("StateDirectory")
        assert state, "DynamicUser without a StateDirectory leaves the worker nowhere to write"
        assert f"HOME=/var/lib/{state}" in UNIT.read_text()
    else:
        assert user, "no User=: the worker would run as root"
        created = re.search(rf"useradd --system\b[^\n`]*\b{re.escape(user)}\b", GUIDE.read_text())
        assert created, f"User={user}, but deploy/README.md has no `useradd --system ... {user}`"


def test_the_unit_stops_after_the_worker_drains() -> None:
    service = _service()
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > WorkerSettings().shutdown_timeout
    assert service["RestartPreventExitStatus"] == "2"  # configuration errors are final
    assert service["EnvironmentFile"] == "/etc/supaworker.env"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks every directive and that ExecStart is executable, so
    the example paths are pointed at this checkout's own `supaworker` first."""
    executable = Path(sys.executable).with_name("supaworker")
    text = UNIT.read_text()
    assert "ExecStart=/opt/myapp/.venv/bin/supaworker run " in text
    text = text.replace("/opt/myapp/.venv/bin/supaworker", str(executable))
    text = text.replace("WorkingDirectory=/opt/myapp", f"WorkingDirectory={ROOT}")
    unit = tmp_path / "supaworker.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    # Unknown directives are warnings on stderr with exit 0: none is allowed either.
    assert result.stderr.strip() == "", result.stderr
