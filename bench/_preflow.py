"""The claim as it was before flow control (issue 18), for side-by-side benchmarks.

"Today's claim" in issue 18 is main's FIFO claim before the `flow-control` merge (99b8d0d,
first parent d021068): supaworker_private.claim_jobs of d021068's
supaworker/sql/schema/30_claim.sql (migrations 0010/0011, before 0014-0019). `installed(conn)`
puts that claim in place in the bench stack's database for the duration of a `with` block,
and puts the current one back afterwards (also when the block raises), so that the same
worker code, the same tables and the same seeded rows run with either claim. The bench stack
is the benchmarks' own (bench/_common.py); the migrations and supaworker/ are not touched.

What is installed, and what was adapted to run against the current tables:

- `OLD_CLAIM_JOBS` below is d021068's function body verbatim but for two edits: `create` ->
  `create or replace`, so that it replaces supaworker_private.claim_jobs under its own name
  and signature, and `maybe_rescue()` -> `maybe_rescue(p_worker_id)` (migration 0024 gave
  the reaper's entry the claimer's id). claim_next_job and complete_and_claim (the worker's
  two claim calls, both unchanged wrappers of claim_jobs) then run it. It returns the current
  row type
  (`returning q.*` now carries the flow-control columns: fair_tag, user_priority, owner_seq,
  concurrency_key, rate_limit_key, snooze_count; nothing reads them here) and calls today's
  supaworker_private.maybe_rescue and raise_error, the ones the current claim calls.
- Its two indexes, which migration 0014 replaced by fair_tag versions of the same names, are
  created under other names for the block: `bench_preflow_claim_idx` (queue, priority desc,
  run_at, created_at) and `bench_preflow_claim_order_idx` (priority desc, run_at,
  created_at), both `where status = 'pending'`, as in d021068's 00_tables.sql. The fair_tag
  indexes stay (they index pending rows only; a claim's UPDATE inserts nothing into them).
- No other index is swapped. Migration 0015 added processing_queue_active_by_owner_idx
  (user_id, status; pending, assigned and processing rows), which every claim's UPDATE
  wrote and which this module used to drop for the block; since migration 0027 it and
  processing_queue_user_id_idx (user_id, every row; there before flow control) are one
  index, processing_queue_owner_status_idx (user_id, status, every row), which a claim's
  UPDATE writes once as it wrote user_id_idx before flow control. The other indexes flow
  control added (owner_order_idx: pending rows; running_by_key_idx: rows with a concurrency
  key) take no write from a claim of these benchmarks' jobs and stay.

Not reverted (they are outside the claim): the enqueue side (fair tags, owner_clock, quotas;
the benchmarks seed before they time anything), the job-event trigger's extra `when` for
snoozes, and the new columns' width in each row.

`installed(..., keep_old_indexes=True)` leaves the two old indexes in place after the block
(a benchmark that creates them once, `create_old_indexes`, and drops them with `restore` at
its end). `restore(conn)` is idempotent and runs at the start of each benchmark as well, so
a run that was killed inside the block leaves nothing behind once the next one starts: it
re-creates claim_jobs from this tree's supaworker/sql/schema/30_claim.sql and drops the
bench_preflow_* indexes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench._common import ROOT

PREFLOW_REF = "d021068"

SCHEMA = ROOT / "supaworker" / "sql" / "schema"

OLD_INDEXES = (
    "create index if not exists bench_preflow_claim_idx on public.processing_queue"
    " (queue, priority desc, run_at, created_at) where status = 'pending'",
    "create index if not exists bench_preflow_claim_order_idx on public.processing_queue"
    " (priority desc, run_at, created_at) where status = 'pending'",
)

# d021068:supaworker/sql/schema/30_claim.sql, claim_jobs, verbatim but for `or replace` and
# maybe_rescue's argument (0024).
OLD_CLAIM_JOBS = """\
create or replace function supaworker_private.claim_jobs(
  p_worker_id text,
  p_limit     integer,
  p_queues    text[],
  p_start     boolean,
  p_prefetch  integer
) returns setof public.processing_queue
language plpgsql volatile set search_path = '' rows 1 as $$
declare
  v_worker  public.vps_workers;
  v_running integer;
  v_slots   integer;
  v_queues  text[];
  v_claimed integer := 0;
begin
  if p_worker_id is null or p_worker_id = '' then
    perform supaworker_private.raise_error('22023', 'p_worker_id is required', null);
  end if;
  if p_limit is null or p_limit < 0 or p_limit > 1000 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_limit must be between 0 and 1000, got %s', p_limit), null);
  end if;
  if p_prefetch is null or p_prefetch < 0 or p_prefetch > 1000 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_prefetch must be between 0 and 1000, got %s', p_prefetch), null);
  end if;

  perform supaworker_private.maybe_rescue(p_worker_id);

  -- Serialises this worker's own claims, so its free slots cannot be over-committed.
  select * into v_worker from public.vps_workers w where w.worker_id = p_worker_id for update;
  if not found or v_worker.status <> 'active' then
    return;  -- unknown, paused or offline worker: nothing
  end if;

  select count(*) into v_running from public.processing_queue q
   where q.assigned_to = p_worker_id and q.status in ('assigned', 'processing');
  v_slots := least(p_limit, v_worker.max_concurrent_jobs + p_prefetch - v_running);
  v_queues := coalesce(p_queues, v_worker.queues);

  if v_slots > 0 then
    return query
    with candidates as (
      select q.id
        from public.processing_queue q
       where q.status = 'pending'
         and not q.cancel_requested
         and q.run_at <= now()
         and (v_queues is null or q.queue = any (v_queues))
         and q.requires <@ v_worker.capabilities
       order by q.priority desc, q.run_at, q.created_at
       limit v_slots
       for update skip locked
    ), claimed as (
      update public.processing_queue q set
        status = case when coalesce(p_start, false) then 'processing' else 'assigned' end,
        assigned_to = p_worker_id, assigned_at = now(),
        started_at = case when coalesce(p_start, false) then now() end,
        attempt = q.attempt + 1, progress_percent = null, progress_message = null
      from candidates c
      where q.id = c.id
      returning q.*
    )
    select * from claimed c order by c.priority desc, c.run_at, c.created_at;
    get diagnostics v_claimed = row_count;
  end if;

  update public.vps_workers w set current_jobs = v_running + v_claimed
   where w.worker_id = p_worker_id and w.current_jobs is distinct from v_running + v_claimed;
end $$;
"""


def claim_jobs_in(path: Path) -> str:
    """claim_jobs as a schema file or a migration defines it, as `create or replace`."""
    text = path.read_text()
    match = re.search(
        r"^create (?:or replace )?function supaworker_private\.claim_jobs\(.*?^end \$\$;",
        text,
        re.M | re.S,
    )
    if match is None:
        raise RuntimeError(f"claim_jobs not found in {path.relative_to(ROOT)}")
    return re.sub(
        r"^create (?:or replace )?function", "create or replace function", match.group(0), count=1
    )


def _current_claim_jobs() -> str:
    return claim_jobs_in(SCHEMA / "30_claim.sql")


@contextmanager
def migration_claim(
    conn: psycopg.Connection[Any], migration: str | None, *, keep_old_indexes: bool = True
) -> Iterator[None]:
    """claim_jobs as migration `migration` (supaworker/sql/migrations/NNNN_name.sql) left it,
    for the block, then the current one (nothing when `migration` is None). For a change to
    the claim measured against the claim it replaced, on the same rows (fair_claim.py)."""
    if migration is None:
        yield
        return
    conn.execute(claim_jobs_in(ROOT / "supaworker" / "sql" / "migrations" / migration))
    try:
        yield
    finally:
        restore(conn, keep_old_indexes=keep_old_indexes)


def claim_source(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "select prosrc from pg_proc where oid ="
        " 'supaworker_private.claim_jobs(text, integer, text[], boolean, integer)'::regprocedure"
    ).fetchone()
    assert row is not None
    return str(row[0])


def restore(conn: psycopg.Connection[Any], *, keep_old_indexes: bool = False) -> None:
    """The current claim, indexes as the migrations leave them (idempotent)."""
    conn.execute(_current_claim_jobs())
    if not keep_old_indexes:
        conn.execute("drop index if exists public.bench_preflow_claim_idx")
        conn.execute("drop index if exists public.bench_preflow_claim_order_idx")


def create_old_indexes(conn: psycopg.Connection[Any]) -> None:
    """The old claim's two indexes. They index pending rows only, so the current claim's
    UPDATEs write nothing to them: a benchmark may keep them for its whole run, so that they
    carry the same dead entries as the current ones (fair_claim.py)."""
    for sql in OLD_INDEXES:
        conn.execute(sql)


def install(conn: psycopg.Connection[Any]) -> None:
    conn.execute(OLD_CLAIM_JOBS)
    create_old_indexes(conn)


@contextmanager
def installed(
    conn: psycopg.Connection[Any], *, active: bool = True, keep_old_indexes: bool = False
) -> Iterator[None]:
    """The pre-flow-control claim for the block (nothing when `active` is false)."""
    if not active:
        yield
        return
    current = claim_source(conn)
    install(conn)
    try:
        yield
    finally:
        restore(conn, keep_old_indexes=keep_old_indexes)
        if claim_source(conn) != current:
            raise RuntimeError("claim_jobs differs from before the block after restore()")
