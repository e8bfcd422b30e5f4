"""The pieces of --handler-command / --handler-url that need no process or server: Retry-After
parsing, the worker carrying a handler's delay to fail_job, and what the adapters refuse."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from supaworker import Job, JobContext
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


async def test_a_job_answered_just_before_its_cancel_sends_no_cancel() -> None:
    # A child that reads its stdin and never writes: only the handler's own state matters.
    silent = f"{sys.executable} -c 'import sys; sys.stdin.read()'"
    async with CommandHandler(silent, cancel_grace=0.2) as handler:
        child = handler._child
        assert child is not None
        job = Job.model_validate(
            {"id": uuid.uuid4(), "user_document_id": uuid.uuid4(), "status": "processing"}
        )
        ctx = JobContext(job=job, worker_id="w1", logger=logging.getLogger("test"))
        task = asyncio.create_task(handler(job, ctx))
        while str(job.id) not in child.jobs:
            await asyncio.sleep(0.01)
        # The answer lands and the job's timeout fires in the same turn of the loop.
        child.jobs[str(job.id)].answer.set_result({"done": True})
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert child.cancelling == {}
        await asyncio.sleep(0.4)  # past the grace: the child was not killed
        assert child.alive and child.process.returncode is None


async def test_url_handler_errors_never_show_the_urls_credentials() -> None:
    with socket.socket() as sock:  # a port nothing listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    job = Job.model_validate(
        {"id": uuid.uuid4(), "user_document_id": uuid.uuid4(), "status": "processing"}
    )
    ctx = JobContext(job=job, worker_id="w1", logger=logging.getLogger("test"))
    url = f"http://bob:pa55word@127.0.0.1:{port}/process?key=s3cret"
    async with UrlHandler(url) as handler:
        with pytest.raises(HandlerFailed) as info:
            await handler(job, ctx)
    assert str(info.value).startswith(f"POST http://127.0.0.1:{port}/process failed: ConnectError")
    assert "pa55word" not in str(info.value) and "s3cret" not in str(info.value)
    assert not isinstance(info.value, PermanentHandlerFailed)  # refused: retried
