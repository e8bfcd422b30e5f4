"""Fair order and the cost of the flow-controlled claim, in SQL (issue 18).

    .venv/bin/python bench/fair_claim.py [--pending 100000] [--owners 1000] [--claims 300]

1. The fairness scenario: user A queues 400 documents, then user B 8. A one-slot worker
   claims them one by one; B's wait is how many jobs were claimed before each of B's.
   "FIFO" is the order today's claim used (priority desc, run_at, created_at), read from the
   same rows in the same run; "fair" is what claim_next_job actually did.
2. The claim's cost with `--pending` jobs over `--owners` owners in one queue (enqueued with
   enqueue_jobs, 10,000 per call): claim_next_job(p_limit => 1 and 16) followed by
   complete_jobs, `--claims` times, p50/p99 in ms, for: the fast path (no limits), with
   queue_settings.max_running_per_user = 2, and with a concurrency_limits row and a
   rate_limits row in place (the turn-by-turn path).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import psycopg

from bench._common import admin, ensure_stack, fmt, machine, median, percentile, table
from supaworker_local.config import StackConfig


def users(conn: psycopg.Connection[Any], n: int) -> list[uuid.UUID]:
    rows = conn.execute(
        "insert into auth.users (id, aud, role, email) select gen_random_uuid(),"
        " 'authenticated', 'authenticated', 'fair-' || gen_random_uuid() || '@bench.test'"
        " from generate_series(1, %s)"
        " returning id",
        (n,),
    ).fetchall()
    return [uuid.UUID(str(r[0])) for r in rows]


def enqueue(conn: psycopg.Connection[Any], owner: uuid.UUID, queue: str, n: int) -> None:
    conn.execute(
        "with d as (insert into public.user_documents (user_id, name)"
        "  select %s, 'fair' from generate_series(1, %s) returning id)"
        " select count(public.enqueue_job(d.id, p_queue => %s)) from d",
        (owner, n, queue),
    )


def scenario(config: StackConfig) -> list[list[str]]:
    queue = f"fair-{uuid.uuid4().hex[:6]}"
    worker = f"{queue}-w"
    with admin(config) as conn:
        a, b = users(conn, 2)
        enqueue(conn, a, queue, 400)
        enqueue(conn, b, queue, 8)
        fifo = [
            str(r[0])
            for r in conn.execute(
                "select user_id from public.processing_queue where queue = %s"
                " order by priority desc, run_at, created_at",
                (queue,),
            ).fetchall()
        ]
        conn.execute("select public.register_worker(%s, p_queues => array[%s])", (worker, queue))
        fair = []
        for _ in range(408):
            row = conn.execute(
                "select id, user_id, attempt from public.claim_next_job(%s, 1)", (worker,)
            ).fetchone()
            assert row is not None
            conn.execute("select public.complete_job(%s, %s, %s, null)", (row[0], worker, row[2]))
            fair.append(str(row[1]))
    waits = {
        name: [i for i, owner in enumerate(order) if owner == str(b)]
        for name, order in (("FIFO (today's order)", fifo), ("fair (claim_next_job)", fair))
    }
    return [[name, str(w[0]), str(w[-1]), fmt(median(w))] for name, w in waits.items()]


def seed(config: StackConfig, queue: str, pending: int, owners: int) -> None:
    with admin(config) as conn:
        people = users(conn, owners)
        docs = conn.execute(
            "insert into public.user_documents (user_id, name)"
            " select (%s::uuid[])[1 + g %% %s], 'claim-cost' from generate_series(1, %s) g"
            " returning id",
            (people, owners, pending),
        ).fetchall()
        ids = [str(r[0]) for r in docs]
        began = time.perf_counter()
        for start in range(0, len(ids), 10000):
            batch = [{"user_document_id": d, "queue": queue} for d in ids[start : start + 10000]]
            conn.execute("select public.enqueue_jobs(%s::jsonb)", (json.dumps(batch),))
        print(
            f"seeded {pending} pending over {owners} owners with enqueue_jobs in "
            f"{time.perf_counter() - began:.1f} s"
        )
        conn.execute("analyze public.processing_queue")


def claim_cost(config: StackConfig, queue: str, limit: int, n: int) -> tuple[float, float]:
    worker = f"{queue}-cost-{limit}-{uuid.uuid4().hex[:4]}"
    times = []
    with psycopg.connect(config.db_url, autocommit=True) as conn:
        conn.execute(
            "select public.register_worker(%s, p_max_concurrent_jobs => %s, p_queues => array[%s])",
            (worker, limit, queue),
        )
        for _ in range(n):
            began = time.perf_counter()
            rows = conn.execute(
                "select id, attempt from public.claim_next_job(%s, %s)", (worker, limit)
            ).fetchall()
            times.append((time.perf_counter() - began) * 1000)
            done = [{"id": str(r[0]), "attempt": r[1], "result": None} for r in rows]
            conn.execute("select public.complete_jobs(%s, %s::jsonb)", (worker, json.dumps(done)))
    return median(times), percentile(times, 99)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=100000)
    parser.add_argument("--owners", type=int, default=1000)
    parser.add_argument("--claims", type=int, default=300)
    args = parser.parse_args()
    config = ensure_stack()
    print(machine())
    print("B's 8 jobs behind A's 400 (jobs claimed before each of B's):")
    print(table(["order", "B's first", "B's last", "B's median"], scenario(config)))

    queue = f"cost-{uuid.uuid4().hex[:6]}"
    seed(config, queue, args.pending, args.owners)
    key = f"bench-{uuid.uuid4().hex[:6]}"
    rows = []
    modes = [
        ("fast path (no limits)", "update public.queue_settings set max_running_per_user = null"),
        ("max_running_per_user = 2", "update public.queue_settings set max_running_per_user = 2"),
        (
            "+ a concurrency and a rate limit row",
            f"insert into public.concurrency_limits (key, max_running) values ('{key}', 5);"
            " insert into public.rate_limits (key, per_second, burst)"
            f" values ('{key}', 100000, 100000)",
        ),
    ]
    try:
        for name, sql in modes:
            with admin(config) as conn:
                conn.execute(sql)
            for limit in (1, 16):
                p50, p99 = claim_cost(config, queue, limit, args.claims)
                rows.append([name, str(limit), fmt(p50, 2), fmt(p99, 2)])
    finally:
        with admin(config) as conn:
            conn.execute("update public.queue_settings set max_running_per_user = null")
            conn.execute("delete from public.concurrency_limits where key = %s", (key,))
            conn.execute("delete from public.rate_limits where key = %s", (key,))
    print(f"claim_next_job + complete_jobs, {args.pending} pending over {args.owners} owners:")
    print(table(["claim", "p_limit", "p50 ms", "p99 ms"], rows))


if __name__ == "__main__":
    main()
