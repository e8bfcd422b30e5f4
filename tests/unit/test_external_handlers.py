"""The pieces of --handler-command / --handler-url that need no process or server: Retry-After
parsing, the worker carrying a handler's delay to fail_job, and what the adapters refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from supaworker import Job
from supaworker.exceptions import ConfigurationError, HandlerFailed, PermanentHandlerFailed
from supaworker.testing import InMemoryTransport
from supaworker.worker.command_handler import CommandHandler
from supaworker.worker.url_handler import UrlHandler, retry_after
from tests.unit.worker_doubles import enqueue, worker_on

NOW = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Tue, 01 Dec 2026 09:00:30 GMT", 30.0),
        ("Tue, 01 Dec 2026 08:59:00 GMT", 0.0),  # in the past: at once
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(
    header: str | None, seconds: float | None
) -> None:
    assert retry_after(header, now=NOW) == seconds


async def test_a_handlers_retry_after_becomes_the_retry_delay() -> None:
    async def handler(job: Job) -> None:
        raise HandlerFailed("busy", retry_after=600)

    fake = InMemoryTransport()
    (job_id,) = enqueue(fake, p_max_attempts=5)
    worker = worker_on(fake, handler, burst=True)
    before = fake.clock()
    await worker.run()
    job = fake.jobs[job_id]
    assert (job["status"], job["error_message"]) == ("pending", "busy")  # as given, no frames
    assert job["run_at"] - before >= timedelta(seconds=600)


async def test_a_permanent_handler_failure_is_not_retried() -> None:
    async def handler(job: Job) -> None:
        raise PermanentHandlerFailed("bad document")

    fake = InMemoryTransport()
    (job_id,) = enqueue(fake, p_max_attempts=5)
    await worker_on(fake, handler, burst=True).run()
    job = fake.jobs[job_id]
    assert (job["status"], job["retry_count"], job["error_message"]) == (
        "failed",
        1,
        "bad document",
    )


@pytest.mark.parametrize("url", ["ftp://example.com/x", "/internal/process", "http://"])
def test_url_handler_refuses_what_is_not_an_http_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="must be an http:// or https:// URL"):
        UrlHandler(url)


@pytest.mark.parametrize(("command", "message"), [("", "is empty"), ("'", "cannot be parsed")])
def test_command_handler_refuses_an_unusable_command(command: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CommandHandler(command)
