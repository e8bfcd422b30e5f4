"""Helpers for the SQL tests: raw PostgREST calls that keep the HTTP status, quick setup of
documents / jobs / workers, and direct state tweaks through the superuser connection.

Everything a client would do goes through PostgREST (supabase-py or raw HTTP); psycopg is
used only to set up state (documents, stale heartbeats, past timestamps) and to inspect it.
Each test works in its own queue with its own workers and users.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from supabase import Client, ClientOptions, create_client

from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.postgrest_api import Api, Reply, api  # noqa: F401 - fixture re-export


@pytest.fixture()
def new_service_client(stack: StackConfig) -> Callable[[], Client]:
    """A fresh supabase-py client with the service key (one per thread)."""

    def factory() -> Client:
        options = ClientOptions(auto_refresh_token=False, persist_session=False)
        return create_client(stack.api_url, stack.service_role_key, options)

    return factory


Admin = psycopg.Connection[tuple[Any, ...]]
# Makes a new database bootstrapped like a Supabase project; returns its name and a
# superuser connection to it.
ScratchDb = Callable[[], tuple[str, Admin]]


def bootstrap_sql() -> str:
    sql = resources.files("supaworker_local").joinpath("sql/bootstrap.sql").read_text()
    # pg_cron can only be created in cron.database_name (the `postgres` database); a scratch
    # database is a project without pg_cron, which the cron migration must tolerate.
    return sql.replace(
        "current_setting('shared_preload_libraries') like '%pg_cron%'",
        "current_setting('shared_preload_libraries') like '%pg_cron%'"
        " and current_database() = current_setting('cron.database_name', true)",
    )


@pytest.fixture()
def scratch_db(stack: StackConfig, admin_db: Admin) -> Iterator[ScratchDb]:
    """Factory: a new database bootstrapped like a Supabase project (no migrations yet)."""
    created: list[tuple[str, psycopg.Connection[Any]]] = []

    def make() -> tuple[str, Admin]:
        name = f"sw_mig_{uuid.uuid4().hex[:10]}"
        admin_db.execute(f'create database "{name}"')
        conn = psycopg.connect(
            stack.admin_db_url.replace("/postgres?", f"/{name}?"), autocommit=True
        )
        created.append((name, conn))
        # As on a Supabase project, the migration owner may create schemas in its database
        # (`supabase db push` creates supabase_migrations).
        conn.execute(f'grant create on database "{name}" to postgres')
        conn.execute(bootstrap_sql())
        return name, conn

    yield make
    for name, conn in created:
        conn.close()
        admin_db.execute(f'drop database if exists "{name}" with (force)')


def make_documents(admin_db: Admin, user: StackUser, count: int) -> list[uuid.UUID]:
    rows = admin_db.execute(
        "insert into public.user_documents (user_id, name, content)"
        " select %s, 'doc-' || g, 'text ' || g from generate_series(1, %s) g returning id",
        (user.id, count),
    ).fetchall()
    return [uuid.UUID(str(r[0])) for r in rows]


def sql_enqueue(
    admin_db: Admin, documents: list[uuid.UUID], queue: str, **params: Any
) -> list[uuid.UUID]:
    """Bulk setup: enqueue_job for each document, called in SQL (a trusted caller)."""
    extra = "".join(f", {name} => %({name})s" for name in params)
    ids = []
    for doc in documents:
        values = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in params.items()}
        row = admin_db.execute(
            f"select id from public.enqueue_job(p_user_document_id => %(doc)s,"
            f" p_queue => %(queue)s{extra})",
            {"doc": doc, "queue": queue, **values},
        ).fetchone()
        assert row is not None
        ids.append(uuid.UUID(str(row[0])))
    return ids


def job_row(admin_db: Admin, job_id: uuid.UUID | str) -> dict[str, Any]:
    cur = admin_db.cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute("select * from public.processing_queue where id = %s", (job_id,)).fetchone()
    assert row is not None, f"job {job_id} not found"
    return row


def worker_row(admin_db: Admin, worker_id: str) -> dict[str, Any]:
    cur = admin_db.cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute(
        "select * from public.vps_workers where worker_id = %s", (worker_id,)
    ).fetchone()
    assert row is not None, f"worker {worker_id} not found"
    return row


def events(admin_db: Admin, job_id: uuid.UUID | str) -> list[tuple[Any, ...]]:
    return admin_db.execute(
        "select event, from_status, to_status, worker_id, attempt, message"
        " from public.job_events where job_id = %s order by id",
        (job_id,),
    ).fetchall()


def make_stale(admin_db: Admin, worker_id: str) -> None:
    """The worker's last heartbeat is an hour old: dead for any sane dead_worker_horizon."""
    admin_db.execute(
        "update public.vps_workers set last_heartbeat = now() - interval '1 hour'"
        " where worker_id = %s",
        (worker_id,),
    )


def make_due(admin_db: Admin, job_id: uuid.UUID | str) -> None:
    """Skip a retry's backoff: the job becomes claimable now."""
    admin_db.execute("update public.processing_queue set run_at = now() where id = %s", (job_id,))


@dataclass
class Svc:
    """supabase-py service client with the queue's calls spelled out."""

    client: Client

    def rpc(self, fn: str, params: dict[str, Any] | None = None) -> Any:
        return self.client.rpc(fn, params or {}).execute().data

    def register(
        self,
        worker_id: str,
        slots: int = 5,
        capabilities: dict[str, Any] | None = None,
        queues: list[str] | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = self.rpc(
            "register_worker",
            {
                "p_worker_id": worker_id,
                "p_worker_name": worker_id,
                "p_max_concurrent_jobs": slots,
                "p_capabilities": capabilities or {},
                "p_queues": queues,
                "p_host": "test",
                "p_version": "t",
            },
        )
        return row

    def claim(
        self, worker_id: str, limit: int = 1, queues: list[str] | None = None
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.rpc(
            "claim_next_job", {"p_worker_id": worker_id, "p_limit": limit, "p_queues": queues}
        )
        return rows

    def start(self, job: dict[str, Any], worker_id: str) -> bool:
        return bool(
            self.rpc(
                "start_job",
                {"p_job_id": job["id"], "p_worker_id": worker_id, "p_attempt": job["attempt"]},
            )
        )

    def complete(self, job: dict[str, Any], worker_id: str, result: Any = None) -> bool:
        return bool(
            self.rpc(
                "complete_job",
                {
                    "p_job_id": job["id"],
                    "p_worker_id": worker_id,
                    "p_attempt": job["attempt"],
                    "p_result": result,
                },
            )
        )

    def fail(
        self, job: dict[str, Any], worker_id: str, error: str, retryable: bool = True
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.rpc(
            "fail_job",
            {
                "p_job_id": job["id"],
                "p_worker_id": worker_id,
                "p_attempt": job["attempt"],
                "p_error": error,
                "p_retryable": retryable,
            },
        )
        return rows

    def progress(
        self, job: dict[str, Any], worker_id: str, percent: float, message: str | None = None
    ) -> bool:
        return bool(
            self.rpc(
                "report_progress",
                {
                    "p_job_id": job["id"],
                    "p_worker_id": worker_id,
                    "p_attempt": job["attempt"],
                    "p_percent": percent,
                    "p_message": message,
                },
            )
        )

    def heartbeat(self, worker_id: str, job_ids: list[str] | None = None) -> dict[str, Any]:
        reply: dict[str, Any] = self.rpc(
            "heartbeat_worker", {"p_worker_id": worker_id, "p_job_ids": job_ids or []}
        )
        return reply


@pytest.fixture()
def svc(service_client: Client) -> Svc:
    return Svc(service_client)
