"""`InMemoryTransport`: a Python model of the queue's SQL functions, for fast tests.

It answers the same RPC names with the same JSON shapes as PostgREST would, so
`AsyncQueueClient(InMemoryTransport())` behaves like the real queue without a network. The
shared contract suite (`tests/contract/`) runs the same tests against this model and the real
stack, so the model cannot drift from the SQL unnoticed.

    queue = AsyncQueueClient(InMemoryTransport())
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from supaworker.exceptions import Conflict, InvalidArgument, NotFound
from supaworker.models import jsonb_contains

STATUSES = ("pending", "assigned", "processing", "completed", "failed", "cancelled")
RUNNING = ("assigned", "processing")
FINISHED = ("completed", "failed", "cancelled")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Settings:
    dead_worker_horizon: timedelta = timedelta(seconds=30)
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 3600.0
    default_max_attempts: int = 5
    max_payload_bytes: int = 262144


@dataclass
class InMemoryTransport:
    """The queue's state and functions in memory. Single-threaded, like one event loop."""

    settings: _Settings = field(default_factory=_Settings)
    clock: Callable[[], datetime] = _now
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
        if method is None:
            raise NotFound(f"no function {function}", code="PGRST202")
        return method(**params)

    async def aclose(self) -> None:
        return None

    def add_document(self, owner: uuid.UUID | None = None) -> uuid.UUID:
        doc_id = uuid.uuid4()
        self.documents[doc_id] = owner or uuid.uuid4()
        return doc_id

    def _job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(uuid.UUID(job_id))
        if job is None:
            raise NotFound(f"job {job_id} not found", code="PT404")
        return job

    def _set_status(
        self, job: dict[str, Any], status: str, event: str, message: str | None = None
    ) -> None:
        self.events.append(
            {
                "id": len(self.events) + 1,
                "job_id": job["id"],
                "event": event,
                "from_status": job["status"],
                "to_status": status,
                "worker_id": job["assigned_to"],
                "attempt": job["attempt"],
                "message": message,
                "created_at": self.clock(),
            }
        )
        job["status"] = status
        job["updated_at"] = self.clock()

    def _row(self, job: dict[str, Any]) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, uuid.UUID | datetime) else v) for k, v in job.items()}

    def _running_of(self, worker_id: str) -> list[dict[str, Any]]:
        return [
            j
            for j in self.jobs.values()
            if j["assigned_to"] == worker_id and j["status"] in RUNNING
        ]

    def _sync_current_jobs(self, worker_id: str | None) -> None:
        if worker_id in self.workers:
            self.workers[worker_id]["current_jobs"] = len(self._running_of(worker_id))

    def _fenced(self, job_id: str, worker_id: str, attempt: int) -> dict[str, Any] | None:
        job = self.jobs.get(uuid.UUID(job_id))
        if (
            job
            and job["assigned_to"] == worker_id
            and job["attempt"] == attempt
            and job["status"] in RUNNING
        ):
            return job
        return None

    # -- app side -------------------------------------------------------------------------
    def fn_enqueue_job(
        self,
        p_user_document_id: str,
        p_priority: int = 0,
        p_payload: dict[str, Any] | None = None,
        p_queue: str = "default",
        p_max_attempts: int | None = None,
        p_run_at: str | None = None,
        p_timeout_seconds: int | None = None,
        p_requires: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        doc_id = uuid.UUID(p_user_document_id)
        if doc_id not in self.documents:
            raise NotFound(f"document {doc_id} not found", code="PT404")
        if not -1000 <= p_priority <= 1000:
            raise InvalidArgument("priority out of range", code="22023")
        existing = next((j for j in self.jobs.values() if j["user_document_id"] == doc_id), None)
        if existing and existing["status"] not in FINISHED:
            return self._row(existing)
        now = self.clock()
        fields = {
            "queue": p_queue,
            "priority": p_priority,
            "payload": dict(p_payload or {}),
            "result": None,
            "error_message": None,
            "retry_count": 0,
            "max_attempts": p_max_attempts or self.settings.default_max_attempts,
            "run_at": datetime.fromisoformat(p_run_at) if p_run_at else now,
            "timeout_seconds": p_timeout_seconds,
            "requires": dict(p_requires or {}),
            "progress_percent": None,
            "progress_message": None,
            "cancel_requested": False,
            "assigned_to": None,
            "assigned_at": None,
            "started_at": None,
            "completed_at": None,
        }
        if existing:
            existing.update(fields)
            self._set_status(existing, "pending", "requeued")
            return self._row(existing)
        job_id = uuid.uuid4()
        job = {
            "id": job_id,
            "user_document_id": doc_id,
            "user_id": self.documents[doc_id],
            "status": "pending",
            "attempt": 0,
            "created_at": now,
            "updated_at": now,
            **fields,
        }
        self.jobs[job_id] = job
        self.events.append(
            {
                "id": len(self.events) + 1,
                "job_id": job_id,
                "event": "enqueued",
                "from_status": None,
                "to_status": "pending",
                "worker_id": None,
                "attempt": 0,
                "message": None,
                "created_at": now,
            }
        )
        return self._row(job)

    def fn_get_job(self, p_job_id: str) -> dict[str, Any]:
        return self._row(self._job(p_job_id))

    def fn_job_history(self, p_job_id: str) -> list[dict[str, Any]]:
        job = self._job(p_job_id)
        return [self._row(e) for e in self.events if e["job_id"] == job["id"]]

    def fn_list_jobs(
        self, p_status: str | None = None, p_queue: str | None = None, p_limit: int = 50
    ) -> list[dict[str, Any]]:
        rows = [
            j
            for j in self.jobs.values()
            if (p_status is None or j["status"] == p_status)
            and (p_queue is None or j["queue"] == p_queue)
        ]
        rows.sort(key=lambda j: j["updated_at"], reverse=True)
        return [self._row(j) for j in rows[:p_limit]]

    def fn_retry_job(self, p_job_id: str) -> dict[str, Any]:
        job = self._job(p_job_id)
        if job["status"] in RUNNING:
            raise Conflict("job is running", code="PT409")
        if job["status"] == "completed":
            raise Conflict("job completed; enqueue the document again instead", code="PT409")
        if job["status"] in ("failed", "cancelled"):
            job.update(
                retry_count=0,
                error_message=None,
                cancel_requested=False,
                run_at=self.clock(),
                assigned_to=None,
                completed_at=None,
            )
            self._set_status(job, "pending", "requeued")
        return self._row(job)

    def fn_retry_failed_jobs(self, p_queue: str | None = None) -> int:
        failed = [
            j
            for j in self.jobs.values()
            if j["status"] == "failed" and (p_queue is None or j["queue"] == p_queue)
        ]
        for job in failed:
            self.fn_retry_job(str(job["id"]))
        return len(failed)

    def fn_cancel_job(self, p_job_id: str) -> dict[str, Any]:
        job = self._job(p_job_id)
        if job["status"] in ("pending", "assigned"):
            worker = job["assigned_to"]
            job["completed_at"] = self.clock()
            self._set_status(job, "cancelled", "cancelled")
            self._sync_current_jobs(worker)
        elif job["status"] == "processing" and not job["cancel_requested"]:
            job["cancel_requested"] = True
        return self._row(job)

    def fn_queue_stats(self) -> dict[str, Any]:
        by_status = {s: sum(1 for j in self.jobs.values() if j["status"] == s) for s in STATUSES}
        pending = [j["created_at"] for j in self.jobs.values() if j["status"] == "pending"]
        oldest = (self.clock() - min(pending)).total_seconds() if pending else None
        workers: dict[str, int] = {}
        for w in self.workers.values():
            workers[w["status"]] = workers.get(w["status"], 0) + 1
        return {"by_status": by_status, "oldest_pending_seconds": oldest, "workers": workers}

    # -- workers --------------------------------------------------------------------------
    def fn_register_worker(
        self,
        p_worker_id: str,
        p_worker_name: str | None = None,
        p_max_concurrent_jobs: int = 1,
        p_capabilities: dict[str, Any] | None = None,
        p_queues: list[str] | None = None,
        p_host: str | None = None,
        p_version: str | None = None,
    ) -> dict[str, Any]:
        old = self.workers.get(p_worker_id)
        status = "paused" if old and old["status"] == "paused" else "active"
        # Jobs still assigned to this id belong to a previous process that died: each counts
        # as a failed attempt, so a crash-looping job still reaches max_attempts.
        for job in self._running_of(p_worker_id):
            self.fn_fail_job(
                str(job["id"]),
                p_worker_id,
                job["attempt"],
                f"worker {p_worker_id} restarted while the job was running",
            )
        now = self.clock()
        self.workers[p_worker_id] = {
            "worker_id": p_worker_id,
            "worker_name": p_worker_name,
            "status": status,
            "last_heartbeat": now,
            "max_concurrent_jobs": p_max_concurrent_jobs,
            "current_jobs": len(self._running_of(p_worker_id)),
            "capabilities": dict(p_capabilities or {}),
            "queues": p_queues,
            "host": p_host,
            "version": p_version,
            "started_at": now,
        }
        return self._row(self.workers[p_worker_id])

    def fn_list_workers(self) -> list[dict[str, Any]]:
        return [self._row(w) for w in self.workers.values()]

    def fn_set_worker_status(self, p_worker_id: str, p_status: str) -> dict[str, Any]:
        if p_status not in ("active", "paused"):
            raise InvalidArgument("status must be active or paused", code="22023")
        worker = self.workers.get(p_worker_id)
        if worker is None:
            raise NotFound(f"worker {p_worker_id} not found", code="PT404")
        worker["status"] = p_status
        return self._row(worker)

    def fn_heartbeat_worker(
        self, p_worker_id: str, p_job_ids: list[str] | None = None
    ) -> dict[str, Any]:
        worker = self.workers.get(p_worker_id)
        if worker is None:
            raise NotFound(f"worker {p_worker_id} not found", code="PT404")
        worker["last_heartbeat"] = self.clock()
        if worker["status"] == "offline":
            worker["status"] = "active"
        reported = {uuid.UUID(j) for j in p_job_ids or []}
        mine = self._running_of(p_worker_id)
        mine_ids = {j["id"] for j in mine}
        return {
            "status": worker["status"],
            "cancel": [str(j["id"]) for j in mine if j["cancel_requested"]],
            "lost": [str(j) for j in reported - mine_ids],
            "orphaned": [
                {"id": str(j["id"]), "attempt": j["attempt"]}
                for j in mine
                if j["id"] not in reported
            ],
        }

    def fn_deregister_worker(self, p_worker_id: str) -> None:
        worker = self.workers.get(p_worker_id)
        if worker is None:
            raise NotFound(f"worker {p_worker_id} is not registered", code="PT404")
        self.fn_release_jobs(p_worker_id)
        if worker["status"] != "paused":
            worker["status"] = "offline"

    def fn_release_jobs(self, p_worker_id: str, p_job_ids: list[str] | None = None) -> int:
        wanted = None if p_job_ids is None else {uuid.UUID(j) for j in p_job_ids}
        released = 0
        for job in self._running_of(p_worker_id):
            if wanted is None or job["id"] in wanted:
                job.update(progress_percent=None, progress_message=None)
                if job["cancel_requested"]:
                    job["completed_at"] = self.clock()
                    self._set_status(job, "cancelled", "cancelled")
                else:
                    self._set_status(job, "pending", "released")
                    job.update(assigned_to=None, assigned_at=None, started_at=None)
                released += 1
        self._sync_current_jobs(p_worker_id)
        return released

    def fn_claim_next_job(
        self,
        p_worker_id: str,
        p_limit: int = 1,
        p_queues: list[str] | None = None,
        p_start: bool = False,
        p_prefetch: int = 0,
    ) -> list[dict[str, Any]]:
        self._check_range("p_limit", p_limit)
        self._check_range("p_prefetch", p_prefetch)
        worker = self.workers.get(p_worker_id)
        if worker is None or worker["status"] != "active":
            return []
        free = worker["max_concurrent_jobs"] + p_prefetch - len(self._running_of(p_worker_id))
        queues = p_queues or worker["queues"]
        now = self.clock()
        ready = [
            j
            for j in self.jobs.values()
            if j["status"] == "pending"
            and j["run_at"] <= now
            and (queues is None or j["queue"] in queues)
            and jsonb_contains(worker["capabilities"], j["requires"])
        ]
        ready.sort(key=lambda j: (-j["priority"], j["run_at"], j["created_at"]))
        claimed = ready[: max(0, min(p_limit, free))]
        for job in claimed:
            job.update(assigned_to=p_worker_id, assigned_at=now, attempt=job["attempt"] + 1)
            if p_start:
                job["started_at"] = now
                self._set_status(job, "processing", "started")
            else:
                job["started_at"] = None
                self._set_status(job, "assigned", "assigned")
        self._sync_current_jobs(p_worker_id)
        return [self._row(j) for j in claimed]

    def fn_start_job(self, p_job_id: str, p_worker_id: str, p_attempt: int) -> bool:
        job = self._fenced(p_job_id, p_worker_id, p_attempt)  # assigned or processing
        if job is None:
            return False
        if job["status"] == "assigned":  # processing already: a repeated start is harmless
            job["started_at"] = self.clock()
            self._set_status(job, "processing", "started")
        return True

    def fn_complete_job(
        self, p_job_id: str, p_worker_id: str, p_attempt: int, p_result: Any = None
    ) -> bool:
        job = self._fenced(p_job_id, p_worker_id, p_attempt)
        if job is None:
            return False
        job.update(result=p_result, completed_at=self.clock(), progress_percent=100)
        self._set_status(job, "completed", "completed")
        self._sync_current_jobs(p_worker_id)
        return True

    def fn_complete_jobs(self, p_worker_id: str, p_jobs: list[dict[str, Any]]) -> int:
        return sum(
            self.fn_complete_job(j["id"], p_worker_id, j["attempt"], j.get("result"))
            for j in p_jobs
        )

    def fn_complete_and_claim(
        self,
        p_worker_id: str,
        p_jobs: list[dict[str, Any]] | None = None,
        p_limit: int = 0,
        p_queues: list[str] | None = None,
        p_prefetch: int = 0,
    ) -> dict[str, Any]:
        completed = [
            j["id"]
            for j in p_jobs or []
            if self.fn_complete_job(j["id"], p_worker_id, j["attempt"], j.get("result"))
        ]
        claimed = self.fn_claim_next_job(
            p_worker_id, p_limit, p_queues, p_start=True, p_prefetch=p_prefetch
        )
        return {"completed": completed, "claimed": claimed}

    @staticmethod
    def _check_range(name: str, value: int) -> None:
        if not 0 <= value <= 1000:
            raise InvalidArgument(f"{name} must be between 0 and 1000, got {value}", code="22023")

    def fn_fail_job(
        self,
        p_job_id: str,
        p_worker_id: str,
        p_attempt: int,
        p_error: str,
        p_retryable: bool = True,
        p_retry_after_seconds: int | None = None,
    ) -> list[dict[str, Any]]:
        job = self._fenced(p_job_id, p_worker_id, p_attempt)
        if job is None:
            return []
        job["error_message"] = p_error
        job["retry_count"] += 1
        if job["cancel_requested"]:
            job["completed_at"] = self.clock()
            self._set_status(job, "cancelled", "cancelled")
        elif not p_retryable or job["retry_count"] >= job["max_attempts"]:
            job["completed_at"] = self.clock()
            self._set_status(job, "failed", "failed", p_error)
        else:
            delay = min(
                self.settings.backoff_base_seconds * 2 ** (job["retry_count"] - 1),
                self.settings.backoff_max_seconds,
            ) * random.uniform(0.5, 1.0)
            if p_retry_after_seconds is not None:
                delay = min(p_retry_after_seconds, self.settings.backoff_max_seconds)
            job["run_at"] = self.clock() + timedelta(seconds=delay)
            self._set_status(job, "pending", "retry_scheduled", p_error)
            job.update(assigned_to=None, assigned_at=None, started_at=None)
        self._sync_current_jobs(p_worker_id)
        return [self._row(job)]

    def fn_report_progress(
        self,
        p_job_id: str,
        p_worker_id: str,
        p_attempt: int,
        p_percent: float,
        p_message: str | None = None,
    ) -> bool:
        job = self._fenced(p_job_id, p_worker_id, p_attempt)
        if job is None:
            return False
        job.update(progress_percent=p_percent, progress_message=p_message)
        return True
