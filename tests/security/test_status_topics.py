"""Users' job status and the worker feed on private Broadcast topics (75_status_topics.sql,
issue 20), through realtime-py as a frontend would use it: each user reads only
`jobs:<own id>`, queue admins read every `jobs:*` topic and `workers`, the anon key alone
reads none; a user's topic carries nothing about other users' jobs, DELETEs included."""

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
        changes = [(m["type"], (m.get("record") or m["old_record"])["id"]) for m in own]
        assert changes == [
            ("INSERT", str(job.id)),
            ("UPDATE", str(job.id)),
            ("DELETE", str(job.id)),
        ]
        assert own[1]["record"]["status"] == "cancelled"
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
