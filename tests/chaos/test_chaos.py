"""Issue 7: several `supaworker run` processes over many jobs while the suite breaks things.

SIGKILLs workers at random moments (restarting some under the same id, some under a new
one), restarts PostgREST, PostgreSQL and the gateway (Realtime), pauses and resumes a
worker, cancels jobs, re-enqueues finished documents. Then checks:
every job terminal, none lost, none completed twice, re-executions only for jobs that were
in flight on a killed worker, dead workers offline, `current_jobs` right, and recovery time
(kill -> job claimed again) against the configured horizon. Sizes: SUPAWORKER_CHAOS_JOBS
(default 600), SUPAWORKER_CHAOS_SECONDS (default 25). Figures are printed and written to
.supaworker-test/chaos-figures.json for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from supaworker.dev import postgres
from supaworker.dev import stack as dev_stack
from supaworker.dev.config import StackConfig
from tests.conftest import StackUser
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

JOBS = int(os.environ.get("SUPAWORKER_CHAOS_JOBS", "600"))
SECONDS = float(os.environ.get("SUPAWORKER_CHAOS_SECONDS", "25"))
HORIZON = 3  # seconds without a heartbeat before a worker counts as dead (during the run)
Db = psycopg.Connection[tuple[object, ...]]


@pytest.fixture()
def fast_rescue(admin_db: Db, stack: StackConfig) -> Iterator[None]:
    """Short horizons so rescues happen within the test; the defaults come back after."""
    saved = admin_db.execute(
        "select dead_worker_horizon, rescue_interval, backoff_base_seconds"
        " from public.queue_settings"
    ).fetchone()
    assert saved is not None
    admin_db.execute(
        "update public.queue_settings set dead_worker_horizon = %s * interval '1 second',"
        " rescue_interval = interval '1 second', backoff_base_seconds = 0.2",
        (HORIZON,),
    )
    yield
    # A fresh connection: the suite restarts PostgreSQL, which ends the fixture's one.
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        conn.execute(
            "update public.queue_settings set dead_worker_horizon = %s, rescue_interval = %s,"
            " backoff_base_seconds = %s",
            saved,
        )


def _enqueue_many(admin_db: Db, user: StackUser, queue: str, n: int) -> list[uuid.UUID]:
    """Documents and jobs in bulk, through enqueue_job itself (as a trusted SQL caller)."""
    rows = admin_db.execute(
        """
        with docs as (
          insert into public.user_documents (user_id, name, content)
          select %s, 'chaos-' || g, 'x' from generate_series(1, %s) g returning id
        )
        select (public.enqueue_job(d.id, 0,
                  jsonb_build_object('mode', 'sleep', 'seconds', 0.05 + random() * 0.25),
                  %s, 10)).id
        from docs d
        """,
        (user.id, n, queue),
    ).fetchall()
    return [uuid.UUID(str(r[0])) for r in rows]


def _statuses(admin_db: Db, queue: str) -> Counter[str]:
    rows = admin_db.execute(
        "select status, count(*) from public.processing_queue where queue = %s group by 1",
        (queue,),
    ).fetchall()
    return Counter({str(s): int(str(n)) for s, n in rows})


@dataclass
class Chaos:
    """The breaking half of the suite: what it did, for the checks afterwards."""

    stack: StackConfig
    db: Db
    queue: str
    spawn: Callable[[str | None], WorkerProcess]
    rng: random.Random
    workers: list[WorkerProcess] = field(default_factory=list)
    kills: list[tuple[str, datetime]] = field(default_factory=list)  # id, database clock
    restarted_same_id: set[str] = field(default_factory=set)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    requeued: list[uuid.UUID] = field(default_factory=list)
    postgrest_restarts: int = 0
    postgres_restarts: int = 0
    gateway_restarts: int = 0

    def run(self, job_ids: list[uuid.UUID], seconds: float) -> None:
        actions: list[Callable[[], None]] = [
            self.restart_postgrest,
            self.pause_one,
            lambda: self.cancel(job_ids),
            self.requeue_finished,
            self.restart_postgres,
            self.restart_gateway,
        ]
        began = time.monotonic()
        step = 0
        while time.monotonic() - began < seconds:
            time.sleep(self.rng.uniform(1.0, 2.5))
            step += 1
            self.kill_one()
            if step >= 2 and actions:
                actions.pop(0)()
        for action in actions:  # a short run still does every kind of damage once
            action()

    def kill_one(self) -> None:
        victim = self.rng.choice([w for w in self.workers if w.proc.poll() is None])
        now = self.db.execute("select now()").fetchone()
        assert now is not None and isinstance(now[0], datetime)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        self.kills.append((victim.worker_id, now[0]))
        self.workers.remove(victim)
        if self.rng.random() < 0.4:  # same id: register_worker counts its old jobs as failed
            self.restarted_same_id.add(victim.worker_id)
            self.workers.append(self.spawn(victim.worker_id))
        else:
            self.workers.append(self.spawn(None))

    def restart_postgrest(self) -> None:
        dev_stack.stop_postgrest(self.stack)
        time.sleep(1.5)
        dev_stack.start_postgrest(self.stack)
        self.postgrest_restarts += 1

    def restart_gateway(self) -> None:
        """Drops the Realtime endpoint (and the REST route with it): workers poll meanwhile."""
        dev_stack.stop_gateway(self.stack)
        time.sleep(1.5)
        dev_stack.start_gateway(self.stack)
        self.gateway_restarts += 1

    def pause_one(self) -> None:
        paused = self.workers[0].worker_id
        self.db.execute("select public.set_worker_status(%s, 'paused')", (paused,))
        time.sleep(1.0)
        self.db.execute("select public.set_worker_status(%s, 'active')", (paused,))

    def cancel(self, job_ids: list[uuid.UUID]) -> None:
        for job_id in self.rng.sample(job_ids, 10):
            self.db.execute("select public.cancel_job(%s)", (job_id,))
            self.cancelled.append(job_id)

    def requeue_finished(self) -> None:
        """Re-enqueue finished documents: each runs again as a new cycle."""
        done = self.db.execute(
            "select id, user_document_id from public.processing_queue"
            " where queue = %s and status = 'completed' limit 10",
            (self.queue,),
        ).fetchall()
        for job_id, document_id in done:
            self.db.execute(
                'select public.enqueue_job(%s, 0, \'{"mode": "ok"}\'::jsonb, %s, 10)',
                (document_id, self.queue),
            )
            self.requeued.append(uuid.UUID(str(job_id)))

    def restart_postgres(self) -> None:
        self.db.close()
        postgres.stop(self.stack)
        time.sleep(1.0)
        postgres.start(self.stack)
        self.db = psycopg.connect(self.stack.admin_db_url, autocommit=True)
        self.postgres_restarts += 1


def _completions_per_cycle(db: Db, queue: str) -> Counter[tuple[str, int]]:
    """'completed' events per (job, cycle); a cycle ends when the document is re-enqueued."""
    events = db.execute(
        "select e.job_id, e.event from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s order by e.id",
        (queue,),
    ).fetchall()
    completions: Counter[tuple[str, int]] = Counter()
    cycle: Counter[str] = Counter()
    for job, event in events:
        if event == "requeued":
            cycle[str(job)] += 1
        elif event == "completed":
            completions[(str(job), cycle[str(job)])] += 1
    return completions


def _recovery(
    db: Db, queue: str, kills: list[tuple[str, datetime]]
) -> tuple[list[float], list[float]]:
    """Seconds from a kill to its jobs being claimable again (rescued), and to being claimed
    again (which also includes waiting behind the backlog: a rescued job's run_at is now).
    Each rescue is attributed to the latest kill of its worker id before it."""
    rescues = db.execute(
        "select r.worker_id, r.created_at, min(a.created_at) from public.job_events r"
        " join public.processing_queue q on q.id = r.job_id"
        " left join public.job_events a"
        " on a.job_id = r.job_id and a.event = 'assigned' and a.id > r.id"
        " where q.queue = %s and r.event = 'retry_scheduled'"
        " and (r.message like '%%stopped heartbeating%%' or r.message like '%%restarted while%%')"
        " group by r.id, r.worker_id, r.created_at",
        (queue,),
    ).fetchall()
    recovery: list[float] = []
    rerun_after: list[float] = []
    for worker_id, rescued_at, claimed_at in rescues:
        assert isinstance(rescued_at, datetime)
        earlier = [t for w, t in kills if w == worker_id and t <= rescued_at]
        if not earlier:
            continue  # killed by its own crash, not by this suite
        killed_at = max(earlier)
        recovery.append((rescued_at - killed_at).total_seconds())
        if isinstance(claimed_at, datetime):
            rerun_after.append((claimed_at - killed_at).total_seconds())
    return recovery, rerun_after


def _rescued_jobs(db: Db, queue: str) -> set[str]:
    return {
        str(r[0])
        for r in db.execute(
            "select distinct e.job_id from public.job_events e join public.processing_queue q"
            " on q.id = e.job_id where q.queue = %s and e.event = 'retry_scheduled'"
            " and (e.message like '%%stopped heartbeating%%'"
            "      or e.message like '%%restarted while%%')",
            (queue,),
        ).fetchall()
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def test_workers_killed_and_services_restarted_lose_nothing(
    stack: StackConfig,
    admin_db: Db,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tmp_path: Path,
    fast_rescue: None,
) -> None:
    queue = unique("chaos")
    record = tmp_path / "executions.txt"
    env = {"SUPAWORKER_TEST_RECORD": str(record)}
    args = ("--queue", queue, "--concurrency", "4", "--shutdown-timeout", "5")

    def spawn(worker_id: str | None) -> WorkerProcess:
        return start_worker(*args, worker_id=worker_id, env=env)

    rng = random.Random(int(os.environ.get("SUPAWORKER_CHAOS_SEED", "7")))
    chaos = Chaos(stack, admin_db, queue, spawn, rng)
    chaos.workers = [spawn(None) for _ in range(3)]
    job_ids = _enqueue_many(admin_db, make_user(), queue, JOBS)
    chaos.run(job_ids, SECONDS)
    admin_db = chaos.db  # PostgreSQL was restarted: the first connection is gone

    wait_for(
        lambda: (
            sum(_statuses(admin_db, queue)[s] for s in ("completed", "failed", "cancelled")) == JOBS
        ),
        180,
        "every job to reach a terminal state",
    )
    assert chaos.postgres_restarts == chaos.gateway_restarts == 1, "the run was too short"
    for worker in chaos.workers:
        # A worker spawned moments ago may still be importing (no signal handlers yet).
        worker.wait_for_log('"action": "worker_registered"', timeout=30)
        assert worker.stop() == 0, worker.output()[-2000:]
    time.sleep(HORIZON + 1.5)
    admin_db.execute("select public.reap_stale_jobs()")

    statuses = _statuses(admin_db, queue)
    # None lost: every job is accounted for in a terminal state.
    assert sum(statuses.values()) == JOBS
    assert statuses["pending"] + statuses["assigned"] + statuses["processing"] == 0
    assert statuses["failed"] == 0, statuses  # 10 attempts each: nothing should run out
    # Cancelled ones are only those we cancelled (a job that finished first stays completed).
    cancelled_rows = admin_db.execute(
        "select id from public.processing_queue where queue = %s and status = 'cancelled'",
        (queue,),
    ).fetchall()
    assert {uuid.UUID(str(r[0])) for r in cancelled_rows} <= set(chaos.cancelled)
    # Never completed twice in one cycle; re-enqueued documents completed in both cycles.
    completions = _completions_per_cycle(admin_db, queue)
    assert max(completions.values()) == 1
    for job_id in chaos.requeued:
        assert completions[(str(job_id), 0)] == completions[(str(job_id), 1)] == 1
    # Re-executions only for jobs whose attempt was cut short by a killed worker.
    executions = Counter(line.split()[0] for line in record.read_text().splitlines() if line)
    rerun = {job for job, n in executions.items() if n > 1} - {str(j) for j in chaos.requeued}
    rescued = _rescued_jobs(admin_db, queue)
    assert rerun <= rescued, rerun - rescued
    # Dead workers are offline; current_jobs agrees with the rows again.
    killed_for_good = {w for w, _ in chaos.kills} - chaos.restarted_same_id
    offline = {
        str(r[0])
        for r in admin_db.execute(
            "select worker_id from public.vps_workers where status = 'offline'"
        ).fetchall()
    }
    assert killed_for_good <= offline
    mismatched = admin_db.execute(
        "select w.worker_id from public.vps_workers w where w.current_jobs <> (select count(*)"
        " from public.processing_queue q where q.assigned_to = w.worker_id"
        " and q.status in ('assigned', 'processing'))"
    ).fetchall()
    assert mismatched == []
    recovery, rerun_after = _recovery(admin_db, queue, chaos.kills)
    figures = {
        "jobs": JOBS,
        "seconds_of_chaos": SECONDS,
        "sigkills": len(chaos.kills),
        "restarted_under_same_id": len(chaos.restarted_same_id),
        "postgrest_restarts": chaos.postgrest_restarts,
        "postgres_restarts": chaos.postgres_restarts,
        "gateway_realtime_restarts": chaos.gateway_restarts,
        "requeued_documents": len(chaos.requeued),
        "cancel_requests": len(chaos.cancelled),
        "final_statuses": dict(statuses),
        "lost": 0,
        "completed_twice": 0,
        "executions": sum(executions.values()),
        "jobs_run_more_than_once": len(rerun),
        "rescued_jobs": len(rescued),
        "dead_worker_horizon_s": HORIZON,
        "recovery_s_median": _median(recovery),
        "recovery_s_max": round(max(recovery), 2) if recovery else None,
        "kill_to_rerun_s_median": _median(rerun_after),
    }
    print("chaos figures:", json.dumps(figures))
    (Path(stack.state_dir) / "chaos-figures.json").write_text(json.dumps(figures, indent=2))
    assert chaos.kills, "the run must actually kill workers"
    if recovery:
        # Dead after the horizon, rescued by the next opportunistic reap (at most once a
        # second, inside a claim) or the restarted worker's registration. Rescues run inside
        # claims, so while PostgREST, PostgreSQL or the gateway is restarting they wait too.
        assert max(recovery) < HORIZON * 3 + 5, recovery
