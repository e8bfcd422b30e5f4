"""Side tasks (the heartbeat, the wake-up listener) supervised: one that dies is reported the
moment it dies (its done callback), so the worker stops at once instead of when its claim
loop next turns (up to the poll interval: 30 s with Realtime connected)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("supaworker.worker")

Died = Callable[[str, BaseException], None]

# Seconds a cancelled side task may take to end before it is cancelled again.
RECANCEL_AFTER = 0.5


class SideTasks:
    def __init__(self, died: Died) -> None:
        self._died = died
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self.failure: tuple[str, BaseException] | None = None

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._done)
        self._tasks.append(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        if self._stopping or task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            # A side task runs for the worker's life: ending early is a death too.
            exc = RuntimeError(f"side task {task.get_name()} returned")
        if self.failure is None:
            self.failure = (task.get_name(), exc)
        self._died(task.get_name(), exc)

    async def stop(self) -> None:
        """Cancel them all and wait until they are gone.

        A cancellation can be lost: on Python 3.11 `asyncio.wait_for` returns the inner
        result when it completes at the moment of the cancel (the Realtime subscription did,
        and the worker then hung in its shutdown after `burst_done`). So a task still
        running after a moment is cancelled again, until it ends."""
        self._stopping = True
        pending = {task for task in self._tasks if not task.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER)
            if pending:
                log.warning(
                    "side task(s) %s ignored a cancellation; cancelling again",
                    ", ".join(sorted(t.get_name() for t in pending)),
                    extra={"action": "side_task_recancelled"},
                )
        # Retrieve the outcomes, so that none is reported as never retrieved.
        await asyncio.gather(*self._tasks, return_exceptions=True)
