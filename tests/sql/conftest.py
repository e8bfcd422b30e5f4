"""Helpers for the SQL tests: the service role's calls (`Svc`) and PostgREST as any caller
(`Api`, keeping HTTP statuses), quick setup of documents / jobs / workers, and direct state
tweaks through the superuser connection.

Everything a client would do goes through PostgREST, as `supaworker.rpc` calls executed by
the product's sync transport, so each RPC's parameter names are written once (in rpc.py);
only tests of malformed arguments send hand-written ones (`Api.rpc`, marked RAW). psycopg is
used only to set up state (documents, stale heartbeats, past timestamps) and to inspect it.
Each test works in its own queue with its own workers and users.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, Unpack

import psycopg
import pytest
from psycopg.types.json import Jsonb

from supaworker import rpc
from supaworker.rpc import EnqueueOptions, RpcCall
from supaworker.transport import SupabaseSyncTransport, SyncTransport
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.postgrest_api import Api, Reply, api  # noqa: F401 - fixture re-export

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
    admin_db: Admin, documents: list[uuid.UUID], queue: str, **options: Unpack[EnqueueOptions]
) -> list[uuid.UUID]:
    """Bulk setup: enqueue_job for each document, called in SQL (a trusted caller), with the
    arguments rpc.enqueue_job would send."""
    ids = []
    for doc in documents:
        call = rpc.enqueue_job(doc, **{"queue": queue, **options})  # type: ignore[typeddict-item]
        named = ", ".join(f"{name} => %({name})s" for name in call.params)
        values = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in call.params.items()}
        row = admin_db.execute(
            f"select id from public.{call.function}({named})",  # names from rpc.py, values bound
            values,
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
    """The service role's calls: `supaworker.rpc` calls through the product's sync transport.

    Answers are the JSON the database sent (rows as dicts, not models), so the tests check
    the wire format itself; refusals raise the transport's `supaworker.exceptions` errors.
    """

    transport: SupabaseSyncTransport

    def call(self, call: RpcCall[Any]) -> Any:
        return send(self.transport, call)

    def register(
        self,
        worker_id: str,
        slots: int = 5,
        capabilities: dict[str, Any] | None = None,
        queues: list[str] | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = self.call(
            rpc.register_worker(
                worker_id,
                worker_name=worker_id,
                max_concurrent_jobs=slots,
                capabilities=capabilities or {},
                queues=queues,
                host="test",
                version="t",
            )
        )
        return row

    def claim(
        self, worker_id: str, limit: int = 1, queues: list[str] | None = None
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.call(rpc.claim_next_job(worker_id, limit, queues))
        return rows

    def start(self, job: dict[str, Any], worker_id: str) -> bool:
        return bool(self.call(rpc.start_job(_id(job), worker_id, job["attempt"])))

    def complete(self, job: dict[str, Any], worker_id: str, result: Any = None) -> bool:
        return bool(self.call(rpc.complete_job(_id(job), worker_id, job["attempt"], result)))

    def fail(
        self, job: dict[str, Any], worker_id: str, error: str, retryable: bool = True
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.call(
            rpc.fail_job(_id(job), worker_id, job["attempt"], error, retryable=retryable)
        )
        return rows

    def progress(
        self, job: dict[str, Any], worker_id: str, percent: float, message: str | None = None
    ) -> bool:
        return bool(
            self.call(rpc.report_progress(_id(job), worker_id, job["attempt"], percent, message))
        )

    def heartbeat(self, worker_id: str, job_ids: list[str] | None = None) -> dict[str, Any]:
        ids = [uuid.UUID(j) for j in job_ids or []]
        reply: dict[str, Any] = self.call(rpc.heartbeat_worker(worker_id, ids))
        return reply


def send(transport: SyncTransport, call: RpcCall[Any]) -> Any:
    """`call` through `transport`, answered with the JSON the database sent (unparsed)."""
    return transport.call(call.function, call.params)


def ids(*values: str | uuid.UUID) -> list[uuid.UUID]:
    """Job ids as rpc.py takes them, from the strings of JSON rows."""
    return [uuid.UUID(str(v)) for v in values]


def _id(job: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(str(job["id"]))


def results(jobs: list[dict[str, Any]], result: Any = None) -> list[tuple[uuid.UUID, int, Any]]:
    """`(id, attempt, result)` of claimed rows, as complete_jobs and complete_and_claim take."""
    return [(_id(j), j["attempt"], result) for j in jobs]


def service_transport(stack: StackConfig) -> SupabaseSyncTransport:
    return SupabaseSyncTransport.connect(stack.api_url, stack.service_role_key)


@pytest.fixture()
def new_svc(stack: StackConfig) -> Iterator[Callable[[], Svc]]:
    """Fresh service-role callers, one per thread (each with its own HTTP connections)."""
    made: list[Svc] = []

    def factory() -> Svc:
        made.append(Svc(service_transport(stack)))
        return made[-1]

    yield factory
    for svc in made:
        svc.transport.close()


@pytest.fixture()
def svc(stack: StackConfig) -> Iterator[Svc]:
    transport = service_transport(stack)
    yield Svc(transport)
    transport.close()
