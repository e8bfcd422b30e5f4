"""claim_next_job: exactly-once under concurrency, order, routing, slots, worker states."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from supaworker import rpc
from supaworker.models import WorkerStatus
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.sql.conftest import (
    Admin,
    Api,
    Svc,
    job_row,
    make_documents,
    results,
    sql_enqueue,
    worker_row,
)

pytestmark = pytest.mark.stack


@pytest.mark.timeout(300)
def test_16_concurrent_claimers_take_5000_jobs_exactly_once(
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    new_svc: Callable[[], Svc],
) -> None:
    queue = unique("burst")
    user = make_user()
    docs = make_documents(admin_db, user, 5000)
    admin_db.execute(
        "select count(public.enqueue_job(p_user_document_id => d, p_queue => %s))"
        " from unnest(%s::uuid[]) d",
        (queue, docs),
    )
    all_ids = {
        str(r[0])
        for r in admin_db.execute(
            "select id from public.processing_queue where queue = %s", (queue,)
        ).fetchall()
    }
    assert len(all_ids) == 5000

    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def claimer(n: int) -> None:
        worker_id = f"{queue}-w{n}"
        mine: list[str] = []
        claimed[worker_id] = mine
        try:
            svc = new_svc()
            svc.register(worker_id, slots=25, queues=[queue])
            start.wait()
            while True:
                jobs = svc.claim(worker_id, 10)
                if not jobs:
                    break
                assert all(
                    j["status"] == "assigned"
                    and j["assigned_to"] == worker_id
                    and j["attempt"] == 1
                    for j in jobs
                )
                mine.extend(j["id"] for j in jobs)
                done = svc.call(rpc.complete_jobs(worker_id, results(jobs, {"by": n})))
                assert done == len(jobs)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    every_claim = [job for jobs in claimed.values() for job in jobs]
    duplicates = [job for job, n in Counter(every_claim).items() if n > 1]
    assert duplicates == []  # nobody claimed a job twice
    assert set(every_claim) == all_ids  # none skipped
    assert sum(1 for jobs in claimed.values() if jobs) > 1  # the work was really shared
    rows = admin_db.execute(
        "select status, attempt, count(*) from public.processing_queue where queue = %s"
        " group by 1, 2",
        (queue,),
    ).fetchall()
    assert rows == [("completed", 1, 5000)]
    busy = admin_db.execute(
        "select sum(current_jobs) from public.vps_workers where worker_id like %s", (f"{queue}-w%",)
    ).fetchone()
    assert busy == (0,)


def test_claim_order_is_priority_then_turn_then_age(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("order")
    user = make_user()
    d = make_documents(admin_db, user, 6)
    now = datetime.now(UTC)
    early = now - timedelta(minutes=3)
    (old_low,) = sql_enqueue(admin_db, [d[0]], queue, priority=0, run_at=early)
    (newer_high,) = sql_enqueue(
        admin_db, [d[1]], queue, priority=5, run_at=now - timedelta(minutes=1)
    )
    (older_high,) = sql_enqueue(
        admin_db, [d[2]], queue, priority=5, run_at=now - timedelta(minutes=2)
    )
    (future_top,) = sql_enqueue(
        admin_db, [d[3]], queue, priority=9, run_at=now + timedelta(hours=1)
    )
    (young_low,) = sql_enqueue(admin_db, [d[4]], queue, priority=0, run_at=early)
    (negative,) = sql_enqueue(admin_db, [d[5]], queue, priority=-3, run_at=now - timedelta(hours=1))

    worker = unique("w-order")
    svc.register(worker, slots=10, queues=[queue])
    batch = svc.claim(worker, 10)
    # One owner: within a priority its jobs run in the order they were queued (their tags),
    # whatever run_at says once they are due (migration 0014); run_at only gates.
    expected = [newer_high, older_high, old_low, young_low, negative]
    assert [j["id"] for j in batch] == [str(j) for j in expected]
    assert job_row(admin_db, future_top)["status"] == "pending"  # not due yet

    # One at a time gives the same order.
    queue2 = unique("order1")
    d2 = make_documents(admin_db, user, 3)
    a = sql_enqueue(admin_db, [d2[0]], queue2, priority=1)[0]
    b = sql_enqueue(admin_db, [d2[1]], queue2, priority=2)[0]
    c = sql_enqueue(admin_db, [d2[2]], queue2, priority=1)[0]
    worker2 = unique("w-order1")
    svc.register(worker2, slots=10, queues=[queue2])
    singles = [svc.claim(worker2, 1)[0]["id"] for _ in range(3)]
    assert singles == [str(b), str(a), str(c)]
    assert svc.claim(worker2, 1) == []


def test_capability_routing(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("caps")
    user = make_user()
    d = make_documents(admin_db, user, 4)
    plain = sql_enqueue(admin_db, [d[0]], queue)[0]
    gpu = sql_enqueue(admin_db, [d[1]], queue, requires={"gpu": True}, priority=3)[0]
    german = sql_enqueue(admin_db, [d[2]], queue, requires={"langs": ["de"]}, priority=2)[0]
    both = sql_enqueue(
        admin_db, [d[3]], queue, requires={"gpu": True, "langs": ["fr"]}, priority=1
    )[0]

    cpu = unique("w-cpu")
    svc.register(cpu, slots=10, capabilities={"langs": ["en"]}, queues=[queue])
    assert [j["id"] for j in svc.claim(cpu, 10)] == [str(plain)]

    gpu_en_de = unique("w-gpu")
    svc.register(
        gpu_en_de, slots=10, capabilities={"gpu": True, "langs": ["en", "de"]}, queues=[queue]
    )
    assert [j["id"] for j in svc.claim(gpu_en_de, 10)] == [str(gpu), str(german)]
    assert job_row(admin_db, both)["status"] == "pending"  # nobody speaks French

    gpu_fr = unique("w-fr")
    svc.register(gpu_fr, slots=10, capabilities={"gpu": False, "langs": ["fr"]}, queues=[queue])
    assert svc.claim(gpu_fr, 10) == []  # gpu false does not satisfy gpu true


def test_free_slots_limit_the_claim(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("slots")
    user = make_user()
    sql_enqueue(admin_db, make_documents(admin_db, user, 6), queue)
    worker = unique("w-slots")
    svc.register(worker, slots=3, queues=[queue])

    first = svc.claim(worker, 10)
    assert len(first) == 3
    assert worker_row(admin_db, worker)["current_jobs"] == 3
    assert svc.claim(worker, 10) == []  # no free slot
    assert svc.start(first[0], worker)  # processing still holds its slot
    assert svc.claim(worker, 10) == []
    assert svc.complete(first[0], worker, {"ok": True})
    assert worker_row(admin_db, worker)["current_jobs"] == 2
    again = svc.claim(worker, 10)
    assert len(again) == 1  # exactly the freed slot
    assert svc.claim(worker, 0) == []  # limit 0 is a no-op
    assert worker_row(admin_db, worker)["current_jobs"] == 3


def test_paused_offline_and_unknown_workers_get_nothing(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("paused")
    user = make_user()
    (job,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue)
    worker = unique("w-paused")
    svc.register(worker, slots=5, queues=[queue])

    assert svc.call(rpc.set_worker_status(worker, WorkerStatus.PAUSED))["status"] == "paused"
    assert svc.claim(worker, 5) == []
    # A paused worker stays paused across a restart (register) and a heartbeat.
    assert svc.register(worker, slots=5, queues=[queue])["status"] == "paused"
    assert svc.heartbeat(worker)["status"] == "paused"
    assert svc.claim(worker, 5) == []
    assert svc.claim(unique("never-registered"), 5) == []
    assert job_row(admin_db, job)["status"] == "pending"

    svc.call(rpc.set_worker_status(worker, WorkerStatus.ACTIVE))
    svc.call(rpc.deregister_worker(worker))
    assert worker_row(admin_db, worker)["status"] == "offline"
    assert svc.claim(worker, 5) == []

    svc.register(worker, slots=5, queues=[queue])
    assert [j["id"] for j in svc.claim(worker, 5)] == [str(job)]


def test_queue_selection_defaults_to_the_workers_queues(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    qa, qb = unique("qa"), unique("qb")
    user = make_user()
    d = make_documents(admin_db, user, 2)
    (job_a,) = sql_enqueue(admin_db, [d[0]], qa)
    (job_b,) = sql_enqueue(admin_db, [d[1]], qb)
    worker = unique("w-queues")
    svc.register(worker, slots=5, queues=[qa])
    assert [j["id"] for j in svc.claim(worker, 5)] == [str(job_a)]  # its own queues
    assert [j["id"] for j in svc.claim(worker, 5, [qb])] == [str(job_b)]  # explicit override


def test_claim_rejects_bad_limits(
    api: Api, stack: StackConfig, svc: Svc, unique: Callable[[str], str]
) -> None:
    worker = unique("w-limit")
    svc.register(worker)
    for bad in (-1, 1001):
        reply = api.call(stack.service_role_key, rpc.claim_next_job(worker, bad, None))
        assert (reply.status, reply.code) == (400, "22023")


def test_claim_query_can_use_the_partial_index(admin_db: Admin) -> None:
    """The claim's selection (status pending, queue, ordered by priority desc, fair_tag,
    created_at) matches processing_queue_claim_idx, so it needs no sort of the table."""
    with admin_db.transaction():
        admin_db.execute("set local enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in admin_db.execute(
                "explain select q.id from public.processing_queue q where q.status = 'pending'"
                " and q.queue = 'some-queue' and q.run_at <= now() and not q.cancel_requested"
                " order by q.priority desc, q.fair_tag, q.created_at limit 10"
                " for update skip locked"
            ).fetchall()
        )
    assert "processing_queue_claim_idx" in plan
    assert "Sort" not in plan
