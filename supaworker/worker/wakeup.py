"""Waking idle workers through Supabase Realtime instead of waiting for the next poll.

One channel per worker with three `postgres_changes` bindings:
- INSERT on `processing_queue`: new work;
- UPDATE on `processing_queue` with `status=eq.pending`: re-queued, retried or released work;
- UPDATE on `processing_queue` with `assigned_to=eq.<worker>`: a cancel request for one of
  this worker's jobs (acted on through an immediate heartbeat, the single source of truth);
- UPDATE on `vps_workers` with `worker_id=eq.<worker>`: pause / resume.

Reconnection is this module's job, not realtime-py's (whose auto-reconnect gives up after a
few tries): connect, join, wait for "Subscribed to PostgreSQL", report connected, then watch
the socket; on loss report disconnected (the loop polls at its normal pace meanwhile) and
reconnect with capped exponential backoff. After every (re)connect the loop is woken once to
catch up on whatever arrived while the subscription was down.

A new job wakes only workers that serve its queue and have its capabilities. They claim at
once by default (bench/latency.py: the former fixed 0-50 ms jitter was most of the worker's
share of the latency); `SUPAWORKER_WAKE_JITTER` delays each worker's claim by up to that many
seconds, derived from (job, worker), for large fleets of idle workers on one queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from supaworker.config import WorkerSettings
from supaworker.models import requires_met
from supaworker.realtime_subscription import (
    Binding,
    Change,
    Event,
    close_quietly,
    record_of,
    subscribe,
)

log = logging.getLogger("supaworker.worker.wakeup")

MAX_BACKOFF = 30.0
DUE_MARGIN = 0.05  # claim a little after run_at, so the database agrees the job is due


def jitter_for(job_id: str, worker_id: str, spread: float) -> float:
    """A delay in [0, spread] seconds, stable per (job, worker) and different across workers."""
    if spread <= 0:
        return 0.0
    digest = hashlib.blake2b(f"{job_id}/{worker_id}".encode(), digest_size=2).digest()
    return int.from_bytes(digest, "big") / 65535 * spread


def seconds_until(moment: object) -> float:
    """Seconds from now until an ISO timestamp (0 when past, missing or unreadable)."""
    if not isinstance(moment, str):
        return 0.0
    try:
        when = datetime.fromisoformat(moment)
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ahead = (when - datetime.now(UTC)).total_seconds()
    # The margin only for a job due later: one due already (the usual insert, whose run_at
    # is its creation) is claimed at once. (Adding it always held every wake-up back by up
    # to 50 ms: bench/latency.py, the worker's share.)
    return ahead + DUE_MARGIN if ahead > 0 else 0.0


class RealtimeWakeup:
    def __init__(self, supabase_url: str, key: str, settings: WorkerSettings) -> None:
        self._url = supabase_url
        self._key = key
        self._settings = settings
        self._worker_id = settings.worker_id
        self._last_worker_status: str | None = None
        self._wake: Callable[[], None] = lambda: None
        self._control: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bindings(self) -> list[Binding]:
        me = self._worker_id
        return [
            Binding(Event.Insert, "processing_queue", self._on_job_change),
            Binding(Event.Update, "processing_queue", self._on_job_change, "status=eq.pending"),
            Binding(
                Event.Update, "processing_queue", self._on_own_job_change, f"assigned_to=eq.{me}"
            ),
            Binding(Event.Update, "vps_workers", self._on_worker_change, f"worker_id=eq.{me}"),
        ]

    async def run(
        self,
        wake: Callable[[], None],
        connected: Callable[[bool], None],
        control: Callable[[], None],
    ) -> None:
        self._wake, self._control = wake, control
        self._loop = asyncio.get_running_loop()
        backoff = 0.5
        while True:
            client = None
            try:
                client = await subscribe(
                    self._url, self._key, f"supaworker-worker-{self._worker_id}", self._bindings()
                )
                # Python 3.11's wait_for (inside subscribe) can swallow a cancel that arrives as
                # its future completes; the task then watched the socket forever and the
                # worker's shutdown hung waiting for it (an empty --burst run, 2 in 6).
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError
                connected(True)
                backoff = 0.5
                while client.is_connected:
                    await asyncio.sleep(0.5)
                log.warning(
                    "realtime connection lost",
                    extra={"action": "realtime_lost", "worker_id": self._worker_id},
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "realtime unavailable (%r); retrying in %.1fs",
                    exc,
                    backoff,
                    extra={"action": "realtime_unavailable", "worker_id": self._worker_id},
                )
            finally:
                connected(False)
                if client is not None:
                    await close_quietly(client)
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, MAX_BACKOFF)

    # -- callbacks (synchronous, called from realtime-py's listener task) -----------------
    def _serves(self, record: dict[str, Any]) -> bool:
        queues = self._settings.queues
        if queues and record.get("queue") not in queues:
            return False
        return requires_met(self._settings.advertised_capabilities(), record.get("requires") or {})

    def _on_job_change(self, payload: Change) -> None:
        record = record_of(payload)
        if record.get("status") != "pending" or not self._serves(record):
            return
        # A retry with backoff or a scheduled job is due later: no event will say when, so
        # wake at its run_at (the slow safety poll would otherwise be the only trigger).
        delay = seconds_until(record.get("run_at")) + jitter_for(
            str(record.get("id")), self._worker_id, self._settings.wake_jitter
        )
        if delay <= self._settings.realtime_poll_interval:
            assert self._loop is not None
            self._loop.call_later(delay, self._wake)

    def _on_own_job_change(self, payload: Change) -> None:
        if record_of(payload).get("cancel_requested"):
            self._control()

    def _on_worker_change(self, payload: Change) -> None:
        status = record_of(payload).get("status")
        if status != self._last_worker_status:
            self._last_worker_status = status
            self._control()
