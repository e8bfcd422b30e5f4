"""A joined `realtime:<name>` topic: what `RealtimeWeb.RealtimeChannel` does per channel.

Join (token check, reply with the bindings and their ids, then "Subscribed to PostgreSQL" once
the database subscription is live), `access_token` updates and token expiry, `phx_leave`,
broadcast (`self`/`ack` options, V2 binary frames) and a small Phoenix-style presence.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supaworker_local.realtime import auth
from supaworker_local.realtime.bindings import Binding, BindingError, binding_id, parse_binding
from supaworker_local.realtime.checks import SubscriptionError
from supaworker_local.realtime.poller import PollerUnavailable
from supaworker_local.realtime.protocol import Frame, RawJson, reply
from supaworker_local.realtime.registry import TopicKey

if TYPE_CHECKING:
    from supaworker_local.realtime.socket import Connection

log = logging.getLogger("supaworker_local.realtime")

TOPIC_PREFIX = "realtime:"
# Realtime re-checks the token at least every 5 minutes and when it expires.
CONFIRM_TOKEN_INTERVAL_S = 300.0
# After a database failure Realtime retries the subscription in 5..10 s.
RESUBSCRIBE_DELAY_S = (5.0, 10.0)
# Realtime's default `max_channels_per_client`.
MAX_CHANNELS_PER_CLIENT = 100


def _flag(value: Any) -> bool:
    """Realtime's FlexibleBoolean: true, "true", "TRUE"... are true."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class JoinConfig:
    self_broadcast: bool
    ack_broadcast: bool
    presence_key: str
    presence_enabled: bool
    private: bool
    postgres_changes: list[dict[str, Any]]

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> JoinConfig:
        config = _dict(payload.get("config"))
        broadcast, presence = _dict(config.get("broadcast")), _dict(config.get("presence"))
        changes = config.get("postgres_changes")
        key = presence.get("key")
        return cls(
            self_broadcast=_flag(broadcast.get("self")),
            ack_broadcast=_flag(broadcast.get("ack")),
            # Realtime gives each unkeyed presence its own UUID.
            presence_key=key if isinstance(key, str) and key else str(uuid.uuid1()),
            presence_enabled=_flag(presence.get("enabled")),
            private=_flag(config.get("private")),
            postgres_changes=[p for p in changes if isinstance(p, dict)]
            if isinstance(changes, list)
            else [],
        )


def join(conn: Connection, frame: Frame) -> None:
    """Handle `phx_join`: refuse with the reason Realtime gives, or create the channel."""
    topic = frame.topic
    if not topic.startswith(TOPIC_PREFIX):
        conn.send(reply(frame, "error", {"reason": "unmatched topic"}))
        return
    if topic == TOPIC_PREFIX:
        conn.send(
            reply(frame, "error", {"reason": "TopicNameRequired: You must provide a topic name"})
        )
        return
    payload = frame.payload if isinstance(frame.payload, dict) else {}
    token = _join_token(conn.token, payload)
    try:
        claims = auth.verify_for_channel(conn.server.config.jwt_secret, token)
    except auth.AuthError as exc:
        log.info(
            "Realtime join refused: %s",
            exc.reason,
            extra={"action": "realtime.join_refused", "topic": topic},
        )
        conn.send(reply(frame, "error", {"reason": exc.reason}))
        return
    config = JoinConfig.parse(payload)
    if config.private:
        # Private channels authorize through RLS on realtime.messages, which this local
        # endpoint does not implement; refuse rather than pretend.
        conn.send(
            reply(
                frame,
                "error",
                {
                    "reason": "Unauthorized: You do not have permissions to read from this Channel "
                    f"topic: {topic[len(TOPIC_PREFIX) :]} (private channels are not supported "
                    "by the local Realtime endpoint)"
                },
            )
        )
        return
    previous = conn.channels.get(topic)
    if previous is None and len(conn.channels) >= MAX_CHANNELS_PER_CLIENT:
        conn.send(reply(frame, "error", {"reason": "ChannelRateLimitReached: Too many channels"}))
        return
    if previous is not None:
        previous.close(notify=False)  # a duplicate join replaces the old channel, as in Phoenix
    channel = Channel(conn, frame, token, claims, config)
    conn.channels[topic] = channel
    channel.start(frame)


def _join_token(connect_token: str, payload: dict[str, Any]) -> str:
    token = payload.get("access_token") or payload.get("user_token")
    if not isinstance(token, str) or not token or token.startswith("sb_"):
        return connect_token
    return token


class Channel:
    def __init__(
        self, conn: Connection, frame: Frame, token: str, claims: auth.Claims, config: JoinConfig
    ) -> None:
        self.conn = conn
        self.topic = frame.topic
        self.name = frame.topic[len(TOPIC_PREFIX) :]
        self.join_ref = frame.join_ref or frame.ref
        self.token = token
        self.claims = claims
        self.config = config
        self.closed = False
        self.bindings: list[Binding] = []
        self.presence_meta: dict[str, Any] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._subscribe_task: asyncio.Task[None] | None = None

    @property
    def role(self) -> str:
        return str(self.claims.get("role", ""))

    @property
    def topic_key(self) -> TopicKey:
        return (self.name, self.config.private)

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, frame: Frame) -> None:
        server = self.conn.server
        server.registry.join_topic(self.topic_key, self)
        replies = [{**params, "id": binding_id(params)} for params in self.config.postgres_changes]
        self.conn.send(reply(frame, "ok", {"postgres_changes": replies}))
        self._schedule_token_check()
        if self.config.presence_enabled:
            self.push("presence_state", self._presence_state())
        if self.config.postgres_changes:
            self._start_subscription()
        log.info(
            "Realtime channel joined",
            extra={
                "action": "realtime.join",
                "topic": self.topic,
                "role": self.role,
                "bindings": len(self.config.postgres_changes),
            },
        )

    def close(self, *, notify: bool) -> None:
        """Leave the topic. `notify` sends `phx_close`, as Phoenix does when a channel stops."""
        if self.closed:
            return
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self._subscribe_task is not None:
            self._subscribe_task.cancel()
        server = self.conn.server
        server.registry.remove_subscriptions(self)
        self._untrack()
        server.registry.leave_topic(self.topic_key, self)
        if self.conn.channels.get(self.topic) is self:
            del self.conn.channels[self.topic]
        if notify:
            self.conn.send(Frame(self.join_ref, self.join_ref, self.topic, "phx_close", {}))

    def shutdown(self, message: str) -> None:
        """Realtime's `shutdown_response`: a system error, then the channel stops."""
        self.push_system("system", "error", message)
        log.info(
            "Realtime channel shut down: %s",
            message,
            extra={"action": "realtime.channel_shutdown", "topic": self.topic},
        )
        self.close(notify=True)

    # -- pushes -------------------------------------------------------------------------------
    def push(self, event: str, payload: dict[str, Any]) -> None:
        self.conn.send(Frame(self.join_ref, None, self.topic, event, payload))

    def push_system(self, extension: str, status: str, message: str) -> None:
        self.push(
            "system",
            {"extension": extension, "status": status, "message": message, "channel": self.name},
        )

    def push_change(self, ids: list[int], data: RawJson) -> None:
        if not self.closed:
            # Realtime fastlanes changes: no join_ref, no ref.
            self.conn.send(
                Frame(None, None, self.topic, "postgres_changes", {"ids": ids, "data": data})
            )

    # -- incoming -----------------------------------------------------------------------------
    def handle(self, frame: Frame) -> None:
        if frame.event == "phx_leave":
            self.conn.send(reply(frame, "ok", {}))
            self.close(notify=True)
        elif frame.event == "access_token":
            self._on_access_token(frame)
        elif frame.event == "broadcast":
            self._on_broadcast(frame)
        elif frame.event == "presence":
            self._on_presence(frame)
        else:
            log.debug(
                "Realtime ignored `%s` on %s",
                frame.event,
                self.topic,
                extra={"action": "realtime.unexpected_event", "topic": self.topic},
            )

    def _on_access_token(self, frame: Frame) -> None:
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        token = payload.get("access_token")
        if (
            not isinstance(token, str)
            or not token
            or token.startswith("sb_")
            or token == self.token
        ):
            return
        try:
            claims = auth.verify_for_channel(self.conn.server.config.jwt_secret, token)
        except auth.AuthError as exc:
            self.shutdown(exc.message)
            return
        self.token, self.claims = token, claims
        self._schedule_token_check()
        if self.config.postgres_changes:
            # Realtime re-subscribes with the new claims and says "Subscribed" again.
            self._start_subscription()

    def _on_broadcast(self, frame: Frame) -> None:
        skip = None if self.config.self_broadcast else self
        self.conn.server.fan_out(self.name, frame.payload, private=self.config.private, skip=skip)
        if self.config.ack_broadcast:
            self.conn.send(reply(frame, "ok", {}))

    def _on_presence(self, frame: Frame) -> None:
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        event = payload.get("event")
        if event == "track":
            meta = payload.get("payload", {})
            if not isinstance(meta, dict):
                self.conn.send(
                    reply(frame, "error", {"reason": "Presence track payload must be a map"})
                )
                return
            self._track(meta)
        elif event == "untrack":
            self._untrack()
        self.conn.send(reply(frame, "ok", {}))

    # -- token expiry -------------------------------------------------------------------------
    def _schedule_token_check(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        delay = min(CONFIRM_TOKEN_INTERVAL_S, max(auth.seconds_left(self.claims), 0) + 0.05)
        self._expiry = asyncio.get_running_loop().call_later(delay, self._confirm_token)

    def _confirm_token(self) -> None:
        if self.closed:
            return
        try:
            self.claims = auth.verify_for_channel(self.conn.server.config.jwt_secret, self.token)
        except auth.AuthError as exc:
            self.shutdown(exc.message)
            return
        self._schedule_token_check()

    # -- postgres_changes ---------------------------------------------------------------------
    def _start_subscription(self, delay: float = 0.0) -> None:
        if self._subscribe_task is not None:
            self._subscribe_task.cancel()
        self._subscribe_task = asyncio.create_task(
            self._subscribe(delay), name=f"realtime-subscribe:{self.topic}"
        )

    async def _subscribe(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        try:
            self.bindings = [parse_binding(p) for p in self.config.postgres_changes]
        except BindingError as exc:
            self.push_system("postgres_changes", "error", str(exc))
            return
        try:
            await self.conn.server.subscribe(self, self.bindings)
        except SubscriptionError as exc:
            self.push_system("postgres_changes", "error", exc.message)
            return
        except PollerUnavailable as exc:
            self.push_system(
                "postgres_changes",
                "error",
                f"Realtime was unable to connect to the project database: {exc}",
            )
            if not self.closed:
                low, high = RESUBSCRIBE_DELAY_S
                retry = low + secrets.randbelow(int((high - low) * 1000)) / 1000
                self._subscribe_task = asyncio.create_task(self._subscribe(retry))
            return
        if not self.closed:
            self.push_system("postgres_changes", "ok", "Subscribed to PostgreSQL")

    def resubscribed(self) -> None:
        """The slot was recreated: the subscription is live again (Realtime re-announces it)."""
        if not self.closed and self.bindings:
            self.push_system("postgres_changes", "ok", "Subscribed to PostgreSQL")

    # -- presence -----------------------------------------------------------------------------
    def _presence_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for member in self.conn.server.registry.members(self.topic_key):
            if member.presence_meta is not None:
                entry = state.setdefault(member.config.presence_key, {"metas": []})
                entry["metas"].append(member.presence_meta)
        return state

    def _track(self, meta: dict[str, Any]) -> None:
        previous = self.presence_meta
        current = {**meta, "phx_ref": _presence_ref()}
        if previous is not None:
            current["phx_ref_prev"] = previous["phx_ref"]
        self.presence_meta = current
        key = self.config.presence_key
        leaves = {key: {"metas": [previous]}} if previous is not None else {}
        self._presence_diff({key: {"metas": [current]}}, leaves)

    def _untrack(self) -> None:
        previous, self.presence_meta = self.presence_meta, None
        if previous is not None:
            self._presence_diff({}, {self.config.presence_key: {"metas": [previous]}})

    def _presence_diff(self, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
        for member in self.conn.server.registry.members(self.topic_key):
            if not member.closed:
                member.conn.send(
                    Frame(
                        None,
                        None,
                        member.topic,
                        "presence_diff",
                        {"joins": joins, "leaves": leaves},
                    )
                )


def _presence_ref() -> str:
    # Phoenix.Presence refs are opaque strings; clients only compare them.
    return f"F{secrets.token_urlsafe(9)}{int(time.time() * 1000) % 1000:03d}"
