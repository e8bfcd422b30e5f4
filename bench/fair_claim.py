"""Fair order and the cost of the flow-controlled claim, in SQL (issue 18).

    .venv/bin/python bench/fair_claim.py [--pending 100000] [--owners 1000] [--claims 60]
                                          [--rounds 10]

1. The fairness scenario: user A queues 400 documents, then user B 8. A one-slot worker
   claims them one by one; B's wait is how many jobs were claimed before each of B's.
   "FIFO" is the order today's claim used (priority desc, run_at, created_at), read from the
   same rows in the same run; "fair" is what claim_next_job actually did.
2. The claim's cost with `--pending` jobs over `--owners` owners in one queue (enqueued with
   enqueue_jobs, 10,000 per call): claim_next_job(p_limit => 1 and 16) followed by
   complete_jobs, `--claims` times per round, p50/p99 in ms over every round's claims, for:
   the claim as it was before flow control (d021068's claim_jobs and its indexes, put in
   place for its rows only by bench/_preflow.py, whose docstring says exactly what was
   adapted), the fast path (no limits), with queue_settings.max_running_per_user = 2, and
   with a concurrency_limits row and a rate_limits row in place as well (the turn-by-turn
   path). Each round runs the eight (claim, p_limit) rows in a shuffled order on the same
   seeded rows, each after a VACUUM of processing_queue; many short rounds rather than a few
   long ones, so that a burst of load on a shared machine lands on every row alike; the queue
   is seeded with `--pending` jobs plus as many as the rounds can claim, so the backlog never
   falls below `--pending`. `--other-backlog N` first enqueues N pending jobs in a second
   queue, older than the measured ones (the claims name their own queue; the old claim's
   plan then changes, see docs/benchmarks.md). `--before-0028` adds the two turn-by-turn
   rows with migration 0025's claim_jobs in place for them (bench/_preflow.migration_claim),
   the claim that 0028 replaced, on the same rows in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import psycopg

from bench import _preflow
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


def cleanup(config: StackConfig) -> None:
    """Remove what earlier runs of this script left: their owners (and, by cascade, the
    owners' documents, jobs and events) and workers. Another queue's pending backlog changes
    what the claim costs (see docs/benchmarks.md), so every run starts without one."""
    with admin(config) as conn:
        conn.execute("delete from auth.users where email like 'fair-%%@bench.test'")
        conn.execute(
            "delete from public.vps_workers where worker_id like 'cost-%%'"
            " or worker_id like 'fair-%%'"
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


def claim_cost(config: StackConfig, queue: str, limit: int, n: int) -> list[float]:
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
    return times


LIMITS = (1, 16)
BEFORE_0028 = "0025_one_queue_claim.sql"  # the claim_jobs that migration 0028 replaced


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=100000)
    parser.add_argument("--owners", type=int, default=1000)
    parser.add_argument("--claims", type=int, default=60, help="claims per row and round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--other-backlog",
        type=int,
        default=0,
        help="pending jobs enqueued first in another queue (older than the measured ones)",
    )
    parser.add_argument(
        "--before-0028",
        action="store_true",
        help="also the turn-by-turn rows with the claim before migration 0028 (0025's)",
    )
    args = parser.parse_args()
    config = ensure_stack()
    with admin(config) as conn:
        _preflow.restore(conn)  # a run killed inside _preflow.installed left the old claim
    cleanup(config)
    print(machine())
    print("B's 8 jobs behind A's 400 (jobs claimed before each of B's):")
    print(table(["order", "B's first", "B's last", "B's median"], scenario(config)))

    key = f"bench-{uuid.uuid4().hex[:6]}"
    plain = (
        "update public.queue_settings set max_running_per_user = null;"
        f" delete from public.concurrency_limits where key = '{key}';"
        f" delete from public.rate_limits where key = '{key}'"
    )
    capped = plain.replace("= null", "= 2", 1)
    keyed = (
        capped + f"; insert into public.concurrency_limits (key, max_running) values ('{key}', 5);"
        " insert into public.rate_limits (key, per_second, burst)"
        f" values ('{key}', 100000, 100000)"
    )
    # (row name, settings for it, run with the pre-flow-control claim in place, or with the
    # claim_jobs of this migration)
    modes: list[tuple[str, str, bool, str | None]] = [
        (f"before flow control ({_preflow.PREFLOW_REF}'s claim, FIFO)", plain, True, None),
        ("fast path (no limits)", plain, False, None),
        ("max_running_per_user = 2", capped, False, None),
        ("+ a concurrency and a rate limit row", keyed, False, None),
    ]
    if args.before_0028:
        modes += [
            ("max_running_per_user = 2, 0025's claim (before 0028)", capped, False, BEFORE_0028),
            ("+ a concurrency and a rate limit row, 0025's claim", keyed, False, BEFORE_0028),
        ]
    cells = [(m, limit) for m in range(len(modes)) for limit in LIMITS]
    queue = f"cost-{uuid.uuid4().hex[:6]}"
    most = args.rounds * args.claims * len(modes) * sum(LIMITS)  # what the rounds can claim
    with admin(config) as conn:
        # The old claim's indexes for the whole run, so that they collect the same dead
        # entries as the current ones (both index pending rows only: a claim writes neither).
        _preflow.create_old_indexes(conn)
    if args.other_backlog:
        seed(config, f"other-{uuid.uuid4().hex[:6]}", args.other_backlog, args.owners)
    seed(config, queue, args.pending + most, args.owners)
    times: dict[tuple[int, int], list[float]] = {c: [] for c in cells}
    p50s: dict[tuple[int, int], list[float]] = {c: [] for c in cells}
    try:
        for r in range(args.rounds):
            random.shuffle(cells)
            for m, limit in cells:
                name, sql, preflow, migration = modes[m]
                with admin(config) as conn:
                    conn.execute(sql)
                    # Every row starts from the same table: no dead index entries or heap
                    # versions left by the rows before it (autovacuum would come at random).
                    conn.execute("vacuum public.processing_queue")
                    with (
                        _preflow.installed(conn, active=preflow, keep_old_indexes=True),
                        _preflow.migration_claim(conn, migration),
                    ):
                        got = claim_cost(config, queue, limit, args.claims)
                times[(m, limit)] += got
                p50s[(m, limit)].append(median(got))
                print(f"  round {r + 1} {name:50} p_limit {limit:2d} p50 {median(got):6.2f} ms")
    finally:
        with admin(config) as conn:
            row = conn.execute(
                "select count(*) from public.processing_queue"
                " where queue = %s and status = 'pending'",
                (queue,),
            ).fetchone()
            conn.execute(plain)
            _preflow.restore(conn)
        cleanup(config)
    left = row[0] if row else 0
    rows = [
        [
            modes[m][0],
            str(limit),
            fmt(median(times[(m, limit)]), 2),
            fmt(percentile(times[(m, limit)], 99), 2),
            f"{fmt(min(p50s[(m, limit)]), 2)}-{fmt(max(p50s[(m, limit)]), 2)}",
        ]
        for m in range(len(modes))
        for limit in LIMITS
    ]
    print(
        f"claim_next_job + complete_jobs, {args.pending + most} seeded over {args.owners} owners"
        f" ({left} still pending at the end; {args.other_backlog} older ones in another queue),"
        f" {args.rounds} rounds x {args.claims} claims per row:"
    )
    print(table(["claim", "p_limit", "p50 ms", "p99 ms", "p50 range over rounds"], rows))


if __name__ == "__main__":
    main()
