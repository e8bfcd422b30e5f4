"""Issue 18 under damage: real `supaworker run` processes, SIGKILLed one after another and
replaced, while a sampler reads from its own connection how many jobs of each owner and of a
concurrency key are running. queue_settings.max_running_per_user and concurrency_limits must
hold in every sample (each sample is one snapshot, so a value above a cap is a real
violation: a SIGKILLed worker's jobs count until the reaper frees them, and the rescue only
lowers counts), and every job must end completed (none lost). Bounded: about a minute."""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from supaworker_local.config import StackConfig
from tests.chaos.settings import fast_rescue
from tests.conftest import StackUser
from tests.worker_fixtures import WorkerProcess

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

Db = psycopg.Connection[tuple[object, ...]]
OWNER_CAP = 2
KEY_CAP = 3
OWNERS = 4
JOBS_PER_OWNER = 60


@pytest.fixture()
def limits(stack: StackConfig, admin_db: Db) -> Iterator[str]:
    key = f"chaos-key-{uuid.uuid4().hex[:8]}"
    admin_db.execute("update public.queue_settings set max_running_per_user = %s", (OWNER_CAP,))
    admin_db.execute(
        "insert into public.concurrency_limits (key, max_running) values (%s, %s)", (key, KEY_CAP)
    )
    with fast_rescue(stack, horizon=3, rescue_interval=0.5):
        try:
            yield key
        finally:
            admin_db.execute("update public.queue_settings set max_running_per_user = null")
            admin_db.execute("delete from public.concurrency_limits where key = %s", (key,))


def enqueue(db: Db, user: StackUser, queue: str, n: int, key: str | None) -> None:
    db.execute(
        """
        with docs as (
          insert into public.user_documents (user_id, name, content)
          select %s, 'caps-' || g, 'x' from generate_series(1, %s) g returning id
        )
        select count(public.enqueue_job(d.id, 0,
                 jsonb_build_object('mode', 'sleep', 'seconds', 0.1 + random() * 0.3),
                 %s, 10, null, null, '{}', %s))
        from docs d
        """,
        (user.id, n, queue, key),
    )


def test_caps_hold_while_workers_are_killed_and_no_job_is_lost(
    stack: StackConfig,
    admin_db: Db,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    limits: str,
) -> None:
    queue = unique("caps-chaos")
    owners = [make_user() for _ in range(OWNERS)]
    for n, owner in enumerate(owners):
        # Half of the owners' jobs share the concurrency key, so both limits bind at once.
        enqueue(admin_db, owner, queue, JOBS_PER_OWNER, limits if n % 2 else None)
    total = OWNERS * JOBS_PER_OWNER
    done = threading.Event()
    owner_peaks: list[int] = []
    key_peaks: list[int] = []

    def sampler() -> None:
        with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "select coalesce(max(n), 0),"
                    " (select count(*) from public.processing_queue where queue = %s"
                    "   and concurrency_key = %s and status in ('assigned', 'processing'))"
                    " from (select count(*) n from public.processing_queue where queue = %s"
                    "   and status in ('assigned', 'processing') group by user_id) o",
                    (queue, limits, queue),
                ).fetchone()
                assert row is not None
                owner_peaks.append(int(str(row[0])))
                key_peaks.append(int(str(row[1])))

    def spawn() -> WorkerProcess:
        return start_worker("--queue", queue, "--concurrency", "4")

    rng = random.Random()
    fleet = [spawn() for _ in range(4)]
    watch = threading.Thread(target=sampler)
    watch.start()
    kills = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            left = admin_db.execute(
                "select count(*) from public.processing_queue where queue = %s"
                " and status <> 'completed'",
                (queue,),
            ).fetchone()
            if left == (0,):
                break
            if kills < 12:
                victim = fleet.pop(rng.randrange(len(fleet)))
                victim.stop(signal.SIGKILL)
                kills += 1
                fleet.append(spawn())
            time.sleep(rng.uniform(1.0, 2.0))
    finally:
        done.set()
        watch.join(timeout=10)
        for worker in fleet:
            worker.stop()
    rows = admin_db.execute(
        "select status, count(*) from public.processing_queue where queue = %s group by 1",
        (queue,),
    ).fetchall()
    assert rows == [("completed", total)], rows  # none lost, none stuck
    assert kills >= 5, kills
    rescued = admin_db.execute(
        "select count(*) from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s and e.event = 'retry_scheduled'"
        " and e.message like '%%stopped heartbeating%%'",
        (queue,),
    ).fetchone()
    assert rescued is not None and int(str(rescued[0])) > 0  # killed with jobs in hand
    assert owner_peaks and max(owner_peaks) <= OWNER_CAP, max(owner_peaks)
    assert max(key_peaks) <= KEY_CAP, max(key_peaks)
    # The sampler saw both limits reached: they were binding, not idle.
    assert OWNER_CAP in owner_peaks and KEY_CAP in key_peaks
