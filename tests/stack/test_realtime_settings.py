"""`supaworker dev up`'s Realtime settings (plan, limits, idle back-off): where they come from
and that a bad one stops `up` before anything starts. No processes are started here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from supaworker_local import stack as dev_stack

CLI = [sys.executable, "-m", "supaworker.cli.main"]


def _saved(state: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((state / "stack.json").read_text())
    return data


def test_options_then_environment_then_stack_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    config = dev_stack.load_or_create_config(state)
    assert (config.realtime_plan, config.realtime_limits, config.realtime_idle_multiplier) == (
        "pro",
        {},
        1,
    )
    monkeypatch.setenv("SUPAWORKER_REALTIME_PLAN", "free")
    monkeypatch.setenv("SUPAWORKER_REALTIME_LIMITS", "max_events_per_second=7")
    dev_stack.load_or_create_config(
        state, {"realtime_limits": {"max_concurrent_users": 3}, "realtime_idle_multiplier": 4}
    )
    assert _saved(state)["realtime_plan"] == "free"
    assert _saved(state)["realtime_limits"] == {
        "max_events_per_second": 7,
        "max_concurrent_users": 3,
    }
    assert _saved(state)["realtime_idle_multiplier"] == 4
    monkeypatch.delenv("SUPAWORKER_REALTIME_PLAN")
    monkeypatch.delenv("SUPAWORKER_REALTIME_LIMITS")
    dev_stack.load_or_create_config(state, {"realtime_plan": "off"})
    assert _saved(state)["realtime_plan"] == "off"  # an option wins; the rest is kept
    assert _saved(state)["realtime_limits"] == {
        "max_events_per_second": 7,
        "max_concurrent_users": 3,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--realtime-plan", "platinum"], "unknown Realtime plan 'platinum'"),
        (["--realtime-limit", "max_messages=3"], "unknown Realtime limit(s) max_messages"),
        (["--realtime-limit", "max_events_per_second"], "expected NAME=NUMBER"),
    ],
)
def test_a_bad_setting_stops_up_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    state = tmp_path / "state"
    result = subprocess.run(
        [*CLI, "dev", "up", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join((result.stdout + result.stderr).split())
    assert not (state / "stack.json").exists()
