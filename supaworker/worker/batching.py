"""Batching successful completions, and claiming the next jobs in the same call.

A worker running many short jobs spends most of its time on HTTP round trips, one
`complete_job` per job and a claim for the slots they free. The batcher writes the outcomes
of successful jobs together (each element still fenced by job, worker and attempt in SQL)
and, when the worker has free slots to fill, claims the next jobs in the same call
(`complete_and_claim`: completions first, then a claim that sees the slots they freed; one
round trip per batch instead of two). It works as a group commit: when no call is in flight,
a finished job is sent at the end of the current turn of the event loop (or after `delay`
seconds, default 0, to wait for company), so a lone job is not held back; while a call is in
flight, jobs finishing meanwhile wait for it and go together in the next call. (Two calls in
flight, one's jobs running while the other is in the database, measured slower at every
concurrency on the local stack: one worker's calls run one after the other in SQL anyway,
each locking its worker row, and smaller batches cost more per job. docs/benchmarks.md.)

Every caller still learns its own job's result:
- `complete_and_claim` answers with the ids it completed -> True for those, False for the
  others (fenced out: cancelled, rescued, reassigned);
- a lone job with nothing to claim goes with `complete_job`;
- the call failed (network, refusal)             -> each job is written on its own with
  `complete_job` through the worker's retry policy (worker/retry.py), as without batching;
  a job that call reports as not completed is looked up (`get_job`), in case the failed
  batch did land. The claim part is never retried: if it landed, the jobs are assigned to
  this worker without its knowing, and the worker's heartbeat finds and releases them.
- a database without `complete_and_claim` (PostgREST PGRST202, no such function)
  -> `complete_jobs` plus look-ups of the fenced-out jobs, and the worker's own claims, as
  before that function existed; without `complete_jobs` either, no batching. Any other
  refusal (a serialization failure, a bad result) only sends that batch's jobs one by one.
Anything unexpected returns None for the jobs of that batch: the caller then writes them
itself, exactly as it does without batching. The caller counts each answer among its final
writes, so shutdown still waits for every completion.

On by default with batches of up to 100 (bench/throughput.py). `WorkerSettings`'
`complete_batch_size` (`SUPAWORKER_COMPLETE_BATCH_SIZE`; 0 or 1 turns it off, at most 1000)
and `complete_batch_delay` (`SUPAWORKER_COMPLETE_BATCH_DELAY`, extra seconds to wait for
company, default 0) configure it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from supaworker.client import AsyncQueueClient
from supaworker.exceptions import QueueError
from supaworker.models import Job, JobStatus
from supaworker.worker.retry import is_missing_function

log = logging.getLogger("supaworker.worker.batching")
T = TypeVar("T")


class RetryPolicy(Protocol):
    """worker/retry.py's `RetryPolicy`: retries transient faults, None when it gives up."""

    def __call__(self, name: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T | None]: ...


@dataclass
class Reservation:
    """What one call claims: `limit` jobs (0: none), of which up to `prefetch` beyond the
    free slots, for a call that completes `completing` jobs."""

    completing: int
    limit: int
    prefetch: int
    sent_at: float = field(default_factory=time.monotonic)


class ClaimAlong(Protocol):
    """The worker's side of claiming with a completion call."""

    def reserve(self, completing: int) -> Reservation:
        """How many jobs to claim with the call that completes `completing` jobs."""
        ...

    def settled(self, reservation: Reservation, jobs: list[Job] | None) -> None:
        """A call is answered. `jobs`: what its claim returned; None: the call failed, so
        the claim may or may not have landed."""
        ...


@dataclass
class _Pending:
    job: Job
    result: Any
    answer: asyncio.Future[bool | None]


class CompletionBatcher:
    def __init__(
        self,
        queue: AsyncQueueClient,
        worker_id: str,
        retry: RetryPolicy,
        *,
        size: int,
        delay: float,
        claims: ClaimAlong,
        queues: list[str] | None = None,
    ) -> None:
        self.queue = queue
        self.claims = claims
        self.queues = queues
        self.worker_id = worker_id
        self.size = size
        self.delay = delay
        self._retry = retry
        self._pending: list[_Pending] = []
        self._timer: asyncio.Handle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._disabled = False
        self._exchange = True  # until the database refuses complete_and_claim
        self.batches = 0

    @property
    def claims_along(self) -> bool:
        """Whether completions go with claims (until the database refuses the call)."""
        return self._exchange

    def submit(self, job: Job, result: Any) -> asyncio.Future[bool | None]:
        """The job's answer to come: True once it is completed by this attempt, False when it
        was fenced out, None: write it yourself. (A future, not a task per job: at thousands
        of jobs a second the tasks were a tenth of the worker's CPU.)"""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool | None] = loop.create_future()
        if self._disabled:
            answer.set_result(None)
            return answer
        self._pending.append(_Pending(job, result, answer))
        if len(self._pending) >= self.size:
            self._flush()
        elif self._timer is None and not self._flushes:
            # Nothing in flight: send at the end of this turn of the event loop (or after
            # `delay`), so that the jobs finishing in the same turn (a claim's worth of short
            # jobs) go in one call instead of one alone and the rest after it. A claim that
            # runs before this write lands may find the job's slot still taken; the write's
            # landing wakes the claim loop again (Completer's slot_freed).
            self._timer = (
                loop.call_later(self.delay, self._flush_if_idle)
                if self.delay
                else loop.call_soon(self._flush_if_idle)
            )
        # Otherwise a call is in flight: this job goes in the next one, sent when it returns.
        return answer

    def _flush_if_idle(self) -> None:
        self._timer = None
        if not self._flushes:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[: self.size], self._pending[self.size :]
        if not batch:
            return
        task = asyncio.create_task(self._send(batch), name="complete-batch")
        self._flushes.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._pending and not self._flushes and self._timer is None:
            self._flush()

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            answers = await self._write(batch)
        except BaseException:
            # Not expected; the callers fall back to their own complete_job.
            log.exception(
                "completion batch of %d failed unexpectedly",
                len(batch),
                extra={"action": "complete_batch_error", "worker_id": self.worker_id},
            )
            answers = [None] * len(batch)
        for item, done in zip(batch, answers, strict=True):
            if not item.answer.done():
                item.answer.set_result(done)

    async def _write(self, batch: list[_Pending]) -> list[bool | None]:
        claim = self.claims.reserve(len(batch)) if self._exchange else Reservation(0, 0, 0)
        claimed: list[Job] | None = []
        try:
            if claim.limit or (self._exchange and len(batch) > 1):
                answers, claimed = await self._exchange_write(batch, claim)
            elif len(batch) == 1:
                answers = [await self._one(batch[0])]
            else:
                answers = await self._complete_many(batch)
        except BaseException:
            claimed = None
            raise
        finally:
            # After the completions landed, so a claim the worker makes next sees their slots.
            self.claims.settled(claim, claimed)
        return answers

    async def _exchange_write(
        self, batch: list[_Pending], claim: Reservation
    ) -> tuple[list[bool | None], list[Job] | None]:
        """One `complete_and_claim`: the batch's completions, then the reserved claim."""
        self.batches += 1
        try:
            answer = await self.queue.complete_and_claim(
                self.worker_id,
                [(p.job.id, p.job.attempt, p.result) for p in batch],
                claim.limit,
                self.queues,
                prefetch=claim.prefetch,
            )
        except QueueError as exc:
            self._log_batch_failed("complete_and_claim", batch, exc)
            if is_missing_function(exc):
                # A database older than the function: complete_jobs from now on, and the
                # worker claims on its own as it did before.
                self._exchange = False
                return await self._complete_many(batch), None
            return list(await asyncio.gather(*(self._one(p) for p in batch))), None
        return [p.job.id in answer.completed for p in batch], answer.claimed

    async def _complete_many(self, batch: list[_Pending]) -> list[bool | None]:
        if len(batch) == 1:
            return [await self._one(batch[0])]
        self.batches += 1
        try:
            count = await self.queue.complete_many(
                self.worker_id, [(p.job.id, p.job.attempt, p.result) for p in batch]
            )
        except QueueError as exc:
            self._log_batch_failed("complete_jobs", batch, exc)
            if is_missing_function(exc):
                self._disabled = True  # an older database: stop batching
            return list(await asyncio.gather(*(self._one(p) for p in batch)))
        if count == len(batch):
            return [True] * len(batch)
        # Some were fenced out (cancelled, rescued, reassigned): find out which.
        return list(await asyncio.gather(*(self._completed_by_us(p.job) for p in batch)))

    def _log_batch_failed(self, function: str, batch: list[_Pending], exc: QueueError) -> None:
        log.warning(
            "%s for %d jobs failed (%s); writing them one by one",
            function,
            len(batch),
            exc,
            extra={"action": "complete_batch_failed", "worker_id": self.worker_id},
        )

    async def _one(self, item: _Pending) -> bool | None:
        done = await self._retry(
            "complete_job", lambda: self.queue.complete(item.job, self.worker_id, item.result)
        )
        if done is False:
            return await self._completed_by_us(item.job)  # the failed batch may have landed
        return done

    async def _completed_by_us(self, job: Job) -> bool:
        row = await self._retry("get_job", lambda: self.queue.get(job.id))
        return (
            row is not None
            and row.status == JobStatus.COMPLETED
            and row.attempt == job.attempt
            and row.assigned_to == self.worker_id
        )
