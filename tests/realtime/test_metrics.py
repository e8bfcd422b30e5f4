"""`GET /realtime/v1/metrics`: who may read it, and that it counts what hosted counts as
messages (each delivery to each client) and nothing else (replies, heartbeats, system)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from supaworker_local import keys
from supaworker_local.config import StackConfig
from tests.realtime import metrics_client
from tests.realtime.conftest import Admin, LocalRealtime, connect, insert
from tests.realtime.wire import WireClient, reply_to

pytestmark = pytest.mark.stack


async def test_only_the_service_key_reads_the_metrics(
    realtime_stack: StackConfig, make_user: Callable[..., Any]
) -> None:
    stack = realtime_stack
    forged = keys.mint("not-the-project-secret-but-long-enough!!", "service_role")
    for headers, status in (
        ({}, 401),
        ({"apikey": forged}, 401),
        ({"apikey": "sb_secret_not_the_key"}, 401),
        ({"apikey": stack.anon_key}, 403),
        ({"apikey": stack.publishable_key}, 403),
        ({"apikey": stack.anon_key, "Authorization": f"Bearer {make_user().token}"}, 403),
        ({"apikey": stack.service_role_key}, 200),
        ({"apikey": stack.secret_key}, 200),
        ({"Authorization": f"Bearer {stack.service_role_key}"}, 200),
    ):
        got, content_type, body = await metrics_client.fetch(stack, headers)
        assert got == status, (headers, body)
        if status == 200:
            assert content_type == "text/plain; version=0.0.4; charset=utf-8"  # Prometheus
            assert "# TYPE realtime_messages_sent_total counter" in body
            assert "# TYPE realtime_connections gauge" in body


async def test_counts_each_delivery_to_each_client(
    local_realtime: LocalRealtime, wire: list[WireClient], rt_table: str, admin_db: Admin
) -> None:
    config, _ = await local_realtime("pro")
    topic = f"realtime:count-{uuid.uuid4().hex[:6]}"
    changes = {
        "postgres_changes": [{"event": "INSERT", "schema": "public", "table": rt_table}],
        "presence": {"enabled": True},
    }
    listeners = [await connect(wire, config, config.service_role_key) for _ in range(3)]
    refs = []
    for listener in listeners:
        ref, answer = await listener.join(topic, changes)
        assert answer.status == "ok"
        refs.append(ref)
        await listener.subscribed(topic)
    start = await metrics_client.read(config)
    # Protocol traffic costs nothing: heartbeats and their replies, acks, a refused join.
    for listener in listeners:
        ref = await listener.send("phoenix", "heartbeat", {})
        await listener.expect(reply_to(ref))
    await listeners[0].join("realtime:", {})

    def messages(samples: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in samples.items() if k.startswith("realtime_messages_")}

    assert messages(await metrics_client.read(config)) == messages(start)

    insert(admin_db, rt_table, None, "counted")  # one change, three subscribers
    for listener in listeners:
        await listener.expect(lambda m: m.event == "postgres_changes")
    payload = {"type": "broadcast", "event": "e", "payload": {}}
    await listeners[0].send(topic, "broadcast", payload, join_ref=refs[0])  # self: false
    for listener in listeners[1:]:
        await listener.expect(lambda m: m.event == "broadcast")
    track = {"type": "presence", "event": "track", "payload": {"at": 1}}
    await listeners[0].send(topic, "presence", track, join_ref=refs[0])
    for listener in listeners:
        await listener.expect(lambda m: m.event == "presence_diff")

    end = await metrics_client.read(config)

    def delta(name: str) -> float:
        return end[name] - start[name]

    assert delta('realtime_messages_sent_by_kind_total{kind="postgres_changes"}') == 3
    assert delta('realtime_messages_sent_by_kind_total{kind="broadcast"}') == 2
    assert delta('realtime_messages_sent_by_kind_total{kind="presence"}') == 3
    assert delta("realtime_messages_sent_total") == 8
    assert delta('realtime_messages_received_total{kind="broadcast"}') == 1
    assert delta('realtime_messages_received_total{kind="presence"}') == 1
    assert end["realtime_connections"] == 3
    assert end["realtime_channels"] == 3
