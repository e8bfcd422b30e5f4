"""supaworker/worker/heartbeat.py: the beat and acting on its reply, against a recording
target (the worker's side) and the in-memory model of the SQL functions."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from supaworker import Job
from supaworker.client import AsyncQueueClient
from supaworker.exceptions import ConfigurationError, NotFound, PermissionDenied, ServerError
from supaworker.models import HeartbeatReply, OrphanedJob, WorkerStatus
from supaworker.testing import InMemoryTransport
from supaworker.worker.heartbeat import RETRY_FIRST, Heartbeat, retry_delay
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


class Refusing(InMemoryTransport):
    """The fake, refusing the next `refusals` heartbeats as a saturated PostgREST pool does
    (504 PGRST003, translated to ServerError), with the time of every heartbeat call."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.beats: list[float] = []

    async def call(self, function: str, params: Any) -> Any:
        if function == "heartbeat_worker":
            self.beats.append(time.monotonic())
            if self.refusals > 0:
                self.refusals -= 1
                raise ServerError(
                    "heartbeat_worker: Timed out acquiring connection from connection pool."
                    " (PGRST003)",
                    status=504,
                )
        return await super().call(function, params)


def test_the_retry_delay_starts_small_doubles_and_never_exceeds_the_interval() -> None:
    for failures in range(1, 40):
        ceiling = min(5.0, RETRY_FIRST * 2 ** (failures - 1))
        for _ in range(20):
            assert ceiling / 2 <= retry_delay(failures, 5.0) < ceiling + 1e-9
    assert retry_delay(1, 5.0) < 0.2  # the first retry comes at once, not 5 s later
    assert retry_delay(1, 0.05) < 0.05  # and never later than the interval itself


async def test_a_refused_beat_is_retried_promptly_not_an_interval_later() -> None:
    """Before issue 19 item 5 a failed beat waited the whole interval: here 30 s, so the
    beat would not have landed within the test."""
    fake = Refusing(refusals=3)
    fake.fn_register_worker("w1")
    target = Target()
    heartbeat = Heartbeat(AsyncQueueClient(fake), "w1", 30.0, target)
    task = asyncio.create_task(heartbeat.run())
    try:
        heartbeat.request()  # the first beat now
        deadline = time.monotonic() + 5
        while target.beats_ok == 0:
            assert time.monotonic() < deadline, fake.beats
            await asyncio.sleep(0.01)
        assert len(fake.beats) == 4  # three refusals, then it landed
        gaps = [b - a for a, b in zip(fake.beats, fake.beats[1:], strict=False)]
        assert all(gap < 1.0 for gap in gaps), gaps  # 0.1-0.2, 0.2-0.4, 0.4-0.8 s
        assert gaps[0] < gaps[2]  # backing off
        # Once a beat lands, the cadence is the interval again: no further beat for now.
        await asyncio.sleep(0.5)
        assert len(fake.beats) == 4 and target.beats_ok == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
