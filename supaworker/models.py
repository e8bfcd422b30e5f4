"""Typed views of what the queue's SQL functions return."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JSON = Any  # what json.loads returns; kept loose on purpose at the edges


def jsonb_contains(container: Any, contained: Any) -> bool:
    """Postgres's `container @> contained` for JSON values: how a job's `requires` is matched
    against a worker's capabilities ({"langs": ["de"]} is within {"langs": ["en", "de"]})."""
    if isinstance(contained, dict):
        return isinstance(container, dict) and all(
            key in container and jsonb_contains(container[key], value)
            for key, value in contained.items()
        )
    if isinstance(contained, list):
        return isinstance(container, list) and all(
            any(jsonb_contains(item, wanted) for item in container) for wanted in contained
        )
    return bool(container == contained and type(container) is type(contained))


# A value of `requires` whose keys are all among these is a comparison, not a containment.
COMPARISONS = frozenset({"gte", "lte", "eq", "in"})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _jsonb_equal(left: Any, right: Any) -> bool:
    """jsonb `=`: numbers compare by value (1 = 1.0), other kinds by type and value."""
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    return type(left) is type(right) and bool(left == right)


def requires_met(capabilities: Any, requires: Any) -> bool:
    """`supaworker_private.requires_met(requires, capabilities)`: whether a worker with
    `capabilities` may take a job with `requires`. A comparison value (keys among gte, lte,
    eq, in: `{"max_file_size": {"gte": 20971520}}`) compares the capability; any other value
    must be contained (`jsonb_contains`)."""
    if not isinstance(requires, dict) or not isinstance(capabilities, dict):
        return jsonb_contains(capabilities, requires)
    for key, wanted in requires.items():
        if isinstance(wanted, dict) and wanted and set(wanted) <= COMPARISONS:
            if key not in capabilities:
                return False
            have = capabilities[key]
            if "gte" in wanted and not (
                _is_number(have) and _is_number(wanted["gte"]) and have >= wanted["gte"]
            ):
                return False
            if "lte" in wanted and not (
                _is_number(have) and _is_number(wanted["lte"]) and have <= wanted["lte"]
            ):
                return False
            if "eq" in wanted and not _jsonb_equal(have, wanted["eq"]):
                return False
            if "in" in wanted and not (
                isinstance(wanted["in"], list) and any(_jsonb_equal(have, v) for v in wanted["in"])
            ):
                return False
        elif not jsonb_contains(capabilities, {key: wanted}):
            return False
    return True


class JobStatus(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class WorkerStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    OFFLINE = "offline"


class _Row(BaseModel):
    # Rows may grow columns in later migrations; old clients must keep working.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Job(_Row):
    """One `processing_queue` row: what a handler receives as `job`."""

    id: uuid.UUID
    user_document_id: uuid.UUID
    user_id: uuid.UUID | None = None
    queue: str = "default"
    status: JobStatus
    priority: int = 0  # orders across owners (service role)
    user_priority: int = 0  # a user's own priority: orders only that owner's jobs
    payload: dict[str, Any] = Field(default_factory=dict)
    result: JSON = None
    error_message: str | None = None
    retry_count: int = 0
    attempt: int = 0
    max_attempts: int = 1
    run_at: datetime | None = None
    timeout_seconds: float | None = None
    requires: dict[str, Any] = Field(default_factory=dict)
    progress_percent: float | None = None
    progress_message: str | None = None
    cancel_requested: bool = False
    assigned_to: str | None = None
    assigned_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class WorkerInfo(_Row):
    """One `vps_workers` row."""

    worker_id: str
    worker_name: str | None = None
    status: WorkerStatus
    last_heartbeat: datetime | None = None
    max_concurrent_jobs: int = 1
    current_jobs: int = 0
    capabilities: dict[str, Any] = Field(default_factory=dict)
    queues: list[str] | None = None
    host: str | None = None
    version: str | None = None
    started_at: datetime | None = None


class OrphanedJob(_Row):
    id: uuid.UUID
    attempt: int


class HeartbeatReply(_Row):
    """What `heartbeat_worker` tells a worker it must act on."""

    status: WorkerStatus
    cancel: list[uuid.UUID] = Field(default_factory=list)
    lost: list[uuid.UUID] = Field(default_factory=list)
    orphaned: list[OrphanedJob] = Field(default_factory=list)


class JobEvent(_Row):
    """One `job_events` row: a step of a job's history."""

    id: int
    job_id: uuid.UUID
    event: str
    from_status: str | None = None
    to_status: str | None = None
    worker_id: str | None = None
    attempt: int | None = None
    message: str | None = None
    created_at: datetime


class QueueStats(BaseModel):
    """`queue_stats()`: kept as a loose mapping plus the figures the CLI shows."""

    model_config = ConfigDict(extra="allow")

    by_status: dict[str, int] = Field(default_factory=dict)
    oldest_pending_seconds: float | None = None
    # Pending jobs per queue that no live worker can take (queues or capabilities).
    no_capable_worker: dict[str, int] = Field(default_factory=dict)
    workers: dict[str, int] = Field(default_factory=dict)
