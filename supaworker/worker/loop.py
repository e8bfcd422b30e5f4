"""The worker loop: register, claim, spawn a task per job, shut down. The parts it drives:

    ledger.py      what the worker holds (running, waiting, being written, claims out)
    completer.py   every final write (batching.py: many per call, with the next claim;
                   retry.py: the one retry policy)
    heartbeat.py   the beat and acting on its reply
    events.py      job outcome events; logging (JobLog) and metrics subscribe to them
    supervisor.py  the side tasks (heartbeat, wake-up listener): one dying stops the worker
    execution.py   one handler call -> an Outcome (processes.py: --executor process)

    run -> _register -> _claim_loop -> _claim_once -> _run_claimed -> _spawn -> _process
        -> Completer.finish, whose batched call also claims the next jobs (_ClaimAlong ->
           _run_claimed; extras wait in the ledger's prefetch)
        -> _shutdown: stop claiming, drain within the shutdown timeout, cancel and release
           the rest, wait for every final write, deregister.

The loop talks to the queue only through `AsyncQueueClient` (no RPC names, no HTTP here).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from supaworker import __version__
from supaworker.client import AsyncQueueClient
from supaworker.config import WorkerSettings
from supaworker.exceptions import (
    ConfigurationError,
    PermissionDenied,
    QueueError,
    RpcError,
    TransportError,
)
from supaworker.models import Job, WorkerStatus
from supaworker.worker import signals
from supaworker.worker.batching import Reservation
from supaworker.worker.completer import Completer
from supaworker.worker.events import JobEvents, JobLog, OutcomeEvent, job_extra, job_logger
from supaworker.worker.execution import check_executor, run_handler
from supaworker.worker.handler import Handler, JobContext, is_async
from supaworker.worker.heartbeat import Heartbeat
from supaworker.worker.ledger import Ledger, RunningJob, StopReason
from supaworker.worker.processes import ProcessExecutor
from supaworker.worker.progress import ProgressForwarder
from supaworker.worker.supervisor import SideTasks

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_FORCED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "RunningJob",
    "StopReason",
    "WakeupSource",
    "Worker",
    "WorkerState",
]

log = logging.getLogger("supaworker.worker")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_FORCED = 130


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
class WorkerState:
    """What the worker knows about itself, for health checks and tests. The counters are
    attempts whose outcome this worker wrote: `completed` by this attempt, `failed` (failed,
    retry scheduled or cancelled), `lost` (fenced out: the job was no longer this worker's)."""

    registered: bool = False
    paused: bool = False
    realtime_connected: bool = False
    last_heartbeat_ok: float | None = None
    loop_turned_at: float = field(default_factory=time.monotonic)
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0

    def count(self, event: OutcomeEvent) -> None:
        n = len(event.jobs)
        if event.kind == "claimed":
            self.claimed += n
        elif event.kind == "completed":
            self.completed += n
        elif event.kind in ("failed", "retried", "cancelled"):
            self.failed += n
        elif event.kind == "lost":
            self.lost += n


class _ClaimAlong:
    """The worker's side of claiming with a completion call (batching.ClaimAlong): the
    ledger counts, the worker runs what comes back."""

    def __init__(self, ledger: Ledger, worker: Worker) -> None:
        self._ledger = ledger
        self._worker = worker

    def reserve(self, completing: int) -> Reservation:
        return self._ledger.reserve(completing, may_claim=self._worker.may_claim())

    def settled(self, claim: Reservation, jobs: list[Job] | None) -> None:
        self._ledger.settle(claim)
        self._worker.claim_answered(jobs, complete=jobs is not None and len(jobs) >= claim.limit)


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
        self.ledger = Ledger(settings.concurrency, settings.prefetch)
        self.events = JobEvents()
        self._job_log = JobLog()
        self.events.subscribe(self.state.count)
        self.events.subscribe(self._job_log)
        self._stop = asyncio.Event()
        self._forced = asyncio.Event()
        self._wake = asyncio.Event()
        self.completer = Completer(
            queue,
            self.worker_id,
            self.ledger,
            self.events,
            batch_size=settings.complete_batch_size,
            batch_delay=settings.complete_batch_delay,
            claims=_ClaimAlong(self.ledger, self),
            queues=settings.queues or None,
            slot_freed=self._wake.set,
            retry_due=self._wake_at,
        )
        self.heartbeat = Heartbeat(queue, self.worker_id, settings.heartbeat_interval, self)
        self._side_tasks = SideTasks(self._side_task_died)
        self._processes = (
            ProcessExecutor(settings.handler)
            if settings.executor == "process" and not is_async(handler)
            else None
        )
        self._exit_code = EXIT_OK

    # -- public controls ------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop claiming; let running jobs finish within the shutdown timeout."""
        if not self._stop.is_set():
            log.info(
                "stop requested: finishing running jobs",
                extra={
                    "action": "shutdown_requested",
                    "worker_id": self.worker_id,
                    "running": len(self.ledger.running),
                },
            )
        self._stop.set()

    def force_stop(self) -> None:
        """Second signal: cancel and release running jobs now."""
        log.warning("forced stop", extra={"action": "shutdown_forced", "worker_id": self.worker_id})
        self._exit_code = EXIT_FORCED
        self.completer.retry.force()
        self._stop.set()
        self._forced.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def running_job_ids(self) -> list[uuid.UUID]:
        return list(self.ledger.running)

    # -- run ------------------------------------------------------------------------------
    async def run(self) -> int:
        try:
            check_executor(self.handler, self.settings.executor, self.settings.handler)
        except ConfigurationError as exc:
            log.error("%s", exc, extra={"action": "handler_refused", "worker_id": self.worker_id})
            return EXIT_CONFIG
        try:
            await self.register()
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
            if self._processes is not None:
                self._processes.warm()  # the first job's process starts now
            try:
                await self._claim_loop()
            finally:
                await self._shutdown()
        return self._exit_code

    async def register(self) -> None:
        """Register (or register again); ConfigurationError when refused."""
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
        self._side_tasks.start(self.heartbeat.run(), "heartbeat")
        if self._wakeup is not None:
            self._side_tasks.start(
                self._wakeup.run(self.wake, self._set_realtime_connected, self.heartbeat.request),
                "wakeup",
            )

    def _side_task_died(self, name: str, exc: BaseException) -> None:
        log.error(
            "side task %s died: %r",
            name,
            exc,
            extra={"action": "side_task_died", "worker_id": self.worker_id},
        )
        self._exit_code = EXIT_ERROR
        self._stop.set()  # the claim loop ends now and the shutdown drains the jobs

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

    # -- what the heartbeat asks (heartbeat.HeartbeatTarget) -------------------------------
    def owned_ids(self) -> list[uuid.UUID]:
        return self.ledger.owned_ids()

    def claims_in_flight(self) -> bool:
        return self.ledger.claims_in_flight > 0

    def before_beat(self) -> None:
        # Prefetched jobs stuck behind a job far longer than the average go back.
        waited = self.ledger.prefetch.take_older_than(self.settings.heartbeat_interval)
        self.completer.release_waiting(waited, "waited too long")

    def beat_ok(self, at: float) -> None:
        self.state.last_heartbeat_ok = at

    def set_paused(self, paused: bool) -> None:
        if paused == self.state.paused:
            return
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

    def stop_job(self, job_id: uuid.UUID, reason: StopReason) -> None:
        waiting = self.ledger.prefetch.take(job_id)
        if waiting is not None:  # prefetched, not started: nothing to interrupt
            if reason == "cancel_requested":
                self.completer.cancelled(waiting)
            return
        running = self.ledger.running.get(job_id)
        if running is None or running.stop_reason is not None:
            return
        running.stop_reason = reason
        running.ctx.cancel()
        running.task.cancel()
        log.info(
            "stopping job %s: %s",
            job_id,
            reason,
            extra=job_extra("job_stopping", running.job, self.worker_id, reason=reason),
        )

    # -- claiming -------------------------------------------------------------------------
    def may_claim(self) -> bool:
        return not self._stop.is_set() and not self.state.paused

    async def _claim_loop(self) -> None:
        while not self._stop.is_set():
            self.state.loop_turned_at = time.monotonic()
            if not self.state.paused:
                claimed = await self._claim_once()
                if (
                    self.settings.burst
                    and claimed == 0
                    and self.ledger.idle()
                    # A completion that landed while the claim was answered frees a slot
                    # the claim could not see (it sets _wake): claim once more first.
                    and not self._wake.is_set()
                ):
                    log.info(
                        "burst: nothing left to claim",
                        extra={"action": "burst_done", "worker_id": self.worker_id},
                    )
                    break
                if claimed and self.ledger.free_slots() > 0:
                    continue  # there may be more waiting
            await self._wait_for_work()

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
        free = self.ledger.free_slots()
        if free <= 0 or self._stop.is_set():
            return 0
        self.ledger.claims_in_flight += 1
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
            self.heartbeat.request()
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
            self.ledger.claims_in_flight -= 1
        self._run_claimed(jobs)
        return len(jobs)

    def claim_answered(self, jobs: list[Job] | None, *, complete: bool) -> None:
        """A claim sent with a completion call is back: `jobs` it brought, None if the call
        failed (the claim may have landed). `complete`: it brought all it asked for."""
        if jobs is None:
            self.heartbeat.request()  # if the claim landed, the heartbeat finds its jobs
        else:
            self._run_claimed(jobs)
        if not complete:
            # The queue may have had no more (the claim loop looks again, and burst mode
            # learns it is done), or the claim failed. A call that claimed nothing because
            # the worker is full needs no claim either: its next completion claims.
            self._wake.set()

    def _run_claimed(self, jobs: list[Job]) -> None:
        if jobs:
            self.events.emit(OutcomeEvent("claimed", jobs, self.worker_id))
        if self._stop.is_set():
            # Answered after shutdown began (a completion call claims too): give them back.
            self.completer.release_waiting(jobs, "shutting down")
            return
        for job in jobs:
            if self.ledger.free_slots() > 0:
                self._spawn(job)
            else:
                self.ledger.prefetch.hold(job)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _wake_at(self, moment: datetime) -> None:
        """Claim again when a job scheduled for later (a retry's backoff) becomes due."""
        delay = (moment - datetime.now(UTC)).total_seconds() + 0.05
        if 0 < delay < self.settings.realtime_poll_interval:
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    # -- running jobs ---------------------------------------------------------------------
    def _spawn(self, job: Job) -> None:
        ctx = JobContext(
            job=job,
            worker_id=self.worker_id,
            logger=job_logger(job.queue),
            supabase=self._supabase,
        )
        task = asyncio.create_task(self._process(job, ctx), name=f"job-{job.id}")
        self.ledger.add_running(RunningJob(job, ctx, task))
        task.add_done_callback(functools.partial(self._job_done, job.id))

    def _job_done(self, job_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        self.ledger.remove_running(job_id, task)
        while not self._stop.is_set() and self.ledger.free_slots() > 0:
            job = self.ledger.prefetch.next()
            if job is None:
                break
            self._spawn(job)

    async def _process(self, job: Job, ctx: JobContext) -> None:
        # Every claim starts its jobs (start=True): the job is processing already.
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
                processes=self._processes,
                max_result_bytes=self.settings.max_result_bytes,
            )
        except asyncio.CancelledError:
            await forwarder.close()
            self._interrupted(job, time.monotonic() - began)
            raise
        await forwarder.close()
        duration = time.monotonic() - began
        self.ledger.prefetch.observe_run(duration)
        self.completer.finish(job, outcome, duration)

    def _interrupted(self, job: Job, duration: float) -> None:
        running = self.ledger.running.get(job.id)
        reason = running.stop_reason if running else "shutdown"
        if reason == "cancel_requested":
            self.completer.cancelled(job, duration)
        elif reason == "shutdown":
            self.completer.release(job)
        else:
            # "lost": the job belongs to another worker now; writing anything would be fenced
            # out. Its slot is free in SQL already: claim again.
            self._wake.set()

    # -- shutdown -------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        self._stop.set()
        self.completer.release_waiting(self.ledger.prefetch.take_all(), "shutting down")
        await self._drain()
        # Final writes keep retrying through faults, but not forever once stopping.
        self.completer.retry.give_up_after(max(self.settings.shutdown_timeout, 10.0))
        for running in list(self.ledger.running.values()):
            if running.stop_reason is None:
                running.stop_reason = "shutdown"
            running.ctx.cancel()
            running.task.cancel()
        await asyncio.gather(
            *(r.task for r in list(self.ledger.running.values())), return_exceptions=True
        )
        await self.completer.drain()
        # Heartbeats ran until every outcome was written (so no job looked abandoned); they
        # stop before deregistering, or a late beat would mark the worker active again.
        await self._side_tasks.stop()
        self._job_log.flush()
        if self._processes is not None:
            await self._processes.close()
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
        pending: set[asyncio.Task[Any]] = {r.task for r in self.ledger.running.values()}
        deadline = time.monotonic() + self.settings.shutdown_timeout
        force = asyncio.ensure_future(self._forced.wait())
        try:
            while pending and not self._forced.is_set():
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
