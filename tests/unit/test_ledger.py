"""supaworker/worker/ledger.py: what the worker holds, its free slots, and how many jobs a
completion call may claim."""

from __future__ import annotations

import asyncio

from supaworker.worker.handler import JobContext
from supaworker.worker.ledger import Ledger, RunningJob
from tests.unit.worker_doubles import a_job


async def running(ledger: Ledger) -> RunningJob:
    job = a_job()
    task = asyncio.create_task(asyncio.sleep(0))
    entry = RunningJob(job, JobContext(job=job, worker_id="w1", logger=None), task)  # type: ignore[arg-type]
    ledger.add_running(entry)
    await task
    return entry


async def test_owned_ids_cover_running_waiting_and_finishing() -> None:
    ledger = Ledger(concurrency=2, prefetch=4)
    assert ledger.idle() and ledger.free_slots() == 2
    run = await running(ledger)
    waiting, writing = a_job(), a_job()
    ledger.prefetch.hold(waiting)
    ledger.writing([writing.id])
    assert sorted(ledger.owned_ids()) == sorted([run.job.id, waiting.id, writing.id])
    assert ledger.free_slots() == 1 and not ledger.idle()
    ledger.written([writing.id])
    ledger.remove_running(run.job.id, run.task)
    assert ledger.prefetch.next() == waiting
    assert ledger.idle() and ledger.owned_ids() == []


async def test_a_newer_attempts_task_is_not_removed_by_the_older_one() -> None:
    ledger = Ledger(concurrency=1, prefetch=0)
    old = await running(ledger)
    newer = RunningJob(old.job, old.ctx, asyncio.create_task(asyncio.sleep(0)))
    ledger.add_running(newer)
    ledger.remove_running(old.job.id, old.task)
    assert ledger.running[old.job.id] is newer
    await newer.task


async def test_a_completion_call_claims_the_slots_its_jobs_free() -> None:
    ledger = Ledger(concurrency=4, prefetch=0)
    for _ in range(2):
        await running(ledger)
    done = [a_job(), a_job()]
    ledger.writing([j.id for j in done])  # two finished, their outcome not written yet
    claim = ledger.reserve(2)
    # 4 slots - 2 running (the 2 being completed free theirs in the same call).
    assert (claim.completing, claim.limit) == (2, 2)
    assert ledger.claims_in_flight == 1
    # A second call while the first is out: its reserved jobs count as held.
    second = ledger.reserve(0)
    assert second.limit == 0 and ledger.claims_in_flight == 1
    ledger.settle(claim)
    ledger.settle(second)
    assert ledger.claims_in_flight == 0


async def test_no_claim_while_not_allowed_and_the_counts_stay_balanced() -> None:
    """Paused or stopping: nothing is claimed, and settling that call leaves the counts as
    they were (a call settled without being counted made the next claims too small)."""
    ledger = Ledger(concurrency=2, prefetch=0)
    blocked = ledger.reserve(1, may_claim=False)
    assert blocked.limit == 0
    ledger.settle(blocked)
    assert ledger.reserve(0).limit == 2


def test_prefetch_allowance_goes_on_top_of_the_slots() -> None:
    ledger = Ledger(concurrency=1, prefetch=3)
    ledger.prefetch.observe_run(0.001)
    ledger.prefetch.observe_round_trip(0.01)
    claim = ledger.reserve(0)
    assert (claim.limit, claim.prefetch) == (4, 3)
