"""The worker loop: register, claim, run, report, heartbeat, shut down.

    run -> _register -> _claim_loop -> _claim_once -> _run_claimed -> _spawn -> _process
        -> _finish -> the completion batcher, whose call also claims the next jobs
           (complete_and_claim: _ClaimAlong -> _run_claimed; extras wait in _prefetch)
                  side tasks: _heartbeat_loop, wake-up listener (supervised)
        -> _shutdown: stop claiming, drain within the shutdown timeout, cancel and release
           the rest, wait for every final write, deregister.

The loop talks to the queue only through `AsyncQueueClient` (no RPC names, no HTTP here).
Every status write that ends an attempt runs in its own task that the loop's cancellation
cannot reach, and shutdown waits for all of them: a finished job's outcome is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from supaworker import __version__
from supaworker.client import AsyncQueueClient
from supaworker.config import WorkerSettings
from supaworker.exceptions import (
    ConfigurationError,
    NotFound,
    PermissionDenied,
    QueueError,
    RpcError,
    TransportError,
)
from supaworker.models import HeartbeatReply, Job, JobStatus, WorkerStatus
from supaworker.worker import signals
from supaworker.worker.batching import CompletionBatcher, Reservation
from supaworker.worker.execution import Outcome, run_handler
from supaworker.worker.handler import Handler, JobContext
from supaworker.worker.prefetch import Prefetch
from supaworker.worker.progress import ProgressForwarder

log = logging.getLogger("supaworker.worker")
T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_FORCED = 130

StopReason = Literal["cancel_requested", "lost", "shutdown"]


class WakeupSource(Protocol):
    """Something that calls `wake()` when work may have arrived (e.g. Supabase Realtime).

    `run` is a long-lived side task; it reports whether it is connected through
    `connected(bool)` so the loop can poll slowly while it is, and at the normal pace when not.
    """

    async def run(
        self,
        wake: Callable[[], None],
        connected: Callable[[bool], None],
        control: Callable[[], None],
    ) -> None: ...


@dataclass
class RunningJob:
    job: Job
    ctx: JobContext
    task: asyncio.Task[None]
    stop_reason: StopReason | None = None


class _ClaimAlong:
    """Lets the completion batcher claim for the worker (batching.ClaimAlong): the free
    slots, plus the prefetch allowance minus the jobs already waiting for a slot, minus what
    the calls still in flight may bring back."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        # Over the calls in flight: the jobs they complete (their slots are theirs to refill)
        # and the jobs their claims may bring.
        self._completing = 0
        self._reserved = 0

    def reserve(self, completing: int) -> Reservation:
        w = self._worker
        if w._stop.is_set() or w.state.paused:
            return Reservation(completing, 0, 0)
        allowance = w._prefetch.allowance(w.settings.concurrency)
        # What SQL will count as this worker's once the calls' completions land: running,
        # waiting, and finished jobs whose outcome no call carries yet.
        held = (
            len(w._running)
            + len(w._prefetch)
            + len(w._finishing)
            - self._completing
            - completing
            + self._reserved
        )
        claim = Reservation(
            completing, max(w.settings.concurrency + allowance - held, 0), allowance
        )
        self._completing += completing
        self._reserved += claim.limit
        if claim.limit:
            w._claims_in_flight += 1
        return claim

    def settled(self, claim: Reservation, jobs: list[Job] | None) -> None:
        w = self._worker
        self._completing -= claim.completing
        self._reserved -= claim.limit
        if claim.limit:
            w._claims_in_flight -= 1
            w._prefetch.observe_round_trip(time.monotonic() - claim.sent_at)
        if jobs is None:
            w._beat_now.set()  # if the claim landed, the heartbeat finds its jobs: release
        else:
            w._run_claimed(jobs)
        if jobs is None or len(jobs) < claim.limit:
            # The queue may have had no more (the claim loop looks again, and burst mode
            # learns it is done), or the claim failed. A call that claimed nothing because
            # the worker is full needs no claim either: its next completion claims.
            w._wake.set()


@dataclass
class WorkerState:
    """What the worker knows about itself, for health checks and tests."""

    registered: bool = False
    paused: bool = False
    realtime_connected: bool = False
    last_heartbeat_ok: float | None = None
    loop_turned_at: float = field(default_factory=time.monotonic)
    claimed: int = 0
    completed: int = 0
    failed: int = 0


@functools.lru_cache(maxsize=256)
def _job_logger(queue: str) -> logging.Logger:
    # getLogger takes the logging module's lock: once per queue, not once per job.
    return logging.getLogger(f"supaworker.job.{queue}")


def _rounded(duration: float | None) -> float | None:
    return round(duration, 4) if duration is not None else None


def _job_extra(action: str, job: Job, worker_id: str, **more: Any) -> dict[str, Any]:
    return {
        "action": action,
        "job_id": str(job.id),
        "worker_id": worker_id,
        "attempt": job.attempt,
        "queue": job.queue,
        **more,
    }


class Worker:
    def __init__(
        self,
        queue: AsyncQueueClient,
        handler: Handler,
        settings: WorkerSettings,
        *,
        supabase: Any = None,
        wakeup: WakeupSource | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.queue = queue
        self.handler = handler
        self.settings = settings
        self.worker_id = settings.worker_id
        self.state = WorkerState()
        self._supabase = supabase
        self._wakeup = wakeup
        self._install_signal_handlers = install_signal_handlers
        self._running: dict[uuid.UUID, RunningJob] = {}
        self._final_writes: set[asyncio.Task[None]] = set()
        # Jobs whose handler is done but whose outcome write is still in flight: still ours,
        # so heartbeats must keep reporting them (or they would look orphaned).
        self._finishing: set[uuid.UUID] = set()
        # Claimed beyond the free slots, waiting for one (worker/prefetch.py).
        self._prefetch = Prefetch(settings.prefetch)
        # On unless SUPAWORKER_COMPLETE_BATCH_SIZE < 2 (see worker/batching.py); it also
        # claims the next jobs with each completion call (complete_and_claim).
        self._completions = CompletionBatcher.from_env(
            queue,
            self.worker_id,
            self._with_retries,
            claims=_ClaimAlong(self),
            queues=settings.queues or None,
        )
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._wake = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._side_tasks: list[asyncio.Task[None]] = []
        # Claims whose answer has not arrived (the claim loop's and those sent along with
        # completions): while any is out, unknown jobs in a heartbeat may be its answer.
        self._claims_in_flight = 0
        self._exit_code = EXIT_OK
        # Completed jobs whose log line is still to be written (_log_completed).
        self._completed_unlogged: list[tuple[Job, float | None]] = []
        # Set at shutdown: final writes keep retrying through faults until then, not forever.
        self._writes_deadline: float | None = None

    # -- public controls ------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop claiming; let running jobs finish within the shutdown timeout."""
        if not self._stop.is_set():
            log.info(
                "stop requested: finishing running jobs",
                extra={
                    "action": "shutdown_requested",
                    "worker_id": self.worker_id,
                    "running": len(self._running),
                },
            )
        self._stop.set()

    def force_stop(self) -> None:
        """Second signal: cancel and release running jobs now."""
        log.warning("forced stop", extra={"action": "shutdown_forced", "worker_id": self.worker_id})
        self._exit_code = EXIT_FORCED
        self._stop.set()
        self._force.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def running_job_ids(self) -> list[uuid.UUID]:
        return list(self._running)

    def _owned_job_ids(self) -> list[uuid.UUID]:
        return [*self._running, *self._finishing, *self._prefetch.ids()]

    # -- run ------------------------------------------------------------------------------
    async def run(self) -> int:
        try:
            await self._register()
        except ConfigurationError as exc:
            log.error("%s", exc, extra={"action": "register_refused", "worker_id": self.worker_id})
            return EXIT_CONFIG
        except TransportError as exc:
            log.error(
                "cannot reach the queue: %s",
                exc,
                extra={"action": "register_failed", "worker_id": self.worker_id},
            )
            return EXIT_UNAVAILABLE
        stop_handlers = (
            signals.on_stop(self.request_stop, self.force_stop)
            if self._install_signal_handlers
            else contextlib.nullcontext()
        )
        with stop_handlers:
            self._start_side_tasks()
            try:
                await self._claim_loop()
            finally:
                await self._shutdown()
        return self._exit_code

    async def _register(self) -> None:
        deadline = time.monotonic() + max(30.0, self.settings.heartbeat_interval * 3)
        while True:
            try:
                info = await self.queue.register_worker(
                    self.worker_id,
                    worker_name=self.settings.worker_name or self.worker_id,
                    max_concurrent_jobs=self.settings.concurrency,
                    capabilities=self.settings.advertised_capabilities(),
                    queues=self.settings.queues or None,
                    host=socket.gethostname(),
                    version=__version__,
                )
                break
            except PermissionDenied as exc:
                raise ConfigurationError(
                    f"The service key was refused ({exc}); use the project's service_role or "
                    "sb_secret_ key"
                ) from exc
            except RpcError as exc:
                raise ConfigurationError(f"register_worker failed: {exc}") from exc
            except TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)
        self.state.registered = True
        self.state.paused = info.status == WorkerStatus.PAUSED
        log.info(
            "worker %s registered (concurrency %d, queues %s)",
            self.worker_id,
            self.settings.concurrency,
            ",".join(self.settings.queues) or "all",
            extra={
                "action": "worker_registered",
                "worker_id": self.worker_id,
                "status": info.status.value,
            },
        )

    # -- side tasks -----------------------------------------------------------------------
    def _start_side_tasks(self) -> None:
        self._side_tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        if self._wakeup is not None:
            self._side_tasks.append(
                asyncio.create_task(
                    self._wakeup.run(self.wake, self._set_realtime_connected, self._beat_now.set),
                    name="wakeup",
                )
            )

    def _set_realtime_connected(self, connected: bool) -> None:
        if connected != self.state.realtime_connected:
            log.info(
                "realtime %s",
                "connected" if connected else "disconnected; polling",
                extra={
                    "action": "realtime_status",
                    "worker_id": self.worker_id,
                    "connected": connected,
                },
            )
        self.state.realtime_connected = connected
        if connected:
            self._wake.set()  # catch up on anything that arrived while disconnected

    def _side_task_failed(self) -> bool:
        for task in self._side_tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error(
                    "side task %s died: %r",
                    task.get_name(),
                    task.exception(),
                    extra={"action": "side_task_died", "worker_id": self.worker_id},
                )
                self._exit_code = EXIT_ERROR
                return True
        return False

    async def _heartbeat_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.settings.heartbeat_interval)
            self._beat_now.clear()
            # Prefetched jobs stuck behind a job far longer than the average go back.
            self._release_waiting(
                self._prefetch.take_older_than(self.settings.heartbeat_interval), "waited too long"
            )
            try:
                reply = await self.queue.heartbeat(self.worker_id, self._owned_job_ids())
            except NotFound:
                log.warning(
                    "worker row is gone; registering again",
                    extra={"action": "reregister", "worker_id": self.worker_id},
                )
                with contextlib.suppress(QueueError):
                    await self._register()
                continue
            except QueueError as exc:
                log.warning(
                    "heartbeat failed: %s",
                    exc,
                    extra={"action": "heartbeat_failed", "worker_id": self.worker_id},
                )
                continue
            self.state.last_heartbeat_ok = time.monotonic()
            await self._apply_heartbeat(reply)

    async def _apply_heartbeat(self, reply: HeartbeatReply) -> None:
        paused = reply.status == WorkerStatus.PAUSED
        if paused != self.state.paused:
            log.info(
                "worker %s",
                "paused" if paused else "resumed",
                extra={
                    "action": "worker_paused" if paused else "worker_resumed",
                    "worker_id": self.worker_id,
                },
            )
            self.state.paused = paused
            if not paused:
                self._wake.set()
        for job_id in reply.cancel:
            self._stop_job(job_id, "cancel_requested")
        for job_id in reply.lost:
            self._stop_job(job_id, "lost")
        owned = set(self._owned_job_ids())
        unknown = [o.id for o in reply.orphaned if o.id not in owned]
        if unknown and not self._claims_in_flight:
            # Claimed by a call whose answer never arrived: give them back, no attempt spent.
            log.warning(
                "releasing %d job(s) from an unanswered claim",
                len(unknown),
                extra={"action": "orphans_released", "worker_id": self.worker_id},
            )
            with contextlib.suppress(QueueError):
                await self.queue.release(self.worker_id, unknown)

    def _stop_job(self, job_id: uuid.UUID, reason: StopReason) -> None:
        waiting = self._prefetch.take(job_id)
        if waiting is not None:  # prefetched, not started: nothing to interrupt
            if reason == "cancel_requested":
                self._write_cancelled(waiting)
            return
        running = self._running.get(job_id)
        if running is None or running.stop_reason is not None:
            return
        running.stop_reason = reason
        running.ctx.cancel()
        running.task.cancel()
        log.info(
            "stopping job %s: %s",
            job_id,
            reason,
            extra=_job_extra("job_stopping", running.job, self.worker_id, reason=reason),
        )

    # -- claiming -------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self._stop.is_set():
            self.state.loop_turned_at = time.monotonic()
            if self._side_task_failed():
                break
            if not self.state.paused:
                claimed = await self._claim_once()
                if (
                    self.settings.burst
                    and claimed == 0
                    and not self._running
                    and not self._finishing
                    and not self._prefetch
                    # A completion that landed while the claim was answered frees a slot
                    # the claim could not see (it sets _wake): claim once more first.
                    and not self._wake.is_set()
                ):
                    log.info(
                        "burst: nothing left to claim",
                        extra={"action": "burst_done", "worker_id": self.worker_id},
                    )
                    break
                if claimed and self._free_slots() > 0:
                    continue  # there may be more waiting
            await self._wait_for_work()

    def _free_slots(self) -> int:
        return self.settings.concurrency - len(self._running)

    async def _wait_for_work(self) -> None:
        interval = (
            self.settings.realtime_poll_interval
            if self.state.realtime_connected
            else self.settings.poll_interval
        )
        if self.settings.burst:
            interval = min(interval, 0.5)
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._stop.wait())]
        try:
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        self._wake.clear()

    async def _claim_once(self) -> int | None:
        """Claim up to the free slots. None when the claim's outcome is unknown or failed."""
        free = self._free_slots()
        if free <= 0:
            return 0
        self._claims_in_flight += 1
        try:
            # start=True: the jobs come back processing, so no start_job round trip per job.
            jobs = await self.queue.claim(
                self.worker_id, free, self.settings.queues or None, start=True
            )
        except TransportError as exc:
            # Never retried blindly: if the claim did land, the jobs stay assigned to us and
            # the next heartbeat reports them as orphaned, and we release them.
            log.warning(
                "claim failed: %s",
                exc,
                extra={"action": "claim_failed", "worker_id": self.worker_id},
            )
            self._beat_now.set()
            await self._sleep_unless_stopped(1.0)
            return None
        except RpcError as exc:
            log.error(
                "claim refused: %s",
                exc,
                extra={"action": "claim_refused", "worker_id": self.worker_id},
            )
            await self._sleep_unless_stopped(self.settings.poll_interval)
            return None
        finally:
            self._claims_in_flight -= 1
        self._run_claimed(jobs)
        return len(jobs)

    def _run_claimed(self, jobs: list[Job]) -> None:
        self._log_jobs("jobs_claimed", "claimed", jobs)
        self.state.claimed += len(jobs)
        if self._stop.is_set():
            # Answered after shutdown began (a completion call claims too): give them back.
            self._release_waiting(jobs, "shutting down")
            return
        for job in jobs:
            if self._free_slots() > 0:
                self._spawn(job)
            else:
                self._prefetch.hold(job)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _spawn(self, job: Job) -> None:
        ctx = JobContext(
            job=job,
            worker_id=self.worker_id,
            logger=_job_logger(job.queue),
            supabase=self._supabase,
        )
        task = asyncio.create_task(self._process(job, ctx), name=f"job-{job.id}")
        self._running[job.id] = RunningJob(job, ctx, task)
        task.add_done_callback(functools.partial(self._job_done, job.id))

    def _wake_at(self, moment: datetime) -> None:
        """Claim again when a job scheduled for later (a retry's backoff) becomes due."""
        delay = (moment - datetime.now(UTC)).total_seconds() + 0.05
        if 0 < delay < self.settings.realtime_poll_interval:
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    def _job_done(self, job_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        running = self._running.get(job_id)
        if running is not None and running.task is task:  # (not a newer attempt's task)
            del self._running[job_id]
        while not self._stop.is_set() and self._free_slots() > 0:
            job = self._prefetch.next()
            if job is None:
                break
            self._spawn(job)

    # -- processing one job ---------------------------------------------------------------
    async def _process(self, job: Job, ctx: JobContext) -> None:
        # Claimed with start=True the job is processing already; a job claimed by an older
        # path (assigned) still needs its start_job.
        if job.status != JobStatus.PROCESSING and not await self._start(job):
            return
        forwarder = ProgressForwarder(
            asyncio.get_running_loop(),
            lambda pct, msg: self.queue.progress(job, self.worker_id, pct, msg),
        )
        ctx._progress_sink = forwarder.report
        began = time.monotonic()
        try:
            outcome = await run_handler(
                self.handler,
                job,
                ctx,
                timeout=job.timeout_seconds or self.settings.job_timeout,
                executor=self.settings.executor,
                handler_path=self.settings.handler,
                max_result_bytes=self.settings.max_result_bytes,
            )
        except asyncio.CancelledError:
            await forwarder.close()
            self._finish_interrupted(job)
            raise
        await forwarder.close()
        duration = time.monotonic() - began
        self._prefetch.observe_run(duration)
        self._finish(job, outcome, duration)

    async def _start(self, job: Job) -> bool:
        started = await self._with_retries(
            "start_job", lambda: self.queue.start(job, self.worker_id)
        )
        if not started:
            log.info(
                "job %s is no longer ours; not starting",
                job.id,
                extra=_job_extra("job_lost", job, self.worker_id),
            )
        return bool(started)

    def _finish(self, job: Job, outcome: Outcome, duration: float) -> None:
        batcher = self._completions
        if outcome.kind == "completed" and batcher is not None:
            answer = batcher.submit(job, outcome.result)
            self._final_write(
                [job],
                answer,
                lambda: self._batched_completion(batcher, job, outcome, duration, answer),
            )
            return
        self._final_write([job], self._write_outcome(job, outcome, duration))

    def _batched_completion(
        self,
        batcher: CompletionBatcher,
        job: Job,
        outcome: Outcome,
        duration: float,
        answer: asyncio.Future[bool | None],
    ) -> None:
        done = None if answer.cancelled() or answer.exception() else answer.result()
        if done is None:  # the batcher could not write it: write it on its own
            self._final_write([job], self._write_outcome(job, outcome, duration))
            return
        if not batcher.claims_along:
            self._wake.set()  # the job's slot is free in SQL only now: claim again
        # (Otherwise the completion call claimed for the free slots, or woke the loop.)
        self._completed(job, duration, done)

    def _finish_interrupted(self, job: Job) -> None:
        running = self._running.get(job.id)
        reason = running.stop_reason if running else "shutdown"
        if reason == "cancel_requested":
            self._write_cancelled(job)
        elif reason == "shutdown":
            self._final_write([job], self._release(job))
        else:
            # "lost": the job belongs to another worker now; writing anything would be fenced
            # out. Its slot is free in SQL already: claim again.
            self._wake.set()

    def _release_waiting(self, jobs: list[Job], why: str) -> None:
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
            await self._with_retries(
                "release_jobs", lambda: self.queue.release(self.worker_id, ids)
            )
            self._wake.set()

        self._final_write(jobs, release())

    def _write_cancelled(self, job: Job) -> None:
        outcome = Outcome.failed("Cancelled on request", retryable=False)
        self._final_write([job], self._write_outcome(job, outcome, None))

    def _final_write(
        self,
        jobs: list[Job],
        write: Awaitable[Any],
        then: Callable[[], None] | None = None,
    ) -> None:
        """Run a status write in its own task (or wait for the batcher's answer), which the
        job's cancellation cannot reach. Until it lands, the jobs are still this worker's
        (heartbeats report them), and shutdown waits for it. `then` runs once it landed."""
        task = asyncio.ensure_future(write)
        ids = [job.id for job in jobs]
        self._final_writes.add(task)
        self._finishing.update(ids)

        def done(_: asyncio.Future[Any]) -> None:
            self._final_writes.discard(task)
            self._finishing.difference_update(ids)
            if then is not None:
                then()  # last: a write it starts puts the jobs back into _finishing

        task.add_done_callback(done)

    async def _write_outcome(self, job: Job, outcome: Outcome, duration: float | None) -> None:
        if outcome.kind == "completed":
            done = await self._with_retries(
                "complete_job", lambda: self.queue.complete(job, self.worker_id, outcome.result)
            )
            self._wake.set()  # the job's slot is free in SQL only now: claim again
            self._completed(job, duration, bool(done))
            return
        row = await self._with_retries(
            "fail_job",
            lambda: self.queue.fail(
                job,
                self.worker_id,
                outcome.error or "failed",
                retryable=outcome.retryable,
                retry_after=outcome.retry_after,
            ),
        )
        self._wake.set()  # as after complete_job: the slot is free in SQL only now
        self.state.failed += 1
        status = row.status if row is not None else None
        action = (
            {
                JobStatus.PENDING: "job_retry_scheduled",
                JobStatus.FAILED: "job_failed",
                JobStatus.CANCELLED: "job_cancelled",
            }.get(status, "job_lost")
            if status
            else "job_lost"
        )
        extra = _job_extra(
            action,
            job,
            self.worker_id,
            duration=_rounded(duration),
            outcome=status.value if status else "fenced",
            error=outcome.error,
        )
        if row is not None and status == JobStatus.PENDING and row.run_at is not None:
            self._wake_at(row.run_at)
        log.warning("job %s attempt failed (%s): %s", job.id, action, outcome.error, extra=extra)

    def _completed(self, job: Job, duration: float | None, done: bool) -> None:
        self.state.completed += 1
        if not done:
            log.info(
                "job %s finished after losing it",
                job.id,
                extra=_job_extra(
                    "job_lost", job, self.worker_id, duration=_rounded(duration), outcome="fenced"
                ),
            )
            return
        # One line per turn of the loop (a completion call's jobs are answered in the same
        # turn), not per job: see _log_jobs.
        if not self._completed_unlogged:
            asyncio.get_running_loop().call_soon(self._log_completed)
        self._completed_unlogged.append((job, duration))

    def _log_completed(self) -> None:
        done, self._completed_unlogged = self._completed_unlogged, []
        if done:
            self._log_jobs(
                "jobs_completed", "completed", [j for j, _ in done], [_rounded(d) for _, d in done]
            )

    def _log_jobs(
        self,
        action: str,
        verb: str,
        jobs: list[Job],
        durations: list[float | None] | None = None,
    ) -> None:
        """One line per queue for a group of jobs (a claim, a completion call's answers), not
        one per job: at thousands of jobs a second the per-job lines were a tenth of the
        worker's CPU (docs/benchmarks.md). Failures and other outcomes keep a line each."""
        by_queue: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(i)
        for queue, indexes in by_queue.items():
            extra: dict[str, Any] = {
                "action": action,
                "worker_id": self.worker_id,
                "queue": queue,
                "count": len(indexes),
                "job_ids": [str(jobs[i].id) for i in indexes],
            }
            if durations is not None:
                extra["durations"] = [durations[i] for i in indexes]
            log.info("%s %d job(s) from %s", verb, len(indexes), queue, extra=extra)

    async def _release(self, job: Job) -> None:
        def release() -> Awaitable[int]:
            return self.queue.release(self.worker_id, [job.id])

        await self._with_retries("release_jobs", release)
        log.info(
            "job %s released for another worker",
            job.id,
            extra=_job_extra("job_released", job, self.worker_id),
        )

    async def _with_retries(self, name: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """Retry a fenced (hence repeatable) write through transient faults.

        Gives up only when the write is refused, on a forced stop, or when a shutdown's grace
        for final writes has run out (the Supabase API stayed unreachable); then the job stays
        assigned to this worker and the reaper rescues it once heartbeats stop.
        """
        delay = 0.1
        while True:
            try:
                return await call()
            except TransportError as exc:
                out_of_time = self._writes_deadline is not None and (
                    time.monotonic() > self._writes_deadline
                )
                if self._force.is_set() or out_of_time:
                    log.error(
                        "%s abandoned while stopping: %s",
                        name,
                        exc,
                        extra={"action": "write_abandoned", "worker_id": self.worker_id},
                    )
                    return None
                log.warning(
                    "%s failed, retrying in %.1fs: %s",
                    name,
                    delay,
                    exc,
                    extra={"action": "rpc_retry", "worker_id": self.worker_id, "function": name},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except RpcError as exc:
                log.error(
                    "%s refused: %s",
                    name,
                    exc,
                    extra={"action": "rpc_refused", "worker_id": self.worker_id, "function": name},
                )
                return None

    # -- shutdown -------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        self._stop.set()
        self._release_waiting(self._prefetch.take_all(), "shutting down")
        await self._drain()
        self._writes_deadline = time.monotonic() + max(self.settings.shutdown_timeout, 10.0)
        for running in list(self._running.values()):
            if running.stop_reason is None:
                running.stop_reason = "shutdown"
            running.ctx.cancel()
            running.task.cancel()
        await asyncio.gather(
            *(r.task for r in list(self._running.values())), return_exceptions=True
        )
        while self._final_writes:
            await asyncio.gather(*list(self._final_writes), return_exceptions=True)
        # Heartbeats ran until every outcome was written (so no job looked abandoned); they
        # stop before deregistering, or a late beat would mark the worker active again.
        for task in self._side_tasks:
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        self._log_completed()
        with contextlib.suppress(QueueError, TimeoutError):
            await asyncio.wait_for(self.queue.deregister_worker(self.worker_id), 10)
        log.info(
            "worker %s stopped",
            self.worker_id,
            extra={
                "action": "worker_stopped",
                "worker_id": self.worker_id,
                "completed": self.state.completed,
                "failed": self.state.failed,
                "pid": os.getpid(),
            },
        )

    async def _drain(self) -> None:
        """Wait for running jobs until they finish, the timeout passes or a forced stop."""
        pending: set[asyncio.Task[Any]] = {r.task for r in self._running.values()}
        deadline = time.monotonic() + self.settings.shutdown_timeout
        force = asyncio.ensure_future(self._force.wait())
        try:
            while pending and not self._force.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "shutdown timeout: cancelling %d job(s)",
                        len(pending),
                        extra={"action": "shutdown_timeout", "worker_id": self.worker_id},
                    )
                    break
                done, _ = await asyncio.wait(
                    {*pending, force}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                pending -= done
        finally:
            force.cancel()
