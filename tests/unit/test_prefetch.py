"""supaworker/worker/prefetch.py and the worker's use of it: how many jobs to hold beyond the
slots, and what happens to held jobs that are cancelled, wait too long, or meet a shutdown
(against the in-memory model of the SQL; the contract suite checks it against the real one)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from supaworker import Job
from supaworker.testing import InMemoryTransport
from supaworker.worker.loop import EXIT_OK, Worker
from supaworker.worker.prefetch import Prefetch
from tests.unit.worker_doubles import enqueue, worker_on


def test_no_prefetch_until_jobs_and_round_trips_are_measured() -> None:
    prefetch = Prefetch(32)
    assert prefetch.allowance(4) == 0
    prefetch.observe_run(0.001)
    assert prefetch.allowance(4) == 0  # no round trip measured yet
    prefetch.observe_round_trip(0.004)
    assert prefetch.allowance(1) == 4  # one slot finishes 4 jobs during one round trip
    assert prefetch.allowance(16) == 32  # capped by the setting
    assert Prefetch(0).allowance(16) == 0


def test_jobs_longer_than_a_round_trip_are_never_prefetched() -> None:
    prefetch = Prefetch(32)
    prefetch.observe_round_trip(0.02)
    for _ in range(5):
        prefetch.observe_run(3.0)
    assert prefetch.allowance(8) == 0
    for _ in range(60):  # the jobs got short: the average follows
        prefetch.observe_run(0.0005)
    assert prefetch.allowance(1) == 32


class OverHttp(InMemoryTransport):
    """Each call takes a couple of milliseconds, as a round trip to the API does."""

    async def call(self, function: str, params: Any) -> Any:
        await asyncio.sleep(0.002)
        return await super().call(function, params)


def make(
    handler: Any, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> tuple[Worker, InMemoryTransport]:
    fake = OverHttp()
    worker = worker_on(
        fake,
        handler,
        **{"concurrency": 1, "prefetch": 3, "complete_batch_size": 100, **overrides},
    )
    # As if short jobs had run already: prefetch up to the setting from the first call on.
    worker.ledger.prefetch.observe_run(0.0001)
    worker.ledger.prefetch.observe_round_trip(0.01)
    return worker, fake


async def test_short_jobs_are_claimed_several_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[uuid.UUID] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    worker, fake = make(handler, monkeypatch)
    ids = enqueue(fake, 40)
    assert await worker.run() == EXIT_OK
    assert sorted(ran) == sorted(ids)  # each exactly once
    assert all(fake.jobs[i]["status"] == "completed" for i in ids)
    # One slot, but each call claims the freed slot plus up to 3 held, and completes the jobs
    # that finished meanwhile: far fewer than the 80 calls of a claim and a completion per job.
    calls = sum(
        fake.calls.count(f)
        for f in ("complete_and_claim", "claim_next_job", "complete_job", "complete_jobs")
    )
    assert calls <= 24


class Gate:
    """The second job blocks until released, with the next ones held behind it."""

    def __init__(self) -> None:
        self.ran: list[uuid.UUID] = []
        self.blocking = asyncio.Event()
        self.release = asyncio.Event()

    async def handler(self, job: Job) -> None:
        self.ran.append(job.id)
        if len(self.ran) == 2:
            self.blocking.set()
            await self.release.wait()


async def start_gated(
    monkeypatch: pytest.MonkeyPatch, n: int, **overrides: Any
) -> tuple[Worker, InMemoryTransport, Gate, list[uuid.UUID], asyncio.Task[int]]:
    gate = Gate()
    worker, fake = make(gate.handler, monkeypatch, **overrides)
    ids = enqueue(fake, n)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(gate.blocking.wait(), 5)
    return worker, fake, gate, ids, task


def held(worker: Worker) -> list[uuid.UUID]:
    return worker.ledger.prefetch.ids()


async def test_a_held_job_that_is_cancelled_never_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    worker, fake, gate, ids, task = await start_gated(monkeypatch, 6, heartbeat_interval=5)
    waiting = held(worker)
    assert waiting and all(fake.jobs[j]["status"] == "processing" for j in waiting)
    victim = waiting[0]
    fake.fn_cancel_job(str(victim))
    worker.heartbeat.request()  # the heartbeat brings the cancel request
    for _ in range(200):
        if fake.jobs[victim]["status"] == "cancelled":
            break
        await asyncio.sleep(0.01)
    assert fake.jobs[victim]["status"] == "cancelled"
    gate.release.set()
    assert await task == EXIT_OK
    assert victim not in gate.ran
    assert all(fake.jobs[j]["status"] == "completed" for j in ids if j != victim)


async def test_shutdown_gives_held_jobs_back_without_spending_an_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker, fake, gate, _ids, task = await start_gated(monkeypatch, 6, heartbeat_interval=5)
    waiting = held(worker)
    assert waiting
    worker.request_stop()
    for _ in range(200):
        if all(fake.jobs[j]["status"] == "pending" for j in waiting):
            break
        await asyncio.sleep(0.01)
    gate.release.set()
    assert await task == EXIT_OK
    for job_id in waiting:
        row = fake.jobs[job_id]
        assert (row["status"], row["retry_count"], row["assigned_to"]) == ("pending", 0, None)
        assert job_id not in gate.ran


async def test_held_jobs_stuck_behind_a_long_job_go_back_to_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The held jobs wait behind a job far longer than the average: at the next heartbeat
    after one interval they are released, and another worker (here this one, later) runs
    them. Nothing runs twice, nothing is lost."""
    worker, fake, gate, ids, task = await start_gated(monkeypatch, 6, heartbeat_interval=0.05)
    waiting = held(worker)
    assert waiting
    for _ in range(200):
        if not held(worker):
            break
        await asyncio.sleep(0.01)
    assert held(worker) == []
    assert all(fake.jobs[j]["status"] == "pending" for j in waiting)
    gate.release.set()
    assert await task == EXIT_OK
    assert sorted(gate.ran) == sorted(ids)
    assert all(fake.jobs[j]["status"] == "completed" for j in ids)
    assert "release_jobs" in fake.calls


async def test_jobs_claimed_after_shutdown_began_are_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A completion call in flight when the stop comes still claims: what it brings back is
    released at once, not run and not left assigned."""
    ran: list[uuid.UUID] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)

    worker, fake = make(handler, monkeypatch, burst=False)
    ids = enqueue(fake, 30)
    original = fake.fn_complete_and_claim
    late: list[uuid.UUID] = []

    def stop_then_claim(*args: Any, **kwargs: Any) -> dict[str, Any]:
        worker.request_stop()  # the stop arrives while this call is being answered
        answer = original(*args, **kwargs)
        late.extend(uuid.UUID(str(row["id"])) for row in answer["claimed"])
        return answer

    fake.fn_complete_and_claim = stop_then_claim  # type: ignore[method-assign]
    assert await asyncio.wait_for(worker.run(), 10) == EXIT_OK
    assert late and not set(late) & set(ran)  # claimed after the stop: never run
    statuses = {fake.jobs[j]["status"] for j in ids}
    assert statuses <= {"completed", "pending"}
    assert all(fake.jobs[j]["status"] == "completed" for j in ran)
    assert all(fake.jobs[j]["status"] == "pending" for j in ids if j not in ran)
    assert all(fake.jobs[j]["assigned_to"] is None for j in ids if j not in ran)
    assert "release_jobs" in fake.calls
