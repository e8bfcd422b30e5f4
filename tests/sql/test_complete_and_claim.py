"""complete_and_claim: completions then a starting claim in one call, fenced, with prefetch."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from supaworker import rpc
from supaworker.exceptions import RpcError
from supaworker.models import WorkerStatus
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Svc, make_documents, results, sql_enqueue, worker_row

pytestmark = pytest.mark.stack


def exchange(
    svc: Svc,
    worker_id: str,
    done: list[dict[str, Any]],
    limit: int,
    *,
    queues: list[str] | None = None,
    prefetch: int = 0,
    result: Any = None,
) -> dict[str, Any]:
    reply: dict[str, Any] = svc.call(
        rpc.complete_and_claim(worker_id, results(done, result), limit, queues, prefetch=prefetch)
    )
    return reply


def test_completions_free_slots_that_the_same_call_claims(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("cac")
    ids = sql_enqueue(admin_db, make_documents(admin_db, make_user(), 4), queue)
    worker = unique("w-cac")
    svc.register(worker, slots=2, queues=[queue])

    first = exchange(svc, worker, [], 2)
    assert first["completed"] == []
    held = first["claimed"]
    assert len(held) == 2 and {j["id"] for j in held} <= {str(i) for i in ids}
    assert all(j["status"] == "processing" and j["started_at"] for j in held)
    # Both slots are taken: completing both in the same call frees them for its claim.
    second = exchange(svc, worker, held, 2, result={"ok": True})
    assert sorted(second["completed"]) == sorted(j["id"] for j in held)
    assert {j["id"] for j in second["claimed"]} == {str(i) for i in ids} - {j["id"] for j in held}
    rows = dict(
        admin_db.execute(
            "select id::text, status from public.processing_queue where queue = %s", (queue,)
        ).fetchall()
    )
    assert [rows[j["id"]] for j in held] == ["completed", "completed"]
    assert [rows[j["id"]] for j in second["claimed"]] == ["processing", "processing"]
    assert worker_row(admin_db, worker)["current_jobs"] == 2
    events = admin_db.execute(
        "select event from public.job_events where job_id = %s order by id", (held[0]["id"],)
    ).fetchall()
    assert events == [("enqueued",), ("started",), ("completed",)]


def test_fenced_out_completions_are_not_reported_completed(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("cac-fence")
    sql_enqueue(admin_db, make_documents(admin_db, make_user(), 2), queue)
    worker, other = unique("w-a"), unique("w-b")
    svc.register(worker, slots=2, queues=[queue])
    svc.register(other, slots=2, queues=[queue])
    mine, stale = exchange(svc, worker, [], 2)["claimed"]
    # `stale` is taken away (released, then claimed by another worker at a new attempt).
    assert svc.call(rpc.release_jobs(worker, [uuid.UUID(stale["id"])])) == 1
    (theirs,) = exchange(svc, other, [], 1)["claimed"]
    assert theirs["id"] == stale["id"] and theirs["attempt"] == stale["attempt"] + 1

    reply = exchange(svc, worker, [mine, stale], 0)
    assert reply == {"completed": [mine["id"]], "claimed": []}
    status = admin_db.execute(
        "select status, assigned_to from public.processing_queue where id = %s", (stale["id"],)
    ).fetchone()
    assert status == ("processing", other)


def test_prefetch_lets_a_worker_hold_more_than_its_slots(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("cac-pre")
    sql_enqueue(admin_db, make_documents(admin_db, make_user(), 10), queue)
    worker = unique("w-pre")
    svc.register(worker, slots=1, queues=[queue])
    assert len(exchange(svc, worker, [], 10)["claimed"]) == 1  # no prefetch: the one slot
    held = exchange(svc, worker, [], 10, prefetch=3)["claimed"]
    assert len(held) == 3  # 1 slot + 3 prefetch - 1 held
    assert worker_row(admin_db, worker)["current_jobs"] == 4
    assert exchange(svc, worker, [], 10, prefetch=3)["claimed"] == []
    # claim_next_job never prefetches.
    assert svc.claim(worker, 10) == []


def test_paused_worker_completes_but_claims_nothing(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("cac-pause")
    sql_enqueue(admin_db, make_documents(admin_db, make_user(), 3), queue)
    worker = unique("w-pause")
    svc.register(worker, slots=1, queues=[queue])
    (job,) = exchange(svc, worker, [], 1)["claimed"]
    svc.call(rpc.set_worker_status(worker, WorkerStatus.PAUSED))
    assert exchange(svc, worker, [job], 1) == {"completed": [job["id"]], "claimed": []}
    pending = admin_db.execute(
        "select count(*) from public.processing_queue where queue = %s and status = 'pending'",
        (queue,),
    ).fetchone()
    assert pending == (2,)


def _refused_and_nothing_changed(
    admin_db: Admin, svc: Svc, queue: str, worker: str, message: str, send: Callable[[str], Any]
) -> None:
    svc.register(worker, slots=1, queues=[queue])
    with pytest.raises(RpcError) as refused:
        send(worker)
    assert refused.value.code == "22023"
    assert message in str(refused.value)
    status = admin_db.execute(
        "select status from public.processing_queue where queue = %s", (queue,)
    ).fetchone()
    assert status == ("pending",)


@pytest.mark.parametrize(
    ("limit", "prefetch", "message"),
    [
        (-1, 0, "p_limit must be between 0 and 1000"),
        (1001, 0, "p_limit must be between 0 and 1000"),
        (1, -1, "p_prefetch must be between 0 and 1000"),
        (1, 1001, "p_prefetch must be between 0 and 1000"),
    ],
)
def test_bad_arguments_are_refused_and_change_nothing(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    limit: int,
    prefetch: int,
    message: str,
) -> None:
    queue = unique("cac-bad")
    sql_enqueue(admin_db, make_documents(admin_db, make_user(), 1), queue)
    _refused_and_nothing_changed(
        admin_db,
        svc,
        queue,
        unique("w-bad"),
        message,
        lambda worker: svc.call(rpc.complete_and_claim(worker, [], limit, None, prefetch=prefetch)),
    )


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ({"id": 1}, "p_jobs must be a JSON array"),
        ([{"id": "x"}], 'every element of p_jobs needs "id" and "attempt"'),
    ],
)
def test_malformed_jobs_are_refused_and_change_nothing(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    jobs: Any,
    message: str,
) -> None:
    queue = unique("cac-bad")
    sql_enqueue(admin_db, make_documents(admin_db, make_user(), 1), queue)
    _refused_and_nothing_changed(
        admin_db,
        svc,
        queue,
        unique("w-bad"),
        message,
        # RAW: a p_jobs rpc.py cannot build (its results are always (id, attempt, result)).
        lambda worker: svc.transport.call(
            "complete_and_claim", {"p_worker_id": worker, "p_limit": 1, "p_jobs": jobs}
        ),
    )


@pytest.mark.timeout(300)
def test_racing_exchangers_take_every_job_exactly_once(
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    new_svc: Callable[[], Svc],
) -> None:
    """8 workers loop on complete_and_claim (complete what they hold, claim the next, with
    prefetch) over 2,000 jobs: each job is claimed once, completed once, none is left."""
    queue = unique("cac-race")
    docs = make_documents(admin_db, make_user(), 2000)
    admin_db.execute(
        "select count(public.enqueue_job(p_user_document_id => d, p_queue => %s))"
        " from unnest(%s::uuid[]) d",
        (queue, docs),
    )
    claimed: dict[str, list[str]] = {}
    completed: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        worker_id = f"{queue}-w{n}"
        claimed[worker_id], completed[worker_id] = [], []
        try:
            svc = new_svc()
            svc.register(worker_id, slots=10, queues=[queue])
            start.wait()
            held: list[dict[str, Any]] = []
            while True:
                reply = exchange(svc, worker_id, held, 15, prefetch=5, result={"by": n})
                assert sorted(reply["completed"]) == sorted(j["id"] for j in held)
                completed[worker_id].extend(reply["completed"])
                held = reply["claimed"]
                assert all(j["assigned_to"] == worker_id and j["attempt"] == 1 for j in held)
                claimed[worker_id].extend(j["id"] for j in held)
                if not held:
                    break
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    every_claim = [j for jobs in claimed.values() for j in jobs]
    assert [j for j, n in Counter(every_claim).items() if n > 1] == []
    assert len(every_claim) == 2000
    assert sorted(every_claim) == sorted(j for jobs in completed.values() for j in jobs)
    assert sum(1 for jobs in claimed.values() if jobs) > 1  # the work was really shared
    rows = admin_db.execute(
        "select status, count(*) from public.processing_queue where queue = %s group by 1",
        (queue,),
    ).fetchall()
    assert rows == [("completed", 2000)]
    busy = admin_db.execute(
        "select sum(current_jobs) from public.vps_workers where worker_id like %s", (f"{queue}-w%",)
    ).fetchone()
    assert busy == (0,)
