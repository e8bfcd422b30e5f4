"""Forwarding `ctx.progress()` calls to `report_progress` without blocking the handler.

Handlers may report progress thousands of times a second from any thread; the forwarder keeps
only the latest value and sends at most one update per `min_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

from supaworker.exceptions import QueueError

log = logging.getLogger(__name__)

Send = Callable[[float, str | None], Awaitable[bool]]


class ProgressForwarder:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, send: Send, min_interval: float = 0.25
    ) -> None:
        self._loop = loop
        self._send = send
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._latest: tuple[float, str | None] | None = None
        self._scheduled = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def report(self, percent: float, message: str | None) -> None:
        """Called from the handler, on any thread."""
        with self._lock:
            if self._closed:
                return
            self._latest = (percent, message)
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if not self._closed:
            self._task = self._loop.create_task(self._flush())

    async def _flush(self) -> None:
        while True:
            with self._lock:
                item, self._latest = self._latest, None
                if item is None or self._closed:
                    self._scheduled = False
                    return
            try:
                await self._send(*item)
            except QueueError as exc:
                # Progress is advisory; the outcome write is what must not be lost.
                log.debug("progress not sent: %s", exc, extra={"action": "progress_failed"})
            await asyncio.sleep(self._min_interval)

    async def close(self) -> None:
        """Stop forwarding (before the final status write, so no progress lands after it)."""
        with self._lock:
            self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
