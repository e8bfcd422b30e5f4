"""Issue 20: real workers spend few Realtime messages. Counted by the local Realtime's
`realtime_messages_sent_total` (what hosted bills), read before and after.

A burst of jobs on a queue with idle workers costs at most one wake-up per idle worker,
jobs enqueued one by one at most about one each, and heartbeats nothing. (Before: each job
was a message to every worker plus its own changes sent back to the worker that made them,
and each heartbeat a message.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psycopg
import pytest

from supaworker.models import Job
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.realtime import metrics_client
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack
Start = Callable[..., WorkerProcess]
Submit = Callable[..., list[Job]]
SENT = "realtime_messages_sent_total"
Admin = psycopg.Connection[tuple[object, ...]]


def sent(stack: StackConfig) -> float:
    return asyncio.run(metrics_client.read(stack))[SENT]


def test_a_burst_costs_at_most_one_wake_up_per_idle_worker_and_heartbeats_nothing(
    stack: StackConfig,
    start_worker: Start,
    submit: Submit,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    name = unique("q")
    workers = [
        start_worker("--queue", name, "--realtime", "--heartbeat-interval", "1") for _ in range(3)
    ]
    for worker in workers:
        worker.wait_for_log('"action": "realtime_status"', '"connected": true', timeout=30)
    time.sleep(1.5)  # each made its first (empty) claim: all three wait for work

    before = sent(stack)
    time.sleep(3)  # ~9 heartbeats
    assert sent(stack) - before == 0

    # A burst: 30 jobs in one statement (an upload batch, an edge function's bulk insert).
    user = make_user()
    before = sent(stack)
    admin_db.execute(
        "with d as (insert into public.user_documents (user_id, name)"
        "  select %s, 'burst' from generate_series(1, 30) returning id, user_id)"
        " insert into public.processing_queue (user_document_id, user_id, queue)"
        " select id, user_id, %s from d",
        (user.id, name),
    )
    wait_for(lambda: done(admin_db, name) == 30, 30, "the burst")
    time.sleep(1)  # anything still on its way
    burst = sent(stack) - before
    # Then one at a time through the API: a worker that drained the queue waits again, so
    # each job may wake one, never one per worker.
    before = sent(stack)
    jobs = submit(20, queue_name=name, payload={"mode": "ok"})
    wait_for(lambda: done(admin_db, name) == 50, 30, "the trickle")
    time.sleep(1)
    trickle = sent(stack) - before
    for worker in workers:
        worker.stop()
    print(f"Realtime messages: burst of 30 -> {burst:.0f}, 20 one by one -> {trickle:.0f}")
    assert burst <= 3  # one wake-up per idle worker at most
    assert trickle <= 1.5 * len(jobs)


def done(admin_db: Admin, queue: str) -> int:
    row = admin_db.execute(
        "select count(*) from public.processing_queue where queue = %s and status = 'completed'",
        (queue,),
    ).fetchone()
    return int(str(row[0])) if row else 0
