"""The shared PostgREST pool under users' load, and PostgREST's backends killed (issue 19,
item 5 and the chaos list): how far users' concurrent slow reads push a worker's heartbeat
latency and the pickup of queued jobs, and how long a kill of every PostgREST backend holds
the workers up.

Users' reads are `chaos_slow_read(seconds)`, a function created in the test database by
this file (never in the migrations) that holds a pool connection for `seconds`, called
through the gateway with a signed-in user's token, as a slow dashboard query would be.

Sizes: SUPAWORKER_POOL_READERS (concurrent readers per step, "0,5,10,20,40"),
SUPAWORKER_POOL_READ_SECONDS (2), SUPAWORKER_POOL_STEP_SECONDS (8), SUPAWORKER_FAULT_RATE
(offered jobs per second, 10), SUPAWORKER_FAULT_KILLS (backend kills, 3); the saturated pool:
SUPAWORKER_POOL_SATURATE (readers, 6 x db-pool), SUPAWORKER_POOL_SATURATE_SECONDS (20),
SUPAWORKER_POOL_SATURATE_HORIZON (dead_worker_horizon meanwhile, 6 s). The figures are
printed and appended to <state dir>/chaos-runs.jsonl; docs/reliability.md quotes them.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from supaworker_local import stack as dev_stack
from supaworker_local.config import StackConfig
from tests.chaos.harness import Db, db_now
from tests.chaos.load import (
    Probe,
    Producer,
    Readers,
    completed_between,
    ms,
    pickups,
    record,
    unfinished,
)
from tests.chaos.settings import fast_rescue
from tests.conftest import StackUser
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

READERS = [int(n) for n in os.environ.get("SUPAWORKER_POOL_READERS", "0,5,10,20,40").split(",")]
READ_SECONDS = float(os.environ.get("SUPAWORKER_POOL_READ_SECONDS", "2"))
STEP_SECONDS = float(os.environ.get("SUPAWORKER_POOL_STEP_SECONDS", "8"))
RATE = float(os.environ.get("SUPAWORKER_FAULT_RATE", "10"))
KILLS = int(os.environ.get("SUPAWORKER_FAULT_KILLS", "3"))
POOL = int(dev_stack.postgrest_env(StackConfig(state_dir="/nonexistent"))["PGRST_DB_POOL"])
SATURATE = int(os.environ.get("SUPAWORKER_POOL_SATURATE", str(6 * POOL)))
SATURATE_SECONDS = float(os.environ.get("SUPAWORKER_POOL_SATURATE_SECONDS", "20"))
SATURATE_HORIZON = float(os.environ.get("SUPAWORKER_POOL_SATURATE_HORIZON", "6"))


def _latency(calls: list[tuple[float, float, str]]) -> dict[str, Any]:
    ok = [lat for _, lat, outcome in calls if outcome == "ok"]
    return {
        **ms(ok),
        "failed": dict(Counter(o for _, _, o in calls if o != "ok")),
    }


def _heartbeat_age(db: Db, ids: list[str]) -> float:
    row = db.execute(
        "select coalesce(max(extract(epoch from clock_timestamp() - last_heartbeat)), 0)"
        " from public.vps_workers where worker_id = any(%s)",
        (ids,),
    ).fetchone()
    assert row is not None
    return float(str(row[0]))


def _rescued_from(db: Db, ids: list[str], since: datetime) -> int:
    row = db.execute(
        "select count(*) from public.job_events where worker_id = any(%s) and created_at >= %s"
        " and event in ('retry_scheduled', 'failed') and message like '%%stopped heartbeating'",
        (ids, since),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def _fleet(start_worker: Callable[..., WorkerProcess], queue: str) -> list[WorkerProcess]:
    workers = [start_worker("--queue", queue, "--concurrency", "4") for _ in range(2)]
    for w in workers:
        w.wait_for_log('"action": "worker_registered"', timeout=30)
    return workers


@pytest.mark.timeout(600)
def test_users_reads_through_the_shared_pool(
    stack: StackConfig,
    admin_db: Db,
    slow_read: str,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
) -> None:
    queue, user = unique("pool"), make_user()
    _wait_readable(slow_read, stack, user)
    workers = _fleet(start_worker, queue)
    ids = [w.worker_id for w in workers]
    began = db_now(admin_db)
    steps: list[dict[str, Any]] = []
    with (
        Producer(stack, user.id, queue, RATE, 0.05) as producer,
        Probe(stack, unique("probe")) as probe,
    ):
        time.sleep(2.0)  # the fleet settles on the load
        for n in [*READERS, 0]:  # the last step: readers gone, recovery
            ages: list[float] = []
            with Readers(slow_read, stack, user, n, READ_SECONDS) as readers:
                t0, since = time.monotonic(), db_now(admin_db)
                while time.monotonic() - t0 < STEP_SECONDS:
                    ages.append(_heartbeat_age(admin_db, ids))
                    time.sleep(0.2)
                t1, until = time.monotonic(), db_now(admin_db)
            steps.append(
                {
                    "readers": n,
                    "heartbeat_rpc": _latency(probe.between(t0, t1)),
                    "worker_heartbeat_age_max_s": round(max(ages), 2),
                    "pickup": ms(pickups(admin_db, queue, since, until)),
                    "completed_per_s": round(
                        completed_between(admin_db, queue, since, until) / (t1 - t0), 1
                    ),
                    "reads": dict(readers.outcomes),
                }
            )
        assert producer.errors == []
    wait_for(lambda: unfinished(admin_db, queue) == 0, 120, "every job to finish")
    horizon = admin_db.execute(
        "select extract(epoch from dead_worker_horizon) from public.queue_settings"
    ).fetchone()
    figures = {
        "postgrest_db_pool": POOL,
        "read_seconds": READ_SECONDS,
        "offered_jobs_per_s": RATE,
        "enqueued": producer.enqueued,
        "dead_worker_horizon_s": float(str(horizon[0])) if horizon else None,
        "live_workers_declared_dead": _rescued_from(admin_db, ids, began),
        "steps": steps,
    }
    record(stack, "pool", figures)
    for w in workers:
        assert w.stop() == 0, w.output()[-2000:]
    # The pressure was real: with twice the pool in slow readers, the heartbeat waited.
    worst = max(steps, key=lambda s: s["readers"])
    if worst["readers"] >= 2 * POOL:
        slowest = worst["heartbeat_rpc"]["median_ms"]  # None: no heartbeat got through
        assert slowest is None or slowest > 5 * steps[0]["heartbeat_rpc"]["median_ms"], steps
    # Nothing lost, and no live worker was taken for dead while users read.
    assert figures["live_workers_declared_dead"] == 0, figures


def _wait_readable(slow_read: str, stack: StackConfig, user: StackUser) -> None:
    headers = Readers(slow_read, stack, user, 0, READ_SECONDS).headers
    wait_for(
        lambda: httpx.post(slow_read, json={"seconds": 0}, headers=headers).status_code == 200,
        30,
        "PostgREST to see chaos_slow_read",
    )


def _rescues_of(db: Db, worker_id: str) -> list[datetime]:
    rows = db.execute(
        "select created_at from public.job_events where worker_id = %s"
        " and event in ('retry_scheduled', 'failed') and message like '%%stopped heartbeating'"
        " order by created_at",
        (worker_id,),
    ).fetchall()
    return [r[0] for r in rows if isinstance(r[0], datetime)]


@pytest.mark.timeout(600)
def test_a_saturated_pool_is_not_taken_for_dead_workers(
    stack: StackConfig,
    admin_db: Db,
    slow_read: str,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
) -> None:
    """SATURATE users' slow reads (several times the pool: PostgREST refuses nearly every
    request with 504 PGRST003) for longer than a short dead_worker_horizon, while two live
    workers serve the queue and a third, SIGKILLed just before with two long jobs in hand,
    is really dead. The live workers' heartbeats do starve past the horizon; none of them
    may be declared dead, and the dead one's jobs must still be rescued once the pool is
    calm again (issue 19 item 5)."""
    queue, other, user = unique("sat"), unique("sat-dead"), make_user()
    _wait_readable(slow_read, stack, user)
    with fast_rescue(stack, horizon=SATURATE_HORIZON, rescue_interval=1.0):
        workers = _fleet(start_worker, queue)
        ids = [w.worker_id for w in workers]
        victim = start_worker("--queue", other, "--concurrency", "2")
        victim.wait_for_log('"action": "worker_registered"', timeout=30)
        admin_db.execute(
            "with d as (insert into public.user_documents (user_id, name, content)"
            " select %s, 'long', 'x' from generate_series(1, 2) returning id)"
            " select count(public.enqueue_job(d.id, 0, jsonb_build_object('mode', 'sleep',"
            " 'seconds', 120), %s, 10)) from d",
            (user.id, other),
        )
        wait_for(
            lambda: (
                admin_db.execute(
                    "select count(*) from public.processing_queue where queue = %s"
                    " and status = 'processing'",
                    (other,),
                ).fetchone()
                == (2,)
            ),
            30,
            "the victim to run its two jobs",
        )
        began = db_now(admin_db)
        ages: list[tuple[float, float]] = []  # (seconds since the readers began, age)
        with (
            Producer(stack, user.id, queue, RATE, 0.05) as producer,
            Probe(stack, unique("probe")) as probe,
        ):
            time.sleep(2.0)
            victim.stop(signal.SIGKILL)
            killed_at = db_now(admin_db)
            t0 = time.monotonic()
            with Readers(slow_read, stack, user, SATURATE, READ_SECONDS) as readers:
                while time.monotonic() - t0 < SATURATE_SECONDS:
                    ages.append((time.monotonic() - t0, _heartbeat_age(admin_db, ids)))
                    time.sleep(0.2)
            t1, calm_at = time.monotonic(), db_now(admin_db)
            # The pool is calm again: watch the live workers' heartbeats come back and the
            # dead one's jobs be rescued (a horizon of calm, then the next reaper pass).
            while time.monotonic() - t1 < 3 * SATURATE_HORIZON + 6:
                ages.append((time.monotonic() - t0, _heartbeat_age(admin_db, ids)))
                time.sleep(0.2)
            assert producer.errors == []
        wait_for(lambda: unfinished(admin_db, queue) == 0, 120, "every job to finish")
        wait_for(lambda: len(_rescues_of(admin_db, victim.worker_id)) == 2, 60, "the rescue")
        rescues = _rescues_of(admin_db, victim.worker_id)
        admin_db.execute(
            "select public.cancel_job(id) from public.processing_queue where queue = %s", (other,)
        )
        during = [a for t, a in ages if t < SATURATE_SECONDS]
        starved = round(max(during), 2)
        figures = {
            "postgrest_db_pool": POOL,
            "readers": SATURATE,
            "read_seconds": READ_SECONDS,
            "saturated_seconds": SATURATE_SECONDS,
            "dead_worker_horizon_s": SATURATE_HORIZON,
            "reads": dict(readers.outcomes),
            "heartbeat_rpc_saturated": _latency(probe.between(t0, t1)),
            "worker_heartbeat_age_max_s": starved,
            "worker_heartbeat_age_max_after_s": round(max(a for t, a in ages if t >= t1 - t0), 2),
            "live_workers_declared_dead": _rescued_from(admin_db, ids, began),
            "dead_worker_rescued_after_kill_s": [
                round((r - killed_at).total_seconds(), 1) for r in rescues
            ],
            "dead_worker_rescued_after_calm_s": [
                round((r - calm_at).total_seconds(), 1) for r in rescues
            ],
        }
        record(stack, "pool_saturated", figures)
        for w in workers:
            assert w.stop() == 0, w.output()[-2000:]
    # The starvation was real: the live workers' heartbeats were older than the horizon.
    assert starved > SATURATE_HORIZON, figures
    # ... and yet no live worker was declared dead; the dead one was.
    assert figures["live_workers_declared_dead"] == 0, figures
    assert len(rescues) == 2, figures


def _authenticator_backends(db: Db) -> list[int]:
    rows = db.execute(
        "select pid from pg_stat_activity where usename = 'authenticator'"
        " and pid <> pg_backend_pid()"
    ).fetchall()
    return [int(str(r[0])) for r in rows]


@pytest.mark.timeout(600)
def test_postgrest_backends_killed_mid_run(
    stack: StackConfig,
    admin_db: Db,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
) -> None:
    queue, user = unique("kill"), make_user()
    workers = _fleet(start_worker, queue)
    ids = [w.worker_id for w in workers]
    began = db_now(admin_db)
    kills: list[dict[str, Any]] = []
    with (
        Producer(stack, user.id, queue, RATE, 0.05) as producer,
        Probe(stack, unique("probe"), every=0.1) as probe,
    ):
        time.sleep(3.0)
        calm_since, calm_t = db_now(admin_db), time.monotonic()
        time.sleep(5.0)
        calm = {
            "pickup": ms(pickups(admin_db, queue, calm_since, db_now(admin_db))),
            "heartbeat_rpc": _latency(probe.between(calm_t, time.monotonic())),
        }
        for _ in range(KILLS):
            pids = _authenticator_backends(admin_db)
            at, t0 = db_now(admin_db), time.monotonic()
            admin_db.execute("select pg_terminate_backend(p) from unnest(%s::int[]) p", (pids,))
            time.sleep(8.0)
            after = probe.between(t0, time.monotonic())
            first_ok = next((t for t, _, o in after if o == "ok"), None)
            kills.append(
                {
                    "backends_killed": len(pids),
                    "probe_failures": dict(Counter(o for _, _, o in after if o != "ok")),
                    "first_ok_rpc_after_s": None if first_ok is None else round(first_ok - t0, 2),
                    "pickup_of_jobs_queued_in_5s_after": ms(
                        pickups(admin_db, queue, at, at + timedelta(seconds=5))
                    ),
                }
            )
        assert producer.errors == []
    wait_for(lambda: unfinished(admin_db, queue) == 0, 120, "every job to finish")
    figures = {
        "offered_jobs_per_s": RATE,
        "enqueued": producer.enqueued,
        "calm": calm,
        "kills": kills,
        "live_workers_declared_dead": _rescued_from(admin_db, ids, began),
    }
    record(stack, "backend_kills", figures)
    for w in workers:
        assert w.stop() == 0, w.output()[-2000:]
    assert all(k["backends_killed"] > 0 for k in kills)
    assert all(k["first_ok_rpc_after_s"] is not None for k in kills), kills
    assert figures["live_workers_declared_dead"] == 0, figures
