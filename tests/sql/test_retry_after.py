"""fail_job(..., p_retry_after_seconds) (migration 20261128001600): a handler that says when to
retry sets the delay, capped by backoff_max_seconds; the five-argument call of older workers
keeps the exponential backoff."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from supaworker import rpc
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Api, Svc, make_documents, sql_enqueue
from tests.sql.test_lifecycle import delay_of

pytestmark = pytest.mark.stack


def fail_after(
    svc: Svc, job: dict[str, Any], worker: str, *, retry_after: int, retryable: bool = True
) -> list[Any]:
    rows: list[Any] = svc.call(
        rpc.fail_job(
            uuid.UUID(job["id"]),
            worker,
            job["attempt"],
            "busy",
            retryable=retryable,
            retry_after_seconds=retry_after,
        )
    )
    return rows


def test_retry_after_sets_the_delay_capped_and_old_calls_keep_the_backoff(
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
    queue = unique("retry-after")
    ids = sql_enqueue(admin_db, make_documents(admin_db, make_user(), 4), queue, p_max_attempts=5)
    worker = unique("w-retry-after")
    svc.register(worker, slots=4, queues=[queue])
    jobs = {j["id"]: j for j in svc.claim(worker, 4)}
    explicit, capped, zero, old = (jobs[str(i)] for i in ids)

    (row,) = fail_after(svc, explicit, worker, retry_after=7)
    assert (row["status"], row["retry_count"]) == ("pending", 1)
    assert delay_of(admin_db, explicit["id"]) == 7
    fail_after(svc, capped, worker, retry_after=10 * int(cap))
    assert delay_of(admin_db, capped["id"]) == cap
    fail_after(svc, zero, worker, retry_after=0)
    assert delay_of(admin_db, zero["id"]) == 0
    (row,) = svc.fail(old, worker, "busy")  # the five named parameters of older workers
    assert row["status"] == "pending"
    assert base * 0.5 <= delay_of(admin_db, old["id"]) <= base


def test_retry_after_changes_only_the_delay_not_whether_to_retry(
    admin_db: Admin,
    svc: Svc,
    api: Api,
    stack: StackConfig,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    queue = unique("retry-after")
    ids = sql_enqueue(admin_db, make_documents(admin_db, make_user(), 2), queue)
    worker = unique("w-retry-after")
    svc.register(worker, slots=2, queues=[queue])
    permanent, negative = svc.claim(worker, 2)
    (row,) = fail_after(svc, permanent, worker, retryable=False, retry_after=5)
    assert (row["status"], row["retry_count"]) == ("failed", 1)
    assert {str(i) for i in ids} == {permanent["id"], negative["id"]}

    reply = api.rpc(
        stack.service_role_key,
        "fail_job",
        {
            "p_job_id": negative["id"],
            "p_worker_id": worker,
            "p_attempt": negative["attempt"],
            "p_error": "busy",
            "p_retry_after_seconds": -1,
        },
    )
    assert (reply.status, reply.code) == (400, "22023"), reply
    assert "p_retry_after_seconds must be >= 0" in reply.body["message"]
    status = admin_db.execute(
        "select status from public.processing_queue where id = %s", (negative["id"],)
    ).fetchone()
    assert status == ("assigned",)  # unchanged: refused before anything was written
