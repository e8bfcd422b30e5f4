"""Concurrency keys and rate limits (issue 18): never more running jobs of a key than
concurrency_limits allows and never more starts than its rate_limits bucket holds, under
concurrent claimers; users may not set the keys."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from supaworker import rpc
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Api, Svc, make_documents, sql_enqueue

pytestmark = pytest.mark.stack


@pytest.fixture
def key(admin_db: Admin) -> Iterator[str]:
    """A key of the test's own; its limit rows are removed after it (they are global)."""
    name = f"key-{uuid.uuid4().hex[:8]}"
    yield name
    for table in ("public.concurrency_limits", "public.rate_limits"):
        admin_db.execute(f"delete from {table} where key = %s", (name,))


def claim_race(
    new_svc: Callable[[], Svc], queue: str, workers: int, until: float, hold: float
) -> tuple[list[BaseException], list[float]]:
    """`workers` threads claim and complete until `until`; returns errors and claim times."""
    errors: list[BaseException] = []
    starts: list[float] = []

    def claimer(n: int) -> None:
        try:
            svc = new_svc()
            worker = f"{queue}-w{n}"
            svc.register(worker, slots=3, queues=[queue])
            while time.monotonic() < until:
                jobs = svc.claim(worker, 3)
                starts.extend(time.monotonic() for _ in jobs)
                time.sleep(hold)
                for job in jobs:
                    assert svc.complete(job, worker)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    return errors, starts


def test_concurrent_claimers_never_exceed_a_concurrency_key(
    admin_db: Admin,
    stack: StackConfig,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    new_svc: Callable[[], Svc],
    key: str,
) -> None:
    queue = unique("ckey")
    users = [make_user() for _ in range(3)]
    for user in users:
        sql_enqueue(admin_db, make_documents(admin_db, user, 40), queue, concurrency_key=key)
    admin_db.execute(
        "insert into public.concurrency_limits (key, max_running) values (%s, 2)", (key,)
    )
    peaks: list[int] = []
    done = threading.Event()

    def sampler() -> None:
        with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "select count(*) from public.processing_queue where concurrency_key = %s"
                    " and status in ('assigned', 'processing')",
                    (key,),
                ).fetchone()
                assert row is not None
                peaks.append(int(str(row[0])))

    watch = threading.Thread(target=sampler)
    watch.start()
    errors, starts = claim_race(new_svc, queue, 6, time.monotonic() + 20, 0.01)
    done.set()
    watch.join(timeout=10)
    assert not errors, errors
    assert peaks and max(peaks) <= 2 and 2 in peaks, max(peaks)
    left = admin_db.execute(
        "select count(*) from public.processing_queue where queue = %s and status <> 'completed'",
        (queue,),
    ).fetchone()
    assert left == (0,) and len(starts) == 120


def test_a_rate_limit_bounds_starts_cluster_wide(
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    new_svc: Callable[[], Svc],
    key: str,
) -> None:
    """5 per second with a burst of 3, 6 claimers for 3 s: at most 3 + 5 * 3 starts (plus the
    token in flight at the end), whatever the number of workers."""
    queue = unique("rkey")
    sql_enqueue(admin_db, make_documents(admin_db, make_user(), 200), queue, rate_limit_key=key)
    admin_db.execute(
        "insert into public.rate_limits (key, per_second, burst) values (%s, 5, 3)", (key,)
    )
    began = time.monotonic()
    errors, starts = claim_race(new_svc, queue, 6, began + 3, 0.01)
    assert not errors, errors
    within = [s - began for s in starts if s - began <= 3]
    assert 3 + 5 * 2 <= len(within) <= 3 + 5 * 3 + 1, len(within)
    assert len([s for s in within if s <= 0.5]) <= 3 + 5 * 0.5 + 1  # the burst, then the rate


def test_users_may_not_set_the_keys(
    api: Api,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    user = make_user()
    doc, other = make_documents(admin_db, user, 2)
    reply = api.call(user.token, rpc.enqueue_job(doc, concurrency_key="ocr-gpu"))
    assert (reply.status, reply.code) == (403, "PT403")
    assert "only the service role may set p_concurrency_key" in reply.body["message"]
    bulk = api.call(user.token, rpc.enqueue_jobs([(other, {"rate_limit_key": "ocr"})]))
    assert bulk.body["message"] == "p_jobs[0]: only the service role may set rate_limit_key"
    job = svc.call(rpc.enqueue_job(doc, queue=unique("keys"), concurrency_key="ocr-gpu"))
    assert (job["concurrency_key"], job["rate_limit_key"]) == ("ocr-gpu", None)
    rows = svc.call(rpc.enqueue_jobs([(other, {"rate_limit_key": "ocr"})], queue=unique("k")))
    assert rows[0]["rate_limit_key"] == "ocr"
