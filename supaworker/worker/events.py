"""Job outcome events: what happened to the worker's jobs, told to every subscriber.

The worker emits one event per claim (its jobs) and one per final write's answer; logging
(`JobLog`, below) and metrics (`metrics.JobCounter`) subscribe to them side by side, so a
counter never depends on whether a log line was written (the log level). Subscribers run
inline on the event loop and must be quick and must not raise: one that raises is logged
and skipped, the others still hear the event.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from supaworker.models import Job

log = logging.getLogger("supaworker.worker")

EventKind = Literal["claimed", "completed", "failed", "retried", "cancelled", "released", "lost"]

# The log `action` of each kind (tests and dashboards read these names).
ACTIONS: dict[EventKind, str] = {
    "claimed": "jobs_claimed",
    "completed": "jobs_completed",
    "failed": "job_failed",
    "retried": "job_retry_scheduled",
    "cancelled": "job_cancelled",
    "released": "job_released",
    "lost": "job_lost",
}

# The `outcome` field of a failure's log line: the status the write left the job in.
_FAILED_OUTCOMES: dict[EventKind, str] = {
    "failed": "failed",
    "retried": "pending",
    "cancelled": "cancelled",
}


@dataclass(frozen=True)
class OutcomeEvent:
    """`jobs` share the kind: a claim's jobs, or the one job a final write was about.
    `duration` is the handler's run time (completed, failed, retried, cancelled, lost);
    `error` the attempt's error (failed, retried, cancelled; lost when a failure was fenced)."""

    kind: EventKind
    jobs: Sequence[Job]
    worker_id: str
    duration: float | None = None
    error: str | None = None


Subscriber = Callable[[OutcomeEvent], None]


class JobEvents:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: OutcomeEvent) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception(
                    "job event subscriber %r failed",
                    subscriber,
                    extra={"action": "event_subscriber_failed", "worker_id": event.worker_id},
                )


def rounded(duration: float | None) -> float | None:
    return round(duration, 4) if duration is not None else None


@functools.lru_cache(maxsize=256)
def job_logger(queue: str) -> logging.Logger:
    # getLogger takes the logging module's lock: once per queue, not once per job.
    return logging.getLogger(f"supaworker.job.{queue}")


def job_extra(action: str, job: Job, worker_id: str, **more: Any) -> dict[str, Any]:
    return {
        "action": action,
        "job_id": str(job.id),
        "worker_id": worker_id,
        "attempt": job.attempt,
        "queue": job.queue,
        **more,
    }


class JobLog:
    """The log lines of job outcomes. Claims and completions get one line per queue per
    turn of the event loop, not one per job: at thousands of jobs a second the per-job lines
    were a tenth of the worker's CPU (docs/benchmarks.md). Failures and other outcomes keep a
    line each."""

    def __init__(self) -> None:
        self._completed: list[OutcomeEvent] = []

    def __call__(self, event: OutcomeEvent) -> None:
        if event.kind == "claimed":
            self._grouped(ACTIONS["claimed"], "claimed", event.worker_id, event.jobs, None)
        elif event.kind == "completed":
            if not self._completed:
                asyncio.get_running_loop().call_soon(self.flush)
            self._completed.append(event)
        elif event.kind == "released":
            for job in event.jobs:
                log.info(
                    "job %s released for another worker",
                    job.id,
                    extra=job_extra("job_released", job, event.worker_id),
                )
        else:
            self._one(event)

    def flush(self) -> None:
        """Write the completions gathered so far (also called at shutdown)."""
        done, self._completed = self._completed, []
        if not done:
            return
        by_worker: dict[str, list[OutcomeEvent]] = {}
        for event in done:
            by_worker.setdefault(event.worker_id, []).append(event)
        for worker_id, events in by_worker.items():
            jobs = [job for e in events for job in e.jobs]
            durations = [rounded(e.duration) for e in events for _ in e.jobs]
            self._grouped(ACTIONS["completed"], "completed", worker_id, jobs, durations)

    def _one(self, event: OutcomeEvent) -> None:
        action = ACTIONS[event.kind]
        # A completion fenced out is no failure (info); everything else is an attempt failed.
        quiet = event.kind == "lost" and event.error is None
        outcome = _FAILED_OUTCOMES.get(event.kind, "fenced")
        for job in event.jobs:
            extra = job_extra(action, job, event.worker_id, duration=rounded(event.duration))
            extra["outcome"] = outcome
            if quiet:
                log.info("job %s finished after losing it", job.id, extra=extra)
                continue
            extra["error"] = event.error
            log.warning("job %s attempt failed (%s): %s", job.id, action, event.error, extra=extra)

    @staticmethod
    def _grouped(
        action: str,
        verb: str,
        worker_id: str,
        jobs: Sequence[Job],
        durations: list[float | None] | None,
    ) -> None:
        by_queue: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(i)
        for queue, indexes in by_queue.items():
            extra: dict[str, Any] = {
                "action": action,
                "worker_id": worker_id,
                "queue": queue,
                "count": len(indexes),
                "job_ids": [str(jobs[i].id) for i in indexes],
            }
            if durations is not None:
                extra["durations"] = [durations[i] for i in indexes]
            log.info("%s %d job(s) from %s", verb, len(indexes), queue, extra=extra)
