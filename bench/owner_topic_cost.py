"""What the owners' status topic (jobs:<user_id>, migration 0023) costs Postgres per job.

    .venv/bin/python bench/owner_topic_cost.py [--jobs 1000] [--rounds 3]

On the bench stack, one connection in autocommit (each statement its own transaction, as
through PostgREST): seed --jobs jobs of one owner, then claim (with p_start, as the worker)
and complete until the queue is empty, one job per statement (claim_next_job(1) +
complete_job) and 50 (claim_next_job(50) + complete_jobs). Counted: the backend's CPU
(utime + stime of its process, /proc/<pid>/stat) and the wall time, per job. Variants, run
alternately in each round so that they share the machine's load:
  none       the owner topic's triggers disabled (what a project that never follows it pays)
  statement  0023 as shipped: one realtime.send per owner and statement
  perrow     the realtime-cost branch's trigger (efd74e6): one realtime.send per changed row
The per-row trigger is created for the run and dropped after; the shipped triggers are left
enabled. Medians over the rounds are printed (docs/benchmarks.md, "Realtime cost").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import psycopg

from bench._common import ROOT, admin, bench_user, ensure_stack

STATEMENT = [
    "processing_queue_broadcast_insert",
    "processing_queue_broadcast_update",
    "processing_queue_broadcast_delete",
]
PERROW = "processing_queue_broadcast_perrow"
TICK = os.sysconf("SC_CLK_TCK")

# The realtime-cost branch's trigger (efd74e6, 75_status_topics.sql), for the comparison.
PERROW_SQL = """
create or replace function supaworker_private.bench_broadcast_job_change() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'DELETE' then
    if old.user_id is not null then
      perform realtime.send(
        jsonb_build_object('type', tg_op, 'old_record', jsonb_build_object('id', old.id)),
        'job', 'jobs:' || old.user_id::text, true);
    end if;
  elsif new.user_id is not null then
    perform realtime.send(
      jsonb_build_object('type', tg_op, 'record', jsonb_build_object(
        'id', new.id, 'user_id', new.user_id, 'user_document_id', new.user_document_id,
        'queue', new.queue, 'status', new.status, 'attempt', new.attempt,
        'retry_count', new.retry_count, 'progress_percent', new.progress_percent,
        'progress_message', new.progress_message, 'error_message', new.error_message,
        'cancel_requested', new.cancel_requested, 'assigned_to', new.assigned_to,
        'updated_at', new.updated_at)),
      'job', 'jobs:' || new.user_id::text, true);
  end if;
  return null;
end $$;
drop trigger if exists processing_queue_broadcast_perrow on public.processing_queue;
create trigger processing_queue_broadcast_perrow after insert or update or delete
  on public.processing_queue
  for each row execute function supaworker_private.bench_broadcast_job_change();
"""
PERROW_DROP = """
drop trigger if exists processing_queue_broadcast_perrow on public.processing_queue;
drop function if exists supaworker_private.bench_broadcast_job_change();
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def switch(conn: psycopg.Connection[Any], variant: str) -> None:
    for name in STATEMENT:
        state = "enable" if variant == "statement" else "disable"
        conn.execute(f"alter table public.processing_queue {state} trigger {name}")
    state = "enable" if variant == "perrow" else "disable"
    conn.execute(f"alter table public.processing_queue {state} trigger {PERROW}")


def run(
    conn: psycopg.Connection[Any], pid: int, owner: uuid.UUID, jobs: int, batch: int
) -> tuple[float, float]:
    queue, worker = f"otc-{uuid.uuid4().hex[:6]}", f"otc-{uuid.uuid4().hex[:6]}"
    conn.execute(
        "with d as (insert into public.user_documents (user_id, name)"
        "  select %s, 'bench' from generate_series(1, %s) returning id, user_id)"
        " insert into public.processing_queue (user_document_id, user_id, queue)"
        " select id, user_id, %s from d",
        (owner, jobs, queue),
    )
    conn.execute(
        "select public.register_worker(p_worker_id => %s, p_max_concurrent_jobs => 1000)",
        (worker,),
    )
    cpu0, wall0, done = cpu_seconds(pid), time.perf_counter(), 0
    while True:
        rows = conn.execute(
            "select id, attempt from public.claim_next_job(%s, %s, %s, true)",
            (worker, batch, [queue]),
        ).fetchall()
        if not rows:
            break
        if batch == 1:
            conn.execute(
                "select public.complete_job(%s, %s, %s, null)", (rows[0][0], worker, rows[0][1])
            )
        else:
            body = json.dumps([{"id": str(r[0]), "attempt": r[1], "result": None} for r in rows])
            conn.execute("select public.complete_jobs(%s, %s::jsonb)", (worker, body))
        done += len(rows)
    cpu, wall = cpu_seconds(pid) - cpu0, time.perf_counter() - wall0
    conn.execute("delete from public.processing_queue where queue = %s", (queue,))
    conn.execute("select public.deregister_worker(%s)", (worker,))
    return cpu / done * 1000, wall / done * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    a = parser.parse_args()
    config = ensure_stack()
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with admin(config) as conn:
        owner = bench_user(conn)
        conn.execute("set role postgres")  # the migration owner, as the shipped trigger
        conn.execute(PERROW_SQL)
        pid = int(conn.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        try:
            for round_ in range(a.rounds):
                for variant in ("none", "statement", "perrow"):
                    switch(conn, variant)
                    for batch in (1, 50):
                        cpu, wall = run(conn, pid, owner, a.jobs, batch)
                        results.setdefault((variant, batch), []).append((cpu, wall))
                        print(
                            f"round {round_} {variant:9} {batch:2} per statement: "
                            f"CPU {cpu:.3f} ms/job, wall {wall:.3f} ms/job",
                            flush=True,
                        )
        finally:
            switch(conn, "statement")
            conn.execute(PERROW_DROP)
    print("\n| owner topic | jobs per statement | backend CPU ms/job | wall ms/job |")
    print("|---|---|---|---|")
    for (variant, batch), values in sorted(results.items()):
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        print(f"| {variant} | {batch} | {cpu:.3f} | {wall:.3f} |")


if __name__ == "__main__":
    os.environ.setdefault("SUPAWORKER_PROJECT_DIR", str(ROOT))
    main()
