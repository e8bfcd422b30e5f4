"""A handler's `supaworker.Snooze(seconds)` (issue 18): the worker writes snooze_job, so the
job goes back to pending for that long without spending an attempt; it is logged
(job_snoozed), counted in the worker's state and in the job counters (outcome "snoozed")."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from supaworker import Snooze
from supaworker.models import Job
from supaworker.testing import InMemoryTransport
from supaworker.worker.events import OutcomeEvent
from supaworker.worker.execution import Outcome, _outcome_of
from supaworker.worker.loop import EXIT_OK
from supaworker.worker.metrics import JobCounter, WorkerMetrics
from tests.unit.worker_doubles import a_job, enqueue, worker_on


async def test_a_snoozed_job_goes_back_to_pending_without_spending_an_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(job: Job) -> None:
        raise Snooze(60)

    caplog.set_level(logging.INFO, "supaworker")
    fake = InMemoryTransport()
    worker = worker_on(fake, handler)
    (job_id,) = enqueue(fake, p_max_attempts=1)  # a failed attempt would end it as failed
    began = fake.clock()
    assert await worker.run() == EXIT_OK
    row = fake.jobs[job_id]
    assert (row["status"], row["retry_count"], row["snooze_count"], row["attempt"]) == (
        "pending",
        0,
        1,
        1,
    )
    assert timedelta(seconds=59) <= row["run_at"] - began <= timedelta(seconds=70)
    assert fake.calls.count("snooze_job") == 1 and "fail_job" not in fake.calls
    assert [e["event"] for e in fake.events][-1] == "snoozed"
    assert (worker.state.snoozed, worker.state.failed) == (1, 0)
    assert any(getattr(r, "action", None) == "job_snoozed" for r in caplog.records)


def test_a_snooze_is_its_own_outcome_and_counted() -> None:
    outcome = _outcome_of(Snooze(2.5))
    assert outcome == Outcome("snoozed", error="snoozed for 2.5 s", snooze=2.5)
    metrics = WorkerMetrics()
    JobCounter(metrics)(OutcomeEvent("snoozed", [a_job("ocr")], "w1", duration=0.1))
    sample = metrics.registry.get_sample_value(
        "supaworker_jobs_total", {"queue": "ocr", "outcome": "snoozed"}
    )
    assert sample == 1
