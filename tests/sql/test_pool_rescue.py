"""The reaper and a saturated Data API pool (migration 0021, issue 19 item 5).

While every connection of PostgREST's pool is held by users' slow reads, PostgREST refuses
the workers' heartbeats (504 PGRST003 after its acquisition timeout) however often they
retry, so a stale heartbeat says nothing about the worker. The reaper then declares a worker
dead only past dead_worker_horizon + max_rescue_postponement, and goes on doing so for one
horizon after it first sees the pool calm again. Where it cannot read PostgREST's backends
(no pg_read_all_stats, no membership in authenticator) it does not postpone anything.

The pool is saturated for real here: POOL + 2 concurrent reads of a few seconds through the
gateway with a signed-in user's token, by a function created in the test database only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from supaworker import rpc
from supaworker_local import stack as dev_stack
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Svc, job_row, make_documents, sql_enqueue, worker_row
from tests.sql.test_rescue import cron_reaper_paused

pytestmark = pytest.mark.stack

POOL = int(dev_stack.postgrest_env(StackConfig(state_dir="/nonexistent"))["PGRST_DB_POOL"])
HORIZON = 3.0
READ_SECONDS = 5.0


@pytest.fixture()
def pool_settings(admin_db: Admin) -> Iterator[None]:
    """A short horizon and a clean record of the pool, put back afterwards (the record too:
    a saturation left on record would postpone other tests' rescues for a horizon)."""
    saved = admin_db.execute(
        "select dead_worker_horizon, max_rescue_postponement from public.queue_settings"
    ).fetchone()
    assert saved is not None
    admin_db.execute(
        "update public.queue_settings set dead_worker_horizon = %s * interval '1 second',"
        " pool_saturated_at = null, pool_calm_since = null",
        (HORIZON,),
    )
    try:
        with cron_reaper_paused(admin_db):
            yield
    finally:
        admin_db.execute(
            "update public.queue_settings set dead_worker_horizon = %s,"
            " max_rescue_postponement = %s, pool_saturated_at = null, pool_calm_since = null",
            saved,
        )


@pytest.fixture()
def slow_read(stack: StackConfig, admin_db: Admin, make_user: Callable[..., StackUser]) -> Any:
    """Start n users' reads that each hold a pool connection for READ_SECONDS."""
    admin_db.execute(
        "create or replace function public.test_slow_read(seconds double precision)"
        " returns integer language sql security invoker set search_path = ''"
        " as $$ select 1 from pg_catalog.pg_sleep(seconds) $$"
    )
    admin_db.execute("revoke all on function public.test_slow_read from public, anon")
    admin_db.execute("grant execute on function public.test_slow_read to authenticated")
    admin_db.execute("notify pgrst, 'reload schema'")
    user = make_user()
    url = f"{stack.api_url}/rest/v1/rpc/test_slow_read"
    headers = {"apikey": stack.anon_key, "Authorization": f"Bearer {user.token}"}
    deadline = time.monotonic() + 30
    while httpx.post(url, json={"seconds": 0}, headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "PostgREST never saw test_slow_read"
        time.sleep(0.2)
    threads: list[threading.Thread] = []

    def start(n: int) -> list[threading.Thread]:
        def read() -> None:
            with httpx.Client(timeout=60) as http:
                http.post(url, json={"seconds": READ_SECONDS}, headers=headers)

        started = [threading.Thread(target=read, daemon=True) for _ in range(n)]
        for t in started:
            t.start()
        threads.extend(started)
        return started

    yield start
    for t in threads:
        t.join(60)
    # A leftover user-callable function would be an exposed function of the schema
    # (tests/security/test_attack_surface.py lists every one).
    admin_db.execute("drop function if exists public.test_slow_read")
    admin_db.execute("notify pgrst, 'reload schema'")
    admin_db.execute("drop function if exists public.test_slow_read")
    admin_db.execute("notify pgrst, 'reload schema'")


def wait_until_saturated(admin_db: Admin) -> None:
    """Every pooled PostgREST connection runs a slow read."""
    deadline = time.monotonic() + 10
    while True:
        row = admin_db.execute(
            "select count(*) from pg_stat_activity where usename = 'authenticator'"
            " and state = 'active' and query like '%%test_slow_read%%'"
        ).fetchone()
        if row is not None and int(str(row[0])) >= POOL:
            time.sleep(0.3)  # a pool whose reads all began just now is busy, not stuck yet
            return
        assert time.monotonic() < deadline, "the pool never filled"
        time.sleep(0.05)


def reap(admin_db: Admin) -> None:
    """reap_stale_jobs over the database's own socket, as pg_cron runs it. Its count is not
    this test's to check: other tests' stale jobs on the shared stack are rescued too; the
    rows say what happened to this test's own."""
    admin_db.execute("select public.reap_stale_jobs()")


def pool_record(admin_db: Admin) -> tuple[Any, Any]:
    row = admin_db.execute(
        "select pool_saturated_at, pool_calm_since from public.queue_settings"
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def running_job(
    admin_db: Admin, svc: Svc, user: StackUser, queue: str, worker: str, heartbeat_age: float
) -> str:
    """A worker holding one running job, whose last heartbeat is `heartbeat_age` s old."""
    (doc,) = make_documents(admin_db, user, 1)
    (job_id,) = sql_enqueue(admin_db, [doc], queue, max_attempts=3)
    svc.register(worker, slots=1, queues=[queue])
    (job,) = svc.claim(worker)
    assert svc.start(job, worker)
    admin_db.execute(
        "update public.vps_workers set last_heartbeat = now() - %s * interval '1 second'"
        " where worker_id = %s",
        (heartbeat_age, worker),
    )
    return str(job_id)


def test_a_saturated_pool_postpones_declaring_workers_dead(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    pool_settings: None,
    slow_read: Callable[[int], list[threading.Thread]],
) -> None:
    user = make_user()
    queue = unique("pool-rescue")
    starved, ancient = unique("w-starved"), unique("w-ancient")
    # Stale for the horizon (3 s), not for horizon + max_rescue_postponement (5 min) ...
    starved_job = running_job(admin_db, svc, user, queue, starved, 3 * HORIZON)
    # ... and stale beyond both: the bound holds even while the pool is saturated.
    ancient_job = running_job(admin_db, svc, user, unique("pool-old"), ancient, 3600)

    readers = slow_read(POOL + 2)
    wait_until_saturated(admin_db)
    reap(admin_db)  # the ancient one only
    assert job_row(admin_db, ancient_job)["status"] == "pending"
    assert (job_row(admin_db, starved_job)["status"], worker_row(admin_db, starved)["status"]) == (
        "processing",
        "active",
    )
    saturated_at, calm_since = pool_record(admin_db)
    assert saturated_at is not None and calm_since is None

    # Where the reaper cannot read PostgREST's backends it cannot tell, and postpones
    # nothing: the rule before 0021. (Rolled back: the grant and the rescue.)
    with admin_db.transaction():
        admin_db.execute("revoke pg_monitor from postgres")
        admin_db.execute("set local role postgres")
        seen = admin_db.execute("select supaworker_private.data_api_pool_saturated()").fetchone()
        admin_db.execute("reset role")
        assert seen == (None,)
        reap(admin_db)
        assert job_row(admin_db, starved_job)["status"] == "pending"
        raise psycopg.Rollback()
    assert job_row(admin_db, starved_job)["status"] == "processing"

    for t in readers:
        t.join(30)
    # Calm again: the first pass sees it and still postpones, for one horizon ...
    reap(admin_db)
    assert pool_record(admin_db)[1] is not None
    assert job_row(admin_db, starved_job)["status"] == "processing"
    time.sleep(HORIZON + 0.5)
    # ... then a worker still silent is dead, as without the pool.
    reap(admin_db)
    row = job_row(admin_db, starved_job)
    assert (row["status"], row["error_message"]) == (
        "pending",
        f"worker {starved} stopped heartbeating",
    )
    assert worker_row(admin_db, starved)["status"] == "offline"


def test_a_calm_pool_or_no_postponement_rescues_at_the_horizon(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    pool_settings: None,
    slow_read: Callable[[int], list[threading.Thread]],
) -> None:
    user = make_user()
    calm = unique("w-dead-calm")
    calm_job = running_job(admin_db, svc, user, unique("pool-calm"), calm, 3 * HORIZON)
    # Nothing saturated on record: a worker silent for the horizon is dead at once.
    reap(admin_db)
    assert job_row(admin_db, calm_job)["status"] == "pending"
    assert pool_record(admin_db) == (None, None)

    # max_rescue_postponement 0 turns the rule off, even while the pool is saturated.
    admin_db.execute("update public.queue_settings set max_rescue_postponement = interval '0'")
    off = unique("w-dead-off")
    off_job = running_job(admin_db, svc, user, unique("pool-off"), off, 3 * HORIZON)
    slow_read(POOL + 2)
    wait_until_saturated(admin_db)
    reap(admin_db)
    assert job_row(admin_db, off_job)["status"] == "pending"
    assert svc.call(rpc.queue_stats())["workers"]["offline"] >= 2


def test_a_claimer_starved_of_its_own_heartbeats_postpones_rescues(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    pool_settings: None,
) -> None:
    """Migration 0024. A saturation no pass saw leaves no record; the first claim after it
    comes from a live worker whose own beats were starved too, and must not rescue the jobs of
    the others, whose beats are still queued behind it. A claimer with a fresh beat is no such
    evidence: a silent worker is dead at the horizon as before."""
    user = make_user()
    queue = unique("pool-starved")
    silent = unique("w-silent")
    silent_job = running_job(admin_db, svc, user, queue, silent, 3 * HORIZON)
    claimer = unique("w-claimer")
    svc.register(claimer, slots=1, queues=[unique("pool-nothing")])

    def claim_with_beat_age(seconds: float) -> None:
        admin_db.execute(
            "update public.vps_workers set last_heartbeat = now() - %s * interval '1 second'"
            " where worker_id = %s",
            (seconds, claimer),
        )
        # claim_next_job runs the reaper at most once per rescue_interval: make it due.
        admin_db.execute("update public.queue_settings set last_rescue_at = null")
        assert svc.claim(claimer) == []

    claim_with_beat_age(HORIZON)  # older than half the horizon: starved, and alive
    assert job_row(admin_db, silent_job)["status"] == "processing"
    assert worker_row(admin_db, silent)["status"] == "active"
    assert pool_record(admin_db)[0] is not None  # on record as a saturation seen now

    admin_db.execute(
        "update public.queue_settings set pool_saturated_at = null, pool_calm_since = null"
    )
    claim_with_beat_age(0)  # a claimer whose beats get through
    row = job_row(admin_db, silent_job)
    assert (row["status"], row["error_message"]) == (
        "pending",
        f"worker {silent} stopped heartbeating",
    )
