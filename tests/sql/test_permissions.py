"""The permission matrix through PostgREST: every function and table, called as anon, as the
owning user, as another user and as service_role, and the HTTP status each one gets.
Plus catalog checks that nothing is granted beyond the matrix."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest

from supaworker import rpc
from supaworker.exceptions import PermissionDenied
from supaworker.models import WorkerStatus
from supaworker.rpc import RpcCall
from supaworker.transport import SupabaseSyncTransport
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.sql.conftest import Admin, Api, Svc, make_documents, send, sql_enqueue

pytestmark = pytest.mark.stack

ROLES = ("anon", "stranger", "owner", "service")  # the order the calls are made in
DENIED = {"anon": 401, "stranger": 403, "owner": 403}
SERVICE_ONLY = DENIED | {"service": 200}


@dataclass
class Ctx:
    owner: StackUser
    stranger: StackUser
    queue: str
    doc: uuid.UUID  # owner's document, not queued yet
    job: str  # owner's queued job (pending)
    worker: str  # a registered worker
    tokens: dict[str, str]


@pytest.fixture()
def ctx(
    stack: StackConfig,
    admin_db: Admin,
    svc: Svc,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> Ctx:
    owner, stranger = make_user(), make_user()
    queue = unique("perm")
    doc, queued = make_documents(admin_db, owner, 2)
    (job,) = sql_enqueue(admin_db, [queued], queue)
    worker = unique("w-perm")
    svc.register(worker, queues=[queue])
    tokens = {
        "anon": stack.anon_key,
        "owner": owner.token,
        "stranger": stranger.token,
        "service": stack.service_role_key,
    }
    return Ctx(owner, stranger, queue, doc, str(job), worker, tokens)


def _register(worker_id: str) -> RpcCall[Any]:
    return rpc.register_worker(
        worker_id,
        worker_name=None,
        max_concurrent_jobs=1,
        capabilities={},
        queues=None,
        host=None,
        version=None,
    )


Calls = Callable[[Ctx], RpcCall[Any]]
# the call (rpc.py's), expected status per role
FUNCTIONS: list[tuple[Calls, dict[str, int]]] = [
    (
        lambda c: rpc.enqueue_job(c.doc, queue=c.queue),
        {"anon": 401, "stranger": 403, "owner": 200, "service": 200},
    ),
    (
        lambda c: rpc.cancel_job(c.job),
        {"anon": 401, "stranger": 403, "owner": 200, "service": 200},
    ),
    (lambda c: rpc.claim_next_job(c.worker, 1, [c.queue + "-none"]), SERVICE_ONLY),
    (lambda c: rpc.start_job(uuid.UUID(c.job), c.worker, 1), SERVICE_ONLY),
    (lambda c: rpc.report_progress(uuid.UUID(c.job), c.worker, 1, 5, None), SERVICE_ONLY),
    (lambda c: rpc.complete_job(uuid.UUID(c.job), c.worker, 1, None), SERVICE_ONLY),
    (lambda c: rpc.complete_jobs(c.worker, []), SERVICE_ONLY),
    (lambda c: rpc.complete_and_claim(c.worker, [], 0, None), SERVICE_ONLY),
    (
        lambda c: rpc.fail_job(uuid.UUID(c.job), c.worker, 1, "x", retryable=True),
        SERVICE_ONLY,
    ),
    (lambda c: rpc.release_jobs(c.worker), SERVICE_ONLY),
    (lambda c: _register(c.worker + "-2"), SERVICE_ONLY),
    (lambda c: rpc.heartbeat_worker(c.worker, []), SERVICE_ONLY),
    (lambda c: rpc.set_worker_status(c.worker, WorkerStatus.ACTIVE), SERVICE_ONLY),
    (lambda c: rpc.retry_job(c.job), SERVICE_ONLY),
    (lambda c: rpc.retry_failed_jobs(c.queue), SERVICE_ONLY),
    (lambda c: rpc.reap_stale_jobs(), SERVICE_ONLY),
    (lambda c: rpc.queue_stats(), SERVICE_ONLY),
    (lambda c: rpc.purge_finished_jobs(100 * 365 * 86400), SERVICE_ONLY),  # 100 years
    (lambda c: rpc.deregister_worker(c.worker), DENIED | {"service": 204}),
]


def _function_names() -> list[str]:
    """The SQL functions of the matrix (its calls built with placeholder arguments)."""
    placeholder = SimpleNamespace(doc=uuid.uuid4(), job=str(uuid.uuid4()), worker="w", queue="q")
    return [make(cast(Ctx, placeholder)).function for make, _ in FUNCTIONS]


def test_function_permission_matrix(api: Api, ctx: Ctx, admin_db: Admin) -> None:
    seen: dict[tuple[str, str], int] = {}
    wanted: dict[tuple[str, str], int] = {}
    for make, expected in FUNCTIONS:
        fn = make(ctx).function
        for role in ROLES:
            reply = api.call(ctx.tokens[role], make(ctx))
            seen[(fn, role)] = reply.status
            wanted[(fn, role)] = expected[role]
            if reply.status in (401, 403) and role != "service":
                assert reply.code in ("42501", "PT403"), (fn, role, reply.body)
    assert seen == wanted
    # The denied calls really did nothing: the owner's job was cancelled once (by the owner)
    # and re-queued once (service_role's retry_job); no other call touched it.
    events = admin_db.execute(
        "select event from public.job_events where job_id = %s order by id", (ctx.job,)
    ).fetchall()
    assert events == [("enqueued",), ("cancelled",), ("requeued",)]
    queued = admin_db.execute(
        "select count(*) from public.processing_queue where user_document_id = %s", (ctx.doc,)
    ).fetchone()
    assert queued == (1,)  # owner's and service_role's enqueue: one entry


# table, method, query string, body, expected status per role
TableCase = tuple[str, str, Callable[[Ctx], str], Callable[[Ctx], Any], dict[str, int]]
READ_OWN = {"anon": 401, "stranger": 200, "owner": 200, "service": 200}
NO_WRITES = {"anon": 401, "stranger": 403, "owner": 403, "service": 403}
SERVICE_READ = {"anon": 401, "stranger": 403, "owner": 403, "service": 200}
TABLES: list[TableCase] = [
    ("processing_queue", "GET", lambda c: f"?queue=eq.{c.queue}", lambda c: None, READ_OWN),
    (
        "processing_queue",
        "POST",
        lambda c: "",
        lambda c: {"user_document_id": str(c.doc), "user_id": str(c.owner.id), "queue": c.queue},
        NO_WRITES,
    ),
    (
        "processing_queue",
        "PATCH",
        lambda c: f"?id=eq.{c.job}",
        lambda c: {"priority": 9},
        NO_WRITES,
    ),
    ("processing_queue", "DELETE", lambda c: f"?id=eq.{c.job}", lambda c: None, NO_WRITES),
    ("job_events", "GET", lambda c: f"?job_id=eq.{c.job}", lambda c: None, READ_OWN),
    (
        "job_events",
        "POST",
        lambda c: "",
        lambda c: {"job_id": c.job, "event": "completed"},
        NO_WRITES,
    ),
    ("job_events", "PATCH", lambda c: f"?job_id=eq.{c.job}", lambda c: {"message": "x"}, NO_WRITES),
    ("job_events", "DELETE", lambda c: f"?job_id=eq.{c.job}", lambda c: None, NO_WRITES),
    ("vps_workers", "GET", lambda c: f"?worker_id=eq.{c.worker}", lambda c: None, SERVICE_READ),
    ("vps_workers", "POST", lambda c: "", lambda c: {"worker_id": c.worker + "-x"}, NO_WRITES),
    (
        "vps_workers",
        "PATCH",
        lambda c: f"?worker_id=eq.{c.worker}",
        lambda c: {"status": "paused"},
        NO_WRITES,
    ),
    ("vps_workers", "DELETE", lambda c: f"?worker_id=eq.{c.worker}", lambda c: None, NO_WRITES),
    ("queue_settings", "GET", lambda c: "", lambda c: None, SERVICE_READ),
    (
        "queue_settings",
        "PATCH",
        lambda c: "?id=eq.true",
        lambda c: {"default_max_attempts": 5},
        SERVICE_READ,
    ),
    ("queue_settings", "POST", lambda c: "", lambda c: {"id": False}, NO_WRITES),
    ("queue_settings", "DELETE", lambda c: "?id=eq.true", lambda c: None, NO_WRITES),
    ("user_documents", "GET", lambda c: f"?id=eq.{c.doc}", lambda c: None, READ_OWN),
    (
        "user_documents",
        "POST",
        lambda c: "",
        lambda c: {"user_id": str(c.owner.id), "name": "n"},
        {"anon": 401, "stranger": 403, "owner": 201, "service": 201},
    ),
    (
        "user_documents",
        "PATCH",
        lambda c: f"?id=eq.{c.doc}",
        lambda c: {"name": "renamed"},
        {"anon": 401, "stranger": 200, "owner": 200, "service": 200},
    ),
]


def queue_admins_enabled(admin_db: Admin) -> bool:
    """Whether the queue-admin migration (0007) is applied: it grants authenticated
    SELECT on vps_workers, with a policy that shows rows to queue admins only."""
    row = admin_db.execute(
        "select exists (select from pg_policies where tablename ="
        " 'vps_workers' and policyname = 'vps_workers_select_queue_admin')"
    ).fetchone()
    return bool(row and row[0])


def test_table_permission_matrix(api: Api, ctx: Ctx, admin_db: Admin) -> None:
    settings_before = admin_db.execute(
        "select default_max_attempts from public.queue_settings"
    ).fetchone()
    assert settings_before == (5,), "the PATCH case below assumes the default"
    seen: dict[tuple[str, str, str], int] = {}
    rows_seen: dict[tuple[str, str, str], Any] = {}
    for table, method, query, body, _expected in TABLES:
        for role in ROLES:
            reply = api.table(ctx.tokens[role], method, table, query=query(ctx), body=body(ctx))
            seen[(table, method, role)] = reply.status
            rows_seen[(table, method, role)] = reply.body
    wanted = {(t, m, role): exp[role] for t, m, _, _, exp in TABLES for role in ROLES}
    if queue_admins_enabled(admin_db):
        # Signed-in users may query vps_workers, but RLS shows ordinary users no worker.
        wanted |= {("vps_workers", "GET", "owner"): 200, ("vps_workers", "GET", "stranger"): 200}
        assert rows_seen[("vps_workers", "GET", "owner")] == []
        assert rows_seen[("vps_workers", "GET", "stranger")] == []
    assert seen == wanted

    # Status 200 is not enough for reads: RLS must show the owner's rows to the owner only.
    for table in ("processing_queue", "job_events", "user_documents"):
        own = rows_seen[(table, "GET", "owner")]
        assert own and all(r["user_id"] == str(ctx.owner.id) for r in own), table
        assert rows_seen[(table, "GET", "stranger")] == [], table
        assert rows_seen[(table, "GET", "service")], table
    # The stranger's PATCH matched no row; the owner's renamed the document.
    assert rows_seen[("user_documents", "PATCH", "stranger")] == []
    assert rows_seen[("user_documents", "PATCH", "owner")][0]["name"] == "renamed"
    # The denied writes changed nothing.
    assert admin_db.execute(
        "select status, priority from public.processing_queue where id = %s", (ctx.job,)
    ).fetchone() == ("pending", 0)
    assert admin_db.execute(
        "select status from public.vps_workers where worker_id = %s", (ctx.worker,)
    ).fetchone() == ("active",)
    assert admin_db.execute("select count(*) from public.queue_settings").fetchone() == (1,)


def test_owner_deletes_own_document_only(api: Api, ctx: Ctx, admin_db: Admin) -> None:
    (doc,) = make_documents(admin_db, ctx.owner, 1)
    query = f"?id=eq.{doc}"
    assert api.table(ctx.tokens["anon"], "DELETE", "user_documents", query=query).status == 401
    stranger = api.table(ctx.tokens["stranger"], "DELETE", "user_documents", query=query)
    assert (stranger.status, stranger.body) == (200, [])
    owner = api.table(ctx.tokens["owner"], "DELETE", "user_documents", query=query)
    assert owner.status == 200 and [r["id"] for r in owner.body] == [str(doc)]


def test_no_function_or_table_is_granted_beyond_the_matrix(admin_db: Admin) -> None:
    """Catalog check over everything in `public`, so a new function cannot slip through
    with Supabase's default EXECUTE for anon/authenticated."""
    rows = admin_db.execute(
        """
        select p.proname,
               has_function_privilege('anon', p.oid, 'execute'),
               has_function_privilege('authenticated', p.oid, 'execute')
          from pg_proc p
         where p.pronamespace = 'public'::regnamespace
        """
    ).fetchall()
    assert rows
    for name, anon, authenticated in rows:
        assert not anon, f"anon may execute {name}"
        # admin_* (queue-admin migration) check app_metadata.queue_admin inside.
        user_callable = name in ("enqueue_job", "cancel_job") or name.startswith("admin_")
        assert authenticated == user_callable, name

    queue_functions = _function_names()
    definers = admin_db.execute(
        """
        select p.proname, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner),
               obj_description(p.oid, 'pg_proc') is not null,
               has_function_privilege('service_role', p.oid, 'execute')
          from pg_proc p
         where p.pronamespace = 'public'::regnamespace and p.proname = any(%s)
        """,
        (queue_functions,),
    ).fetchall()
    assert len(definers) == len(queue_functions)
    for name, secdef, config, owner, commented, service in definers:
        assert (secdef, config, owner, commented, service) == (
            True,
            ['search_path=""'],
            "postgres",
            True,
            True,
        ), name

    privileges = {
        table: {
            role: sorted(
                r[0]
                for r in admin_db.execute(
                    "select privilege_type from information_schema.role_table_grants"
                    " where table_schema = 'public' and table_name = %s and grantee = %s",
                    (table, role),
                ).fetchall()
            )
            for role in ("anon", "authenticated", "service_role")
        }
        for table in (
            "processing_queue",
            "job_events",
            "vps_workers",
            "queue_settings",
            "user_documents",
        )
    }
    workers_for_users = ["SELECT"] if queue_admins_enabled(admin_db) else []
    assert privileges == {
        "processing_queue": {"anon": [], "authenticated": ["SELECT"], "service_role": ["SELECT"]},
        "job_events": {"anon": [], "authenticated": ["SELECT"], "service_role": ["SELECT"]},
        "vps_workers": {"anon": [], "authenticated": workers_for_users, "service_role": ["SELECT"]},
        "queue_settings": {"anon": [], "authenticated": [], "service_role": ["SELECT", "UPDATE"]},
        "user_documents": {
            "anon": [],
            "authenticated": ["DELETE", "INSERT", "SELECT", "UPDATE"],
            "service_role": ["DELETE", "INSERT", "SELECT", "UPDATE"],
        },
    }
    rls: dict[str, bool] = dict(
        admin_db.execute(
            "select relname, relrowsecurity from pg_class"
            " where relnamespace = 'public'::regnamespace"
            " and relkind = 'r'"
        ).fetchall()
    )
    assert all(rls.values()), rls
    private = admin_db.execute(
        "select has_schema_privilege(r, 'supaworker_private', 'usage')"
        " from unnest(array['anon', 'authenticated', 'service_role']) r"
    ).fetchall()
    assert private == [(False,), (False,), (False,)]


def test_stranger_cannot_see_or_cancel_through_supabase_py(ctx: Ctx) -> None:
    """The same rules as seen by supabase-js/-py users."""
    assert (
        ctx.stranger.client.table("processing_queue").select("*").eq("id", ctx.job).execute().data
        == []
    )
    mine = (
        ctx.owner.client.table("processing_queue")
        .select("id, status")
        .eq("id", ctx.job)
        .execute()
        .data
    )
    assert mine == [{"id": ctx.job, "status": "pending"}]
    with pytest.raises(PermissionDenied) as err:
        send(SupabaseSyncTransport(ctx.stranger.client), rpc.cancel_job(ctx.job))
    assert err.value.code == "PT403"
