"""Broadcast from the database and private channels, as hosted has them: `realtime.send`,
`realtime.broadcast_changes` from a trigger, joins and client broadcasts authorised by RLS
policies on `realtime.messages`; on the wire and with realtime-py."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from realtime import RealtimeSubscribeStates
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from supaworker_local.config import StackConfig
from tests.realtime import metrics_client
from tests.realtime.conftest import LocalRealtime, PrivateTopics, connect
from tests.realtime.wire import Message, WireClient

pytestmark = pytest.mark.stack

PRIVATE = {"private": True}


def _refusal(topic: str) -> dict[str, object]:
    return {
        "status": "error",
        "response": {
            "reason": "Unauthorized: You do not have permissions to read from this Channel "
            f"topic: {topic}"
        },
    }


def _send(stack: StackConfig, payload: str, event: str, topic: str, private: bool) -> None:
    """realtime.send as a project's own SQL calls it (the migration owner, no RLS bypass)."""
    with psycopg.connect(stack.db_url, autocommit=True) as db:
        db.execute("select realtime.send(%s::jsonb, %s, %s, %s)", (payload, event, topic, private))


def _broadcast(message: Message) -> bool:
    return message.event == "broadcast"


async def test_private_joins_follow_the_policies(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    make_user: Callable[..., Any],
    private_topics: PrivateTopics,
) -> None:
    alice, bob = make_user(), make_user()
    client = await connect(wire, realtime_stack, realtime_stack.anon_key)
    own, other = private_topics.own(alice.id), private_topics.own(bob.id)
    _, answer = await client.join(f"realtime:{own}", PRIVATE, alice.token)
    assert answer.status == "ok"
    _, answer = await client.join(f"realtime:{other}", PRIVATE, alice.token)
    assert answer.payload == _refusal(other)
    _, answer = await client.join(
        f"realtime:{private_topics.read_only(alice.id)}", PRIVATE, alice.token
    )
    assert answer.status == "ok"  # SELECT is enough to join
    anon = await connect(wire, realtime_stack, realtime_stack.anon_key)
    _, answer = await anon.join(f"realtime:{own}", PRIVATE)
    assert answer.payload == _refusal(own)
    _, answer = await anon.join(f"realtime:{own}")
    assert answer.status == "ok"  # the public topic of the same name needs no policy
    service = await connect(wire, realtime_stack, realtime_stack.service_role_key)
    _, answer = await service.join(f"realtime:{own}", PRIVATE)
    assert answer.status == "ok"  # service_role bypasses RLS


async def test_realtime_send_reaches_the_topic_it_names(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    make_user: Callable[..., Any],
    private_topics: PrivateTopics,
) -> None:
    alice = make_user()
    topic = private_topics.own(alice.id)
    private = await connect(wire, realtime_stack, realtime_stack.anon_key, "2.0.0")
    public = await connect(wire, realtime_stack, realtime_stack.anon_key)
    assert (await private.join(f"realtime:{topic}", PRIVATE, alice.token))[1].status == "ok"
    assert (await public.join(f"realtime:{topic}"))[1].status == "ok"

    _send(realtime_stack, '{"n": 1, "big": 12345678901234567890}', "note", topic, True)
    got = await private.expect(_broadcast)
    message_id = got.payload["payload"]["id"]
    assert got.payload["payload"] == {"n": 1, "big": 12345678901234567890, "id": message_id}
    assert (got.topic, got.payload["event"]) == (f"realtime:{topic}", "note")
    assert [m for m in await public.collect(0.5) if _broadcast(m)] == []  # private only

    _send(realtime_stack, '{"n": 2}', "note", topic, False)
    got_public = await public.expect(_broadcast)
    assert got_public.payload == {
        "type": "broadcast",
        "event": "note",
        "payload": {"n": 2, "id": got_public.payload["meta"]["id"]},
        "meta": {"id": got_public.payload["meta"]["id"]},
    }
    assert [m for m in await private.collect(0.5) if _broadcast(m)] == []


async def test_broadcast_changes_from_a_trigger(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    make_user: Callable[..., Any],
    private_topics: PrivateTopics,
    broadcasting_table: str,
) -> None:
    alice, bob = make_user(), make_user()
    a = await connect(wire, realtime_stack, realtime_stack.anon_key)
    b = await connect(wire, realtime_stack, realtime_stack.anon_key)
    await a.join(f"realtime:{private_topics.own(alice.id)}", PRIVATE, alice.token)
    await b.join(f"realtime:{private_topics.own(bob.id)}", PRIVATE, bob.token)
    with psycopg.connect(realtime_stack.db_url, autocommit=True) as db:
        db.execute(f"insert into public.{broadcasting_table} values (1, %s, 'x')", (alice.id,))
        db.execute(f"update public.{broadcasting_table} set body = 'y' where id = 1")
        db.execute(f"delete from public.{broadcasting_table} where id = 1")
    got = [(await a.expect(_broadcast)).payload for _ in range(3)]
    assert [m["event"] for m in got] == ["INSERT", "UPDATE", "DELETE"]
    row = {"id": 1, "owner": str(alice.id), "body": "x"}
    common = {"table": broadcasting_table, "schema": "public"}
    assert [{k: v for k, v in m["payload"].items() if k != "id"} for m in got] == [
        {**common, "operation": "INSERT", "record": row, "old_record": None},
        {**common, "operation": "UPDATE", "record": {**row, "body": "y"}, "old_record": row},
        {**common, "operation": "DELETE", "record": None, "old_record": {**row, "body": "y"}},
    ]
    assert [m for m in await b.collect(0.5) if _broadcast(m)] == []  # bob's topic: nothing


async def test_client_broadcast_needs_an_insert_policy(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    make_user: Callable[..., Any],
    private_topics: PrivateTopics,
) -> None:
    alice = make_user()
    for topic, allowed in (
        (private_topics.own(alice.id), True),
        (private_topics.read_only(alice.id), False),
    ):
        listener = await connect(wire, realtime_stack, realtime_stack.service_role_key)
        sender = await connect(wire, realtime_stack, realtime_stack.anon_key)
        await listener.join(f"realtime:{topic}", PRIVATE)
        ref, _ = await sender.join(f"realtime:{topic}", PRIVATE, alice.token)
        payload = {"type": "broadcast", "event": "hi", "payload": {"to": topic}}
        await sender.send(f"realtime:{topic}", "broadcast", payload, join_ref=ref)
        received = [m for m in await listener.collect(1.0) if _broadcast(m)]
        assert [m.payload["payload"] for m in received] == ([{"to": topic}] if allowed else [])


@pytest.fixture()
async def py_client(realtime_stack: StackConfig) -> AsyncIterator[Callable[..., Any]]:
    made: list[AsyncClient] = []

    async def new_client(token: str) -> AsyncClient:
        options = AsyncClientOptions(auto_refresh_token=False, persist_session=False)
        client = await acreate_client(realtime_stack.api_url, realtime_stack.anon_key, options)
        await client.realtime.set_auth(token)
        made.append(client)
        return client

    yield new_client
    for client in made:
        with contextlib.suppress(Exception):
            await client.remove_all_channels()


async def test_realtime_py_private_channel(
    realtime_stack: StackConfig,
    py_client: Callable[..., Any],
    make_user: Callable[..., Any],
    private_topics: PrivateTopics,
    broadcasting_table: str,
) -> None:
    alice, bob = make_user(), make_user()
    before = await metrics_client.read(realtime_stack)
    client = await py_client(alice.token)
    received: asyncio.Queue[Any] = asyncio.Queue()
    own = client.channel(private_topics.own(alice.id), {"config": {"private": True}})
    own.on_broadcast("*", received.put_nowait)
    states: list[tuple[RealtimeSubscribeStates, Exception | None]] = []
    await own.subscribe(lambda state, err: states.append((state, err)))
    assert states == [(RealtimeSubscribeStates.SUBSCRIBED, None)]

    theirs = client.channel(private_topics.own(bob.id), {"config": {"private": True}})
    refused: list[tuple[RealtimeSubscribeStates, Exception | None]] = []
    await theirs.subscribe(lambda state, err: refused.append((state, err)))
    assert refused[0][0] == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "You do not have permissions to read from this Channel topic" in str(refused[0][1])

    for n in range(3):
        _send(realtime_stack, f'{{"n": {n}}}', "job", private_topics.own(alice.id), True)
    got = [await asyncio.wait_for(received.get(), 10) for _ in range(3)]
    assert [(m["event"], m["payload"]["n"]) for m in got] == [("job", 0), ("job", 1), ("job", 2)]
    with psycopg.connect(realtime_stack.db_url, autocommit=True) as db:  # broadcast_changes
        db.execute(f"insert into public.{broadcasting_table} values (7, %s, 'py')", (alice.id,))
        db.execute(f"insert into public.{broadcasting_table} values (8, %s, 'bob')", (bob.id,))
    change = await asyncio.wait_for(received.get(), 10)
    assert (change["event"], change["payload"]["operation"]) == ("INSERT", "INSERT")
    assert change["payload"]["record"] == {"id": 7, "owner": str(alice.id), "body": "py"}
    after = await metrics_client.read(realtime_stack)
    sent = 'realtime_messages_sent_by_kind_total{kind="broadcast"}'
    assert after[sent] - before[sent] == 4  # bob's row went to bob's topic: nobody joined it
    assert after["realtime_messages_sent_total"] - before["realtime_messages_sent_total"] >= 4
    assert received.empty()


async def test_messages_older_than_72_hours_are_deleted(
    local_realtime: LocalRealtime, realtime_stack: StackConfig
) -> None:
    """Hosted's Janitor drops realtime.messages partitions past 72 hours; so does the endpoint."""
    topic = f"old-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(realtime_stack.admin_db_url, autocommit=True) as db:
        for hours in (73, 71):
            db.execute(
                "insert into realtime.messages (topic, extension, payload, event, inserted_at)"
                " values (%s, 'broadcast', '{}', 'e',"
                " (now() at time zone 'utc') - make_interval(hours => %s))",
                (topic, hours),
            )
        await local_realtime("pro")  # the janitor runs when the endpoint starts, then hourly
        for _ in range(100):
            left = db.execute(
                "select count(*) from realtime.messages where topic = %s", (topic,)
            ).fetchone()
            if left == (1,):
                break
            await asyncio.sleep(0.1)
        assert left == (1,)
        db.execute("delete from realtime.messages where topic = %s", (topic,))
