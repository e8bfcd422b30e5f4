"""`InMemoryTransport`: a Python model of the queue's SQL functions, for fast tests.

It answers the same RPC names with the same JSON shapes and the same errors (class and
SQLSTATE) as PostgREST would, so `AsyncQueueClient(InMemoryTransport())` behaves like the
real queue without a network. The shared contract suite (`tests/contract/`) runs the same
tests against this model and the real stack, so the model cannot drift from the SQL
unnoticed. Each `fn_<name>` mirrors `public.<name>` in `supabase/migrations/` (the latest
migration that defines it); the checks run in the SQL's order and before any change, since a
refused SQL call changes nothing (its transaction rolls back).

    queue = AsyncQueueClient(InMemoryTransport())
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from supaworker import schema
from supaworker._memory_state import (
    FINISHED,
    QUEUE_NAME,
    RUNNING,
    STATUSES,
    Settings,
    in_range,
    invalid,
    jsonb_text_bytes,
    now,
    parse_uuid,
)
from supaworker._memory_workers import WorkerFunctions
from supaworker.exceptions import Conflict, NotFound, PayloadTooLarge

__all__ = ["InMemoryTransport"]


@dataclass
class InMemoryTransport(WorkerFunctions):
    """The queue's state and functions in memory. Single-threaded, like one event loop."""

    settings: Settings = field(default_factory=Settings)
    clock: Callable[[], datetime] = now
    documents: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # doc id -> owner
    jobs: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fail_next: dict[str, Exception] = field(default_factory=dict)

    # -- plumbing -------------------------------------------------------------------------
    async def call(self, function: str, params: Mapping[str, Any]) -> Any:
        self.calls.append(function)
        if function in self.fail_next:
            raise self.fail_next.pop(function)
        method = getattr(self, f"fn_{function}", None)
        try:
            if method is None:
                raise TypeError(function)
            # PostgREST picks the function by name AND argument names: an unknown or a
            # missing required argument finds no function at all.
            inspect.signature(method).bind(**params)
        except TypeError:
            raise NotFound(
                f"The database has no function {function}() with these arguments"
                f" ({', '.join(sorted(params))})",
                code="PGRST202",
            ) from None
        return method(**params)

    async def aclose(self) -> None:
        return None

    def add_document(self, owner: uuid.UUID | None = None) -> uuid.UUID:
        doc_id = uuid.uuid4()
        self.documents[doc_id] = owner or uuid.uuid4()
        return doc_id

    # -- app side -------------------------------------------------------------------------
    def fn_enqueue_job(
        self,
        p_user_document_id: str | None,
        p_priority: int | None = 0,
        p_payload: Any = None,
        p_queue: str | None = "default",
        p_max_attempts: int | None = None,
        p_run_at: str | None = None,
        p_timeout_seconds: int | None = None,
        p_requires: Any = None,
    ) -> dict[str, Any]:
        doc_id = None if p_user_document_id is None else parse_uuid(p_user_document_id)
        priority = 0 if p_priority is None else p_priority
        payload = {} if p_payload is None else p_payload
        queue = "default" if p_queue is None else p_queue
        requires = {} if p_requires is None else p_requires
        max_attempts = (
            self.settings.default_max_attempts if p_max_attempts is None else p_max_attempts
        )
        if doc_id is None:
            raise invalid("p_user_document_id is required")
        if not isinstance(payload, dict):
            raise invalid("p_payload must be a JSON object")
        size = jsonb_text_bytes(payload)
        if size > self.settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"p_payload is {size} bytes, more than max_payload_bytes"
                f" ({self.settings.max_payload_bytes})",
                code="PT413",
            )
        if not isinstance(requires, dict):
            raise invalid("p_requires must be a JSON object")
        if not QUEUE_NAME.fullmatch(queue):
            raise invalid(f"invalid queue name {queue!r}")
        in_range("p_max_attempts", max_attempts, 1, 100)
        if p_timeout_seconds is not None and p_timeout_seconds <= 0:
            raise invalid(f"p_timeout_seconds must be positive, got {p_timeout_seconds}")
        in_range("p_priority", priority, -1000, 1000)  # the model is always service_role
        if doc_id not in self.documents:
            raise NotFound(f"document {doc_id} not found", code="PT404")
        run_at = self._timestamp(p_run_at) if p_run_at else self.clock()

        existing = next((j for j in self.jobs.values() if j["user_document_id"] == doc_id), None)
        if existing and existing["status"] not in FINISHED:
            return self._row(existing)
        fields = {
            "user_id": self.documents[doc_id],
            "queue": queue,
            "status": "pending",
            "priority": priority,
            "payload": dict(payload),
            "result": None,
            "error_message": None,
            "retry_count": 0,
            "max_attempts": max_attempts,
            "run_at": run_at,
            "timeout_seconds": p_timeout_seconds,
            "requires": dict(requires),
            "progress_percent": None,
            "progress_message": None,
            "cancel_requested": False,
            "assigned_to": None,
            "assigned_at": None,
            "started_at": None,
            "completed_at": None,
        }
        if existing:  # a finished entry starts a new cycle; attempt is never reset
            self._update(existing, **fields)
            return self._row(existing)
        now = self.clock()
        job_id = uuid.uuid4()
        job = {"id": job_id, "user_document_id": doc_id, "attempt": 0, **fields}
        job.update(created_at=now, updated_at=now)
        self.jobs[job_id] = job
        self._record(job, "enqueued", None, None)
        return self._row(job)

    def fn_get_job(self, p_job_id: str) -> dict[str, Any]:
        return self._row(self._job(p_job_id))

    def fn_job_history(self, p_job_id: str) -> list[dict[str, Any]]:
        job = self._job(p_job_id)
        return [self._row(e) for e in self.events if e["job_id"] == job["id"]]

    def fn_list_jobs(
        self, p_status: str | None = None, p_queue: str | None = None, p_limit: int = 50
    ) -> list[dict[str, Any]]:
        if p_status is not None and p_status not in STATUSES:
            raise invalid(f"unknown status {p_status}")
        in_range("p_limit", p_limit, 1, 1000)
        rows = [
            j
            for j in self.jobs.values()
            if (p_status is None or j["status"] == p_status)
            and (p_queue is None or j["queue"] == p_queue)
        ]
        rows.sort(key=lambda j: j["id"])  # order by updated_at desc, id
        rows.sort(key=lambda j: j["updated_at"], reverse=True)
        return [self._row(j) for j in rows[:p_limit]]

    def _new_cycle(self, job: dict[str, Any]) -> None:
        """retry_job / retry_failed_jobs: pending now, as if never tried in this cycle."""
        self._update(
            job,
            status="pending",
            run_at=self.clock(),
            retry_count=0,
            result=None,
            error_message=None,
            progress_percent=None,
            progress_message=None,
            cancel_requested=False,
            assigned_to=None,
            assigned_at=None,
            started_at=None,
            completed_at=None,
        )

    def fn_retry_job(self, p_job_id: str) -> dict[str, Any]:
        job = self._job(p_job_id)
        if job["status"] in RUNNING:
            raise Conflict(f"job {p_job_id} is {job['status']}", code="PT409")
        if job["status"] == "completed":
            raise Conflict(f"job {p_job_id} is completed", code="PT409")
        if job["status"] in ("failed", "cancelled"):
            self._new_cycle(job)
        return self._row(job)  # pending: unchanged

    def fn_retry_failed_jobs(self, p_queue: str | None = None) -> int:
        failed = [
            j
            for j in self.jobs.values()
            if j["status"] == "failed" and (p_queue is None or j["queue"] == p_queue)
        ]
        for job in failed:
            self._new_cycle(job)
        return len(failed)

    def fn_cancel_job(self, p_job_id: str | None) -> dict[str, Any]:
        if p_job_id is None:
            raise invalid("p_job_id is required")
        job = self._job(p_job_id)
        if job["status"] in ("pending", "assigned"):
            self._update(
                job,
                status="cancelled",
                completed_at=self.clock(),
                progress_percent=None,
                progress_message=None,
            )
            self._sync_current_jobs([job["assigned_to"]])
        elif job["status"] == "processing" and not job["cancel_requested"]:
            self._update(job, cancel_requested=True)
        return self._row(job)

    def fn_queue_stats(self) -> dict[str, Any]:
        now = self.clock()

        def counts(jobs: list[dict[str, Any]]) -> dict[str, int]:
            return {s: sum(1 for j in jobs if j["status"] == s) for s in STATUSES}

        every = list(self.jobs.values())
        due = [j["run_at"] for j in every if j["status"] == "pending" and j["run_at"] <= now]
        oldest = round((now - min(due)).total_seconds(), 3) if due else None

        def finished(status: str, within: timedelta) -> int:
            return sum(
                1
                for j in every
                if j["status"] == status and j["completed_at"] and j["completed_at"] >= now - within
            )

        minute, hour = timedelta(minutes=1), timedelta(hours=1)
        return {
            "by_status": counts(every),
            "by_queue": {
                q: counts([j for j in every if j["queue"] == q])
                for q in {j["queue"] for j in every}
            },
            "oldest_pending_seconds": oldest,
            "workers": {
                s: sum(1 for w in self.workers.values() if w["status"] == s)
                for s in ("active", "paused", "offline")
            },
            "completed_last_minute": finished("completed", minute),
            "completed_last_hour": finished("completed", hour),
            "failed_last_minute": finished("failed", minute),
            "failed_last_hour": finished("failed", hour),
        }

    def fn_supaworker_schema_version(self) -> int:
        # The model is of the newest schema the package carries.
        return schema.latest_version()

    def fn_list_workers(self) -> list[dict[str, Any]]:
        rows = sorted(
            self.workers.values(), key=lambda w: (w["status"] == "offline", w["worker_id"])
        )
        return [self._row(w) for w in rows]

    # -- operations -----------------------------------------------------------------------
    def fn_reap_stale_jobs(self) -> int:
        self.settings.last_rescue_at = self.clock()
        return self._reap()

    def fn_purge_finished_jobs(self, p_older_than: str | None = None) -> int:
        age = self.settings.retention if p_older_than is None else self._interval(p_older_than)
        if age < timedelta(0):
            raise invalid("p_older_than must not be negative")
        cutoff = self.clock() - age
        gone = {
            job_id
            for job_id, j in self.jobs.items()
            if j["status"] in ("completed", "cancelled")
            and j["completed_at"] is not None
            and j["completed_at"] < cutoff
        }
        for job_id in gone:
            del self.jobs[job_id]
        self.events = [e for e in self.events if e["job_id"] not in gone]  # on delete cascade
        return len(gone)
