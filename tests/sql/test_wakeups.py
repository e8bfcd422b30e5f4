"""Wake-ups and control signals as Broadcast from the database (35_wakeups.sql, issue 20).

What the database sends is read back from realtime.messages (every realtime.send is a row
there, by topic), so each count here is the number of Realtime messages the workers would
receive: one per row, one subscriber per worker topic.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

import pytest

from supaworker import rpc
from supaworker.models import WorkerStatus
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Svc, make_documents, sql_enqueue

pytestmark = pytest.mark.stack


def sent(admin_db: Admin, prefix: str, event: str) -> Counter[str]:
    """Messages per worker topic whose worker id starts with prefix."""
    rows = admin_db.execute(
        "select topic from realtime.messages where topic like %s and event = %s and private",
        (f"worker:{prefix}%", event),
    ).fetchall()
    return Counter(str(r[0]).removeprefix("worker:") for r in rows)


def waiting(svc: Svc, worker_id: str, **kw: object) -> str:
    """A registered worker whose claim came back empty: it now waits for work."""
    svc.register(worker_id, **kw)  # type: ignore[arg-type]
    assert svc.claim(worker_id) == []
    return worker_id


def test_a_burst_wakes_each_waiting_worker_that_can_take_it_once(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue, other = unique("wburst"), unique("wother")
    gpu = {"gpu": True}
    # A busy worker: its claim filled its only slot (before the others wait: the job would
    # wake one of them).
    svc.register(f"{queue}-busy", slots=1, queues=[queue], capabilities=gpu)
    sql_enqueue(admin_db, make_documents(admin_db, make_user(), 1), queue, requires=gpu)
    assert len(svc.claim(f"{queue}-busy")) == 1
    able = [waiting(svc, f"{queue}-able{i}", queues=[queue], capabilities=gpu) for i in range(6)]
    waiting(svc, f"{queue}-nogpu", queues=[queue])
    waiting(svc, f"{queue}-elsewhere", queues=[other], capabilities=gpu)
    waiting(svc, f"{queue}-paused", queues=[queue], capabilities=gpu)
    svc.call(rpc.set_worker_status(f"{queue}-paused", WorkerStatus.PAUSED))
    admin_db.execute("delete from realtime.messages where topic like %s", (f"worker:{queue}%",))

    user = make_user()
    sql_enqueue(admin_db, make_documents(admin_db, user, 3), queue, requires=gpu)
    woken = sent(admin_db, queue, "wake")
    assert sum(woken.values()) == 3 and set(woken) <= set(able)  # N < W: N, to distinct ones
    assert max(woken.values()) == 1

    sql_enqueue(admin_db, make_documents(admin_db, user, 40), queue, requires=gpu)
    woken = sent(admin_db, queue, "wake")
    # 43 jobs, 6 waiting workers that can take them: 6 wake-ups in all, one each; none to the
    # busy, paused, incapable or other-queue workers.
    assert woken == Counter(dict.fromkeys(able, 1))


def test_a_worker_waits_again_only_after_a_short_claim(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("wagain")
    worker = waiting(svc, f"{queue}-w", slots=2, queues=[queue])
    user = make_user()
    sql_enqueue(admin_db, make_documents(admin_db, user, 2), queue)
    assert sent(admin_db, queue, "wake") == {worker: 1}
    jobs = svc.claim(worker, limit=2)
    assert len(jobs) == 2  # full: it comes back by itself
    sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue)
    assert sent(admin_db, queue, "wake") == {worker: 1}
    svc.heartbeat(worker)  # a heartbeat changes nothing here
    for job in jobs:
        assert svc.start(job, worker) and svc.complete(job, worker)
    assert len(svc.claim(worker, limit=2)) == 1  # short: waiting again
    sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue)
    assert sent(admin_db, queue, "wake") == {worker: 2}


def test_heartbeats_send_nothing_pause_resume_and_cancel_send_control(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("wctl")
    worker = waiting(svc, f"{queue}-w", queues=[queue])
    for _ in range(5):
        svc.heartbeat(worker)
    assert sent(admin_db, queue, "control") == {}
    svc.call(rpc.set_worker_status(worker, WorkerStatus.PAUSED))
    svc.call(rpc.set_worker_status(worker, WorkerStatus.PAUSED))  # no change: no message
    assert sent(admin_db, queue, "control") == {worker: 1}
    svc.call(rpc.set_worker_status(worker, WorkerStatus.ACTIVE))
    assert sent(admin_db, queue, "control") == {worker: 2}

    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, make_user(), 1), queue)
    (job,) = svc.claim(worker)
    assert svc.start(job, worker)
    svc.call(rpc.cancel_job(job_id))
    assert sent(admin_db, queue, "control") == {worker: 3}
    assert svc.heartbeat(worker, [job["id"]])["cancel"] == [job["id"]]
    assert sent(admin_db, queue, "control") == {worker: 3}


def test_a_retry_due_later_wakes_a_waiting_worker_at_its_run_at(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("wretry")
    runner = f"{queue}-runner"
    svc.register(runner, slots=1, queues=[queue])
    sql_enqueue(admin_db, make_documents(admin_db, make_user(), 1), queue)
    (job,) = svc.claim(runner)
    idle = waiting(svc, f"{queue}-idle", queues=[queue])
    admin_db.execute("delete from realtime.messages where topic like %s", (f"worker:{queue}%",))
    svc.fail(job, runner, "transient")
    rows = admin_db.execute(
        "select topic, payload->>'run_at' from realtime.messages"
        " where topic like %s and event = 'wake'",
        (f"worker:{queue}%",),
    ).fetchall()
    assert [r[0] for r in rows] == [f"worker:{idle}"] and rows[0][1] is not None
    # Told about a later job, the idle worker still waits: a job due now wakes it too.
    sql_enqueue(admin_db, make_documents(admin_db, make_user(), 1), queue)
    assert sent(admin_db, queue, "wake") == {idle: 2}


def test_a_wake_up_goes_only_to_a_worker_whose_capabilities_meet_the_comparison(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("wcmp")
    small = waiting(svc, f"{queue}-small", queues=[queue], capabilities={"mem": 4})
    big = waiting(svc, f"{queue}-big", queues=[queue], capabilities={"mem": 16})
    admin_db.execute("delete from realtime.messages where topic like %s", (f"worker:{queue}%",))
    sql_enqueue(
        admin_db, make_documents(admin_db, make_user(), 3), queue, requires={"mem": {"gte": 8}}
    )
    # requires_met, as in the claim: the comparison, not containment (which neither meets).
    assert sent(admin_db, queue, "wake") == {big: 1}
    assert small not in sent(admin_db, queue, "wake")


def test_a_claim_turned_away_by_flow_control_waits_again_and_complete_and_claim_records_it(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("wcap")
    alice, bob = make_user(), make_user()
    runner = f"{queue}-runner"
    svc.register(runner, slots=1, queues=[queue])
    sql_enqueue(admin_db, make_documents(admin_db, alice, 1), queue)
    (running,) = svc.claim(runner)
    idle = waiting(svc, f"{queue}-idle", slots=2, queues=[queue])
    admin_db.execute("update public.queue_settings set max_running_per_user = 1")
    try:
        admin_db.execute("delete from realtime.messages where topic like %s", (f"worker:{queue}%",))
        sql_enqueue(admin_db, make_documents(admin_db, alice, 1), queue)
        assert sent(admin_db, queue, "wake") == {idle: 1}
        # Alice is at her cap: the woken worker gets nothing, so it waits again ...
        assert svc.claim(idle, limit=2) == []
        # ... and the next job it can take (bob's) wakes it once more, in fair order.
        sql_enqueue(admin_db, make_documents(admin_db, bob, 1), queue)
        assert sent(admin_db, queue, "wake") == {idle: 2}
        (taken,) = svc.claim(idle, limit=2)
        assert taken["user_id"] == str(bob.id)
        # The runner's completion frees alice's cap; its complete_and_claim takes her job
        # and, short of its limit, records that it waits: the next job wakes it (the idle
        # worker, short too, may be picked instead: one wake-up, to one of the two).
        answer = svc.call(
            rpc.complete_and_claim(
                runner, [(uuid.UUID(running["id"]), running["attempt"], None)], 2, None, prefetch=1
            )
        )
        assert [j["user_id"] for j in answer["claimed"]] == [str(alice.id)]
        before = sum(sent(admin_db, queue, "wake").values())
        sql_enqueue(admin_db, make_documents(admin_db, bob, 1), queue)
        woken = sent(admin_db, queue, "wake")
        assert sum(woken.values()) == before + 1 and set(woken) <= {runner, idle}
        assert admin_db.execute(
            "select count(*) from supaworker_private.worker_wakeups"
            " where worker_id = any (%s) and awaiting",
            ([runner, idle],),
        ).fetchone() == (1,)
    finally:
        admin_db.execute("update public.queue_settings set max_running_per_user = null")
