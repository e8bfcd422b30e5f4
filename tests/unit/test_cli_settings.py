"""`supaworker run` builds one WorkerSettings: flags over the environment over the .env file.

These go through the real command line (typer parses the arguments), with the worker itself
replaced by a function that records the settings it would have run with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from supaworker.cli import run as run_command
from supaworker.cli.main import build_app
from supaworker.config import WorkerSettings

CONNECTION = {"SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "k"}


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[WorkerSettings]:
    seen: list[WorkerSettings] = []

    async def serve(settings: WorkerSettings, handler: Any) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(run_command, "_serve", serve)
    monkeypatch.chdir(tmp_path)  # no stray ./.env
    for name in [n for n in __import__("os").environ if n.startswith("SUPAWORKER_")]:
        monkeypatch.delenv(name)
    return seen


def invoke(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(build_app("run"), ["run", *args], env={**CONNECTION, **env})


def test_a_comma_separated_queue_variable_is_several_queues(
    captured: list[WorkerSettings],
) -> None:
    result = invoke(["--handler", "json:dumps"], {"SUPAWORKER_QUEUES": "ocr,pdf"})
    assert result.exit_code == 0, result.output
    assert captured[0].queues == ["ocr", "pdf"]


def test_flags_win_over_the_environment(captured: list[WorkerSettings]) -> None:
    result = invoke(
        ["--handler", "json:dumps", "--queue", "a", "--queue", "b", "--concurrency", "3"],
        {"SUPAWORKER_QUEUES": "ocr", "SUPAWORKER_CONCURRENCY": "9"},
    )
    assert result.exit_code == 0, result.output
    assert (captured[0].queues, captured[0].concurrency) == (["a", "b"], 3)


def test_the_env_file_is_read_for_every_setting(
    captured: list[WorkerSettings], tmp_path: Path
) -> None:
    env_file = tmp_path / "worker.env"
    env_file.write_text(
        "SUPAWORKER_HANDLER=json:dumps\nSUPAWORKER_QUEUES=ocr,pdf\n"
        "SUPAWORKER_SHUTDOWN_TIMEOUT=7\nSUPAWORKER_PREFETCH=3\n"
    )
    result = invoke(["--env-file", str(env_file)], {})
    assert result.exit_code == 0, result.output
    settings = captured[0]
    assert (settings.handler, settings.queues) == ("json:dumps", ["ocr", "pdf"])
    assert (settings.shutdown_timeout, settings.prefetch) == (7.0, 3)


def test_a_missing_env_file_is_one_line_and_exit_2(captured: list[WorkerSettings]) -> None:
    result = invoke(["--handler", "json:dumps", "--env-file", "nope.env"], {})
    assert result.exit_code == 2
    assert "--env-file nope.env does not exist" in result.output
    assert captured == []


def test_each_option_names_its_variable_once_in_help() -> None:
    result = CliRunner().invoke(build_app("run"), ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # help lines wrap anywhere
    for variable in ("SUPAWORKER_QUEUES", "SUPAWORKER_HANDLER", "SUPAWORKER_CONCURRENCY"):
        assert text.count(f"[env: {variable}]") == 1, variable


def test_the_http_port_listens_on_loopback_unless_told(captured: list[WorkerSettings]) -> None:
    # Issue 19: 0.0.0.0 put /metrics and /internal/process on a VPS's public address.
    result = invoke(["--handler", "json:dumps", "--http-port", "9464"], {})
    assert result.exit_code == 0, result.output
    assert captured[0].http_host == "127.0.0.1"
    result = invoke(["--handler", "json:dumps"], {"SUPAWORKER_HTTP_HOST": "0.0.0.0"})
    assert result.exit_code == 0, result.output
    assert captured[1].http_host == "0.0.0.0"
    help_text = CliRunner().invoke(build_app("run"), ["run", "--help"], env={"COLUMNS": "200"})
    assert "(127.0.0.1;" in help_text.output
