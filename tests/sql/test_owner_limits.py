"""Per-owner limits (issue 18): queue_settings.max_running_per_user holds over all workers
(also across a rescue and under concurrent claimers); max_pending_per_user refuses an enqueue
with PT429 / HTTP 429, naming the limit and the count, and writes nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from supaworker import rpc
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Api, Svc, make_documents, make_stale, sql_enqueue

pytestmark = pytest.mark.stack


@pytest.fixture
def limits(admin_db: Admin) -> Iterator[Callable[..., None]]:
    """Sets the per-owner limits for one test; they are global, so always reset after."""

    def set_limits(running: int | None = None, pending: int | None = None) -> None:
        admin_db.execute(
            "update public.queue_settings set max_running_per_user = %s, max_pending_per_user = %s",
            (running, pending),
        )

    yield set_limits
    set_limits()


def running_by_owner(admin_db: Admin, queue: str) -> dict[str, int]:
    rows = admin_db.execute(
        "select user_id::text, count(*) from public.processing_queue where queue = %s"
        " and status in ('assigned', 'processing') group by 1",
        (queue,),
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def test_the_cap_holds_over_workers_and_frees_as_jobs_finish(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    limits: Callable[..., None],
) -> None:
    queue = unique("cap")
    a, b = make_user(), make_user()
    sql_enqueue(admin_db, make_documents(admin_db, a, 6), queue)
    sql_enqueue(admin_db, make_documents(admin_db, b, 2), queue)
    limits(running=2)
    one, two = unique("w-cap1"), unique("w-cap2")
    svc.register(one, slots=10, queues=[queue])
    svc.register(two, slots=10, queues=[queue])
    first = svc.claim(one, 10)
    assert len(first) == 4  # A's two and B's two: A's other four wait for A's cap
    assert svc.claim(two, 10) == []  # another worker does not get more of A's
    assert running_by_owner(admin_db, queue) == {str(a.id): 2, str(b.id): 2}
    a_job = next(j for j in first if j["user_id"] == str(a.id))
    assert svc.complete(a_job, one)
    (next_a,) = svc.claim(two, 10)
    assert next_a["user_id"] == str(a.id)
    limits()  # no cap: the rest at once
    assert len(svc.claim(two, 10)) == 3


def test_the_cap_holds_for_a_worker_of_several_queues(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    limits: Callable[..., None],
) -> None:
    """The turn-by-turn claim has one selection for a worker of one queue (an equality, 0028)
    and one for a worker of several: the latter takes turns over its queues, leaves other
    queues alone and counts an owner's cap over all of them."""
    first, second, elsewhere = unique("cap-q1"), unique("cap-q2"), unique("cap-q3")
    a, b = make_user(), make_user()
    sql_enqueue(admin_db, make_documents(admin_db, a, 3), first)
    sql_enqueue(admin_db, make_documents(admin_db, a, 3), second)
    sql_enqueue(admin_db, make_documents(admin_db, b, 1), second)
    sql_enqueue(admin_db, make_documents(admin_db, b, 2), elsewhere)
    limits(running=2)
    worker = unique("w-cap-many")
    svc.register(worker, slots=10, queues=[first, second])
    claimed = svc.claim(worker, 10)
    assert len(claimed) == 3 and {j["queue"] for j in claimed} <= {first, second}
    assert running_by_owner(admin_db, elsewhere) == {}
    by_owner = {**running_by_owner(admin_db, first)}
    for owner, n in running_by_owner(admin_db, second).items():
        by_owner[owner] = by_owner.get(owner, 0) + n
    assert by_owner == {str(a.id): 2, str(b.id): 1}  # A's cap over both queues
    limits()
    assert len(svc.claim(worker, 10)) == 4  # the rest of A's, never the third queue's
    assert running_by_owner(admin_db, elsewhere) == {}


def test_a_rescue_never_pushes_an_owner_over_the_cap(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    limits: Callable[..., None],
) -> None:
    queue = unique("cap-rescue")
    a = make_user()
    sql_enqueue(admin_db, make_documents(admin_db, a, 5), queue)
    limits(running=2)
    dead, alive = unique("w-dead"), unique("w-alive")
    svc.register(dead, slots=5, queues=[queue])
    assert len(svc.claim(dead, 5)) == 2
    svc.register(alive, slots=5, queues=[queue])
    assert svc.claim(alive, 5) == []  # the dead worker's jobs still count: it may be alive
    make_stale(admin_db, dead)
    # The reaper is global: other tests' stale workers on the shared stack count too.
    assert svc.call(rpc.reap_stale_jobs()) >= 2
    admin_db.execute(
        "update public.processing_queue set run_at = now() where queue = %s and status = 'pending'",
        (queue,),
    )
    assert len(svc.claim(alive, 5)) == 2
    assert running_by_owner(admin_db, queue) == {str(a.id): 2}


def test_concurrent_claimers_never_exceed_the_cap(
    admin_db: Admin,
    stack: StackConfig,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    new_svc: Callable[[], Svc],
    limits: Callable[..., None],
) -> None:
    """8 workers claim and complete 3 owners' 300 jobs with a cap of 3; a sampler reads the
    running count per owner from its own connection (each sample is one snapshot, so a value
    above the cap would be a real violation) and every job completes exactly once."""
    queue = unique("cap-race")
    owners = [make_user() for _ in range(3)]
    for owner in owners:
        sql_enqueue(admin_db, make_documents(admin_db, owner, 100), queue)
    limits(running=3)
    done = threading.Event()
    errors: list[BaseException] = []
    peaks: list[int] = []

    def sampler() -> None:
        with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
            while not done.is_set():
                peaks.append(max(running_by_owner(conn, queue).values(), default=0))

    def claimer(n: int) -> None:
        try:
            svc = new_svc()
            worker = f"{queue}-w{n}"
            svc.register(worker, slots=4, queues=[queue])
            idle = 0
            while idle < 5:
                jobs = svc.claim(worker, 4)
                idle = 0 if jobs else idle + 1
                time.sleep(0.005)  # the jobs run a little: claims overlap with running jobs
                for job in jobs:
                    assert svc.complete(job, worker)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    watch = threading.Thread(target=sampler)
    watch.start()
    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    watch.join(timeout=10)
    assert not errors, errors
    assert peaks and max(peaks) <= 3, max(peaks)
    assert 3 in peaks  # the sampler saw owners at their cap: it was really measuring
    rows = admin_db.execute(
        "select status, attempt, count(*) from public.processing_queue where queue = %s"
        " group by 1, 2",
        (queue,),
    ).fetchall()
    assert rows == [("completed", 1, 300)]


def test_the_quota_refuses_with_429_and_writes_nothing(
    api: Api,
    stack: StackConfig,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    limits: Callable[..., None],
) -> None:
    queue = unique("quota")
    a = make_user()
    docs = make_documents(admin_db, a, 5)
    limits(pending=3)
    first = sql_enqueue(admin_db, docs[:3], queue)
    before = admin_db.execute("select count(*) from public.job_events").fetchone()
    clock = admin_db.execute("select * from supaworker_private.owner_clock").fetchall()

    reply = api.call(stack.service_role_key, rpc.enqueue_job(docs[3], queue=queue))
    assert (reply.status, reply.code) == (429, "PT429")
    assert reply.body["message"] == (
        f"user {a.id} has 3 pending or running jobs; max_pending_per_user is 3"
    )
    assert reply.body["hint"]
    reply = api.call(a.token, rpc.enqueue_job(docs[3], queue=queue))  # the user too
    assert (reply.status, reply.code) == (429, "PT429")
    assert admin_db.execute(
        "select count(*) from public.processing_queue where user_document_id = %s", (docs[3],)
    ).fetchone() == (0,)
    assert admin_db.execute("select count(*) from public.job_events").fetchone() == before
    assert admin_db.execute("select * from supaworker_private.owner_clock").fetchall() == clock

    # Repeating the enqueue of an active document still answers its row.
    again = api.call(stack.service_role_key, rpc.enqueue_job(docs[0], queue=queue))
    assert (again.status, again.body["id"]) == (200, str(first[0]))
    # Running jobs count; finished ones free the quota.
    worker = unique("w-quota")
    svc.register(worker, slots=1, queues=[queue])
    (job,) = svc.claim(worker, 1)
    assert api.call(stack.service_role_key, rpc.enqueue_job(docs[3], queue=queue)).status == 429
    assert svc.complete(job, worker)
    assert api.call(stack.service_role_key, rpc.enqueue_job(docs[3], queue=queue)).status == 200
    # Re-queueing a finished document is new work: refused at the quota as well.
    requeue = rpc.enqueue_job(job["user_document_id"], queue=queue)
    assert api.call(stack.service_role_key, requeue).status == 429
