"""Notice and log a blocked event loop: which jobs were running, and for how long.

An async handler that does CPU-bound work or calls `time.sleep` holds the worker's event
loop: no other job advances, no claim, no final write. The heartbeat no longer depends on
the loop (heartbeat_thread.py), so nothing else would show it. `tick` (a side task on the
loop) notes the time every TICK seconds; a thread watches that note and, once it is older
than `threshold`, logs `action: loop_blocked` with the running job ids, and every
`threshold` more seconds while the block lasts; when the loop turns again, `tick` logs
`loop_unblocked` with the whole duration.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable

log = logging.getLogger("supaworker.worker")

TICK = 0.1


class LoopWatchdog:
    def __init__(
        self, worker_id: str, threshold: float, running: Callable[[], list[uuid.UUID]]
    ) -> None:
        self.worker_id = worker_id
        self.threshold = threshold
        self._running = running
        self._last_tick = time.monotonic()
        self._reported_at: float | None = None
        self._jobs: list[str] = []
        self._stop = threading.Event()
        self.blocks: list[float] = []  # durations of the blocks seen (tests, metrics)

    async def tick(self) -> None:
        """The loop's side: runs for the worker's life; starts the watching thread."""
        thread = threading.Thread(target=self._watch, name="supaworker-watchdog", daemon=True)
        self._last_tick = time.monotonic()
        thread.start()
        try:
            while True:
                await asyncio.sleep(TICK)
                now = time.monotonic()
                late = now - self._last_tick - TICK
                self._last_tick = now
                if late >= self.threshold:
                    self.blocks.append(late)
                    log.warning(
                        "event loop was blocked for %.1fs (running jobs: %s)",
                        late,
                        ", ".join(self._jobs) or "none",
                        extra={
                            "action": "loop_unblocked",
                            "worker_id": self.worker_id,
                            "blocked_seconds": round(late, 2),
                            "job_ids": self._jobs,
                        },
                    )
                self._reported_at = None
        finally:
            self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(self.threshold / 4, 0.5)):
            stalled = time.monotonic() - self._last_tick
            if stalled < self.threshold:
                continue
            if self._reported_at is not None and stalled - self._reported_at < self.threshold:
                continue
            if self._reported_at is None:
                # The running jobs as the block began (a dict's keys, copied under the GIL).
                self._jobs = [str(job_id) for job_id in self._running()]
            self._reported_at = stalled
            log.warning(
                "event loop blocked for %.1fs: a handler is holding it (running jobs: %s); "
                "async handlers must not block (use asyncio.to_thread or a sync handler)",
                stalled,
                ", ".join(self._jobs) or "none",
                extra={
                    "action": "loop_blocked",
                    "worker_id": self.worker_id,
                    "blocked_seconds": round(stalled, 2),
                    "job_ids": self._jobs,
                },
            )
