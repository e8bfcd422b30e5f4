"""The state behind `supaworker.testing.InMemoryTransport` and the steps its functions share:
the triggers of an UPDATE, a failed attempt, a release, the reaper (each mirrors its
counterpart in `supabase/migrations/`: `supaworker_private.fail_attempt`, `release`, `reap`,
`maybe_rescue`)."""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from supaworker.exceptions import InvalidArgument, NotFound

STATUSES = ("pending", "assigned", "processing", "completed", "failed", "cancelled")
RUNNING = ("assigned", "processing")
FINISHED = ("completed", "failed", "cancelled")
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
# What purge_finished_jobs receives from rpc.py ("3600 seconds"); Postgres reads far more
# interval spellings, the model only the ones supaworker sends.
_SECONDS = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)?\s*")


# An SQL default applies only to an argument left out; an explicit null stays null.
OMITTED: Any = object()


def now() -> datetime:
    return datetime.now(UTC)


def invalid(message: str) -> InvalidArgument:
    return InvalidArgument(message, code="22023")


def parse_uuid(value: Any) -> uuid.UUID:
    """PostgREST hands the text to Postgres, which refuses a non-UUID with 22P02."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgument(
            f'invalid input syntax for type uuid: "{value}"', code="22P02"
        ) from None


def in_range(name: str, value: int | None, low: int, high: int) -> int:
    if value is None or not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}, got {value}")
    return value


def jsonb_text_bytes(value: Any) -> int:
    # jsonb's text form puts ", " and ": " between items, as json.dumps does by default.
    return len(json.dumps(value, ensure_ascii=False).encode())


@dataclass
class Settings:
    """`public.queue_settings` (the same defaults)."""

    dead_worker_horizon: timedelta = timedelta(seconds=30)
    rescue_interval: timedelta = timedelta(seconds=5)
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 3600.0
    default_max_attempts: int = 5
    max_payload_bytes: int = 262144
    retention: timedelta = timedelta(days=7)
    timeout_grace: timedelta = timedelta(seconds=30)
    last_rescue_at: datetime | None = None
    max_running_per_user: int | None = None
    max_pending_per_user: int | None = None


class MemoryState:
    """The tables (as dicts) and the internal steps; the RPCs are in the subclasses."""

    settings: Settings
    clock: Callable[[], datetime]
    documents: dict[uuid.UUID, uuid.UUID]  # doc id -> owner
    jobs: dict[uuid.UUID, dict[str, Any]]
    workers: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    # supaworker_private.owner_clock: (queue, priority, owner) -> [last tag, uses_priority]
    owner_clock: dict[tuple[str, int, uuid.UUID], list[Any]]
    # public.concurrency_limits (key -> max_running), public.rate_limits (key -> (per_second,
    # burst)) and supaworker_private.rate_buckets (key -> [tokens, refilled_at]).
    concurrency_limits: dict[str, int]
    rate_limits: dict[str, tuple[float, int]]
    rate_buckets: dict[str, list[Any]]
    # job_error_details: (job id, attempt) -> the operators' text.
    error_details: dict[tuple[uuid.UUID, int], str]

    def _job(self, job_id: Any) -> dict[str, Any]:
        job = self.jobs.get(parse_uuid(job_id))
        if job is None:
            raise NotFound(f"job {job_id} not found", code="PT404")
        return job

    def _cancel_now(self, job: dict[str, Any]) -> None:
        """A job that is not running (or no longer) ends cancelled, as every SQL path does it."""
        self._update(
            job,
            status="cancelled",
            completed_at=self.clock(),
            progress_percent=None,
            progress_message=None,
        )

    def _update(self, job: dict[str, Any], **changes: Any) -> None:
        """An UPDATE of a processing_queue row, with the triggers that follow it in SQL
        (updated_at; one job_events row per status change or cancel request)."""
        old = dict(job)
        job.update(changes, updated_at=self.clock())
        if job["status"] != old["status"]:
            event = {
                "pending": (
                    "requeued"
                    if old["status"] in FINISHED
                    else "retry_scheduled"
                    if job["retry_count"] > old["retry_count"]
                    else "snoozed"
                    if job["snooze_count"] > old["snooze_count"]
                    else "released"
                ),
                "assigned": "assigned",
                "processing": "started",
            }.get(job["status"], job["status"])
        elif job["cancel_requested"] and not old["cancel_requested"]:
            event = "cancel_requested"
        else:
            return
        self._record(job, event, old["status"], job["assigned_to"] or old["assigned_to"])

    def _record(
        self, job: dict[str, Any], event: str, from_status: str | None, worker: str | None
    ) -> None:
        self.events.append(
            {
                "id": len(self.events) + 1,
                "job_id": job["id"],
                "user_id": job["user_id"],
                "event": event,
                "from_status": from_status,
                "to_status": job["status"],
                "worker_id": None if event in ("enqueued", "requeued") else worker,
                "attempt": job["attempt"],
                "message": (
                    job["error_message"]
                    if event in ("retry_scheduled", "failed")
                    else f"snoozed until {job['run_at']}"
                    if event == "snoozed"
                    else None
                ),
                "created_at": self.clock(),
            }
        )

    def _row(self, job: dict[str, Any]) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, uuid.UUID | datetime) else v) for k, v in job.items()}

    def _running_of(self, worker_id: str) -> list[dict[str, Any]]:
        return sorted(
            (
                j
                for j in self.jobs.values()
                if j["assigned_to"] == worker_id and j["status"] in RUNNING
            ),
            key=lambda j: j["id"],
        )

    def _sync_current_jobs(self, worker_ids: Iterable[str | None]) -> None:
        for worker_id in worker_ids:
            if worker_id in self.workers:
                self.workers[worker_id]["current_jobs"] = len(self._running_of(worker_id))

    def _fenced(self, job_id: Any, worker_id: str, attempt: int) -> dict[str, Any] | None:
        job = self.jobs.get(parse_uuid(job_id))
        if (
            job
            and job["assigned_to"] == worker_id
            and job["attempt"] == attempt
            and job["status"] in RUNNING
        ):
            return job
        return None

    def _worker(self, worker_id: str) -> dict[str, Any]:
        worker = self.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id} is not registered", code="PT404")
        return worker

    @staticmethod
    def _timestamp(value: str) -> datetime:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidArgument(f"invalid timestamp {value!r}", code="22007") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    @staticmethod
    def _interval(value: str) -> timedelta:
        match = _SECONDS.fullmatch(value)
        if match is None:
            raise InvalidArgument(
                f'invalid input syntax for type interval: "{value}"', code="22007"
            )
        return timedelta(seconds=float(match.group(1)))

    def _fail_attempt(
        self,
        job: dict[str, Any],
        error: str | None,
        *,
        retryable: bool,
        retry_after: int | None = None,
    ) -> None:
        """supaworker_private.fail_attempt on a job already known to be fenced in."""
        retry = job["retry_count"] + 1
        message = (error if error is not None else "the worker gave no error message")[:10000]
        if job["cancel_requested"]:
            status = "cancelled"
        elif not retryable or retry >= job["max_attempts"]:
            status = "failed"
        else:
            status = "pending"
        changes: dict[str, Any] = {
            "status": status,
            "retry_count": retry,
            "error_message": message,
            "result": None,
            "completed_at": self.clock(),
        }
        if status == "pending":
            delay = min(
                self.settings.backoff_base_seconds * 2 ** min(retry - 1, 62),
                self.settings.backoff_max_seconds,
            ) * random.uniform(0.5, 1.0)
            if retry_after is not None:
                delay = min(retry_after, self.settings.backoff_max_seconds)
            changes.update(
                run_at=self.clock() + timedelta(seconds=delay),
                assigned_to=None,
                assigned_at=None,
                started_at=None,
                progress_percent=None,
                progress_message=None,
                completed_at=None,
            )
        self._update(job, **changes)

    def _release(self, worker_id: str, wanted: set[uuid.UUID] | None) -> int:
        """Back to pending without spending an attempt; a cancel request cancels instead."""
        released = 0
        for job in self._running_of(worker_id):
            if wanted is not None and job["id"] not in wanted:
                continue
            if job["cancel_requested"]:
                self._cancel_now(job)
            else:
                self._update(
                    job,
                    status="pending",
                    assigned_to=None,
                    assigned_at=None,
                    started_at=None,
                    completed_at=None,
                    progress_percent=None,
                    progress_message=None,
                )
            released += 1
        return released

    def _maybe_rescue(self) -> None:
        """What every claim does first: the reaper, at most once per rescue_interval."""
        last, now = self.settings.last_rescue_at, self.clock()
        if last is None or last <= now - self.settings.rescue_interval:
            self.settings.last_rescue_at = now
            self._reap()

    def _reap(self) -> int:
        now = self.clock()
        horizon = now - self.settings.dead_worker_horizon
        for worker in self.workers.values():
            if worker["status"] == "active" and worker["last_heartbeat"] < horizon:
                worker["status"] = "offline"  # a paused worker stays paused
        rescued, touched = 0, set()
        running = sorted(
            (j for j in self.jobs.values() if j["status"] in RUNNING), key=lambda j: j["id"]
        )
        for job in running:
            owner = job["assigned_to"]
            holder = self.workers.get(owner)
            since = job["started_at"] or job["assigned_at"]
            if holder is None:
                reason = f"worker {owner} is not registered"
            elif holder["last_heartbeat"] < horizon:
                reason = f"worker {owner} stopped heartbeating"
            elif job["timeout_seconds"] is not None and (
                since + timedelta(seconds=job["timeout_seconds"]) + self.settings.timeout_grace
                < now
            ):
                reason = f"timed out after {job['timeout_seconds']} s on worker {owner}"
            else:
                continue
            self._fail_attempt(job, reason, retryable=True)
            rescued += 1
            touched.add(owner)
        self._sync_current_jobs(touched)
        return rescued
