"""Throughput and claim latency as finished rows pile up, and what retention does about it.

    .venv/bin/python bench/growth.py [--full]

For 10^3, 10^4, 10^5 (and 10^6 with --full) finished rows kept in `processing_queue`
(completed two days ago, inserted in one statement with triggers off, so without their
job_events), three states are measured:
  kept       the rows are there (after VACUUM ANALYZE, as autovacuum would leave them)
  purged     right after `purge_finished_jobs('1 day')` deleted them (dead tuples remain)
  vacuumed   after the purge and a VACUUM ANALYZE (what autovacuum does next)

In each state:
  claim p50  `claim_next_job(1)` called in SQL (psycopg, as postgres) with 200 pending jobs
             in the queue, each claim followed by `complete_job`; 100 claims, median
  HTTP claim the same through the API (AsyncQueueClient.claim), 50 claims, median
  jobs/s     300 no-op jobs through one `supaworker run --burst --concurrency 8`
The purge itself is timed. Each measurement adds ~400 finished rows of its own.
Last, the SQL claim p50 with 10^3..10^5 jobs *pending* in the claimed queue (a backlog).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import psycopg

from bench import _report
from bench._common import (
    admin,
    ensure_stack,
    finished_window,
    fmt,
    machine,
    median,
    reset_queue,
    seed_jobs,
    start_workers,
    table,
    wait_all,
)
from supaworker.client import AsyncQueueClient
from supaworker_local.config import StackConfig

PROBE = "growth-probe"


def claim_sql(config: StackConfig, n: int = 100) -> float:
    queue = f"gc-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        seed_jobs(conn, n * 2, queue)
        conn.execute("analyze public.processing_queue")
    times = []
    with psycopg.connect(config.db_url, autocommit=True) as conn:
        for _ in range(n):
            began = time.perf_counter()
            row = conn.execute(
                "select id, attempt from public.claim_next_job(%s, 1, %s)", (PROBE, [queue])
            ).fetchone()
            times.append(time.perf_counter() - began)
            assert row is not None
            conn.execute("select public.complete_job(%s, %s, %s, null)", (row[0], PROBE, row[1]))
    return median(times)


def claim_http(config: StackConfig, n: int = 50) -> float:
    queue = f"gh-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        seed_jobs(conn, n, queue)

    async def run() -> float:
        client = await AsyncQueueClient.connect(config.api_url, config.service_role_key)
        times = []
        try:
            for _ in range(n):
                began = time.perf_counter()
                jobs = await client.claim(PROBE, 1, [queue])
                times.append(time.perf_counter() - began)
                for job in jobs:
                    await client.complete(job, PROBE, None)
        finally:
            await client.aclose()
        return median(times)

    return asyncio.run(run())


def throughput(config: StackConfig, n: int = 300) -> float:
    queue = f"gt-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        seed_jobs(conn, n, queue)
    procs = start_workers(
        config, 1, "--burst", "--queue", queue, "--concurrency", "8", prefix=queue
    )
    wait_all(procs, timeout=180)
    with admin(config) as conn:
        done, t0, t1 = finished_window(conn, queue)
    return done / (t1 - t0) if t1 > t0 else float("nan")


def backlog(config: StackConfig, pending: int) -> dict[str, Any]:
    """SQL claim p50 with `pending` jobs waiting in the claimed queue itself."""
    with admin(config) as conn:
        reset_queue(conn)
        conn.execute(
            "select public.register_worker(p_worker_id => %s, p_max_concurrent_jobs => 1000)",
            (PROBE,),
        )
        conn.execute("set session_replication_role = replica")
        for start in range(0, pending, 100_000):
            seed_jobs(conn, min(100_000, pending - start), "backlog")
        conn.execute("set session_replication_role = origin")
        conn.execute("vacuum analyze public.processing_queue")
    times = []
    with psycopg.connect(config.db_url, autocommit=True) as conn:
        for queues in (["backlog"], None):
            for _ in range(30):
                began = time.perf_counter()
                row = conn.execute(
                    "select id, attempt from public.claim_next_job(%s, 1, %s)", (PROBE, queues)
                ).fetchone()
                times.append(time.perf_counter() - began)
                assert row is not None
                conn.execute(
                    "select public.complete_job(%s, %s, %s, null)", (row[0], PROBE, row[1])
                )
    return {
        "pending": pending,
        "claim_ms": median(times[:30]) * 1000,
        "claim_all_queues_ms": median(times[30:]) * 1000,
    }


def table_size(config: StackConfig) -> str:
    with admin(config) as conn:
        row = conn.execute(
            "select pg_size_pretty(pg_total_relation_size('public.processing_queue'))"
        ).fetchone()
    return str(row[0]) if row else "?"


def state(config: StackConfig) -> dict[str, Any]:
    return {
        "claim_ms": claim_sql(config) * 1000,
        "http_claim_ms": claim_http(config) * 1000,
        "rate": throughput(config),
        "size": table_size(config),
    }


def measure(config: StackConfig, finished: int) -> dict[str, Any]:
    with admin(config) as conn:
        reset_queue(conn)
        conn.execute("set session_replication_role = replica")  # no triggers while seeding
        for start in range(0, finished, 100_000):
            seed_jobs(conn, min(100_000, finished - start), "history", status="completed")
        conn.execute("set session_replication_role = origin")
        conn.execute(
            "select public.register_worker(p_worker_id => %s, p_max_concurrent_jobs => 1000)",
            (PROBE,),
        )
        conn.execute("vacuum analyze public.processing_queue")
    kept = state(config)
    with admin(config) as conn:
        began = time.perf_counter()
        row = conn.execute("select public.purge_finished_jobs('1 day')").fetchone()
        purge_s = time.perf_counter() - began
    purged = state(config)
    with admin(config) as conn:
        conn.execute("vacuum analyze public.processing_queue")
    vacuumed = state(config)
    return {
        "finished_rows": finished,
        "purged_rows": int(row[0]) if row else 0,
        "purge_seconds": purge_s,
        "kept": kept,
        "purged": purged,
        "vacuumed": vacuumed,
        # flat keys for the plot
        "rate": kept["rate"],
        "claim_ms": kept["claim_ms"],
        "rate_after_purge": vacuumed["rate"],
        "claim_ms_after_purge": vacuumed["claim_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="also 10^6 finished rows")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sizes = [1_000, 10_000, 100_000] + ([1_000_000] if args.full else [])
    config = ensure_stack()
    print(f"machine: {machine()}\n")
    with admin(config) as conn:  # warm-up: PostgREST's pool and schema cache, the plans
        reset_queue(conn)
        conn.execute(
            "select public.register_worker(p_worker_id => %s, p_max_concurrent_jobs => 1000)",
            (PROBE,),
        )
    state(config)
    rows = []
    for size in sizes:
        row = measure(config, size)
        rows.append(row)
        print(
            f"  {size:>9,} kept: claim {row['kept']['claim_ms']:.2f} ms, "
            f"{row['kept']['rate']:.0f} jobs/s; purge {row['purge_seconds']:.2f}s; "
            f"vacuumed: claim {row['vacuumed']['claim_ms']:.2f} ms, "
            f"{row['vacuumed']['rate']:.0f} jobs/s",
            flush=True,
        )
    lines = []
    for r in rows:
        for label in ("kept", "purged", "vacuumed"):
            s = r[label]
            lines.append(
                [
                    f"{r['finished_rows']:,}",
                    label,
                    fmt(s["claim_ms"], 2),
                    fmt(s["http_claim_ms"], 1),
                    fmt(s["rate"]),
                    s["size"],
                    f"{r['purged_rows']:,} rows in {r['purge_seconds']:.2f} s"
                    if label == "purged"
                    else "",
                ]
            )
    text = table(
        [
            "finished rows",
            "state",
            "SQL claim p50 ms",
            "HTTP claim p50 ms",
            "jobs/s (1 x 8)",
            "table + indexes",
            "purge",
        ],
        lines,
    )
    print("\n" + text)
    backlogs = [backlog(config, n) for n in [1_000, 10_000, 100_000]]
    backlog_text = table(
        [
            "pending jobs in the queue",
            "SQL claim p50 ms (p_queues given)",
            "SQL claim p50 ms (all queues)",
        ],
        [
            [f"{b['pending']:,}", fmt(b["claim_ms"], 2), fmt(b["claim_all_queues_ms"], 2)]
            for b in backlogs
        ],
    )
    print("\n" + backlog_text)
    with admin(config) as conn:
        reset_queue(conn)
    if args.no_write:
        return
    _report.save_results("growth", {"machine": machine(), "rows": rows, "backlog": backlogs})
    _report.write_section(
        "growth",
        "Growth (finished rows kept vs purged)",
        f"Machine: {machine()}.\n\n{text}\n\nAnd a pending backlog in the "
        f"claimed queue itself (not asked for by the issue, but it is what "
        f"does grow the claim's cost):\n\n{backlog_text}\n",
    )
    from bench import plot

    plot.render()


if __name__ == "__main__":
    main()
