"""Retrying an idempotent call through a passing outage: the policy, in one place.

Only calls whose repetition cannot do harm are retried here: `enqueue_job` returns the
document's active job if one exists, so a second call after an answer that was lost (the
request reached PostgreSQL, the reply did not reach us) queues nothing twice.

Transient (retried):  ConnectionFailed (refused, DNS), RequestTimeout (sent, no answer: the
                      outcome is unknown, which idempotence makes harmless), ServerError
                      (HTTP 5xx such as 502/503/504, PostgREST's PGRST000-003 "could not
                      connect", SQLSTATE 08/53/57 such as a restarting database).
Final (raised at once): every refusal by the database or the gateway (RpcError: 4xx,
                      bad argument, unknown document, key refused) and MalformedResponse.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from supaworker.exceptions import (
    ConfigurationError,
    ConnectionFailed,
    RequestTimeout,
    ServerError,
)

T = TypeVar("T")
TRANSIENT = (ConnectionFailed, RequestTimeout, ServerError)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient failures with jittered exponential backoff for at most `within`
    seconds (an attempt still in flight then runs to its own HTTP timeout). `within=0`
    tries once. 30 s outlasts a PostgREST or PostgreSQL restart (a few seconds) and a
    managed database's failover (Supabase: typically under 30 s) while keeping an API
    request that enqueues from hanging for minutes."""

    within: float = 30.0
    first_delay: float = 0.1
    max_delay: float = 2.0

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (>= 1), whatever the
        budget: `first_delay` doubling up to `max_delay`, jittered over its upper half."""
        # The exponent is capped: a caller without a budget (the heartbeat) may fail for hours.
        ceiling = min(self.max_delay, self.first_delay * 2.0 ** min(failures - 1, 30))
        # "Full jitter": many API processes cut off by one outage do not return in step.
        return random.uniform(ceiling / 2, ceiling)

    def delay(self, failures: int, elapsed: float) -> float | None:
        """Seconds to wait before the next try, or None to give up."""
        wait = self.backoff(failures)
        return wait if elapsed + wait <= self.within else None

    def _next(self, exc: Exception, function: str, failures: int, began: float) -> float:
        wait = self.delay(failures, time.monotonic() - began)
        if wait is None:
            raise exc
        log.warning(
            "%s failed (%s); trying again in %.2fs",
            function,
            exc,
            wait,
            extra={"action": "call_retried", "function": function, "failures": failures},
        )
        return wait

    def run(self, function: str, call: Callable[[], T]) -> T:
        began, failures = time.monotonic(), 0
        while True:
            try:
                return call()
            except TRANSIENT as exc:
                failures += 1
                time.sleep(self._next(exc, function, failures, began))

    async def arun(self, function: str, call: Callable[[], Awaitable[T]]) -> T:
        began, failures = time.monotonic(), 0
        while True:
            try:
                return await call()
            except TRANSIENT as exc:
                failures += 1
                await asyncio.sleep(self._next(exc, function, failures, began))


NO_RETRY = RetryPolicy(within=0)


def from_env(source: dict[str, str] | None, default: RetryPolicy) -> RetryPolicy:
    """`SUPAWORKER_ENQUEUE_RETRY_SECONDS` (seconds; 0 tries once) overrides the default."""
    value = (source or {}).get("SUPAWORKER_ENQUEUE_RETRY_SECONDS", "").strip()
    if not value:
        return default
    try:
        within = float(value)
    except ValueError:
        within = -1.0
    if within < 0:
        raise ConfigurationError(
            f"SUPAWORKER_ENQUEUE_RETRY_SECONDS must be a number of seconds >= 0, got {value!r}"
        )
    return RetryPolicy(within=within)
