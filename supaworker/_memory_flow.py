"""Flow control in the in-memory model (issue 18): fair-order tags, per-owner limits,
concurrency keys and rate limits, routing checks; each mirrors its SQL helper in
`supaworker/sql/schema/10_private_helpers.sql` (next_fair_tag, check_pending_quota,
requires_problem, admit_keys) and the claim's turn rule in `30_claim.sql`."""

from __future__ import annotations

import uuid
from typing import Any

from supaworker._memory_bulk import requires_problem
from supaworker._memory_state import FINISHED, RUNNING, MemoryState, invalid
from supaworker.exceptions import QuotaExceeded
from supaworker.models import requires_met

# The owner of jobs without one in owner_clock (they take turns like one more owner).
NIL = uuid.UUID(int=0)


class FlowControl(MemoryState):
    """The flow-control steps the enqueue and the claim share."""

    @staticmethod
    def _check_requires(requires: dict[str, Any]) -> None:
        """enqueue_job's 22023 for supaworker_private.requires_problem."""
        problem = requires_problem(requires)
        if problem:
            raise invalid(problem)

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
        key = (queue, priority, owner or NIL)
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

    def _turns(self, ready: list[dict[str, Any]], wanted: int) -> list[dict[str, Any]]:
        """The claim's choice among the ready jobs (claim_jobs): the first in claim order
        decides whose turn it is, the owner's best job by user_priority fills it (the two
        swap tags), an owner at max_running_per_user is skipped, a key that refuses
        (admit_keys) is left out; at most `wanted` jobs, `wanted` + 32 turns looked at."""
        ready = sorted(ready, key=lambda j: (-j["priority"], j["fair_tag"], j["created_at"]))
        claimed: list[dict[str, Any]] = []
        cap = self.settings.max_running_per_user
        budget = wanted + 32
        while ready and len(claimed) < wanted and budget > 0:
            budget -= 1
            turn = ready[0]
            taking = {j["id"] for j in claimed}
            if cap is not None and turn["user_id"] is not None:
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
            level = (turn["queue"], turn["priority"], turn["user_id"])
            if turn["user_id"] is not None and self.owner_clock.get(level, [0, False])[1]:
                job = min(
                    (j for j in ready if (j["queue"], j["priority"], j["user_id"]) == level),
                    key=lambda j: (-j["user_priority"], j["owner_seq"]),
                )
            refused = self._admit_keys(job, taking)
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
        return claimed
