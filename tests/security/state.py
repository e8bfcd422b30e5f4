"""A fingerprint of everything the queue keeps, to prove that a refused call changed nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

Db = psycopg.Connection[tuple[object, ...]]

TABLES = ("processing_queue", "job_events", "vps_workers", "queue_settings", "user_documents")


def fingerprint(admin_db: Db) -> dict[str, tuple[int, str | None]]:
    """Row count and an md5 over the text of every row, per table."""
    prints: dict[str, tuple[int, str | None]] = {}
    for table in TABLES:
        row = admin_db.execute(
            f"select count(*), md5(string_agg(t::text, '|' order by t::text)) from public.{table} t"
        ).fetchone()
        assert row is not None
        prints[table] = (int(str(row[0])), None if row[1] is None else str(row[1]))
    return prints


REAPER_JOB = "supaworker-reap-stale-jobs"


@contextmanager
def reaper_paused(admin_db: Db) -> Iterator[None]:
    """pg_cron's reaper (every minute, migration 0004) writes queue_settings and stale
    workers' rows by itself; a test that compares fingerprints of the whole queue holds it
    off meanwhile (and waits for a run already under way)."""
    if admin_db.execute("select to_regclass('cron.job')").fetchone() in (None, (None,)):
        yield
        return
    admin_db.execute("update cron.job set active = false where jobname = %s", (REAPER_JOB,))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = admin_db.execute(
                "select count(*) from cron.job_run_details d join cron.job j using (jobid)"
                " where j.jobname = %s and d.status in ('starting', 'running')",
                (REAPER_JOB,),
            ).fetchone()
            if running is None or running[0] == 0:
                break
            time.sleep(0.2)
        yield
    finally:
        admin_db.execute("update cron.job set active = true where jobname = %s", (REAPER_JOB,))
