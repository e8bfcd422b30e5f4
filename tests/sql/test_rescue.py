"""The reaper: dead workers' jobs are rescued, timed-out jobs too, and a job finished while
the rescue runs is never reset (the guarded update)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from supaworker import rpc
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.sql.conftest import (
    Admin,
    Svc,
    events,
    job_row,
    make_documents,
    make_stale,
    sql_enqueue,
    worker_row,
)

pytestmark = pytest.mark.stack


@contextmanager
def cron_reaper_paused(admin_db: Admin) -> Iterator[None]:
    """Keep pg_cron's every-minute reaper out of a test that asserts a rescue did NOT run."""
    has_cron = admin_db.execute(
        "select exists (select from pg_namespace where nspname = 'cron')"
    ).fetchone()
    if not has_cron or not has_cron[0]:
        yield
        return
    admin_db.execute(
        "update cron.job set active = false where jobname = 'supaworker-reap-stale-jobs'"
    )
    try:
        yield
    finally:
        admin_db.execute(
            "update cron.job set active = true where jobname = 'supaworker-reap-stale-jobs'"
        )


def test_dead_workers_jobs_are_rescued(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("rescue")
    user = make_user()
    d = make_documents(admin_db, user, 5)
    retryable = sql_enqueue(admin_db, d[:2], queue, max_attempts=3)
    (last_try,) = sql_enqueue(admin_db, d[2:3], queue, max_attempts=1)
    (to_cancel,) = sql_enqueue(admin_db, d[3:4], queue, max_attempts=3)
    (other,) = sql_enqueue(admin_db, d[4:5], queue, priority=-1)
    dead, alive = unique("w-dead"), unique("w-alive")
    svc.register(dead, slots=4, queues=[queue])
    jobs = {j["id"]: j for j in svc.claim(dead, 4)}
    assert set(jobs) == {str(i) for i in [*retryable, last_try, to_cancel]}
    assert svc.start(jobs[str(retryable[0])], dead)
    assert svc.start(jobs[str(to_cancel)], dead)
    svc.call(rpc.cancel_job(to_cancel))  # processing: cancel requested
    svc.register(alive, slots=1, queues=[queue])
    (alive_job,) = svc.claim(alive)
    assert alive_job["id"] == str(other)

    make_stale(admin_db, dead)
    assert svc.call(rpc.reap_stale_jobs()) >= 0
    assert worker_row(admin_db, dead)["status"] == "offline"
    assert worker_row(admin_db, dead)["current_jobs"] == 0
    for job_id in retryable:
        row = job_row(admin_db, job_id)
        assert (row["status"], row["retry_count"], row["assigned_to"], row["started_at"]) == (
            "pending",
            1,
            None,
            None,
        )
        assert row["error_message"] == f"worker {dead} stopped heartbeating"
        assert row["run_at"] > row["updated_at"]  # with backoff, like any failed attempt
    final = job_row(admin_db, last_try)
    assert (final["status"], final["error_message"]) == (
        "failed",
        f"worker {dead} stopped heartbeating",
    )
    assert job_row(admin_db, to_cancel)["status"] == "cancelled"
    # The live worker's job is untouched.
    kept = job_row(admin_db, other)
    assert (kept["status"], kept["assigned_to"], kept["retry_count"]) == ("assigned", alive, 0)
    assert worker_row(admin_db, alive)["status"] == "active"
    assert [e[0] for e in events(admin_db, retryable[0])][-1] == "retry_scheduled"

    # The dead worker comes back: its heartbeat makes it active and tells it what it lost.
    reply = svc.heartbeat(dead, sorted(jobs))
    assert reply["status"] == "active"
    assert reply["lost"] == sorted(jobs)
    assert svc.complete(jobs[str(retryable[0])], dead, {"late": True}) is False


def test_jobs_of_unregistered_workers_and_timed_out_jobs_are_rescued(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("timeout")
    user = make_user()
    d = make_documents(admin_db, user, 3)
    (slow,) = sql_enqueue(admin_db, d[:1], queue, timeout_seconds=5)
    (untimed,) = sql_enqueue(admin_db, d[1:2], queue)
    worker, vanished = unique("w-slow"), unique("w-vanished")
    svc.register(worker, slots=2, queues=[queue])
    jobs = {j["id"]: j for j in svc.claim(worker, 2)}
    for job in jobs.values():
        assert svc.start(job, worker)
    # Both jobs started an hour ago; only the one with a timeout is overdue.
    admin_db.execute(
        "update public.processing_queue set started_at = now() - interval '1 hour'"
        " where queue = %s",
        (queue,),
    )
    (orphan,) = sql_enqueue(admin_db, d[2:3], queue)
    svc.register(vanished, queues=[queue])
    (orphan_job,) = svc.claim(vanished)
    admin_db.execute("delete from public.vps_workers where worker_id = %s", (vanished,))

    svc.call(rpc.reap_stale_jobs())
    row = job_row(admin_db, slow)
    assert (row["status"], row["retry_count"], row["error_message"]) == (
        "pending",
        1,
        f"timed out after 5 s on worker {worker}",
    )
    assert job_row(admin_db, untimed)["status"] == "processing"
    assert worker_row(admin_db, worker)["status"] == "active"  # it is alive, just slow
    assert worker_row(admin_db, worker)["current_jobs"] == 1
    row = job_row(admin_db, orphan)
    assert (row["status"], row["error_message"]) == (
        "pending",
        f"worker {vanished} is not registered",
    )
    assert svc.heartbeat(worker, list(jobs))["lost"] == [str(slow)]
    assert orphan_job["id"] == str(orphan)


def test_claim_runs_the_reaper_at_most_once_per_rescue_interval(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue, other_queue = unique("opportunistic"), unique("elsewhere")
    user = make_user()
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue)
    dead, claimer = unique("w-gone"), unique("w-claimer")
    svc.register(dead, queues=[queue])
    svc.claim(dead)
    make_stale(admin_db, dead)
    svc.register(claimer, queues=[other_queue])

    with cron_reaper_paused(admin_db):
        admin_db.execute("update public.queue_settings set last_rescue_at = now()")
        assert svc.claim(claimer) == []
        assert job_row(admin_db, job_id)["status"] == "assigned"  # interval not over yet

        admin_db.execute(
            "update public.queue_settings"
            " set last_rescue_at = now() - rescue_interval - interval '1 second'"
        )
        assert svc.claim(claimer) == []  # nothing to claim in its own queue ...
    row = job_row(admin_db, job_id)  # ... but it rescued the dead worker's job
    assert (row["status"], row["retry_count"]) == ("pending", 1)
    recent = admin_db.execute(
        "select now() - last_rescue_at < interval '10 seconds' from public.queue_settings"
    ).fetchone()
    assert recent == (True,)


# -- the race: a job finishes while the reaper is rescuing it -------------------------------
def _wait_until_blocked(admin_db: Admin, pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = admin_db.execute(
            "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for a lock")


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # inspected by the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.mark.parametrize("completion", ["complete_job", "direct_update"])
def test_a_job_completed_during_the_rescue_is_not_reset(
    stack: StackConfig,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    completion: str,
) -> None:
    """Connection A completes the job inside an open transaction while the reaper
    (connection B) has already decided, from its snapshot, that the job belongs to a dead
    worker. B must wait for A's row lock and then leave the completed job alone.

    complete_job: the worker's real call; it holds the worker row, so B waits there.
    direct_update: a write that holds only the job row, so B passes the worker lock, selects
    the job as a candidate and is stopped by the guard itself (status/assigned_to/attempt
    re-checked under the row lock)."""
    queue = unique("race")
    user = make_user()
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue)
    worker = unique("w-race")
    svc.register(worker, queues=[queue])
    (job,) = svc.claim(worker)
    assert svc.start(job, worker)

    # pg_cron's minute pass would otherwise rescue the stale worker's job itself if it fell
    # between make_stale and A's completion (A then completes nothing: a failure seen once
    # on a loaded machine).
    with (
        cron_reaper_paused(admin_db),
        psycopg.connect(stack.admin_db_url) as conn_a,
        psycopg.connect(stack.admin_db_url, autocommit=True) as conn_b,
    ):
        make_stale(admin_db, worker)
        if completion == "complete_job":
            done = conn_a.execute(
                'select public.complete_job(%s, %s, %s, \'{"by": "A"}\')',
                (job["id"], worker, job["attempt"]),
            ).fetchone()
            assert done == (True,)
        else:
            conn_a.execute(
                "update public.processing_queue set status = 'completed',"
                ' result = \'{"by": "A"}\', completed_at = now() where id = %s',
                (job["id"],),
            )
        reaper, result = _in_thread(
            lambda: conn_b.execute("select public.reap_stale_jobs()").fetchone()
        )
        _wait_until_blocked(admin_db, conn_b.info.backend_pid)
        assert job_row(admin_db, job_id)["status"] == "processing"  # A not committed yet
        conn_a.commit()
        reaper.join(timeout=30)
    assert not reaper.is_alive()
    assert not isinstance(result[0], BaseException), result

    row = job_row(admin_db, job_id)
    assert (row["status"], row["result"], row["retry_count"], row["error_message"]) == (
        "completed",
        {"by": "A"},
        0,
        None,
    )
    assert "retry_scheduled" not in [e[0] for e in events(admin_db, job_id)]
    assert worker_row(admin_db, worker)["status"] == "offline"  # the worker itself was dead


def test_a_completion_after_the_rescue_is_fenced_out(
    stack: StackConfig,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    """The other order: the reaper's transaction holds the job; the worker's complete_job
    (through PostgREST) waits, then finds the job no longer its own and changes nothing."""
    queue = unique("race2")
    user = make_user()
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue)
    worker = unique("w-race2")
    svc.register(worker, queues=[queue])
    (job,) = svc.claim(worker)
    assert svc.start(job, worker)
    make_stale(admin_db, worker)

    with psycopg.connect(stack.admin_db_url) as conn_b:
        conn_b.execute("select public.reap_stale_jobs()")
        late, result = _in_thread(lambda: svc.complete(job, worker, {"by": "late worker"}))
        pid = _postgrest_backend_waiting(admin_db)
        assert pid is not None
        conn_b.commit()
        late.join(timeout=30)
    assert result == [False]
    row = job_row(admin_db, job_id)
    assert (row["status"], row["result"], row["retry_count"]) == ("pending", None, 1)


def _postgrest_backend_waiting(admin_db: Admin, timeout: float = 10.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = admin_db.execute(
            "select pid from pg_stat_activity where wait_event_type = 'Lock'"
            " and query like '%%complete_job%%' and usename = 'authenticator'"
        ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.02)
    return None
