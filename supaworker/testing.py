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
import json
import random
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from supaworker.exceptions import (
    Conflict,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
)
from supaworker.models import requires_met
from supaworker.testing_bulk import bulk_problem, requires_problem

STATUSES = ("pending", "assigned", "processing", "completed", "failed", "cancelled")
RUNNING = ("assigned", "processing")
FINISHED = ("completed", "failed", "cancelled")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
# What purge_finished_jobs receives from rpc.py ("3600 seconds"); Postgres reads far more
# interval spellings, the model only the ones supaworker sends.
_SECONDS = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)?\s*")


# An SQL default applies only to an argument left out; an explicit null stays null.
_OMITTED: Any = object()
# The owner of jobs without one in owner_clock (they take turns like one more owner).
_NIL = uuid.UUID(int=0)


def _now() -> datetime:
    return datetime.now(UTC)


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(message, code="22023")


def _uuid(value: Any) -> uuid.UUID:
    """PostgREST hands the text to Postgres, which refuses a non-UUID with 22P02."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgument(
            f'invalid input syntax for type uuid: "{value}"', code="22P02"
        ) from None


def _in_range(name: str, value: int | None, low: int, high: int) -> int:
    if value is None or not low <= value <= high:
        raise _invalid(f"{name} must be between {low} and {high}, got {value}")
    return value


def _jsonb_text_bytes(value: Any) -> int:
    # jsonb's text form puts ", " and ": " between items, as json.dumps does by default.
    return len(json.dumps(value, ensure_ascii=False).encode())


@dataclass
class _Settings:
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


@dataclass
class InMemoryTransport:
    """The queue's state and functions in memory. Single-threaded, like one event loop."""

    settings: _Settings = field(default_factory=_Settings)
    clock: Callable[[], datetime] = _now
    documents: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # doc id -> owner
    jobs: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    # public.concurrency_limits (key -> max_running), public.rate_limits (key -> (per_second,
    # burst)) and supaworker_private.rate_buckets (key -> [tokens, refilled_at]).
    concurrency_limits: dict[str, int] = field(default_factory=dict)
    rate_limits: dict[str, tuple[float, int]] = field(default_factory=dict)
    rate_buckets: dict[str, list[Any]] = field(default_factory=dict)
    # supaworker_private.owner_clock: (queue, priority, owner) -> [last tag, uses_priority]
    owner_clock: dict[tuple[str, int, uuid.UUID], list[Any]] = field(default_factory=dict)
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

    def _job(self, job_id: Any) -> dict[str, Any]:
        job = self.jobs.get(_uuid(job_id))
        if job is None:
            raise NotFound(f"job {job_id} not found", code="PT404")
        return job

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

    @staticmethod
    def _check_requires(requires: dict[str, Any]) -> None:
        """enqueue_job's 22023 for supaworker_private.requires_problem."""
        problem = requires_problem(requires)
        if problem:
            raise _invalid(problem)

    def _check_pending_quota(self, owner: uuid.UUID | None, adding: int) -> None:
        """supaworker_private.check_pending_quota: PT429 when the owner's pending and
        running jobs plus `adding` would exceed max_pending_per_user."""
        limit = self.settings.max_pending_per_user
        if limit is None or owner is None:
            return
        active = sum(
            1 for j in self.jobs.values() if j["user_id"] == owner and j["status"] not in FINISHED
        )
        if active + adding > limit:
            raise QuotaExceeded(
                f"user {owner} has {active} pending or running jobs;"
                f" max_pending_per_user is {limit}",
                code="PT429",
            )

    def _next_fair_tag(
        self,
        queue: str,
        priority: int,
        owner: uuid.UUID | None,
        user_priority: int,
        virtual: int | None = None,
    ) -> int:
        """supaworker_private.next_fair_tag: greatest(V, the owner's last tag + 1), V the
        tag of the level's first due pending job in claim order, or (none due) its highest
        (`virtual` given: the bulk enqueue's V, next_fair_tags)."""
        if virtual is None:
            virtual = self._virtual_time(queue, priority)
        key = (queue, priority, owner or _NIL)
        clock = self.owner_clock.get(key)
        if clock is None:
            clock = self.owner_clock[key] = [virtual, user_priority != 0]
        else:
            clock[0] = max(virtual, clock[0] + 1)
            clock[1] = clock[1] or user_priority != 0
        return int(clock[0])

    def _virtual_time(self, queue: str, priority: int) -> int:
        now = self.clock()
        due = [
            j
            for j in self.jobs.values()
            if j["status"] == "pending"
            and j["queue"] == queue
            and j["priority"] == priority
            and j["run_at"] <= now
        ]
        level = [c[0] for (q, p, _), c in self.owner_clock.items() if (q, p) == (queue, priority)]
        if due:
            return int(min(due, key=lambda j: (j["fair_tag"], j["created_at"]))["fair_tag"])
        return int(max(level, default=0))

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
                "message": job["error_message"] if event in ("retry_scheduled", "failed") else None,
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
        job = self.jobs.get(_uuid(job_id))
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
        p_user_document_id: str | None,
        p_priority: int | None = 0,
        p_payload: Any = None,
        p_queue: str | None = "default",
        p_max_attempts: int | None = None,
        p_run_at: str | None = None,
        p_timeout_seconds: int | None = None,
        p_requires: Any = None,
        p_concurrency_key: str | None = None,
        p_rate_limit_key: str | None = None,
    ) -> dict[str, Any]:
        return self._enqueue(
            p_user_document_id,
            p_priority,
            p_payload,
            p_queue,
            p_max_attempts,
            p_run_at,
            p_timeout_seconds,
            p_requires,
            p_concurrency_key,
            p_rate_limit_key,
        )

    def _enqueue(
        self,
        p_user_document_id: str | None,
        p_priority: int | None = 0,
        p_payload: Any = None,
        p_queue: str | None = "default",
        p_max_attempts: int | None = None,
        p_run_at: str | None = None,
        p_timeout_seconds: int | None = None,
        p_requires: Any = None,
        p_concurrency_key: str | None = None,
        p_rate_limit_key: str | None = None,
        virtual: int | None = None,  # the bulk enqueue's V, taken before the call
    ) -> dict[str, Any]:
        doc_id = None if p_user_document_id is None else _uuid(p_user_document_id)
        priority = 0 if p_priority is None else p_priority
        payload = {} if p_payload is None else p_payload
        queue = "default" if p_queue is None else p_queue
        requires = {} if p_requires is None else p_requires
        max_attempts = (
            self.settings.default_max_attempts if p_max_attempts is None else p_max_attempts
        )
        if doc_id is None:
            raise _invalid("p_user_document_id is required")
        if not isinstance(payload, dict):
            raise _invalid("p_payload must be a JSON object")
        size = _jsonb_text_bytes(payload)
        if size > self.settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"p_payload is {size} bytes, more than max_payload_bytes"
                f" ({self.settings.max_payload_bytes})",
                code="PT413",
            )
        if not isinstance(requires, dict):
            raise _invalid("p_requires must be a JSON object")
        self._check_requires(requires)
        if not _QUEUE_NAME.fullmatch(queue):
            raise _invalid(f"invalid queue name {queue!r}")
        _in_range("p_max_attempts", max_attempts, 1, 100)
        if p_timeout_seconds is not None and p_timeout_seconds <= 0:
            raise _invalid(f"p_timeout_seconds must be positive, got {p_timeout_seconds}")
        if any(
            k is not None and not 1 <= len(k) <= 200 for k in (p_concurrency_key, p_rate_limit_key)
        ):
            raise _invalid(
                "p_concurrency_key and p_rate_limit_key must be texts of 1-200 characters"
            )
        _in_range("p_priority", priority, -1000, 1000)  # the model is always service_role
        if doc_id not in self.documents:
            raise NotFound(f"document {doc_id} not found", code="PT404")
        run_at = self._timestamp(p_run_at) if p_run_at else self.clock()

        existing = next((j for j in self.jobs.values() if j["user_document_id"] == doc_id), None)
        if existing and existing["status"] not in FINISHED:
            return self._row(existing)
        self._check_pending_quota(self.documents[doc_id], 1)
        # The model is the service role: priority orders across owners, user_priority is 0.
        tag = self._next_fair_tag(queue, priority, self.documents[doc_id], 0, virtual)
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
            "fair_tag": tag,
            "user_priority": 0,
            "owner_seq": tag,
            "concurrency_key": p_concurrency_key,
            "rate_limit_key": p_rate_limit_key,
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

    def fn_enqueue_jobs(self, p_jobs: Any) -> list[dict[str, Any]]:
        """public.enqueue_jobs: every check before any change, then enqueue_job's effect per
        document; each owner's new work gets consecutive tags from the level's V as it was
        before the call."""
        if not isinstance(p_jobs, list):
            raise _invalid("p_jobs must be a JSON array of objects")
        if len(p_jobs) > 10000:
            raise _invalid(f"p_jobs has {len(p_jobs)} elements, at most 10000")
        errors = {"22023": InvalidArgument, "PT413": PayloadTooLarge}
        for i, element in enumerate(p_jobs):
            problem = bulk_problem(element, self.settings.max_payload_bytes)
            if problem:
                raise errors[problem[0]](f"p_jobs[{i}]: {problem[1]}", code=problem[0])
        for i, element in enumerate(p_jobs):
            if element.get("run_at") is not None:
                try:
                    self._timestamp(element["run_at"])
                except InvalidArgument:
                    raise _invalid(
                        f"p_jobs[{i}]: run_at {element['run_at']} is not a timestamp"
                    ) from None
        docs = [uuid.UUID(e["user_document_id"]) for e in p_jobs]
        for i, doc in enumerate(docs):
            if doc not in self.documents:
                raise NotFound(f"p_jobs[{i}]: document {doc} not found", code="PT404")
        active = {j["user_document_id"] for j in self.jobs.values() if j["status"] not in FINISHED}
        first = {doc: i for i, doc in reversed(list(enumerate(docs)))}
        work = sorted((i for doc, i in first.items() if doc not in active))
        self._check_bulk_quota(docs, work)
        # V per level before any of the call's tags, then consecutive tags per owner.
        virtual: dict[tuple[str, int], int] = {}
        for i in work:
            level = (p_jobs[i].get("queue") or "default", p_jobs[i].get("priority") or 0)
            if level not in virtual:
                virtual[level] = self._virtual_time(*level)
        for i in work:
            options = {k: v for k, v in p_jobs[i].items() if v is not None}
            level = (options.get("queue", "default"), options.get("priority", 0))
            options.pop("user_document_id")
            self._enqueue(
                str(docs[i]),
                **{f"p_{k}": v for k, v in options.items()},
                virtual=virtual[level],
            )
        by_doc = {j["user_document_id"]: j for j in self.jobs.values()}
        return [self._row(by_doc[doc]) for doc in docs]

    def _check_bulk_quota(self, docs: list[uuid.UUID], work: list[int]) -> None:
        limit = self.settings.max_pending_per_user
        if limit is None:
            return
        adding: dict[uuid.UUID, list[int]] = {}
        for i in work:
            adding.setdefault(self.documents[docs[i]], []).append(i)
        for owner, items in sorted(adding.items(), key=lambda kv: kv[1][0]):
            count = sum(
                1
                for j in self.jobs.values()
                if j["user_id"] == owner and j["status"] not in FINISHED
            )
            if count + len(items) > limit:
                raise QuotaExceeded(
                    f"p_jobs[{items[0]}]: user {owner} has {count} pending or running jobs and"
                    f" this call adds {len(items)}; max_pending_per_user is {limit}",
                    code="PT429",
                )

    @staticmethod
    def _timestamp(value: str) -> datetime:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidArgument(f"invalid timestamp {value!r}", code="22007") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def fn_get_job(self, p_job_id: str) -> dict[str, Any]:
        return self._row(self._job(p_job_id))

    def fn_job_history(self, p_job_id: str) -> list[dict[str, Any]]:
        job = self._job(p_job_id)
        return [self._row(e) for e in self.events if e["job_id"] == job["id"]]

    def fn_list_jobs(
        self, p_status: str | None = None, p_queue: str | None = None, p_limit: int = 50
    ) -> list[dict[str, Any]]:
        if p_status is not None and p_status not in STATUSES:
            raise _invalid(f"unknown status {p_status}")
        _in_range("p_limit", p_limit, 1, 1000)
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
        """retry_job / retry_failed_jobs: pending now, as if never tried in this cycle, with
        a new fair-order tag."""
        tag = self._next_fair_tag(
            job["queue"], job["priority"], job["user_id"], job["user_priority"]
        )
        self._update(
            job,
            fair_tag=tag,
            owner_seq=tag,
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
        failed = sorted(
            (
                j
                for j in self.jobs.values()
                if j["status"] == "failed" and (p_queue is None or j["queue"] == p_queue)
            ),
            key=lambda j: j["id"],  # the SQL takes tags in id order
        )
        for job in failed:
            self._new_cycle(job)
        return len(failed)

    def fn_cancel_job(self, p_job_id: str | None) -> dict[str, Any]:
        if p_job_id is None:
            raise _invalid("p_job_id is required")
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
            "no_capable_worker": self._no_capable_worker(every),
        }

    def _no_capable_worker(self, every: list[dict[str, Any]]) -> dict[str, int]:
        live = [
            w
            for w in self.workers.values()
            if w["status"] == "active"
            and w["last_heartbeat"] > self.clock() - self.settings.dead_worker_horizon
        ]
        stuck: dict[str, int] = {}
        for job in every:
            if job["status"] == "pending" and not any(
                (w["queues"] is None or job["queue"] in w["queues"])
                and requires_met(w["capabilities"], job["requires"])
                for w in live
            ):
                stuck[job["queue"]] = stuck.get(job["queue"], 0) + 1
        return stuck

    # -- operations -----------------------------------------------------------------------
    def fn_reap_stale_jobs(self) -> int:
        self.settings.last_rescue_at = self.clock()
        return self._reap()

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

    def fn_purge_finished_jobs(self, p_older_than: str | None = None) -> int:
        age = self.settings.retention if p_older_than is None else self._interval(p_older_than)
        if age < timedelta(0):
            raise _invalid("p_older_than must not be negative")
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

    @staticmethod
    def _interval(value: str) -> timedelta:
        match = _SECONDS.fullmatch(value)
        if match is None:
            raise InvalidArgument(
                f'invalid input syntax for type interval: "{value}"', code="22007"
            )
        return timedelta(seconds=float(match.group(1)))

    # -- workers --------------------------------------------------------------------------
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
            raise _invalid("p_worker_id must be 1-200 characters")
        _in_range("p_max_concurrent_jobs", slots, 1, 1000)
        if not isinstance(capabilities, dict):
            raise _invalid("p_capabilities must be a JSON object")
        if p_queues is not None and (not p_queues or None in p_queues):
            raise _invalid("p_queues must be null (every queue) or a non-empty list of queue names")
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

    def fn_list_workers(self) -> list[dict[str, Any]]:
        rows = sorted(
            self.workers.values(), key=lambda w: (w["status"] == "offline", w["worker_id"])
        )
        return [self._row(w) for w in rows]

    def _worker(self, worker_id: str) -> dict[str, Any]:
        worker = self.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id} is not registered", code="PT404")
        return worker

    def fn_set_worker_status(self, p_worker_id: str, p_status: str | None) -> dict[str, Any]:
        if p_status not in ("active", "paused"):
            raise _invalid(f"p_status must be active or paused, got {p_status!r}")
        worker = self._worker(p_worker_id)
        worker.update(status=p_status, updated_at=self.clock())
        return self._row(worker)

    def fn_heartbeat_worker(
        self, p_worker_id: str, p_job_ids: list[str] | None = None
    ) -> dict[str, Any]:
        held = {_uuid(j) for j in p_job_ids or []}
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
        wanted = None if p_job_ids is None else {_uuid(j) for j in p_job_ids}
        released = self._release(p_worker_id, wanted)
        self._sync_current_jobs([p_worker_id])
        return released

    def _release(self, worker_id: str, wanted: set[uuid.UUID] | None) -> int:
        """Back to pending without spending an attempt; a cancel request cancels instead."""
        released = 0
        for job in self._running_of(worker_id):
            if wanted is not None and job["id"] not in wanted:
                continue
            if job["cancel_requested"]:
                self._update(
                    job,
                    status="cancelled",
                    completed_at=self.clock(),
                    progress_percent=None,
                    progress_message=None,
                )
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
            raise _invalid("p_worker_id is required")
        _in_range("p_limit", limit, 0, 1000)
        _in_range("p_prefetch", prefetch, 0, 1000)

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
        ready.sort(key=lambda j: (-j["priority"], j["fair_tag"], j["created_at"]))
        claimed: list[dict[str, Any]] = []
        cap = self.settings.max_running_per_user
        budget = min(limit, free) + 32  # turns looked at, as the SQL bounds them
        while ready and len(claimed) < min(limit, free) and budget > 0:
            budget -= 1
            # The first ready job decides whose turn it is; the owner's best job fills it.
            turn = ready[0]
            if cap is not None and turn["user_id"] is not None:
                taking = {j["id"] for j in claimed}
                owned = sum(
                    1
                    for j in self.jobs.values()
                    if j["user_id"] == turn["user_id"]
                    and (j["status"] in RUNNING or j["id"] in taking)
                )
                if owned >= cap:  # max_running_per_user: skip the owner for this claim
                    ready = [j for j in ready if j["user_id"] != turn["user_id"]]
                    continue
            job = turn
            if (
                turn["user_id"] is not None
                and self.owner_clock.get(
                    (turn["queue"], turn["priority"], turn["user_id"]), [0, False]
                )[1]
            ):
                job = min(
                    (
                        j
                        for j in ready
                        if (j["queue"], j["priority"], j["user_id"])
                        == (turn["queue"], turn["priority"], turn["user_id"])
                    ),
                    key=lambda j: (-j["user_priority"], j["owner_seq"]),
                )
            refused = self._admit_keys(job, {j["id"] for j in claimed})
            if refused:  # that key is left out of the rest of this claim
                ready = [j for j in ready if j[refused] != job[refused]]
                continue
            if job is not turn:  # the displaced job takes the best one's place
                best_tag = job["fair_tag"]
                job["fair_tag"] = turn["fair_tag"]
                self._update(turn, fair_tag=best_tag)
                ready.sort(key=lambda j: (-j["priority"], j["fair_tag"], j["created_at"]))
            ready.remove(job)
            claimed.append(job)
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

    def _admit_keys(self, job: dict[str, Any], taking: set[uuid.UUID]) -> str | None:
        """supaworker_private.admit_keys: None when the job may start (a rate token is
        spent), else the column of the key that refuses."""
        key = job["concurrency_key"]
        if key is not None and key in self.concurrency_limits:
            running = sum(
                1
                for j in self.jobs.values()
                if j["concurrency_key"] == key and (j["status"] in RUNNING or j["id"] in taking)
            )
            if running >= self.concurrency_limits[key]:
                return "concurrency_key"
        key = job["rate_limit_key"]
        if key is not None and key in self.rate_limits:
            per_second, burst = self.rate_limits[key]
            now = self.clock()
            bucket = self.rate_buckets.setdefault(key, [float(burst), now])
            elapsed = max(0.0, (now - bucket[1]).total_seconds())
            tokens = min(float(burst), bucket[0] + per_second * elapsed)
            if tokens < 1:
                return "rate_limit_key"
            bucket[:] = [tokens - 1, now]
        return None

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
            raise _invalid("p_jobs must be a JSON array")
        if any(not isinstance(j, dict) or "id" not in j or "attempt" not in j for j in jobs):
            raise _invalid('every element of p_jobs needs "id" and "attempt"')
        for j in jobs:
            _uuid(j["id"])
        return jobs

    def _complete_batch(self, worker_id: str, jobs: list[dict[str, Any]]) -> list[str]:
        """supaworker_private.complete_batch: each element fenced like complete_job; a
        repeated id counts once."""
        first = {str(_uuid(j["id"])): j for j in reversed(jobs)}
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
        p_jobs: Any = _OMITTED,
        p_limit: int | None = 0,
        p_queues: list[str] | None = None,
        p_prefetch: int | None = 0,
    ) -> dict[str, Any]:
        jobs = self._check_batch(
            [] if p_jobs is _OMITTED else p_jobs
        )  # default '[]'; null is refused
        # Checked before the completions: in SQL a refused claim rolls them back.
        self._check_claim(p_worker_id, p_limit, p_prefetch)
        completed = self._complete_batch(str(p_worker_id), jobs)
        claimed = self._claim(str(p_worker_id), p_limit or 0, p_queues, True, p_prefetch or 0)
        return {"completed": completed, "claimed": claimed}

    def _fail_attempt(self, job: dict[str, Any], error: str | None, *, retryable: bool) -> None:
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

    def fn_fail_job(
        self,
        p_job_id: str,
        p_worker_id: str,
        p_attempt: int,
        p_error: str | None,
        p_retryable: bool | None = True,
    ) -> list[dict[str, Any]]:
        job = self._fenced(p_job_id, p_worker_id, p_attempt)
        if job is None:
            return []
        self._fail_attempt(job, p_error, retryable=p_retryable is not False)
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
            raise _invalid(f"p_percent must be between 0 and 100, got {p_percent}")
        job = self._fenced(p_job_id, p_worker_id, p_attempt)
        if job is None:
            return False
        percent = job["progress_percent"]
        if p_percent is not None:  # numeric round(p, 2): halves away from zero
            percent = float(Decimal(str(p_percent)).quantize(Decimal("0.01"), ROUND_HALF_UP))
        message = job["progress_message"] if p_message is None else p_message[:1000]
        self._update(job, progress_percent=percent, progress_message=message)
        return True
