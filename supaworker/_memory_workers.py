"""The worker-side RPCs of `supaworker.testing.InMemoryTransport`: registry, heartbeat,
claim, start, progress, completion, failure, release (`supabase/migrations/`, the latest
definition of each)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from supaworker._memory_flow import FlowControl
from supaworker._memory_state import OMITTED, in_range, invalid, parse_uuid
from supaworker.models import requires_met


class WorkerFunctions(FlowControl):
    """`fn_<name>` answers `public.<name>`, as PostgREST would (JSON rows, the same errors)."""

    def fn_register_worker(
        self,
        p_worker_id: str | None,
        p_worker_name: str | None = None,
        p_max_concurrent_jobs: int | None = 1,
        p_capabilities: Any = None,
        p_queues: list[str] | None = None,
        p_host: str | None = None,
        p_version: str | None = None,
    ) -> dict[str, Any]:
        slots = 1 if p_max_concurrent_jobs is None else p_max_concurrent_jobs
        capabilities = {} if p_capabilities is None else p_capabilities
        if p_worker_id is None or not 1 <= len(p_worker_id) <= 200:
            raise invalid("p_worker_id must be 1-200 characters")
        in_range("p_max_concurrent_jobs", slots, 1, 1000)
        if not isinstance(capabilities, dict):
            raise invalid("p_capabilities must be a JSON object")
        if p_queues is not None and (not p_queues or None in p_queues):
            raise invalid("p_queues must be null (every queue) or a non-empty list of queue names")
        # Jobs still assigned to this id belong to a previous process that died: each counts
        # as a failed attempt, so a crash-looping job still reaches max_attempts.
        for job in self._running_of(p_worker_id):
            self._fail_attempt(
                job, f"worker {p_worker_id} restarted while the job was running", retryable=True
            )
        old = self.workers.get(p_worker_id)
        now = self.clock()
        self.workers[p_worker_id] = {
            "id": old["id"] if old else uuid.uuid4(),
            "worker_id": p_worker_id,
            "worker_name": p_worker_name,
            "status": "paused" if old and old["status"] == "paused" else "active",
            "last_heartbeat": now,
            "max_concurrent_jobs": slots,
            "current_jobs": 0,
            "capabilities": dict(capabilities),
            "queues": p_queues,
            "host": p_host,
            "version": p_version,
            "started_at": now,
            "created_at": old["created_at"] if old else now,
            "updated_at": now,
        }
        return self._row(self.workers[p_worker_id])

    def fn_set_worker_status(self, p_worker_id: str, p_status: str | None) -> dict[str, Any]:
        if p_status not in ("active", "paused"):
            raise invalid(f"p_status must be active or paused, got {p_status!r}")
        worker = self._worker(p_worker_id)
        worker.update(status=p_status, updated_at=self.clock())
        return self._row(worker)

    def fn_heartbeat_worker(
        self, p_worker_id: str, p_job_ids: list[str] | None = None
    ) -> dict[str, Any]:
        held = {parse_uuid(j) for j in p_job_ids or []}
        worker = self._worker(p_worker_id)
        mine = self._running_of(p_worker_id)  # ordered by id, as the SQL's jsonb_agg
        worker.update(
            last_heartbeat=self.clock(),
            status="active" if worker["status"] == "offline" else worker["status"],
            current_jobs=len(mine),
            updated_at=self.clock(),
        )
        mine_ids = {j["id"] for j in mine}
        return {
            "status": worker["status"],
            "cancel": [str(j["id"]) for j in mine if j["cancel_requested"]],
            "lost": [str(j) for j in sorted(held - mine_ids)],
            "orphaned": [
                {"id": str(j["id"]), "attempt": j["attempt"]} for j in mine if j["id"] not in held
            ],
        }

    def fn_deregister_worker(self, p_worker_id: str) -> None:
        worker = self._worker(p_worker_id)
        self._release(p_worker_id, None)
        worker.update(
            status="paused" if worker["status"] == "paused" else "offline",
            current_jobs=0,
            updated_at=self.clock(),
        )

    def fn_release_jobs(self, p_worker_id: str, p_job_ids: list[str] | None = None) -> int:
        wanted = None if p_job_ids is None else {parse_uuid(j) for j in p_job_ids}
        released = self._release(p_worker_id, wanted)
        self._sync_current_jobs([p_worker_id])
        return released

    def fn_claim_next_job(
        self,
        p_worker_id: str | None,
        p_limit: int | None = 1,
        p_queues: list[str] | None = None,
        p_start: bool | None = False,
    ) -> list[dict[str, Any]]:
        self._check_claim(p_worker_id, p_limit, 0)
        return self._claim(str(p_worker_id), p_limit or 0, p_queues, bool(p_start), 0)

    @staticmethod
    def _check_claim(worker_id: str | None, limit: int | None, prefetch: int | None) -> None:
        if not worker_id:
            raise invalid("p_worker_id is required")
        in_range("p_limit", limit, 0, 1000)
        in_range("p_prefetch", prefetch, 0, 1000)

    def _claim(
        self, worker_id: str, limit: int, queues: list[str] | None, start: bool, prefetch: int
    ) -> list[dict[str, Any]]:
        """supaworker_private.claim_jobs: the claim behind claim_next_job and
        complete_and_claim (arguments already checked)."""
        self._maybe_rescue()
        worker = self.workers.get(worker_id)
        if worker is None or worker["status"] != "active":
            return []
        free = worker["max_concurrent_jobs"] + prefetch - len(self._running_of(worker_id))
        wanted = queues if queues is not None else worker["queues"]
        now = self.clock()
        ready = [
            j
            for j in self.jobs.values()
            if j["status"] == "pending"
            and not j["cancel_requested"]
            and j["run_at"] <= now
            and (wanted is None or j["queue"] in wanted)
            and requires_met(worker["capabilities"], j["requires"])
        ]
        claimed = self._turns(ready, max(0, min(limit, free)))
        for job in claimed:
            self._update(
                job,
                status="processing" if start else "assigned",
                assigned_to=worker_id,
                assigned_at=now,
                started_at=now if start else None,
                attempt=job["attempt"] + 1,
                progress_percent=None,
                progress_message=None,
            )
        self._sync_current_jobs([worker_id])
        return [self._row(j) for j in claimed]

    def fn_start_job(self, p_job_id: str, p_worker_id: str, p_attempt: int) -> bool:
        job = self._fenced(p_job_id, p_worker_id, p_attempt)  # assigned or processing
        if job is None:
            return False
        if job["status"] == "assigned":  # processing already: a repeated start is harmless
            self._update(job, status="processing", started_at=self.clock())
        return True

    def fn_complete_job(
        self, p_job_id: str, p_worker_id: str, p_attempt: int, p_result: Any = None
    ) -> bool:
        job = self._fenced(p_job_id, p_worker_id, p_attempt)
        if job is None:
            return False
        self._update(
            job,
            status="completed",
            result=p_result,
            error_message=None,
            completed_at=self.clock(),
            progress_percent=100,
        )
        self._sync_current_jobs([p_worker_id])
        return True

    @staticmethod
    def _check_batch(jobs: Any) -> list[dict[str, Any]]:
        if not isinstance(jobs, list):
            raise invalid("p_jobs must be a JSON array")
        if any(not isinstance(j, dict) or "id" not in j or "attempt" not in j for j in jobs):
            raise invalid('every element of p_jobs needs "id" and "attempt"')
        for j in jobs:
            parse_uuid(j["id"])
        return jobs

    def _complete_batch(self, worker_id: str, jobs: list[dict[str, Any]]) -> list[str]:
        """supaworker_private.complete_batch: each element fenced like complete_job; a
        repeated id counts once."""
        first = {str(parse_uuid(j["id"])): j for j in reversed(jobs)}
        return [
            job_id
            for job_id, j in first.items()
            if self.fn_complete_job(job_id, worker_id, j["attempt"], j.get("result"))
        ]

    def fn_complete_jobs(self, p_worker_id: str, p_jobs: Any) -> int:
        return len(self._complete_batch(p_worker_id, self._check_batch(p_jobs)))

    def fn_complete_and_claim(
        self,
        p_worker_id: str | None,
        p_jobs: Any = OMITTED,
        p_limit: int | None = 0,
        p_queues: list[str] | None = None,
        p_prefetch: int | None = 0,
    ) -> dict[str, Any]:
        jobs = self._check_batch(
            [] if p_jobs is OMITTED else p_jobs
        )  # default '[]'; null is refused
        # Checked before the completions: in SQL a refused claim rolls them back.
        self._check_claim(p_worker_id, p_limit, p_prefetch)
        completed = self._complete_batch(str(p_worker_id), jobs)
        claimed = self._claim(str(p_worker_id), p_limit or 0, p_queues, True, p_prefetch or 0)
        return {"completed": completed, "claimed": claimed}

    def fn_fail_job(
        self,
        p_job_id: str,
        p_worker_id: str,
        p_attempt: int,
        p_error: str | None,
        p_retryable: bool | None = True,
        p_retry_after_seconds: int | None = None,
        p_error_detail: str | None = None,
    ) -> list[dict[str, Any]]:
        if p_retry_after_seconds is not None and p_retry_after_seconds < 0:
            raise invalid(f"p_retry_after_seconds must be >= 0, got {p_retry_after_seconds}")
        job = self._fenced(p_job_id, p_worker_id, p_attempt)
        if job is None:
            return []
        self._fail_attempt(
            job, p_error, retryable=p_retryable is not False, retry_after=p_retry_after_seconds
        )
        self._sync_current_jobs([p_worker_id])
        if p_error_detail is not None:
            self.error_details[(job["id"], p_attempt)] = p_error_detail[:20000]
        return [self._row(job)]

    def fn_snooze_job(
        self, p_job_id: str, p_worker_id: str, p_attempt: int, p_seconds: float | None
    ) -> list[dict[str, Any]]:
        """public.snooze_job: back to pending at now + p_seconds, no attempt spent."""
        if p_seconds is None or not 0 < p_seconds <= 604800:
            raise invalid(
                f"p_seconds must be more than 0 and at most 604800 (7 days), got {p_seconds}"
            )
        job = self._fenced(p_job_id, p_worker_id, p_attempt)
        if job is None:
            return []
        if job["cancel_requested"]:
            self._cancel_now(job)
        else:
            self._update(
                job,
                status="pending",
                run_at=self.clock() + timedelta(seconds=p_seconds),
                snooze_count=job["snooze_count"] + 1,
                assigned_to=None,
                assigned_at=None,
                started_at=None,
                completed_at=None,
                progress_percent=None,
                progress_message=None,
            )
        self._sync_current_jobs([p_worker_id])
        return [self._row(job)]

    def fn_report_progress(
        self,
        p_job_id: str,
        p_worker_id: str,
        p_attempt: int,
        p_percent: float | None,
        p_message: str | None = None,
    ) -> bool:
        if p_percent is not None and not 0 <= p_percent <= 100:
            raise invalid(f"p_percent must be between 0 and 100, got {p_percent}")
        job = self._fenced(p_job_id, p_worker_id, p_attempt)
        if job is None:
            return False
        percent = job["progress_percent"]
        if p_percent is not None:  # numeric round(p, 2): halves away from zero
            percent = float(Decimal(str(p_percent)).quantize(Decimal("0.01"), ROUND_HALF_UP))
        message = job["progress_message"] if p_message is None else p_message[:1000]
        self._update(job, progress_percent=percent, progress_message=message)
        return True
