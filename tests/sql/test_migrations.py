"""The migrations apply with the real `supabase db push` on a fresh Supabase-like database, on
one whose app already has its own `user_documents`, and refuse one they cannot work with."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from supaworker_local import tools
from supaworker_local.config import LOCAL_DB_PASSWORD, StackConfig
from tests.sql.conftest import Admin, ScratchDb

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]


def local_migrations() -> list[str]:
    """The versions in supabase/migrations, read when asked (files may be added meanwhile)."""
    return sorted(p.name.split("_", 1)[0] for p in (ROOT / "supabase" / "migrations").glob("*.sql"))


QUEUE_TABLES = ("processing_queue", "vps_workers", "job_events", "queue_settings")


def db_push(stack: StackConfig, database: str) -> subprocess.CompletedProcess[str]:
    url = (
        f"postgresql://postgres:{LOCAL_DB_PASSWORD}@{stack.host}:{stack.db_port}/{database}"
        "?sslmode=disable"
    )
    return subprocess.run(
        [tools.supabase_cli(), "db", "push", "--db-url", url, "--yes", "--workdir", str(ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "SUPABASE_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1"},
    )


def applied(conn: Admin) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select version from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    ]


def smoke(conn: Admin, make_document: str) -> None:
    """The functions work in the new database: enqueue, claim, complete."""
    user = uuid.uuid4()
    conn.execute("insert into auth.users (id, email) values (%s, %s)", (user, f"{user}@x.test"))
    (doc,) = conn.execute(make_document, (user,)).fetchone() or (None,)
    (status,) = conn.execute("select status from public.enqueue_job(%s)", (doc,)).fetchone() or (
        None,
    )
    assert status == "pending"
    conn.execute("select public.register_worker('smoke-worker')")
    (job,) = conn.execute("select id from public.claim_next_job('smoke-worker')").fetchone() or (
        None,
    )
    assert conn.execute("select public.complete_job(%s, 'smoke-worker', 1)", (job,)).fetchone() == (
        True,
    )
    assert conn.execute(
        "select user_id, status from public.processing_queue where id = %s", (job,)
    ).fetchone() == (user, "completed")


def test_migrations_apply_on_an_empty_supabase_database(
    stack: StackConfig,
    scratch_db: ScratchDb,
) -> None:
    name, conn = scratch_db()
    result = db_push(stack, name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert applied(conn) == local_migrations()

    rls: dict[str, bool] = dict(
        conn.execute(
            "select relname, relrowsecurity from pg_class"
            " where relnamespace = 'public'::regnamespace"
            " and relkind = 'r'"
        ).fetchall()
    )
    assert {*QUEUE_TABLES, "user_documents"} <= set(rls) and all(rls.values())
    owners = {
        r[0]
        for r in conn.execute(
            "select pg_get_userbyid(relowner) from pg_class"
            " where relnamespace = 'public'::regnamespace and relkind = 'r'"
        ).fetchall()
    }
    assert owners == {"postgres"}
    published = {
        r[0]
        for r in conn.execute(
            "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
        )
    }
    assert not published & {"processing_queue", "job_events", "vps_workers"}  # 0022/0023/0026
    identity: dict[str, str] = dict(
        conn.execute(
            "select relname, relreplident from pg_class where relname in"
            " ('processing_queue', 'job_events') and relnamespace = 'public'::regnamespace"
        ).fetchall()
    )
    assert identity == {"processing_queue": "d", "job_events": "d"}
    assert conn.execute("select count(*) from public.queue_settings").fetchone() == (1,)
    # No pg_cron here: the cron migration applied and scheduled nothing.
    assert conn.execute(
        "select exists (select from pg_namespace where nspname = 'cron')"
    ).fetchone() == (False,)
    smoke(
        conn,
        "insert into public.user_documents (user_id, name, content)"
        " values (%s, 'a.txt', 'text') returning id",
    )

    again = db_push(stack, name)
    assert again.returncode == 0, again.stderr
    assert applied(conn) == local_migrations()


def test_an_existing_user_documents_table_is_left_untouched(
    stack: StackConfig,
    scratch_db: ScratchDb,
) -> None:
    name, conn = scratch_db()
    conn.execute("""
        set role postgres;
        create table public.user_documents (
          id uuid primary key default gen_random_uuid(),
          user_id uuid not null references auth.users (id),
          title text not null,
          mime_type text,
          uploaded_at timestamptz default now()
        );
        alter table public.user_documents enable row level security;
        create policy "app: readers" on public.user_documents for select to authenticated
          using (auth.uid() = user_id);
        revoke all on public.user_documents from anon, authenticated;
        grant select on public.user_documents to authenticated;
        reset role;
    """)

    def describe() -> dict[str, Any]:
        return {
            "columns": conn.execute(
                "select attname, format_type(atttypid, atttypmod), attnotnull from pg_attribute"
                " where attrelid = 'public.user_documents'::regclass and attnum > 0"
                " and not attisdropped order by attnum"
            ).fetchall(),
            "policies": conn.execute(
                "select policyname, cmd, roles::text, qual from pg_policies"
                " where tablename = 'user_documents' order by 1"
            ).fetchall(),
            "grants": conn.execute(
                "select grantee, privilege_type from information_schema.role_table_grants"
                " where table_name = 'user_documents' order by 1, 2"
            ).fetchall(),
            "indexes": conn.execute(
                "select indexname from pg_indexes where tablename = 'user_documents' order by 1"
            ).fetchall(),
        }

    before = describe()
    result = db_push(stack, name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert applied(conn) == local_migrations()
    assert describe() == before
    assert [p[0] for p in before["policies"]] == ["app: readers"]
    assert "content" not in [c[0] for c in before["columns"]]
    smoke(
        conn,
        "insert into public.user_documents (user_id, title) values (%s, 'report.pdf') returning id",
    )


def test_a_user_documents_table_without_user_id_is_refused_clearly(
    stack: StackConfig,
    scratch_db: ScratchDb,
) -> None:
    name, conn = scratch_db()
    conn.execute("create table public.user_documents (id uuid primary key, owner uuid)")
    result = db_push(stack, name)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert 'public.user_documents exists but lacks "id uuid" or "user_id uuid"' in output
    # The failed file was one transaction: nothing of the queue exists.
    assert conn.execute("select to_regclass('public.processing_queue')").fetchone() == (None,)
    assert applied(conn) == []


def test_the_stack_database_is_migrated_and_cron_scheduled(
    admin_db: Admin, stack: StackConfig
) -> None:
    assert applied(admin_db) == local_migrations()
    result = db_push(stack, "postgres")  # a second push is a no-op
    assert result.returncode == 0, result.stderr
    assert applied(admin_db) == local_migrations()
    has_cron = admin_db.execute(
        "select exists (select from pg_namespace where nspname = 'cron')"
    ).fetchone()
    if not has_cron or not has_cron[0]:
        pytest.skip("pg_cron is not installed on this machine")
    jobs = admin_db.execute(
        "select jobname, schedule, command from cron.job"
        " where jobname like 'supaworker-%' order by 1"
    ).fetchall()
    assert jobs == [
        ("supaworker-purge-finished-jobs", "17 3 * * *", "select public.purge_finished_jobs()"),
        ("supaworker-reap-stale-jobs", "* * * * *", "select public.reap_stale_jobs()"),
    ]
