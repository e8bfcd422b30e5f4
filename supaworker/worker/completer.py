"""Every write that ends a job's attempt on this worker: complete, fail, cancel, release.

Each write runs in its own task (or waits for the completion batcher's answer), which the
job's cancellation cannot reach; until it lands the job stays in the ledger's `finishing`
(heartbeats keep reporting it, or it would look orphaned), and `drain()` waits for all of
them at shutdown: a finished job's outcome is never dropped. Every write goes through the
one retry policy (worker/retry.py). What each write found is told as a job event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from supaworker.client import AsyncQueueClient
from supaworker.models import Job, JobStatus
from supaworker.worker.batching import ClaimAlong, CompletionBatcher
from supaworker.worker.events import EventKind, JobEvents, OutcomeEvent
from supaworker.worker.execution import Outcome
from supaworker.worker.ledger import Ledger
from supaworker.worker.retry import RetryPolicy

log = logging.getLogger("supaworker.worker")

_FAILED_KINDS: dict[JobStatus, EventKind] = {
    JobStatus.PENDING: "retried",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


class Completer:
    def __init__(
        self,
        queue: AsyncQueueClient,
        worker_id: str,
        ledger: Ledger,
        events: JobEvents,
        *,
        batch_size: int,
        batch_delay: float,
        claims: ClaimAlong,
        queues: list[str] | None,
        slot_freed: Callable[[], None],
        retry_due: Callable[[datetime], None],
    ) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.ledger = ledger
        self.events = events
        self.retry = RetryPolicy(worker_id)
        # `slot_freed`: a write landed, so SQL counts one job fewer: claim again.
        self._slot_freed = slot_freed
        self._retry_due = retry_due
        self._writes: set[asyncio.Future[Any]] = set()
        # Batches of 0 or 1 are no batching (worker/batching.py); the batcher also claims
        # the next jobs with each completion call (complete_and_claim).
        self.batcher = (
            CompletionBatcher(
                queue,
                worker_id,
                self.retry,
                size=batch_size,
                delay=batch_delay,
                claims=claims,
                queues=queues,
            )
            if batch_size >= 2
            else None
        )

    @property
    def in_flight(self) -> int:
        return len(self._writes)

    # -- the outcomes -----------------------------------------------------------------------
    def finish(self, job: Job, outcome: Outcome, duration: float | None) -> None:
        """The handler is done: write its outcome."""
        batcher = self.batcher
        if outcome.kind == "completed" and batcher is not None:
            answer = batcher.submit(job, outcome.result)
            self._track(
                [job],
                answer,
                lambda: self._batched(batcher, job, outcome, duration, answer),
            )
            return
        self._track([job], self._write(job, outcome, duration))

    def cancelled(self, job: Job, duration: float | None = None) -> None:
        """Cancelled on request: fail the attempt for good."""
        outcome = Outcome.failed("Cancelled on request", retryable=False)
        self._track([job], self._write(job, outcome, duration))

    def release(self, job: Job) -> None:
        """Interrupted by shutdown: back to the queue, no attempt spent."""

        async def release() -> None:
            await self.retry("release_jobs", lambda: self.queue.release(self.worker_id, [job.id]))
            self.events.emit(OutcomeEvent("released", [job], self.worker_id))

        self._track([job], release())

    def release_waiting(self, jobs: list[Job], why: str) -> None:
        """Give prefetched jobs back to the queue, unstarted: no attempt spent."""
        if not jobs:
            return
        ids = [job.id for job in jobs]
        log.info(
            "releasing %d prefetched job(s): %s",
            len(ids),
            why,
            extra={"action": "prefetch_released", "worker_id": self.worker_id, "jobs": len(ids)},
        )

        async def release() -> None:
            await self.retry("release_jobs", lambda: self.queue.release(self.worker_id, ids))
            self._slot_freed()

        self._track(jobs, release())

    # -- stopping ---------------------------------------------------------------------------
    async def drain(self) -> None:
        """Wait for every final write, including those a landing write starts."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    # -- the writes -------------------------------------------------------------------------
    def _track(
        self, jobs: list[Job], write: Awaitable[Any], then: Callable[[], None] | None = None
    ) -> None:
        task = asyncio.ensure_future(write)
        ids = [job.id for job in jobs]
        self._writes.add(task)
        self.ledger.writing(ids)

        def done(_: asyncio.Future[Any]) -> None:
            self._writes.discard(task)
            self.ledger.written(ids)
            if then is not None:
                then()  # last: a write it starts puts the jobs back into `finishing`

        task.add_done_callback(done)

    def _batched(
        self,
        batcher: CompletionBatcher,
        job: Job,
        outcome: Outcome,
        duration: float | None,
        answer: asyncio.Future[bool | None],
    ) -> None:
        done = None if answer.cancelled() or answer.exception() else answer.result()
        if done is None:  # the batcher could not write it: write it on its own
            self._track([job], self._write(job, outcome, duration))
            return
        if not batcher.claims_along:
            self._slot_freed()
        # (Otherwise the completion call claimed for the free slots, or woke the loop.)
        self._completed(job, duration, done)

    async def _write(self, job: Job, outcome: Outcome, duration: float | None) -> None:
        if outcome.kind == "completed":
            done = await self.retry(
                "complete_job", lambda: self.queue.complete(job, self.worker_id, outcome.result)
            )
            self._slot_freed()
            self._completed(job, duration, bool(done))
            return
        row = await self.retry(
            "fail_job",
            lambda: self.queue.fail(
                job,
                self.worker_id,
                outcome.error or "failed",
                retryable=outcome.retryable,
                retry_after=outcome.retry_after,
            ),
        )
        self._slot_freed()
        kind: EventKind = _FAILED_KINDS.get(row.status, "lost") if row is not None else "lost"
        if row is not None and row.status == JobStatus.PENDING and row.run_at is not None:
            self._retry_due(row.run_at)
        self.events.emit(
            OutcomeEvent(kind, [job], self.worker_id, duration=duration, error=outcome.error)
        )

    def _completed(self, job: Job, duration: float | None, done: bool) -> None:
        kind: EventKind = "completed" if done else "lost"
        self.events.emit(OutcomeEvent(kind, [job], self.worker_id, duration=duration))
