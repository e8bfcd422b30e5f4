"""What the local Realtime spent, as Prometheus text at `GET /realtime/v1/metrics`.

What counts as a message is what a hosted project is billed and rate-limited for: every
delivery of a `postgres_changes`, `broadcast` (from a client, the REST API or
`realtime.messages`) or presence (`presence_state`, `presence_diff`) message to one client.
One change delivered to 10 subscribers is 10 messages. Not counted: protocol traffic
(`phx_reply`, heartbeats, `phx_close`, `phx_error`) and `system` messages.

Only the service key may read it (as only Supabase's operators see hosted Realtime's metrics):
no or an invalid key is 401, any other valid key 403, with the gateway's `{"message"}` body.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import jwt
from aiohttp import web

from supaworker_local import keys

if TYPE_CHECKING:
    from supaworker_local.realtime.server import RealtimeServer

METRICS_PATH = "/realtime/v1/metrics"
KINDS = ("postgres_changes", "broadcast", "presence")


class Metrics:
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.joins = 0
        self.joins_refused: Counter[str] = Counter()
        self.shutdowns: Counter[str] = Counter()
        self.connections_refused: Counter[str] = Counter()
        self.db_broadcasts_dropped = 0
        self.payloads_too_large = 0
        self.changes_skipped = 0

    def delivered(self, kind: str, n: int = 1) -> None:
        self.sent[kind] += n

    def render(self, server: RealtimeServer) -> str:
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, rows: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {value:g}" for labels, value in rows)

        total = sum(self.sent.values())
        metric(
            "realtime_messages_sent_total",
            "counter",
            "Messages delivered to clients (each postgres_changes, broadcast and presence message"
            " to each client; no protocol replies, heartbeats or system messages).",
            [("", total)],
        )
        metric(
            "realtime_messages_sent_by_kind_total",
            "counter",
            "realtime_messages_sent_total by extension.",
            [(f'{{kind="{k}"}}', self.sent[k]) for k in KINDS],
        )
        metric(
            "realtime_messages_received_total",
            "counter",
            "Broadcast and presence messages clients sent on their channels.",
            [(f'{{kind="{k}"}}', self.received[k]) for k in ("broadcast", "presence")],
        )
        quotas = server.quotas
        metric(
            "realtime_connections",
            "gauge",
            "Open websockets with at least one joined channel (hosted's concurrent connections).",
            [("", server.counted_connections())],
        )
        metric(
            "realtime_sockets",
            "gauge",
            "Open websockets, joined or not.",
            [("", len(server.connections))],
        )
        metric(
            "realtime_channels",
            "gauge",
            "Joined channels.",
            [("", sum(len(c.channels) for c in server.connections))],
        )
        metric("realtime_channel_joins_total", "counter", "Accepted joins.", [("", self.joins)])
        metric(
            "realtime_rate",
            "gauge",
            "Hosted's rate counters: per-second averages over the last minute (5 s ticks).",
            [
                ('{counter="events"}', quotas.events.avg),
                ('{counter="db_events"}', quotas.db_events.avg),
                ('{counter="joins"}', quotas.joins.avg),
                ('{counter="presence_events"}', quotas.presence.avg),
            ],
        )
        limits = quotas.limits
        metric(
            "realtime_limit",
            "gauge",
            f"The enforced quotas (plan {server.config.realtime_plan}; -1 = unlimited).",
            [
                (f'{{limit="{name}"}}', -1 if value is None else value)
                for name, value in (
                    ("max_concurrent_users", limits.max_concurrent_users),
                    ("max_events_per_second", limits.max_events_per_second),
                    ("max_joins_per_second", limits.max_joins_per_second),
                    ("max_channels_per_client", limits.max_channels_per_client),
                    ("max_presence_events_per_second", limits.max_presence_events_per_second),
                    ("max_payload_size_in_kb", limits.max_payload_size_in_kb),
                )
            ],
        )
        metric(
            "realtime_limit_hits_total",
            "counter",
            "Refused joins and connections, shut-down channels and dropped messages, by reason.",
            [
                *_hits("join", self.joins_refused),
                *_hits("connect", self.connections_refused),
                *_hits("shutdown", self.shutdowns),
                ('{what="db_broadcast_dropped",reason="events"}', self.db_broadcasts_dropped),
                ('{what="payload_dropped",reason="size"}', self.payloads_too_large),
                ('{what="changes_skipped",reason="db_events"}', self.changes_skipped),
            ],
        )
        return "\n".join(out) + "\n"


def _hits(what: str, counts: Counter[str]) -> list[tuple[str, float]]:
    def label(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")

    return [(f'{{what="{what}",reason="{label(r)}"}}', n) for r, n in sorted(counts.items())]


def _deny(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


async def handler(request: web.Request) -> web.Response:
    from supaworker_local.realtime.server import SERVER_KEY

    server = request.app[SERVER_KEY]
    config = server.config
    apikey = request.headers.get("apikey") or request.query.get("apikey")
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    token = bearer if scheme.lower() == "bearer" and bearer else apikey
    if not token:
        return _deny(401, "No API key found in request")
    if token == config.secret_key:
        token = config.service_role_key
    elif token == config.publishable_key:
        token = config.anon_key
    try:
        claims = keys.decode(config.jwt_secret, token)
    except jwt.InvalidTokenError:
        return _deny(401, "Invalid API key")
    if claims.get("role") != "service_role":
        return _deny(403, "Only the service_role key may read the Realtime metrics")
    return web.Response(
        body=server.metrics.render(server).encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
