"""One websocket: frame decoding, routing to channels, and a bounded outbox.

Everything the server sends to a client goes through the outbox, written by one task, so a
slow client never blocks the poller or other clients; a client that falls too far behind is
disconnected instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from supaworker_local.realtime.channel import Channel
from supaworker_local.realtime.joining import join
from supaworker_local.realtime.protocol import Frame, ProtocolError, Serializer, reply

if TYPE_CHECKING:
    from supaworker_local.realtime.server import RealtimeServer

log = logging.getLogger("supaworker_local.realtime")

# Phoenix closes a socket that sent nothing (not even a heartbeat) for 60 s.
IDLE_TIMEOUT_S = 60.0
# What a client may have queued before it counts as too slow to keep.
OUTBOX_LIMIT_BYTES = 16 * 1024 * 1024


class Connection:
    def __init__(
        self, server: RealtimeServer, ws: web.WebSocketResponse, serializer: Serializer, token: str
    ) -> None:
        self.server = server
        self.ws = ws
        self.serializer = serializer
        # The connect token (after `sb_` translation): a join without `access_token` uses it.
        self.token = token
        self.channels: dict[str, Channel] = {}
        # Hosted counts a socket toward the concurrent connections from its first join on
        # (`UsersCounter.add`) until it closes.
        self.counted = False
        self.closed = False
        self._outbox: asyncio.Queue[str | bytes | tuple[int, str]] = asyncio.Queue()
        self._queued_bytes = 0
        self._closing: asyncio.Task[bool] | None = None

    async def serve(self) -> None:
        writer = asyncio.create_task(self._write_loop(), name="realtime-socket-writer")
        try:
            await self._read_loop()
        finally:
            self.closed = True
            for channel in list(self.channels.values()):
                channel.close(notify=False)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def send(self, frame: Frame) -> None:
        if self.closed:
            return
        try:
            data = self.serializer.encode(frame)
        except ProtocolError as exc:
            log.warning(
                "Realtime dropped an unencodable message: %s",
                exc,
                extra={"action": "realtime.encode_failed", "topic": frame.topic},
            )
            return
        if data is None:
            return
        if self._queued_bytes + len(data) > OUTBOX_LIMIT_BYTES:
            log.warning(
                "Realtime client too slow (%d bytes queued): disconnecting it",
                self._queued_bytes,
                extra={"action": "realtime.outbox_overflow"},
            )
            self.abort(1011, "message queue overflow")
            return
        self._queued_bytes += len(data)
        self._outbox.put_nowait(data)

    def close_after_flush(self, code: int, reason: str) -> None:
        """Close once what is queued has been written (a refusal the client must still see)."""
        if not self.closed:
            self.closed = True
            self._outbox.put_nowait((code, reason))

    def abort(self, code: int, reason: str) -> None:
        self.closed = True
        if self._closing is None:
            self._closing = asyncio.create_task(self.ws.close(code=code, message=reason.encode()))

    # -- reading -----------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while not self.ws.closed:
            try:
                message = await self.ws.receive(timeout=IDLE_TIMEOUT_S)
            except TimeoutError:
                log.info(
                    "Realtime client silent for %.0f s: closing",
                    IDLE_TIMEOUT_S,
                    extra={"action": "realtime.idle_timeout"},
                )
                await self.ws.close(code=1000, message=b"heartbeat timeout")
                return
            if message.type in (
                WSMsgType.CLOSE,
                WSMsgType.CLOSING,
                WSMsgType.CLOSED,
                WSMsgType.ERROR,
            ):
                return
            try:
                if message.type == WSMsgType.TEXT:
                    frame = self.serializer.decode_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    frame = self.serializer.decode_binary(message.data)
                else:
                    continue
            except ProtocolError as exc:
                # Phoenix drops a socket that sends an undecodable frame.
                log.warning(
                    "Realtime client sent an invalid frame: %s",
                    exc,
                    extra={"action": "realtime.invalid_frame"},
                )
                await self.ws.close(code=1003, message=b"invalid frame")
                return
            try:
                # Awaited in order, as Phoenix handles a socket's messages one at a time (a
                # join that checks RLS holds back the frames after it).
                await self._route(frame)
            except Exception:
                # A bug in handling one message must not take the socket (or the gateway) down.
                log.exception(
                    "Realtime failed to handle `%s` on %s",
                    frame.event,
                    frame.topic,
                    extra={"action": "realtime.handler_error", "topic": frame.topic},
                )
                self.send(reply(frame, "error", {"reason": "Unknown Error on Channel"}))

    async def _route(self, frame: Frame) -> None:
        if frame.topic == "phoenix":
            if frame.event == "heartbeat":
                self.send(reply(frame, "ok", {}))
            return
        if frame.event == "phx_join":
            await join(self, frame)
            return
        channel = self.channels.get(frame.topic)
        if channel is None:
            self.send(reply(frame, "error", {"reason": "unmatched topic"}))
            return
        await channel.handle(frame)

    # -- writing -----------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            data = await self._outbox.get()
            if isinstance(data, tuple):
                code, reason = data
                await self.ws.close(code=code, message=reason.encode())
                return
            self._queued_bytes -= len(data)
            try:
                if isinstance(data, str):
                    await self.ws.send_str(data)
                else:
                    await self.ws.send_bytes(data)
            except (ConnectionError, RuntimeError) as exc:
                # The peer went away mid-send: the read loop sees the close and cleans up.
                log.debug("Realtime send failed: %s", exc, extra={"action": "realtime.send_failed"})
                self.closed = True
                return
