"""supaworker/worker/heartbeat.py: the beat and acting on its reply, against a recording
target (the worker's side) and the in-memory model of the SQL functions."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from supaworker import Job
from supaworker.client import AsyncQueueClient
from supaworker.exceptions import ConfigurationError, NotFound, PermissionDenied
from supaworker.models import HeartbeatReply, OrphanedJob, WorkerStatus
from supaworker.testing import InMemoryTransport
from supaworker.worker.heartbeat import Heartbeat
from supaworker.worker.ledger import StopReason
from supaworker.worker.loop import EXIT_OK
from tests.unit.worker_doubles import enqueue, worker_on


class Target:
    def __init__(self) -> None:
        self.owned: list[uuid.UUID] = []
        self.claiming = False
        self.paused: list[bool] = []
        self.stopped: list[tuple[uuid.UUID, StopReason]] = []
        self.beats_ok = 0
        self.registrations = 0
        self.register_error: Exception | None = None

    def owned_ids(self) -> list[uuid.UUID]:
        return list(self.owned)

    def claims_in_flight(self) -> bool:
        return self.claiming

    def before_beat(self) -> None:
        return None

    def set_paused(self, paused: bool) -> None:
        self.paused.append(paused)

    def stop_job(self, job_id: uuid.UUID, reason: StopReason) -> None:
        self.stopped.append((job_id, reason))

    def beat_ok(self, at: float) -> None:
        self.beats_ok += 1

    async def register(self) -> None:
        self.registrations += 1
        if self.register_error is not None:
            raise self.register_error


def beating(fake: InMemoryTransport, target: Target) -> Heartbeat:
    return Heartbeat(AsyncQueueClient(fake), "w1", 0.01, target)


async def test_the_beat_reports_owned_jobs_and_the_reply_is_acted_on() -> None:
    fake = InMemoryTransport()
    fake.fn_register_worker("w1")
    target = Target()
    (job_id,) = enqueue(fake)
    fake.fn_claim_next_job("w1", p_start=True)
    target.owned = [job_id]
    heartbeat = beating(fake, target)
    reply = await heartbeat.beat()
    assert reply is not None and reply.status == WorkerStatus.ACTIVE
    assert target.beats_ok == 1
    fake.fn_cancel_job(str(job_id))
    fake.fn_set_worker_status("w1", "paused")
    reply = await heartbeat.beat()
    assert reply is not None
    await heartbeat.apply(reply)
    assert target.paused == [True]
    assert target.stopped == [(job_id, "cancel_requested")]


async def test_orphans_are_released_only_when_no_claim_is_out() -> None:
    fake = InMemoryTransport()
    fake.fn_register_worker("w1")
    (job_id,) = enqueue(fake)
    fake.fn_claim_next_job("w1", p_start=True)  # claimed, the answer never reached us
    target = Target()
    heartbeat = beating(fake, target)
    reply = HeartbeatReply(status=WorkerStatus.ACTIVE, orphaned=[OrphanedJob(id=job_id, attempt=1)])
    target.claiming = True  # a claim still out may be what brings it
    await heartbeat.apply(reply)
    assert fake.jobs[job_id]["status"] == "processing"
    target.claiming = False
    await heartbeat.apply(reply)
    assert fake.jobs[job_id]["status"] == "pending"


async def test_a_refused_reregistration_does_not_end_the_heartbeat() -> None:
    fake = InMemoryTransport()
    fake.fn_register_worker("w1")
    target = Target()
    target.register_error = ConfigurationError("The service key was refused")
    heartbeat = beating(fake, target)
    # The worker row is gone (heartbeat: NotFound) and registering again is refused.
    fake.fail_next["heartbeat_worker"] = NotFound("unknown worker", code="PT404")
    task = asyncio.create_task(heartbeat.run())
    for _ in range(100):
        if target.registrations and target.beats_ok:
            break
        await asyncio.sleep(0.01)
    assert not task.done()  # still beating
    task.cancel()
    assert target.registrations == 1


async def test_worker_survives_a_refused_reregistration() -> None:
    """Regression: the heartbeat task died of the ConfigurationError that register raises,
    and the worker exited 1 with its jobs."""
    fake = InMemoryTransport()
    started = asyncio.Event()

    async def handler(job: Job) -> str:
        started.set()
        await asyncio.sleep(0.3)  # several heartbeats
        return "done"

    worker = worker_on(fake, handler, concurrency=1)
    (job_id,) = enqueue(fake)
    original = fake.fn_register_worker
    real_heartbeat = fake.fn_heartbeat_worker

    def lose_row_once(*args: Any, **kwargs: Any) -> Any:
        fake.fn_heartbeat_worker = real_heartbeat  # type: ignore[method-assign]
        raise NotFound("unknown worker", code="PT404")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionDenied("key refused", code="42501")

    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    fake.fn_heartbeat_worker = lose_row_once  # type: ignore[method-assign]
    fake.fn_register_worker = refuse  # type: ignore[method-assign]
    await asyncio.sleep(0.1)
    fake.fn_register_worker = original  # type: ignore[method-assign]
    assert await asyncio.wait_for(task, 10) == EXIT_OK
    assert fake.jobs[job_id]["status"] == "completed"
