"""Migration 0027 (issue 20, write amplification): fewer index entries per job, same answers.

processing_queue's user_id and active-by-owner indexes became one (user_id, status) index;
job_events' primary key became (job_id, id) and its two other indexes went. These tests hold
what the readers of those indexes see: a job's history (job_history, the owner's own reads
through RLS, another user's none), the cascade, the per-owner cap and quota, and that the
hot queries still read an index, not the table.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from supaworker import rpc
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Api, Svc, make_documents, make_due, sql_enqueue

pytestmark = pytest.mark.stack


def test_indexes_after_0027(admin_db: Admin) -> None:
    def indexes(table: str) -> dict[str, str]:
        rows = admin_db.execute(
            "select indexrelid::regclass::text, pg_get_indexdef(indexrelid) from pg_index"
            " where indrelid = %s::regclass",
            (table,),
        ).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    queue = indexes("public.processing_queue")
    assert "processing_queue_user_id_idx" not in queue
    assert "processing_queue_active_by_owner_idx" not in queue
    assert queue["processing_queue_owner_status_idx"].endswith("USING btree (user_id, status)")
    events = indexes("public.job_events")
    assert list(events) == ["job_events_pkey"]
    assert events["job_events_pkey"].endswith("USING btree (job_id, id)")


def test_history_reads_are_unchanged(
    admin_db: Admin,
    svc: Svc,
    api: Api,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    """One job's whole life, read by each documented reader: job_history (the CLI's
    `supaworker job`, QueueClient.history), the owner through RLS, another user."""
    queue = unique("wal-hist")
    owner, stranger = make_user(), make_user()
    (doc,) = make_documents(admin_db, owner, 1)
    job = svc.call(rpc.enqueue_job(doc, queue=queue))
    worker = unique("w-hist")
    svc.register(worker, queues=[queue])
    (claimed,) = svc.claim(worker)
    assert svc.fail(claimed, worker, "first try broke")[0]["status"] == "pending"
    make_due(admin_db, job["id"])
    (claimed,) = svc.claim(worker)
    assert svc.start(claimed, worker)
    assert svc.complete(claimed, worker, {"ok": True})
    # A second cycle of the same document: requeued, then cancelled while pending.
    again = svc.call(rpc.enqueue_job(doc, queue=queue))
    assert again["id"] == job["id"] and again["status"] == "pending"
    svc.call(rpc.cancel_job(uuid.UUID(job["id"])))

    expected = [
        ("enqueued", None, "pending", None, 0, None),
        ("assigned", "pending", "assigned", worker, 1, None),
        ("retry_scheduled", "assigned", "pending", worker, 1, "first try broke"),
        ("assigned", "pending", "assigned", worker, 2, None),
        ("started", "assigned", "processing", worker, 2, None),
        ("completed", "processing", "completed", worker, 2, None),
        ("requeued", "completed", "pending", None, 2, None),
        ("cancelled", "pending", "cancelled", None, 2, None),
    ]

    def shape(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (r["event"], r["from_status"], r["to_status"], r["worker_id"], r["attempt"],
             r["message"])
            for r in rows
        ]  # fmt: skip

    history = svc.call(rpc.job_history(uuid.UUID(job["id"])))
    assert shape(history) == expected
    assert [r["id"] for r in history] == sorted(r["id"] for r in history)
    assert {r["user_id"] for r in history} == {str(owner.id)}

    own = api.table(owner.token, "GET", "job_events", f"?job_id=eq.{job['id']}&order=id")
    assert own.status == 200 and shape(own.body) == expected
    everything_own = api.table(owner.token, "GET", "job_events", "?order=id")
    assert everything_own.status == 200 and shape(everything_own.body) == expected
    assert api.table(stranger.token, "GET", "job_events", f"?job_id=eq.{job['id']}").body == []

    # The cascade (document deletion, purge) still takes the history with the job.
    admin_db.execute("delete from public.user_documents where id = %s", (doc,))
    row = admin_db.execute(
        "select count(*) from public.job_events where job_id = %s", (job["id"],)
    ).fetchone()
    assert row is not None and row[0] == 0


def test_owner_cap_and_quota_still_count_through_the_merged_index(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("wal-cap")
    owner = make_user()
    admin_db.execute(
        "update public.queue_settings set max_running_per_user = 2, max_pending_per_user = 4"
    )
    try:
        sql_enqueue(admin_db, make_documents(admin_db, owner, 4), queue)
        (extra,) = make_documents(admin_db, owner, 1)
        with pytest.raises(Exception, match="max_pending_per_user"):
            svc.call(rpc.enqueue_job(extra, queue=queue))
        worker = unique("w-cap")
        svc.register(worker, slots=10, queues=[queue])
        assert len(svc.claim(worker, limit=10)) == 2  # the owner's cap, not the slots
    finally:
        admin_db.execute(
            "update public.queue_settings set max_running_per_user = null,"
            " max_pending_per_user = null"
        )


def _plan(admin_db: Admin, sql: str, params: tuple[Any, ...]) -> str:
    row = admin_db.execute("explain (format json) " + sql, params).fetchone()
    assert row is not None
    return json.dumps(row[0])


def test_hot_queries_still_read_an_index(
    admin_db: Admin, make_user: Callable[..., StackUser], unique: Callable[[str], str]
) -> None:
    """With 200 owners' jobs (pending, running, finished) and their events, the owner and
    history reads and the cap/quota counts use the indexes 0027 left (as analyzed, not
    forced)."""
    queue = unique("wal-plan")
    owner = make_user()
    admin_db.execute(
        "with u as (insert into auth.users (id, aud, role, email)"
        "   select gen_random_uuid(), 'authenticated', 'authenticated',"
        "          'wal-plan-' || g || '-' || %s || '@example.test'"
        "     from generate_series(1, 200) g returning id),"
        " d as (insert into public.user_documents (user_id, name)"
        "   select u.id, 'doc' from u, generate_series(1, 40) returning id, user_id)"
        " insert into public.processing_queue (user_document_id, user_id, queue, status,"
        "   assigned_to, completed_at)"
        " select d.id, d.user_id, %s, s.status,"
        "        case when s.status <> 'pending' then 'wal-plan-worker' end,"
        "        case when s.status = 'completed' then now() end"
        "   from (select d.*, row_number() over () as n from d) d"
        "   cross join lateral (select (array['pending', 'processing', 'completed',"
        "        'completed'])[1 + d.n %% 4] as status) s",
        (queue, queue),
    )
    (doc,) = make_documents(admin_db, owner, 1)
    (job_id,) = sql_enqueue(admin_db, [doc], queue)
    admin_db.execute("analyze public.processing_queue")
    admin_db.execute("analyze public.job_events")

    cap = _plan(
        admin_db,
        "select count(*) from public.processing_queue q"
        " where q.user_id = %s and q.status in ('assigned', 'processing')",
        (owner.id,),
    )
    assert "processing_queue_owner_status_idx" in cap
    own_jobs = _plan(
        admin_db, "select * from public.processing_queue q where q.user_id = %s", (owner.id,)
    )
    assert "processing_queue_owner_status_idx" in own_jobs
    history = _plan(
        admin_db,
        "select * from public.job_events e where e.job_id = %s order by e.id",
        (job_id,),
    )
    assert "job_events_pkey" in history and '"Seq Scan"' not in history
