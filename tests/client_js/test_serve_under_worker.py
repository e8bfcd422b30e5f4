"""The TypeScript client's `serve(handler)` under a real `supaworker run --handler-command`:
the command-protocol scenarios of tests/external/test_command_handler.py, with a child written
with `serve()` (clients/js/test/fixtures/command_child.mjs) instead of the plain protocol one."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.external import test_command_handler as protocol
from tests.external.test_command_handler import (
    test_cancel_of_a_running_job_reaches_the_child_which_keeps_running,
    test_completes_with_the_childs_result_and_logs_its_stderr,
    test_jobs_up_to_the_concurrency_run_at_once_in_the_one_child,
    test_permanent_error_fails_after_one_attempt_with_the_childs_message,
    test_progress_is_visible_on_the_row_while_the_job_runs,
    test_retryable_error_completes_on_the_second_attempt,
)

pytestmark = pytest.mark.stack

SERVE_CHILD = ROOT / "clients" / "js" / "test" / "fixtures" / "command_child.mjs"

__all__ = [
    "test_cancel_of_a_running_job_reaches_the_child_which_keeps_running",
    "test_completes_with_the_childs_result_and_logs_its_stderr",
    "test_jobs_up_to_the_concurrency_run_at_once_in_the_one_child",
    "test_permanent_error_fails_after_one_attempt_with_the_childs_message",
    "test_progress_is_visible_on_the_row_while_the_job_runs",
    "test_retryable_error_completes_on_the_second_attempt",
]


@pytest.fixture(autouse=True)
def _serve_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "COMMAND", f"node {SERVE_CHILD}")
