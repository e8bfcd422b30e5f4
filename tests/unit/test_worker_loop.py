"""The worker loop's logic against the in-memory model of the SQL functions (no HTTP)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

from supaworker import Job, JobContext, PermanentError
from supaworker.exceptions import RequestTimeout, ServerError
from supaworker.testing import InMemoryTransport
from supaworker.worker.loop import EXIT_OK, Worker
from tests.unit.worker_doubles import enqueue, worker_on


def make(handler: Any, **overrides: Any) -> tuple[Worker, InMemoryTransport]:
    fake = InMemoryTransport()
    fake.settings.backoff_base_seconds = 0.01
    return worker_on(fake, handler, **overrides), fake


def statuses(fake: InMemoryTransport) -> list[str]:
    return sorted(j["status"] for j in fake.jobs.values())


async def test_runs_every_job_and_stores_results() -> None:
    async def handler(job: Job) -> dict[str, str]:
        return {"doc": str(job.user_document_id)}

    worker, fake = make(handler)
    ids = enqueue(fake, 5)
    assert await worker.run() == EXIT_OK
    assert statuses(fake) == ["completed"] * 5
    for job_id in ids:
        job = fake.jobs[job_id]
        assert job["result"] == {"doc": str(job["user_document_id"])}
    assert fake.workers["w1"]["status"] == "offline"  # deregistered on exit


async def test_sync_handler_with_context_reports_progress() -> None:
    seen: list[float] = []

    def handler(job: Job, ctx: JobContext) -> int:
        assert threading.current_thread() is not threading.main_thread()
        ctx.progress(50, "half")
        time.sleep(0.3)  # let the forwarder send it
        seen.append(fake.jobs[job.id]["progress_percent"])
        return 1

    worker, fake = make(handler)
    enqueue(fake)
    await worker.run()
    assert seen == [50]
    assert statuses(fake) == ["completed"]


async def test_exception_retries_then_fails_with_error_kept() -> None:
    calls = 0

    async def handler(job: Job) -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"boom {calls}")

    worker, fake = make(handler, burst=False)
    (job_id,) = enqueue(fake, p_max_attempts=3)
    task = asyncio.create_task(worker.run())
    for _ in range(200):
        if fake.jobs[job_id]["status"] == "failed":
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    await task
    job = fake.jobs[job_id]
    assert (job["status"], job["retry_count"], calls) == ("failed", 3, 3)
    # The owner reads the class; operators the message and frames (worker/error_text.py).
    assert job["error_message"] == "ValueError"
    assert "ValueError: boom 3" in fake.error_details[(job_id, job["attempt"])]


async def test_permanent_error_fails_without_retry() -> None:
    async def handler(job: Job) -> None:
        raise PermanentError("unreadable file")

    worker, fake = make(handler)
    (job_id,) = enqueue(fake, p_max_attempts=5)
    await worker.run()
    assert fake.jobs[job_id]["status"] == "failed"
    assert fake.jobs[job_id]["retry_count"] == 1
    assert "unreadable file" in fake.jobs[job_id]["error_message"]


async def test_timeout_fails_the_attempt() -> None:
    async def handler(job: Job) -> None:
        await asyncio.sleep(10)

    worker, fake = make(handler, job_timeout=0.1)
    (job_id,) = enqueue(fake, p_max_attempts=1)
    await worker.run()
    assert fake.jobs[job_id]["status"] == "failed"
    assert "Timed out after 0.1s" in fake.jobs[job_id]["error_message"]


async def test_result_that_is_not_json_fails_permanently() -> None:
    async def handler(job: Job) -> object:
        return object()

    worker, fake = make(handler)
    (job_id,) = enqueue(fake, p_max_attempts=5)
    await worker.run()
    assert fake.jobs[job_id]["status"] == "failed"
    assert "not JSON-serialisable" in fake.jobs[job_id]["error_message"]


async def test_never_more_than_concurrency_at_once() -> None:
    active = 0
    peak = 0

    async def handler(job: Job) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1

    worker, fake = make(handler, concurrency=3)
    enqueue(fake, 12)
    await worker.run()
    assert peak == 3
    assert statuses(fake) == ["completed"] * 12


async def test_shutdown_releases_unfinished_jobs_without_spending_attempts() -> None:
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    worker, fake = make(handler, burst=False, shutdown_timeout=0.1, concurrency=1)
    (job_id,) = enqueue(fake)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.request_stop()
    assert await task == EXIT_OK
    job = fake.jobs[job_id]
    assert (job["status"], job["retry_count"], job["assigned_to"]) == ("pending", 0, None)
    assert fake.workers["w1"]["status"] == "offline"


async def test_graceful_stop_lets_running_jobs_finish() -> None:
    started = asyncio.Event()

    async def handler(job: Job) -> str:
        started.set()
        await asyncio.sleep(0.2)
        return "done"

    worker, fake = make(handler, burst=False, shutdown_timeout=5)
    (job_id,) = enqueue(fake)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.request_stop()
    await task
    assert fake.jobs[job_id]["status"] == "completed"


async def test_cancel_request_stops_the_running_job() -> None:
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    worker, fake = make(handler, burst=False)
    (job_id,) = enqueue(fake)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    fake.fn_cancel_job(str(job_id))
    for _ in range(200):
        if fake.jobs[job_id]["status"] == "cancelled":
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    await task
    assert fake.jobs[job_id]["status"] == "cancelled"


async def test_pause_stops_claiming_and_resume_restarts_it() -> None:
    async def handler(job: Job) -> None:
        return None

    worker, fake = make(handler, burst=False)
    task = asyncio.create_task(worker.run())
    while "w1" not in fake.workers:
        await asyncio.sleep(0.01)
    fake.fn_set_worker_status("w1", "paused")
    await asyncio.sleep(0.2)  # a few heartbeats
    assert worker.state.paused
    (job_id,) = enqueue(fake)
    await asyncio.sleep(0.3)
    assert fake.jobs[job_id]["status"] == "pending"
    fake.fn_set_worker_status("w1", "active")
    for _ in range(200):
        if fake.jobs[job_id]["status"] == "completed":
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    await task
    assert fake.jobs[job_id]["status"] == "completed"


async def test_outcome_write_survives_transient_faults() -> None:
    async def handler(job: Job) -> str:
        # The completion goes out with a claim (complete_and_claim); that call fails, so the
        # job is written alone (complete_job), which fails once more, and is retried.
        fake.fail_next["complete_and_claim"] = ServerError("502 from the gateway", status=502)
        fake.fail_next["complete_job"] = ServerError("502 from the gateway", status=502)
        return "ok"

    worker, fake = make(handler)
    (job_id,) = enqueue(fake)
    await worker.run()
    assert fake.jobs[job_id]["status"] == "completed"
    assert fake.calls.count("complete_and_claim") == 1
    assert fake.calls.count("complete_job") == 2


async def test_claim_with_unknown_outcome_is_released_not_lost() -> None:
    """A claim that landed but whose answer was lost: the heartbeat reports the orphan and
    the worker gives it back, so another claim (or this worker) runs it."""
    ran: list[uuid.UUID] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    worker, fake = make(handler, burst=False)
    (job_id,) = enqueue(fake)
    real_claim = fake.fn_claim_next_job

    def claim_then_lose_answer(**params: Any) -> Any:
        fake.fn_claim_next_job = real_claim  # type: ignore[method-assign]
        real_claim(**params)
        raise RequestTimeout("answer lost")

    fake.fn_claim_next_job = claim_then_lose_answer  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    for _ in range(300):
        if fake.jobs[job_id]["status"] == "completed":
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    await task
    assert ran == [job_id]
    assert fake.jobs[job_id]["status"] == "completed"
    assert any(e["event"] == "released" for e in fake.events)


async def test_reassigned_job_is_abandoned_without_writing() -> None:
    """If the queue gave the job to someone else (lost), the old owner's write is fenced."""
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    worker, fake = make(handler, burst=False)
    (job_id,) = enqueue(fake)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    # Simulate the reaper: release it and let another worker claim it.
    fake.fn_release_jobs("w1")
    fake.fn_register_worker("w2")
    fake.fn_claim_next_job("w2")
    for _ in range(100):
        if not worker.running_job_ids:
            break
        await asyncio.sleep(0.02)
    assert worker.running_job_ids == []
    worker.request_stop()
    await task
    assert fake.jobs[job_id]["assigned_to"] == "w2"
    assert fake.jobs[job_id]["status"] == "assigned"


@pytest.mark.parametrize("error", [ServerError("503"), RequestTimeout("slow")])
async def test_transient_heartbeat_failures_do_not_crash(error: Exception) -> None:
    async def handler(job: Job) -> None:
        fake.fail_next["heartbeat_worker"] = error
        await asyncio.sleep(0.2)

    worker, fake = make(handler)
    enqueue(fake)
    assert await worker.run() == EXIT_OK
    assert statuses(fake) == ["completed"]


async def test_shutdown_does_not_hang_when_the_api_stays_down() -> None:
    """Final writes retry through faults, but a stopping worker gives up after its grace.
    The job is not lost: deregistration gives it back (or, if that fails too, the reaper
    rescues it once heartbeats stop)."""

    async def handler(job: Job) -> str:
        return "done"

    worker, fake = make(handler, burst=False, shutdown_timeout=0.5)
    (job_id,) = enqueue(fake)

    def down(**params: Any) -> Any:
        raise ServerError("503 while the API is down")

    fake.fn_complete_job = down  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    while fake.calls.count("complete_job") < 2:
        await asyncio.sleep(0.05)
    began = time.monotonic()
    worker.request_stop()
    await asyncio.wait_for(task, 30)
    assert time.monotonic() - began < 20  # the 10 s grace plus one back-off step
    job = fake.jobs[job_id]
    assert (job["status"], job["assigned_to"]) == ("pending", None)
    assert fake.workers["w1"]["status"] == "offline"
