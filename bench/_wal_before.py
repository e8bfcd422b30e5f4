"""The indexes as they were before migration 0027, for wal_cost.py's side-by-side figures.

`installed(config)` puts back, for a `with` block, the four indexes 0027 replaced, in the
bench stack's database: processing_queue_user_id_idx (user_id) and
processing_queue_active_by_owner_idx (user_id, status; pending/assigned/processing) instead
of processing_queue_owner_status_idx, and job_events' primary key on id with
job_events_job_id_idx (job_id, id) and job_events_user_id_idx (user_id, id) instead of the
primary key (job_id, id); their definitions are 0025's supaworker/sql/schema/00_tables.sql.
`restore(config)` (also at the block's end, when it raises too, and at the start of a run, so
a killed run leaves nothing behind) puts this tree's indexes back, as 0027 leaves them.
Nothing else differs between the two: functions, triggers and rows are the same. The tables
are emptied by each round before it starts (bench/_common.reset_queue), so the swaps are
cheap. EXPERIMENTS: the cuts evaluated and not made, each put in place on top of this tree
for a block by `experiment(config, name)` (`wal_cost.py --variants after,NAME`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bench._common import admin
from supaworker_local.config import StackConfig

BEFORE = (
    "create index if not exists processing_queue_user_id_idx on public.processing_queue (user_id)",
    "create index if not exists processing_queue_active_by_owner_idx on public.processing_queue"
    " (user_id, status) where status in ('pending', 'assigned', 'processing')",
    "drop index if exists public.processing_queue_owner_status_idx",
    "alter table public.job_events drop constraint if exists job_events_pkey",
    "alter table public.job_events add constraint job_events_pkey primary key (id)",
    "create index if not exists job_events_job_id_idx on public.job_events (job_id, id)",
    "create index if not exists job_events_user_id_idx on public.job_events (user_id, id)",
)

AFTER = (  # migration 0027
    "create index if not exists processing_queue_owner_status_idx on public.processing_queue"
    " (user_id, status)",
    "drop index if exists public.processing_queue_user_id_idx",
    "drop index if exists public.processing_queue_active_by_owner_idx",
    "alter table public.job_events drop constraint if exists job_events_pkey",
    "alter table public.job_events add constraint job_events_pkey primary key (job_id, id)",
    "drop index if exists public.job_events_job_id_idx",
    "drop index if exists public.job_events_user_id_idx",
)


def _run(config: StackConfig, statements: tuple[str, ...]) -> None:
    with admin(config) as conn, conn.transaction():
        for sql in statements:
            conn.execute(sql)


# Cuts evaluated and not made (docs/benchmarks.md, "WAL per job"): name -> (put in place,
# undo). Each runs on top of this tree's schema for wal_cost.py's block.
EXPERIMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # Room on each heap page, so that an update's new version can stay on its page.
    "fillfactor70": (
        ("alter table public.processing_queue set (fillfactor = 70)",),
        ("alter table public.processing_queue reset (fillfactor)",),
    ),
    # next_fair_tag's probe for an idle level: without it the owner_clock upsert is HOT, but
    # the probe reads every owner's clock of the level (owner_clock rows are never deleted).
    "no_clock_level_idx": (
        ("drop index if exists supaworker_private.owner_clock_level_idx",),
        (
            "create index if not exists owner_clock_level_idx on supaworker_private.owner_clock"
            " (queue, priority, last_tag)",
        ),
    ),
    # job_events' foreign key: its check locks the job row (FOR KEY SHARE) for an event
    # written in a statement that did not itself change that row (the enqueue's insert);
    # it also gives the cascade and PostgREST's embedding of job_events in processing_queue.
    "no_events_fk": (
        ("alter table public.job_events drop constraint if exists job_events_job_id_fkey",),
        (
            "alter table public.job_events drop constraint if exists job_events_job_id_fkey",
            "alter table public.job_events add constraint job_events_job_id_fkey foreign key"
            " (job_id) references public.processing_queue (id) on delete cascade",
        ),
    ),
}


def restore(config: StackConfig) -> None:
    """This tree's schema (idempotent): 0027's indexes, no experiment left in place."""
    _run(config, AFTER)
    for _apply, undo in EXPERIMENTS.values():
        _run(config, undo)


@contextmanager
def experiment(config: StackConfig, name: str) -> Iterator[None]:
    """One of EXPERIMENTS for the block."""
    apply, undo = EXPERIMENTS[name]
    _run(config, apply)
    try:
        yield
    finally:
        _run(config, undo)


@contextmanager
def installed(config: StackConfig) -> Iterator[None]:
    """The indexes before 0027 for the block."""
    _run(config, BEFORE)
    try:
        yield
    finally:
        restore(config)
