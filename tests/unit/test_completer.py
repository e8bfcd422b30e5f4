"""supaworker/worker/completer.py: every final write, tracked until it lands, retried by the
one policy, and told as an event that says what the write found (against the in-memory model
of the SQL functions)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest

from supaworker import Job
from supaworker.client import AsyncQueueClient
from supaworker.exceptions import RpcError
from supaworker.testing import InMemoryTransport
from supaworker.worker.batching import Reservation
from supaworker.worker.completer import Completer
from supaworker.worker.events import JobEvents, OutcomeEvent
from supaworker.worker.execution import Outcome
from supaworker.worker.ledger import Ledger
from supaworker.worker.loop import EXIT_OK
from tests.unit.worker_doubles import enqueue, worker_on

SERIALIZATION_FAILURE = RpcError("could not serialize access", code="40001")
DEADLOCK = RpcError("deadlock detected", code="40P01")


class NoClaims:
    def reserve(self, completing: int) -> Reservation:
        return Reservation(completing, 0, 0)

    def settled(self, reservation: Reservation, jobs: list[Job] | None) -> None:
        return None


def completer_on(
    fake: InMemoryTransport, batch_size: int = 0
) -> tuple[Completer, Ledger, list[OutcomeEvent], list[str]]:
    ledger = Ledger(concurrency=4, prefetch=0)
    events = JobEvents()
    heard: list[OutcomeEvent] = []
    events.subscribe(heard.append)
    woken: list[str] = []

    def due(moment: datetime) -> None:
        woken.append("due")

    completer = Completer(
        AsyncQueueClient(fake),
        "w1",
        ledger,
        events,
        batch_size=batch_size,
        batch_delay=0,
        claims=NoClaims(),
        queues=None,
        slot_freed=lambda: woken.append("freed"),
        retry_due=due,
    )
    return completer, ledger, heard, woken


def claimed(fake: InMemoryTransport, n: int = 1, **kw: object) -> list[Job]:
    fake.fn_register_worker("w1", p_max_concurrent_jobs=10)
    enqueue(fake, n, **kw)
    return [Job.model_validate(r) for r in fake.fn_claim_next_job("w1", n, p_start=True)]


@pytest.mark.parametrize("batch_size", [0, 10])
async def test_a_write_keeps_the_job_owned_until_it_lands(batch_size: int) -> None:
    fake = InMemoryTransport()
    completer, ledger, heard, woken = completer_on(fake, batch_size)
    (job,) = claimed(fake)
    completer.finish(job, Outcome("completed", result={"ok": 1}), 0.5)
    assert ledger.owned_ids() == [job.id] and completer.in_flight == 1
    await completer.drain()
    assert ledger.owned_ids() == [] and completer.in_flight == 0
    assert fake.jobs[job.id]["status"] == "completed"
    assert [(e.kind, e.duration) for e in heard] == [("completed", 0.5)]
    # Alone, the write frees a slot to claim for; batched, its call claims (ClaimAlong).
    assert ("freed" in woken) == (batch_size == 0)


async def test_a_failure_scheduled_for_retry_says_when_it_is_due() -> None:
    fake = InMemoryTransport()
    completer, _, heard, woken = completer_on(fake)
    (job,) = claimed(fake, p_max_attempts=3)
    completer.finish(job, Outcome.failed("ValueError: x", retryable=True), 0.1)
    await completer.drain()
    assert [(e.kind, e.error) for e in heard] == [("retried", "ValueError: x")]
    assert fake.jobs[job.id]["status"] == "pending"
    assert woken == ["freed", "due"]


async def test_release_and_cancel() -> None:
    fake = InMemoryTransport()
    completer, _, heard, _ = completer_on(fake)
    released, cancelled = claimed(fake, 2)
    completer.release(released)
    completer.cancelled(cancelled)
    await completer.drain()
    assert fake.jobs[released.id]["status"] == "pending"
    assert fake.jobs[released.id]["retry_count"] == 0
    assert fake.jobs[cancelled.id]["status"] == "failed"
    assert sorted(e.kind for e in heard) == ["failed", "released"]


# -- through the worker ----------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [0, 10])
async def test_a_fenced_out_job_is_not_counted_completed(batch_size: int) -> None:
    """Regression: state.completed counted a job whose completion was fenced out (lost)."""
    victim: list[uuid.UUID] = []

    async def handler(job: Job) -> None:
        await asyncio.sleep(0.01)
        if job.id == victim[0]:
            fake.jobs[job.id]["attempt"] += 1  # rescued while running: not ours any more

    fake = InMemoryTransport()
    worker = worker_on(fake, handler, concurrency=4, complete_batch_size=batch_size)
    ids = enqueue(fake, 4)
    victim.append(ids[0])
    assert await worker.run() == EXIT_OK
    assert (worker.state.completed, worker.state.lost) == (3, 1)


@pytest.mark.parametrize("refusal", [SERIALIZATION_FAILURE, DEADLOCK])
async def test_a_conflicting_complete_job_is_retried(refusal: RpcError) -> None:
    """Regression: a serialization failure or deadlock (SQLSTATE class 40: rolled back,
    nothing written) counted as a refusal, and the final write was abandoned."""

    async def handler(job: Job) -> str:
        fake.fail_next["complete_job"] = refusal
        return "done"

    fake = InMemoryTransport()
    worker = worker_on(fake, handler, complete_batch_size=0)
    (job_id,) = enqueue(fake)
    assert await worker.run() == EXIT_OK
    assert fake.jobs[job_id]["status"] == "completed"
    assert fake.calls.count("complete_job") == 2
    assert worker.state.completed == 1


async def test_a_conflicting_fail_job_is_retried() -> None:
    async def handler(job: Job) -> None:
        fake.fail_next["fail_job"] = DEADLOCK
        raise ValueError("bad input")

    fake = InMemoryTransport()
    worker = worker_on(fake, handler)
    (job_id,) = enqueue(fake, p_max_attempts=1)
    assert await worker.run() == EXIT_OK
    assert fake.jobs[job_id]["status"] == "failed"
    assert "bad input" in fake.jobs[job_id]["error_message"]


async def test_a_conflict_in_complete_and_claim_does_not_turn_it_off() -> None:
    """Regression: any refusal of complete_and_claim switched the worker to complete_jobs
    and claims of its own for good; only a missing function (PGRST202) should."""

    async def handler(job: Job) -> None:
        await asyncio.sleep(0.005)

    fake = InMemoryTransport()
    worker = worker_on(fake, handler, concurrency=2, complete_batch_size=10)
    fake.fail_next["complete_and_claim"] = SERIALIZATION_FAILURE
    ids = enqueue(fake, 10)
    assert await worker.run() == EXIT_OK
    assert all(fake.jobs[i]["status"] == "completed" for i in ids)
    assert fake.calls.count("complete_and_claim") >= 2
    assert "complete_jobs" not in fake.calls
