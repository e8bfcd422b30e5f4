"""Prefetch: a few jobs held beyond the worker's slots, only while jobs are shorter than a
round trip.

A worker whose jobs take less time than one call to the API idles between them: it claims
for the slots that are free, and the slots empty again before the next claim answers. With
prefetch the call that completes finished jobs also claims a few more than the free slots
(`complete_and_claim`'s `p_prefetch`); the extras wait here and start the moment a slot
frees, while the next call is in flight (graphile-worker's local queue, Celery's prefetch).

How many: `concurrency x round trip / job run time` (the jobs the slots finish during one
call), capped by `SUPAWORKER_PREFETCH` (default 128; 0 turns it off). Both times are moving
averages measured here, so a worker whose jobs take seconds prefetches nothing: its jobs
stay in the queue for any idle worker to take, which is what spreading work across VPS
needs. Until the first jobs have run the worker does not prefetch.

Prefetched jobs are claimed like the others (processing, attempt + 1); while they wait they
are this worker's, reported by its heartbeats. One that waits longer than `max_wait`
(a job ran far longer than the average) is released back to the queue, no attempt spent.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict

from supaworker.models import Job

# Weight of a new sample in the moving averages.
SMOOTHING = 0.2


class Prefetch:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: OrderedDict[uuid.UUID, tuple[Job, float]] = OrderedDict()
        self._run_time: float | None = None
        self._round_trip: float | None = None

    # -- how many ------------------------------------------------------------------------
    def observe_run(self, seconds: float) -> None:
        self._run_time = _average(self._run_time, seconds)

    def observe_round_trip(self, seconds: float) -> None:
        self._round_trip = _average(self._round_trip, seconds)

    def allowance(self, concurrency: int) -> int:
        """Jobs to hold beyond the slots: what the slots finish during one round trip."""
        if not self.limit or self._run_time is None or self._round_trip is None:
            return 0
        per_slot = self._round_trip / max(self._run_time, 1e-6)
        return min(self.limit, int(concurrency * per_slot))

    # -- the jobs waiting ----------------------------------------------------------------
    def hold(self, job: Job) -> None:
        self._waiting[job.id] = (job, time.monotonic())

    def next(self) -> Job | None:
        if not self._waiting:
            return None
        _, (job, _) = self._waiting.popitem(last=False)
        return job

    def take(self, job_id: uuid.UUID) -> Job | None:
        held = self._waiting.pop(job_id, None)
        return held[0] if held else None

    def take_all(self) -> list[Job]:
        jobs = [job for job, _ in self._waiting.values()]
        self._waiting.clear()
        return jobs

    def take_older_than(self, max_wait: float) -> list[Job]:
        horizon = time.monotonic() - max_wait
        old = [job_id for job_id, (_, since) in self._waiting.items() if since < horizon]
        return [job for job_id in old if (job := self.take(job_id)) is not None]

    def ids(self) -> list[uuid.UUID]:
        return list(self._waiting)

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._waiting


def _average(current: float | None, sample: float) -> float:
    return sample if current is None else current + SMOOTHING * (sample - current)
