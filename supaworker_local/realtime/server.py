"""The Realtime endpoint inside the gateway: handshake, subscriptions, poller life cycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import psycopg
from aiohttp import web

from supaworker_local.config import StackConfig
from supaworker_local.realtime import auth, authorization, checks, limits, metrics, rest
from supaworker_local.realtime.authorization import Policies
from supaworker_local.realtime.bindings import Binding
from supaworker_local.realtime.channel import Channel
from supaworker_local.realtime.database import PUBLICATION, Pool, fetch_publication
from supaworker_local.realtime.dispatch import ChangeProcessor
from supaworker_local.realtime.poller import PollerUnavailable, ReplicationPoller
from supaworker_local.realtime.protocol import SERIALIZERS, V1, Frame, UserBroadcast
from supaworker_local.realtime.registry import Registry
from supaworker_local.realtime.socket import Connection
from supaworker_local.realtime.wal import WalChange

log = logging.getLogger("supaworker_local.realtime")

WEBSOCKET_PATH = "/realtime/v1/websocket"
MAX_FRAME_BYTES = 4 * 1024 * 1024
# How long a new subscription may wait for the replication slot before it reports an error.
SLOT_READY_TIMEOUT_S = 15.0
# How long a join waits for the slot that carries Broadcast from the database.
BROADCAST_STREAM_TIMEOUT_S = 5.0
JANITOR_INTERVAL_S = 3600.0


class RealtimeServer:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.registry = Registry()
        self.quotas = limits.Quotas(limits.resolve(config.realtime_plan, config.realtime_limits))
        self.metrics = metrics.Metrics()
        # Separate sessions, as Realtime has: the slot's own (inside the poller), one for
        # subscription validation and one for the per-change RLS checks.
        self._control = Pool(
            config.admin_db_url, size=2, application_name="realtime_subscription_manager"
        )
        self._checks = Pool(config.admin_db_url, size=2, application_name="realtime_rls")
        self.processor = ChangeProcessor(
            self.registry,
            self._checks,
            quotas=self.quotas,
            metrics=self.metrics,
            on_message=self.broadcast_from_database,
        )
        self.poller = ReplicationPoller(
            config.admin_db_url,
            interval_ms=config.realtime_poll_interval_ms,
            # `extra` is where older stack.json files (and the bench) asked for a multiplier.
            idle_multiplier=_int(
                config.extra.get("realtime_idle_multiplier"), config.realtime_idle_multiplier
            ),
            process=self.processor.process,
            has_subscribers=self.registry.has_subscriptions,
            wants_messages=self.registry.has_topics,
            on_slot_recreated=self._announce_resubscribed,
        )
        self.connections: set[Connection] = set()
        self._janitor: asyncio.Task[None] | None = None

    def counted_connections(self) -> int:
        """Hosted's concurrent connections: open sockets that have joined a channel."""
        return sum(1 for c in self.connections if c.counted and not c.closed)

    # -- the handshake ------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        vsn = request.query.get("vsn", V1)
        serializer = SERIALIZERS.get(vsn)
        if serializer is None:
            return web.json_response(
                {"error": f'The client\'s requested serializer version "{vsn}" is not supported'},
                status=403,
            )
        try:
            token = auth.connect_token(
                self.config,
                request.query.get("apikey"),
                request.headers.get("x-api-key"),
                request.headers.get("User-Agent"),
            )
            auth.verify(self.config.jwt_secret, token)
        except auth.AuthError as exc:
            log.info(
                "Realtime connection refused: %s",
                exc.message,
                extra={"action": "realtime.connect_refused", "status": exc.status},
            )
            return web.json_response(exc.body(), status=exc.status)
        # TenantRateLimiters.check_tenant: a full project or a join storm refuses new sockets.
        if self.quotas.too_many_users(self.counted_connections()):
            return self._refuse_connect(limits.CONNECT_TOO_MANY_USERS)
        if self.quotas.joins.triggered:
            return self._refuse_connect(limits.CONNECT_TOO_MANY_JOINS)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, autoping=True, heartbeat=None)
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "Expected a websocket upgrade"}, status=400)
        await ws.prepare(request)
        connection = Connection(self, ws, serializer, token)
        self.connections.add(connection)
        log.info(
            "Realtime client connected",
            extra={"action": "realtime.connect", "vsn": vsn, "clients": len(self.connections)},
        )
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)
            log.info(
                "Realtime client disconnected",
                extra={"action": "realtime.disconnect", "clients": len(self.connections)},
            )
        return ws

    def _refuse_connect(self, message: str) -> web.Response:
        log.warning(
            "Realtime connection refused: %s",
            message,
            extra={"action": "realtime.connect_rate_limited"},
        )
        self.metrics.connections_refused[message] += 1
        return web.json_response({"error": message}, status=429)

    # -- private channels ---------------------------------------------------------------------
    async def read_policies(self, topic: str, claims: auth.Claims, *, presence: bool) -> Policies:
        """RLS read check of a private join (raises AuthorizationError if the database is out
        of reach; a policy that errors denies)."""
        try:
            async with self._checks.connection() as db:
                return await authorization.read(db, Policies(), topic, claims, presence=presence)
        except authorization.PolicyError as exc:
            log.warning(
                "RlsPolicyError: %s",
                exc,
                extra={"action": "realtime.rls_policy_error", "topic": topic},
            )
            return Policies(broadcast_read=False, presence_read=False)
        except (psycopg.OperationalError, OSError) as exc:
            raise authorization.AuthorizationError(str(exc).strip()) from exc

    async def write_policies(self, topic: str, claims: auth.Claims, policies: Policies) -> None:
        try:
            async with self._checks.connection() as db:
                await authorization.write(db, policies, topic, claims)
        except (psycopg.OperationalError, OSError) as exc:
            raise authorization.AuthorizationError(str(exc).strip()) from exc

    async def ensure_broadcast_stream(self) -> None:
        if self.poller.ready:
            return
        # While the database is out of reach, joins go on at once instead of each waiting.
        error = self.poller.failing(within_s=2 * BROADCAST_STREAM_TIMEOUT_S)
        try:
            if error is not None:
                raise PollerUnavailable(error)
            await self.poller.ensure_ready(BROADCAST_STREAM_TIMEOUT_S)
        except PollerUnavailable as exc:
            # Public broadcast and presence work without the database; say why DB broadcasts
            # will not arrive for now.
            log.warning(
                "Realtime joined a channel without Broadcast from the database: %s",
                exc,
                extra={"action": "realtime.broadcast_stream_unavailable"},
            )

    # -- postgres_changes ---------------------------------------------------------------------
    async def subscribe(self, channel: Channel, bindings: list[Binding]) -> None:
        """Validate the bindings, make sure the slot exists, then register them.

        Raises SubscriptionError (bad parameters, table not in the publication) or
        PollerUnavailable (database unreachable; the channel retries later).
        """
        try:
            async with self._control.connection() as db:
                for binding in bindings:
                    await checks.validate(db, binding, channel.role, PUBLICATION)
                publication = await fetch_publication(db)
        except (psycopg.OperationalError, OSError) as exc:
            raise PollerUnavailable(str(exc).strip()) from exc
        except psycopg.Error as exc:
            raise checks.SubscriptionError(
                "Unable to subscribe to changes with given parameters. An exception happened: "
                f"{exc}"
            ) from exc
        await self.poller.ensure_ready(SLOT_READY_TIMEOUT_S)
        # The poller must decode the tables just validated before we say "Subscribed".
        self.poller.set_publication(publication)
        if not channel.closed:
            self.registry.set_subscriptions(channel, bindings)
            log.info(
                "Realtime subscription live",
                extra={
                    "action": "realtime.subscribed",
                    "topic": channel.topic,
                    "role": channel.role,
                    "subscriptions": self.registry.subscription_count(),
                },
            )

    # -- broadcast ----------------------------------------------------------------------------
    def fan_out(
        self,
        name: str,
        payload: dict[str, Any] | UserBroadcast,
        *,
        private: bool = False,
        skip: Channel | None = None,
    ) -> None:
        """Send a broadcast to every channel joined to topic `name` (except `skip`) that may
        read it; each delivery counts as a message."""
        for member in self.registry.members((name, private)):
            if member is not skip and member.may_receive_broadcast():
                member.deliver(Frame(None, None, member.topic, "broadcast", payload), "broadcast")

    def broadcast_from_database(self, change: WalChange) -> bool:
        """An insert into realtime.messages, as hosted's ReplicationConnection turns it into a
        broadcast: `{type, event, payload, meta: {id}}` to the members of its topic."""
        if change.action != "INSERT":
            return False
        row = {c.name: c.value for c in change.columns}
        topic, event, message_id = row.get("topic"), row.get("event"), row.get("id")
        if row.get("extension") != "broadcast" or not topic or event is None or not message_id:
            return False
        body = row.get("payload")
        if body is None:
            return False  # binary payloads (realtime.send_binary) are not carried locally
        if self.quotas.limits.payload_too_large(len(body.encode())):
            self.metrics.payloads_too_large += 1
            log.warning(
                "UnableToBroadcastChanges: :payload_size_exceeded (topic %s)",
                topic,
                extra={"action": "realtime.db_broadcast_too_large", "topic": topic},
            )
            return False
        if self.quotas.events.triggered:
            # `check_rate_limit` in replication_connection.ex: dropped, logged.
            self.metrics.db_broadcasts_dropped += 1
            log.warning(
                "Realtime dropped a database broadcast to %s: MessagePerSecondRateLimitReached",
                topic,
                extra={"action": "realtime.db_broadcast_rate_limited", "topic": topic},
            )
            return False
        self.quotas.events.add()
        meta = _json_bytes({"id": message_id})
        private = row.get("private") == "true"
        self.fan_out(
            topic,
            UserBroadcast(event, body.encode(), json_encoded=True, metadata=meta),
            private=private,
        )
        return bool(self.registry.members((topic, private)))

    def _announce_resubscribed(self) -> None:
        for channel in self.registry.subscribed_channels():
            channel.resubscribed()

    # -- life cycle ---------------------------------------------------------------------------
    async def on_startup(self, app: web.Application) -> None:
        self.poller.start()  # idles (no slot, no connection) until the first subscription
        self._janitor = asyncio.create_task(self._delete_old_messages(), name="realtime-janitor")

    async def _delete_old_messages(self) -> None:
        """Hosted's Janitor: messages older than 72 hours go (it drops daily partitions)."""
        while True:
            try:
                async with self._control.connection() as db:
                    await db.execute(
                        "delete from realtime.messages where inserted_at < "
                        "(now() at time zone 'utc') - interval '72 hours'"
                    )
            except (psycopg.Error, OSError) as exc:
                log.info(
                    "Realtime could not delete old messages: %s",
                    exc,
                    extra={"action": "realtime.janitor_failed"},
                )
            await asyncio.sleep(JANITOR_INTERVAL_S)

    async def on_shutdown(self, app: web.Application) -> None:
        for connection in list(self.connections):
            await connection.ws.close(code=1001, message=b"Server shutting down")

    async def on_cleanup(self, app: web.Application) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        await self.poller.stop()
        await self._control.close()
        await self._checks.close()


def _json_bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


SERVER_KEY = web.AppKey("realtime_server", RealtimeServer)


def setup_realtime(app: web.Application, config: StackConfig) -> None:
    """Mount `GET /realtime/v1/websocket` and the REST broadcast API on the gateway, and tie the
    poller to the gateway's life cycle."""
    server = RealtimeServer(config)
    app[SERVER_KEY] = server
    app.router.add_get(WEBSOCKET_PATH, server.websocket)
    app.router.add_get(metrics.METRICS_PATH, metrics.handler)
    rest.add_routes(app, server)
    app.on_startup.append(server.on_startup)
    app.on_shutdown.append(server.on_shutdown)
    app.on_cleanup.append(server.on_cleanup)
