"""`supaworker run` takes exactly one of --handler, --handler-command and --handler-url (or
their variables); every wrong choice is one line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Never contacted: every case below is refused before the worker registers.
ENV = {
    "PATH": "/usr/bin:/bin",
    "SUPABASE_URL": "http://127.0.0.1:9",
    "SUPABASE_SERVICE_ROLE_KEY": "not-a-real-key",
}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            [],
            {},
            "No handler: pass --handler MODULE:FUNCTION, --handler-command CMD or "
            "--handler-url URL",
        ),
        (
            ["--handler", "tests.handlers:handle", "--handler-url", "http://127.0.0.1:1/p"],
            {},
            "Give exactly one handler, got --handler and --handler-url (flags or their "
            "SUPAWORKER_HANDLER* environment variables)",
        ),
        (
            ["--handler-url", "http://127.0.0.1:1/p"],
            {"SUPAWORKER_HANDLER_COMMAND": "node worker.mjs"},
            "Give exactly one handler, got --handler-command and --handler-url (flags or "
            "their SUPAWORKER_HANDLER* environment variables)",
        ),
        (
            ["--handler-url", "ftp://example.com/x"],
            {},
            "--handler-url must be an http:// or https:// URL, got 'ftp://example.com/x'",
        ),
        (
            ["--handler-command", 'node "worker.mjs'],
            {},
            "--handler-command cannot be parsed: No closing quotation",
        ),
        (
            ["--handler-command", "/nonexistent/handler --flag"],
            {},
            "--handler-command '/nonexistent/handler --flag' cannot be started: [Errno 2] "
            "No such file or directory: '/nonexistent/handler'",
        ),
    ],
)
def test_handler_choice_errors_are_one_line_and_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supaworker.cli.main", "run", *args],
        cwd=ROOT,
        env={**ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"supaworker: error: {message}"]
