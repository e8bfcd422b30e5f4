"""The Realtime endpoint at the wire level: framing, handshake auth, channel life cycle,
broadcast, presence, change payloads and recovery. A raw websocket client, no SDK."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import psycopg
import pytest
import websockets

from supaworker_local import keys
from supaworker_local.config import StackConfig
from tests.realtime.conftest import Admin, connect, insert
from tests.realtime.wire import Message, WireClient, websocket_url

pytestmark = pytest.mark.stack


def _http_status(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url.replace("ws://", "http://"))
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _changes_config(table: str, event: str = "*", filter_: str | None = None) -> dict[str, Any]:
    binding: dict[str, Any] = {"event": event, "schema": "public", "table": table}
    if filter_ is not None:
        binding["filter"] = filter_
    return {"postgres_changes": [binding]}


def _is_change(topic: str) -> Callable[[Message], bool]:
    return lambda m: m.topic == topic and m.event == "postgres_changes"


# -- handshake -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make_key", "status", "body"),
    [
        (lambda s: None, 401, '{"error": "API key is missing"}'),
        (
            lambda s: jwt.encode({"role": "anon"}, s.jwt_secret, algorithm="HS256"),
            401,
            '{"error": "Fields `role` and `exp` are required in JWT"}',
        ),
        (
            lambda s: jwt.encode({"exp": int(time.time()) + 60}, s.jwt_secret, algorithm="HS256"),
            401,
            '{"error": "Fields `role` and `exp` are required in JWT"}',
        ),
        (
            lambda s: keys.mint("x" * 40, "service_role"),
            401,
            '{"error": "Failed to validate JWT signature"}',
        ),
        (lambda s: keys.mint(s.jwt_secret, "anon", ttl=-10), 401, '{"error": "Token has expired"}'),
        (lambda s: "not-a-jwt", 401, '{"error": "The token provided is not a valid JWT"}'),
        (lambda s: "sb_publishable_unknown", 401, '{"message": "Invalid API key"}'),
    ],
    ids=["missing", "no-exp", "no-role", "forged", "expired", "malformed", "unknown-sb-key"],
)
def test_handshake_refuses_bad_keys_before_upgrading(
    realtime_stack: StackConfig,
    make_key: Callable[[StackConfig], str | None],
    status: int,
    body: str,
) -> None:
    code, text = _http_status(websocket_url(realtime_stack, make_key(realtime_stack)))
    assert (code, text) == (status, body)


async def test_handshake_refusal_reaches_websocket_clients(realtime_stack: StackConfig) -> None:
    key = jwt.encode({"role": "anon"}, realtime_stack.jwt_secret, algorithm="HS256")
    with pytest.raises(Exception, match="401"):
        await WireClient.connect(websocket_url(realtime_stack, key), "1.0.0")


async def test_sb_keys_are_translated_like_the_gateway_does(
    realtime_stack: StackConfig, wire: list[WireClient]
) -> None:
    for key in (realtime_stack.publishable_key, realtime_stack.secret_key):
        client = await connect(wire, realtime_stack, key)
        _, answer = await client.join("realtime:sb-keys")
        assert answer.status == "ok"


# -- framing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_heartbeat_join_leave_framing(
    realtime_stack: StackConfig, wire: list[WireClient], vsn: str
) -> None:
    client = await connect(wire, realtime_stack, realtime_stack.anon_key, vsn)
    ref = await client.send("phoenix", "heartbeat", {})
    beat = await client.recv()
    assert (beat.topic, beat.event, beat.ref) == ("phoenix", "phx_reply", ref)
    assert beat.payload == {"status": "ok", "response": {}}

    join_ref, answer = await client.join("realtime:framing")
    assert answer.payload == {"status": "ok", "response": {"postgres_changes": []}}
    assert isinstance(answer.raw, str)
    if vsn == "2.0.0":
        assert answer.join_ref == join_ref
        assert answer.raw.startswith(f'["{join_ref}","{join_ref}","realtime:framing","phx_reply"')
    else:
        assert answer.raw.startswith('{"topic":"realtime:framing","event":"phx_reply"')

    leave_ref = await client.send("realtime:framing", "phx_leave", {}, join_ref=join_ref)
    left = await client.recv()
    assert (left.event, left.ref, left.status) == ("phx_reply", leave_ref, "ok")
    closed = await client.recv()
    assert (closed.event, closed.ref, closed.payload) == ("phx_close", join_ref, {})
    # The topic is gone: pushes to it are answered as Phoenix does for unknown topics.
    stray = await client.send("realtime:framing", "broadcast", {}, join_ref=join_ref)
    answer = await client.recv()
    assert (answer.ref, answer.payload) == (
        stray,
        {"status": "error", "response": {"reason": "unmatched topic"}},
    )


async def test_join_refuses_bad_access_tokens(
    realtime_stack: StackConfig, wire: list[WireClient]
) -> None:
    client = await connect(wire, realtime_stack, realtime_stack.anon_key)
    forged = keys.mint("y" * 40, "authenticated", sub=str(uuid.uuid4()))
    _, answer = await client.join("realtime:forged", access_token=forged)
    assert answer.payload == {
        "status": "error",
        "response": {"reason": "JwtSignatureError: Failed to validate JWT signature"},
    }
    expired = keys.mint(realtime_stack.jwt_secret, "authenticated", ttl=-5)
    _, answer = await client.join("realtime:expired", access_token=expired)
    assert answer.status == "error"
    assert answer.payload["response"]["reason"].startswith("InvalidJWTToken: Token has expired")


async def test_invalid_frame_closes_only_that_socket(
    realtime_stack: StackConfig, wire: list[WireClient]
) -> None:
    bad = await connect(wire, realtime_stack, realtime_stack.anon_key)
    good = await connect(wire, realtime_stack, realtime_stack.anon_key)
    await bad.ws.send("this is not json")
    with pytest.raises(Exception):  # noqa: B017 - any close/EOF will do
        await bad.recv(5)
    _, answer = await good.join("realtime:still-alive")
    assert answer.status == "ok"


# -- broadcast and presence ------------------------------------------------------------------
async def test_broadcast_between_clients_honours_self_and_ack(
    realtime_stack: StackConfig, wire: list[WireClient]
) -> None:
    v1 = await connect(wire, realtime_stack, realtime_stack.anon_key, "1.0.0")
    v2 = await connect(wire, realtime_stack, realtime_stack.anon_key, "2.0.0")
    topic = f"realtime:room-{uuid.uuid4().hex[:6]}"
    v1_ref, _ = await v1.join(topic, {"broadcast": {"self": True, "ack": True}})
    v2_ref, _ = await v2.join(topic, {"broadcast": {"self": False}})

    ref = await v1.send(
        topic,
        "broadcast",
        {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
        join_ref=v1_ref,
    )
    received = await v2.expect(lambda m: m.event == "broadcast")
    assert received.payload == {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
    # self=true: the sender gets its own message; ack=true: and a reply.
    mine = await v1.collect(0.5)
    assert {m.event for m in mine} == {"broadcast", "phx_reply"}
    assert next(m for m in mine if m.event == "phx_reply").ref == ref
    v1_payload = next(m for m in mine if m.event == "broadcast").raw
    assert v1_payload == (
        f'{{"topic":"{topic}","event":"broadcast","payload":{{"type":"broadcast",'
        '"event":"cursor","payload":{"x":1}},"ref":null}'
    )

    # realtime-js sends broadcasts as binary frames; V1 clients get them as JSON.
    await v2.send_binary_broadcast(topic, "typing", {"who": "js"}, join_ref=v2_ref)
    converted = await v1.expect(lambda m: m.event == "broadcast")
    assert converted.payload == {"type": "broadcast", "event": "typing", "payload": {"who": "js"}}
    assert await v2.collect(0.3) == []  # self=false on the v2 channel


async def test_binary_broadcast_reaches_v2_clients_as_binary(
    realtime_stack: StackConfig, wire: list[WireClient]
) -> None:
    a = await connect(wire, realtime_stack, realtime_stack.anon_key, "2.0.0")
    b = await connect(wire, realtime_stack, realtime_stack.anon_key, "2.0.0")
    topic = f"realtime:bin-{uuid.uuid4().hex[:6]}"
    a_ref, _ = await a.join(topic)
    await b.join(topic)
    await a.send_binary_broadcast(topic, "blob", {"n": 1}, join_ref=a_ref)
    message = await b.expect(lambda m: m.event == "broadcast")
    assert isinstance(message.raw, bytes) and message.raw[0] == 4
    assert message.payload == {"type": "broadcast", "event": "blob", "payload": {"n": 1}}


async def test_presence_track_and_leave(
    realtime_stack: StackConfig, wire: list[WireClient]
) -> None:
    a = await connect(wire, realtime_stack, realtime_stack.anon_key)
    b = await connect(wire, realtime_stack, realtime_stack.anon_key)
    topic = f"realtime:presence-{uuid.uuid4().hex[:6]}"
    a_ref, _ = await a.join(topic, {"presence": {"key": "alice", "enabled": True}})
    state = await a.expect(lambda m: m.event == "presence_state")
    assert state.payload == {}
    ref = await a.send(
        topic,
        "presence",
        {"type": "presence", "event": "track", "payload": {"online": True}},
        join_ref=a_ref,
    )
    await a.expect(lambda m: m.event == "phx_reply" and m.ref == ref)
    b_ref, _ = await b.join(topic, {"presence": {"key": "bob", "enabled": True}})
    state = await b.expect(lambda m: m.event == "presence_state")
    assert list(state.payload) == ["alice"]
    assert state.payload["alice"]["metas"][0]["online"] is True
    await b.send(topic, "phx_leave", {}, join_ref=b_ref)
    await a.send(topic, "phx_leave", {}, join_ref=a_ref)
    await a.expect(lambda m: m.event == "phx_close")


# -- postgres_changes ------------------------------------------------------------------------
async def test_change_payload_shape_and_rls(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    rt_table: str,
    admin_db: Admin,
    make_user: Callable[..., Any],
) -> None:
    owner, other = make_user(), make_user()
    topic = "realtime:rls-shape"
    mine = await connect(wire, realtime_stack, realtime_stack.anon_key, "2.0.0")
    theirs = await connect(wire, realtime_stack, realtime_stack.anon_key, "2.0.0")
    service = await connect(wire, realtime_stack, realtime_stack.service_role_key)
    for client, token in ((mine, owner.token), (theirs, other.token), (service, None)):
        _, answer = await client.join(topic, _changes_config(rt_table), access_token=token)
        binding = answer.payload["response"]["postgres_changes"][0]
        assert binding["table"] == rt_table and isinstance(binding["id"], int)
        assert (await client.subscribed(topic)).payload == {
            "extension": "postgres_changes",
            "status": "ok",
            "message": "Subscribed to PostgreSQL",
            "channel": "rls-shape",
        }

    row_id = insert(admin_db, rt_table, owner.id, "secret", 5)
    got = await mine.expect(_is_change(topic))
    assert got.join_ref is None and got.ref is None
    data = got.payload["data"]
    assert got.payload["ids"] == [binding["id"]]
    assert data["type"] == "INSERT" and data["errors"] is None
    assert (data["schema"], data["table"]) == ("public", rt_table)
    assert data["columns"] == [
        {"name": "id", "type": "int8"},
        {"name": "owner", "type": "uuid"},
        {"name": "body", "type": "text"},
        {"name": "n", "type": "int4"},
    ]
    assert data["record"] == {"id": row_id, "owner": str(owner.id), "body": "secret", "n": 5}
    assert "old_record" not in data
    assert data["commit_timestamp"].endswith("Z") and "T" in data["commit_timestamp"]
    assert (await service.expect(_is_change(topic))).payload["data"]["record"]["id"] == row_id

    admin_db.execute(f"delete from public.{rt_table} where id = %s", (row_id,))
    # DELETE skips RLS: everyone subscribed sees it, reduced to the primary key.
    for client in (mine, theirs, service):
        deleted = (await client.expect(_is_change(topic))).payload["data"]
        assert deleted["type"] == "DELETE" and deleted["old_record"] == {"id": row_id}
    # ... but the other user never saw the insert.
    assert [m for m in await theirs.collect(0.7) if m.event == "postgres_changes"] == []


async def test_filters_events_and_unknown_tables(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    rt_table: str,
    admin_db: Admin,
) -> None:
    client = await connect(wire, realtime_stack, realtime_stack.service_role_key)
    topic = "realtime:filters"
    bindings = [
        {"event": "INSERT", "schema": "public", "table": rt_table, "filter": "n=in.(1,3)"},
        {"event": "UPDATE", "schema": "public", "table": rt_table, "filter": "n=gte.10"},
        {"event": "*", "schema": "public", "table": rt_table, "filter": "body=neq.skip"},
    ]
    _, answer = await client.join(topic, {"postgres_changes": bindings})
    ids = [b["id"] for b in answer.payload["response"]["postgres_changes"]]
    assert len(set(ids)) == 3
    assert (await client.subscribed(topic)).status == "ok"

    for n in (1, 2, 3):
        insert(admin_db, rt_table, None, "skip", n)
    got = [m.payload for m in await client.collect(1.5) if m.event == "postgres_changes"]
    assert sorted(p["data"]["record"]["n"] for p in got) == [1, 3]
    assert all(p["ids"] == [ids[0]] for p in got)

    admin_db.execute(f"update public.{rt_table} set n = n * 10, body = 'keep' where n < 3")
    updates = [m.payload for m in await client.collect(1.5) if m.event == "postgres_changes"]
    by_n = {p["data"]["record"]["n"]: sorted(p["ids"]) for p in updates}
    assert by_n == {10: sorted([ids[1], ids[2]]), 20: sorted([ids[1], ids[2]])}

    _, answer = await client.join("realtime:nowhere", _changes_config("no_such_table"))
    failure = await client.subscribed("realtime:nowhere")
    assert failure.payload["status"] == "error"
    assert failure.payload["message"].startswith(
        "Unable to subscribe to changes with given parameters. Please check Realtime is enabled"
    )

    _, answer = await client.join("realtime:badcol", _changes_config(rt_table, "*", "nope=eq.1"))
    failure = await client.subscribed("realtime:badcol")
    assert (
        failure.status == "error" and "invalid column for filter nope" in failure.payload["message"]
    )


async def test_more_operators_select_and_full_identity_deletes(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    rt_table: str,
    admin_db: Admin,
) -> None:
    client = await connect(wire, realtime_stack, realtime_stack.service_role_key)
    topic = "realtime:operators"
    owner = uuid.uuid4()
    filters = [
        "body=like.a%",
        "body=not.eq.abc",
        "n=is.null",
        "n=lt.3",
        f"owner=isdistinct.{owner}",
    ]
    bindings: list[dict[str, Any]] = [
        {"event": "INSERT", "schema": "public", "table": rt_table, "filter": f} for f in filters
    ]
    bindings.append({"event": "INSERT", "schema": "public", "table": rt_table, "select": ["body"]})
    bindings.append(
        {"event": "DELETE", "schema": "public", "table": rt_table, "filter": "body=eq.gone"}
    )
    _, answer = await client.join(topic, {"postgres_changes": bindings})
    ids = [b["id"] for b in answer.payload["response"]["postgres_changes"]]
    assert (await client.subscribed(topic)).status == "ok"
    admin_db.execute(f"alter table public.{rt_table} replica identity full")
    admin_db.execute(
        f"insert into public.{rt_table} (owner, body, n) values"
        " (null, 'abc', 1), (%s, 'axe', null), (null, 'zed', 5)",
        (owner,),
    )
    got = [m.payload for m in await client.collect(1.5) if m.event == "postgres_changes"]
    matched = {
        p["data"]["record"]["body"]: sorted(p["ids"]) for p in got if "n" in p["data"]["record"]
    }
    # NULL is distinct from the owner uuid; the owner's own row is not.
    expected = {
        "abc": sorted([ids[0], ids[3], ids[4]]),
        "axe": sorted([ids[0], ids[1], ids[2]]),
        "zed": sorted([ids[1], ids[4]]),
    }
    assert matched == expected
    selected = [p for p in got if p["ids"] == [ids[5]]]
    assert {tuple(sorted(p["data"]["record"])) for p in selected} == {("body", "id")}
    assert selected[0]["data"]["columns"] == [
        {"name": "id", "type": "int8"},
        {"name": "body", "type": "text"},
    ]

    admin_db.execute(f"update public.{rt_table} set body = 'gone' where body = 'zed'")
    admin_db.execute(f"delete from public.{rt_table} where body in ('gone', 'abc')")
    deletes = [m.payload for m in await client.collect(1.5) if m.event == "postgres_changes"]
    # The DELETE filter reads the old row (REPLICA IDENTITY FULL); RLS trims it to the key.
    assert [(p["ids"], p["data"]["type"]) for p in deletes] == [([ids[6]], "DELETE")]
    assert list(deletes[0]["data"]["old_record"]) == ["id"]


async def test_access_token_switches_claims_and_expiry_closes(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    rt_table: str,
    admin_db: Admin,
    make_user: Callable[..., Any],
) -> None:
    alice, bob = make_user(), make_user()
    client = await connect(wire, realtime_stack, realtime_stack.anon_key)
    topic = "realtime:switch"
    join_ref, _ = await client.join(topic, _changes_config(rt_table, "INSERT"), alice.token)
    await client.subscribed(topic)
    await client.send(topic, "access_token", {"access_token": bob.token}, join_ref=join_ref)
    assert (await client.subscribed(topic)).status == "ok"  # re-announced with the new claims
    insert(admin_db, rt_table, alice.id, "for alice")
    insert(admin_db, rt_table, bob.id, "for bob")
    got = await client.expect(_is_change(topic))
    assert got.payload["data"]["record"]["body"] == "for bob"

    short = keys.user_token(realtime_stack.jwt_secret, bob.id, bob.email, ttl=2)
    await client.send(topic, "access_token", {"access_token": short}, join_ref=join_ref)
    system = await client.expect(lambda m: m.event == "system" and m.status == "error", 8)
    assert system.payload["extension"] == "system"
    assert system.payload["message"].startswith("Token has expired")
    closed = await client.expect(lambda m: m.event == "phx_close")
    assert closed.ref == join_ref

    forged = keys.mint("z" * 40, "authenticated")
    join_ref, _ = await client.join(topic, _changes_config(rt_table, "INSERT"), alice.token)
    await client.subscribed(topic)
    await client.send(topic, "access_token", {"access_token": forged}, join_ref=join_ref)
    system = await client.expect(lambda m: m.event == "system" and m.status == "error")
    assert system.payload["message"] == "Failed to validate JWT signature"
    await client.expect(lambda m: m.event == "phx_close")


async def test_role_without_select_gets_401_errors(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    rt_table: str,
    admin_db: Admin,
) -> None:
    # anon has no SELECT on the table: Realtime sends the change with an error, no data.
    client = await connect(wire, realtime_stack, realtime_stack.anon_key)
    await client.join("realtime:anon", _changes_config(rt_table))
    await client.subscribed("realtime:anon")
    insert(admin_db, rt_table, None, "hidden")
    data = (await client.expect(_is_change("realtime:anon"))).payload["data"]
    assert data["errors"] == ["Error 401: Unauthorized"]
    assert data["record"] == {} and data["columns"] == []


async def test_poller_recovers_from_a_lost_database_session(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    rt_table: str,
    admin_db: Admin,
) -> None:
    client = await connect(wire, realtime_stack, realtime_stack.service_role_key)
    topic = "realtime:recover"
    await client.join(topic, _changes_config(rt_table, "INSERT"))
    await client.subscribed(topic)
    killed = admin_db.execute(
        "select count(pg_terminate_backend(active_pid)) from pg_replication_slots"
        " where slot_name like 'supabase_realtime_replication_slot%' and active_pid is not null"
    ).fetchone()
    assert killed is not None and killed[0] == 1
    # A new slot is made and subscribers are told they are live again (their cue to catch up).
    assert (await client.subscribed(topic, timeout=20)).status == "ok"
    insert(admin_db, rt_table, None, "after the gap")
    got = await client.expect(_is_change(topic))
    assert got.payload["data"]["record"]["body"] == "after the gap"


async def test_disconnecting_clients_do_not_disturb_others(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    rt_table: str,
    admin_db: Admin,
) -> None:
    steady = await connect(wire, realtime_stack, realtime_stack.service_role_key)
    await steady.join("realtime:steady", _changes_config(rt_table, "INSERT"))
    await steady.subscribed("realtime:steady")
    for i in range(6):
        flaky = await WireClient.connect(
            websocket_url(realtime_stack, realtime_stack.service_role_key), "1.0.0"
        )
        await flaky.join("realtime:flaky", _changes_config(rt_table, "INSERT"))
        if i % 2:
            flaky.ws.transport.abort()  # vanish without a close handshake
        else:
            await flaky.close()
    insert(admin_db, rt_table, None, "still here")
    got = await steady.expect(_is_change("realtime:steady"))
    assert got.payload["data"]["record"]["body"] == "still here"


async def test_insert_to_receive_latency(
    realtime_stack: StackConfig,
    wire: list[WireClient],
    rt_table: str,
) -> None:
    """Printed, not asserted tightly: Realtime polls every 100 ms, busy or idle."""
    client = await connect(wire, realtime_stack, realtime_stack.service_role_key)
    await client.join("realtime:latency", _changes_config(rt_table, "INSERT"))
    await client.subscribed("realtime:latency")
    samples: list[float] = []
    with psycopg.connect(realtime_stack.db_url, autocommit=True) as writer:
        for _ in range(15):
            await asyncio.sleep(random.uniform(0.05, 0.6))  # land anywhere in the poll cycle
            started = time.perf_counter()
            writer.execute(f"insert into public.{rt_table} (body) values ('lat')")
            await client.expect(_is_change("realtime:latency"))
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p50, worst = samples[len(samples) // 2], samples[-1]
    print("samples", [round(s) for s in samples])
    print(
        f"\nRealtime insert->receive latency: p50 {p50:.0f} ms, max {worst:.0f} ms "
        f"(poll interval {realtime_stack.realtime_poll_interval_ms} ms, "
        f"idle x{realtime_stack.realtime_idle_multiplier})"
    )
    assert worst < 3000


# -- REST broadcast --------------------------------------------------------------------------
def _post(stack: StackConfig, path: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"{stack.api_url}{path}", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_rest_broadcast_api(realtime_stack: StackConfig, wire: list[WireClient]) -> None:
    v1 = await connect(wire, realtime_stack, realtime_stack.anon_key, "1.0.0")
    v2 = await connect(wire, realtime_stack, realtime_stack.anon_key, "2.0.0")
    name = f"rest-{uuid.uuid4().hex[:6]}"
    for client in (v1, v2):
        await client.join(f"realtime:{name}")
    service = {"apikey": realtime_stack.secret_key, "Content-Type": "application/json"}

    batch = {"messages": [{"topic": name, "event": "ping", "payload": {"n": 1}, "id": "m1"}]}
    assert (
        _post(realtime_stack, "/realtime/v1/api/broadcast", json.dumps(batch).encode(), service)
        == 202
    )
    for client in (v1, v2):
        got = await client.expect(lambda m: m.event == "broadcast")
        assert got.payload == {
            "payload": {"n": 1},
            "event": "ping",
            "type": "broadcast",
            "meta": {"id": "m1"},
        }

    path = f"/realtime/v1/api/broadcast/{name}/events/single"
    assert _post(realtime_stack, path, b'{"s": true}', service) == 202
    for client in (v1, v2):
        got = await client.expect(lambda m: m.event == "broadcast")
        assert got.payload == {"type": "broadcast", "event": "single", "payload": {"s": True}}
    binary = {**service, "Content-Type": "application/octet-stream"}
    assert _post(realtime_stack, path, b"\x00\x01", binary) == 202
    got = await v2.expect(lambda m: m.event == "broadcast")
    assert got.payload["payload"] == b"\x00\x01"
    assert await v1.collect(0.3) == []  # V1 cannot carry binary payloads

    assert _post(realtime_stack, "/realtime/v1/api/broadcast", b"{}", service) == 422
    forged = {"Authorization": f"Bearer {keys.mint('q' * 40, 'service_role')}"}
    assert _post(realtime_stack, path, b"{}", forged) == 401


async def test_a_client_that_stops_reading_is_cut_off(
    realtime_stack: StackConfig, wire: list[WireClient]
) -> None:
    """Bounded memory: the server queues at most ~16 MB for a client, then drops it."""
    url = websocket_url(realtime_stack, realtime_stack.anon_key)
    # A small fixed receive buffer (SO_RCVBUF turns off TCP autotuning, which can grow it to
    # tcp_rmem's maximum, 32 MB on some kernels, enough to absorb the whole flood).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(
        sock, (realtime_stack.host, realtime_stack.api_port)
    )
    # No permessage-deflate: compressed, the flood of repeated bytes below is a few hundred
    # kB on the wire and fits in the socket buffers, so the outbox would fill or not
    # depending on how fast the server compresses.
    stalled = WireClient(
        await websockets.connect(url, max_size=None, max_queue=1, sock=sock, compression=None),
        "1.0.0",
    )
    wire.append(stalled)
    sender = await connect(wire, realtime_stack, realtime_stack.anon_key)
    topic = f"realtime:flood-{uuid.uuid4().hex[:6]}"
    await stalled.join(topic)
    # Stop reading at the socket: with websockets 15 a client that merely does not call recv()
    # still drains the socket into its own buffer, so the server's outbox would never fill.
    stalled.ws.transport.pause_reading()
    sender_ref, _ = await sender.join(topic)
    blob = "x" * (1024 * 1024)
    for _ in range(64):  # far more than socket buffers plus the 16 MB outbox
        await sender.send(
            topic,
            "broadcast",
            {"type": "broadcast", "event": "blob", "payload": {"blob": blob}},
            join_ref=sender_ref,
        )
    # The server handles the sender's frames in order: once this heartbeat is answered, every
    # broadcast was handed to the stalled client's outbox (rather than a fixed sleep).
    ref = await sender.send("phoenix", "heartbeat", {})
    assert (await sender.expect(lambda m: m.ref == ref, timeout=60)).status == "ok"
    stalled.ws.transport.resume_reading()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:  # drain what was delivered before the cut
            await stalled.ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    ref = await sender.send("phoenix", "heartbeat", {})
    assert (await sender.expect(lambda m: m.ref == ref)).status == "ok"
