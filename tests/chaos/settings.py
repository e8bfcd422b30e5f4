"""Tuning `queue_settings` for a test (short horizons so rescues happen within seconds),
always put back afterwards, also when the test restarted PostgreSQL meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from supaworker_local.config import StackConfig

TUNABLES = ("dead_worker_horizon", "rescue_interval", "backoff_base_seconds")


@contextmanager
def fast_rescue(
    stack: StackConfig, horizon: float, rescue_interval: float = 1.0, backoff: float = 0.2
) -> Iterator[None]:
    columns = ", ".join(TUNABLES)
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        saved = conn.execute(f"select {columns} from public.queue_settings").fetchone()
        assert saved is not None
        conn.execute(
            "update public.queue_settings set dead_worker_horizon = %s * interval '1 second',"
            " rescue_interval = %s * interval '1 second', backoff_base_seconds = %s",
            (horizon, rescue_interval, backoff),
        )
    try:
        yield
    finally:
        # A fresh connection: the chaos suite restarts PostgreSQL, which ends older ones.
        with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
            conn.execute(
                "update public.queue_settings set dead_worker_horizon = %s,"
                " rescue_interval = %s, backoff_base_seconds = %s",
                saved,
            )
