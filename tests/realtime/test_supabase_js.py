"""supabase-js 2 (realtime-js, protocol 2.0.0), unchanged, under Node: subscribe, receive inserts
and updates, RLS isolation between users, filters, and a forged token refused."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from supaworker_local import keys
from supaworker_local.config import StackConfig
from tests.realtime import metrics_client
from tests.realtime.conftest import Admin, PrivateTopics, insert

pytestmark = pytest.mark.stack

# run_js: tests/realtime/js_clients.py (a plugin of tests/conftest.py).


async def test_supabase_js_receives_changes_with_rls_and_filters(
    run_js: Callable[..., Any],
    rt_table: str,
    admin_db: Admin,
    realtime_stack: StackConfig,
    make_user: Callable[..., Any],
) -> None:
    alice, bob = make_user(), make_user()
    js = await run_js(
        realtime_stack.publishable_key,
        [
            {
                "name": "alice",
                "token": alice.token,
                "channel": "js-alice",
                "subs": [
                    {"id": "all", "event": "*", "table": rt_table},
                    {"id": "big", "event": "INSERT", "table": rt_table, "filter": "n=gte.10"},
                ],
            },
            {
                "name": "bob",
                "token": bob.token,
                "channel": "js-bob",
                "subs": [
                    {"id": "all", "event": "*", "table": rt_table},
                    {
                        "id": "named",
                        "event": "INSERT",
                        "table": rt_table,
                        "filter": "body=in.(b1,b3)",
                    },
                ],
            },
        ],
    )
    await js.read_until(lambda line: line.get("ready") is True)
    statuses = [(line["client"], line["status"]) for line in js.lines if "status" in line]
    assert sorted(statuses) == [("alice", "SUBSCRIBED"), ("bob", "SUBSCRIBED")]

    a1 = insert(admin_db, rt_table, alice.id, "a1", 5)
    a2 = insert(admin_db, rt_table, alice.id, "a2", 50)
    for body in ("b1", "b2", "b3"):
        insert(admin_db, rt_table, bob.id, body, 1)
    admin_db.execute(f"update public.{rt_table} set body = 'a1!' where id = %s", (a1,))

    changes = await js.collect(2.0)
    seen = {(c["client"], c["sub"], c["eventType"], c["new"].get("body")) for c in changes}
    assert seen == {
        ("alice", "all", "INSERT", "a1"),
        ("alice", "all", "INSERT", "a2"),
        ("alice", "big", "INSERT", "a2"),
        ("alice", "all", "UPDATE", "a1!"),
        ("bob", "all", "INSERT", "b1"),
        ("bob", "all", "INSERT", "b2"),
        ("bob", "all", "INSERT", "b3"),
        ("bob", "named", "INSERT", "b1"),
        ("bob", "named", "INSERT", "b3"),
    }
    update = next(c for c in changes if c["eventType"] == "UPDATE")
    assert update["old"] == {"id": a1} and update["new"]["owner"] == str(alice.id)
    assert next(c for c in changes if c["new"].get("body") == "a2")["new"]["id"] == a2


async def test_supabase_js_forged_token_is_refused(
    run_js: Callable[..., Any], rt_table: str, realtime_stack: StackConfig
) -> None:
    forged = keys.mint(
        "definitely-not-the-project-jwt-secret!!", "authenticated", sub=str(uuid.uuid4())
    )
    js = await run_js(
        realtime_stack.anon_key,
        [
            {
                "name": "mallory",
                "token": forged,
                "channel": "js-forged",
                "subs": [{"id": "all", "event": "*", "table": rt_table}],
            },
        ],
    )
    line = await js.read_until(lambda line: "status" in line)
    assert line["status"] == "CHANNEL_ERROR"
    assert "Failed to validate JWT signature" in line["error"]


async def test_supabase_js_broadcast_between_clients(
    run_js: Callable[..., Any], realtime_stack: StackConfig
) -> None:
    topic = f"js-room-{uuid.uuid4().hex[:6]}"
    js = await run_js(
        realtime_stack.anon_key,
        [
            {
                "name": "sender",
                "channel": topic,
                "subs": [],
                "send": {"event": "cursor", "payload": {"x": 3}},
            },
            {"name": "receiver", "channel": topic, "subs": [], "listen": True},
        ],
    )
    await js.read_until(lambda line: line.get("ready") is True)
    await js.command("send")  # realtime-js sends it as a binary (V2) user broadcast frame
    got = await js.read_until(lambda line: "broadcast" in line)
    assert got["client"] == "receiver"
    assert got["broadcast"]["event"] == "cursor" and got["broadcast"]["payload"] == {"x": 3}
    if not any("sent" in line for line in js.lines):
        await js.read_until(lambda line: "sent" in line)
    assert [line["sent"] for line in js.lines if "sent" in line] == ["ok"]


async def test_supabase_js_private_channels(
    run_js: Callable[..., Any],
    realtime_stack: StackConfig,
    make_user: Callable[..., Any],
    private_topics: PrivateTopics,
    broadcasting_table: str,
) -> None:
    """`config: {private: true}`: alice joins her own topic and receives what the database sends
    to it (realtime.send, broadcast_changes from a trigger); her join of bob's topic is refused
    with hosted's reason."""
    alice, bob = make_user(), make_user()
    own, theirs = private_topics.own(alice.id), private_topics.own(bob.id)
    js = await run_js(
        realtime_stack.publishable_key,
        [
            {
                "name": "own",
                "token": alice.token,
                "channel": own,
                "private": True,
                "subs": [],
                "listen": True,
            },
            {
                "name": "theirs",
                "token": alice.token,
                "channel": theirs,
                "private": True,
                "subs": [],
            },
        ],
    )
    refused = await js.read_until(lambda line: line.get("client") == "theirs")
    assert refused["status"] == "CHANNEL_ERROR"
    assert refused["error"] == (
        "Unauthorized: You do not have permissions to read from this Channel topic: " + theirs
    )
    if not any(line.get("client") == "own" and "status" in line for line in js.lines):
        await js.read_until(lambda line: line.get("client") == "own" and "status" in line)
    assert [line["status"] for line in js.lines if line.get("client") == "own"] == ["SUBSCRIBED"]

    before = await metrics_client.read(realtime_stack)
    with psycopg.connect(realtime_stack.db_url, autocommit=True) as db:
        db.execute("select realtime.send('{\"step\": 1}'::jsonb, 'progress', %s)", (own,))
    got = await js.read_until(lambda line: "broadcast" in line)
    message = got["broadcast"]
    assert (got["client"], message["event"]) == ("own", "progress")
    assert message["payload"] == {"step": 1, "id": message["meta"]["id"]}
    with psycopg.connect(realtime_stack.db_url, autocommit=True) as db:  # broadcast_changes
        db.execute(f"insert into public.{broadcasting_table} values (1, %s, 'js')", (alice.id,))
    got = await js.read_until(lambda line: "broadcast" in line)
    change = got["broadcast"]
    assert (change["event"], change["payload"]["operation"]) == ("INSERT", "INSERT")
    assert change["payload"]["record"] == {"id": 1, "owner": str(alice.id), "body": "js"}
    after = await metrics_client.read(realtime_stack)
    sent = 'realtime_messages_sent_by_kind_total{kind="broadcast"}'
    assert after[sent] - before[sent] == 2
