"""pg_cron on the local stack runs the migrations' maintenance jobs (issue 19: every run
failed with "connection failed", so the reaper and the purge never fired locally).

pg_cron here is Debian 12's 1.4.2, whose finest schedule is one minute (the `'5 seconds'`
syntax came in 1.5), so this waits for the next minute of the reaper's own `* * * * *`
schedule: 60 s at most, and it stops at the first run that ends, whichever way it ends.
"""

from __future__ import annotations

import time

import psycopg
import pytest

pytestmark = pytest.mark.stack

Db = psycopg.Connection[tuple[object, ...]]


def test_the_migrations_cron_jobs_really_run(admin_db: Db) -> None:
    jobs = dict(
        admin_db.execute(
            "select jobname, command from cron.job where jobname like 'supaworker-%%'"
        ).fetchall()
    )
    assert jobs == {
        "supaworker-reap-stale-jobs": "select public.reap_stale_jobs()",
        "supaworker-purge-finished-jobs": "select public.purge_finished_jobs()",
    }
    # Runs after this one (a failed connection leaves start_time empty: count by run id).
    last = admin_db.execute("select coalesce(max(runid), 0) from cron.job_run_details").fetchone()
    assert last is not None
    deadline = time.monotonic() + 75
    ended = None
    while time.monotonic() < deadline and ended is None:
        ended = admin_db.execute(
            "select d.status, d.return_message from cron.job_run_details d"
            " join cron.job j using (jobid) where j.jobname = 'supaworker-reap-stale-jobs'"
            " and d.status in ('succeeded', 'failed') and d.runid > %s order by d.runid limit 1",
            (last[0],),
        ).fetchone()
        time.sleep(0.5)
    assert ended is not None, "pg_cron did not run the reaper within 75 s"
    # The reaper returns how many jobs it rescued: one row ("SELECT 1"), whatever the count.
    assert ended == ("succeeded", "1 row"), ended
