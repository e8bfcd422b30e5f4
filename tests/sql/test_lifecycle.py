"""A job's life: enqueue, fencing, retries with backoff, dead letter, cancel, release,
heartbeats, retry and purge."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest

from supaworker import rpc
from supaworker.models import WorkerStatus
from supaworker.rpc import EnqueueOptions, RpcCall
from supaworker.transport import SupabaseSyncTransport
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.sql.conftest import (
    Admin,
    Api,
    Svc,
    events,
    ids,
    job_row,
    make_documents,
    make_due,
    results,
    send,
    sql_enqueue,
    worker_row,
)

pytestmark = pytest.mark.stack


# -- enqueue --------------------------------------------------------------------------------
def test_enqueue_is_idempotent_and_requeues_finished_jobs_keeping_the_attempt(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("enq")
    user = make_user()
    (doc,) = make_documents(admin_db, user, 1)
    options: EnqueueOptions = {"queue": queue, "priority": 4, "payload": {"lang": "en"}}
    first = svc.call(rpc.enqueue_job(doc, **options))
    assert (first["status"], first["priority"], first["attempt"], first["user_id"]) == (
        "pending",
        4,
        0,
        str(user.id),
    )
    again = svc.call(rpc.enqueue_job(doc, **options | {"priority": 9, "payload": {"lang": "de"}}))
    assert again == first  # active: returned as is

    worker = unique("w-enq")
    svc.register(worker, queues=[queue])
    (job,) = svc.claim(worker)
    assert svc.call(rpc.enqueue_job(doc, **options))["status"] == "assigned"  # still active
    assert svc.complete(job, worker, {"pages": 3})

    cycle2 = svc.call(rpc.enqueue_job(doc, **options | {"priority": 7, "payload": {"lang": "de"}}))
    assert cycle2["id"] == first["id"]
    assert (
        cycle2["status"],
        cycle2["priority"],
        cycle2["payload"],
        cycle2["result"],
        cycle2["retry_count"],
        cycle2["completed_at"],
        cycle2["assigned_to"],
    ) == ("pending", 7, {"lang": "de"}, None, 0, None, None)
    assert cycle2["attempt"] == 1  # the fencing token is never reset
    (job2,) = svc.claim(worker)
    assert job2["attempt"] == 2
    assert not svc.complete(job, worker, {"stale": True})  # cycle 1's token is dead
    assert [e[0] for e in events(admin_db, first["id"])] == [
        "enqueued",
        "assigned",
        "completed",
        "requeued",
        "assigned",
    ]


def test_enqueue_validates_its_arguments(
    api: Api,
    stack: StackConfig,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    user = make_user()
    (doc,) = make_documents(admin_db, user, 1)
    key = stack.service_role_key
    queue = unique("val")
    base = {"p_user_document_id": str(doc), "p_queue": queue}  # for the RAW cases
    # A call of rpc.py, or RAW parameters for what rpc.py never sends (a payload or requires
    # that is not an object, a null document id).
    cases: list[tuple[RpcCall[Any] | dict[str, Any], int, str]] = [
        (base | {"p_payload": [1, 2]}, 400, "22023"),
        (base | {"p_payload": "text"}, 400, "22023"),
        (base | {"p_requires": ["gpu"]}, 400, "22023"),
        (rpc.enqueue_job(doc, queue="bad queue!"), 400, "22023"),
        (rpc.enqueue_job(doc, queue=queue, max_attempts=0), 400, "22023"),
        (rpc.enqueue_job(doc, queue=queue, max_attempts=101), 400, "22023"),
        (rpc.enqueue_job(doc, queue=queue, timeout_seconds=0), 400, "22023"),
        (rpc.enqueue_job(doc, queue=queue, priority=5000), 400, "22023"),
        (rpc.enqueue_job(doc, queue=queue, payload={"blob": "x" * 300_000}), 413, "PT413"),
        (rpc.enqueue_job(uuid.uuid4(), queue=queue), 404, "PT404"),
        (base | {"p_user_document_id": None}, 400, "22023"),
    ]
    for sent, status, code in cases:
        if isinstance(sent, RpcCall):
            reply = api.call(key, sent)
        else:
            reply = api.rpc(key, "enqueue_job", sent)  # RAW
        assert (reply.status, reply.code) == (status, code), sent
        assert reply.body["message"]
    # Nothing was queued by any of the rejected calls.
    assert admin_db.execute(
        "select count(*) from public.processing_queue where user_document_id = %s", (doc,)
    ).fetchone() == (0,)


def test_authenticated_users_enqueue_their_own_documents_with_clamped_priority(
    api: Api,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    owner, stranger = make_user(), make_user()
    high, low, other = make_documents(admin_db, owner, 3)
    queue = unique("user")
    reply = api.call(owner.token, rpc.enqueue_job(high, priority=99, queue=queue))
    # A user's priority orders only their own jobs: it is user_priority, priority stays 0.
    assert (reply.status, reply.body["user_priority"], reply.body["user_id"]) == (
        200,
        10,
        str(owner.id),
    )
    assert reply.body["priority"] == 0
    reply = api.call(owner.token, rpc.enqueue_job(low, priority=-99, queue=queue))
    assert (reply.status, reply.body["user_priority"], reply.body["priority"]) == (200, -10, 0)
    reply = api.call(stranger.token, rpc.enqueue_job(other))
    assert (reply.status, reply.code) == (403, "PT403")
    assert reply.body["hint"]
    assert job_count(admin_db, other) == 0
    # supabase-py as the user: the same call through the user's own client library.
    row = cast(
        dict[str, Any],
        send(SupabaseSyncTransport(owner.client), rpc.enqueue_job(other, queue=queue)),
    )
    assert row["status"] == "pending"


def job_count(admin_db: Admin, doc: uuid.UUID) -> int:
    row = admin_db.execute(
        "select count(*) from public.processing_queue where user_document_id = %s", (doc,)
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- fencing --------------------------------------------------------------------------------
def test_a_stale_worker_changes_nothing_after_reassignment(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("fence")
    user = make_user()
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue)
    old, new = unique("w-old"), unique("w-new")
    svc.register(old, queues=[queue])
    svc.register(new, queues=[queue])
    (stale,) = svc.claim(old)
    assert svc.start(stale, old)
    assert svc.progress(stale, old, 30, "page 3")

    # The job is taken away from `old` (here: released) and claimed by `new`.
    assert svc.call(rpc.release_jobs(old, ids(stale["id"]))) == 1
    (fresh,) = svc.claim(new)
    assert fresh["id"] == stale["id"] and fresh["attempt"] == stale["attempt"] + 1
    assert svc.start(fresh, new)
    assert svc.progress(fresh, new, 10, "new owner")
    before = job_row(admin_db, job_id)

    assert svc.start(stale, old) is False
    assert svc.progress(stale, old, 99, "ghost") is False
    assert svc.complete(stale, old, {"from": "old"}) is False
    assert svc.fail(stale, old, "old failed") == []
    assert svc.call(rpc.complete_jobs(old, results([stale], {"from": "old"}))) == 0
    # The old worker with the new token is still not the owner.
    assert svc.complete(fresh, old, {"from": "old"}) is False
    assert job_row(admin_db, job_id) == before  # not a single column changed

    assert svc.complete(fresh, new, {"from": "new"})
    after = job_row(admin_db, job_id)
    assert (after["status"], after["result"], after["assigned_to"]) == (
        "completed",
        {"from": "new"},
        new,
    )


def test_the_attempt_fences_the_same_worker_across_reclaims(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    """A worker that gets the same job back (rescued, then claimed again) must not finish the
    new attempt with the old attempt's token: only the attempt number tells them apart."""
    queue = unique("fence-same")
    user = make_user()
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue)
    worker = unique("w-same")
    svc.register(worker, queues=[queue])
    (first,) = svc.claim(worker)
    assert svc.start(first, worker)
    assert svc.call(rpc.release_jobs(worker)) == 1
    (second,) = svc.claim(worker)
    assert second["attempt"] == first["attempt"] + 1
    before = job_row(admin_db, job_id)

    assert svc.start(first, worker) is False
    assert svc.progress(first, worker, 80, "old attempt") is False
    assert svc.complete(first, worker, {"attempt": "old"}) is False
    assert svc.fail(first, worker, "old attempt failed") == []
    assert svc.call(rpc.complete_jobs(worker, results([first], {}))) == 0
    assert job_row(admin_db, job_id) == before

    assert svc.start(second, worker)
    assert svc.complete(second, worker, {"attempt": "new"})
    assert job_row(admin_db, job_id)["result"] == {"attempt": "new"}


# -- retries --------------------------------------------------------------------------------
def test_backoff_grows_exponentially_is_jittered_and_capped(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    settings = admin_db.execute(
        "select backoff_base_seconds, backoff_max_seconds from public.queue_settings"
    ).fetchone()
    assert settings is not None
    base, cap = float(settings[0]), float(settings[1])
    queue = unique("backoff")
    user = make_user()
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue, max_attempts=100)
    worker = unique("w-backoff")
    svc.register(worker, queues=[queue])
    delays = []
    for n in range(1, 15):
        (job,) = svc.claim(worker)
        (row,) = svc.fail(job, worker, f"failure {n}")
        assert (row["status"], row["retry_count"], row["assigned_to"]) == ("pending", n, None)
        delay = delay_of(admin_db, job_id)
        nominal = min(base * 2 ** (n - 1), cap)
        assert nominal * 0.5 <= delay <= nominal, (n, delay)
        delays.append(delay)
        assert svc.claim(worker) == []  # not claimable during its backoff
        make_due(admin_db, job_id)
    assert delays[0] < delays[3] < delays[6] < delays[9]  # the bands do not overlap
    assert max(delays) <= cap

    # Jitter: jobs failing together come back at different times.
    queue2 = unique("jitter")
    ids = sql_enqueue(admin_db, make_documents(admin_db, user, 20), queue2)
    worker2 = unique("w-jitter")
    svc.register(worker2, slots=20, queues=[queue2])
    jobs = svc.claim(worker2, 20)
    assert len(jobs) == 20
    for job in jobs:
        svc.fail(job, worker2, "together")
    spread = sorted(delay_of(admin_db, j) for j in ids)
    assert all(base * 0.5 <= d <= base for d in spread)
    assert len({round(d, 3) for d in spread}) >= 15
    assert spread[-1] - spread[0] > base * 0.1


def delay_of(admin_db: Admin, job_id: uuid.UUID | str) -> float:
    # run_at was set from now() in the failing transaction, which also set updated_at.
    row = admin_db.execute(
        "select run_at - updated_at from public.processing_queue where id = %s", (job_id,)
    ).fetchone()
    assert row is not None and isinstance(row[0], timedelta)
    return float(row[0].total_seconds())


def test_max_attempts_ends_in_failed_with_the_error_kept(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("dlq")
    user = make_user()
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue, max_attempts=3)
    worker = unique("w-dlq")
    svc.register(worker, queues=[queue])
    for n in (1, 2):
        (job,) = svc.claim(worker)
        assert svc.fail(job, worker, f"attempt {n} broke")[0]["status"] == "pending"
        make_due(admin_db, job_id)
    (job,) = svc.claim(worker)
    assert svc.start(job, worker)
    (final,) = svc.fail(job, worker, "attempt 3 broke: bad PDF")
    assert (final["status"], final["retry_count"], final["error_message"]) == (
        "failed",
        3,
        "attempt 3 broke: bad PDF",
    )
    assert final["completed_at"] is not None and final["assigned_to"] == worker
    assert worker_row(admin_db, worker)["current_jobs"] == 0
    make_due(admin_db, job_id)
    assert svc.claim(worker) == []  # dead-lettered jobs are never claimed
    history = [
        (e[0], e[5]) for e in events(admin_db, job_id) if e[0] in ("retry_scheduled", "failed")
    ]
    assert history == [
        ("retry_scheduled", "attempt 1 broke"),
        ("retry_scheduled", "attempt 2 broke"),
        ("failed", "attempt 3 broke: bad PDF"),
    ]

    # A non-retryable failure is final at once.
    (other,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue, max_attempts=5)
    (job,) = svc.claim(worker)
    (row,) = svc.fail(job, worker, "unsupported format", retryable=False)
    assert (row["id"], row["status"], row["retry_count"], row["error_message"]) == (
        str(other),
        "failed",
        1,
        "unsupported format",
    )


def test_retry_job_and_retry_failed_jobs(
    api: Api,
    stack: StackConfig,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("retry")
    user = make_user()
    ids = sql_enqueue(admin_db, make_documents(admin_db, user, 4), queue, max_attempts=1)
    worker = unique("w-retry")
    svc.register(worker, slots=4, queues=[queue])
    jobs = svc.claim(worker, 3)
    for job in jobs[:2]:
        assert svc.fail(job, worker, "boom")[0]["status"] == "failed"
    running = jobs[2]
    pending = next(i for i in ids if str(i) not in {j["id"] for j in jobs})
    key = stack.service_role_key

    retried = api.call(key, rpc.retry_job(jobs[0]["id"]))
    assert retried.status == 200
    assert (
        retried.body["status"],
        retried.body["retry_count"],
        retried.body["error_message"],
        retried.body["attempt"],
    ) == ("pending", 0, None, jobs[0]["attempt"])
    assert api.call(key, rpc.retry_job(pending)).body["status"] == "pending"
    reply = api.call(key, rpc.retry_job(running["id"]))
    assert (reply.status, reply.code) == (409, "PT409")
    reply = api.call(key, rpc.retry_job(uuid.uuid4()))
    assert (reply.status, reply.code) == (404, "PT404")
    assert svc.complete(running, worker)
    reply = api.call(key, rpc.retry_job(running["id"]))
    assert (reply.status, reply.code) == (409, "PT409")  # completed: use enqueue_job

    assert svc.call(rpc.retry_failed_jobs(queue)) == 1  # jobs[1]
    assert job_row(admin_db, jobs[1]["id"])["status"] == "pending"
    assert svc.call(rpc.retry_failed_jobs(queue)) == 0


# -- cancel ---------------------------------------------------------------------------------
def test_cancel_pending_assigned_processing_and_finished(
    api: Api,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("cancel")
    owner, stranger = make_user(), make_user()
    ids = sql_enqueue(admin_db, make_documents(admin_db, owner, 4), queue)
    worker = unique("w-cancel")

    # pending -> cancelled at once (by its owner, through supabase-py)
    row = cast(dict[str, Any], send(SupabaseSyncTransport(owner.client), rpc.cancel_job(ids[0])))
    assert (row["status"], row["completed_at"] is not None) == ("cancelled", True)

    svc.register(worker, slots=5, queues=[queue])
    assigned, processing, done = svc.claim(worker, 3)
    assert svc.start(processing, worker) and svc.start(done, worker)
    assert svc.complete(done, worker, {"ok": 1})
    assert worker_row(admin_db, worker)["current_jobs"] == 2

    # a stranger may not cancel
    reply = api.call(stranger.token, rpc.cancel_job(assigned["id"]))
    assert (reply.status, reply.code) == (403, "PT403")
    assert job_row(admin_db, assigned["id"])["status"] == "assigned"

    # assigned -> cancelled at once; the worker is fenced out and its slot freed
    reply = api.call(owner.token, rpc.cancel_job(assigned["id"]))
    assert (reply.status, reply.body["status"]) == (200, "cancelled")
    assert svc.start(assigned, worker) is False
    assert worker_row(admin_db, worker)["current_jobs"] == 1

    # processing -> cancel requested; the worker learns it from its heartbeat
    reply = api.call(owner.token, rpc.cancel_job(processing["id"]))
    assert (reply.status, reply.body["status"], reply.body["cancel_requested"]) == (
        200,
        "processing",
        True,
    )
    assert svc.heartbeat(worker, [processing["id"]])["cancel"] == [processing["id"]]
    (ended,) = svc.fail(processing, worker, "cancelled on request", retryable=True)
    assert ended["status"] == "cancelled"  # not retried

    # finished -> returned unchanged
    reply = api.call(owner.token, rpc.cancel_job(done["id"]))
    assert (reply.status, reply.body["status"], reply.body["result"]) == (
        200,
        "completed",
        {"ok": 1},
    )
    reply = api.call(owner.token, rpc.cancel_job(uuid.uuid4()))
    assert (reply.status, reply.code) == (404, "PT404")

    assert [e[0] for e in events(admin_db, processing["id"])] == [
        "enqueued",
        "assigned",
        "started",
        "cancel_requested",
        "cancelled",
    ]
    assert worker_row(admin_db, worker)["current_jobs"] == 0


# -- release, heartbeat, registration --------------------------------------------------------
def test_release_and_deregister_hand_jobs_back_without_spending_a_retry(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("release")
    user = make_user()
    sql_enqueue(admin_db, make_documents(admin_db, user, 4), queue)
    worker = unique("w-release")
    svc.register(worker, slots=4, queues=[queue])
    a, b, c, d = svc.claim(worker, 4)
    assert svc.start(a, worker) and svc.progress(a, worker, 50, "half")

    assert svc.call(rpc.release_jobs(worker, ids(a["id"], b["id"]))) == 2
    for job in (a, b):
        row = job_row(admin_db, job["id"])
        assert (
            row["status"],
            row["retry_count"],
            row["attempt"],
            row["assigned_to"],
            row["progress_percent"],
            row["started_at"],
        ) == ("pending", 0, job["attempt"], None, None, None)
    assert job_row(admin_db, c["id"])["status"] == "assigned"
    assert worker_row(admin_db, worker)["current_jobs"] == 2
    assert [e[0] for e in events(admin_db, a["id"])][-1] == "released"

    svc.call(rpc.deregister_worker(worker))
    assert {job_row(admin_db, j["id"])["status"] for j in (c, d)} == {"pending"}
    assert (
        worker_row(admin_db, worker)["status"],
        worker_row(admin_db, worker)["current_jobs"],
    ) == ("offline", 0)


def test_heartbeat_reports_and_never_writes_job_rows(
    api: Api,
    stack: StackConfig,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("beat")
    user = make_user()
    sql_enqueue(admin_db, make_documents(admin_db, user, 3), queue)
    worker = unique("w-beat")
    svc.register(worker, slots=3, queues=[queue])
    a, b, c = svc.claim(worker, 3)
    assert svc.start(a, worker)
    svc.call(rpc.cancel_job(a["id"]))  # processing: cancel requested
    svc.call(rpc.release_jobs(worker, ids(c["id"])))  # c is gone
    ghost = str(uuid.uuid4())

    def snapshot() -> list[tuple[Any, ...]]:
        return admin_db.execute(
            "select id, xmin::text, updated_at from public.processing_queue where queue = %s"
            " order by id",
            (queue,),
        ).fetchall()

    before_rows = snapshot()
    before_events = admin_db.execute("select count(*) from public.job_events").fetchone()
    admin_db.execute(
        "update public.vps_workers set status = 'offline',"
        " last_heartbeat = now() - interval '1 minute' where worker_id = %s",
        (worker,),
    )
    reply = svc.heartbeat(worker, [a["id"], c["id"], ghost])
    assert reply == {
        "status": "active",  # offline -> active again
        "cancel": [a["id"]],
        "lost": sorted([c["id"], ghost]),
        "orphaned": [{"id": b["id"], "attempt": b["attempt"]}],
    }
    assert snapshot() == before_rows  # no job row was written
    assert admin_db.execute("select count(*) from public.job_events").fetchone() == before_events
    row = worker_row(admin_db, worker)
    assert row["status"] == "active" and row["current_jobs"] == 2
    assert admin_db.execute(
        "select now() - last_heartbeat < interval '5 seconds'"
        " from public.vps_workers where worker_id = %s",
        (worker,),
    ).fetchone() == (True,)

    reply_404 = api.call(stack.service_role_key, rpc.heartbeat_worker(unique("nobody"), []))
    assert (reply_404.status, reply_404.code) == (404, "PT404")


def test_registering_again_fails_the_previous_process_jobs(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    """A restarted worker (same worker_id) cannot hold jobs yet: the ones still assigned to
    its id died with the previous process, and each counts as a failed attempt, so a job that
    crashes its worker still reaches max_attempts however fast the restart."""
    queue = unique("restart")
    user = make_user()
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, user, 1), queue, max_attempts=2)
    worker = unique("w-restart")
    svc.register(worker, queues=[queue])
    (job,) = svc.claim(worker)
    assert svc.start(job, worker)
    registered = svc.register(worker, queues=[queue])
    assert registered["current_jobs"] == 0
    row = job_row(admin_db, job_id)
    assert (row["status"], row["retry_count"], row["assigned_to"]) == ("pending", 1, None)
    assert row["error_message"] == f"worker {worker} restarted while the job was running"
    make_due(admin_db, job_id)
    (job,) = svc.claim(worker)
    svc.register(worker, queues=[queue])
    assert job_row(admin_db, job_id)["status"] == "failed"  # the poison job stops here


def test_worker_argument_errors(api: Api, stack: StackConfig, unique: Callable[[str], str]) -> None:
    key = stack.service_role_key

    def register(worker_id: str, slots: int = 1) -> RpcCall[Any]:
        return rpc.register_worker(
            worker_id,
            worker_name=None,
            max_concurrent_jobs=slots,
            capabilities={},
            queues=None,
            host=None,
            version=None,
        )

    # A call of rpc.py, or RAW (function, parameters) for what rpc.py never sends.
    cases: list[tuple[RpcCall[Any] | tuple[str, dict[str, Any]], int, str]] = [
        (register(""), 400, "22023"),
        (register(unique("w"), slots=0), 400, "22023"),
        (("register_worker", {"p_worker_id": unique("w"), "p_capabilities": []}), 400, "22023"),
        (("register_worker", {"p_worker_id": unique("w"), "p_queues": []}), 400, "22023"),
        (rpc.set_worker_status(unique("w"), WorkerStatus.ACTIVE), 404, "PT404"),
        (rpc.set_worker_status(unique("w"), WorkerStatus.OFFLINE), 400, "22023"),
        (rpc.deregister_worker(unique("nobody")), 404, "PT404"),
        (("complete_jobs", {"p_worker_id": unique("w"), "p_jobs": {"id": 1}}), 400, "22023"),
        (
            ("complete_jobs", {"p_worker_id": unique("w"), "p_jobs": [{"id": str(uuid.uuid4())}]}),
            400,
            "22023",
        ),
        (rpc.report_progress(uuid.uuid4(), "w", 1, 101, None), 400, "22023"),
        (rpc.purge_finished_jobs(-86400), 400, "22023"),  # -1 day
    ]
    for sent, status, code in cases:
        reply = api.call(key, sent) if isinstance(sent, RpcCall) else api.rpc(key, *sent)
        assert (reply.status, reply.code) == (status, code), (sent, reply.body)


# -- housekeeping ---------------------------------------------------------------------------
def test_purge_removes_old_completed_and_cancelled_jobs_with_their_events(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("purge")
    user = make_user()
    old_done, old_cancelled, old_failed, new_done = sql_enqueue(
        admin_db, make_documents(admin_db, user, 4), queue, max_attempts=1
    )
    worker = unique("w-purge")
    svc.register(worker, slots=4, queues=[queue])
    jobs = {j["id"]: j for j in svc.claim(worker, 4)}
    svc.complete(jobs[str(old_done)], worker)
    svc.complete(jobs[str(new_done)], worker)
    svc.fail(jobs[str(old_failed)], worker, "kept for inspection")
    svc.call(rpc.release_jobs(worker, [old_cancelled]))
    svc.call(rpc.cancel_job(old_cancelled))
    admin_db.execute(
        "update public.processing_queue set completed_at = now() - interval '2 hours'"
        " where id = any(%s)",
        ([old_done, old_cancelled, old_failed],),
    )

    assert svc.call(rpc.purge_finished_jobs(3600)) >= 2  # an hour
    left = {
        r[0]
        for r in admin_db.execute(
            "select id from public.processing_queue where queue = %s", (queue,)
        ).fetchall()
    }
    assert left == {old_failed, new_done}
    orphan_events = admin_db.execute(
        "select count(*) from public.job_events where job_id = any(%s)",
        ([old_done, old_cancelled],),
    ).fetchone()
    assert orphan_events == (0,)
    assert events(admin_db, old_failed)  # kept with its job


def test_queue_stats_counts(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("stats")
    user = make_user()
    sql_enqueue(admin_db, make_documents(admin_db, user, 5), queue, max_attempts=1)
    worker = unique("w-stats")
    svc.register(worker, slots=3, queues=[queue])
    a, b, c = svc.claim(worker, 3)
    svc.start(b, worker)
    svc.complete(a, worker)
    svc.fail(c, worker, "x")
    admin_db.execute(
        "update public.processing_queue set run_at = now() - interval '90 seconds'"
        " where queue = %s and status = 'pending'",
        (queue,),
    )
    stats = svc.call(rpc.queue_stats())
    assert stats["by_queue"][queue] == {
        "pending": 2,
        "assigned": 0,
        "processing": 1,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert set(stats["by_status"]) == {
        "pending",
        "assigned",
        "processing",
        "completed",
        "failed",
        "cancelled",
    }
    assert stats["by_status"]["completed"] >= 1
    assert stats["oldest_pending_seconds"] >= 89
    assert stats["workers"]["active"] >= 1
    assert stats["completed_last_minute"] >= 1 and stats["completed_last_hour"] >= 1
    assert stats["failed_last_minute"] >= 1 and stats["failed_last_hour"] >= 1


def test_settings_payload_limit_is_configurable(
    api: Api,
    stack: StackConfig,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    user = make_user()
    (doc,) = make_documents(admin_db, user, 1)
    setting = admin_db.execute("select max_payload_bytes from public.queue_settings").fetchone()
    assert setting is not None
    limit = setting[0]
    payload = {"blob": "x" * 100}
    try:
        admin_db.execute("update public.queue_settings set max_payload_bytes = 50")
        reply = api.call(
            stack.service_role_key, rpc.enqueue_job(doc, payload=payload, queue=unique("limit"))
        )
        assert (reply.status, reply.code) == (413, "PT413")
    finally:
        admin_db.execute("update public.queue_settings set max_payload_bytes = %s", (limit,))
    reply = api.call(
        stack.service_role_key, rpc.enqueue_job(doc, payload=payload, queue=unique("limit"))
    )
    assert reply.status == 200 and reply.body["payload"] == payload
