"""A joined `realtime:<name>` topic: what `RealtimeWeb.RealtimeChannel` does per channel.

Start (reply with the bindings and their ids, then "Subscribed to PostgreSQL" once the database
subscription is live; the checks before it are in `joining`), `access_token` updates and token
expiry, `phx_leave`, broadcast (`self`/`ack` options, V2 binary frames, write policies of
private channels), a small Phoenix-style presence, and the messages-per-second shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supaworker_local.realtime import auth, limits
from supaworker_local.realtime.authorization import AuthorizationError, Policies, PolicyError
from supaworker_local.realtime.bindings import Binding, BindingError, binding_id, parse_binding
from supaworker_local.realtime.checks import SubscriptionError
from supaworker_local.realtime.poller import PollerUnavailable
from supaworker_local.realtime.protocol import Frame, RawJson, UserBroadcast, dumps, reply
from supaworker_local.realtime.registry import TopicKey

if TYPE_CHECKING:
    from supaworker_local.realtime.socket import Connection

log = logging.getLogger("supaworker_local.realtime")

TOPIC_PREFIX = "realtime:"
# Realtime re-checks the token at least every 5 minutes and when it expires.
CONFIRM_TOKEN_INTERVAL_S = 300.0
# After a database failure Realtime retries the subscription in 5..10 s.
RESUBSCRIBE_DELAY_S = (5.0, 10.0)


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


class Channel:
    def __init__(
        self,
        conn: Connection,
        frame: Frame,
        token: str,
        claims: auth.Claims,
        config: JoinConfig,
        policies: Policies | None = None,
    ) -> None:
        self.conn = conn
        self.topic = frame.topic
        self.name = frame.topic[len(TOPIC_PREFIX) :]
        self.join_ref = frame.join_ref or frame.ref
        self.token = token
        self.claims = claims
        self.config = config
        # RLS results of a private channel (None on public ones, which need none).
        self.policies = policies
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
        if self.config.presence_enabled and self._may_read_presence():
            self.push("presence_state", self._presence_state())
            self.conn.server.metrics.delivered("presence")
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
        if self.closed:
            return
        self.conn.server.metrics.shutdowns[message] += 1
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
        # Realtime fastlanes changes: no join_ref, no ref.
        self.deliver(
            Frame(None, None, self.topic, "postgres_changes", {"ids": ids, "data": data}),
            "postgres_changes",
        )

    def deliver(self, frame: Frame, kind: str) -> None:
        """Send a billed message, then count it as hosted's channel does on
        `:update_rate_counter`: past the messages-per-second limit the channel shuts down."""
        if self.closed:
            return
        server = self.conn.server
        self.conn.send(frame)
        server.metrics.delivered(kind)
        server.quotas.events.add()
        if server.quotas.events.triggered:
            self.shutdown(limits.MESSAGES_SHUTDOWN)

    def may_receive_broadcast(self) -> bool:
        return self.policies is None or self.policies.broadcast_read is True

    def _may_read_presence(self) -> bool:
        return self.policies is None or self.policies.presence_read is True

    # -- incoming -----------------------------------------------------------------------------
    async def handle(self, frame: Frame) -> None:
        if frame.event == "phx_leave":
            self.conn.send(reply(frame, "ok", {}))
            self.close(notify=True)
        elif frame.event == "access_token":
            await self._on_access_token(frame)
        elif frame.event == "broadcast":
            await self._on_broadcast(frame)
        elif frame.event == "presence":
            await self._on_presence(frame)
        else:
            self.conn.server.quotas.events.add()  # hosted's catch-all `handle_in` counts too
            log.debug(
                "Realtime ignored `%s` on %s",
                frame.event,
                self.topic,
                extra={"action": "realtime.unexpected_event", "topic": self.topic},
            )

    async def _on_access_token(self, frame: Frame) -> None:
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
        if self.policies is not None and not await self._recheck_read(claims):
            return
        self.token, self.claims = token, claims
        self._schedule_token_check()
        if self.config.postgres_changes:
            # Realtime re-subscribes with the new claims and says "Subscribed" again.
            self._start_subscription()

    async def _on_broadcast(self, frame: Frame) -> None:
        server = self.conn.server
        if self.policies is not None and not await self._may_write("broadcast_write"):
            return  # hosted drops a broadcast the INSERT policies refuse, without a reply
        server.metrics.received["broadcast"] += 1
        server.quotas.events.add()
        if server.quotas.limits.payload_too_large(_payload_size(frame.payload)):
            server.metrics.payloads_too_large += 1
            if self.config.ack_broadcast:
                # `{:reply, {:error, :payload_size_exceeded}, socket}`: Phoenix encodes the atom.
                self.conn.send(
                    Frame(
                        frame.join_ref,
                        frame.ref,
                        frame.topic,
                        "phx_reply",
                        {"status": "error", "response": "payload_size_exceeded"},
                    )
                )
            return
        skip = None if self.config.self_broadcast else self
        server.fan_out(self.name, frame.payload, private=self.config.private, skip=skip)
        if self.config.ack_broadcast:
            self.conn.send(reply(frame, "ok", {}))

    async def _recheck_read(self, claims: auth.Claims) -> bool:
        """A new token re-evaluates a private channel's policies (hosted's `access_token`
        handler): no read at all, or a read the old token had and this one lacks, shuts it."""
        assert self.policies is not None
        previous = self.policies
        try:
            current = await self.conn.server.read_policies(
                self.name, claims, presence=self.config.presence_enabled
            )
        except AuthorizationError:
            self.shutdown("Realtime was unable to connect to the project database")
            return False
        if not (current.broadcast_read or current.presence_read):
            self.shutdown(
                f"You do not have permissions to read from this Channel topic: {self.name}"
            )
            return False
        revoked = (previous.broadcast_read and current.broadcast_read is False) or (
            previous.presence_read and current.presence_read is False
        )
        if revoked:
            self.shutdown(
                f"You no longer have permission to read from this Channel topic: {self.name}"
            )
            return False
        self.policies = current  # write permissions are checked again when next needed
        return True

    async def _may_write(self, which: str) -> bool:
        assert self.policies is not None
        if getattr(self.policies, which) is None:
            try:
                await self.conn.server.write_policies(self.name, self.claims, self.policies)
            except (AuthorizationError, PolicyError) as exc:
                log.warning(
                    "Realtime could not check the write policies of %s: %s",
                    self.topic,
                    exc,
                    extra={"action": "realtime.write_check_failed", "topic": self.topic},
                )
                return False
        return getattr(self.policies, which) is True

    async def _on_presence(self, frame: Frame) -> None:
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        event = payload.get("event")
        self.conn.server.metrics.received["presence"] += 1
        if event == "track" and self.conn.server.quotas.presence.triggered:
            self.shutdown(limits.PRESENCE_SHUTDOWN)
            return
        if (
            event == "track"
            and self.policies is not None
            and not await self._may_write("presence_write")
        ):
            self.conn.send(reply(frame, "error", {}))  # hosted: {:error, :unauthorized}
            return
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
        server = self.conn.server
        for member in server.registry.members(self.topic_key):
            if not member.closed and member._may_read_presence():
                server.metrics.delivered("presence")
                server.quotas.presence.add()
                member.conn.send(
                    Frame(
                        None,
                        None,
                        member.topic,
                        "presence_diff",
                        {"joins": joins, "leaves": leaves},
                    )
                )


def _payload_size(payload: dict[str, Any] | UserBroadcast) -> int:
    """About `:erlang.external_size/1` of what hosted validates: the JSON, or the raw bytes."""
    if isinstance(payload, UserBroadcast):
        return len(payload.payload)
    return len(dumps(payload).encode())


def _presence_ref() -> str:
    # Phoenix.Presence refs are opaque strings; clients only compare them.
    return f"F{secrets.token_urlsafe(9)}{int(time.time() * 1000) % 1000:03d}"
