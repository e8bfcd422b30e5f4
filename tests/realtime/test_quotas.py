"""A plan's Realtime quotas, exceeded on purpose: each answer is the one hosted Realtime gives
(supaworker_local/realtime/limits.py cites where in supabase/realtime each comes from).

Small limits run on a second, in-process endpoint over the test database (`local_realtime`);
the shared test stack itself enforces Pro, which the first test checks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import psycopg
import pytest
import websockets

from supaworker_local.config import StackConfig
from tests.realtime import metrics_client
from tests.realtime.conftest import Admin, LocalRealtime, PrivateTopics, connect
from tests.realtime.wire import Message, WireClient, reply_to

pytestmark = pytest.mark.stack


def _reason(answer: Message) -> object:
    assert answer.event == "phx_reply"
    return answer.payload


def _refused(reason: str) -> dict[str, object]:
    return {"status": "error", "response": {"reason": reason}}


def _topic(label: str) -> str:
    return f"realtime:{label}-{uuid.uuid4().hex[:6]}"


async def test_the_test_stack_enforces_pro(
    realtime_stack: StackConfig, wire: list[WireClient]
) -> None:
    limits = await metrics_client.read(realtime_stack)
    assert limits['realtime_limit{limit="max_events_per_second"}'] == 500
    assert limits['realtime_limit{limit="max_concurrent_users"}'] == 500
    assert limits['realtime_limit{limit="max_joins_per_second"}'] == 500
    client = await connect(wire, realtime_stack, realtime_stack.anon_key)
    prefix = _topic("pro-channels")
    for n in range(100):
        _, answer = await client.join(f"{prefix}-{n}")
        assert answer.status == "ok", answer.payload
    _, answer = await client.join(f"{prefix}-100")
    assert _reason(answer) == _refused("ChannelRateLimitReached: Too many channels")


async def test_channels_per_connection(
    local_realtime: LocalRealtime, wire: list[WireClient]
) -> None:
    config, _ = await local_realtime("pro", max_channels_per_client=2)
    client = await connect(wire, config, config.anon_key)
    prefix = _topic("channels")
    for n in range(2):
        assert (await client.join(f"{prefix}-{n}"))[1].status == "ok"
    _, answer = await client.join(f"{prefix}-2")
    assert _reason(answer) == _refused("ChannelRateLimitReached: Too many channels")
    # Joining a topic again replaces its channel: not one more.
    assert (await client.join(f"{prefix}-0"))[1].status == "ok"
    other = await connect(wire, config, config.anon_key)  # the limit is per connection
    assert (await other.join(f"{prefix}-2"))[1].status == "ok"


async def test_concurrent_connections(
    local_realtime: LocalRealtime, wire: list[WireClient]
) -> None:
    config, _ = await local_realtime("pro", max_concurrent_users=2)
    first = await connect(wire, config, config.anon_key)
    second = await connect(wire, config, config.anon_key)
    late = await connect(wire, config, config.anon_key)  # connected, not joined: not counted
    topic = _topic("users")
    assert (await first.join(topic))[1].status == "ok"
    assert (await second.join(topic))[1].status == "ok"
    _, answer = await late.join(topic)
    assert _reason(answer) == _refused("ConnectionRateLimitReached: Too many connected users")
    # A counted socket may open more channels; a new socket is refused at the handshake.
    assert (await first.join(_topic("more")))[1].status == "ok"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(wire, config, config.anon_key)
    assert refused.value.response.status_code == 429
    assert json.loads(refused.value.response.body or b"{}") == {"error": "Too many connected users"}
    assert (await metrics_client.read(config))["realtime_connections"] == 2
    await first.close()  # a closed socket frees its place
    await metrics_client.wait_for_sample(config, "realtime_connections", 1)
    assert (await late.join(topic))[1].status == "ok"


async def test_joins_per_second(local_realtime: LocalRealtime, wire: list[WireClient]) -> None:
    config, server = await local_realtime("pro", max_joins_per_second=1)
    client = await connect(wire, config, config.anon_key)
    prefix = _topic("joins")
    for n in range(8):  # 8 joins in one 5 s tick: 1.6 joins/s on average
        assert (await client.join(f"{prefix}-{n}"))[1].status == "ok"
    await metrics_client.wait_for(lambda: server.quotas.joins.triggered)
    _, answer = await client.join(f"{prefix}-8")
    assert _reason(answer) == _refused("ClientJoinRateLimitReached: Too many joins per second")
    with pytest.raises(websockets.ConnectionClosed):  # ...and the socket is disconnected
        await client.recv(timeout=5)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(wire, config, config.anon_key)
    assert refused.value.response.status_code == 429
    assert json.loads(refused.value.response.body or b"{}") == {
        "error": "Too many joins per second"
    }


async def test_messages_per_second(
    local_realtime: LocalRealtime, wire: list[WireClient], admin_db: Admin
) -> None:
    config, server = await local_realtime("pro", max_events_per_second=2)
    listener = await connect(wire, config, config.anon_key)
    sender = await connect(wire, config, config.anon_key)
    topic = _topic("messages")
    name = topic.removeprefix("realtime:")
    await listener.join(topic)
    sender_ref, _ = await sender.join(topic)

    async def broadcast(n: int) -> None:
        payload = {"type": "broadcast", "event": "tick", "payload": {"n": n}}
        await sender.send(topic, "broadcast", payload, join_ref=sender_ref)

    for n in range(10):  # 10 sent + 10 delivered in a tick: 4 messages/s on average
        await broadcast(n)
        await listener.expect(lambda m: m.event == "broadcast")
    await metrics_client.wait_for(lambda: server.quotas.events.triggered)
    await broadcast(10)
    got = await listener.expect(lambda m: m.event != "phx_reply")
    assert got.event == "broadcast"  # delivered, then counted: the channel goes down after it
    system = await listener.expect(lambda m: m.event != "phx_reply")
    assert (system.event, system.payload) == (
        "system",
        {
            "extension": "system",
            "status": "error",
            "message": "Too many messages per second",
            "channel": name,
        },
    )
    assert (await listener.expect(lambda m: m.event != "phx_reply")).event == "phx_close"

    # While over the limit, a broadcast from the database is dropped, not delivered.
    fresh = await connect(wire, config, config.anon_key)
    assert (await fresh.join(topic))[1].status == "ok"
    with psycopg.connect(config.db_url, autocommit=True) as db:
        db.execute("select realtime.send('{\"x\": 1}'::jsonb, 'late', %s, false)", (name,))
    await metrics_client.wait_for_sample(
        config, 'realtime_limit_hits_total{what="db_broadcast_dropped",reason="events"}', 1
    )
    assert [m for m in await fresh.collect(0.5) if m.event == "broadcast"] == []


async def test_presence_messages_per_second(
    local_realtime: LocalRealtime, wire: list[WireClient]
) -> None:
    config, server = await local_realtime("pro", max_presence_events_per_second=1)
    a = await connect(wire, config, config.anon_key)
    b = await connect(wire, config, config.anon_key)
    topic = _topic("presence")
    a_ref, _ = await a.join(topic, {"presence": {"key": "a", "enabled": True}})
    await b.join(topic, {"presence": {"key": "b", "enabled": True}})
    for n in range(4):  # each track: a presence_diff to a and to b
        ref = await a.send(
            topic, "presence", {"type": "presence", "event": "track", "payload": {"n": n}}, a_ref
        )
        await a.expect(reply_to(ref))
        await b.expect(lambda m: m.event == "presence_diff")
    await metrics_client.wait_for(lambda: server.quotas.presence.triggered)
    await a.send(topic, "presence", {"type": "presence", "event": "track", "payload": {}}, a_ref)
    system = await a.expect(lambda m: m.event == "system")
    assert system.payload["message"] == "Too many presence messages per second"
    assert (await a.expect(lambda m: m.event in ("phx_close", "presence_diff"))).event == (
        "phx_close"
    )


async def test_presets_and_off(local_realtime: LocalRealtime, wire: list[WireClient]) -> None:
    free, _ = await local_realtime("free")
    samples = await metrics_client.read(free)
    assert [
        samples[f'realtime_limit{{limit="{name}"}}']
        for name in (
            "max_concurrent_users",
            "max_events_per_second",
            "max_joins_per_second",
            "max_channels_per_client",
            "max_presence_events_per_second",
            "max_payload_size_in_kb",
        )
    ] == [200, 100, 100, 100, 20, 256]
    off, _ = await local_realtime("off")
    off_limits = await metrics_client.read(off)
    assert off_limits['realtime_limit{limit="max_channels_per_client"}'] == -1
    client = await connect(wire, off, off.anon_key)
    prefix = _topic("off")
    for n in range(101):
        assert (await client.join(f"{prefix}-{n}"))[1].status == "ok"


async def _post(config: StackConfig, path: str, body: object) -> tuple[int, object]:
    headers = {"apikey": config.service_role_key}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{config.api_url}{path}", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None) if resp.status != 202 else None


async def test_payload_size(local_realtime: LocalRealtime, wire: list[WireClient]) -> None:
    config, _ = await local_realtime("pro", max_payload_size_in_kb=1)
    listener = await connect(wire, config, config.anon_key)
    sender = await connect(wire, config, config.anon_key)
    topic = _topic("size")
    name = topic.removeprefix("realtime:")
    await listener.join(topic)
    ref, _ = await sender.join(topic, {"broadcast": {"ack": True}})
    big = {"type": "broadcast", "event": "big", "payload": {"blob": "x" * 1600}}
    sent = await sender.send(topic, "broadcast", big, join_ref=ref)
    answer = await sender.expect(reply_to(sent))
    assert answer.payload == {"status": "error", "response": "payload_size_exceeded"}
    small = {"type": "broadcast", "event": "small", "payload": {"blob": "x" * 400}}
    sent = await sender.send(topic, "broadcast", small, join_ref=ref)
    assert (await sender.expect(reply_to(sent))).status == "ok"
    assert (await listener.expect(lambda m: m.event == "broadcast")).payload["event"] == "small"

    with psycopg.connect(config.db_url, autocommit=True) as db:
        db.execute(
            "select realtime.send(jsonb_build_object('blob', repeat('x', 1600)), 'big', %s, false)",
            (name,),
        )
    await metrics_client.wait_for_sample(
        config, 'realtime_limit_hits_total{what="payload_dropped",reason="size"}', 2
    )
    message = {"topic": name, "event": "big", "payload": {"blob": "x" * 1600}}
    assert await _post(config, "/realtime/v1/api/broadcast", {"messages": [message]}) == (
        422,
        {"errors": {"messages": [{"payload": ["Payload size exceeds tenant limit"]}]}},
    )
    assert [m for m in await listener.collect(0.5) if m.event == "broadcast"] == []


async def test_rest_broadcast_rate(local_realtime: LocalRealtime, wire: list[WireClient]) -> None:
    config, server = await local_realtime("pro", max_events_per_second=3)
    path = "/realtime/v1/api/broadcast"
    message = {"topic": "rest-rate", "event": "e", "payload": {}}
    assert await _post(config, path, {"messages": [message] * 4}) == (
        429,
        {"message": "Too many messages to broadcast, please reduce the batch size"},
    )
    for _ in range(10):  # 2 per call: 20 in the first tick, 4/s
        assert (await _post(config, path, {"messages": [message] * 2}))[0] == 202
    await metrics_client.wait_for(lambda: server.quotas.events.avg > 3)
    refused = (429, {"message": "You have exceeded your rate limit"})
    assert await _post(config, path, {"messages": [message]}) == refused
    assert await _post(config, f"{path}/rest-rate/events/e", {}) == refused


async def test_a_new_token_that_cannot_read_closes_a_private_channel(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    make_user: Callable[..., Any],
    private_topics: PrivateTopics,
) -> None:
    alice, bob = make_user(), make_user()
    topic = private_topics.own(alice.id)
    client = await connect(wire, realtime_stack, realtime_stack.anon_key)
    ref, answer = await client.join(f"realtime:{topic}", {"private": True}, alice.token)
    assert answer.status == "ok"
    await client.send(f"realtime:{topic}", "access_token", {"access_token": bob.token}, ref)
    system = await client.expect(lambda m: m.event == "system")
    assert system.payload == {
        "extension": "system",
        "status": "error",
        "message": f"You do not have permissions to read from this Channel topic: {topic}",
        "channel": topic,
    }
    assert (await client.expect(lambda m: m.event == "phx_close")).topic == f"realtime:{topic}"
