"""supaworker/worker/batching.py: completions written together, each job told its outcome,
against the in-memory model of the SQL (the same answers as the real functions: the
contract suite)."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest

from supaworker import Job
from supaworker.exceptions import InvalidArgument, NotFound, RequestTimeout, RpcError
from supaworker.testing import InMemoryTransport
from supaworker.worker.loop import EXIT_OK, Worker
from tests.unit.worker_doubles import enqueue, unit_settings, worker_on


def make(
    handler: Any, monkeypatch: pytest.MonkeyPatch, *, size: int = 10, concurrency: int = 8
) -> tuple[Worker, InMemoryTransport]:
    fake = InMemoryTransport()
    return worker_on(fake, handler, concurrency=concurrency, complete_batch_size=size), fake


async def noop(job: Job) -> dict[str, str]:
    return {"doc": str(job.user_document_id)}


def test_on_by_default_and_off_with_size_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPAWORKER_COMPLETE_BATCH_SIZE", raising=False)
    assert unit_settings().complete_batch_size == 100
    worker, _ = make(noop, monkeypatch, size=0)
    assert worker.completer.batcher is None


def test_the_worker_reads_its_batch_settings_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The settings object is the one source (the CLI's --env-file reaches it; a variable
    in the worker's own environment does not override what it was given)."""
    monkeypatch.setenv("SUPAWORKER_COMPLETE_BATCH_SIZE", "0")
    worker, _ = make(noop, monkeypatch, size=7)
    assert worker.completer.batcher is not None and worker.completer.batcher.size == 7
    # The variables are read by WorkerSettings, once, like every other setting.
    monkeypatch.setenv("SUPAWORKER_COMPLETE_BATCH_SIZE", "3")
    monkeypatch.setenv("SUPAWORKER_COMPLETE_BATCH_DELAY", "0.5")
    worker = worker_on(InMemoryTransport(), noop)
    assert worker.completer.batcher is not None
    assert (worker.completer.batcher.size, worker.completer.batcher.delay) == (3, 0.5)


async def test_jobs_finishing_in_the_same_turn_share_one_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A claim's worth of no-op jobs ends in one turn of the event loop: one call for all
    eight, not complete_job for the first and a batch for the other seven."""
    worker, fake = make(noop, monkeypatch, size=100, concurrency=8)
    ids = enqueue(fake, 8)
    assert await worker.run() == EXIT_OK
    assert all(fake.jobs[i]["status"] == "completed" for i in ids)
    writes = [c for c in fake.calls if c.startswith("complete")]
    assert writes == ["complete_and_claim"]


async def test_completions_are_batched_and_results_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    worker, fake = make(noop, monkeypatch)
    ids = enqueue(fake, 24)
    assert await worker.run() == EXIT_OK
    assert all(fake.jobs[i]["status"] == "completed" for i in ids)
    assert all(
        fake.jobs[i]["result"] == {"doc": str(fake.jobs[i]["user_document_id"])} for i in ids
    )
    assert worker.state.completed == 24
    # 24 jobs through 8 slots: completions went out with the next claims, not one by one.
    assert fake.calls.count("complete_and_claim") >= 1
    assert fake.calls.count("complete_job") < 24


class LosesAnswers(InMemoryTransport):
    """Runs the call, then loses its answer (a timeout after the database committed)."""

    lose: dict[str, int]

    async def call(self, function: str, params: Any) -> Any:
        out = await super().call(function, params)
        if self.lose.get(function, 0) > 0:
            self.lose[function] -= 1
            raise RequestTimeout(f"{function}: answer lost")
        return out


async def test_lost_answer_of_complete_and_claim_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """complete_and_claim landed but its answer was lost: the completions are confirmed job by
    job (complete_job answers False, the look-up finds them completed by us), and the jobs it
    claimed, which the worker never saw, come back as orphans in a heartbeat and are
    released, then claimed again. Every job ends completed, none runs twice."""
    fake = LosesAnswers()
    fake.lose = {"complete_and_claim": 2}
    runs: list[uuid.UUID] = []

    async def handler(job: Job) -> None:
        runs.append(job.id)

    worker = worker_on(fake, handler, concurrency=4, burst=False, complete_batch_size=10)
    ids = enqueue(fake, 20)
    task = asyncio.create_task(worker.run())
    for _ in range(500):
        if all(fake.jobs[i]["status"] == "completed" for i in ids):
            break
        await asyncio.sleep(0.01)
    worker.request_stop()
    assert await task == EXIT_OK
    assert [fake.jobs[i]["status"] for i in ids] == ["completed"] * 20
    assert sorted(runs) == sorted(ids)  # each ran exactly once
    assert fake.calls.count("release_jobs") >= 1  # the orphans of the lost claims
    assert fake.calls.count("get_job") >= 1  # completions confirmed after a lost answer
    assert worker.state.completed == 20


async def test_refused_complete_and_claim_falls_back_to_complete_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database without complete_and_claim: completions go with complete_jobs, claims with
    claim_next_job, as before the function existed."""
    worker, fake = make(noop, monkeypatch)
    fake.fail_next["complete_and_claim"] = NotFound("no such function", code="PGRST202")
    ids = enqueue(fake, 16)
    assert await worker.run() == EXIT_OK
    assert all(fake.jobs[i]["status"] == "completed" for i in ids)
    assert fake.calls.count("complete_and_claim") == 1
    assert fake.calls.count("complete_jobs") >= 1
    assert worker.completer.batcher is not None and not worker.completer.batcher.claims_along


async def test_missing_complete_jobs_disables_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    worker, fake = make(noop, monkeypatch)
    fake.fail_next["complete_and_claim"] = NotFound("no such function", code="PGRST202")
    fake.fail_next["complete_jobs"] = NotFound("no such function", code="PGRST202")
    ids = enqueue(fake, 16)
    assert await worker.run() == EXIT_OK
    assert all(fake.jobs[i]["status"] == "completed" for i in ids)
    assert worker.completer.batcher is not None and worker.completer.batcher._disabled


@pytest.mark.parametrize(
    "refusal",
    [
        RpcError("could not serialize access", code="40001"),
        RpcError("deadlock detected", code="40P01"),
        InvalidArgument("bad result", code="22023"),
    ],
)
async def test_other_refusals_turn_nothing_off(
    monkeypatch: pytest.MonkeyPatch, refusal: RpcError
) -> None:
    """Only a missing function (PGRST202) says a call will never work here: a serialization
    failure, a deadlock or a refused batch sends that batch's jobs one by one, and the next
    completions go with complete_and_claim again."""
    worker, fake = make(noop, monkeypatch, concurrency=2)
    fake.fail_next["complete_and_claim"] = refusal
    ids = enqueue(fake, 12)
    assert await worker.run() == EXIT_OK
    assert all(fake.jobs[i]["status"] == "completed" for i in ids)
    batcher = worker.completer.batcher
    assert batcher is not None and batcher.claims_along and not batcher._disabled
    assert fake.calls.count("complete_and_claim") >= 2


async def test_a_job_the_batcher_hands_back_stays_owned_while_written_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When batching is off (here: refused), each job's own complete_job goes out after the
    batcher's answer; until it lands the job must still be in the worker's heartbeats, or the
    heartbeat would report it orphaned and the worker release a job it is completing."""
    worker, fake = make(noop, monkeypatch)
    fake.fail_next["complete_and_claim"] = NotFound("no such function", code="PGRST202")
    fake.fail_next["complete_jobs"] = NotFound("no such function", code="PGRST202")
    owned_while_writing: list[bool] = []
    original = fake.call

    async def call(function: str, params: Any) -> Any:
        if function == "complete_job":
            owned_while_writing.append(uuid.UUID(params["p_job_id"]) in worker.owned_ids())
        return await original(function, params)

    monkeypatch.setattr(fake, "call", call)
    ids = enqueue(fake, 16)
    assert await worker.run() == EXIT_OK
    assert all(fake.jobs[i]["status"] == "completed" for i in ids)
    assert owned_while_writing and all(owned_while_writing)


async def test_fenced_job_in_a_batch_is_reported_lost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    victim: list[uuid.UUID] = []

    async def handler(job: Job) -> None:
        await asyncio.sleep(0.01)
        if job.id == victim[0]:
            # Rescued while running: another attempt owns it now.
            fake.jobs[job.id]["attempt"] += 1

    worker, fake = make(handler, monkeypatch, size=4, concurrency=4)
    ids = enqueue(fake, 4)
    victim.append(ids[0])
    caplog.set_level("INFO", "supaworker.worker")
    assert await worker.run() == EXIT_OK
    lost = [r for r in caplog.records if getattr(r, "action", "") == "job_lost"]
    done = [r for r in caplog.records if getattr(r, "action", "") == "jobs_completed"]
    assert [r.job_id for r in lost] == [str(ids[0])]
    assert sorted(i for r in done for i in r.job_ids) == sorted(str(i) for i in ids[1:])
    assert sum(r.count for r in done) == 3


class SlowTransport(InMemoryTransport):
    """Each call is answered a little after it took effect, as over HTTP: a claim can be
    evaluated before a completion commits and answered after that completion's answer."""

    async def call(self, function: str, params: Any) -> Any:
        await asyncio.sleep(random.uniform(0.0, 0.004))
        out = await super().call(function, params)
        await asyncio.sleep(random.uniform(0.0, 0.004))
        return out


@pytest.mark.parametrize("size", [0, 50])
async def test_burst_does_not_stop_while_a_completion_is_in_flight(
    monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Regression: a burst worker at concurrency 1 stopped after a few jobs when its claim
    was evaluated before the previous job's completion committed (no free slot yet)."""
    fake = SlowTransport()
    worker = worker_on(
        fake, noop, concurrency=1, poll_interval=5, heartbeat_interval=5, complete_batch_size=size
    )
    ids = enqueue(fake, 60)
    assert await worker.run() == EXIT_OK
    assert [fake.jobs[i]["status"] for i in ids] == ["completed"] * 60
