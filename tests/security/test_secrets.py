"""Security finding S2 and the log check of the review: no key or token in logs or errors.

A worker ran a handler whose exception quotes a Storage signed URL (a JWT) and the service
key. Before the fix the JSON log's `error` field and the job's `error_message` (which the
document's owner reads through RLS and Realtime) carried both verbatim; only the log
`message` was redacted. Then every log the worker and the stack wrote during the test
session is searched for the service key and the `sb_secret_` key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus
from supaworker_local.config import StackConfig
from tests.security.handlers import SIGNED_URL_TOKEN
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack


def test_handler_errors_quoting_secrets_are_redacted_in_the_job_and_the_logs(
    stack: StackConfig,
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
) -> None:
    name = unique("secrets")
    (job,) = submit(queue_name=name, max_attempts=1)
    worker = start_worker("--queue", name, handler="tests.security.handlers:leak_secrets")
    wait_for(lambda: queue.get(job.id).status == JobStatus.FAILED, 60, "the job to fail")
    assert worker.stop() == 0

    error = queue.get(job.id).error_message or ""
    # The owner of the document can read this column: no secret, but the useful part stays.
    assert stack.service_role_key not in error and SIGNED_URL_TOKEN not in error
    assert "[redacted]" in error and "400 Bad Request" in error and "storage/v1/object" in error

    log = worker.output()
    failed = [json.loads(ln) for ln in log.splitlines() if '"action": "job_failed"' in ln]
    assert len(failed) == 1 and "[redacted]" in failed[0]["error"]
    assert stack.service_role_key not in log and SIGNED_URL_TOKEN not in log


def test_stack_logs_hold_no_key(stack: StackConfig) -> None:
    """Gateway, PostgREST, PostgreSQL and edge-function logs of this stack's whole life (all
    test sessions that used it): no service key, secret key or JWT secret."""
    logs = sorted((Path(stack.state_dir) / "log").glob("*.log"))
    assert logs, "the stack writes its logs under <state>/log"
    secrets = (stack.service_role_key, stack.secret_key, stack.jwt_secret)
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{path.name} contains a secret"
