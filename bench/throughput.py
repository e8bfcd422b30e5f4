"""Throughput of no-op jobs, claim -> run -> complete, side by side in one run.

    .venv/bin/python bench/throughput.py [--full] [--rounds N] [--jobs N]

Rows (every round runs all of them, in a shuffled order, and the tables quote medians):
  pgbench bare    pgbench, 4 clients, on a bare jobs table: a SKIP LOCKED claim then a
                  completing UPDATE, 1 or 50 jobs per statement (shared/docs/local-stack.md)
  sql ceiling     the queue's own SQL functions called directly with psycopg on the same
                  database, 4 client connections, claiming with p_start as the worker does:
                  one job per statement (claim_next_job(1) + complete_job) and batched
                  (claim_next_job(50) + one complete_jobs for the 50)
  supaworker      real `supaworker run --burst` processes with a no-op async handler, through
                  the local gateway and PostgREST, at several concurrencies and worker counts
                  (`--no-realtime`: a burst worker with a backlog has nothing to wake up for),
                  as configured by default (completion batching on, claims that start)
  supaworker-nobatch  the same with completion batching off (SUPAWORKER_COMPLETE_BATCH_SIZE=0;
                  supaworker/worker/batching.py), which also turns off complete_and_claim
                  and prefetch: one complete_job per job, claims by the claim loop only
  supaworker+realtime  the same as supaworker with Realtime on (the default since 56020c3):
                  the worker also receives the Realtime events of its own jobs' updates
                  (with --full, or --only ...,realtime)
  procrastinate   procrastinate workers (burst: wait=False) on the same PostgreSQL, own database
  arq             arq workers (burst) on the local Redis

Jobs/s = completed jobs / (last completion - first claim), read from each system's own
timestamps, so process start-up is not counted. For supaworker rows the CPU used by each part
(worker processes, gateway, PostgREST, Postgres) in that window is divided by the jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import psycopg

from bench import _report
from bench._common import (
    PYTHON,
    ROOT,
    STATE_DIR,
    CpuTimeline,
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
    worker_env,
)
from supaworker_local.config import StackConfig

PROCRASTINATE_DB = "bench_procrastinate"
SQL_CLIENTS = 4
SQL_BATCH = 50
NO_BATCH_ENV = {"SUPAWORKER_COMPLETE_BATCH_SIZE": "0"}


@dataclass
class Result:
    system: str
    workers: int
    concurrency: int
    jobs: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else float("nan")


# -- the SQL ceiling ------------------------------------------------------------------------
def sql_ceiling(config: StackConfig, n: int, mode: str) -> Result:
    """`mode`: "single" (claim 1 + complete) or "batched" (claim 50 + complete_jobs)."""
    queue = f"sql-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        reset_queue(conn)
        seed_jobs(conn, n, queue)
        for i in range(SQL_CLIENTS):
            conn.execute(
                "select public.register_worker(p_worker_id => %s, p_max_concurrent_jobs => 1000)",
                (f"sql-{i}",),
            )
    done = [0] * SQL_CLIENTS
    barrier = threading.Barrier(SQL_CLIENTS + 1)

    def client(i: int) -> None:
        wid = f"sql-{i}"
        with psycopg.connect(config.db_url, autocommit=True) as conn:
            barrier.wait()
            while True:
                if mode == "batched":
                    rows = conn.execute(
                        "select id, attempt from public.claim_next_job(%s, %s, %s, true)",
                        (wid, SQL_BATCH, [queue]),
                    ).fetchall()
                    if not rows:
                        return
                    body = json.dumps(
                        [{"id": str(r[0]), "attempt": r[1], "result": None} for r in rows]
                    )
                    conn.execute("select public.complete_jobs(%s, %s::jsonb)", (wid, body))
                    done[i] += len(rows)
                    continue
                row = conn.execute(
                    "select id, attempt from public.claim_next_job(%s, 1, %s, true)",
                    (wid, [queue]),
                ).fetchone()
                if row is None:
                    return
                conn.execute("select public.complete_job(%s, %s, %s, null)", (row[0], wid, row[1]))
                done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(SQL_CLIENTS)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return Result(f"sql {mode}", SQL_CLIENTS, 1, sum(done), elapsed)


# -- the bare pgbench ceiling (the method of shared/docs/local-stack.md) --------------------
BARE_DB = "bench_bare"
BARE_SINGLE = """\
WITH c AS (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1
FOR UPDATE SKIP LOCKED)
UPDATE jobs j SET status = 'running', attempts = j.attempts + 1 FROM c WHERE j.id = c.id
RETURNING j.id AS id \\gset
UPDATE jobs SET status = 'done' WHERE id = :id;
"""
BARE_BATCHED = """\
WITH c AS (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 50
FOR UPDATE SKIP LOCKED),
u AS (UPDATE jobs j SET status = 'running', attempts = j.attempts + 1 FROM c WHERE j.id = c.id
RETURNING j.id) SELECT string_agg(id::text, ',') AS ids FROM u \\gset
UPDATE jobs SET status = 'done' WHERE id IN (:ids);
"""


def pgbench_bare(config: StackConfig, n: int, batched: bool) -> Result:
    """pgbench, 4 clients, on a bare jobs table: SKIP LOCKED claim then a completing UPDATE."""
    from supaworker_local import tools

    per_stmt = SQL_BATCH if batched else 1
    per_client = max(1, n // (SQL_CLIENTS * per_stmt))
    with admin(config) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (BARE_DB,)).fetchone():
            conn.execute(f"create database {BARE_DB} owner postgres")
    dsn = config.db_url.replace("/postgres?", f"/{BARE_DB}?")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create table if not exists jobs (id bigserial primary key, "
            "status text not null default 'pending', payload jsonb not null "
            "default '{}', attempts int not null default 0)"
        )
        conn.execute(
            "create index if not exists jobs_pending on jobs (id) where status = 'pending'"
        )
        conn.execute("truncate jobs restart identity")
        conn.execute(
            "insert into jobs (status) select 'pending' from generate_series(1, %s)",
            (per_client * SQL_CLIENTS * per_stmt,),
        )
        conn.execute("vacuum analyze jobs")
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(BARE_BATCHED if batched else BARE_SINGLE)
        script.flush()
        out = subprocess.run(
            [
                tools.pg_bin("pgbench"),
                "-n",
                "-h",
                config.host,
                "-p",
                str(config.db_port),
                "-U",
                "postgres",
                "-c",
                str(SQL_CLIENTS),
                "-j",
                "2",
                "-t",
                str(per_client),
                "-f",
                script.name,
                BARE_DB,
            ],
            env={**os.environ, "PGPASSWORD": "postgres"},
            capture_output=True,
            text=True,
            check=False,
        )
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    if not match:
        raise RuntimeError(f"pgbench failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    tps = float(match.group(1))
    jobs = per_client * SQL_CLIENTS * per_stmt
    return Result(
        f"pgbench bare {'batched' if batched else 'single'}",
        SQL_CLIENTS,
        1,
        jobs,
        jobs / (tps * per_stmt),
    )


# -- supaworker -----------------------------------------------------------------------------
def baseline_tree(ref: str) -> Path:
    """The `supaworker` package as of a git ref, unpacked under the bench state dir."""
    target = STATE_DIR / f"baseline-{ref}"
    if not (target / "supaworker").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", ref, "supaworker"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def supaworker(
    config: StackConfig,
    n: int,
    workers: int,
    concurrency: int,
    *,
    batch: bool,
    baseline: str | None = None,
    realtime: bool = False,
) -> Result:
    queue = f"sw-{uuid.uuid4().hex[:6]}"
    with admin(config) as conn:
        reset_queue(conn)
        seed_jobs(conn, n, queue)
    env = worker_env(config, **({} if batch else NO_BATCH_ENV))
    if baseline:  # the package from that ref shadows the working tree's (PYTHONPATH first)
        env["PYTHONPATH"] = f"{baseline_tree(baseline)}:{ROOT}"
    with CpuTimeline(config) as cpu:
        procs = start_workers(
            config,
            workers,
            "--burst",
            "--queue",
            queue,
            "--concurrency",
            str(concurrency),
            "--realtime" if realtime else "--no-realtime",
            prefix=queue,
            env=env,
        )
        for proc in procs:
            cpu.track("worker", proc.pid)
        wait_all(procs, timeout=max(120.0, n / 5))
    with admin(config) as conn:
        completed, t0, t1 = finished_window(conn, queue)
    system = (
        f"supaworker@{baseline}"
        if baseline
        else "supaworker-nobatch"
        if not batch
        else "supaworker+realtime"
        if realtime
        else "supaworker"
    )
    return Result(system, workers, concurrency, completed, t1 - t0, cpu.window(t0, t1))


# -- procrastinate --------------------------------------------------------------------------
def procrastinate_dsn(config: StackConfig) -> str:
    return config.db_url.replace("/postgres?", f"/{PROCRASTINATE_DB}?")


def prepare_procrastinate(config: StackConfig) -> None:
    with admin(config) as conn:
        exists = conn.execute(
            "select 1 from pg_database where datname = %s", (PROCRASTINATE_DB,)
        ).fetchone()
        if not exists:
            conn.execute(f"create database {PROCRASTINATE_DB} owner postgres")
    with psycopg.connect(procrastinate_dsn(config), autocommit=True) as conn:
        installed = conn.execute("select to_regclass('public.procrastinate_jobs')").fetchone()
    if installed is None or installed[0] is None:
        from bench.peers import procrastinate_app

        app = procrastinate_app(procrastinate_dsn(config))

        async def apply() -> None:
            async with app.open_async():
                await app.schema_manager.apply_schema_async()

        asyncio.run(apply())


def procrastinate(config: StackConfig, n: int, workers: int, concurrency: int) -> Result:
    from bench.peers import procrastinate_defer

    dsn = procrastinate_dsn(config)
    queue = f"pc-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("truncate procrastinate_jobs restart identity cascade")
    asyncio.run(procrastinate_defer(dsn, queue, n))
    procs = [
        subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.peers",
                "procrastinate",
                "--dsn",
                dsn,
                "--queue",
                queue,
                "--concurrency",
                str(concurrency),
            ],
            cwd=ROOT,
        )
        for _ in range(workers)
    ]
    wait_all(procs, timeout=max(120.0, n / 5))
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) filter (where type = 'succeeded'), "
            "extract(epoch from max(at) filter (where type = 'succeeded') "
            "                 - min(at) filter (where type = 'started')) "
            "from procrastinate_events"
        ).fetchone()
    assert row is not None
    return Result("procrastinate", workers, concurrency, int(row[0]), float(row[1] or 0))


# -- arq ------------------------------------------------------------------------------------
def arq(n: int, workers: int, concurrency: int) -> Result:
    queue = f"swbench-arq-{uuid.uuid4().hex[:6]}"
    ids = [f"swbench-{queue}-{i}" for i in range(n)]

    async def enqueue() -> None:
        from arq.connections import RedisSettings, create_pool

        redis = await create_pool(RedisSettings(host="127.0.0.1", port=6379))
        try:
            for job_id in ids:
                await redis.enqueue_job("arq_noop", _job_id=job_id, _queue_name=queue)
        finally:
            await redis.aclose()

    async def collect() -> tuple[int, float]:
        from arq.connections import RedisSettings, create_pool
        from arq.jobs import Job

        redis = await create_pool(RedisSettings(host="127.0.0.1", port=6379))
        try:
            starts, ends = [], []
            for job_id in ids:
                info = await Job(job_id, redis, _queue_name=queue).result_info()
                if info is not None and info.success:
                    starts.append(info.start_time.timestamp())
                    ends.append(info.finish_time.timestamp())
            keys = [f"arq:result:{i}" for i in ids] + [f"arq:job:{i}" for i in ids]
            for start in range(0, len(keys), 500):
                await redis.delete(*keys[start : start + 500])
            await redis.delete(queue, f"{queue}:health-check")
            return len(starts), (max(ends) - min(starts)) if starts else 0.0
        finally:
            await redis.aclose()

    asyncio.run(enqueue())
    procs = [
        subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.peers",
                "arq",
                "--queue",
                queue,
                "--concurrency",
                str(concurrency),
            ],
            cwd=ROOT,
        )
        for _ in range(workers)
    ]
    wait_all(procs, timeout=max(120.0, n / 5))
    jobs, seconds = asyncio.run(collect())
    return Result("arq", workers, concurrency, jobs, seconds)


def plan(
    config: StackConfig,
    only: set[str],
    shapes: list[tuple[int, int]],
    jobs: int,
    sql_jobs: int,
    baseline: str | None,
) -> list[tuple[str, Callable[[], Result]]]:
    """Every row of the table: (name, how to run it once)."""
    runs: list[tuple[str, Callable[[], Result]]] = []
    if "sql" in only:
        runs.append(("pgbench bare single", lambda: pgbench_bare(config, sql_jobs, False)))
        runs.append(("pgbench bare batched", lambda: pgbench_bare(config, sql_jobs * 5, True)))
        for mode in ("single", "batched"):
            runs.append(
                (
                    f"sql {mode}",
                    lambda m=mode: sql_ceiling(  # type: ignore[misc]
                        config, sql_jobs * (3 if m == "batched" else 1), m
                    ),
                )
            )
    for w, c in shapes:
        n = jobs if c > 1 else jobs // 10  # one job at a time is slow for everyone
        if baseline:
            runs.append(
                (
                    f"supaworker@{baseline} {w}x{c}",
                    lambda w=w, c=c, n=n: supaworker(
                        config, n, w, c, batch=True, baseline=baseline
                    ),
                )
            )
        if "realtime" in only:
            runs.append(
                (
                    f"supaworker+realtime {w}x{c}",
                    lambda w=w, c=c, n=n: supaworker(config, n, w, c, batch=True, realtime=True),
                )
            )
        if "supaworker" in only:
            runs.append(
                (
                    f"supaworker {w}x{c}",
                    lambda w=w, c=c, n=n: supaworker(config, n, w, c, batch=True),
                )
            )
        if "batch" in only:
            runs.append(
                (
                    f"supaworker-nobatch {w}x{c}",
                    lambda w=w, c=c, n=n: supaworker(config, n, w, c, batch=False),
                )
            )
        if "procrastinate" in only:
            runs.append(
                (f"procrastinate {w}x{c}", lambda w=w, c=c, n=n: procrastinate(config, n, w, c))
            )
        if "arq" in only:
            runs.append((f"arq {w}x{c}", lambda w=w, c=c, n=n: arq(n, w, c)))
    return runs


# -- the run --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="more jobs, rounds and shapes")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None, help="jobs per run (workers, peers)")
    parser.add_argument("--sql-jobs", type=int, default=None)
    parser.add_argument(
        "--only", default="", help="comma list: sql,supaworker,batch,realtime,procrastinate,arq"
    )
    parser.add_argument(
        "--baseline-ref",
        default=None,
        help="also run the worker as of this git ref (e.g. the commit before "
        "a change to the loop), rows 'supaworker@REF'",
    )
    parser.add_argument("--shapes", default="", help="workers x concurrency to run, e.g. 1x32,4x64")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--from-results",
        action="store_true",
        help="redraw the table, docs block and plot from bench/results/throughput.json",
    )
    args = parser.parse_args()
    if args.from_results:
        saved = _report.load_results("throughput")
        if saved is None:
            parser.error("no bench/results/throughput.json yet")
        render(
            saved["rows"],
            saved["machine"],
            saved["rounds"],
            saved["jobs"],
            saved["sql_jobs"],
            write=not args.no_write,
        )
        return
    rounds = args.rounds or (5 if args.full else 3)
    # Enough jobs that the fastest rows run for seconds, not a fraction of one.
    jobs = args.jobs or (20000 if args.full else 5000)
    # The ceiling's batched run is over in a second or two at 8,000 jobs, and this machine's
    # noise then moved it by 2x between rounds: 16,000 (48,000 batched).
    sql_jobs = args.sql_jobs or (32000 if args.full else 16000)
    shapes = [(1, 1), (1, 8), (1, 32), (1, 128), (2, 64), (4, 32)]
    if args.full:
        shapes += [(4, 8)]
    if args.shapes:
        shapes = [(int(w), int(c)) for w, c in (s.split("x") for s in args.shapes.split(","))]
    only = set(filter(None, args.only.split(","))) or {
        "sql",
        "supaworker",
        "batch",
        "procrastinate",
        "arq",
        *(["realtime"] if args.full else []),
    }

    baseline = None
    if args.baseline_ref:
        baseline = subprocess.run(
            ["git", "rev-parse", "--short", args.baseline_ref],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    config = ensure_stack()
    if "procrastinate" in only:
        prepare_procrastinate(config)
    print(f"machine: {machine()}")
    print(f"{rounds} rounds; {jobs} jobs per worker run, {sql_jobs} per SQL run\n")

    runs = plan(config, only, shapes, jobs, sql_jobs, baseline)
    results: dict[str, list[Result]] = {name: [] for name, _ in runs}
    for r in range(rounds):
        order = list(runs)
        random.Random(r).shuffle(order)
        began = time.monotonic()
        for name, run in order:
            res = run()
            results[name].append(res)
            print(
                f"  round {r + 1} {name:28} {res.jobs:6d} jobs {res.seconds:7.2f}s "
                f"{res.rate:9.0f} jobs/s",
                flush=True,
            )
        print(f"round {r + 1} took {time.monotonic() - began:.0f}s\n", flush=True)
    report(results, rounds, jobs, sql_jobs, write=not args.no_write)


def report(
    results: dict[str, list[Result]], rounds: int, jobs: int, sql_jobs: int, *, write: bool
) -> None:
    summary: list[dict[str, Any]] = []
    for name, res in results.items():
        first = res[0]
        cpu = (
            {
                g: median(r.cpu.get(g, 0.0) / r.jobs * 1000 for r in res if r.jobs)
                for g in ("worker", "gateway", "postgrest", "postgres")
            }
            if first.cpu
            else {}
        )
        summary.append(
            {
                "name": name,
                "system": first.system,
                "workers": first.workers,
                "concurrency": first.concurrency,
                "rate": median(r.rate for r in res),
                "rates": [round(r.rate, 1) for r in res],
                "jobs": [r.jobs for r in res],
                "cpu_ms_per_job": cpu,
            }
        )
    render(summary, machine(), rounds, jobs, sql_jobs, write=write)


def render(
    summary: list[dict[str, Any]],
    where: str,
    rounds: int,
    jobs: int,
    sql_jobs: int,
    *,
    write: bool,
) -> None:
    """Print the table and ratios; with `write`, save them and update the docs and plot."""
    ceiling = next((s["rate"] for s in summary if s["name"] == "sql batched"), float("nan"))
    rows = []
    for s in summary:
        shape = (
            f"{s['workers']} conn"
            if s["system"].startswith(("sql", "pgbench"))
            else f"{s['workers']} x {s['concurrency']}"
        )
        spread = f"{fmt(min(s['rates']))}-{fmt(max(s['rates']))}"
        cpu = s["cpu_ms_per_job"]
        cpu_text = (
            " / ".join(fmt(cpu[g], 2) for g in ("worker", "gateway", "postgrest", "postgres"))
            if cpu
            else ""
        )
        rows.append(
            [
                s["system"],
                shape,
                fmt(s["rate"]),
                spread,
                str(min(s["jobs"])),
                f"{s['rate'] / ceiling * 100:.1f} %" if ceiling == ceiling else "n/a",
                cpu_text,
            ]
        )
    text = table(
        [
            "system",
            "workers x concurrency",
            "jobs/s (median)",
            "range",
            "jobs done (fewest)",
            "of batched SQL ceiling",
            "CPU ms/job: worker / gateway / PostgREST / Postgres",
        ],
        rows,
    )
    print(text)
    ratios = _ratios(summary)
    if ratios:
        print("\n" + ratios)
    if not write:
        return
    _report.save_results(
        "throughput",
        {
            "machine": where,
            "rounds": rounds,
            "jobs": jobs,
            "sql_jobs": sql_jobs,
            "rows": summary,
        },
    )
    body = (
        f"Machine: {where}.\n\n{rounds} rounds, medians; {jobs} no-op jobs seeded per worker "
        f"run (a tenth of that at concurrency 1), {sql_jobs} per SQL run ({sql_jobs * 3} batched; "
        f'pgbench: {sql_jobs} single, {sql_jobs * 5} batched). "range" is the min-max '
        f'over the rounds; "jobs done" the fewest jobs a round completed (a burst worker '
        f"that stops early completes fewer than were seeded).\n\n{text}\n\n{ratios}\n"
    )
    _report.write_section("throughput", "Throughput (no-op jobs)", body)
    from bench import plot

    plot.render()


def _ratios(summary: list[dict[str, Any]]) -> str:
    by = {s["name"]: s["rate"] for s in summary}
    lines = []
    for s in summary:
        if s["system"] != "supaworker":
            continue
        shape = f"{s['workers']}x{s['concurrency']}"
        parts = [f"supaworker {shape}:"]
        others = [n.rsplit(" ", 1)[0] for n in by if n.endswith(f" {shape}")]
        for other in others:
            if other == "supaworker":
                continue
            rate = by.get(f"{other} {shape}")
            if rate:
                parts.append(f"{other} is {rate / s['rate']:.2f}x")
        if len(parts) > 1:
            lines.append(", ".join([parts[0] + " " + parts[1], *parts[2:]]))
    return "\n".join(f"- {line}" for line in lines)


if __name__ == "__main__":
    main()
