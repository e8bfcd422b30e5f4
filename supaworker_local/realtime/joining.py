"""`phx_join`: the checks a join goes through, in hosted's order (RealtimeChannel.join/3):
concurrent connections, join rate, channels per connection, the token, then for a private
topic the RLS read check; a join that passes them all becomes a `Channel`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from supaworker_local.realtime import auth, limits
from supaworker_local.realtime.authorization import AuthorizationError, Policies
from supaworker_local.realtime.channel import TOPIC_PREFIX, Channel, JoinConfig
from supaworker_local.realtime.protocol import Frame, reply

if TYPE_CHECKING:
    from supaworker_local.realtime.socket import Connection

log = logging.getLogger("supaworker_local.realtime")


async def join(conn: Connection, frame: Frame) -> None:
    """Handle `phx_join` in hosted's order (RealtimeChannel.join/3): connections, join rate,
    channels per connection, token, then the RLS read check of a private topic."""
    topic = frame.topic
    if not topic.startswith(TOPIC_PREFIX):
        conn.send(reply(frame, "error", {"reason": "unmatched topic"}))
        return
    if topic == TOPIC_PREFIX:
        conn.send(
            reply(frame, "error", {"reason": "TopicNameRequired: You must provide a topic name"})
        )
        return
    server = conn.server
    payload = frame.payload if isinstance(frame.payload, dict) else {}
    config = JoinConfig.parse(payload)
    previous = conn.channels.get(topic)
    refusal = _quota_refusal(conn, previous is not None)
    if refusal is not None:
        _refuse(conn, frame, refusal)
        if refusal == limits.JOIN_RATE_REASON:
            # Hosted also disconnects the socket (`%Broadcast{event: "disconnect"}`).
            conn.close_after_flush(1000, "disconnect")
        return
    token = _join_token(conn.token, payload)
    try:
        claims = auth.verify_for_channel(server.config.jwt_secret, token)
    except auth.AuthError as exc:
        _refuse(conn, frame, exc.reason)
        return
    policies: Policies | None = None
    if config.private:
        try:
            policies = await server.read_policies(
                topic[len(TOPIC_PREFIX) :], claims, presence=config.presence_enabled
            )
        except AuthorizationError:
            _refuse(conn, frame, "Realtime was unable to connect to the project database")
            return
        if not (policies.broadcast_read or policies.presence_read):
            _refuse(
                conn,
                frame,
                "Unauthorized: You do not have permissions to read from this Channel topic: "
                + topic[len(TOPIC_PREFIX) :],
            )
            return
    if conn.closed:
        return
    # Broadcasts from the database need the slot; hosted's is up before any join (it starts
    # with the tenant's database connection), so wait for ours rather than miss the first.
    await server.ensure_broadcast_stream()
    previous = conn.channels.get(topic)
    if previous is not None:
        previous.close(notify=False)  # a duplicate join replaces the old channel, as in Phoenix
    channel = Channel(conn, frame, token, claims, config, policies)
    conn.channels[topic] = channel
    conn.counted = True
    server.metrics.joins += 1
    channel.start(frame)


def _quota_refusal(conn: Connection, rejoin: bool) -> str | None:
    quotas = conn.server.quotas
    if not conn.counted and quotas.too_many_users(conn.server.counted_connections()):
        return limits.CONNECTIONS_REASON
    if quotas.joins.triggered:
        return limits.JOIN_RATE_REASON
    quotas.joins.add()
    if not rejoin and quotas.too_many_channels(len(conn.channels)):
        return limits.CHANNELS_REASON
    return None


def _refuse(conn: Connection, frame: Frame, reason: str) -> None:
    log.info(
        "Realtime join refused: %s",
        reason,
        extra={"action": "realtime.join_refused", "topic": frame.topic},
    )
    conn.server.metrics.joins_refused[reason.partition(":")[0]] += 1
    conn.send(reply(frame, "error", {"reason": reason}))


def _join_token(connect_token: str, payload: dict[str, Any]) -> str:
    token = payload.get("access_token") or payload.get("user_token")
    if not isinstance(token, str) or not token or token.startswith("sb_"):
        return connect_token
    return token
