"""Where a job's WAL goes, per relation and record type (issue 20, write amplification).

    .venv/bin/python bench/wal_cost.py [--jobs 2000] [--concurrency 1,32] [--rounds 1]
        [--variants before,after] [--progress N] [--no-write]

Every byte of WAL is decoded by hosted Realtime's logical replication (wal_level = logical),
whatever the publication holds, so each byte a job writes is paid twice. On the bench stack
(bench/_common.py), with the defaults a user gets (full_page_writes on, wal_compression off,
wal_level logical as on Supabase), three workloads of --jobs jobs of one owner in a fresh
queue (documents created beforehand, not counted):
  single   enqueue_job once per document, each call its own transaction (what PostgREST
           runs for the Python QueueClient, the TS client, the Node API server and the
           enqueue-document edge function)
  bulk     enqueue_jobs of all the documents in one call (QueueClient.enqueue_many)
  worker   the jobs enqueued by `single` processed by one `supaworker run --burst` at each
           --concurrency (its defaults otherwise: complete_and_claim, batched completions,
           the no-op handler), from before the process starts to after it exits
  progress with --progress N: 1,000 jobs claimed and started in SQL (not counted), then N
           report_progress calls per job, one transaction each; figures per call
Each workload starts from empty queue tables (realtime.messages and owner_clock emptied too)
right after a CHECKPOINT, so the full-page images (FPI) it writes are the first touch of
every page after a checkpoint: a worst case that a steady load pays once per page and
checkpoint_timeout (5 min); they are counted in their own column. The WAL between the two
LSNs is read with pg_walinspect (contrib, created in the bench database) and each record is
attributed to the relation of its first block (heap, index, TOAST; commit and other
block-less records by resource manager); "alignment, page headers" is the difference
between the LSN distance and the records' lengths.

--variants before,after measures the schema before migration 0027 (its cuts reverted for
the block, bench/_wal_before.py) against this tree's, alternately in each round, in the same
database: the before -> after table of docs/benchmarks.md ("WAL per job"). --variants also
takes an experiment of bench/_wal_before.EXPERIMENTS (a cut evaluated and not made:
fillfactor70, no_clock_level_idx, no_events_fk), run on top of this tree, e.g.
`--variants after,no_events_fk --no-write`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import psycopg

from bench import _report
from bench._common import (
    ROOT,
    SUPAWORKER,
    admin,
    bench_user,
    ensure_stack,
    fmt,
    machine,
    reset_queue,
    table,
    wait_all,
    worker_env,
)
from supaworker_local.config import StackConfig

# One row per record: its relation (first block; block-less records by resource manager),
# its type, its length without and with full-page images.
ATTRIBUTION = r"""
with r as (
  select resource_manager as rm, record_type, record_length, fpi_length,
         regexp_match(block_ref, 'rel (\d+)/(\d+)/(\d+)') as rel
    from pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn)
), named as (
  select rm, record_type, record_length, fpi_length,
         case
           when rel is null then '(' || rm || ' records)'
           when rel[2]::oid <> (select oid from pg_database where datname = current_database())
             then '(other databases)'
           else coalesce(
             (select case
                       when c.relkind = 't' then 'TOAST of '
                         || (select t.oid::regclass::text from pg_class t
                              where t.reltoastrelid = c.oid)
                       else c.oid::regclass::text
                     end
                from pg_class c
               where c.oid = pg_filenode_relation(
                       case rel[1]::oid when 1663 then 0 else rel[1]::oid end,
                       rel[3]::oid)),
             '(relation dropped or rewritten since)')
         end as relation
    from r
)
select relation, rm || '/' || record_type, count(*), sum(record_length - fpi_length),
       sum(fpi_length)
  from named
 group by 1, 2
"""


def lsn(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def distance(conn: psycopg.Connection[Any], start: str, end: str) -> int:
    row = conn.execute("select %s::pg_lsn - %s::pg_lsn", (end, start)).fetchone()
    assert row is not None
    return int(row[0])


def attribute(conn: psycopg.Connection[Any], start: str, end: str) -> dict[str, Any]:
    """The WAL between two LSNs: bytes per (relation, record type), and the total."""
    rows = conn.execute(ATTRIBUTION, {"start": start, "end": end}).fetchall()
    records = [
        {"relation": r[0], "type": r[1], "count": int(r[2]), "bytes": int(r[3]), "fpi": int(r[4])}
        for r in rows
    ]
    total = distance(conn, start, end)
    counted = sum(r["bytes"] + r["fpi"] for r in records)
    records.append(
        {
            "relation": "(alignment, page headers)",
            "type": "-",
            "count": 0,
            "bytes": total - counted,
            "fpi": 0,
        }
    )
    return {"total": total, "records": records}


def documents(conn: psycopg.Connection[Any], user: uuid.UUID, n: int) -> list[str]:
    rows = conn.execute(
        "insert into public.user_documents (user_id, name) "
        "select %s, 'bench' from generate_series(1, %s) returning id",
        (user, n),
    ).fetchall()
    return [str(r[0]) for r in rows]


def prepared(config: StackConfig, n: int) -> tuple[str, list[str]]:
    """A fresh queue name and n new documents of the bench owner (not measured)."""
    with admin(config) as conn:
        reset_queue(conn)
        # The same starting state for every workload and variant: the owners' topic messages
        # of earlier rounds (a random-uuid primary key: the more rows, the more distinct leaf
        # pages a burst touches, hence FPIs) and the fair-order clocks go too.
        conn.execute("truncate realtime.messages, supaworker_private.owner_clock")
        conn.execute("vacuum analyze public.processing_queue, public.job_events")
        docs = documents(conn, bench_user(conn), n)
    return f"wal-{uuid.uuid4().hex[:6]}", docs


def measured(config: StackConfig, run: Any, per: int) -> dict[str, Any]:
    """CHECKPOINT, then run(), then the WAL it wrote (`per`: what the figures divide by)."""
    with admin(config) as conn:
        conn.execute("checkpoint")
        start = lsn(conn)
    run()
    with admin(config) as conn:
        end = lsn(conn)
        # pg_walinspect reads only flushed WAL: a commit after `end` flushes past it.
        with conn.transaction():
            conn.execute("select pg_current_xact_id()")
        for _ in range(100):
            row = conn.execute("select pg_current_wal_flush_lsn() >= %s::pg_lsn", (end,)).fetchone()
            if row and row[0]:
                break
            time.sleep(0.05)
        return {**attribute(conn, start, end), "per": per}


def enqueue_single(config: StackConfig, queue: str, docs: list[str]) -> None:
    # As the service role through PostgREST: one transaction per call.
    with psycopg.connect(config.db_url, autocommit=True) as conn:
        for doc in docs:
            conn.execute(
                "select public.enqueue_job(p_user_document_id => %s, p_queue => %s)", (doc, queue)
            )


def enqueue_bulk(config: StackConfig, queue: str, docs: list[str]) -> None:
    with psycopg.connect(config.db_url, autocommit=True) as conn:
        for start in range(0, len(docs), 10000):
            items = [{"user_document_id": d, "queue": queue} for d in docs[start : start + 10000]]
            conn.execute("select public.enqueue_jobs(%s::jsonb)", (json.dumps(items),))


def process(config: StackConfig, queue: str, jobs: int, concurrency: int) -> None:
    proc = subprocess.Popen(
        [
            SUPAWORKER, "run", "--handler", "bench.handlers:noop", "--queue", queue,
            "--worker-id", f"{queue}-w", "--concurrency", str(concurrency), "--burst",
            "--log-format", "json",
        ],
        cwd=ROOT, env=worker_env(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_all([proc], timeout=600)
    with admin(config) as conn:
        row = conn.execute(
            "select count(*) from public.processing_queue where queue = %s and status = "
            "'completed'",
            (queue,),
        ).fetchone()
    done = int(row[0]) if row else 0
    if done != jobs:
        raise RuntimeError(f"the worker completed {done} of {jobs} jobs")


def progress(config: StackConfig, queue: str, docs: list[str], steps: int) -> dict[str, Any]:
    """The documents' jobs claimed and started (not counted), then `steps` report_progress
    calls per job, each its own transaction (the worker's ProgressForwarder sends at most 4
    a second per job); the WAL per call."""
    enqueue_bulk(config, queue, docs)
    worker = f"{queue}-progress"
    with psycopg.connect(config.db_url, autocommit=True) as conn:
        conn.execute(
            "select public.register_worker(p_worker_id => %s, p_max_concurrent_jobs => %s,"
            " p_queues => array[%s])",
            (worker, len(docs), queue),
        )
        running = conn.execute(
            "select id, attempt from public.claim_next_job(%s, %s, null, true)",
            (worker, len(docs)),
        ).fetchall()

        def report() -> None:
            for step in range(steps):
                for job_id, attempt in running:
                    conn.execute(
                        "select public.report_progress(%s, %s, %s::integer, %s::numeric, %s)",
                        (job_id, worker, attempt, (step + 1) * 100 / (steps + 1), f"step {step}"),
                    )

        result = measured(config, report, len(running) * steps)
        conn.execute("select public.deregister_worker(%s)", (worker,))
    return result


def one_round(
    config: StackConfig, jobs: int, concurrencies: list[int], steps: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    queue, docs = prepared(config, jobs)
    out["bulk"] = measured(config, lambda: enqueue_bulk(config, queue, docs), jobs)
    for c in concurrencies:
        queue, docs = prepared(config, jobs)
        single = measured(config, lambda q=queue, d=docs: enqueue_single(config, q, d), jobs)
        out.setdefault("single", single)  # the first one (the same writes each time)
        out[f"worker x{c}"] = measured(
            config, lambda q=queue, c=c: process(config, q, jobs, c), jobs
        )
    if steps:
        queue, docs = prepared(config, min(jobs, 1000))  # p_limit's maximum
        out["progress (per call)"] = progress(config, queue, docs, steps)
    return out


def per_job(result: dict[str, Any], jobs: int) -> dict[str, dict[str, float]]:
    """{relation: {bytes, fpi, records}} per job."""
    rel: dict[str, dict[str, float]] = {}
    for r in result["records"]:
        slot = rel.setdefault(r["relation"], {"bytes": 0.0, "fpi": 0.0, "records": 0.0})
        slot["bytes"] += r["bytes"] / jobs
        slot["fpi"] += r["fpi"] / jobs
        slot["records"] += r["count"] / jobs
    return rel


def types_of(result: dict[str, Any], relation: str, jobs: int) -> str:
    rows = sorted(
        (r for r in result["records"] if r["relation"] == relation and r["count"]),
        key=lambda r: -(r["bytes"] + r["fpi"]),
    )
    return ", ".join(f"{r['type']} {r['count'] / jobs:.2g}" for r in rows[:4])


def compact(result: dict[str, Any]) -> dict[str, Any]:
    """A result for bench/results: totals and [records, bytes, FPI bytes] per relation."""
    rel: dict[str, list[int]] = {}
    for r in result["records"]:
        slot = rel.setdefault(r["relation"], [0, 0, 0])
        slot[0] += r["count"]
        slot[1] += r["bytes"]
        slot[2] += r["fpi"]
    return {"total": result["total"], "per": result["per"], "relations": rel}


def median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose total is the median (its breakdown is quoted as a whole)."""
    ordered = sorted(results, key=lambda r: r["total"])
    return ordered[(len(ordered) - 1) // 2]


def breakdown(results: list[dict[str, Any]]) -> str:
    """One workload's WAL per relation; with two variants each figure is "before → after"
    (record types and counts: the last variant's)."""
    rels = [per_job(r, r["per"]) for r in results]
    last, result = rels[-1], results[-1]
    jobs = result["per"]
    names = {name for rel in rels for name in rel}
    zero = {"bytes": 0.0, "fpi": 0.0, "records": 0.0}

    def size(name: str) -> float:
        return max(rel.get(name, zero)["bytes"] + rel.get(name, zero)["fpi"] for rel in rels)

    def cells(key: str, name: str | None = None) -> str:
        if name is None:
            values = [
                sum(v[key] for v in rel.values())
                if key == "fpi"
                else r["total"] / r["per"] - sum(v["fpi"] for v in rel.values())
                for rel, r in zip(rels, results, strict=True)
            ]
        else:
            values = [rel.get(name, zero)[key] for rel in rels]
        return " → ".join(fmt(v) for v in values)

    rows = [
        [
            f"`{name}`",
            fmt(last.get(name, zero)["records"], 2),
            cells("bytes", name),
            cells("fpi", name),
            types_of(result, name, jobs) or "-",
        ]
        for name in sorted(names, key=lambda k: -size(k))
        if round(size(name)) != 0 or any(rel.get(name, zero)["records"] >= 0.005 for rel in rels)
    ]
    rows.append(
        [
            "**total**",
            fmt(sum(v["records"] for v in last.values()), 2),
            cells("bytes"),
            cells("fpi"),
            "",
        ]
    )
    return table(
        ["relation", "records", "bytes (no FPI)", "FPI bytes", "record types"],
        rows,
    )


def variant_of(name: str, config: StackConfig) -> AbstractContextManager[Any]:
    """`after`: this tree; `before`: 0027 reverted; an experiment of _wal_before.EXPERIMENTS
    (a cut evaluated and not made) on top of this tree."""
    if name == "after":
        return nullcontext()
    from bench import _wal_before

    if name == "before":
        return _wal_before.installed(config)
    return _wal_before.experiment(config, name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,32", help="worker concurrencies, e.g. 1,32")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--variants",
        default="after",
        help="comma-separated: after (this tree), before (0027 reverted), or an experiment: "
        "fillfactor70, no_clock_level_idx, no_events_fk (bench/_wal_before.py)",
    )
    parser.add_argument(
        "--progress", type=int, default=0, help="also N report_progress calls per job (1,000 jobs)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    a = parser.parse_args()
    config = ensure_stack()
    with admin(config) as conn:
        conn.execute("create extension if not exists pg_walinspect")
        settings = dict(
            conn.execute(
                "select name, setting from pg_settings where name in ('wal_level', "
                "'full_page_writes', 'wal_compression', 'checkpoint_timeout', 'server_version')"
            ).fetchall()
        )
    if a.variants != "after":
        from bench import _wal_before

        _wal_before.restore(config)
    concurrencies = [int(x) for x in a.concurrency.split(",") if x]
    variants = [v for v in a.variants.split(",") if v]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for i in range(a.rounds):
        for v in variants if i % 2 == 0 else list(reversed(variants)):
            with variant_of(v, config):
                runs[v].append(one_round(config, a.jobs, concurrencies, a.progress))
            print(f"round {i + 1} {v}: done", file=sys.stderr)

    workloads = list(runs[variants[0]][0])
    chosen = {v: {w: median_result([r[w] for r in runs[v]]) for w in workloads} for v in variants}
    lines = [
        f"{a.jobs} jobs of one owner, PostgreSQL {settings.get('server_version')} "
        f"(wal_level {settings.get('wal_level')}, full_page_writes "
        f"{settings.get('full_page_writes')}, wal_compression {settings.get('wal_compression')}"
        f", checkpoint_timeout {settings.get('checkpoint_timeout')} s: the defaults); each "
        "workload right after a CHECKPOINT (FPI: first touch of each page after it). "
        f"{a.rounds} round(s); {machine()}.",
        "",
    ]
    if len(variants) > 1:
        rows = []
        for w in workloads:
            cells = [f"`{w}`"]
            for key in ("no_fpi", "fpi", "total"):
                pair = []
                for v in variants:
                    res = chosen[v][w]
                    fpi = sum(r["fpi"] for r in res["records"])
                    value = {
                        "no_fpi": res["total"] - fpi,
                        "fpi": fpi,
                        "total": res["total"],
                    }[key]
                    pair.append(value / res["per"])
                change = (pair[-1] / pair[0] - 1) * 100 if pair[0] else float("nan")
                cells.append(" → ".join(fmt(p) for p in pair) + f" ({change:+.0f} %)")
            rows.append(cells)
        lines += [
            f"WAL bytes per job, {' → '.join(variants)} (before: 0027 reverted; after: this "
            "tree), same database, same run:",
            "",
            table(["workload", "without FPI", "FPI", "total (LSN distance)"], rows),
            "",
        ]
    label = f" ({' → '.join(variants)})" if len(variants) > 1 else ""
    for w in workloads:
        lines += [
            f"**{w}**{label}, per {'call' if w.startswith('progress') else 'job'}:",
            "",
            breakdown([chosen[v][w] for v in variants]),
            "",
        ]
    text = "\n".join(lines)
    print(text)
    if not a.no_write:
        _report.save_results(
            "wal_cost",
            {
                "machine": machine(),
                "settings": settings,
                "jobs": a.jobs,
                "rounds": a.rounds,
                "totals": {v: [{w: r[w]["total"] for w in r} for r in runs[v]] for v in variants},
                # Per workload, the median round's bytes per relation: [records, bytes, FPI].
                "median_round": {
                    v: {w: compact(r) for w, r in c.items()} for v, c in chosen.items()
                },
            },
        )
        _report.write_section("wal_cost", "WAL per job, per relation (issue 20)", text)


if __name__ == "__main__":
    os.environ.setdefault("SUPAWORKER_PROJECT_DIR", str(ROOT))
    main()
