"""Where the in-memory model and the SQL disagreed (issue 15, bug 11), pinned down on both.

Each test here failed against the model before it was brought in line with the current SQL
(`supabase/migrations/`, the latest definition of each function); the SQL side is the
reference. The operations RPCs (reaper, purge, stats, batch reads) are covered here too.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from supaworker.exceptions import InvalidArgument, NotFound, PayloadTooLarge
from supaworker.models import JobStatus, WorkerStatus
from tests.contract.conftest import Backend, covers

HOUR = timedelta(hours=1)
STATUSES = {s.value for s in JobStatus}


# -- operations the model lacked --------------------------------------------------------
@covers("reap_stale_jobs")
async def test_reaper_rescues_the_jobs_of_a_dead_worker(backend: Backend) -> None:
    job_id = await backend.enqueue(max_attempts=3)
    dead = await backend.worker()
    await backend.queue.claim(dead, 1, [backend.queue_name], start=True)
    paused = await backend.worker()
    await backend.queue.set_worker_status(paused, WorkerStatus.PAUSED)
    backend.make_stale(dead)
    backend.make_stale(paused)
    assert await backend.queue.reap_stale_jobs() >= 1  # the shared stack may hold others
    row = await backend.queue.get(job_id)
    assert (row.status, row.retry_count, row.assigned_to) == (JobStatus.PENDING, 1, None)
    assert row.error_message == f"worker {dead} stopped heartbeating"
    states = {w.worker_id: w.status for w in await backend.queue.workers()}
    assert (states[dead], states[paused]) == (WorkerStatus.OFFLINE, WorkerStatus.PAUSED)
    assert [e.event for e in await backend.queue.history(job_id)][-1] == "retry_scheduled"


@covers("reap_stale_jobs")
async def test_reaper_fails_a_job_past_its_timeout_and_grace(backend: Backend) -> None:
    late = await backend.enqueue(timeout_seconds=1, max_attempts=1)
    wid = await backend.worker()
    await backend.queue.claim(wid, 1, [backend.queue_name], start=True)
    on_time = await backend.enqueue(timeout_seconds=3600)
    await backend.queue.claim(wid, 1, [backend.queue_name], start=True)
    backend.shift_back(late, "started_at", HOUR)
    assert await backend.queue.reap_stale_jobs() >= 1
    row = await backend.queue.get(late)
    assert (row.status, row.error_message) == (
        JobStatus.FAILED,
        f"timed out after 1 s on worker {wid}",
    )
    assert (await backend.queue.get(on_time)).status == JobStatus.PROCESSING
    (info,) = [w for w in await backend.queue.workers() if w.worker_id == wid]
    assert (info.status, info.current_jobs) == (WorkerStatus.ACTIVE, 1)  # it still beats


@covers("claim_next_job")
async def test_a_claim_runs_the_reaper_at_most_once_per_rescue_interval(
    backend: Backend,
) -> None:
    first, second = await backend.enqueue(), await backend.enqueue()
    dead = await backend.worker(slots=1)
    await backend.queue.claim(dead, 1, [backend.queue_name])
    backend.make_stale(dead)
    backend.set_last_rescue(None)  # due
    other = await backend.worker(slots=1)
    (taken,) = await backend.queue.claim(other, 1, [backend.queue_name])
    assert taken.id == second  # the rescued job waits out its backoff
    rescued = await backend.queue.get(first)
    assert (rescued.status, rescued.retry_count) == (JobStatus.PENDING, 1)

    third = await backend.enqueue()
    late = await backend.worker(slots=1)
    await backend.queue.claim(late, 1, [backend.queue_name])
    backend.make_stale(late)
    backend.set_last_rescue(timedelta(0))  # a rescue just ran: the next is not due yet
    await backend.queue.claim(other, 1, [backend.queue_name])
    assert (await backend.queue.get(third)).status == JobStatus.ASSIGNED


@covers("purge_finished_jobs")
async def test_purge_deletes_old_completed_and_cancelled_jobs_but_keeps_failed(
    backend: Backend,
) -> None:
    done, failed, fresh = [await backend.enqueue() for _ in range(3)]
    cancelled = await backend.enqueue()
    await backend.queue.cancel(cancelled)
    wid = await backend.worker()
    for job in await backend.queue.claim(wid, 3, [backend.queue_name], start=True):
        if job.id == failed:
            await backend.queue.fail(job, wid, "broken", retryable=False)
        else:
            await backend.queue.complete(job, wid, None)
    for job_id in (done, failed, cancelled):
        backend.shift_back(job_id, "completed_at", 2 * HOUR)
    assert await backend.queue.purge_finished(older_than_seconds=3600) >= 2
    for gone in (done, cancelled):
        with pytest.raises(NotFound):
            await backend.queue.get(gone)
        with pytest.raises(NotFound):
            await backend.queue.history(gone)  # its events went with it
    assert (await backend.queue.get(failed)).status == JobStatus.FAILED  # the dead letters
    assert (await backend.queue.get(fresh)).status == JobStatus.COMPLETED  # too recent
    with pytest.raises(InvalidArgument):
        await backend.queue.purge_finished(older_than_seconds=-1)


@covers("queue_stats")
async def test_stats_count_per_queue_and_every_worker_status(backend: Backend) -> None:
    for _ in range(2):
        await backend.enqueue()
    wid = await backend.worker(slots=1)
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name], start=True)
    await backend.queue.complete(job, wid, None)
    stats = (await backend.queue.stats()).model_dump()
    assert set(stats["by_status"]) == STATUSES
    assert stats["by_queue"][backend.queue_name] == {s: 0 for s in STATUSES} | {
        "pending": 1,
        "completed": 1,
    }
    assert set(stats["workers"]) == {"active", "paused", "offline"}
    assert stats["workers"]["active"] >= 1
    assert stats["completed_last_minute"] >= 1 and stats["completed_last_hour"] >= 1
    assert isinstance(stats["failed_last_minute"], int)
    assert isinstance(stats["failed_last_hour"], int)
    assert stats["oldest_pending_seconds"] is not None  # ours is due


@covers("list_jobs")
async def test_list_jobs_checks_its_arguments_and_lists_newest_first(backend: Backend) -> None:
    first, second = await backend.enqueue(), await backend.enqueue()
    wid = await backend.worker(slots=2)
    claimed = {j.id: j for j in await backend.queue.claim(wid, 2, [backend.queue_name])}
    await backend.queue.progress(claimed[first], wid, 10, None)  # any update counts
    listed = await backend.queue.jobs(queue=backend.queue_name)
    assert [j.id for j in listed] == [first, second]
    assert [j.id for j in await backend.queue.jobs(queue=backend.queue_name, limit=1)] == [first]
    assert await backend.queue.jobs(status="pending", queue=backend.queue_name) == []
    for bad in ({"status": "running"}, {"limit": 0}, {"limit": 1001}):
        with pytest.raises(InvalidArgument):
            await backend.queue.jobs(queue=backend.queue_name, **bad)


@covers("list_workers", "deregister_worker")
async def test_list_workers_puts_live_workers_first_then_by_id(backend: Backend) -> None:
    suffix = uuid.uuid4().hex[:8]
    ids = [await backend.worker(f"{letter}-{suffix}") for letter in "zam"]
    await backend.queue.deregister_worker(ids[1])
    ours = [w.worker_id for w in await backend.queue.workers() if w.worker_id.endswith(suffix)]
    assert ours == [f"m-{suffix}", f"z-{suffix}", f"a-{suffix}"]


# -- argument checks the model skipped ---------------------------------------------------
@covers("enqueue_job", "list_jobs")
async def test_enqueue_checks_every_argument_before_looking_up_the_document(
    backend: Backend,
) -> None:
    doc = backend.new_document()
    refused: list[dict[str, object]] = [
        {"max_attempts": 0},
        {"max_attempts": 101},
        {"timeout_seconds": 0},
        {"priority": 5000},
        {"queue": "bad queue!"},
    ]
    for options in refused:
        with pytest.raises(InvalidArgument):
            await backend.queue.enqueue(doc, **{"queue": backend.queue_name, **options})  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):  # even for a document that does not exist
            await backend.queue.enqueue(uuid.uuid4(), **{"queue": backend.queue_name, **options})  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLarge):
        await backend.queue.enqueue(doc, queue=backend.queue_name, payload={"x": "y" * 300_000})
    with pytest.raises(InvalidArgument):
        await backend.queue.enqueue("not-a-uuid", queue=backend.queue_name)
    assert await backend.queue.jobs(queue=backend.queue_name) == []  # nothing was queued


@covers("register_worker", "list_workers")
async def test_register_worker_checks_its_arguments(backend: Backend) -> None:
    long_id = "w" * 201
    for worker_id, slots in (("", 1), (long_id, 1), ("ok-id", 0), ("ok-id", 1001)):
        with pytest.raises(InvalidArgument):
            await backend.queue.register_worker(
                worker_id,
                worker_name=None,
                max_concurrent_jobs=slots,
                capabilities={},
                queues=None,
                host=None,
                version=None,
            )
    assert not {long_id, "ok-id"} & {w.worker_id for w in await backend.queue.workers()}


@covers("claim_next_job")
async def test_claim_checks_its_arguments(backend: Backend) -> None:
    wid = await backend.worker()
    for worker_id, limit in (("", 1), (wid, -1), (wid, 1001)):
        with pytest.raises(InvalidArgument):
            await backend.queue.claim(worker_id, limit, None)


@covers("claim_next_job", "get_job")
async def test_unknown_arguments_find_no_function(backend: Backend) -> None:
    """PostgREST picks a function by its argument names: claim_next_job has no p_prefetch
    (only complete_and_claim has), and an argument too many or too few finds nothing."""
    wid = await backend.worker()
    await backend.enqueue()
    for function, params in (
        ("claim_next_job", {"p_worker_id": wid, "p_limit": 1, "p_prefetch": 1}),
        ("claim_next_job", {"p_limit": 1}),
        ("get_job", {"p_job_id": str(uuid.uuid4()), "p_extra": 1}),
    ):
        with pytest.raises(NotFound) as refused:
            await backend.raw(function, params)
        assert refused.value.code == "PGRST202", function
    assert await backend.queue.jobs(status="assigned", queue=backend.queue_name) == []


@covers("get_job", "job_history", "cancel_job", "retry_job")
async def test_an_id_that_is_not_a_uuid_is_an_invalid_argument(backend: Backend) -> None:
    for call in (
        backend.queue.get,
        backend.queue.history,
        backend.queue.cancel,
        backend.queue.retry,
    ):
        with pytest.raises(InvalidArgument) as refused:
            await call("not-a-uuid")
        assert refused.value.code == "22P02"


@covers("complete_and_claim")
async def test_a_refused_complete_and_claim_completes_nothing(backend: Backend) -> None:
    """In SQL the call is one transaction: a refused claim rolls its completions back."""
    await backend.enqueue()
    wid = await backend.worker(slots=1)
    (held,) = (await backend.queue.complete_and_claim(wid, [], 1, None)).claimed
    done = [(held.id, held.attempt, {"n": 1})]
    for limit, prefetch in ((1, -1), (1, 1001), (-1, 0)):
        with pytest.raises(InvalidArgument):
            await backend.queue.complete_and_claim(wid, done, limit, None, prefetch=prefetch)
        assert (await backend.queue.get(held.id)).status == JobStatus.PROCESSING
    with pytest.raises(InvalidArgument):
        await backend.raw("complete_and_claim", {"p_worker_id": wid, "p_jobs": None})
    answer = await backend.queue.complete_and_claim(wid, done, 1, None)
    assert answer.completed == frozenset({held.id})


@covers("complete_jobs")
async def test_complete_jobs_counts_each_fenced_in_job_once(backend: Backend) -> None:
    await backend.enqueue()
    await backend.enqueue()
    wid = await backend.worker()
    a, b = await backend.queue.claim(wid, 2, [backend.queue_name], start=True)
    results: list[tuple[uuid.UUID, int, object]] = [(a.id, a.attempt, {"n": 1})] * 2
    results += [(b.id, b.attempt, {"n": 2}), (uuid.uuid4(), 1, None)]
    assert await backend.queue.complete_many(wid, results) == 2
    assert (await backend.queue.get(b.id)).result == {"n": 2}
    assert await backend.queue.complete_many(wid, []) == 0
    for bad in ({"id": str(a.id), "attempt": 1}, [{"id": str(a.id)}], ["x"]):
        with pytest.raises(InvalidArgument):
            await backend.raw("complete_jobs", {"p_worker_id": wid, "p_jobs": bad})


@covers("retry_failed_jobs")
async def test_retry_failed_jobs_requeues_the_failed_jobs_of_one_queue(backend: Backend) -> None:
    failed, cancelled = await backend.enqueue(), await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    await backend.queue.fail(job, wid, "broken", retryable=False)
    await backend.queue.cancel(cancelled)
    assert await backend.queue.retry_failed(f"{backend.queue_name}-other") == 0
    assert await backend.queue.retry_failed(backend.queue_name) == 1
    row = await backend.queue.get(failed)
    assert (row.status, row.retry_count, row.error_message) == (JobStatus.PENDING, 0, None)
    assert (await backend.queue.get(cancelled)).status == JobStatus.CANCELLED


# -- what each write leaves in the row ---------------------------------------------------
@covers("complete_job", "fail_job")
async def test_completing_a_retried_job_clears_its_error(backend: Backend) -> None:
    job_id = await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name], start=True)
    await backend.queue.fail(job, wid, "flaky", retryable=True)
    backend.shift_back(job_id, "run_at", HOUR)  # its backoff has passed
    (again,) = await backend.queue.claim(wid, 1, [backend.queue_name], start=True)
    assert await backend.queue.complete(again, wid, {"ok": True})
    row = await backend.queue.get(job_id)
    assert (row.status, row.error_message, row.progress_percent) == (
        JobStatus.COMPLETED,
        None,
        100,
    )


@covers("fail_job", "report_progress", "retry_job")
async def test_a_failed_attempt_and_a_retry_clear_what_the_attempt_left(
    backend: Backend,
) -> None:
    job_id = await backend.enqueue(max_attempts=5)
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name], start=True)
    await backend.queue.progress(job, wid, 40, "reading")
    retried = await backend.queue.fail(job, wid, "x" * 20_000, retryable=True)
    assert retried is not None
    assert (retried.progress_percent, retried.progress_message, retried.started_at) == (
        None,
        None,
        None,
    )
    assert retried.error_message == "x" * 10_000  # kept to 10,000 characters
    backend.shift_back(job_id, "run_at", HOUR)
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name], start=True)
    await backend.queue.progress(job, wid, 50, "parsing")
    failed = await backend.queue.fail(job, wid, "corrupt", retryable=False)
    assert failed is not None
    assert (failed.status, failed.progress_percent, failed.assigned_to) == (
        JobStatus.FAILED,
        50,
        wid,
    )  # a finished attempt keeps its trace
    row = await backend.queue.retry(job_id)
    assert (row.progress_percent, row.progress_message, row.error_message) == (None, None, None)
    assert (row.assigned_to, row.assigned_at, row.started_at, row.completed_at) == (
        None,
        None,
        None,
        None,
    )


@covers("report_progress")
async def test_progress_is_rounded_checked_and_keeps_the_last_message(backend: Backend) -> None:
    await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name], start=True)
    assert await backend.queue.progress(job, wid, 33.3333, "reading")
    assert (await backend.queue.get(job.id)).progress_percent == 33.33
    assert await backend.queue.progress(job, wid, 60, None)  # no message: keep the last
    row = await backend.queue.get(job.id)
    assert (row.progress_percent, row.progress_message) == (60, "reading")
    assert await backend.queue.progress(job, wid, 12.345, "m" * 1500)
    row = await backend.queue.get(job.id)
    assert (row.progress_percent, row.progress_message) == (12.35, "m" * 1000)
    for percent in (-1, 100.5):
        with pytest.raises(InvalidArgument):
            await backend.queue.progress(job, wid, percent, None)
    with pytest.raises(InvalidArgument):  # checked before the fence
        await backend.queue.progress(job, "intruder", 150, None)


@covers("cancel_job", "job_history", "report_progress")
async def test_a_cancel_request_is_history_and_a_cancel_clears_progress(
    backend: Backend,
) -> None:
    running, waiting = await backend.enqueue(), await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name], start=True)
    assert job.id == running
    await backend.queue.cancel(running)
    last = (await backend.queue.history(running))[-1]
    assert (last.event, last.from_status, last.to_status, last.worker_id) == (
        "cancel_requested",
        "processing",
        "processing",
        wid,
    )
    (assigned,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    assert assigned.id == waiting
    await backend.queue.progress(assigned, wid, 30, "queued locally")
    row = await backend.queue.cancel(waiting)
    assert (row.status, row.progress_percent, row.progress_message) == (
        JobStatus.CANCELLED,
        None,
        None,
    )


@covers("heartbeat_worker", "cancel_job")
async def test_heartbeat_lists_are_ordered_by_job_id(backend: Backend) -> None:
    for _ in range(6):
        await backend.enqueue()
    wid = await backend.worker(slots=6)
    claimed = await backend.queue.claim(wid, 6, [backend.queue_name], start=True)
    for job in claimed[:3]:
        await backend.queue.cancel(job.id)
    strangers = [uuid.uuid4() for _ in range(5)]
    reply = await backend.queue.heartbeat(wid, strangers + strangers[:2])
    assert reply.lost == sorted(strangers)
    assert reply.cancel == sorted(j.id for j in claimed[:3])
    assert [(o.id, o.attempt) for o in reply.orphaned] == sorted((j.id, 1) for j in claimed)
