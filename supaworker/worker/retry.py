"""The one retry policy of the worker's final writes, and which refusals mean what.

A final write (complete, fail, release) is fenced by job, worker and attempt in SQL, so
repeating it is safe. It is retried:
- through transient faults (no usable answer: network, 5xx, the database unreachable), with
  a back-off of 0.1 s doubling to 5 s, until it lands, the worker is forced to stop, or a
  stopping worker's grace for final writes has run out;
- through serialization failures and deadlocks (SQLSTATE class 40: the transaction lost a
  race with another and was rolled back, nothing was written), at most
  `MAX_CONFLICT_RETRIES` times;
and never when the database refused it otherwise (the same call would be refused again).
Giving up returns None: the job stays assigned to this worker and the reaper rescues it
once heartbeats stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from supaworker.exceptions import QueueError, RpcError, TransportError

log = logging.getLogger("supaworker.worker")
T = TypeVar("T")

MAX_CONFLICT_RETRIES = 8
FIRST_DELAY = 0.1
MAX_DELAY = 5.0


def is_conflict(exc: BaseException) -> bool:
    """A serialization failure (40001) or deadlock (40P01): retrying may well succeed."""
    return isinstance(exc, RpcError) and (exc.code or "").startswith("40")


def is_missing_function(exc: BaseException) -> bool:
    """PostgREST found no such function (an older database): the only refusal that says a
    call will never work here."""
    return isinstance(exc, RpcError) and exc.code == "PGRST202"


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) or is_conflict(exc)


class RetryPolicy:
    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._forced = False
        self._deadline: float | None = None

    def force(self) -> None:
        """A forced stop: the next fault ends the write's retries."""
        self._forced = True

    def give_up_after(self, seconds: float) -> None:
        """Shutting down: retry for at most `seconds` more, not forever."""
        self._deadline = time.monotonic() + seconds

    def _out_of_time(self) -> bool:
        return self._forced or (self._deadline is not None and time.monotonic() > self._deadline)

    async def __call__(self, name: str, call: Callable[[], Awaitable[T]]) -> T | None:
        delay = FIRST_DELAY
        conflicts = 0
        while True:
            try:
                return await call()
            except QueueError as exc:
                if is_conflict(exc):
                    conflicts += 1
                if not is_retryable(exc) or conflicts > MAX_CONFLICT_RETRIES:
                    log.error(
                        "%s refused: %s",
                        name,
                        exc,
                        extra={
                            "action": "rpc_refused",
                            "worker_id": self.worker_id,
                            "function": name,
                        },
                    )
                    return None
                if self._out_of_time():
                    log.error(
                        "%s abandoned while stopping: %s",
                        name,
                        exc,
                        extra={"action": "write_abandoned", "worker_id": self.worker_id},
                    )
                    return None
                log.warning(
                    "%s failed, retrying in %.1fs: %s",
                    name,
                    delay,
                    exc,
                    extra={"action": "rpc_retry", "worker_id": self.worker_id, "function": name},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
