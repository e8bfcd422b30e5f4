"""Issue 7: several `supaworker run` processes over many short jobs while the suite breaks
things, then proof that nothing was lost, nothing completed twice, and every extra execution
has a cause.

Damage (tests/chaos/harness.py): a worker SIGKILLed every 1.5-3 s at a random moment (40 %
restarted under the same id, the rest replaced by a new id), PostgREST stopped for 2 s,
PostgreSQL restarted, the gateway with the Realtime endpoint restarted, one worker paused by
an operator for 4 s, one worker frozen with SIGSTOP for the horizon + 3 s (alive but silent:
a VM stall or a long GC pause), running jobs cancelled, finished documents re-enqueued; each
kind at least once, and round after round while more than 500 jobs are left.

Sizes: SUPAWORKER_CHAOS_JOBS (default 2000), SUPAWORKER_CHAOS_WORKERS (4, concurrency 4
each), SUPAWORKER_CHAOS_SECONDS (most seconds of damage, 150), SUPAWORKER_CHAOS_HORIZON
(dead_worker_horizon during the run, 5 s), SUPAWORKER_CHAOS_SEED. The figures are printed
and appended to <state dir>/chaos-runs.jsonl; docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supaworker_local.config import StackConfig
from tests.chaos.analysis import (
    account,
    attempt_endings,
    completions_per_cycle,
    read_executions,
    requeue_boundaries,
    rescues,
    summary,
)
from tests.chaos.harness import TERMINAL, Chaos, Db, Worker, db_now, free_port
from tests.chaos.settings import fast_rescue
from tests.conftest import StackUser
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

JOBS = int(os.environ.get("SUPAWORKER_CHAOS_JOBS", "2000"))
WORKERS = int(os.environ.get("SUPAWORKER_CHAOS_WORKERS", "4"))
MAX_SECONDS = float(os.environ.get("SUPAWORKER_CHAOS_SECONDS", "150"))
HORIZON = float(os.environ.get("SUPAWORKER_CHAOS_HORIZON", "5"))
SEED = int(os.environ.get("SUPAWORKER_CHAOS_SEED", str(random.randrange(10**6))))
RESCUE_INTERVAL = 1.0


@pytest.fixture()
def short_horizon(stack: StackConfig) -> Iterator[None]:
    with fast_rescue(stack, HORIZON, RESCUE_INTERVAL):
        yield


def _enqueue_batch(db: Db, user: StackUser, queue: str, n: int) -> list[uuid.UUID]:
    """Documents and short jobs in bulk, through enqueue_job itself (a trusted SQL caller)."""
    rows = db.execute(
        """
        with docs as (
          insert into public.user_documents (user_id, name, content)
          select %s, 'chaos-' || g, 'x' from generate_series(1, %s) g returning id
        )
        select (public.enqueue_job(d.id, 0,
                  jsonb_build_object('mode', 'sleep', 'seconds', 0.02 + random() * 0.18),
                  %s, 10)).id
        from docs d
        """,
        (user.id, n, queue),
    ).fetchall()
    return [uuid.UUID(str(r[0])) for r in rows]


def _statuses(db: Db, queue: str) -> dict[str, int]:
    rows = db.execute(
        "select status, count(*) from public.processing_queue where queue = %s group by 1",
        (queue,),
    ).fetchall()
    return {str(s): int(str(n)) for s, n in rows}


def _worker_statuses(db: Db, ids: list[str]) -> dict[str, str]:
    rows = db.execute(
        "select worker_id, status from public.vps_workers where worker_id = any(%s)", (ids,)
    ).fetchall()
    return {str(w): str(s) for w, s in rows}


@pytest.mark.timeout(900)
def test_workers_killed_frozen_and_services_restarted_lose_nothing(
    stack: StackConfig,
    admin_db: Db,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tmp_path: Path,
    short_horizon: None,
) -> None:
    queue = unique("chaos")
    record = tmp_path / "executions.txt"
    env = {"SUPAWORKER_TEST_RECORD": str(record)}

    def spawn(worker_id: str | None) -> Worker:
        port = free_port()
        process = start_worker(
            "--queue",
            queue,
            "--concurrency",
            "4",
            "--shutdown-timeout",
            "5",
            "--http-port",
            str(port),
            worker_id=worker_id,
            env=env,
        )
        return Worker(process, port)

    user = make_user()
    chaos = Chaos(stack, admin_db, queue, user.id, spawn, random.Random(SEED), HORIZON)
    for _ in range(WORKERS):
        chaos.start()
    began = time.monotonic()
    assert len(_enqueue_batch(admin_db, user, queue, JOBS)) == JOBS

    chaos.run(MAX_SECONDS, kill_every=(1.5, 3.0))
    db = chaos.db  # PostgreSQL was restarted: the fixture's connection is gone
    total = JOBS + len(chaos.long_jobs)
    wait_for(
        lambda: sum(_statuses(db, queue).get(s, 0) for s in TERMINAL) == total,
        300,
        "every job to reach a terminal state",
    )
    drained_s = time.monotonic() - began

    # Dead workers are marked offline by the reaper, live ones stay active. The reaper runs
    # inside claims, which an idle queue makes rare (Realtime-connected workers poll every
    # 30 s), and from pg_cron every minute; run it once here instead of waiting for either.
    last_act = max([k.at for k in chaos.kills] + [f[2] for f in chaos.freezes if f[2]])
    while (db_now(db) - last_act).total_seconds() < HORIZON + 0.5:
        time.sleep(0.2)
    offline_before_manual_reap = _worker_statuses(db, [k.worker_id for k in chaos.kills])
    db.execute("select public.reap_stale_jobs()")
    for worker in chaos.workers:
        # A worker spawned moments ago may still be importing (no signal handlers yet).
        worker.process.wait_for_log('"action": "worker_registered"', timeout=30)
    live = [w.id for w in chaos.workers]
    killed_for_good = {k.worker_id for k in chaos.kills} - set(live)
    statuses_now = _worker_statuses(db, [*killed_for_good, *live])
    # (A worker killed while still importing never registered and has no row.)
    assert {statuses_now.get(w, "offline") for w in killed_for_good} == {"offline"}, statuses_now
    assert {statuses_now[w] for w in live} == {"active"}, statuses_now
    chaos.check_current_jobs()

    for worker in chaos.workers:
        assert worker.process.stop() == 0, worker.process.output()[-2000:]
    assert set(_worker_statuses(db, list(chaos.ever)).values()) == {"offline"}
    chaos.check_current_jobs()

    # -- none lost, none failed, only the cancels we asked for --------------------------------
    statuses = _statuses(db, queue)
    assert sum(statuses.values()) == total
    assert statuses.get("failed", 0) == 0, statuses  # 10 attempts each: none may run out
    cancelled = {
        uuid.UUID(str(r[0]))
        for r in db.execute(
            "select id from public.processing_queue where queue = %s and status = 'cancelled'",
            (queue,),
        ).fetchall()
    }
    assert cancelled <= set(chaos.cancelled_running) | set(chaos.cancelled_other)
    # A running job whose cancel was requested ends cancelled, even when its worker was
    # killed or frozen meanwhile (the rescue sees the request).
    assert chaos.cancelled_running, "no long job was running when cancelled"
    assert set(chaos.cancelled_running) <= cancelled
    assert set(chaos.long_jobs) <= cancelled  # the pending / assigned ones at once

    # -- never completed twice in one cycle; re-enqueued documents completed in both ---------
    completions = completions_per_cycle(db, queue)
    assert max(completions.values()) == 1
    assert chaos.requeued
    for job_id in chaos.requeued:
        assert completions[(str(job_id), 0)] == completions[(str(job_id), 1)] == 1

    # -- every execution accounted for --------------------------------------------------------
    executions = read_executions(record)
    accounting = account(
        executions,
        attempt_endings(db, queue),
        requeue_boundaries(db, queue),
        {k.worker_id for k in chaos.kills},
        chaos.freezes,
    )
    # The fencing token at work: no attempt ever started twice.
    assert accounting.attempts_run_twice == []
    # An execution that did not end its job's cycle was cut short by a SIGKILL or a freeze
    # of its worker, and nothing else (no live worker lost a job to a service outage).
    assert accounting.unexplained == [], accounting.unexplained[:10]

    # -- the operator pause was obeyed, the frozen worker's late outcomes were fenced -------
    for paused_id, paused_at, resumed_at in chaos.pauses:
        assert resumed_at is not None
        claims_while_paused = db.execute(
            "select count(*) from public.job_events where worker_id = %s and event = 'assigned'"
            " and created_at > %s + interval '0.2 seconds' and created_at < %s",
            (paused_id, paused_at, resumed_at),
        ).fetchone()
        assert claims_while_paused == (0,), paused_id
    assert all(thawed_at is not None for _, _, thawed_at in chaos.freezes)
    # After SIGCONT the frozen worker found its jobs taken: it stops them or, for those it
    # already finished, its completion is fenced out (job_lost), never written.
    fenced_late = sum(log.count('"action": "job_lost"') for log in chaos.thawed_logs)

    # -- no current_jobs drift, at any of the checks during and after the damage ------------
    assert chaos.current_jobs_mismatches == [], chaos.current_jobs_mismatches[:5]

    # -- recovery against the horizon -----------------------------------------------------------
    outage_windows = [(o.began, o.ended) for o in chaos.outages]
    found = rescues(db, queue, chaos.kills, chaos.freezes, outage_windows, HORIZON)
    by_horizon = [r for r in found if r.how == "horizon"]
    by_restart = [r for r in found if r.how == "restart"]
    assert by_horizon, "some killed worker was not restarted: the reaper must have rescued"
    # Never early: measured from the worker's last accepted heartbeat (the database's own
    # clock), every rescue by the reaper came at least one horizon later.
    silent = [r for r in by_horizon if r.silent_s is not None]
    assert silent, "no rescued worker kept its last heartbeat on record"
    assert min(r.silent_s for r in silent if r.silent_s is not None) >= HORIZON, silent
    # Late only by the rescue interval and the cadence of claims (which run the reaper; an
    # idle Realtime-connected worker claims every 30 s), unless a service was down meanwhile.
    calm = [r.silent_s for r in silent if r.silent_s is not None and not r.silent_during_outage]
    assert all(s <= HORIZON + 35 for s in calm), calm

    # -- no secret in any worker log ---------------------------------------------------------
    for worker in chaos.ever.values():
        assert stack.service_role_key not in worker.process.output()

    figures: dict[str, Any] = {
        "seed": SEED,
        "jobs": JOBS,
        "workers": f"{WORKERS} x concurrency 4",
        "dead_worker_horizon_s": HORIZON,
        "rescue_interval_s": RESCUE_INTERVAL,
        "seconds_until_drained": round(drained_s, 1),
        "throughput_jobs_per_s": round(total / drained_s, 1),
        "sigkills": len(chaos.kills),
        "restarted_under_same_id": sum(k.restarted_same_id for k in chaos.kills),
        "worker_processes": WORKERS + len(chaos.kills),
        "service_restarts": dict(Counter(o.what for o in chaos.outages)),
        "realtime_back_after_gateway_up_s": summary(chaos.realtime_back_s),
        "pause_known_to_worker_after_s": summary(chaos.pause_obeyed_s),
        "claims_while_paused": 0,
        "pauses": len(chaos.pauses),
        "freezes": len(chaos.freezes),
        "frozen_for_s": [round((t - f).total_seconds(), 1) for _, f, t in chaos.freezes if t],
        "late_outcomes_fenced_after_thaw": fenced_late,
        "cancelled_while_running": len(chaos.cancelled_running),
        "cancel_conflicts_retried": chaos.cancel_conflicts,
        "cancel_requests": len(chaos.cancelled_running) + len(chaos.cancelled_other),
        "requeued_documents": len(chaos.requeued),
        "final_statuses": statuses,
        "lost": total - sum(statuses.get(s, 0) for s in TERMINAL),
        "completed_twice_in_a_cycle": sum(1 for n in completions.values() if n > 1),
        "executions": accounting.executions,
        "executions_by_how_the_attempt_ended": dict(accounting.by_outcome),
        "extra_executions": accounting.extra_executions,
        "jobs_run_more_than_once_in_a_cycle": accounting.jobs_run_more_than_once_in_a_cycle,
        "current_jobs_checks": chaos.current_jobs_checks,
        "current_jobs_mismatches": len(chaos.current_jobs_mismatches),
        "killed_workers_offline_before_manual_reap": sum(
            s == "offline" for s in offline_before_manual_reap.values()
        ),
        "rescue_after_kill_restarted_id_s": summary([r.after_s for r in by_restart]),
        "rescue_after_kill_horizon_s": summary([r.after_s for r in by_horizon if not r.frozen]),
        "rescue_after_freeze_s": summary([r.after_s for r in by_horizon if r.frozen]),
        "last_heartbeat_to_rescue_s": summary(
            [r.silent_s for r in silent if r.silent_s is not None]
        ),
        "last_heartbeat_to_rescue_no_outage_s": summary(calm),
        "rescue_during_outage_s": summary([r.after_s for r in found if r.during_outage]),
        "kill_to_claimed_again_s": summary(
            [r.claimed_after_s for r in found if r.claimed_after_s is not None]
        ),
    }
    print("chaos timeline:\n  " + "\n  ".join(chaos.log))
    print("chaos figures:", json.dumps(figures, indent=2))
    with open(Path(stack.state_dir) / "chaos-runs.jsonl", "a") as f:
        f.write(json.dumps(figures) + "\n")
    assert figures["lost"] == 0 and figures["completed_twice_in_a_cycle"] == 0
