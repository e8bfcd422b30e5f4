"""Waking idle workers through Supabase Realtime instead of waiting for the next poll.

One private Broadcast channel per worker, topic `worker:<worker_id>`, joined with the service
role key (which bypasses the RLS on realtime.messages, on hosted as locally). The database
sends it (supaworker/sql/schema/35_wakeups.sql):
- `wake` {job_id, queue, run_at}: a job this worker can take arrived while it waited for work.
  The database picks one waiting worker per job, so a burst of N jobs costs at most
  min(N, waiting workers) messages, however many workers there are; a job due later (a retry
  with backoff) comes with its run_at and wakes the worker then;
- `control` {}: pause, resume, or a cancel request for one of its jobs (acted on through an
  immediate heartbeat, the single source of truth).
Nothing else: heartbeats send nothing, and the worker's own job changes are not sent back to
it (issue 20; the former postgres_changes bindings cost one message per job per worker).

Reconnection is this module's job, not realtime-py's (whose auto-reconnect gives up after a
few tries): connect, join, report connected, then watch the socket; on loss report
disconnected (the loop polls at its normal pace meanwhile) and reconnect with capped
exponential backoff. After every (re)connect the loop is woken once to catch up on whatever
arrived while the subscription was down. A wake-up lost otherwise (one racing the worker's
own claim) is caught by the safety poll.

`SUPAWORKER_WAKE_JITTER` delays the claim after a wake-up by up to that many seconds, derived
from (queue, worker): with one wake-up per job it is rarely needed any more.
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
from supaworker.realtime_subscription import BroadcastBinding, close_quietly, subscribe

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
        self._wake: Callable[[], None] = lambda: None
        self._control: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None

    def topic(self) -> str:
        return f"worker:{self._worker_id}"

    def _bindings(self) -> list[BroadcastBinding]:
        return [
            BroadcastBinding("wake", self._on_wake),
            BroadcastBinding("control", self._on_control),
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
                    self._url, self._key, self.topic(), self._bindings(), private=True
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
    def _on_wake(self, payload: dict[str, Any]) -> None:
        # A job due later (a retry with backoff) wakes at its run_at; the safety poll covers
        # anything further than the poll interval.
        delay = seconds_until(payload.get("run_at")) + jitter_for(
            str(payload.get("queue")), self._worker_id, self._settings.wake_jitter
        )
        if delay <= self._settings.realtime_poll_interval:
            assert self._loop is not None
            self._loop.call_later(delay, self._wake)

    def _on_control(self, payload: dict[str, Any]) -> None:
        self._control()
