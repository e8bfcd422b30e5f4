"""Issue 7: several `supaworker run` processes over many jobs while the suite breaks things.

SIGKILLs workers at random moments (restarting some under the same id, some under a new
one), stops and restarts PostgREST, pauses and resumes a worker, cancels jobs. Then checks:
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
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

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
def fast_rescue(admin_db: Db) -> Iterator[None]:
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
    admin_db.execute(
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


def test_workers_killed_and_services_restarted_lose_nothing(
    stack: StackConfig,
    admin_db: Db,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tmp_path: Path,
    fast_rescue: None,
) -> None:
    rng = random.Random(int(os.environ.get("SUPAWORKER_CHAOS_SEED", "7")))
    queue = unique("chaos")
    record = tmp_path / "executions.txt"
    env = {"SUPAWORKER_TEST_RECORD": str(record)}
    args = ("--queue", queue, "--concurrency", "4", "--shutdown-timeout", "5")

    def spawn(worker_id: str | None = None) -> WorkerProcess:
        return start_worker(*args, worker_id=worker_id, env=env)

    workers = [spawn() for _ in range(3)]
    job_ids = _enqueue_many(admin_db, make_user(), queue, JOBS)
    kills: list[tuple[str, datetime]] = []  # worker id, when (database clock)
    restarted_same_id: set[str] = set()
    cancelled: list[uuid.UUID] = []
    postgrest_restarts = 0
    began = time.monotonic()
    step = 0
    while time.monotonic() - began < SECONDS:
        time.sleep(rng.uniform(1.0, 2.5))
        step += 1
        victim = rng.choice([w for w in workers if w.proc.poll() is None])
        now = admin_db.execute("select now()").fetchone()
        assert now is not None and isinstance(now[0], datetime)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        kills.append((victim.worker_id, now[0]))
        workers.remove(victim)
        if rng.random() < 0.4:  # same id: register_worker counts its old jobs as failed
            restarted_same_id.add(victim.worker_id)
            workers.append(spawn(victim.worker_id))
        else:
            workers.append(spawn())
        if step == 3:
            dev_stack.stop_postgrest(stack)
            time.sleep(1.5)
            dev_stack.start_postgrest(stack)
            postgrest_restarts += 1
        if step == 4:
            paused = workers[0].worker_id
            admin_db.execute("select public.set_worker_status(%s, 'paused')", (paused,))
            time.sleep(1.0)
            admin_db.execute("select public.set_worker_status(%s, 'active')", (paused,))
        if step == 5:
            for job_id in rng.sample(job_ids, 10):
                admin_db.execute("select public.cancel_job(%s)", (job_id,))
                cancelled.append(job_id)

    wait_for(
        lambda: (
            sum(_statuses(admin_db, queue)[s] for s in ("completed", "failed", "cancelled")) == JOBS
        ),
        180,
        "every job to reach a terminal state",
    )
    for worker in workers:
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
    assert {uuid.UUID(str(r[0])) for r in cancelled_rows} <= set(cancelled)
    # Never completed twice: one 'completed' event per completed job.
    doubles = admin_db.execute(
        "select e.job_id from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s and e.event = 'completed'"
        " group by e.job_id having count(*) > 1",
        (queue,),
    ).fetchall()
    assert doubles == []
    # Re-executions only for jobs whose attempt was cut short by a killed worker.
    executions = Counter(line.split()[0] for line in record.read_text().splitlines() if line)
    rerun = {job for job, n in executions.items() if n > 1}
    rescued = {
        str(r[0])
        for r in admin_db.execute(
            "select distinct e.job_id from public.job_events e join public.processing_queue q"
            " on q.id = e.job_id where q.queue = %s and e.event = 'retry_scheduled'"
            " and (e.message like '%%stopped heartbeating%%'"
            "      or e.message like '%%restarted while%%')",
            (queue,),
        ).fetchall()
    }
    assert rerun <= rescued, rerun - rescued
    # Dead workers are offline; current_jobs agrees with the rows again.
    killed_for_good = {w for w, _ in kills} - restarted_same_id
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
    # Recovery: from a kill to its jobs being claimable again (rescued), and to being claimed
    # again (which also includes waiting behind the backlog: a rescued job's run_at is now).
    # Each rescue is attributed to the latest kill of its worker id before it.
    rescues = admin_db.execute(
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
    figures = {
        "jobs": JOBS,
        "seconds_of_chaos": SECONDS,
        "sigkills": len(kills),
        "restarted_under_same_id": len(restarted_same_id),
        "postgrest_restarts": postgrest_restarts,
        "cancel_requests": len(cancelled),
        "final_statuses": dict(statuses),
        "lost": 0,
        "completed_twice": 0,
        "executions": sum(executions.values()),
        "jobs_run_more_than_once": len(rerun),
        "rescued_jobs": len(rescued),
        "dead_worker_horizon_s": HORIZON,
        "recovery_s_median": round(statistics.median(recovery), 2) if recovery else None,
        "recovery_s_max": round(max(recovery), 2) if recovery else None,
        "kill_to_rerun_s_median": round(statistics.median(rerun_after), 2) if rerun_after else None,
    }
    print("chaos figures:", json.dumps(figures))
    (Path(stack.state_dir) / "chaos-figures.json").write_text(json.dumps(figures, indent=2))
    assert kills, "the run must actually kill workers"
    if recovery:
        # Dead after the horizon, rescued by the next opportunistic reap (at most once a
        # second, inside a claim) or the restarted worker's registration.
        assert max(recovery) < HORIZON * 2 + 3, recovery
