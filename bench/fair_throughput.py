"""End-to-end throughput with the fair claim against the claim before flow control (issue 18).

    .venv/bin/python bench/fair_throughput.py [--rounds 5] [--jobs 5000] [--shapes 1x1,2x64]
                                               [--owners 1,1000]

Issue 18 asks that flow control leave end-to-end throughput "unchanged within noise". This
runs bench/throughput.py's `supaworker` row (real `supaworker run --burst --no-realtime`
processes, the no-op handler, supaworker's default settings: completion batching,
complete_and_claim, prefetch; no owner cap, no key limits, so the claim takes its fast path)
with two claims in the same bench database:

  fair         today's claim (supaworker_private.claim_jobs as the migrations leave it)
  pre-flow     the claim before flow control: d021068's claim_jobs and its indexes, put in
               place by bench/_preflow.py for that run only (its docstring says exactly what
               was adapted: the function body is verbatim)

The worker code, the tables, the enqueue path and the machine are the same for both, so the
difference is the claim (and the one index a claim writes that flow control added). Jobs from
one owner and from `--owners` owners (the fair order interleaves them; with one owner it is
FIFO). Every run starts from an emptied queue, seeds `--jobs` jobs with enqueue_jobs (as an
API server would, so the fair tags are the ones enqueue gives), then times first claim ->
last completion from the database's own timestamps. Each round runs every (shape, owners)
pair in a shuffled order, and each pair's two claims back to back in a random order, so the
two runs of a pair see about the same load on a shared machine; the table quotes medians and
the min-max over the rounds, and the median (and range) over the rounds of each pair's ratio
fair / pre-flow. CPU ms per job: the worker processes and Postgres, in the same window
(bench/_common.py's CpuTimeline).
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import psycopg

from bench import _preflow
from bench._common import (
    CpuTimeline,
    admin,
    ensure_stack,
    finished_window,
    fmt,
    machine,
    median,
    reset_queue,
    start_workers,
    table,
    wait_all,
    worker_env,
)
from bench.fair_claim import cleanup, users
from supaworker_local.config import StackConfig

CLAIMS = ("fair", "pre-flow")


def seed(conn: psycopg.Connection[Any], queue: str, n: int, owners: list[uuid.UUID]) -> None:
    """n documents, owner i % len(owners), enqueued with enqueue_jobs (10,000 per call)."""
    docs = conn.execute(
        "insert into public.user_documents (user_id, name)"
        " select (%s::uuid[])[1 + g %% %s], 'fair-throughput' from generate_series(0, %s - 1) g"
        " returning id",
        (owners, len(owners), n),
    ).fetchall()
    ids = [str(r[0]) for r in docs]
    for start in range(0, len(ids), 10000):
        batch = [{"user_document_id": d, "queue": queue} for d in ids[start : start + 10000]]
        conn.execute("select public.enqueue_jobs(%s::jsonb)", (json.dumps(batch),))
    conn.execute("analyze public.processing_queue")


def run(
    config: StackConfig, n: int, workers: int, concurrency: int, owners: list[uuid.UUID], claim: str
) -> tuple[int, float, dict[str, float]]:
    """(completed jobs, seconds from first claim to last completion, CPU seconds by group)."""
    queue = f"ft-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        reset_queue(conn)
        with _preflow.installed(conn, active=claim == "pre-flow"):
            seed(conn, queue, n, owners)
            with CpuTimeline(config) as cpu:
                procs = start_workers(
                    config,
                    workers,
                    "--burst",
                    "--queue",
                    queue,
                    "--concurrency",
                    str(concurrency),
                    "--no-realtime",
                    prefix=queue,
                    env=worker_env(config),
                )
                for proc in procs:
                    cpu.track("worker", proc.pid)
                wait_all(procs, timeout=max(120.0, n / 5))
            completed, t0, t1 = finished_window(conn, queue)
    return completed, t1 - t0, cpu.window(t0, t1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per run")
    parser.add_argument("--shapes", default="1x1,2x64", help="workers x concurrency")
    parser.add_argument("--owners", default="1,1000", help="owner counts to run")
    args = parser.parse_args()
    shapes = [(int(w), int(c)) for w, c in (s.split("x") for s in args.shapes.split(","))]
    owner_counts = [int(x) for x in args.owners.split(",")]
    config = ensure_stack()
    with admin(config) as conn:
        _preflow.restore(conn)  # a run killed inside _preflow.installed left the old claim
    cleanup(config)
    with admin(config) as conn:
        people = users(conn, max(owner_counts))
    print(machine())
    print(f"{args.rounds} rounds, {args.jobs} no-op jobs per run\n")
    groups = [(s, o) for s in shapes for o in owner_counts]
    results: dict[tuple[tuple[int, int], int, str], list[tuple[float, float, float]]] = {
        (s, o, c): [] for s, o in groups for c in CLAIMS
    }
    ratios: dict[tuple[tuple[int, int], int], list[float]] = {g: [] for g in groups}
    try:
        for r in range(args.rounds):
            random.shuffle(groups)
            for (w, c), o in groups:
                # The two claims back to back (in a random order): a pair sees the same load.
                rate = {}
                for claim in random.sample(CLAIMS, len(CLAIMS)):
                    done, seconds, cpu = run(config, args.jobs, w, c, people[:o], claim)
                    rate[claim] = done / seconds if seconds > 0 else float("nan")
                    per_job = [
                        cpu.get(g, 0.0) / done * 1000 if done else float("nan")
                        for g in ("worker", "postgres")
                    ]
                    results[((w, c), o, claim)].append((rate[claim], per_job[0], per_job[1]))
                    print(
                        f"  round {r + 1} {w}x{c:<4} owners {o:5d} {claim:9} {done:6d} jobs"
                        f" {seconds:6.2f}s {rate[claim]:7.0f} jobs/s",
                        flush=True,
                    )
                ratios[((w, c), o)].append(rate["fair"] / rate["pre-flow"])
    finally:
        with admin(config) as conn:
            reset_queue(conn)
            _preflow.restore(conn)
        cleanup(config)
    rows = []
    for w, c in shapes:
        for o in owner_counts:
            pair = ratios[((w, c), o)]
            for claim in CLAIMS:
                res = results[((w, c), o, claim)]
                rows.append(
                    [
                        f"{w}x{c}",
                        str(o),
                        claim,
                        fmt(median(x[0] for x in res)),
                        f"{fmt(min(x[0] for x in res))}-{fmt(max(x[0] for x in res))}",
                        fmt(median(x[1] for x in res), 3),
                        fmt(median(x[2] for x in res), 3),
                        f"{median(pair):.2f}x ({min(pair):.2f}-{max(pair):.2f})"
                        if claim == "fair"
                        else "",
                    ]
                )
    print(
        table(
            [
                "workers x concurrency",
                "owners",
                "claim",
                "jobs/s (median)",
                "range",
                "worker CPU ms/job",
                "Postgres CPU ms/job",
                "fair / pre-flow, per pair: median (range)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
