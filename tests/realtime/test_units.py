"""The Realtime endpoint's pure parts, without a stack: framing, bindings, payloads, tokens."""

from __future__ import annotations

import json
import struct
import time

import jwt
import pytest

from supaworker_local import keys
from supaworker_local.config import StackConfig
from supaworker_local.realtime import auth
from supaworker_local.realtime.bindings import BindingError, Filter, binding_id, parse_binding
from supaworker_local.realtime.protocol import (
    Frame,
    ProtocolError,
    RawJson,
    UserBroadcast,
    V1Serializer,
    V2Serializer,
)
from supaworker_local.realtime.wal import (
    ERROR_NO_PRIMARY_KEY,
    ERROR_UNAUTHORIZED,
    CastValues,
    TableColumn,
    TableView,
    build_data,
    error_for,
    parse_change,
)

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


# -- protocol --------------------------------------------------------------------------------
def test_v1_frames() -> None:
    v1 = V1Serializer()
    frame = v1.decode_text(
        '{"event":"phx_join","topic":"realtime:x","ref":"1","join_ref":"1","payload":{"a":1}}'
    )
    assert frame == Frame("1", "1", "realtime:x", "phx_join", {"a": 1})
    out = v1.encode(Frame("1", None, "realtime:x", "system", {"data": RawJson('{"n": 1.10}')}))
    assert out == (
        '{"topic":"realtime:x","event":"system","payload":{"data":{"n": 1.10}},"ref":null}'
    )
    with pytest.raises(ProtocolError):
        v1.decode_text("[1,2]")


def test_v2_frames_and_binary_broadcasts() -> None:
    v2 = V2Serializer()
    assert v2.decode_text('["1","2","realtime:x","heartbeat",{}]') == Frame(
        "1", "2", "realtime:x", "heartbeat", {}
    )
    assert v2.encode(Frame(None, "2", "phoenix", "phx_reply", {"status": "ok"})) == (
        '[null,"2","phoenix","phx_reply",{"status":"ok"}]'
    )
    # realtime-js' userBroadcastPush: kind 3, sizes of join_ref/ref/topic/event/meta, encoding.
    body = b'{"x":1}'
    fields = [b"1", b"7", b"realtime:x", b"cursor", b""]
    raw = struct.pack("B", 3) + bytes(len(f) for f in fields) + b"\x01" + b"".join(fields) + body
    frame = v2.decode_binary(raw)
    assert (frame.join_ref, frame.ref, frame.topic, frame.event) == (
        "1",
        "7",
        "realtime:x",
        "broadcast",
    )
    assert frame.payload == UserBroadcast("cursor", body, True)
    encoded = v2.encode(Frame(None, None, "realtime:x", "broadcast", frame.payload))
    assert encoded == b"\x04\x0a\x06\x00\x01realtime:xcursor" + body
    # V1 sockets get JSON broadcasts, and nothing for binary payloads (as Realtime does).
    v1 = V1Serializer()
    as_json = v1.encode(Frame(None, None, "realtime:x", "broadcast", frame.payload))
    assert as_json is not None and json.loads(as_json)["payload"] == {
        "type": "broadcast",
        "event": "cursor",
        "payload": {"x": 1},
    }
    binary = UserBroadcast("blob", b"\x00\x01", json_encoded=False)
    assert v1.encode(Frame(None, None, "realtime:x", "broadcast", binary)) is None
    with pytest.raises(ProtocolError):
        v2.decode_binary(b"\x03\x05")


# -- bindings --------------------------------------------------------------------------------
def test_bindings_parse_like_realtime() -> None:
    binding = parse_binding(
        {
            "event": "insert",
            "schema": "public",
            "table": "t",
            "filter": 'n=in.(1,2),body=not.eq."a,b"',
        }
    )
    assert binding.action == "INSERT"
    assert binding.filters == (Filter("n", "in", "{1,2}"), Filter("body", "eq", "a,b", True))
    assert parse_binding({"table": "t"}).schema == "public"
    assert parse_binding({"schema": "public"}).table == "*"
    assert parse_binding({"schema": "s", "table": "t", "filter": "  "}).filters == ()
    assert parse_binding({"event": "weird", "schema": "s", "table": "t"}).action == "*"
    assert binding.id == binding_id(dict(binding.params)) and binding.id > 0
    assert binding.reply()["id"] == binding.id


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"schema": "s", "table": "t", "filter": "undefined"},
            'Error parsing `filter` params: ["undefined"]',
        ),
        (
            {"schema": "s", "table": "t", "filter": "a=foo.1"},
            'Error parsing `filter` params: ["foo", "1"]',
        ),
        (
            {"schema": "s", "table": "t", "filter": "a=in.1,2"},
            "Error parsing `filter` params: `in` filter value must be wrapped by parentheses",
        ),
        ({}, "No subscription params provided"),
        ({"schema": "*", "table": "t", "select": ["a"]}, "Column selection is not supported"),
    ],
)
def test_binding_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(BindingError, match=None) as caught:
        parse_binding(params)
    assert str(caught.value).startswith(message)


# -- payloads --------------------------------------------------------------------------------
WAL_UPDATE = json.dumps(
    {
        "action": "U",
        "timestamp": "2026-01-01 12:00:00.123456+00",
        "schema": "public",
        "table": "t",
        "columns": [
            {"name": "id", "type": "bigint", "typeoid": 20, "value": 7},
            {"name": "amount", "type": "numeric", "typeoid": 1700, "value": 1.10},
            {"name": "secret", "type": "text", "typeoid": 25, "value": "s"},
        ],
        "identity": [
            {"name": "id", "type": "bigint", "typeoid": 20, "value": 7},
            {"name": "big", "type": "text", "typeoid": 25, "value": "toast"},
        ],
        "pk": [{"name": "id", "type": "bigint", "typeoid": 20}],
    }
).replace('"value": 1.1}', '"value": 1.10}')  # wal2json prints numerics verbatim


def _view(rls: bool = True, secret_visible: bool = False) -> TableView:
    return TableView(
        rls,
        [
            TableColumn("id", "int8", True, True),
            TableColumn("amount", "numeric", True, False),
            TableColumn("secret", "text", secret_visible, False),
            TableColumn("big", "text", True, False),
        ],
    )


def test_wal2json_values_keep_their_text() -> None:
    change = parse_change(WAL_UPDATE)
    assert change is not None and change.action == "UPDATE" and change.pk == {"id"}
    assert [c.value for c in change.columns] == ["7", "1.10", "s"]
    assert parse_change('{"action":"M","prefix":"x","content":""}') is None


def test_payload_drops_unreadable_columns_and_keeps_jsonb_order() -> None:
    change = parse_change(WAL_UPDATE)
    assert change is not None
    values = CastValues(
        "2026-01-01T12:00:00.123Z",
        {"id": "7", "amount": "1.10", "secret": '"s"'},
        {"id": "7", "big": '"toast"'},
    )
    data = json.loads(build_data(change, _view(), None, values).text)
    assert data["columns"] == [
        {"name": "id", "type": "int8"},
        {"name": "amount", "type": "numeric"},
        {"name": "big", "type": "text"},
    ]
    # Unchanged TOAST (`big`) comes from the old row; `secret` is not readable by the role.
    assert list(data["record"]) == ["id", "big", "amount"]
    assert data["record"] == {"id": 7, "big": "toast", "amount": 1.1}
    assert '"amount":1.10' in build_data(change, _view(), None, values).text
    assert data["old_record"] == {"id": 7, "big": "toast"}
    assert data["errors"] is None and data["type"] == "UPDATE"
    selected = json.loads(build_data(change, _view(), ("amount",), values).text)
    assert selected["record"] == {"id": 7, "amount": 1.1}


def test_delete_on_rls_table_reveals_only_the_key() -> None:
    raw = json.loads(WAL_UPDATE)
    raw.update(action="D", columns=None)
    change = parse_change(json.dumps(raw))
    assert change is not None
    values = CastValues("ts", {}, {"id": "7", "big": '"toast"'})
    assert json.loads(build_data(change, _view(True), None, values).text)["old_record"] == {"id": 7}
    assert json.loads(build_data(change, _view(False), None, values).text)["old_record"] == {
        "id": 7,
        "big": "toast",
    }


def test_errors_for_missing_key_or_privilege_and_oversize() -> None:
    change = parse_change(WAL_UPDATE)
    assert change is not None
    locked = TableView(True, [TableColumn("id", "int8", False, True)])
    assert error_for(change, locked) == ERROR_UNAUTHORIZED
    no_pk = parse_change(
        WAL_UPDATE.replace('"pk": [{"name": "id", "type": "bigint", "typeoid": 20}]', '"pk": []')
    )
    assert no_pk is not None and error_for(no_pk, _view()) == ERROR_NO_PRIMARY_KEY
    data = json.loads(build_data(change, locked, None, None, ERROR_UNAUTHORIZED).text)
    assert data == {
        "columns": [],
        "commit_timestamp": None,
        "errors": [ERROR_UNAUTHORIZED],
        "old_record": {},
        "record": {},
        "schema": "public",
        "table": "t",
        "type": "UPDATE",
    }
    raw = json.loads(WAL_UPDATE)
    raw["columns"][2]["value"] = "x" * (1024 * 1024)
    huge = parse_change(json.dumps(raw))
    assert huge is not None and huge.oversize
    values = CastValues(
        "ts", {"id": "7", "amount": "1.10", "secret": '"' + "x" * 1048576 + '"'}, {"id": "7"}
    )
    data = json.loads(build_data(huge, _view(secret_visible=True), None, values).text)
    assert data["errors"] == ["Error 413: Payload Too Large"]
    assert data["record"] == {"id": 7, "amount": 1.1}


# -- tokens ----------------------------------------------------------------------------------
def test_token_checks() -> None:
    good = keys.mint(SECRET, "anon")
    assert auth.verify(SECRET, good)["role"] == "anon"
    cases = {
        jwt.encode(
            {"role": "anon"}, SECRET, algorithm="HS256"
        ): "Fields `role` and `exp` are required in JWT",
        keys.mint(
            "another-secret-that-is-long-enough-too", "anon"
        ): "Failed to validate JWT signature",
        keys.mint(SECRET, "anon", ttl=-1): "Token has expired",
        "abc": "The token provided is not a valid JWT",
    }
    for token, message in cases.items():
        with pytest.raises(auth.AuthError) as caught:
            auth.verify(SECRET, token)
        assert caught.value.body() == {"error": message}
    with pytest.raises(auth.AuthError) as caught:
        auth.verify_for_channel(SECRET, keys.mint(SECRET, "anon", ttl=-3), now=time.time())
    assert caught.value.reason.startswith("InvalidJWTToken: Token has expired")


def test_sb_keys_map_to_role_jwts() -> None:
    config = StackConfig(state_dir="/nonexistent", anon_key="ANON", service_role_key="SERVICE")
    assert auth.connect_token(config, config.publishable_key, None, None) == "ANON"
    assert auth.connect_token(config, None, config.secret_key, "python") == "SERVICE"
    with pytest.raises(auth.AuthError) as caught:
        auth.connect_token(config, config.secret_key, None, "Mozilla/5.0")
    assert caught.value.body() == {
        "message": "Secret API keys can only be used in a protected environment"
    }
    with pytest.raises(auth.AuthError) as caught:
        auth.connect_token(config, None, None, None)
    assert caught.value.body() == {"error": "API key is missing"}
