"""What the worker's unit tests share: settings for a worker against the in-memory model of
the SQL functions (fast polls and heartbeats, burst mode, no Realtime), the worker itself,
and jobs to run."""

from __future__ import annotations

import uuid
from typing import Any

from supaworker.client import AsyncQueueClient
from supaworker.config import WorkerSettings
from supaworker.models import Job, JobStatus
from supaworker.testing import InMemoryTransport
from supaworker.worker.handler import Handler
from supaworker.worker.loop import Worker


def unit_settings(**overrides: Any) -> WorkerSettings:
    base: dict[str, Any] = dict(
        supabase_url="http://unused",
        service_key="unused",
        handler="tests:unused",
        worker_id="w1",
        concurrency=2,
        poll_interval=0.02,
        heartbeat_interval=0.05,
        shutdown_timeout=2.0,
        burst=True,
        realtime=False,
    )
    base.update(overrides)
    return WorkerSettings(**base)


def worker_on(fake: InMemoryTransport, handler: Handler, /, **overrides: Any) -> Worker:
    """A worker talking to `fake`, configured by `unit_settings(**overrides)`."""
    return Worker(
        AsyncQueueClient(fake), handler, unit_settings(**overrides), install_signal_handlers=False
    )


def enqueue(fake: InMemoryTransport, n: int = 1, **kw: Any) -> list[uuid.UUID]:
    return [uuid.UUID(fake.fn_enqueue_job(str(fake.add_document()), **kw)["id"]) for _ in range(n)]


def a_job(queue: str = "default", **fields: Any) -> Job:
    """A job row as a claim returns it (processing, first attempt), for tests of one part."""
    return Job(
        id=uuid.uuid4(),
        user_document_id=uuid.uuid4(),
        queue=queue,
        status=JobStatus.PROCESSING,
        attempt=1,
        **fields,
    )
