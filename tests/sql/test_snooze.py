"""snooze_job (issue 18): back to pending for a while without spending an attempt, shown in
job_events, fenced like fail_job; a cancel request wins; a new cycle resets the count."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supaworker import rpc
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Svc, events, job_row, make_documents, sql_enqueue, worker_row

pytestmark = pytest.mark.stack


def test_a_snoozed_job_keeps_its_retry_count_and_shows_in_its_history(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("snooze")
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, make_user(), 1), queue)
    worker = unique("w-snooze")
    svc.register(worker, slots=2, queues=[queue])
    (job,) = svc.claim(worker, 1)
    svc.fail(job, worker, "flaky")  # one real failed attempt first
    admin_db.execute("update public.processing_queue set run_at = now() where id = %s", (job_id,))
    (job,) = svc.claim(worker, 1)
    before = job_row(admin_db, job_id)
    (row,) = svc.call(rpc.snooze_job(job_id, worker, job["attempt"], 120))
    assert (row["status"], row["retry_count"], row["snooze_count"], row["assigned_to"]) == (
        "pending",
        1,
        1,
        None,
    )
    after = job_row(admin_db, job_id)
    assert 119 <= (after["run_at"] - before["assigned_at"]).total_seconds() <= 180
    assert after["fair_tag"] == before["fair_tag"]  # it keeps its place in line
    assert worker_row(admin_db, worker)["current_jobs"] == 0
    history = events(admin_db, job_id)
    assert history[-1][0] == "snoozed", history
    assert svc.call(rpc.snooze_job(job_id, worker, job["attempt"], 120)) == []  # fenced
    svc.call(rpc.cancel_job(job_id))
    svc.call(rpc.retry_job(job_id))
    assert job_row(admin_db, job_id)["snooze_count"] == 0  # a new cycle


def test_a_snooze_of_a_job_with_a_cancel_request_cancels_it(
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("snooze-cancel")
    (job_id,) = sql_enqueue(admin_db, make_documents(admin_db, make_user(), 1), queue)
    worker = unique("w-snooze-c")
    svc.register(worker, slots=1, queues=[queue])
    (job,) = svc.claim(worker, 1)
    assert svc.start(job, worker)
    svc.call(rpc.cancel_job(job_id))
    (row,) = svc.call(rpc.snooze_job(job_id, worker, job["attempt"], 60))
    assert (row["status"], row["snooze_count"]) == ("cancelled", 0)
