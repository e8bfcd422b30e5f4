"""Queue admins (migration 0007_queue_admins.sql) through PostgREST and Realtime:
what anon, ordinary users, a queue admin and service_role may call and see.

The dashboard page relies on exactly these answers, so they are checked here without a
browser: the admin_* functions, the SELECT policies, the JWT claim that makes an admin, the
claims swap inside admin_cancel_job, and Realtime's per-subscriber RLS check."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from supaworker import QueueClient, rpc
from supaworker.models import WorkerStatus
from supaworker.rpc import RpcCall
from supaworker_local import keys
from supaworker_local.config import StackConfig
from tests.conftest import StackUser
from tests.dashboard.conftest import Api
from tests.realtime.wire import Message, WireClient, websocket_url

pytestmark = pytest.mark.stack
# The admin_* functions are not in supaworker.rpc (only the dashboard, with supabase-js, calls
# them), so they go through the raw `api.rpc`; the queue's own functions through `api.call`.


def _register(worker_id: str, slots: int = 1, queues: list[str] | None = None) -> RpcCall[Any]:
    return rpc.register_worker(
        worker_id,
        worker_name=None,
        max_concurrent_jobs=slots,
        capabilities={},
        queues=queues,
        host=None,
        version=None,
    )


Admin = psycopg.Connection[tuple[object, ...]]
ROLES = ("anon", "owner", "stranger", "admin", "service")


@dataclass
class Ctx:
    admin: StackUser
    owner: StackUser
    stranger: StackUser
    queue: str
    worker: str
    owner_job: str  # pending, in `queue`
    other_job: str  # pending, in `queue`, of a third user
    tokens: dict[str, str]


@pytest.fixture()
def ctx(
    stack: StackConfig,
    api: Api,
    queue: QueueClient,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> Ctx:
    admin, owner, stranger, third = make_user(admin=True), make_user(), make_user(), make_user()
    name, worker = unique("dash"), unique("w-dash")
    owner_job = queue.enqueue(owner.create_document(admin_db), queue=name)
    other_job = queue.enqueue(third.create_document(admin_db), queue=name)
    registered = api.call(stack.service_role_key, _register(worker, slots=10, queues=[name]))
    assert registered.status == 200, registered.body
    tokens = {
        "anon": stack.anon_key,
        "owner": owner.token,
        "stranger": stranger.token,
        "admin": admin.token,
        "service": stack.service_role_key,
    }
    return Ctx(admin, owner, stranger, name, worker, str(owner_job.id), str(other_job.id), tokens)


def test_admin_functions_answer_only_queue_admins_and_service_role(
    api: Api, ctx: Ctx, admin_db: Admin
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("admin_queue_stats", {}),
        ("admin_recent_failures", {"p_limit": 5}),
        ("admin_set_worker_status", {"p_worker_id": ctx.worker, "p_status": "paused"}),
        ("admin_retry_job", {"p_job_id": ctx.owner_job}),  # pending: returned unchanged
        # The owner may cancel_job their own job, but admin_cancel_job is for admins only.
        ("admin_cancel_job", {"p_job_id": ctx.owner_job}),
    ]
    seen: dict[tuple[str, str], tuple[int, str | None]] = {}
    replies: dict[tuple[str, str], Any] = {}
    for fn, params in calls:
        for role in ROLES:
            reply = api.rpc(ctx.tokens[role], fn, params)
            seen[(fn, role)] = (reply.status, reply.code)
            replies[(fn, role)] = reply.body
    expected: dict[str, tuple[int, str | None]] = {
        "anon": (401, "42501"),
        "owner": (403, "PT403"),
        "stranger": (403, "PT403"),
        "admin": (200, None),
        "service": (200, None),
    }
    assert seen == {(fn, role): expected[role] for fn, _ in calls for role in ROLES}

    refusal = replies[("admin_queue_stats", "owner")]
    assert refusal["message"] == f"user {ctx.owner.id} is not a queue admin"
    assert "app_metadata.queue_admin" in refusal["hint"]
    stats = replies[("admin_queue_stats", "admin")]
    assert stats["by_queue"][ctx.queue]["pending"] == 2
    assert set(stats) >= {"by_status", "workers", "server_time", "dead_worker_horizon_seconds"}
    assert replies[("admin_cancel_job", "admin")]["status"] == "cancelled"
    assert replies[("admin_cancel_job", "service")]["status"] == "cancelled"  # unchanged

    # The refused calls changed nothing: one cancellation (the admin's), one pause.
    events = admin_db.execute(
        "select event from public.job_events where job_id = %s order by id", (ctx.owner_job,)
    ).fetchall()
    assert events == [("enqueued",), ("cancelled",)]
    assert admin_db.execute(
        "select status from public.vps_workers where worker_id = %s", (ctx.worker,)
    ).fetchone() == ("paused",)


def test_admins_read_every_row_others_only_their_own(api: Api, ctx: Ctx) -> None:
    jobs = f"({ctx.owner_job},{ctx.other_job})"
    reads = {
        "processing_queue": f"?id=in.{jobs}&select=id&order=id",
        "job_events": f"?job_id=in.{jobs}&select=job_id&order=job_id",
        "vps_workers": f"?worker_id=eq.{ctx.worker}&select=worker_id",
    }
    both = sorted([{"id": ctx.owner_job}, {"id": ctx.other_job}], key=lambda r: r["id"])
    expected: dict[str, dict[str, Any]] = {
        "anon": dict.fromkeys(reads, 401),
        "owner": {
            "processing_queue": [{"id": ctx.owner_job}],
            "job_events": [{"job_id": ctx.owner_job}],
            "vps_workers": [],  # signed-in users may query the table, RLS shows them nothing
        },
        "stranger": {table: [] for table in reads},
    }
    everything = {
        "processing_queue": both,
        "job_events": [{"job_id": r["id"]} for r in both],
        "vps_workers": [{"worker_id": ctx.worker}],
    }
    expected["admin"] = expected["service"] = everything
    for role in ROLES:
        for table, query in reads.items():
            reply = api.table(ctx.tokens[role], "GET", table, query)
            got = reply.status if reply.status != 200 else reply.body
            assert got == expected[role][table], (role, table, reply.body)

    # Reading is all an admin may do with the tables; changes go through the functions.
    admin = ctx.tokens["admin"]
    writes = [
        ("PATCH", "vps_workers", f"?worker_id=eq.{ctx.worker}", {"status": "paused"}),
        ("DELETE", "vps_workers", f"?worker_id=eq.{ctx.worker}", None),
        ("PATCH", "processing_queue", f"?id=eq.{ctx.other_job}", {"priority": 9}),
        ("DELETE", "job_events", f"?job_id=eq.{ctx.other_job}", None),
        ("GET", "queue_settings", "", None),
    ]
    for method, table, query, body in writes:
        reply = api.table(admin, method, table, query, body)
        assert (reply.status, reply.code) == (403, "42501"), (method, table, reply.body)


def _claim(api: Api, ctx: Ctx) -> dict[str, Any]:
    reply = api.call(ctx.tokens["service"], rpc.claim_next_job(ctx.worker, 1, None))
    assert reply.status == 200 and len(reply.body) == 1, reply.body
    job: dict[str, Any] = reply.body[0]
    return job


def test_admin_acts_on_any_users_jobs_with_the_queue_rules(
    api: Api, ctx: Ctx, queue: QueueClient, admin_db: Admin
) -> None:
    svc, admin = ctx.tokens["service"], ctx.tokens["admin"]
    # The two pending jobs of the fixture, then two more: one failed, one processing, one
    # assigned, one completed (all the owner's or the third user's, none the admin's).
    failed = _claim(api, ctx)
    reply = api.call(
        svc,
        rpc.fail_job(
            uuid.UUID(failed["id"]),
            ctx.worker,
            failed["attempt"],
            "boom: bad PDF",
            retryable=False,
        ),
    )
    assert reply.status == 200 and reply.body[0]["status"] == "failed", reply.body
    processing = _claim(api, ctx)
    assert api.call(
        svc, rpc.start_job(uuid.UUID(processing["id"]), ctx.worker, processing["attempt"])
    ).body
    completed_doc = ctx.owner.create_document(admin_db)
    assigned_doc = ctx.owner.create_document(admin_db)
    completed = str(queue.enqueue(completed_doc, queue=ctx.queue, priority=5).id)
    done = _claim(api, ctx)
    assert done["id"] == completed
    assert api.call(
        svc, rpc.complete_job(uuid.UUID(completed), ctx.worker, done["attempt"], None)
    ).body
    assigned = str(queue.enqueue(assigned_doc, queue=ctx.queue).id)
    assert _claim(api, ctx)["id"] == assigned

    failures = api.rpc(admin, "admin_recent_failures", {"p_limit": 1000})
    assert failures.status == 200
    mine = [f for f in failures.body if f["queue"] == ctx.queue]
    assert [(f["id"], f["error_message"]) for f in mine] == [(failed["id"], "boom: bad PDF")]

    stats = api.rpc(admin, "admin_queue_stats").body
    assert stats["by_queue"][ctx.queue] == {
        "pending": 0,
        "assigned": 1,
        "processing": 1,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    server_time = datetime.fromisoformat(stats["server_time"])
    assert abs((datetime.now(UTC) - server_time).total_seconds()) < 60
    assert float(stats["dead_worker_horizon_seconds"]) == 30

    retried = api.rpc(admin, "admin_retry_job", {"p_job_id": failed["id"]})
    assert retried.status == 200
    assert (retried.body["status"], retried.body["retry_count"]) == ("pending", 0)
    stopping = api.rpc(admin, "admin_cancel_job", {"p_job_id": processing["id"]})
    assert (stopping.body["status"], stopping.body["cancel_requested"]) == ("processing", True)
    cancelled = api.rpc(admin, "admin_cancel_job", {"p_job_id": assigned})
    assert cancelled.body["status"] == "cancelled"
    # cancel_job's bookkeeping ran: the worker holds only the processing job now.
    assert admin_db.execute(
        "select current_jobs from public.vps_workers where worker_id = %s", (ctx.worker,)
    ).fetchone() == (1,)
    heartbeat = api.call(svc, rpc.heartbeat_worker(ctx.worker, [uuid.UUID(processing["id"])]))
    assert heartbeat.body["cancel"] == [processing["id"]]

    # The wrapped functions' own errors come through unchanged.
    unknown = str(uuid.uuid4())
    errors = [
        ("admin_retry_job", {"p_job_id": completed}, 409, "PT409"),
        ("admin_retry_job", {"p_job_id": processing["id"]}, 409, "PT409"),
        ("admin_retry_job", {"p_job_id": unknown}, 404, "PT404"),
        ("admin_cancel_job", {"p_job_id": unknown}, 404, "PT404"),
        (
            "admin_set_worker_status",
            {"p_worker_id": ctx.worker, "p_status": "offline"},
            400,
            "22023",
        ),
        ("admin_set_worker_status", {"p_worker_id": unknown, "p_status": "paused"}, 404, "PT404"),
        ("admin_recent_failures", {"p_limit": 0}, 400, "22023"),
    ]
    for fn, params, status, code in errors:
        reply = api.rpc(admin, fn, params)
        assert (reply.status, reply.code) == (status, code), (fn, params, reply.body)


def test_only_a_verified_app_metadata_claim_makes_a_queue_admin(
    stack: StackConfig, api: Api, make_user: Callable[..., StackUser]
) -> None:
    """Only JSON true in app_metadata (which only the server can set) counts; user_metadata is
    the user's to edit, and a token the user signed themselves is refused by PostgREST."""
    user = make_user()
    real_admin = make_user(admin=True)

    def token(secret: str, **claims: Any) -> str:
        return keys.mint(
            secret, "authenticated", ttl=600, sub=str(user.id), aud="authenticated", **claims
        )

    secret = stack.jwt_secret
    cases = {
        "string true": (token(secret, app_metadata={"queue_admin": "true"}), 403, "PT403"),
        "user_metadata": (
            token(secret, app_metadata={}, user_metadata={"queue_admin": True}),
            403,
            "PT403",
        ),
        "forged": (token("x" * 40, app_metadata={"queue_admin": True}), 401, "PGRST301"),
        "app_metadata": (token(secret, app_metadata={"queue_admin": True}), 200, None),
        "dev user --admin": (real_admin.token, 200, None),
    }
    for name, (jwt, status, code) in cases.items():
        reply = api.rpc(jwt, "admin_queue_stats")
        assert (reply.status, reply.code) == (status, code), (name, reply.body)
        workers = api.table(jwt, "GET", "vps_workers", "?select=worker_id&limit=1")
        if status == 403:
            assert (workers.status, workers.body) == (200, []), name


def test_admin_cancel_job_restores_the_callers_claims(ctx: Ctx, admin_db: Admin) -> None:
    """admin_cancel_job runs cancel_job with service_role claims; afterwards (and after a
    failed call) the request's own claims are back, so later statements of the same request
    are not privileged."""
    claims = json.dumps(
        {"role": "authenticated", "sub": str(ctx.admin.id), "app_metadata": {"queue_admin": True}}
    )
    after = "select auth.role(), auth.uid()::text, current_setting('request.jwt.claims')"
    with admin_db.transaction(force_rollback=True):
        admin_db.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        admin_db.execute("set local role authenticated")
        row = admin_db.execute(
            "select status from public.admin_cancel_job(%s)", (ctx.other_job,)
        ).fetchone()
        assert row == ("cancelled",)
        assert admin_db.execute(after).fetchone() == ("authenticated", str(ctx.admin.id), claims)
        with pytest.raises(psycopg.Error) as err, admin_db.transaction():
            admin_db.execute("select public.admin_cancel_job(gen_random_uuid())")
        assert err.value.sqlstate == "PT404"
        assert admin_db.execute(after).fetchone() == ("authenticated", str(ctx.admin.id), claims)
        # The same transaction as an ordinary user: refused, and cancel_job itself still
        # refuses another user's job (nothing privileged leaked into the session).
        user_claims = json.dumps({"role": "authenticated", "sub": str(ctx.owner.id)})
        admin_db.execute("select set_config('request.jwt.claims', %s, true)", (user_claims,))
        for sql in ("select public.admin_cancel_job(%s)", "select public.cancel_job(%s)"):
            with pytest.raises(psycopg.Error) as err, admin_db.transaction():
                admin_db.execute(sql, (ctx.other_job,))
            assert err.value.sqlstate == "PT403", sql


def _change(message: Message) -> tuple[str, str, str]:
    data = message.payload["data"]
    return data["table"], data["type"], data["record"]["id"]


async def test_realtime_sends_worker_changes_to_admins_only_and_no_job_changes(
    stack: StackConfig,
    api: Api,
    queue: QueueClient,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    """Workers: the private Broadcast topic `workers` (vps_workers is not published: heartbeats
    would be messages), which only admins may join. Jobs: processing_queue is not published
    (0026), so a postgres_changes subscription to it is refused, for an admin too, as hosted
    Realtime refuses a table outside the publication; the dashboard reads jobs on a timer."""
    admin, owner = make_user(admin=True), make_user()
    name, worker = unique("dash-rt"), unique("w-dash-rt")
    topic, workers = "realtime:queue-admin", "realtime:workers"
    config = {
        "postgres_changes": [
            {
                "event": "*",
                "schema": "public",
                "table": "processing_queue",
                "filter": f"queue=eq.{name}",
            },
        ]
    }
    clients: dict[str, WireClient] = {}
    try:
        for role, user in (("admin", admin), ("owner", owner)):
            client = await WireClient.connect(websocket_url(stack, stack.anon_key), "1.0.0")
            clients[role] = client
            _, joined = await client.join(topic, config, access_token=user.token)
            assert joined.status == "ok", joined.payload  # the join; the changes come apart
            subscribed = await client.subscribed(topic)
            assert subscribed.status == "error", subscribed.payload
            assert "Unable to subscribe to changes" in subscribed.payload["message"]
            _, joined = await client.join(workers, {"private": True}, access_token=user.token)
            assert joined.status == ("ok" if role == "admin" else "error"), joined.payload

        svc = stack.service_role_key
        assert api.call(svc, _register(worker)).status == 200
        assert api.call(svc, rpc.set_worker_status(worker, WorkerStatus.PAUSED)).status == 200
        queue.enqueue(owner.create_document(admin_db), queue=name)

        def is_worker(m: Message) -> bool:
            return (
                m.topic == workers
                and m.event == "broadcast"
                and m.payload["payload"]["record"]["worker_id"] == worker
            )

        admin_got = await clients["admin"].collect(2)
        assert [
            (m.payload["payload"]["type"], m.payload["payload"]["record"]["status"])
            for m in admin_got
            if is_worker(m)
        ] == [("INSERT", "active"), ("UPDATE", "paused")]
        assert [m for m in admin_got if m.event == "postgres_changes"] == []
        owner_got = await clients["owner"].collect(1)
        assert [m for m in owner_got if m.event in ("postgres_changes", "broadcast")] == []
    finally:
        for client in clients.values():
            await client.close()


ADMIN_FUNCTIONS = (
    "admin_queue_stats",
    "admin_recent_failures",
    "admin_retry_job",
    "admin_cancel_job",
    "admin_set_worker_status",
)


def test_admin_functions_follow_the_queue_function_conventions(admin_db: Admin) -> None:
    rows = admin_db.execute(
        """
        select p.proname, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner),
               obj_description(p.oid, 'pg_proc') is not null,
               has_function_privilege('anon', p.oid, 'execute'),
               has_function_privilege('authenticated', p.oid, 'execute'),
               has_function_privilege('service_role', p.oid, 'execute')
          from pg_proc p
         where p.pronamespace = 'public'::regnamespace and p.proname like 'admin\\_%%'
         order by p.proname
        """
    ).fetchall()
    assert [r[0] for r in rows] == sorted(ADMIN_FUNCTIONS)
    for name, *facts in rows:
        assert facts == [True, ['search_path=""'], "postgres", True, False, True, True], name

    # The helpers stay private: only the policies' predicate is executable, by authenticated
    # (RLS evaluates it as the querying role); the schema itself is closed to every API role.
    helpers = admin_db.execute(
        """
        select p.proname, p.proconfig,
               exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                        where a.grantee = 0 and a.privilege_type = 'EXECUTE'),
               array(select r from unnest(array['anon', 'authenticated', 'service_role']) r
                      where has_function_privilege(r, p.oid, 'execute'))
          from pg_proc p
         where p.pronamespace = 'supaworker_private'::regnamespace
           and p.proname in ('is_queue_admin', 'require_queue_admin', 'cancel_job_as_operator')
         order by p.proname
        """
    ).fetchall()
    assert helpers == [
        ("cancel_job_as_operator", ['search_path=""'], False, []),
        ("is_queue_admin", ['search_path=""'], False, ["authenticated"]),
        ("require_queue_admin", ['search_path=""'], False, []),
    ]
