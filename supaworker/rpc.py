"""The catalogue of the queue's SQL functions: their names, parameters and result parsing.

This is the only module that knows the RPC names (the SQL contracts are in
`supaworker/sql/migrations/` and `docs/architecture.md`). It does no I/O: each function returns an
`RpcCall` that a transport executes, so the sync and async clients share every line here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack

from pydantic import TypeAdapter, ValidationError

from supaworker.exceptions import MalformedResponse
from supaworker.models import (
    HeartbeatReply,
    Job,
    JobEvent,
    QueueStats,
    WorkerInfo,
    WorkerStatus,
)

T = TypeVar("T")

RpcName = Literal[
    "enqueue_job",
    "claim_next_job",
    "start_job",
    "complete_job",
    "complete_jobs",
    "complete_and_claim",
    "fail_job",
    "report_progress",
    "register_worker",
    "heartbeat_worker",
    "deregister_worker",
    "release_jobs",
    "set_worker_status",
    "retry_job",
    "retry_failed_jobs",
    "cancel_job",
    "reap_stale_jobs",
    "queue_stats",
    "purge_finished_jobs",
    "get_job",
    "list_jobs",
    "job_history",
    "list_workers",
    "supaworker_schema_version",
]


@dataclass(frozen=True)
class RpcCall(Generic[T]):
    """One call of a SQL function: what to send and how to read the answer."""

    function: RpcName
    params: Mapping[str, Any]
    parse: Callable[[Any], T]


# -- parsers ------------------------------------------------------------------------------
def _model(cls: type[Any]) -> Callable[[Any], Any]:
    def parse(data: Any) -> Any:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise MalformedResponse(f"Unexpected answer for {cls.__name__}: {exc}") from exc

    return parse


_JOB_LIST = TypeAdapter(list[Job])  # one validation call per answer, not one per row


def _jobs(data: Any) -> list[Job]:
    if not isinstance(data, list):
        raise MalformedResponse(f"Expected a list of jobs, got {type(data).__name__}")
    try:
        return _JOB_LIST.validate_python(data)
    except ValidationError as exc:
        raise MalformedResponse(f"Unexpected job row: {exc}") from exc


def _optional_job(data: Any) -> Job | None:
    """`setof processing_queue` answers where zero rows means "fenced out"."""
    rows = _jobs(data)
    return rows[0] if rows else None


def _bool(data: Any) -> bool:
    if not isinstance(data, bool):
        raise MalformedResponse(f"Expected a boolean, got {data!r:.80}")
    return data


def _int(data: Any) -> int:
    if not isinstance(data, int) or isinstance(data, bool):
        raise MalformedResponse(f"Expected an integer, got {data!r:.80}")
    return data


def _none(data: Any) -> None:
    return None


def _ids(job_ids: Sequence[uuid.UUID] | None) -> list[str] | None:
    return None if job_ids is None else [str(j) for j in job_ids]


# -- app side -----------------------------------------------------------------------------
class EnqueueOptions(TypedDict, total=False):
    """How a document is queued; every key is optional (the SQL function has defaults)."""

    priority: int  # higher runs first; default 0
    payload: Mapping[str, Any]  # handed to the handler as job.payload
    queue: str  # default "default"
    max_attempts: int  # default queue_settings.default_max_attempts
    run_at: datetime  # not before this moment
    timeout_seconds: int  # per-attempt limit, wins over the worker's --job-timeout
    requires: Mapping[str, Any]  # capabilities a worker must offer


def enqueue_job(
    user_document_id: uuid.UUID | str, **options: Unpack[EnqueueOptions]
) -> RpcCall[Job]:
    params: dict[str, Any] = {
        "p_user_document_id": str(user_document_id),
        "p_priority": options.get("priority", 0),
        "p_payload": dict(options.get("payload") or {}),
        "p_queue": options.get("queue", "default"),
        "p_requires": dict(options.get("requires") or {}),
    }
    if "max_attempts" in options:
        params["p_max_attempts"] = options["max_attempts"]
    if "run_at" in options:
        params["p_run_at"] = options["run_at"].isoformat()
    if "timeout_seconds" in options:
        params["p_timeout_seconds"] = options["timeout_seconds"]
    return RpcCall("enqueue_job", params, _model(Job))


def retry_job(job_id: uuid.UUID | str) -> RpcCall[Job]:
    return RpcCall("retry_job", {"p_job_id": str(job_id)}, _model(Job))


def retry_failed_jobs(queue: str | None = None) -> RpcCall[int]:
    return RpcCall("retry_failed_jobs", {"p_queue": queue}, _int)


def cancel_job(job_id: uuid.UUID | str) -> RpcCall[Job]:
    return RpcCall("cancel_job", {"p_job_id": str(job_id)}, _model(Job))


def queue_stats() -> RpcCall[QueueStats]:
    return RpcCall("queue_stats", {}, _model(QueueStats))


def set_worker_status(worker_id: str, status: WorkerStatus) -> RpcCall[WorkerInfo]:
    return RpcCall(
        "set_worker_status",
        {"p_worker_id": worker_id, "p_status": status.value},
        _model(WorkerInfo),
    )


def reap_stale_jobs() -> RpcCall[int]:
    return RpcCall("reap_stale_jobs", {}, _int)


def purge_finished_jobs(older_than_seconds: float | None = None) -> RpcCall[int]:
    interval = None if older_than_seconds is None else f"{older_than_seconds} seconds"
    return RpcCall("purge_finished_jobs", {"p_older_than": interval}, _int)


# -- worker side --------------------------------------------------------------------------
class WorkerRegistration(TypedDict):
    """What a worker tells the registry about itself."""

    worker_name: str | None
    max_concurrent_jobs: int
    capabilities: Mapping[str, Any]
    queues: Sequence[str] | None
    host: str | None
    version: str | None


def register_worker(worker_id: str, **info: Unpack[WorkerRegistration]) -> RpcCall[WorkerInfo]:
    return RpcCall(
        "register_worker",
        {
            "p_worker_id": worker_id,
            "p_worker_name": info["worker_name"],
            "p_max_concurrent_jobs": info["max_concurrent_jobs"],
            "p_capabilities": dict(info["capabilities"]),
            "p_queues": list(info["queues"]) if info["queues"] else None,
            "p_host": info["host"],
            "p_version": info["version"],
        },
        _model(WorkerInfo),
    )


def heartbeat_worker(worker_id: str, job_ids: Sequence[uuid.UUID]) -> RpcCall[HeartbeatReply]:
    return RpcCall(
        "heartbeat_worker",
        {"p_worker_id": worker_id, "p_job_ids": _ids(job_ids)},
        _model(HeartbeatReply),
    )


def deregister_worker(worker_id: str) -> RpcCall[None]:
    return RpcCall("deregister_worker", {"p_worker_id": worker_id}, _none)


def claim_next_job(
    worker_id: str, limit: int, queues: Sequence[str] | None, *, start: bool = False
) -> RpcCall[list[Job]]:
    """With `start` the jobs come back already `processing` (no `start_job` round trip)."""
    params: dict[str, Any] = {
        "p_worker_id": worker_id,
        "p_limit": limit,
        "p_queues": list(queues) if queues else None,
    }
    if start:
        params["p_start"] = True
    return RpcCall("claim_next_job", params, _jobs)


def start_job(job_id: uuid.UUID, worker_id: str, attempt: int) -> RpcCall[bool]:
    return RpcCall(
        "start_job",
        {"p_job_id": str(job_id), "p_worker_id": worker_id, "p_attempt": attempt},
        _bool,
    )


def complete_job(job_id: uuid.UUID, worker_id: str, attempt: int, result: Any) -> RpcCall[bool]:
    return RpcCall(
        "complete_job",
        {
            "p_job_id": str(job_id),
            "p_worker_id": worker_id,
            "p_attempt": attempt,
            "p_result": result,
        },
        _bool,
    )


def _results(results: Sequence[tuple[uuid.UUID, int, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": str(job_id), "attempt": attempt, "result": result}
        for job_id, attempt, result in results
    ]


def complete_jobs(worker_id: str, results: Sequence[tuple[uuid.UUID, int, Any]]) -> RpcCall[int]:
    return RpcCall("complete_jobs", {"p_worker_id": worker_id, "p_jobs": _results(results)}, _int)


@dataclass(frozen=True)
class Exchange:
    """The answer of `complete_and_claim`: which jobs were completed, which were claimed."""

    completed: frozenset[uuid.UUID]
    claimed: list[Job]


def _exchange(data: Any) -> Exchange:
    if not isinstance(data, dict) or not isinstance(data.get("completed"), list):
        raise MalformedResponse(f"Expected {{completed, claimed}}, got {data!r:.80}")
    try:
        completed = frozenset(uuid.UUID(str(i)) for i in data["completed"])
    except ValueError as exc:
        raise MalformedResponse(f"Unexpected completed id: {exc}") from exc
    return Exchange(completed, _jobs(data.get("claimed")))


def complete_and_claim(
    worker_id: str,
    results: Sequence[tuple[uuid.UUID, int, Any]],
    limit: int,
    queues: Sequence[str] | None,
    *,
    prefetch: int = 0,
) -> RpcCall[Exchange]:
    """`complete_jobs` then a starting claim of up to `limit` jobs, in one transaction."""
    params: dict[str, Any] = {
        "p_worker_id": worker_id,
        "p_jobs": _results(results),
        "p_limit": limit,
        "p_queues": list(queues) if queues else None,
    }
    if prefetch:
        params["p_prefetch"] = prefetch
    return RpcCall("complete_and_claim", params, _exchange)


def fail_job(
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    error: str,
    *,
    retryable: bool,
    retry_after_seconds: int | None = None,
) -> RpcCall[Job | None]:
    params: dict[str, Any] = {
        "p_job_id": str(job_id),
        "p_worker_id": worker_id,
        "p_attempt": attempt,
        "p_error": error,
        "p_retryable": retryable,
    }
    # Only when set: a database without migration 20261128001600 still takes the call.
    if retry_after_seconds is not None:
        params["p_retry_after_seconds"] = retry_after_seconds
    return RpcCall("fail_job", params, _optional_job)


def report_progress(
    job_id: uuid.UUID, worker_id: str, attempt: int, percent: float, message: str | None
) -> RpcCall[bool]:
    return RpcCall(
        "report_progress",
        {
            "p_job_id": str(job_id),
            "p_worker_id": worker_id,
            "p_attempt": attempt,
            "p_percent": percent,
            "p_message": message,
        },
        _bool,
    )


def release_jobs(worker_id: str, job_ids: Sequence[uuid.UUID] | None = None) -> RpcCall[int]:
    return RpcCall("release_jobs", {"p_worker_id": worker_id, "p_job_ids": _ids(job_ids)}, _int)


# -- operator reads -----------------------------------------------------------------------
def get_job(job_id: uuid.UUID | str) -> RpcCall[Job]:
    return RpcCall("get_job", {"p_job_id": str(job_id)}, _model(Job))


def list_jobs(
    *, status: str | None = None, queue: str | None = None, limit: int = 50
) -> RpcCall[list[Job]]:
    return RpcCall("list_jobs", {"p_status": status, "p_queue": queue, "p_limit": limit}, _jobs)


def _events(data: Any) -> list[JobEvent]:
    if not isinstance(data, list):
        raise MalformedResponse("Expected a list of job events")
    try:
        return [JobEvent.model_validate(row) for row in data]
    except ValidationError as exc:
        raise MalformedResponse(f"Unexpected job event: {exc}") from exc


def job_history(job_id: uuid.UUID | str) -> RpcCall[list[JobEvent]]:
    return RpcCall("job_history", {"p_job_id": str(job_id)}, _events)


def _workers(data: Any) -> list[WorkerInfo]:
    if not isinstance(data, list):
        raise MalformedResponse("Expected a list of workers")
    try:
        return [WorkerInfo.model_validate(row) for row in data]
    except ValidationError as exc:
        raise MalformedResponse(f"Unexpected worker row: {exc}") from exc


def list_workers() -> RpcCall[list[WorkerInfo]]:
    return RpcCall("list_workers", {}, _workers)


def supaworker_schema_version() -> RpcCall[int]:
    """The schema version the database reports (migration 0012 and later)."""
    return RpcCall("supaworker_schema_version", {}, _int)
