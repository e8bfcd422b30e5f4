"""A plan's Realtime quotas, counted and enforced the way hosted Realtime does it.

Numbers (supabase.com/docs/guides/realtime/limits, "Limits by plan"):

    ==========================  ======  =====  ======
    per project                  Free    Pro   Team
    ==========================  ======  =====  ======
    concurrent connections        200    500  10,000
    messages per second           100    500   2,500
    channel joins per second      100    500   2,500
    channels per connection       100    100     100
    presence messages per second   20     50   1,000
    broadcast payload size (KB)   256  3,000   3,000
    ==========================  ======  =====  ======

How hosted Realtime counts and answers (supabase/realtime @833cf36c):

* Rates are `Realtime.RateCounter`s (lib/realtime/rate_counter/rate_counter.ex, created by
  lib/realtime/tenants.ex with `tick: 5 s, max_bucket_len: 12, measurement: :avg`): every 5 s
  the count of the last tick becomes a bucket; the rate is the sum of the last (up to) 12
  buckets / their number / 5 s, i.e. messages per second averaged over up to a minute. The
  limit triggers when that average reaches the limit and clears when it falls below it; a
  counter idle (all zero) for 5 minutes is dropped and starts again with no history.
* Messages (`events_per_second`): each delivery of a broadcast or postgres_changes message to a
  client (`MessageDispatcher` sends `:update_rate_counter` to every receiving channel), each
  message a client sends on a channel (`handle_in` -> `count/1`), and each broadcast inserted
  in `realtime.messages` (`ReplicationConnection`). A channel that counts a delivery while the
  limit is triggered is shut down: `system` message `{extension: "system", status: "error",
  message: "Too many messages per second"}`, then `phx_close` (RealtimeChannel
  `handle_info(:update_rate_counter)` -> `shutdown_response`). Database broadcasts are dropped
  while it is triggered (`check_rate_limit`).
* Postgres changes (`db_events_per_second`, same limit): the poller adds one per subscriber of
  each change, and skips whole batches while triggered (replication_poller.ex).
* Joins (`joins_per_second`): a join while triggered is refused with
  `{"reason": "ClientJoinRateLimitReached: Too many joins per second"}` and the socket is
  disconnected; a new socket while triggered gets HTTP 429 `{"error": "Too many joins per
  second"}` (user_socket.ex, tenant_rate_limiters.ex).
* Connections (`max_concurrent_users`): sockets with at least one joined channel
  (`UsersCounter.add` at join). A join from a socket not yet counted when the project is full
  is refused with `{"reason": "ConnectionRateLimitReached: Too many connected users"}`; a new
  socket then gets HTTP 429 `{"error": "Too many connected users"}`.
* Channels per connection (`max_channels_per_client`): the join over the limit is refused with
  `{"reason": "ChannelRateLimitReached: Too many channels"}` (`limit_channels`).
* Presence (`presence_events_per_second`): each presence_diff delivered counts; a `track` while
  triggered shuts the channel down with "Too many presence messages per second".
* Payload size (`max_payload_size_in_kb`; `Tenants.validate_payload_size`: the payload's size
  over `kb * 1000 + 500` bytes): a client broadcast is dropped, answered
  `{"status": "error", "response": "payload_size_exceeded"}` when it asked for an ack; a
  database broadcast is dropped; the REST API answers 422 "Payload size exceeds tenant limit".
* The REST API checks the messages rate before sending (batch_broadcast.ex,
  single_broadcast.ex): HTTP 429 `{"message": "You have exceeded your rate limit"}` when the
  average is over the limit (at it, for the single-message route), and "Too many messages to
  broadcast, please reduce the batch size" when the batch would take it over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

TICK_S = 5.0
MAX_BUCKETS = 12
IDLE_RESET_S = 300.0
PAYLOAD_SIZE_PADDING = 500

# The refusals and shutdowns, worded as hosted Realtime words them.
JOIN_RATE_REASON = "ClientJoinRateLimitReached: Too many joins per second"
CONNECTIONS_REASON = "ConnectionRateLimitReached: Too many connected users"
CHANNELS_REASON = "ChannelRateLimitReached: Too many channels"
MESSAGES_SHUTDOWN = "Too many messages per second"
PRESENCE_SHUTDOWN = "Too many presence messages per second"
CONNECT_TOO_MANY_USERS = "Too many connected users"
CONNECT_TOO_MANY_JOINS = "Too many joins per second"
PAYLOAD_TOO_LARGE = "Payload size exceeds tenant limit"
REST_RATE_EXCEEDED = "You have exceeded your rate limit"
REST_BATCH_TOO_BIG = "Too many messages to broadcast, please reduce the batch size"


@dataclass(frozen=True, slots=True)
class Limits:
    """One project's quotas; None means unlimited. Field names are hosted's tenant fields."""

    max_concurrent_users: int | None
    max_events_per_second: int | None
    max_joins_per_second: int | None
    max_channels_per_client: int | None
    max_presence_events_per_second: int | None
    max_payload_size_in_kb: int | None

    def payload_too_large(self, size: int) -> bool:
        limit = self.max_payload_size_in_kb
        return limit is not None and size > limit * 1000 + PAYLOAD_SIZE_PADDING


PLANS: dict[str, Limits] = {
    "free": Limits(200, 100, 100, 100, 20, 256),
    "pro": Limits(500, 500, 500, 100, 50, 3_000),
    "team": Limits(10_000, 2_500, 2_500, 100, 1_000, 3_000),
    "off": Limits(None, None, None, None, None, None),
}
LIMIT_NAMES = tuple(f.name for f in fields(Limits))


def resolve(plan: str, overrides: dict[str, int] | None = None) -> Limits:
    """The plan's limits with explicit numbers on top (a value <= 0 means unlimited)."""
    try:
        limits = PLANS[plan.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown Realtime plan {plan!r}; expected one of {', '.join(PLANS)}"
        ) from None
    unknown = set(overrides or {}) - set(LIMIT_NAMES)
    if unknown:
        raise ValueError(
            f"unknown Realtime limit(s) {', '.join(sorted(unknown))}; "
            f"expected {', '.join(LIMIT_NAMES)}"
        )
    changes = {name: (value if value > 0 else None) for name, value in (overrides or {}).items()}
    return replace(limits, **changes)


class RateCounter:
    """`Realtime.RateCounter` with `measurement: :avg`, ticking lazily on each read."""

    def __init__(
        self,
        limit: int | None,
        *,
        tick_s: float = TICK_S,
        max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._tick = tick_s
        self._max_buckets = max_buckets
        self._clock = clock
        self._started = False
        self._next_tick = 0.0
        self._count = 0
        self._buckets: list[int] = []
        self._last_busy = 0.0
        self._avg = 0.0
        self._triggered = False

    def add(self, n: int = 1) -> None:
        self._advance()
        self._count += n

    @property
    def triggered(self) -> bool:
        self._advance()
        return self._triggered

    @property
    def avg(self) -> float:
        """Messages per second over the buckets so far (what hosted compares to the limit)."""
        self._advance()
        return self._avg

    def _advance(self) -> None:
        now = self._clock()
        if not self._started:
            self._started, self._next_tick, self._last_busy = True, now + self._tick, now
            return
        if now < self._next_tick:
            return
        # A long quiet spell is a run of empty buckets; no need to replay it tick by tick.
        missed = int((now - self._next_tick) // self._tick)
        if missed > self._max_buckets:
            self._next_tick += (missed - self._max_buckets) * self._tick
        while now >= self._next_tick:
            self._roll(self._next_tick)
            self._next_tick += self._tick

    def _roll(self, at: float) -> None:
        count, self._count = self._count, 0
        if count:
            self._last_busy = at
        elif not any(self._buckets) and at - self._last_busy >= IDLE_RESET_S:
            # Hosted drops a counter idle for 5 minutes; the next one starts without history.
            self._buckets, self._avg, self._triggered = [], 0.0, False
            return
        self._buckets = [count, *self._buckets][: self._max_buckets]
        self._avg = sum(self._buckets) / len(self._buckets) / self._tick
        # Triggers at the limit, clears below it (`maybe_trigger_limit`).
        self._triggered = self.limit is not None and self._avg >= self.limit


class Quotas:
    """The project-wide counters (hosted keys them by tenant; the local stack is one tenant)."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.events = RateCounter(limits.max_events_per_second, clock=clock)
        self.db_events = RateCounter(limits.max_events_per_second, clock=clock)
        self.joins = RateCounter(limits.max_joins_per_second, clock=clock)
        self.presence = RateCounter(limits.max_presence_events_per_second, clock=clock)

    def too_many_users(self, counted: int) -> bool:
        limit = self.limits.max_concurrent_users
        return limit is not None and counted >= limit

    def too_many_channels(self, joined: int) -> bool:
        limit = self.limits.max_channels_per_client
        return limit is not None and joined >= limit
