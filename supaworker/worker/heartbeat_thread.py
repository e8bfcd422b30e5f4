"""The heartbeat on its own thread, with its own event loop and HTTP client, so that a handler
that blocks the worker's event loop (CPU-bound work or `time.sleep` in an `async def`)
cannot silence it.

With the heartbeat on the worker's loop, a 12 s block stopped every beat: past the queue's
`dead_worker_horizon` the worker was declared dead, its jobs were rescued and ran again
elsewhere while it still ran them, and the job beside the blocking one was charged an
attempt (issue 19). Here `Heartbeat` (heartbeat.py, unchanged) runs in a thread, and
`LoopTarget` carries its calls to the worker across threads:

- what the beat reports (owned ids, claims in flight) is read on the worker's loop when it
  answers within `SNAPSHOT_WAIT`; when it does not (the loop is blocked), the last answer is
  reported. Nothing a blocked loop holds can change meanwhile (jobs finish and are written
  on that loop), so the last answer is still true; it is only marked stale, and a stale
  answer never releases "orphans" (a claim's answer may be waiting behind the block).
- what the reply asks (pause, cancel, lost) is posted to the worker's loop and runs when
  the loop is free again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable

from supaworker.client import AsyncQueueClient
from supaworker.worker.heartbeat import Heartbeat, HeartbeatTarget
from supaworker.worker.ledger import StopReason

log = logging.getLogger("supaworker.worker")

# Seconds a beat waits for the worker's loop to say what it holds before it reports the last
# answer instead.
SNAPSHOT_WAIT = 0.5
# Seconds the worker waits for the heartbeat thread to end when it stops.
JOIN_TIMEOUT = 10.0

ClientFactory = Callable[[], Awaitable[AsyncQueueClient]]


class LoopTarget:
    """A `HeartbeatTarget` whose calls come from the heartbeat thread and reach `target` on
    the worker's loop."""

    def __init__(self, target: HeartbeatTarget, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.loop = loop
        self._owned: list[uuid.UUID] = []
        self._claims_in_flight = False
        self.fresh = False

    def _ask(self, before_beat: bool) -> None:
        """Read what the worker holds and whether a claim is out, together (one turn of the
        worker's loop: no claim can land between the two), or mark the last answer stale."""
        answer: concurrent.futures.Future[tuple[list[uuid.UUID], bool]] = (
            concurrent.futures.Future()
        )

        def take() -> None:  # on the worker's loop
            if answer.set_running_or_notify_cancel():
                try:
                    if before_beat:
                        self.target.before_beat()
                    answer.set_result((self.target.owned_ids(), self.target.claims_in_flight()))
                except BaseException as exc:
                    answer.set_exception(exc)

        try:
            self.loop.call_soon_threadsafe(take)
            self._owned, self._claims_in_flight = answer.result(SNAPSHOT_WAIT)
            self.fresh = True
        except concurrent.futures.TimeoutError:
            answer.cancel()  # the loop, once free, skips it
            self.fresh = False
        except RuntimeError:  # the worker's loop is closed: the worker is gone
            self.fresh = False

    def before_beat(self) -> None:
        self._ask(before_beat=True)

    def owned_ids(self) -> list[uuid.UUID]:
        # Read again at every call: the heartbeat's reply is judged against what the worker
        # holds now, not before the beat's round trip. Orphans in a reply were claimed before
        # the beat; a claim that landed during its round trip must not look orphaned.
        self._ask(before_beat=False)
        return list(self._owned)

    def claims_in_flight(self) -> bool:
        # From the same answer as the last owned_ids() (Heartbeat.apply asks in that order).
        # Unknown while the loop is blocked: say yes, so that no orphan is released.
        return self._claims_in_flight or not self.fresh

    def set_paused(self, paused: bool) -> None:
        self.loop.call_soon_threadsafe(self.target.set_paused, paused)

    def stop_job(self, job_id: uuid.UUID, reason: StopReason) -> None:
        self.loop.call_soon_threadsafe(self.target.stop_job, job_id, reason)

    def beat_ok(self, at: float) -> None:
        self.loop.call_soon_threadsafe(self.target.beat_ok, at)

    async def register(self) -> None:
        done = asyncio.run_coroutine_threadsafe(self.target.register(), self.loop)
        await asyncio.wrap_future(done)


class ThreadedHeartbeat:
    """`Heartbeat` on a thread of its own; `run` is the worker's side task for it: it returns
    only by raising (the heartbeat died) and stops the thread when cancelled."""

    def __init__(
        self,
        connect: ClientFactory,
        worker_id: str,
        interval: float,
        target: HeartbeatTarget,
    ) -> None:
        self._connect = connect
        self.worker_id = worker_id
        self.interval = interval
        self.target = target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inner: Heartbeat | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._requested = False

    def request(self) -> None:
        """Beat now instead of at the next interval (from the worker's loop). A request made
        before the thread's heartbeat exists (its client still connecting) is kept and
        answered as soon as it does: a `control` message (pause, cancel) arriving right
        after the worker started was otherwise lost until the next interval."""
        # Flag first, then look: _main sets _inner first, then looks at the flag, so at least
        # one of the two sees the other (a request answered twice is one early beat more).
        self._requested = True
        loop, inner = self._loop, self._inner
        if loop is not None and inner is not None:
            with contextlib.suppress(RuntimeError):  # the thread's loop has ended
                loop.call_soon_threadsafe(inner.request)

    async def run(self) -> None:
        ended: concurrent.futures.Future[None] = concurrent.futures.Future()
        target = LoopTarget(self.target, asyncio.get_running_loop())
        thread = threading.Thread(
            target=self._thread_main, args=(target, ended), name="supaworker-heartbeat", daemon=True
        )
        thread.start()
        try:
            await asyncio.wrap_future(ended)
            raise RuntimeError("heartbeat thread ended")
        finally:
            self._stop_thread()
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT)

    def _stop_thread(self) -> None:
        self._ready.wait(JOIN_TIMEOUT)
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    def _thread_main(self, target: LoopTarget, ended: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._main(target))
        except asyncio.CancelledError:
            pass  # stopped by the worker
        except BaseException as exc:
            if not ended.done():
                ended.set_exception(exc)
            return
        if not ended.done():
            ended.set_result(None)

    async def _main(self, target: LoopTarget) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        try:
            queue = await self._connect()
        finally:
            self._ready.set()
        try:
            self._inner = Heartbeat(queue, self.worker_id, self.interval, target)
            if self._requested:
                self._inner.request()
            self._ready.set()
            await self._inner.run()
        finally:
            await queue.aclose()
