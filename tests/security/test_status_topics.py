"""Users' job status and the worker feed on private Broadcast topics (75_status_topics.sql,
issue 20), through realtime-py as a frontend would use it: each user reads only
`jobs:<own id>`, queue admins read every `jobs:*` topic and `workers`, the anon key alone
reads none; a user's topic carries nothing about other users' jobs, DELETEs included. One
message per owner and statement, only for changes the owner sees, without payload or result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from supaworker.client import QueueClient
from supaworker.realtime_subscription import BroadcastBinding, close_quietly, subscribe
from supaworker_local.config import StackConfig
from tests.conftest import StackUser

pytestmark = pytest.mark.stack
Admin = psycopg.Connection[tuple[object, ...]]


async def listen(
    stack: StackConfig, topic: str, event: str, token: str | None
) -> tuple[Any, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    client = await subscribe(
        stack.api_url,
        stack.anon_key,
        topic,
        [BroadcastBinding(event, got.append)],
        access_token=token,
        private=True,
        timeout=5,
    )
    return client, got


async def refused(stack: StackConfig, topic: str, event: str, token: str | None) -> bool:
    try:
        client, _ = await listen(stack, topic, event, token)
    except (ConnectionError, TimeoutError):
        return True
    await close_quietly(client)
    return False


async def settle(got: list[dict[str, Any]], count: int, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.05)):
        if len(got) >= count:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # and nothing more


async def test_each_user_reads_only_their_own_jobs_topic(
    stack: StackConfig,
    queue: QueueClient,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    alice, bob, admin = make_user(), make_user(), make_user(admin=True)
    mine = f"jobs:{alice.id}"
    assert await refused(stack, mine, "job", bob.token)
    assert await refused(stack, mine, "job", None)  # the anon key alone
    assert await refused(stack, "workers", "worker", alice.token)

    own_client, own = await listen(stack, mine, "job", alice.token)
    admin_client, seen_by_admin = await listen(stack, mine, "job", admin.token)
    try:
        name = unique("topics")
        job = queue.enqueue(alice.create_document(admin_db), queue=name)
        queue.enqueue(bob.create_document(admin_db), queue=name)
        queue.cancel(job.id)
        admin_db.execute("delete from public.processing_queue where queue = %s", (name,))
        await settle(own, 3)
        changes = [(m["type"], [r["id"] for r in m["records"]]) for m in own]
        assert changes == [
            ("INSERT", [str(job.id)]),
            ("UPDATE", [str(job.id)]),
            ("DELETE", [str(job.id)]),
        ]
        assert own[1]["records"][0]["status"] == "cancelled"
        assert own[2]["records"] == [{"id": str(job.id)}]  # a DELETE says nothing else
        await settle(seen_by_admin, 3)
        assert [m["type"] for m in seen_by_admin] == ["INSERT", "UPDATE", "DELETE"]
    finally:
        await close_quietly(own_client)
        await close_quietly(admin_client)


async def test_admins_follow_worker_status_not_heartbeats(
    stack: StackConfig,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    admin = make_user(admin=True)
    client, got = await listen(stack, "workers", "worker", admin.token)
    worker = unique("w-topic")
    try:
        admin_db.execute(
            "select public.register_worker(%s, %s, 1, '{}', null, 'h', 'v')", (worker, worker)
        )
        for _ in range(3):
            admin_db.execute("select public.heartbeat_worker(%s)", (worker,))
        admin_db.execute("select public.set_worker_status(%s, 'paused')", (worker,))
        await settle(got, 2)
        mine = [
            (m["type"], m["record"]["status"]) for m in got if m["record"]["worker_id"] == worker
        ]
        assert mine == [("INSERT", "active"), ("UPDATE", "paused")]
    finally:
        await close_quietly(client)


async def test_one_message_per_owner_and_statement_for_what_the_owner_sees(
    stack: StackConfig,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    alice, bob = make_user(), make_user()
    own_client, own = await listen(stack, f"jobs:{alice.id}", "job", alice.token)
    bob_client, bobs = await listen(stack, f"jobs:{bob.id}", "job", bob.token)
    name, worker = unique("topics-bulk"), unique("w-bulk")
    try:
        docs = [alice.create_document(admin_db) for _ in range(60)] + [
            bob.create_document(admin_db)
        ]
        # One statement, 61 jobs of two owners: alice's 60 in two messages (50 per message),
        # bob's one in one.
        admin_db.execute(
            "insert into public.processing_queue (user_document_id, user_id, queue, payload)"
            " select d.id, d.user_id, %s, '{\"secret\": 1}'"
            " from public.user_documents d where d.id = any (%s)",
            (name, docs),
        )
        await settle(own, 2)
        await settle(bobs, 1)
        assert [(m["type"], len(m["records"])) for m in own] == [("INSERT", 50), ("INSERT", 10)]
        assert [(m["type"], len(m["records"])) for m in bobs] == [("INSERT", 1)]
        record = own[0]["records"][0]
        assert "payload" not in record and "result" not in record
        assert record["status"] == "pending" and record["user_id"] == str(alice.id)

        # What only the queue needs sends nothing: a claim that does not start the job
        # (assigned reads as the pending the owner saw), a fair-order tag, the release.
        own.clear()
        bobs.clear()
        admin_db.execute(
            "select public.register_worker(%s, %s, 100, '{}', array[%s], 'h', 'v')",
            (worker, worker, name),
        )
        admin_db.execute("select public.claim_next_job(%s, 100, array[%s])", (worker, name))
        admin_db.execute(
            "update public.processing_queue set fair_tag = fair_tag where queue = %s", (name,)
        )
        admin_db.execute("select public.release_jobs(%s)", (worker,))
        await settle(own, 1, timeout=1)
        assert own == [] and bobs == []

        # A starting claim of 61 jobs: one message per owner again (50 + 10 and 1).
        admin_db.execute("select public.claim_next_job(%s, 100, array[%s], true)", (worker, name))
        await settle(own, 2)
        await settle(bobs, 1)
        assert [len(m["records"]) for m in own] == [50, 10]
        assert {r["status"] for m in own for r in m["records"]} == {"processing"}
        assert [len(m["records"]) for m in bobs] == [1]
    finally:
        admin_db.execute("delete from public.processing_queue where queue = %s", (name,))
        admin_db.execute("select public.deregister_worker(%s)", (worker,))
        await close_quietly(own_client)
        await close_quietly(bob_client)
