"""A fingerprint of everything the queue keeps, to prove that a refused call changed nothing."""

from __future__ import annotations

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
