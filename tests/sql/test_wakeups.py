"""Wake-ups and control signals as Broadcast from the database (35_wakeups.sql, issue 20).

What the database sends is read back from realtime.messages (every realtime.send is a row
there, by topic), so each count here is the number of Realtime messages the workers would
receive: one per row, one subscriber per worker topic.
"""

from __future__ import annotations

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
