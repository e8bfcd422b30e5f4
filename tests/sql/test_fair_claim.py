"""Fair order across owners (issue 18): within a queue and a priority the claim takes turns
across owners, oldest first within each; a user's own priority orders only that user's jobs;
the service role's priority still orders across users."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supaworker import rpc
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Api, Svc, job_row, make_documents, sql_enqueue

pytestmark = pytest.mark.stack


def claim_all(svc: Svc, worker: str, count: int) -> list[str]:
    """Claims one job at a time, completing each: the order a 1-slot worker sees."""
    order = []
    for _ in range(count):
        (job,) = svc.claim(worker, 1)
        assert svc.complete(job, worker)
        order.append(job["id"])
    return order


def test_a_backlog_delays_a_later_owner_by_one_job_per_turn(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("fair")
    a, b = make_user(), make_user()
    a_jobs = sql_enqueue(admin_db, make_documents(admin_db, a, 40), queue)
    b_jobs = sql_enqueue(admin_db, make_documents(admin_db, b, 4), queue)
    worker = unique("w-fair")
    svc.register(worker, slots=1, queues=[queue])
    order = claim_all(svc, worker, 10)
    # Turns alternate: A's oldest, B's oldest, A's next, ... (FIFO would give A's 40 first).
    expected = [a_jobs[0], b_jobs[0], a_jobs[1], b_jobs[1], a_jobs[2], b_jobs[2]]
    expected += [a_jobs[3], b_jobs[3], a_jobs[4], a_jobs[5]]
    assert order == [str(j) for j in expected]


def test_an_idle_owner_gets_no_credit_and_a_busy_one_no_debt(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    """An owner whose 6 earlier jobs are done starts at the level's current turn, not behind
    all the turns it used (which a virtual time of 0 on an idle level would give)."""
    queue = unique("fair-idle")
    a, b = make_user(), make_user()
    worker = unique("w-idle")
    svc.register(worker, slots=1, queues=[queue])
    sql_enqueue(admin_db, make_documents(admin_db, a, 6), queue)
    claim_all(svc, worker, 6)  # the level is empty again; A's last tag is 5
    b_jobs = sql_enqueue(admin_db, make_documents(admin_db, b, 5), queue)
    (a_new,) = sql_enqueue(admin_db, make_documents(admin_db, a, 1), queue)
    order = claim_all(svc, worker, 6)
    assert order.index(str(a_new)) <= 2, order  # A took tag 5 last: B, B, then A
    assert [j for j in order if j != str(a_new)] == [str(j) for j in b_jobs]


def test_a_user_priority_orders_only_that_users_jobs(
    api: Api,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("fair-prio")
    a, b = make_user(), make_user()
    b_jobs = sql_enqueue(admin_db, make_documents(admin_db, b, 3), queue)
    a_docs = make_documents(admin_db, a, 4)
    a_jobs = []
    for doc, priority in zip(a_docs, [0, 0, 0, 10], strict=True):
        reply = api.call(a.token, rpc.enqueue_job(doc, queue=queue, priority=priority))
        assert reply.status == 200, reply.body
        a_jobs.append(reply.body["id"])
    assert [job_row(admin_db, j)["priority"] for j in a_jobs] == [0, 0, 0, 0]
    worker = unique("w-prio")
    svc.register(worker, slots=1, queues=[queue])
    order = claim_all(svc, worker, 7)
    # A's urgent job fills A's first turn, not B's: B keeps every one of its turns, and A's
    # other jobs keep theirs (the turn's tag moved to the job it displaced).
    b0, b1, b2 = (str(j) for j in b_jobs)
    assert order == [b0, a_jobs[3], b1, a_jobs[0], b2, a_jobs[1], a_jobs[2]]


def test_a_batch_claim_fills_each_turn_with_the_owners_best_job(
    api: Api,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("fair-batch")
    a, b = make_user(), make_user()
    a_jobs = []
    for doc, priority in zip(make_documents(admin_db, a, 3), [0, 5, 9], strict=True):
        reply = api.call(a.token, rpc.enqueue_job(doc, queue=queue, priority=priority))
        a_jobs.append(reply.body["id"])
    b_jobs = sql_enqueue(admin_db, make_documents(admin_db, b, 3), queue)
    worker = unique("w-batch")
    svc.register(worker, slots=10, queues=[queue])
    batch = [j["id"] for j in svc.claim(worker, 4)]
    assert batch == [a_jobs[2], str(b_jobs[0]), a_jobs[1], str(b_jobs[1])]
    rest = [j["id"] for j in svc.claim(worker, 4)]
    assert rest == [a_jobs[0], str(b_jobs[2])]


def test_service_priority_orders_across_owners(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("fair-svc")
    a, b = make_user(), make_user()
    a_jobs = sql_enqueue(admin_db, make_documents(admin_db, a, 2), queue)
    (b_urgent,) = sql_enqueue(admin_db, make_documents(admin_db, b, 1), queue, priority=5)
    worker = unique("w-svc")
    svc.register(worker, slots=1, queues=[queue])
    assert claim_all(svc, worker, 3) == [str(b_urgent), str(a_jobs[0]), str(a_jobs[1])]


def test_a_retry_keeps_its_turn_and_a_new_cycle_takes_a_new_one(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("fair-retry")
    a = make_user()
    first, second = sql_enqueue(admin_db, make_documents(admin_db, a, 2), queue)
    tags = [job_row(admin_db, j)["fair_tag"] for j in (first, second)]
    assert tags[1] == tags[0] + 1
    worker = unique("w-retry")
    svc.register(worker, slots=1, queues=[queue])
    (job,) = svc.claim(worker, 1)
    assert job["id"] == str(first)
    svc.fail(job, worker, "flaky")
    assert job_row(admin_db, first)["fair_tag"] == tags[0]  # fail_attempt keeps the tag
    admin_db.execute("update public.processing_queue set status = 'failed' where id = %s", (first,))
    svc.call(rpc.retry_job(first))
    assert job_row(admin_db, first)["fair_tag"] == tags[1] + 1  # after the owner's last
