"""supabase-py's async Realtime client (realtime-py 2.34.1, protocol 1.0.0), unchanged, against
the local endpoint: inserts and updates arrive, filters hold, users only see their own rows,
bad tokens are refused."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from realtime import RealtimeSubscribeStates
from realtime.types import PostgresChangesPayload, RealtimePostgresChangesListenEvent
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from supaworker_local import keys
from supaworker_local.config import StackConfig
from tests.realtime.conftest import Admin, insert

pytestmark = pytest.mark.stack

Payload = dict[str, Any]


class Listener:
    """A channel with postgres_changes bindings whose payloads land in a queue."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.channel = client.channel(name)
        self.changes: asyncio.Queue[Payload] = asyncio.Queue()
        self.live = asyncio.Event()
        self.system: list[Any] = []
        self.states: list[tuple[RealtimeSubscribeStates, Exception | None]] = []
        self.channel.on_system(self._on_system)

    def _on_system(self, payload: Any) -> None:
        self.system.append(payload)
        if payload.message == "Subscribed to PostgreSQL":
            self.live.set()

    def _on_change(self, payload: PostgresChangesPayload) -> None:
        # Callbacks are synchronous in realtime-py: hand the payload to the test's queue.
        self.changes.put_nowait(cast(Payload, payload))

    def on(self, event: str, table: str, filter_: str | None = None) -> Listener:
        self.channel.on_postgres_changes(
            RealtimePostgresChangesListenEvent(event),
            self._on_change,
            table=table,
            schema="public",
            filter=filter_,
        )
        return self

    async def subscribe(self, timeout: float = 20) -> Listener:
        await self.channel.subscribe(lambda state, err: self.states.append((state, err)))
        await asyncio.wait_for(self.live.wait(), timeout)
        return self

    async def next(self, timeout: float = 5) -> Payload:
        return await asyncio.wait_for(self.changes.get(), timeout)

    async def drain(self, seconds: float) -> list[Payload]:
        await asyncio.sleep(seconds)
        out = []
        while not self.changes.empty():
            out.append(self.changes.get_nowait())
        return out


@pytest.fixture()
async def clients(realtime_stack: StackConfig) -> AsyncIterator[Callable[..., Any]]:
    """`await new_client(key, token=None)`: an async Supabase client, closed after the test."""
    made: list[AsyncClient] = []

    async def new_client(key: str, token: str | None = None) -> AsyncClient:
        options = AsyncClientOptions(auto_refresh_token=False, persist_session=False)
        client = await acreate_client(realtime_stack.api_url, key, options)
        if token is not None:
            # A signed-in user's JWT, as supabase-py forwards it after sign-in.
            await client.realtime.set_auth(token)
        made.append(client)
        return client

    yield new_client
    for client in made:
        with contextlib.suppress(Exception):
            await client.remove_all_channels()


async def test_inserts_and_updates_arrive(
    clients: Callable[..., Any], rt_table: str, admin_db: Admin, realtime_stack: StackConfig
) -> None:
    client = await clients(realtime_stack.service_role_key)
    listener = await Listener(client, "py-basic").on("*", rt_table).subscribe()
    assert listener.states[0][0] == RealtimeSubscribeStates.SUBSCRIBED

    row_id = insert(admin_db, rt_table, None, "hello", 1)
    created = await listener.next()
    assert created["data"]["type"] == "INSERT"
    assert created["data"]["record"] == {"id": row_id, "owner": None, "body": "hello", "n": 1}
    assert created["data"]["errors"] is None

    admin_db.execute(f"update public.{rt_table} set body = 'changed' where id = %s", (row_id,))
    updated = await listener.next()
    assert updated["data"]["type"] == "UPDATE"
    assert updated["data"]["record"]["body"] == "changed"
    assert updated["data"]["old_record"] == {"id": row_id}


async def test_filters_eq_in_and_gt(
    clients: Callable[..., Any], rt_table: str, admin_db: Admin, realtime_stack: StackConfig
) -> None:
    client = await clients(realtime_stack.secret_key)  # an sb_ key works like the service key
    eq = await Listener(client, "py-eq").on("INSERT", rt_table, "body=eq.wanted").subscribe()
    in_ = await Listener(client, "py-in").on("INSERT", rt_table, "n=in.(2,4)").subscribe()
    gt = await Listener(client, "py-gt").on("UPDATE", rt_table, "n=gt.100").subscribe()

    for n, body in ((1, "wanted"), (2, "other"), (3, "other"), (4, "wanted")):
        insert(admin_db, rt_table, None, body, n)
    admin_db.execute(f"update public.{rt_table} set n = n * 50")  # 50, 100, 150, 200

    assert sorted(p["data"]["record"]["n"] for p in await eq.drain(1.5)) == [1, 4]
    assert sorted(p["data"]["record"]["n"] for p in await in_.drain(0)) == [2, 4]
    assert sorted(p["data"]["record"]["n"] for p in await gt.drain(0)) == [150, 200]


async def test_users_only_receive_their_own_rows(
    clients: Callable[..., Any],
    rt_table: str,
    admin_db: Admin,
    realtime_stack: StackConfig,
    make_user: Callable[..., Any],
) -> None:
    alice, bob = make_user(), make_user()
    alice_rt = (
        await Listener(await clients(realtime_stack.anon_key, alice.token), "py-rls")
        .on("*", rt_table)
        .subscribe()
    )
    bob_rt = (
        await Listener(await clients(realtime_stack.publishable_key, bob.token), "py-rls")
        .on("*", rt_table)
        .subscribe()
    )

    alice_row = insert(admin_db, rt_table, alice.id, "alice's", 1)
    bob_row = insert(admin_db, rt_table, bob.id, "bob's", 2)
    insert(admin_db, rt_table, uuid.uuid4(), "nobody's", 3)
    admin_db.execute(f"update public.{rt_table} set n = n + 10")

    alice_got = await alice_rt.drain(1.5)
    bob_got = await bob_rt.drain(0)
    assert {(p["data"]["type"], p["data"]["record"]["id"]) for p in alice_got} == {
        ("INSERT", alice_row),
        ("UPDATE", alice_row),
    }
    assert {(p["data"]["type"], p["data"]["record"]["id"]) for p in bob_got} == {
        ("INSERT", bob_row),
        ("UPDATE", bob_row),
    }
    assert all(p["data"]["record"]["owner"] == str(alice.id) for p in alice_got)


async def test_set_auth_moves_a_live_subscription_to_another_user(
    clients: Callable[..., Any],
    rt_table: str,
    admin_db: Admin,
    realtime_stack: StackConfig,
    make_user: Callable[..., Any],
) -> None:
    alice, bob = make_user(), make_user()
    client = await clients(realtime_stack.anon_key, alice.token)
    listener = await Listener(client, "py-switch").on("INSERT", rt_table).subscribe()
    listener.live.clear()
    await client.realtime.set_auth(bob.token)  # sends `access_token` to the joined channel
    await asyncio.wait_for(listener.live.wait(), 10)
    insert(admin_db, rt_table, alice.id, "alice's")
    insert(admin_db, rt_table, bob.id, "bob's")
    got = await listener.drain(1.5)
    assert [p["data"]["record"]["body"] for p in got] == ["bob's"]


async def test_forged_tokens_are_refused(
    clients: Callable[..., Any], rt_table: str, realtime_stack: StackConfig
) -> None:
    forged_key = keys.mint("not-the-project-secret-but-long-enough!!", "service_role")
    client = await clients(forged_key)
    client.realtime.max_retries = 1
    with pytest.raises(Exception, match="401"):
        await client.channel("py-forged").subscribe()

    forged_user = keys.mint(
        "not-the-project-secret-but-long-enough!!", "authenticated", sub=str(uuid.uuid4())
    )
    client = await clients(realtime_stack.anon_key, forged_user)
    listener = Listener(client, "py-forged-user").on("*", rt_table)
    await listener.channel.subscribe(lambda state, err: listener.states.append((state, err)))
    state, error = listener.states[0]
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "JwtSignatureError" in str(error)
    assert not listener.live.is_set()


async def test_table_outside_the_publication_reports_an_error(
    clients: Callable[..., Any], admin_db: Admin, realtime_stack: StackConfig
) -> None:
    name = f"rt_private_{uuid.uuid4().hex[:8]}"
    admin_db.execute(f"create table public.{name} (id bigint primary key)")
    try:
        client = await clients(realtime_stack.service_role_key)
        listener = Listener(client, "py-unpublished").on("*", name)
        errors: list[Exception | None] = []
        await listener.channel.subscribe(
            lambda state, err: (
                errors.append(err) if state == RealtimeSubscribeStates.CHANNEL_ERROR else None
            )
        )
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.1)
        assert errors and "Please check Realtime is enabled" in str(errors[0])
    finally:
        admin_db.execute(f"drop table public.{name}")


async def test_broadcast_and_http_send(
    clients: Callable[..., Any], realtime_stack: StackConfig
) -> None:
    listener_client = await clients(realtime_stack.anon_key)
    sender_client = await clients(realtime_stack.service_role_key)
    received: asyncio.Queue[Any] = asyncio.Queue()
    topic = f"py-room-{uuid.uuid4().hex[:6]}"
    listen = listener_client.channel(topic).on_broadcast("*", received.put_nowait)
    await listen.subscribe()
    sender = sender_client.channel(topic)
    await sender.subscribe()

    await sender.send_broadcast("hello", {"from": "ws"})
    first = await asyncio.wait_for(received.get(), 5)
    assert (first["event"], first["payload"]) == ("hello", {"from": "ws"})
    await sender.http_send("hello", {"from": "rest"})  # POST /api/broadcast/<topic>/events/...
    second = await asyncio.wait_for(received.get(), 5)
    assert (second["event"], second["payload"]) == ("hello", {"from": "rest"})
