"""`QueueClient` / `AsyncQueueClient`: what an API server calls instead of processing a
document itself, and what the operator CLI and the worker are built on.

    from supaworker import QueueClient
    queue = QueueClient.from_env()           # SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY
    job = queue.enqueue(document_id, priority=5)
    return {"success": True, "status": "queued", "job_id": str(job.id)}

Each method is one RPC (see `supaworker.rpc`); errors are `supaworker.exceptions` errors.
`enqueue` alone retries a passing outage (`supaworker.retry`): it is idempotent per document.
"""

from __future__ import annotations

import functools
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, Unpack

import httpx

from supaworker import retry, rpc
from supaworker.exceptions import ConfigurationError, NotFound, RpcError
from supaworker.models import HeartbeatReply, Job, JobEvent, QueueStats, WorkerInfo, WorkerStatus
from supaworker.retry import RetryPolicy
from supaworker.rpc import BulkItem, EnqueueOptions, WorkerRegistration
from supaworker.transport import (
    DEFAULT_TIMEOUT,
    AsyncRpcTransport,
    AsyncTransport,
    SupabaseSyncTransport,
    SyncTransport,
    execute,
    execute_sync,
)

DocumentId = uuid.UUID | str
_RETRY = RetryPolicy()


def _retry_from(env: Mapping[str, str] | None) -> RetryPolicy:
    return retry.from_env(dict(os.environ if env is None else env), _RETRY)


def credentials_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """`SUPABASE_URL` and a service key (`SUPABASE_SERVICE_ROLE_KEY` or `SUPABASE_SECRET_KEY`)."""
    source = os.environ if env is None else env
    url = source.get("SUPABASE_URL", "")
    key = source.get("SUPABASE_SERVICE_ROLE_KEY") or source.get("SUPABASE_SECRET_KEY") or ""
    if not url:
        raise ConfigurationError("SUPABASE_URL is not set (your project's API URL)")
    if not key:
        raise ConfigurationError("Set SUPABASE_SERVICE_ROLE_KEY or SUPABASE_SECRET_KEY")
    return url, key


class AsyncQueueClient:
    """The queue's API for asyncio code."""

    def __init__(self, transport: AsyncTransport, *, enqueue_retry: RetryPolicy = _RETRY) -> None:
        self.transport = transport
        self.enqueue_retry = enqueue_retry

    @classmethod
    async def connect(
        cls,
        url: str,
        key: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        access_token: str | None = None,
        enqueue_retry: RetryPolicy = _RETRY,
    ) -> AsyncQueueClient:
        """`access_token` acts as a signed-in user (only their documents) instead of the key."""
        transport = await AsyncRpcTransport.connect(
            url, key, timeout=timeout, access_token=access_token
        )
        return cls(transport, enqueue_retry=enqueue_retry)

    @classmethod
    async def from_env(cls, env: Mapping[str, str] | None = None) -> AsyncQueueClient:
        url, key = credentials_from_env(env)
        return await cls.connect(url, key, enqueue_retry=_retry_from(env))

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- app side ---------------------------------------------------------------------
    async def enqueue(self, document_id: DocumentId, **options: Unpack[EnqueueOptions]) -> Job:
        """Queue a document (idempotent: an active job for it is returned as is).

        Transient failures (connection refused, no answer, HTTP 502/503/504, PostgREST's
        "could not connect") are retried with backoff for `enqueue_retry.within` seconds (30
        by default; `SUPAWORKER_ENQUEUE_RETRY_SECONDS` with `from_env`), which is safe
        because a second call returns the job the first one queued. A refusal (4xx: unknown
        document, bad argument, key refused) is raised at once, never retried.
        """
        call = rpc.enqueue_job(document_id, **options)
        return await self.enqueue_retry.arun(call.function, lambda: execute(self.transport, call))

    async def enqueue_many(
        self, documents: Sequence[BulkItem], **defaults: Unpack[EnqueueOptions]
    ) -> list[Job]:
        """Queue many documents, each `defaults` overlaid by its own options (an item is an
        id or `(id, options)`); one job per item, in order. One `enqueue_jobs` call per
        10,000 documents: each call is all or nothing (a bad element refuses it, naming its
        index), idempotent per document, and counts against the owners' quotas. Transient
        failures are retried as `enqueue` retries them: a repeated call is safe."""
        jobs: list[Job] = []
        for start in range(0, len(documents), rpc.MAX_BULK):
            call = rpc.enqueue_jobs(documents[start : start + rpc.MAX_BULK], **defaults)
            batch: list[Job] = await self.enqueue_retry.arun(
                call.function, functools.partial(execute, self.transport, call)
            )
            jobs.extend(batch)
        return jobs

    async def get(self, job_id: DocumentId) -> Job:
        return await execute(self.transport, rpc.get_job(job_id))

    async def history(self, job_id: DocumentId) -> list[JobEvent]:
        return await execute(self.transport, rpc.job_history(job_id))

    async def jobs(
        self, *, status: str | None = None, queue: str | None = None, limit: int = 50
    ) -> list[Job]:
        return await execute(self.transport, rpc.list_jobs(status=status, queue=queue, limit=limit))

    async def stats(self) -> QueueStats:
        return await execute(self.transport, rpc.queue_stats())

    async def retry(self, job_id: DocumentId) -> Job:
        return await execute(self.transport, rpc.retry_job(job_id))

    async def retry_failed(self, queue: str | None = None) -> int:
        return await execute(self.transport, rpc.retry_failed_jobs(queue))

    async def cancel(self, job_id: DocumentId) -> Job:
        return await execute(self.transport, rpc.cancel_job(job_id))

    async def workers(self) -> list[WorkerInfo]:
        return await execute(self.transport, rpc.list_workers())

    async def set_worker_status(self, worker_id: str, status: WorkerStatus) -> WorkerInfo:
        return await execute(self.transport, rpc.set_worker_status(worker_id, status))

    async def schema_version(self) -> int | None:
        """The database's supaworker schema version; None before migration 0012 (no function)."""
        try:
            return await execute(self.transport, rpc.supaworker_schema_version())
        except NotFound:
            return None

    async def reap_stale_jobs(self) -> int:
        return await execute(self.transport, rpc.reap_stale_jobs())

    async def purge_finished(self, older_than_seconds: float | None = None) -> int:
        return await execute(self.transport, rpc.purge_finished_jobs(older_than_seconds))

    # -- worker side ------------------------------------------------------------------
    async def register_worker(
        self, worker_id: str, **info: Unpack[WorkerRegistration]
    ) -> WorkerInfo:
        return await execute(self.transport, rpc.register_worker(worker_id, **info))

    async def heartbeat(self, worker_id: str, job_ids: Sequence[uuid.UUID]) -> HeartbeatReply:
        return await execute(self.transport, rpc.heartbeat_worker(worker_id, job_ids))

    async def deregister_worker(self, worker_id: str) -> None:
        await execute(self.transport, rpc.deregister_worker(worker_id))

    async def claim(
        self, worker_id: str, limit: int, queues: Sequence[str] | None, *, start: bool = False
    ) -> list[Job]:
        """Claim up to `limit` jobs; with `start` they are already processing when returned."""
        return await execute(
            self.transport, rpc.claim_next_job(worker_id, limit, queues, start=start)
        )

    async def start(self, job: Job, worker_id: str) -> bool:
        return await execute(self.transport, rpc.start_job(job.id, worker_id, job.attempt))

    async def complete(self, job: Job, worker_id: str, result: Any) -> bool:
        return await execute(
            self.transport, rpc.complete_job(job.id, worker_id, job.attempt, result)
        )

    async def complete_many(
        self, worker_id: str, results: Sequence[tuple[uuid.UUID, int, Any]]
    ) -> int:
        return await execute(self.transport, rpc.complete_jobs(worker_id, results))

    async def complete_and_claim(
        self,
        worker_id: str,
        results: Sequence[tuple[uuid.UUID, int, Any]],
        limit: int,
        queues: Sequence[str] | None,
        *,
        prefetch: int = 0,
    ) -> rpc.Exchange:
        """Complete `results`, then claim (already processing) up to `limit` jobs: one call."""
        return await execute(
            self.transport,
            rpc.complete_and_claim(worker_id, results, limit, queues, prefetch=prefetch),
        )

    async def fail(
        self,
        job: Job,
        worker_id: str,
        error: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> Job | None:
        """Fail one attempt; `retry_after` (seconds) replaces the backoff before its retry.
        `error` is what the job's owner reads, `detail` what operators read."""
        seconds = None if retry_after is None else max(math.ceil(retry_after), 0)
        try:
            return await execute(
                self.transport,
                rpc.fail_job(
                    job.id,
                    worker_id,
                    job.attempt,
                    error,
                    retryable=retryable,
                    retry_after_seconds=seconds,
                    error_detail=detail,
                ),
            )
        except RpcError as exc:
            # PGRST202: a database without migration 0014 (a rolling upgrade) has
            # no p_error_detail; the attempt's outcome matters more than its detail.
            if detail is None or exc.code != "PGRST202":
                raise
        return await self.fail(job, worker_id, error, retryable=retryable, retry_after=retry_after)

    async def snooze(self, job: Job, worker_id: str, seconds: float) -> Job | None:
        """Back to pending for `seconds` without spending an attempt (a handler's Snooze);
        None when the worker no longer owns this attempt."""
        return await execute(
            self.transport, rpc.snooze_job(job.id, worker_id, job.attempt, seconds)
        )

    async def progress(self, job: Job, worker_id: str, percent: float, message: str | None) -> bool:
        return await execute(
            self.transport, rpc.report_progress(job.id, worker_id, job.attempt, percent, message)
        )

    async def release(self, worker_id: str, job_ids: Sequence[uuid.UUID] | None = None) -> int:
        return await execute(self.transport, rpc.release_jobs(worker_id, job_ids))


class QueueClient:
    """The queue's API for synchronous code (Flask, Django, scripts)."""

    def __init__(self, transport: SyncTransport, *, enqueue_retry: RetryPolicy = _RETRY) -> None:
        self.transport = transport
        self.enqueue_retry = enqueue_retry

    @classmethod
    def connect(
        cls,
        url: str,
        key: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        access_token: str | None = None,
        enqueue_retry: RetryPolicy = _RETRY,
    ) -> QueueClient:
        return cls(
            SupabaseSyncTransport.connect(url, key, timeout=timeout, access_token=access_token),
            enqueue_retry=enqueue_retry,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QueueClient:
        url, key = credentials_from_env(env)
        return cls.connect(url, key, enqueue_retry=_retry_from(env))

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def enqueue(self, document_id: DocumentId, **options: Unpack[EnqueueOptions]) -> Job:
        """Queue a document (idempotent: an active job for it is returned as is).

        Retries transient failures for `enqueue_retry.within` seconds (30 by default) and
        never a refusal, as `AsyncQueueClient.enqueue` does.
        """
        call = rpc.enqueue_job(document_id, **options)
        return self.enqueue_retry.run(call.function, lambda: execute_sync(self.transport, call))

    def enqueue_many(
        self, documents: Sequence[BulkItem], **defaults: Unpack[EnqueueOptions]
    ) -> list[Job]:
        """AsyncQueueClient.enqueue_many, blocking (transient failures retried too)."""
        jobs: list[Job] = []
        for start in range(0, len(documents), rpc.MAX_BULK):
            call = rpc.enqueue_jobs(documents[start : start + rpc.MAX_BULK], **defaults)
            batch: list[Job] = self.enqueue_retry.run(
                call.function, functools.partial(execute_sync, self.transport, call)
            )
            jobs.extend(batch)
        return jobs

    def get(self, job_id: DocumentId) -> Job:
        return execute_sync(self.transport, rpc.get_job(job_id))

    def history(self, job_id: DocumentId) -> list[JobEvent]:
        return execute_sync(self.transport, rpc.job_history(job_id))

    def jobs(
        self, *, status: str | None = None, queue: str | None = None, limit: int = 50
    ) -> list[Job]:
        return execute_sync(self.transport, rpc.list_jobs(status=status, queue=queue, limit=limit))

    def stats(self) -> QueueStats:
        return execute_sync(self.transport, rpc.queue_stats())

    def retry(self, job_id: DocumentId) -> Job:
        return execute_sync(self.transport, rpc.retry_job(job_id))

    def retry_failed(self, queue: str | None = None) -> int:
        return execute_sync(self.transport, rpc.retry_failed_jobs(queue))

    def cancel(self, job_id: DocumentId) -> Job:
        return execute_sync(self.transport, rpc.cancel_job(job_id))

    def workers(self) -> list[WorkerInfo]:
        return execute_sync(self.transport, rpc.list_workers())

    def set_worker_status(self, worker_id: str, status: WorkerStatus) -> WorkerInfo:
        return execute_sync(self.transport, rpc.set_worker_status(worker_id, status))

    def pause(self, worker_id: str) -> WorkerInfo:
        return self.set_worker_status(worker_id, WorkerStatus.PAUSED)

    def resume(self, worker_id: str) -> WorkerInfo:
        return self.set_worker_status(worker_id, WorkerStatus.ACTIVE)

    def schema_version(self) -> int | None:
        """The database's supaworker schema version; None before migration 0012 (no function)."""
        try:
            return execute_sync(self.transport, rpc.supaworker_schema_version())
        except NotFound:
            return None

    def purge_finished(self, older_than_seconds: float | None = None) -> int:
        return execute_sync(self.transport, rpc.purge_finished_jobs(older_than_seconds))
