"""Flow control (issue 18) in the contract: the in-memory model and the SQL claim take turns
across owners the same way (docs/queue-semantics.md, "Fair order")."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from supaworker.exceptions import InvalidArgument, QuotaExceeded, Snooze
from supaworker.models import Job, JobStatus
from tests.contract.conftest import Backend, covers


async def claim_one_by_one(backend: Backend, worker: str, count: int) -> list[uuid.UUID]:
    order = []
    for _ in range(count):
        (job,) = await backend.queue.claim(worker, 1, [backend.queue_name])
        assert await backend.queue.complete(job, worker, None)
        order.append(job.id)
    return order


async def enqueue_for(backend: Backend, owner: object, count: int, **kw: object) -> list[uuid.UUID]:
    make = owner if callable(owner) else backend.new_document
    jobs: list[Job] = [
        await backend.queue.enqueue(make(), queue=backend.queue_name, **kw)  # type: ignore[arg-type]
        for _ in range(count)
    ]
    return [j.id for j in jobs]


@covers("enqueue_job", "claim_next_job", "complete_job")
async def test_claim_takes_turns_across_owners(backend: Backend) -> None:
    a = await enqueue_for(backend, backend.new_document, 5)
    b = await enqueue_for(backend, backend.new_owner(), 2)
    wid = await backend.worker(slots=1)
    order = await claim_one_by_one(backend, wid, 7)
    assert order == [a[0], b[0], a[1], b[1], a[2], a[3], a[4]]


@covers("enqueue_job", "claim_next_job")
async def test_a_batch_claim_takes_the_same_turns(backend: Backend) -> None:
    a = await enqueue_for(backend, backend.new_document, 3)
    b = await enqueue_for(backend, backend.new_owner(), 3)
    c = await enqueue_for(backend, backend.new_owner(), 1)
    wid = await backend.worker(slots=10)
    batch = await backend.queue.claim(wid, 5, [backend.queue_name])
    assert [j.id for j in batch] == [a[0], b[0], c[0], a[1], b[1]]


@covers("enqueue_job", "claim_next_job", "complete_job")
async def test_an_owner_back_from_idle_takes_the_current_turn(backend: Backend) -> None:
    wid = await backend.worker(slots=1)
    await enqueue_for(backend, backend.new_document, 4)
    await claim_one_by_one(backend, wid, 4)  # the level is idle; this owner's last tag is 3
    b = await enqueue_for(backend, backend.new_owner(), 4)
    (again,) = await enqueue_for(backend, backend.new_document, 1)
    order = await claim_one_by_one(backend, wid, 5)
    assert order == [b[0], b[1], again, b[2], b[3]]


@covers("enqueue_job", "claim_next_job")
async def test_service_priority_still_orders_across_owners(backend: Backend) -> None:
    a = await enqueue_for(backend, backend.new_document, 2)
    (urgent,) = await enqueue_for(backend, backend.new_owner(), 1, priority=3)
    wid = await backend.worker(slots=10)
    batch = await backend.queue.claim(wid, 3, [backend.queue_name])
    assert [j.id for j in batch] == [urgent, a[0], a[1]]


@covers("fail_job", "retry_job")
async def test_a_retry_keeps_its_turn_a_new_cycle_goes_to_the_back(backend: Backend) -> None:
    a = await enqueue_for(backend, backend.new_document, 3)
    b = await enqueue_for(backend, backend.new_owner(), 1)
    wid = await backend.worker(slots=1)
    (first,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    assert first.id == a[0]
    failed = await backend.queue.fail(first, wid, "corrupt", retryable=False)
    assert failed is not None
    await backend.queue.retry(a[0])  # a new cycle: after the owner's last job (a[2])
    order = await claim_one_by_one(backend, wid, 4)
    assert order == [b[0], a[1], a[2], a[0]]


@covers("claim_next_job", "complete_job")
async def test_max_running_per_user_caps_an_owner_over_workers(backend: Backend) -> None:
    a = await enqueue_for(backend, backend.new_document, 4)
    b = await enqueue_for(backend, backend.new_owner(), 2)
    backend.set_limits(2, None)
    one, two = await backend.worker(slots=10), await backend.worker(slots=10)
    first = await backend.queue.claim(one, 10, [backend.queue_name])
    assert [j.id for j in first] == [a[0], b[0], a[1], b[1]]
    assert await backend.queue.claim(two, 10, [backend.queue_name]) == []
    assert await backend.queue.complete(first[0], one, None)
    assert [j.id for j in await backend.queue.claim(two, 10, [backend.queue_name])] == [a[2]]


@covers("enqueue_job")
async def test_max_pending_per_user_refuses_new_work_only(backend: Backend) -> None:
    backend.set_limits(None, 2)
    docs = [backend.new_document() for _ in range(3)]
    first = await backend.queue.enqueue(docs[0], queue=backend.queue_name)
    await backend.queue.enqueue(docs[1], queue=backend.queue_name)
    with pytest.raises(QuotaExceeded) as refused:
        await backend.queue.enqueue(docs[2], queue=backend.queue_name)
    assert refused.value.code == "PT429"
    assert "has 2 pending or running jobs; max_pending_per_user is 2" in str(refused.value)
    listed = await backend.queue.jobs(queue=backend.queue_name)
    assert len(listed) == 2  # nothing was written for the refused document
    again = await backend.queue.enqueue(docs[0], queue=backend.queue_name)
    assert again.id == first.id  # repeating an active enqueue is not new work
    other = await enqueue_for(backend, backend.new_owner(), 2)  # another owner's own quota
    assert len(other) == 2


@covers("enqueue_job", "claim_next_job", "queue_stats")
async def test_routing_by_numbers(backend: Backend) -> None:
    big = await backend.enqueue(requires={"max_file_size": {"gte": 20971520}})
    picky = await backend.enqueue(requires={"lang": {"in": ["de", "fr"]}, "ocr": True})
    stats = await backend.queue.stats()
    assert stats.no_capable_worker.get(backend.queue_name) == 2
    seed = await backend.worker(capabilities={"max_file_size": 10485760, "lang": "de"})
    assert await backend.queue.claim(seed, 5, [backend.queue_name]) == []
    large = await backend.worker(
        capabilities={"max_file_size": 52428800, "lang": "de", "ocr": True}
    )
    claimed = await backend.queue.claim(large, 5, [backend.queue_name])
    assert [j.id for j in claimed] == [big, picky]


@covers("enqueue_job")
async def test_a_malformed_comparison_is_an_invalid_argument(backend: Backend) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await backend.enqueue(requires={"max_file_size": {"gte": "20MB"}})
    assert refused.value.code == "22023"
    assert "p_requires.max_file_size: gte and lte take a number" in str(refused.value)
    assert await backend.queue.jobs(queue=backend.queue_name) == []


@covers("enqueue_job", "claim_next_job", "complete_job")
async def test_a_concurrency_key_caps_its_jobs_over_workers(backend: Backend) -> None:
    key = f"gpu-{uuid.uuid4().hex[:8]}"
    backend.set_concurrency_limit(key, 2)
    gpu = await enqueue_for(backend, backend.new_document, 3, concurrency_key=key)
    plain = await enqueue_for(backend, backend.new_owner(), 2)
    one, two = await backend.worker(slots=10), await backend.worker(slots=10)
    first = await backend.queue.claim(one, 10, [backend.queue_name])
    # The key's third job waits; other work is not held up behind it.
    assert [j.id for j in first] == [gpu[0], plain[0], gpu[1], plain[1]]
    assert await backend.queue.claim(two, 10, [backend.queue_name]) == []
    assert await backend.queue.complete(first[0], one, None)
    assert [j.id for j in await backend.queue.claim(two, 10, [backend.queue_name])] == [gpu[2]]


@covers("enqueue_job", "claim_next_job")
async def test_a_rate_limit_never_starts_more_than_the_bucket_holds(backend: Backend) -> None:
    key = f"ocr-api-{uuid.uuid4().hex[:8]}"
    backend.set_rate_limit(key, 0.001, 3)  # a burst of 3, then one per 1000 s
    limited = await enqueue_for(backend, backend.new_document, 5, rate_limit_key=key)
    wid = await backend.worker(slots=10)
    first = await backend.queue.claim(wid, 10, [backend.queue_name])
    assert [j.id for j in first] == limited[:3]
    assert await backend.queue.claim(wid, 10, [backend.queue_name]) == []


@covers("snooze_job", "job_history")
async def test_a_snooze_spends_no_attempt(backend: Backend) -> None:
    job_id = await backend.enqueue(max_attempts=1)
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    snoozed = await backend.queue.snooze(job, wid, 30)
    assert snoozed is not None
    assert (snoozed.status, snoozed.retry_count, snoozed.assigned_to) == (
        JobStatus.PENDING,
        0,
        None,
    )
    assert snoozed.run_at is not None and job.run_at is not None
    assert 29 <= (snoozed.run_at - job.run_at).total_seconds() <= 90
    assert await backend.queue.snooze(job, wid, 30) is None  # fenced: not this attempt any more
    assert await backend.queue.claim(wid, 1, [backend.queue_name]) == []  # not due for 30 s
    events = await backend.queue.history(job_id)
    assert [e.event for e in events][-1] == "snoozed"
    assert (events[-1].message or "").startswith("snoozed until ")
    backend.shift_back(job_id, "run_at", timedelta(seconds=31))
    (again,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    assert (again.attempt, again.retry_count) == (2, 0)  # max_attempts 1, still runnable


@covers("snooze_job")
async def test_a_snooze_outside_its_range_is_refused(backend: Backend) -> None:
    await backend.enqueue()
    wid = await backend.worker()
    (job,) = await backend.queue.claim(wid, 1, [backend.queue_name])
    with pytest.raises(InvalidArgument):
        await backend.raw(
            "snooze_job",
            {"p_job_id": str(job.id), "p_worker_id": wid, "p_attempt": job.attempt, "p_seconds": 0},
        )
    with pytest.raises(ValueError):
        Snooze(0)
    assert Snooze(2.5).seconds == 2.5
