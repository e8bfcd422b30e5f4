"""supaworker/worker/events.py and its subscribers: the log lines (JobLog) and the metrics
(metrics.JobCounter) hear the same events, whatever the log level."""

from __future__ import annotations

import asyncio
import logging

import pytest

from supaworker import Job
from supaworker.testing import InMemoryTransport
from supaworker.worker.events import JobEvents, JobLog, OutcomeEvent
from supaworker.worker.loop import EXIT_OK
from supaworker.worker.metrics import JobCounter, WorkerMetrics
from tests.unit.worker_doubles import a_job, enqueue, worker_on


def count(metrics: WorkerMetrics, queue: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "supaworker_jobs_total", {"queue": queue, "outcome": outcome}
    )
    return value or 0.0


def test_every_subscriber_hears_an_event_even_after_one_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = JobEvents()
    heard: list[str] = []

    def broken(event: OutcomeEvent) -> None:
        raise RuntimeError("subscriber bug")

    events.subscribe(broken)
    events.subscribe(lambda e: heard.append(e.kind))
    events.emit(OutcomeEvent("failed", [a_job()], "w1", error="boom"))
    assert heard == ["failed"]
    assert any(getattr(r, "action", "") == "event_subscriber_failed" for r in caplog.records)


async def test_completions_of_one_turn_are_one_line_per_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", "supaworker.worker")
    job_log = JobLog()
    jobs = [a_job("ocr"), a_job("ocr"), a_job("pdf")]
    for i, job in enumerate(jobs):
        job_log(OutcomeEvent("completed", [job], "w1", duration=0.1 * (i + 1)))
    assert not [r for r in caplog.records if getattr(r, "action", "") == "jobs_completed"]
    await asyncio.sleep(0)  # the end of the turn
    lines = [r for r in caplog.records if getattr(r, "action", "") == "jobs_completed"]
    by_queue = {r.queue: r for r in lines}  # type: ignore[attr-defined]
    assert sorted(by_queue) == ["ocr", "pdf"]
    assert by_queue["ocr"].count == 2  # type: ignore[attr-defined]
    assert by_queue["ocr"].durations == [0.1, 0.2]  # type: ignore[attr-defined]
    assert by_queue["pdf"].job_ids == [str(jobs[2].id)]  # type: ignore[attr-defined]


def test_failures_keep_a_line_each_with_their_action(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", "supaworker.worker")
    job_log = JobLog()
    retried, fenced = a_job(), a_job()
    job_log(OutcomeEvent("retried", [retried], "w1", duration=1.0, error="ValueError: x"))
    job_log(OutcomeEvent("lost", [fenced], "w1", duration=1.0))
    actions = {r.job_id: (r.action, r.outcome) for r in caplog.records}  # type: ignore[attr-defined]
    assert actions == {
        str(retried.id): ("job_retry_scheduled", "pending"),
        str(fenced.id): ("job_lost", "fenced"),
    }


def test_the_counter_counts_each_kind_by_queue() -> None:
    metrics = WorkerMetrics()
    counter = JobCounter(metrics)
    counter(OutcomeEvent("claimed", [a_job("ocr"), a_job("ocr"), a_job("pdf")], "w1"))
    counter(OutcomeEvent("completed", [a_job("ocr")], "w1", duration=0.5))
    counter(OutcomeEvent("lost", [a_job("ocr")], "w1", duration=0.5))
    assert count(metrics, "ocr", "claimed") == 2
    assert count(metrics, "pdf", "claimed") == 1
    assert count(metrics, "ocr", "completed") == 1
    assert count(metrics, "ocr", "lost") == 1
    observed = metrics.registry.get_sample_value(
        "supaworker_job_duration_seconds_count", {"queue": "ocr"}
    )
    assert observed == 2


async def test_metrics_do_not_depend_on_the_log_level(caplog: pytest.LogCaptureFixture) -> None:
    """SUPAWORKER_LOG_LEVEL=WARNING: no claimed or completed lines are written, and the job
    counters still count every job."""

    async def handler(job: Job) -> None:
        return None

    caplog.set_level(logging.WARNING, "supaworker")
    fake = InMemoryTransport()
    worker = worker_on(fake, handler, concurrency=2)
    metrics = WorkerMetrics()
    worker.events.subscribe(JobCounter(metrics))
    enqueue(fake, 5)
    assert await worker.run() == EXIT_OK
    assert not [r for r in caplog.records if getattr(r, "action", "") == "jobs_completed"]
    assert count(metrics, "default", "claimed") == 5
    assert count(metrics, "default", "completed") == 5
