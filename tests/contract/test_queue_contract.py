"""One contract, two implementations: the real SQL functions (through PostgREST) and the
in-memory model in `supaworker.testing` must answer every call the same way."""

from __future__ import annotations

import uuid

import pytest

from supaworker import schema
from supaworker.exceptions import Conflict, NotFound
from supaworker.models import JobStatus, WorkerStatus
from tests.contract.conftest import Backend, covers


@covers("enqueue_job")
async def test_enqueue_is_idempotent_per_document(backend: Backend) -> None:
    doc = backend.new_document()
    first = await backend.queue.enqueue(doc, queue=backend.queue_name, priority=3)
    again = await backend.queue.enqueue(doc, queue=backend.queue_name, priority=9)
    assert first.id == again.id
    assert (again.status, again.priority, again.attempt) == (JobStatus.PENDING, 3, 0)


@covers("enqueue_job", "get_job")
async def test_unknown_document_and_job_are_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        await backend.queue.enqueue(uuid.uuid4(), queue=backend.queue_name)
    with pytest.raises(NotFound):
        await backend.queue.get(uuid.uuid4())


@covers("claim_next_job", "register_worker")
async def test_claim_orders_by_priority_and_stamps_attempt(backend: Backend) -> None:
    low = await backend.enqueue(priority=1)
    high = await backend.enqueue(priority=7)
    wid = await backend.worker()
    claimed = await backend.queue.claim(wid, 1, [backend.queue_name])
    assert [j.id for j in claimed] == [high]
    assert (claimed[0].status, claimed[0].attempt, claimed[0].assigned_to) == (
        JobStatus.ASSIGNED,
        1,
        wid,
    )
    rest = await backend.queue.claim(wid, 5, [backend.queue_name])
    assert [j.id for j in rest] == [low]


@covers("claim_next_job", "set_worker_status")
async def test_claim_respects_free_slots_and_pause(backend: Backend) -> None:
    for _ in range(4):
        await backend.enqueue()
    wid = await backend.worker(slots=2)
    assert len(await backend.queue.claim(wid, 10, [backend.queue_name])) == 2
    assert await backend.queue.claim(wid, 10, [backend.queue_name]) == []
    other = await backend.worker(slots=5)
    await backend.queue.set_worker_status(other, WorkerStatus.PAUSED)
    assert await backend.queue.claim(other, 10, [backend.queue_name]) == []
    assert await backend.queue.claim("never-registered", 10, [backend.queue_name]) == []


@covers("claim_next_job")
async def test_capabilities_route_jobs(backend: Backend) -> None:
    gpu_job = await backend.enqueue(requires={"gpu": True})
    plain = await backend.worker()
    assert await backend.queue.claim(plain, 5, [backend.queue_name]) == []
    gpu = await backend.worker(capabilities={"gpu": True, "ocr": True})
    assert [j.id for j in await backend.queue.claim(gpu, 5, [backend.queue_name])] == [gpu_job]


@covers("start_job", "complete_job")
async def test_complete_is_fenced_by_worker_and_attempt(backend: Backend) -> None:
    await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    assert await backend.queue.start(job, "someone-else") is False
    assert await backend.queue.start(job, wid) is True
    assert await backend.queue.complete(job, wid, {"n": 1}) is True
    assert await backend.queue.complete(job, wid, {"n": 2}) is False
    row = await backend.queue.get(job.id)
    assert (row.status, row.result) == (JobStatus.COMPLETED, {"n": 1})


@covers("fail_job")
async def test_fail_retries_then_dead_letters(backend: Backend) -> None:
    job_id = await backend.enqueue(max_attempts=2)
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    retried = await backend.queue.fail(job, wid, "first", retryable=True)
    assert retried is not None
    assert (retried.status, retried.retry_count, retried.assigned_to) == (
        JobStatus.PENDING,
        1,
        None,
    )
    assert retried.run_at is not None and job.run_at is not None and retried.run_at > job.run_at
    assert await backend.queue.fail(job, wid, "stale", retryable=True) is None  # fenced
    row = await backend.queue.get(job_id)
    assert row.error_message == "first"
    # Not claimable before its backoff has passed.
    assert await backend.queue.claim(wid, 1, [backend.queue_name]) == []


@covers("fail_job", "retry_job")
async def test_non_retryable_failure_is_final(backend: Backend) -> None:
    job_id = await backend.enqueue(max_attempts=5)
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    failed = await backend.queue.fail(job, wid, "corrupt file", retryable=False)
    assert failed is not None and failed.status == JobStatus.FAILED
    assert (await backend.queue.get(job_id)).error_message == "corrupt file"
    retried = await backend.queue.retry(job_id)
    assert (retried.status, retried.retry_count) == (JobStatus.PENDING, 0)


@covers("retry_job")
async def test_retry_of_a_running_job_is_a_conflict(backend: Backend) -> None:
    job_id = await backend.enqueue()
    wid = await backend.worker()
    await backend.queue.claim(wid, 1, [backend.queue_name])
    with pytest.raises(Conflict):
        await backend.queue.retry(job_id)


@covers("heartbeat_worker", "cancel_job")
async def test_heartbeat_reports_cancel_lost_and_orphaned(backend: Backend) -> None:
    a = await backend.enqueue()
    b = await backend.enqueue()
    wid = await backend.worker()
    claimed = {j.id: j for j in await backend.queue.claim(wid, 2, [backend.queue_name])}
    assert set(claimed) == {a, b}
    await backend.queue.start(claimed[a], wid)
    await backend.queue.cancel(a)
    reply = await backend.queue.heartbeat(wid, [a, uuid.UUID(int=1)])
    assert reply.status == WorkerStatus.ACTIVE
    assert reply.cancel == [a]
    assert reply.lost == [uuid.UUID(int=1)]
    assert [(o.id, o.attempt) for o in reply.orphaned] == [(b, claimed[b].attempt)]


@covers("release_jobs")
async def test_release_returns_jobs_without_spending_an_attempt(backend: Backend) -> None:
    job_id = await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    await backend.queue.start(job, wid)
    assert await backend.queue.release(wid, [job.id]) == 1
    row = await backend.queue.get(job_id)
    assert (row.status, row.retry_count, row.assigned_to) == (JobStatus.PENDING, 0, None)
    again = await backend.queue.claim(wid, 1, [backend.queue_name])
    assert again[0].attempt == job.attempt + 1  # the fencing token still moves on


@covers("cancel_job")
async def test_cancel_pending_and_running(backend: Backend) -> None:
    pending = await backend.enqueue()
    assert (await backend.queue.cancel(pending)).status == JobStatus.CANCELLED
    running_id = await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    await backend.queue.start(job, wid)
    row = await backend.queue.cancel(running_id)
    assert (row.status, row.cancel_requested) == (JobStatus.PROCESSING, True)
    ended = await backend.queue.fail(job, wid, "Cancelled on request", retryable=False)
    assert ended is not None and ended.status == JobStatus.CANCELLED


@covers("report_progress")
async def test_progress_is_fenced(backend: Backend) -> None:
    await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    await backend.queue.start(job, wid)
    assert await backend.queue.progress(job, wid, 40, "reading") is True
    assert await backend.queue.progress(job, "intruder", 90, None) is False
    row = await backend.queue.get(job.id)
    assert (row.progress_percent, row.progress_message) == (40, "reading")


@covers("job_history")
async def test_history_records_each_transition(backend: Backend) -> None:
    job_id = await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    await backend.queue.start(job, wid)
    await backend.queue.complete(job, wid, None)
    events = [e.event for e in await backend.queue.history(job_id)]
    assert events == ["enqueued", "assigned", "started", "completed"]


@covers("claim_next_job", "start_job")
async def test_claim_with_start_skips_assigned_and_counts_the_slot(backend: Backend) -> None:
    """What `supaworker run` does: claim and start in one call (no start_job round trip)."""
    first, second = await backend.enqueue(), await backend.enqueue()
    wid = await backend.worker(slots=1)
    (job,) = await backend.queue.claim(wid, 5, [backend.queue_name], start=True)
    assert (job.id, job.status, job.attempt) == (first, JobStatus.PROCESSING, 1)
    assert job.started_at is not None and job.assigned_to == wid
    assert await backend.queue.start(job, wid) is True  # a repeated start is harmless
    assert await backend.queue.claim(wid, 5, [backend.queue_name], start=True) == []  # full
    assert await backend.queue.complete(job, wid, None) is True
    (nxt,) = await backend.queue.claim(wid, 5, [backend.queue_name], start=True)
    assert nxt.id == second
    events = [e.event for e in await backend.queue.history(first)]
    assert events == ["enqueued", "started", "completed"]


@covers("claim_next_job")
async def test_requires_is_matched_by_json_containment(backend: Backend) -> None:
    job_id = await backend.enqueue(requires={"langs": ["de"]})
    english = await backend.worker(capabilities={"langs": ["en"]})
    assert await backend.queue.claim(english, 5, [backend.queue_name]) == []
    both = await backend.worker(capabilities={"langs": ["en", "de"], "gpu": False})
    assert [j.id for j in await backend.queue.claim(both, 5, [backend.queue_name])] == [job_id]


@covers("release_jobs")
async def test_releasing_a_cancel_requested_job_cancels_it(backend: Backend) -> None:
    job_id = await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    await backend.queue.start(job, wid)
    await backend.queue.cancel(job_id)
    await backend.queue.release(wid, [job_id])
    assert (await backend.queue.get(job_id)).status == JobStatus.CANCELLED


@covers("retry_job")
async def test_retry_of_a_completed_job_is_a_conflict(backend: Backend) -> None:
    job_id = await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    await backend.queue.complete(job, wid, None)
    with pytest.raises(Conflict):
        await backend.queue.retry(job_id)


@covers("register_worker")
async def test_registering_again_fails_the_previous_process_jobs(backend: Backend) -> None:
    job_id = await backend.enqueue(max_attempts=3)
    wid = await backend.worker()
    await backend.queue.claim(wid, 1, [backend.queue_name])
    await backend.worker(wid)  # the same id starts again: the old process is gone
    row = await backend.queue.get(job_id)
    assert (row.status, row.retry_count, row.assigned_to) == (JobStatus.PENDING, 1, None)
    assert "restarted" in (row.error_message or "")


@covers("deregister_worker")
async def test_deregistering_an_unknown_worker_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        await backend.queue.deregister_worker(f"nobody-{uuid.uuid4().hex[:6]}")


@covers("deregister_worker", "list_workers")
async def test_pause_survives_deregistration(backend: Backend) -> None:
    wid = await backend.worker()
    await backend.queue.set_worker_status(wid, WorkerStatus.PAUSED)
    await backend.queue.deregister_worker(wid)
    (info,) = [w for w in await backend.queue.workers() if w.worker_id == wid]
    assert info.status == WorkerStatus.PAUSED


@covers("complete_and_claim")
async def test_complete_and_claim_completes_then_claims_with_prefetch(backend: Backend) -> None:
    jobs = [await backend.enqueue() for _ in range(5)]
    wid = await backend.worker(slots=1)
    first = await backend.queue.complete_and_claim(wid, [], 3, None)
    assert first.completed == frozenset() and len(first.claimed) == 1  # one slot
    (held,) = first.claimed
    assert held.status == JobStatus.PROCESSING and held.started_at is not None
    stranger = (uuid.uuid4(), 1, None)  # not this worker's job: fenced out
    second = await backend.queue.complete_and_claim(
        wid, [(held.id, held.attempt, {"n": 1}), stranger], 3, None, prefetch=2
    )
    assert second.completed == frozenset({held.id})  # the stranger skipped
    assert len(second.claimed) == 3  # the freed slot + 2 prefetched
    assert {j.id for j in second.claimed} <= set(jobs) - {held.id}
    assert (await backend.queue.get(held.id)).result == {"n": 1}
    third = await backend.queue.complete_and_claim(wid, [], 3, None, prefetch=2)
    assert third.claimed == []  # holding 3 = 1 slot + 2 prefetch


@covers("supaworker_schema_version")
async def test_the_schema_version_is_the_newest_packaged_migration(backend: Backend) -> None:
    # The test stack runs every packaged migration; the fake models the newest schema.
    assert await backend.queue.schema_version() == schema.latest_version()
    assert schema.latest_version() >= schema.REQUIRED_VERSION
