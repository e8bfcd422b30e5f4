"""A bare Phoenix client over `websockets`, to test the wire format without an SDK in between."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection

from supaworker_local.config import StackConfig


def websocket_url(stack: StackConfig, key: str | None, vsn: str | None = "1.0.0") -> str:
    query: dict[str, str] = {}
    if key is not None:
        query["apikey"] = key
    if vsn is not None:
        query["vsn"] = vsn
    return f"ws://{stack.host}:{stack.api_port}/realtime/v1/websocket?{urlencode(query)}"


@dataclass
class Message:
    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any
    raw: str | bytes

    @property
    def status(self) -> str | None:
        return self.payload.get("status") if isinstance(self.payload, dict) else None


class WireClient:
    def __init__(self, ws: ClientConnection, vsn: str) -> None:
        self.ws = ws
        self.vsn = vsn
        self._ref = 0

    @classmethod
    async def connect(cls, url: str, vsn: str) -> WireClient:
        return cls(await websockets.connect(url, open_timeout=10), vsn)

    async def close(self) -> None:
        await self.ws.close()

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def send(
        self,
        topic: str,
        event: str,
        payload: dict[str, Any],
        join_ref: str | None = None,
        ref: str | None = None,
    ) -> str:
        ref = ref if ref is not None else self.next_ref()
        if self.vsn == "2.0.0":
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            await self.ws.send(
                json.dumps(
                    {
                        "topic": topic,
                        "event": event,
                        "payload": payload,
                        "ref": ref,
                        "join_ref": join_ref,
                    }
                )
            )
        return ref

    async def send_binary_broadcast(
        self, topic: str, event: str, payload: Any, join_ref: str, json_encoded: bool = True
    ) -> None:
        """realtime-js' user broadcast push (kind 3), as its serializer builds it."""
        body = json.dumps(payload).encode() if json_encoded else bytes(payload)
        fields = [join_ref.encode(), self.next_ref().encode(), topic.encode(), event.encode(), b""]
        header = struct.pack("B", 3) + bytes(len(f) for f in fields) + bytes([int(json_encoded)])
        await self.ws.send(header + b"".join(fields) + body)

    async def recv(self, timeout: float = 10) -> Message:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return decode(raw, self.vsn)

    async def expect(self, predicate: Callable[[Message], bool], timeout: float = 10) -> Message:
        """The first message that satisfies `predicate` (others are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("no matching message")
            message = await self.recv(left)
            if predicate(message):
                return message

    async def collect(self, seconds: float) -> list[Message]:
        """Everything that arrives within `seconds`."""
        out: list[Message] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                out.append(await self.recv(left))
            except TimeoutError:
                break
        return out

    async def join(
        self, topic: str, config: dict[str, Any] | None = None, access_token: str | None = None
    ) -> tuple[str, Message]:
        payload: dict[str, Any] = {"config": config or {}}
        if access_token is not None:
            payload["access_token"] = access_token
        join_ref = self.next_ref()
        await self.send(topic, "phx_join", payload, join_ref=join_ref, ref=join_ref)
        answer = await self.expect(lambda m: m.event == "phx_reply" and m.ref == join_ref)
        return join_ref, answer

    async def subscribed(self, topic: str, timeout: float = 20) -> Message:
        """Wait for the `postgres_changes` system message of `topic` (ok or error)."""
        return await self.expect(
            lambda m: (
                m.topic == topic
                and m.event == "system"
                and m.payload.get("extension") == "postgres_changes"
            ),
            timeout,
        )


def reply_to(ref: str) -> Callable[[Message], bool]:
    """`expect` predicate: the reply to the message sent with `ref`."""
    return lambda message: message.ref == ref


def decode(raw: str | bytes, vsn: str) -> Message:
    if isinstance(raw, bytes):
        return _decode_user_broadcast(raw)
    data = json.loads(raw)
    if vsn == "2.0.0":
        join_ref, ref, topic, event, payload = data
        return Message(join_ref, ref, topic, event, payload, raw)
    assert "join_ref" not in data, "V1 server frames carry no join_ref"
    return Message(None, data["ref"], data["topic"], data["event"], data["payload"], raw)


def _decode_user_broadcast(raw: bytes) -> Message:
    kind, topic_size, event_size, meta_size, encoding = struct.unpack_from("BBBBB", raw)
    assert kind == 4, f"unexpected binary frame kind {kind}"
    offset = 5
    topic = raw[offset : offset + topic_size].decode()
    offset += topic_size
    event = raw[offset : offset + event_size].decode()
    offset += event_size + meta_size
    body = raw[offset:]
    payload = json.loads(body) if encoding == 1 else body
    return Message(
        None,
        None,
        topic,
        "broadcast",
        {"type": "broadcast", "event": event, "payload": payload},
        raw,
    )
