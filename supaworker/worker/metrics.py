"""Prometheus metrics for a worker, fed without touching the loop's code.

- Job counters and the duration histogram come from the worker's job outcome events
  (worker/events.py; `JobCounter` subscribes to `Worker.events`), the same events the log
  lines are written from, so the counters do not depend on the log level and the loop stays
  free of metrics calls.
- RPC latency and errors by function come from `InstrumentedTransport`, a wrapper around
  the transport.
- Gauges (in flight, free slots, heartbeat lag, Realtime connected) are read from
  `Worker.state` at scrape time, and the queue-wide ones from `queue_stats()`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from supaworker.exceptions import QueueError, TransportError
from supaworker.transport import AsyncTransport
from supaworker.worker.events import EventKind, OutcomeEvent

if TYPE_CHECKING:
    from supaworker.worker.loop import Worker

# The `outcome` label of each event kind.
OUTCOMES: dict[EventKind, str] = {
    "claimed": "claimed",
    "completed": "completed",
    "failed": "failed",
    "retried": "retried",
    "cancelled": "cancelled",
    "released": "released",
    "lost": "lost",
}


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "supaworker_jobs_total",
            "Job transitions seen by this worker",
            ["queue", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "supaworker_job_duration_seconds",
            "Handler run time per attempt",
            ["queue"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
            registry=r,
        )
        self.in_flight = Gauge("supaworker_jobs_in_flight", "Jobs running now", registry=r)
        self.free_slots = Gauge("supaworker_free_slots", "Concurrency not in use", registry=r)
        self.heartbeat_lag = Gauge(
            "supaworker_heartbeat_lag_seconds",
            "Seconds since the last accepted heartbeat",
            registry=r,
        )
        self.realtime = Gauge(
            "supaworker_realtime_connected",
            "1 while the Realtime wake-up subscription is live",
            registry=r,
        )
        self.paused = Gauge(
            "supaworker_paused", "1 while an operator has paused this worker", registry=r
        )
        self.rpc_latency = Histogram(
            "supaworker_rpc_duration_seconds",
            "RPC round trips by function",
            ["function"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.rpc_errors = Counter(
            "supaworker_rpc_errors_total",
            "Failed RPCs by function",
            ["function", "kind"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "supaworker_queue_jobs", "Jobs in the queue by status", ["status"], registry=r
        )
        self.oldest_pending = Gauge(
            "supaworker_queue_oldest_pending_seconds", "Age of the oldest pending job", registry=r
        )

    def observe_worker(self, worker: Worker) -> None:
        state = worker.state
        running = len(worker.running_job_ids)
        self.in_flight.set(running)
        self.free_slots.set(max(0, worker.settings.concurrency - running))
        if state.last_heartbeat_ok is not None:
            self.heartbeat_lag.set(time.monotonic() - state.last_heartbeat_ok)
        self.realtime.set(1 if state.realtime_connected else 0)
        self.paused.set(1 if state.paused else 0)

    def observe_stats(self, stats: Mapping[str, Any]) -> None:
        for status, count in (stats.get("by_status") or {}).items():
            self.queue_depth.labels(status=status).set(count)
        oldest = stats.get("oldest_pending_seconds")
        self.oldest_pending.set(oldest or 0)


class JobCounter:
    """Turns job outcome events into the job counters and the duration histogram:
    `worker.events.subscribe(JobCounter(metrics))`."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def __call__(self, event: OutcomeEvent) -> None:
        outcome = OUTCOMES[event.kind]
        by_queue: dict[str, int] = {}
        for job in event.jobs:
            by_queue[job.queue] = by_queue.get(job.queue, 0) + 1
        for queue, count in by_queue.items():
            self.metrics.jobs.labels(queue=queue, outcome=outcome).inc(count)
            if event.duration is not None and event.kind != "claimed":
                self.metrics.duration.labels(queue=queue).observe(event.duration)


class InstrumentedTransport:
    """An `AsyncTransport` that times every RPC and counts its failures."""

    def __init__(self, inner: AsyncTransport, metrics: WorkerMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.client = getattr(inner, "client", None)

    async def call(self, function: str, params: Mapping[str, Any]) -> Any:
        began = time.perf_counter()
        try:
            return await self.inner.call(function, params)
        except QueueError as exc:
            kind = "transport" if isinstance(exc, TransportError) else "refused"
            self.metrics.rpc_errors.labels(function=function, kind=kind).inc()
            raise
        finally:
            self.metrics.rpc_latency.labels(function=function).observe(time.perf_counter() - began)

    async def aclose(self) -> None:
        await self.inner.aclose()
