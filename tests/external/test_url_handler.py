"""Issue 17: `supaworker run --handler-url`, an HTTP service as the handler (a real aiohttp
server on 127.0.0.1, tests/external/conftest.py), against the real stack."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus
from tests.external.conftest import Service
from tests.external.test_command_handler import final
from tests.worker_fixtures import WorkerProcess

pytestmark = pytest.mark.stack

Start = Callable[..., WorkerProcess]
Submit = Callable[..., list[Job]]

TOKEN = "handler-token-5e1f0c"
JOB_FIELDS = {
    "id",
    "user_document_id",
    "user_id",
    "queue",
    "payload",
    "attempt",
    "max_attempts",
    "priority",
    "created_at",
}


def start_url_worker(
    start_worker: Start, url: str, queue_name: str, *args: str, **kw: Any
) -> WorkerProcess:
    return start_worker("--handler-url", url, "--queue", queue_name, *args, handler=None, **kw)


def test_a_2xx_body_is_the_result_and_the_request_carries_the_job_and_token(
    queue: QueueClient,
    start_worker: Start,
    submit: Submit,
    unique: Callable[[str], str],
    service: Service,
) -> None:
    name = unique("q")
    (ok,) = submit(queue_name=name, payload={"mode": "ok"})
    (empty,) = submit(queue_name=name, payload={"mode": "empty"})
    (text,) = submit(queue_name=name, payload={"mode": "text"}, max_attempts=5)
    worker = start_url_worker(
        start_worker, service.url, name, "--burst", env={"SUPAWORKER_HANDLER_TOKEN": TOKEN}
    )
    assert worker.proc.wait(60) == 0, worker.output()
    row = queue.get(ok.id)
    assert row.status == JobStatus.COMPLETED
    assert row.result == {"doc": str(ok.user_document_id), "attempt": row.attempt}
    row = queue.get(empty.id)
    assert (row.status, row.result) == (JobStatus.COMPLETED, None)
    # A 2xx whose body is not JSON cannot be stored as the result: failed, not retried.
    row = queue.get(text.id)
    assert (row.status, row.retry_count) == (JobStatus.FAILED, 1)
    assert "not JSON" in (row.error_message or "")
    (request,) = service.for_job(ok.id)
    assert request.authorization == f"Bearer {TOKEN}"
    assert set(request.body) == {"job"} and request.job.keys() >= JOB_FIELDS
    assert request.job["payload"] == {"mode": "ok"} and request.job["queue"] == name
    assert TOKEN not in worker.output()


def test_status_mapping_retries_408_425_429_5xx_and_fails_other_4xx_permanently(
    queue: QueueClient,
    start_worker: Start,
    submit: Submit,
    unique: Callable[[str], str],
    service: Service,
) -> None:
    name = unique("q")
    retried = {
        s: submit(queue_name=name, payload={"mode": "status", "status": s})
        for s in (408, 425, 429, 500, 502, 503)
    }
    permanent = {
        s: submit(
            queue_name=name,
            payload={"mode": "status", "status": s, "body": f"bad document ({s})"},
            max_attempts=5,
        )
        for s in (400, 401, 404, 409, 422)
    }
    (redirect,) = submit(
        queue_name=name,
        payload={"mode": "status", "status": 302, "headers": {"Location": "/elsewhere"}},
        max_attempts=5,
    )
    worker = start_url_worker(start_worker, service.url, name, "--concurrency", "12")
    for status, (job,) in retried.items():
        row = final(queue, job, 40)
        assert (row.status, row.retry_count) == (JobStatus.COMPLETED, 1), (status, row)
        (retry,) = [e for e in queue.history(job.id) if e.event == "retry_scheduled"]
        assert f"answered {status}" in (retry.message or ""), (status, retry)
    for status, (job,) in permanent.items():
        row = final(queue, job, 40)
        assert (row.status, row.retry_count) == (JobStatus.FAILED, 1), (status, row)
        assert row.error_message == f"bad document ({status})"  # the body's text, as is
        assert len(service.for_job(job.id)) == 1
    row = final(queue, redirect, 40)
    assert (row.status, row.retry_count) == (JobStatus.FAILED, 1), row
    assert "302" in (row.error_message or "")
    worker.stop()


def test_retry_after_sets_the_delay_before_the_next_attempt(
    queue: QueueClient,
    start_worker: Start,
    submit: Submit,
    unique: Callable[[str], str],
    service: Service,
) -> None:
    name = unique("q")
    (job,) = submit(
        queue_name=name,
        payload={"mode": "status", "status": 503, "headers": {"Retry-After": "4"}},
    )
    worker = start_url_worker(start_worker, service.url, name)
    row = final(queue, job, 40)
    worker.stop()
    assert (row.status, row.retry_count) == (JobStatus.COMPLETED, 1), row
    first, second = service.for_job(job.id)
    # The queue's own backoff before a first retry is 1-2 s; Retry-After said 4.
    assert 3.9 <= second.at - first.at < 7, second.at - first.at


def test_a_refused_connection_fails_the_attempt_and_retries(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "ok"}, max_attempts=2)
    worker = start_url_worker(start_worker, f"http://127.0.0.1:{port}/process", name)
    row = final(queue, job, 40)
    worker.stop()
    assert (row.status, row.retry_count) == (JobStatus.FAILED, 2), row
    assert "ConnectError" in (row.error_message or "")
    assert [e.event for e in queue.history(job.id)].count("retry_scheduled") == 1


def test_a_timeout_fails_the_attempt_and_retries(
    queue: QueueClient,
    start_worker: Start,
    submit: Submit,
    unique: Callable[[str], str],
    service: Service,
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "slow", "seconds": 5}, timeout_seconds=1)
    worker = start_url_worker(start_worker, service.url, name)
    row = final(queue, job, 40)
    worker.stop()
    assert (row.status, row.retry_count) == (JobStatus.COMPLETED, 1), row
    (retry,) = [e for e in queue.history(job.id) if e.event == "retry_scheduled"]
    assert retry.message == "Timed out after 1s"
