"""Nobody receives anything about another user's jobs over Realtime, ids included (issue 20),
proven with both official clients: realtime-py and supabase-js. Bob (signed in) and a holder of
the anon key alone try every way in: postgres_changes on each supaworker table (none is
published: 0022, 0023, 0026; refused as hosted refuses a table outside the publication), alice's
private topic `jobs:<alice>` (refused by the RLS policy on realtime.messages), and a public
channel of the same name (joined, but the database sends to the private one only). Alice's job
is then enqueued, cancelled and deleted with its document (INSERT, UPDATE, DELETE: the DELETE is
what postgres_changes used to send to every subscriber). Bob's own job goes through the same
steps, and his own topic receives those: the pipe works, it only carries his.

The last test shows why the table left the publication: published again (what docs/upgrading.md
lets an app do for its own postgres_changes subscribers), every subscriber receives other
users' job ids when their jobs are deleted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from realtime.types import RealtimePostgresChangesListenEvent

from supaworker.client import QueueClient
from supaworker_local.config import StackConfig
from tests.conftest import StackUser

pytestmark = pytest.mark.stack
Admin = psycopg.Connection[tuple[object, ...]]
TABLES = ("processing_queue", "job_events", "vps_workers")


class Ear:
    """One realtime-py channel that records everything its callbacks receive."""

    def __init__(self, client: AsyncRealtimeClient, topic: str, private: bool) -> None:
        self.channel = client.channel(
            topic, {"config": {"broadcast": {"self": False}, "private": private}}
        )
        self.heard: list[Any] = []
        self.states: list[str] = []
        self.system: list[Any] = []

    def changes(self, table: str) -> Ear:
        self.channel.on_postgres_changes(
            RealtimePostgresChangesListenEvent.All, self.heard.append, table=table
        )
        return self

    def broadcasts(self) -> Ear:
        self.channel.on_broadcast("*", self.heard.append)
        return self

    async def join(self) -> Ear:
        self.channel.on_system(self.system.append)
        # realtime-py reports a system error (a refused postgres_changes) as CHANNEL_ERROR.
        await self.channel.subscribe(lambda state, err: self.states.append(f"{state} {err}"))
        return self


@pytest.fixture()
async def realtime_py(stack: StackConfig) -> AsyncIterator[Callable[..., Any]]:
    made: list[AsyncRealtimeClient] = []

    async def connect(token: str | None) -> AsyncRealtimeClient:
        client = AsyncRealtimeClient(f"{stack.api_url}/realtime/v1", token=stack.anon_key)
        await client.connect()
        if token is not None:
            await client.set_auth(token)
        made.append(client)
        return client

    yield connect
    for client in made:
        with contextlib.suppress(Exception):  # closing is best effort
            await asyncio.wait_for(client.close(), 5)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lifecycle(queue: QueueClient, admin_db: Admin, user: StackUser, name: str) -> str:
    """A job that is enqueued, cancelled, then deleted with its document: its id."""
    document = user.create_document(admin_db)
    job = queue.enqueue(document, queue=name)
    queue.cancel(job.id)
    admin_db.execute("delete from public.user_documents where id = %s", (document,))
    return str(job.id)


def mentions(heard: list[Any], *needles: str) -> list[Any]:
    return [m for m in heard if any(n in json.dumps(m, default=str) for n in needles)]


async def test_realtime_py_hears_nothing_of_another_users_jobs(
    stack: StackConfig,
    realtime_py: Callable[..., Any],
    queue: QueueClient,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    alice, bob = make_user(), make_user()
    bob_client, anon_client = await realtime_py(bob.token), await realtime_py(None)
    tables = [
        await Ear(client, f"{who}-{table}", private=False).changes(table).join()
        for client, who in ((bob_client, "bob"), (anon_client, "anon"))
        for table in TABLES
    ]
    theirs = await Ear(bob_client, f"jobs:{alice.id}", private=True).broadcasts().join()
    # A client keeps one channel per topic: the public namesake on connections of its own.
    same_name = [
        await Ear(await realtime_py(token), f"jobs:{alice.id}", private=False).broadcasts().join()
        for token in (bob.token, None)
    ]
    own = await Ear(bob_client, f"jobs:{bob.id}", private=True).broadcasts().join()
    joined = str(RealtimeSubscribeStates.SUBSCRIBED)
    await until(
        lambda: all(any("Unable to subscribe" in s for s in e.states) for e in tables),
        "every postgres_changes subscription to be refused",
    )
    await until(lambda: any("permissions to read" in s for s in theirs.states), "the refusal")
    await until(
        lambda: all(any(s.startswith(joined) for s in e.states) for e in [*same_name, own]),
        "the joins",
    )

    name = unique("news")
    alices = lifecycle(queue, admin_db, alice, name)
    bobs = lifecycle(queue, admin_db, bob, name)
    await until(lambda: len(own.heard) >= 3, "bob's own three changes")
    await asyncio.sleep(1.0)  # anything else that would come, comes now

    assert [m["payload"]["type"] for m in own.heard] == ["INSERT", "UPDATE", "DELETE"]
    assert {r["id"] for m in own.heard for r in m["payload"]["records"]} == {bobs}
    for ear in [*tables, theirs, *same_name, own]:
        assert mentions(ear.heard, alices, str(alice.id)) == [], ear.channel.topic
    assert [m for e in [*tables, theirs, *same_name] for m in e.heard] == []


async def test_supabase_js_hears_nothing_of_another_users_jobs(
    stack: StackConfig,
    run_js: Callable[..., Any],
    queue: QueueClient,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    alice, bob = make_user(), make_user()
    every_table = [{"id": t, "event": "*", "table": t} for t in TABLES]
    js = await run_js(
        stack.anon_key,
        [
            {"name": "tables", "token": bob.token, "channel": "bob", "subs": every_table},
            {"name": "anon-tables", "channel": "anon", "subs": every_table},
            {
                "name": "theirs",
                "token": bob.token,
                "channel": f"jobs:{alice.id}",
                "private": True,
                "subs": [],
                "listen": True,
            },
            {
                "name": "same-name",
                "token": bob.token,
                "channel": f"jobs:{alice.id}",
                "subs": [],
                "listen": True,
            },
            {
                "name": "anon-same-name",
                "channel": f"jobs:{alice.id}",
                "subs": [],
                "listen": True,
            },
            {
                "name": "own",
                "token": bob.token,
                "channel": f"jobs:{bob.id}",
                "private": True,
                "subs": [],
                "listen": True,
            },
        ],
    )

    def seen(client: str, key: str) -> list[dict[str, Any]]:
        return [line for line in js.lines if line.get("client") == client and key in line]

    def settled() -> bool:
        refused = all(
            any("Unable to subscribe" in line["systemError"] for line in seen(c, "systemError"))
            for c in ("tables", "anon-tables")
        )
        statuses = {c: [line["status"] for line in seen(c, "status")] for c in ("theirs", "own")}
        joined = all(
            "SUBSCRIBED" in [line["status"] for line in seen(c, "status")]
            for c in ("same-name", "anon-same-name")
        )
        return (
            refused
            and "CHANNEL_ERROR" in statuses["theirs"]
            and "SUBSCRIBED" in statuses["own"]
            and joined
        )

    async with asyncio.timeout(30):
        while not settled():
            await js.read_until(lambda _line: True)

    name = unique("news-js")
    alices = lifecycle(queue, admin_db, alice, name)
    bobs = lifecycle(queue, admin_db, bob, name)
    async with asyncio.timeout(15):
        while len(seen("own", "broadcast")) < 3:
            await js.read_until(lambda _line: True)
    await js.collect(1.0)  # anything else that would come, comes now

    own = [line["broadcast"]["payload"] for line in seen("own", "broadcast")]
    assert [m["type"] for m in own] == ["INSERT", "UPDATE", "DELETE"]
    assert {r["id"] for m in own for r in m["records"]} == {bobs}
    received = [line for line in js.lines if "eventType" in line or "broadcast" in line]
    assert mentions(received, alices, str(alice.id)) == []
    assert [line for line in received if line["client"] != "own"] == []


async def test_publishing_the_table_again_sends_every_delete_id_to_every_subscriber(
    stack: StackConfig,
    realtime_py: Callable[..., Any],
    queue: QueueClient,
    admin_db: Admin,
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    """What docs/upgrading.md warns of: with processing_queue published for an app's own
    postgres_changes subscribers, RLS keeps INSERTs and UPDATEs to their owners, but Realtime
    sends each DELETE, reduced to the primary key, to every subscriber of the table."""
    alice, bob = make_user(), make_user()
    admin_db.execute("alter publication supabase_realtime add table public.processing_queue")
    try:
        ear = Ear(await realtime_py(bob.token), f"bob-{uuid.uuid4().hex[:6]}", private=False)
        await ear.changes("processing_queue").join()
        await until(lambda: any("Subscribed to PostgreSQL" in str(m) for m in ear.system), "live")
        alices = lifecycle(queue, admin_db, alice, unique("republished"))
        await until(lambda: bool(mentions(ear.heard, alices)), "the DELETE of alice's job")
        (leaked,) = mentions(ear.heard, alices)
        assert leaked["data"]["type"] == "DELETE"
        assert leaked["data"]["old_record"] == {"id": alices}
    finally:
        admin_db.execute("alter publication supabase_realtime drop table public.processing_queue")
