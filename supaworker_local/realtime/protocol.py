"""The Phoenix channel wire format as Realtime speaks it (sans-IO).

Two serializers, chosen by the `vsn` query parameter of the websocket URL:

* `1.0.0` (realtime-py): JSON objects. Clients send `{"event","payload","topic","ref","join_ref"}`,
  the server sends `{"topic","event","payload","ref"}` (Phoenix's V1 serializer leaves out
  `join_ref`).
* `2.0.0` (realtime-js default): JSON arrays `[join_ref, ref, topic, event, payload]`, plus
  Realtime's binary frames for user broadcasts (`lib/realtime_web/socket/v2_serializer.ex`):
  kind 3 "user broadcast push" from clients, kind 4 "user broadcast" to clients.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Protocol

V1 = "1.0.0"
V2 = "2.0.0"

# Realtime's V2Serializer frame kinds (the first byte of a binary frame).
_KIND_USER_BROADCAST_PUSH = 3
_KIND_USER_BROADCAST = 4
_ENCODING_BINARY = 0
_ENCODING_JSON = 1


class ProtocolError(Exception):
    """A frame that cannot be decoded; the connection answers by closing."""


@dataclass(frozen=True, slots=True)
class RawJson:
    """Already-encoded JSON, embedded as is (Realtime's `Jason.Fragment`).

    Change payloads are assembled from values Postgres rendered with `to_jsonb(...)::text`,
    so numbers keep their exact text (`1.10` stays `1.10`) instead of round-tripping through
    Python floats.
    """

    text: str


@dataclass(frozen=True, slots=True)
class UserBroadcast:
    """A broadcast whose user payload travels as raw bytes (V2 binary frames)."""

    event: str
    payload: bytes
    json_encoded: bool
    # JSON-encoded metadata (`{"id": ...}` of a database broadcast), sent as `meta`.
    metadata: bytes | None = None

    def as_json_payload(self) -> dict[str, Any] | None:
        """The V1/JSON form `{"type","event","payload"}`; None for binary payloads,
        which V1 sockets cannot represent (Realtime drops them too)."""
        if not self.json_encoded:
            return None
        try:
            user_payload = json.loads(self.payload)
        except ValueError:
            return None
        converted: dict[str, Any] = {
            "type": "broadcast",
            "event": self.event,
            "payload": user_payload,
        }
        if self.metadata is not None:
            converted["meta"] = json.loads(self.metadata)
        return converted


@dataclass(frozen=True, slots=True)
class Frame:
    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: dict[str, Any] | UserBroadcast


class Serializer(Protocol):
    vsn: str

    def decode_text(self, raw: str) -> Frame: ...

    def decode_binary(self, raw: bytes) -> Frame: ...

    def encode(self, frame: Frame) -> str | bytes | None:
        """The wire form of `frame`, or None when this serializer cannot carry it."""
        ...


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_payload(payload: dict[str, Any]) -> str:
    """JSON for a payload whose top-level values may be `RawJson` fragments."""
    if not any(isinstance(value, RawJson) for value in payload.values()):
        return dumps(payload)
    parts = (
        f"{dumps(key)}:{value.text if isinstance(value, RawJson) else dumps(value)}"
        for key, value in payload.items()
    )
    return "{" + ",".join(parts) + "}"


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise ProtocolError(f"expected a string ref, got {type(value).__name__}")


def _payload(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("payload must be a JSON object")
    return value


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from exc


class V1Serializer:
    vsn = V1

    def decode_text(self, raw: str) -> Frame:
        message = _loads(raw)
        if not isinstance(message, dict):
            raise ProtocolError("expected a V1 JSON object")
        topic, event = message.get("topic"), message.get("event")
        if not isinstance(topic, str) or not isinstance(event, str):
            raise ProtocolError("a V1 message needs string `topic` and `event`")
        return Frame(
            join_ref=_optional_str(message.get("join_ref")),
            ref=_optional_str(message.get("ref")),
            topic=topic,
            event=event,
            payload=_payload(message.get("payload")),
        )

    def decode_binary(self, raw: bytes) -> Frame:
        raise ProtocolError("V1 sockets carry text frames only")

    def encode(self, frame: Frame) -> str | None:
        if isinstance(frame.payload, UserBroadcast):
            converted = frame.payload.as_json_payload()
            if converted is None:
                return None
            payload_text = dumps(converted)
        else:
            payload_text = encode_payload(frame.payload)
        return (
            f'{{"topic":{dumps(frame.topic)},"event":{dumps(frame.event)},'
            f'"payload":{payload_text},"ref":{dumps(frame.ref)}}}'
        )


class V2Serializer:
    vsn = V2

    def decode_text(self, raw: str) -> Frame:
        message = _loads(raw)
        if not isinstance(message, list) or len(message) < 5:
            raise ProtocolError("expected a V2 array [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = message[:5]
        if not isinstance(topic, str) or not isinstance(event, str):
            raise ProtocolError("a V2 message needs string topic and event")
        return Frame(_optional_str(join_ref), _optional_str(ref), topic, event, _payload(payload))

    def decode_binary(self, raw: bytes) -> Frame:
        if not raw or raw[0] != _KIND_USER_BROADCAST_PUSH:
            raise ProtocolError("unsupported binary frame kind")
        if len(raw) < 7:
            raise ProtocolError("truncated user broadcast push")
        sizes = struct.unpack_from("BBBBB", raw, 1)
        encoding = raw[6]
        offset = 7
        fields: list[bytes] = []
        for size in sizes:
            if offset + size > len(raw):
                raise ProtocolError("truncated user broadcast push")
            fields.append(raw[offset : offset + size])
            offset += size
        join_ref, ref, topic, user_event, _metadata = (field.decode() for field in fields)
        return Frame(
            join_ref=join_ref or None,
            ref=ref or None,
            topic=topic,
            event="broadcast",
            payload=UserBroadcast(user_event, raw[offset:], encoding == _ENCODING_JSON),
        )

    def encode(self, frame: Frame) -> str | bytes:
        if isinstance(frame.payload, UserBroadcast):
            return self._encode_user_broadcast(frame.topic, frame.payload)
        return (
            f"[{dumps(frame.join_ref)},{dumps(frame.ref)},{dumps(frame.topic)},"
            f"{dumps(frame.event)},{encode_payload(frame.payload)}]"
        )

    @staticmethod
    def _encode_user_broadcast(topic: str, message: UserBroadcast) -> bytes:
        topic_bytes, event_bytes = topic.encode(), message.event.encode()
        if len(topic_bytes) > 255 or len(event_bytes) > 255:
            raise ProtocolError("topic and event must each fit in 255 bytes")
        encoding = _ENCODING_JSON if message.json_encoded else _ENCODING_BINARY
        meta = message.metadata or b""
        if len(meta) > 255:
            raise ProtocolError("metadata must fit in 255 bytes")
        header = struct.pack(
            "BBBBB", _KIND_USER_BROADCAST, len(topic_bytes), len(event_bytes), len(meta), encoding
        )
        return header + topic_bytes + event_bytes + meta + message.payload


SERIALIZERS: dict[str, Serializer] = {V1: V1Serializer(), V2: V2Serializer()}


def reply(request: Frame, status: str, response: dict[str, Any]) -> Frame:
    """A `phx_reply` to `request` (same topic, ref and join_ref)."""
    return Frame(
        request.join_ref,
        request.ref,
        request.topic,
        "phx_reply",
        {"status": status, "response": response},
    )
