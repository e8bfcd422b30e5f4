"""The heartbeat: tell the queue every `interval` seconds which jobs this worker holds, and
act on its reply (paused or active, jobs to cancel, jobs lost to another worker, orphans).

It talks to the queue through its own `AsyncQueueClient` and to the worker only through
`HeartbeatTarget`, whose methods are quick and never raise, so that it could later run on its
own thread (with its own client and event loop) and keep beating while the worker's loop is
busy: nothing here reads the worker's fields.

A beat that fails is tried again promptly, not an interval later: after 0.2 s, doubling, never
more than the interval apart (jittered). Users' slow reads through PostgREST's shared pool
make a heartbeat wait up to db-pool-acquisition-timeout (10 s) and then be refused (504
PGRST003); a worker that waited a whole interval after each refusal reached the database's
dead_worker_horizon with a fraction of the tries it had time for (issue 19 item 5). A request
that keeps its place in PostgREST's queue gets the first free connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Protocol

from supaworker.client import AsyncQueueClient
from supaworker.exceptions import ConfigurationError, NotFound, QueueError
from supaworker.models import HeartbeatReply, WorkerStatus
from supaworker.retry import RetryPolicy
from supaworker.worker.ledger import StopReason

log = logging.getLogger("supaworker.worker")

# Seconds before the first retry of a failed beat; doubled per failure, capped at the interval.
RETRY_FIRST = 0.2


def retry_delay(failures: int, interval: float) -> float:
    """Seconds to wait after the `failures`-th failed beat in a row (>= 1): the queue's one
    backoff (`RetryPolicy.backoff`), 0.2 s doubling, never more than `interval`, jittered so
    that workers refused together do not come back in step."""
    return RetryPolicy(first_delay=RETRY_FIRST, max_delay=interval).backoff(failures)


class HeartbeatTarget(Protocol):
    """The worker's side of the heartbeat."""

    def owned_ids(self) -> list[uuid.UUID]:
        """Every job the worker holds (running, waiting, being written)."""
        ...

    def claims_in_flight(self) -> bool:
        """Whether a claim's answer is still to come (its jobs are not owned yet)."""
        ...

    def before_beat(self) -> None:
        """Called before each beat (gives back jobs that waited too long)."""
        ...

    def set_paused(self, paused: bool) -> None: ...

    def stop_job(self, job_id: uuid.UUID, reason: StopReason) -> None: ...

    def beat_ok(self, at: float) -> None: ...

    async def register(self) -> None:
        """Register again; may raise QueueError or ConfigurationError."""
        ...


class Heartbeat:
    def __init__(
        self,
        queue: AsyncQueueClient,
        worker_id: str,
        interval: float,
        target: HeartbeatTarget,
    ) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.interval = interval
        self.target = target
        self._now = asyncio.Event()

    def request(self) -> None:
        """Beat now instead of at the next interval."""
        self._now.set()

    async def run(self) -> None:
        failures = 0
        while True:
            wait = self.interval if failures == 0 else retry_delay(failures, self.interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), wait)
            self._now.clear()
            self.target.before_beat()
            reply = await self.beat()
            if reply is None:
                failures += 1  # try again soon, not an interval later
                continue
            failures = 0
            await self.apply(reply)

    async def beat(self) -> HeartbeatReply | None:
        """One heartbeat; None when it failed (logged; `run` tries again promptly)."""
        try:
            reply = await self.queue.heartbeat(self.worker_id, self.target.owned_ids())
        except NotFound:
            log.warning(
                "worker row is gone; registering again",
                extra={"action": "reregister", "worker_id": self.worker_id},
            )
            await self._register_again()
            return None
        except QueueError as exc:
            log.warning(
                "heartbeat failed: %s",
                exc,
                extra={"action": "heartbeat_failed", "worker_id": self.worker_id},
            )
            return None
        self.target.beat_ok(time.monotonic())
        return reply

    async def _register_again(self) -> None:
        # A refusal here (the key, the database) must not end the heartbeat: the worker keeps
        # running its jobs, and the next beat tries again.
        try:
            await self.target.register()
        except (QueueError, ConfigurationError) as exc:
            log.warning(
                "registering again failed: %s",
                exc,
                extra={"action": "reregister_failed", "worker_id": self.worker_id},
            )

    async def apply(self, reply: HeartbeatReply) -> None:
        self.target.set_paused(reply.status == WorkerStatus.PAUSED)
        for job_id in reply.cancel:
            self.target.stop_job(job_id, "cancel_requested")
        for job_id in reply.lost:
            self.target.stop_job(job_id, "lost")
        # owned_ids, then claims_in_flight: the threaded target answers both from one turn
        # of the worker's loop (heartbeat_thread.LoopTarget).
        owned = set(self.target.owned_ids())
        unknown = [o.id for o in reply.orphaned if o.id not in owned]
        if unknown and not self.target.claims_in_flight():
            # Claimed by a call whose answer never arrived: give them back, no attempt spent.
            log.warning(
                "releasing %d job(s) from an unanswered claim",
                len(unknown),
                extra={"action": "orphans_released", "worker_id": self.worker_id},
            )
            with contextlib.suppress(QueueError):
                await self.queue.release(self.worker_id, unknown)
