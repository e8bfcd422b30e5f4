"""What the worker holds: the jobs it runs, the jobs waiting for a slot, the jobs whose final
write is in flight, and the claims whose answer has not arrived.

Every job here is this worker's in SQL (assigned to it, attempt fenced), so heartbeats
report all of them (`owned_ids`): a job left out would look orphaned and be released under
the handler's feet. The ledger only counts; it starts nothing and writes nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from supaworker.models import Job
from supaworker.worker.batching import Reservation
from supaworker.worker.handler import JobContext
from supaworker.worker.prefetch import Prefetch

StopReason = Literal["cancel_requested", "lost", "shutdown"]


@dataclass
class RunningJob:
    job: Job
    ctx: JobContext
    task: asyncio.Task[None]
    stop_reason: StopReason | None = None


class Ledger:
    def __init__(self, concurrency: int, prefetch: int) -> None:
        self.concurrency = concurrency
        self.running: dict[uuid.UUID, RunningJob] = {}
        # Claimed beyond the free slots, waiting for one (worker/prefetch.py).
        self.prefetch = Prefetch(prefetch)
        # Handler done, outcome write in flight: still ours until it lands.
        self.finishing: set[uuid.UUID] = set()
        # Claims whose answer has not arrived (the claim loop's and those sent along with
        # completions): while any is out, unknown jobs in a heartbeat may be its answer.
        self.claims_in_flight = 0
        # Over the completion calls in flight: the jobs they complete (their slots are
        # theirs to refill) and the jobs their claims may bring.
        self._completing = 0
        self._reserved = 0

    # -- reading ----------------------------------------------------------------------------
    def free_slots(self) -> int:
        return self.concurrency - len(self.running)

    def owned_ids(self) -> list[uuid.UUID]:
        return [*self.running, *self.finishing, *self.prefetch.ids()]

    def idle(self) -> bool:
        """Nothing running, waiting or being written."""
        return not self.running and not self.finishing and not self.prefetch

    # -- running jobs -----------------------------------------------------------------------
    def add_running(self, running: RunningJob) -> None:
        self.running[running.job.id] = running

    def remove_running(self, job_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        running = self.running.get(job_id)
        if running is not None and running.task is task:  # (not a newer attempt's task)
            del self.running[job_id]

    # -- final writes -----------------------------------------------------------------------
    def writing(self, ids: list[uuid.UUID]) -> None:
        self.finishing.update(ids)

    def written(self, ids: list[uuid.UUID]) -> None:
        self.finishing.difference_update(ids)

    # -- claims -----------------------------------------------------------------------------
    def reserve(self, completing: int, *, may_claim: bool = True) -> Reservation:
        """How many jobs a completion call that completes `completing` jobs may claim: the
        free slots, plus the prefetch allowance, minus the jobs already waiting, minus what
        the calls still in flight may bring back (none when not `may_claim`: stopping,
        paused). Every reservation is `settle`d once its call is back."""
        allowance = self.prefetch.allowance(self.concurrency) if may_claim else 0
        # What SQL will count as this worker's once the calls' completions land: running,
        # waiting, and finished jobs whose outcome no call carries yet.
        held = (
            len(self.running)
            + len(self.prefetch)
            + len(self.finishing)
            - self._completing
            - completing
            + self._reserved
        )
        room = max(self.concurrency + allowance - held, 0) if may_claim else 0
        claim = Reservation(completing, room, allowance)
        self._completing += completing
        self._reserved += claim.limit
        if claim.limit:
            self.claims_in_flight += 1
        return claim

    def settle(self, claim: Reservation) -> None:
        """The call `reserve` answered is back (with or without jobs)."""
        self._completing -= claim.completing
        self._reserved -= claim.limit
        if claim.limit:
            self.claims_in_flight -= 1
            self.prefetch.observe_round_trip(time.monotonic() - claim.sent_at)
