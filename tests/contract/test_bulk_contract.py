"""Bulk enqueue in the contract: enqueue_jobs answers the same in the model and in SQL (order,
own options, idempotence, fair tags per owner, a bad element's index, quotas)."""

from __future__ import annotations

import uuid

import pytest

from supaworker import rpc
from supaworker.exceptions import InvalidArgument, NotFound, QuotaExceeded
from supaworker.models import JobStatus
from tests.contract.conftest import Backend, covers


@covers("enqueue_jobs", "claim_next_job")
async def test_bulk_enqueue_keeps_order_options_and_turns(backend: Backend) -> None:
    other = backend.new_owner()
    a = [backend.new_document() for _ in range(3)]
    b = [other() for _ in range(2)]
    items: list[rpc.BulkItem] = [a[0], a[1], (a[2], {"payload": {"n": 2}}), b[0], b[1]]
    jobs = await backend.queue.enqueue_many(items, queue=backend.queue_name, max_attempts=3)
    assert [j.user_document_id for j in jobs] == [a[0], a[1], a[2], b[0], b[1]]
    assert [j.payload for j in jobs] == [{}, {}, {"n": 2}, {}, {}]
    assert {(j.status, j.max_attempts) for j in jobs} == {(JobStatus.PENDING, 3)}
    wid = await backend.worker(slots=10)
    claimed = await backend.queue.claim(wid, 10, [backend.queue_name])
    # Both owners' batches start at the same turn: A, B, A, B, A.
    by_doc = {j.user_document_id: j.id for j in jobs}
    assert [j.id for j in claimed] == [by_doc[d] for d in (a[0], b[0], a[1], b[1], a[2])]


@covers("enqueue_jobs", "enqueue_job")
async def test_bulk_enqueue_is_idempotent_per_document(backend: Backend) -> None:
    doc = backend.new_document()
    single = await backend.queue.enqueue(doc, queue=backend.queue_name, priority=2)
    fresh = backend.new_document()
    jobs = await backend.queue.enqueue_many([doc, fresh, fresh], queue=backend.queue_name)
    assert jobs[0].id == single.id and jobs[0].priority == 2  # active: unchanged
    assert jobs[1].id == jobs[2].id  # one job per document
    assert len(await backend.queue.jobs(queue=backend.queue_name)) == 2


@covers("enqueue_jobs")
async def test_a_bad_element_refuses_the_whole_call(backend: Backend) -> None:
    docs = [backend.new_document() for _ in range(3)]
    with pytest.raises(InvalidArgument) as refused:
        await backend.queue.enqueue_many(
            [docs[0], (docs[1], {"max_attempts": 0}), docs[2]], queue=backend.queue_name
        )
    assert str(refused.value).startswith("p_jobs[1]: max_attempts must be between 1 and 100")
    with pytest.raises(NotFound) as missing:
        await backend.queue.enqueue_many([docs[0], uuid.uuid4()], queue=backend.queue_name)
    assert str(missing.value).startswith("p_jobs[1]: document ")
    assert await backend.queue.jobs(queue=backend.queue_name) == []


@covers("enqueue_jobs")
async def test_bulk_enqueue_applies_the_quota(backend: Backend) -> None:
    backend.set_limits(None, 2)
    docs = [backend.new_document() for _ in range(3)]
    with pytest.raises(QuotaExceeded) as refused:
        await backend.queue.enqueue_many(docs, queue=backend.queue_name)
    assert "has 0 pending or running jobs and this call adds 3; max_pending_per_user is 2" in str(
        refused.value
    )
    assert await backend.queue.jobs(queue=backend.queue_name) == []
    assert len(await backend.queue.enqueue_many(docs[:2], queue=backend.queue_name)) == 2
